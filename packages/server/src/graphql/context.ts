import type { Actor } from '../auth/access.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { BillingPubSub } from '../realtime/pubsub.ts';
import type { PurchaseService } from '../stripe/purchaseService.ts';
import type { Loaders } from './loaders.ts';

/** What every resolver may use: the database, the clock, who is calling, and per-request loaders. */
export interface GraphQLContext {
  prisma: PrismaClient;
  clock: Clock;
  actor: Actor | null;
  loaders: Loaders;
  purchases: PurchaseService;
  pubSub: BillingPubSub;
}

export function requireActor(context: GraphQLContext): Actor {
  if (!context.actor) {
    throw new BillingError(ErrorCode.UNAUTHENTICATED, 'a valid API key is required (Authorization: Bearer <key>)');
  }
  return context.actor;
}
