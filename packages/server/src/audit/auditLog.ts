import type { Actor } from '../auth/access.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { Prisma, PrismaClient } from '../generated/prisma/client.ts';

/** What the audit log records, named after the operation that did it. */
export type AuditAction =
  | 'createAccount'
  | 'updateAccount'
  | 'grantCredits'
  | 'voidGrant'
  | 'adjustCredits'
  | 'changeGrantExpiry'
  | 'scheduleGrant'
  | 'cancelScheduledGrant'
  | 'createWebhookEndpoint'
  | 'updateWebhookEndpoint'
  | 'changePlan'
  | 'addSeat'
  | 'updateSeat'
  | 'removeSeat'
  | 'createApiKey'
  | 'revokeApiKey'
  | 'rotateApiKey'
  | 'createSessionToken'
  | 'revokeSessionToken'
  | 'upsertPlan'
  | 'upsertFeature'
  | 'upsertCreditPack'
  | 'createTestClock'
  | 'advanceTestClock'
  | 'setSpendLimit'
  | 'removeSpendLimit'
  | 'configureAutoTopUp'
  | 'removePaymentMethod'
  | 'linkPlanToStripePrice'
  | 'subscribeToPlan'
  | 'cancelSubscription';

export interface AuditEntry {
  action: AuditAction;
  accountId?: string | null;
  /** The id (or code) of what was acted on: the grant, key, plan, clock, limit… */
  subjectId?: string | null;
  /** The action's parameters; callers pass only non-secret fields (never a key's secret). */
  details?: Record<string, unknown>;
}

export interface AuditEventRecord {
  id: string;
  actorKeyId: string;
  actorRole: Actor['role'];
  action: string;
  accountId: string | null;
  subjectId: string | null;
  details: unknown;
  createdAt: Date;
}

/** Written in the caller's transaction: the log holds an action exactly when the action happened. */
export async function recordAuditEvent(tx: Tx | PrismaClient, clock: Clock, actor: Actor, entry: AuditEntry): Promise<void> {
  await tx.auditEvent.create({
    data: {
      actorKeyId: actor.keyId,
      actorRole: actor.role,
      action: entry.action,
      accountId: entry.accountId ?? null,
      subjectId: entry.subjectId ?? null,
      details: entry.details === undefined ? undefined : (JSON.parse(JSON.stringify(entry.details)) as Prisma.InputJsonValue),
      createdAt: clock.now(),
    },
  });
}

export interface AuditQuery {
  accountId?: string | null;
  action?: string | null;
  /** Events with a smaller id than this (newest first). */
  beforeId?: bigint | null;
  take: number;
}

/** Newest first, by the insertion id (timestamps of test clocks need not be monotonic). */
export async function listAuditEvents(prisma: PrismaClient, query: AuditQuery): Promise<AuditEventRecord[]> {
  const rows = await prisma.auditEvent.findMany({
    where: {
      ...(query.accountId ? { accountId: query.accountId } : {}),
      ...(query.action ? { action: query.action } : {}),
      ...(query.beforeId !== null && query.beforeId !== undefined ? { id: { lt: query.beforeId } } : {}),
    },
    orderBy: { id: 'desc' },
    take: query.take,
  });
  return rows.map((row) => ({
    id: row.id.toString(),
    actorKeyId: row.actorKeyId,
    actorRole: row.actorRole as Actor['role'],
    action: row.action,
    accountId: row.accountId,
    subjectId: row.subjectId,
    details: row.details,
    createdAt: row.createdAt,
  }));
}

/** Runs an action and logs it in the same transaction, described from its result. */
export async function audited<T>(tx: Tx, clock: Clock, actor: Actor, action: Promise<T>, describe: (result: T) => AuditEntry): Promise<T> {
  const result = await action;
  await recordAuditEvent(tx, clock, actor, describe(result));
  return result;
}
