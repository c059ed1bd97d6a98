import type { WebhookTargetPolicy } from '../alerts/webhookTarget.ts';
import type { Actor } from '../auth/access.ts';
import type { ApiKeyAuthenticator } from '../auth/apiKeys.ts';
import type { Coalescer } from '../db/coalescer.ts';
import type { Database } from '../db/database.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { AccountWithBalances } from '../ledger/balances.ts';
import type { UsageHotPath } from '../ledger/recordUsage.ts';
import type { BillingPubSub } from '../realtime/pubsub.ts';
import type { PurchaseService } from '../stripe/purchaseService.ts';
import type { AccountRefResolver } from './accountRefs.ts';
import type { SubscriptionService } from '../subscriptions/subscriptionService.ts';
import type { Loaders } from './loaders.ts';

export type AccountReads = Coalescer<{ accountId: string; creditType: string | null }, AccountWithBalances | null>;

/** What every resolver may use: the database, the clock, who is calling, and per-request loaders. */
export interface GraphQLContext {
  prisma: PrismaClient;
  /** Raw prepared statements outside Prisma, for the hottest reads. */
  database: Pick<Database, 'statement'>;
  clock: Clock;
  actor: Actor | null;
  loaders: Loaders;
  purchases: PurchaseService;
  /** Plans sold through Stripe Billing. */
  subscriptions: SubscriptionService;
  pubSub: BillingPubSub;
  /** Account reads (one balance or none) of concurrent requests, coalesced into shared statements. */
  accountReads: AccountReads;
  /** The one-statement path of recordUsage and its feature cache. */
  usageHotPath: UsageHotPath;
  apiKeys: ApiKeyAuthenticator;
  /** Account ids from what callers give as one (the id or the external id). */
  accountRefs: AccountRefResolver;
  /** Which alert webhook URLs may be configured and reached. */
  webhookTargets: WebhookTargetPolicy;
}

/** After a key was revoked (or its seat removed): no instance may keep trusting it. */
export function announceKeysRevoked(context: GraphQLContext): void {
  context.apiKeys.forgetAll();
  context.pubSub.publish('apiKeysRevoked', { at: Date.now() });
}

export function requireActor(context: GraphQLContext): Actor {
  if (!context.actor) {
    throw new BillingError(ErrorCode.UNAUTHENTICATED, 'a valid API key is required (Authorization: Bearer <key>)');
  }
  return context.actor;
}
