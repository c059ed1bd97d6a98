import type { LockedAccount } from '../accounts/lockAccount.ts';
import type { PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { decideBalance, type ActiveSeat, type BalanceAuthorized, type BalanceRefusal, type SpendRequest } from './balanceDecision.ts';
import type { SpendableGrant } from './consumptionOrder.ts';
import { checkSpendLimits, type SpendLimitRecord } from './spendLimits.ts';

export type SpendRefusal = BalanceRefusal | { kind: 'spendLimitExceeded'; spendLimit: SpendLimitRecord };

export type SpendDecision =
  | (BalanceAuthorized & {
      /** Spend limits this spend uses up. */
      limitsReached: SpendLimitRecord[];
    })
  | SpendRefusal;

interface SpendableGrantRow {
  id: string;
  seat_id: string | null;
  remaining: bigint;
  expires_at: Date | null;
  priority: number;
  created_at: Date;
}

/**
 * The grants a debit may draw from, as of the account's now: the seat's own, then (unless the seat
 * is barred from it) the shared pool. Expired and not-yet-effective grants are never spendable,
 * whether or not the expiry job has run.
 */
export async function loadSpendableGrants(tx: Tx, account: LockedAccount, creditType: string, seat: ActiveSeat | null): Promise<SpendableGrant[]> {
  const includeShared = seat === null || seat.canUseSharedPool;
  const rows = await tx.$queryRaw<SpendableGrantRow[]>`
    SELECT id, seat_id, remaining, expires_at, priority, created_at FROM grants
    WHERE account_id = ${account.id} AND credit_type = ${creditType} AND remaining > 0
      AND effective_at <= ${account.now} AND (expires_at IS NULL OR expires_at > ${account.now})
      AND ((seat_id IS NULL AND ${includeShared}) OR seat_id = ${seat?.id ?? null})`;
  return rows.map((row) => ({
    id: row.id,
    seatId: row.seat_id,
    remaining: toCredits(row.remaining),
    expiresAt: row.expires_at,
    priority: row.priority,
    createdAt: row.created_at,
  }));
}

export async function getActiveSeat(tx: Tx, accountId: string, seatId: string): Promise<ActiveSeat> {
  const seat = await tx.seat.findFirst({ where: { id: seatId, accountId, removedAt: null } });
  if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${seatId} not found in this account`);
  return { id: seat.id, canUseSharedPool: seat.canUseSharedPool };
}

async function loadOverageUsed(tx: Tx, account: LockedAccount, creditType: string): Promise<number> {
  const [row] = await tx.$queryRaw<Array<{ used: bigint }>>`
    SELECT overage AS used FROM period_usage_totals
    WHERE account_id = ${account.id} AND period_start = ${account.currentPeriodStart} AND credit_type = ${creditType}`;
  return toCredits(row?.used);
}

/**
 * Decides whether a spend may happen, under the account lock, and which grants pay: the balance
 * decision (decideBalance), then no spend limit may be exceeded. Refusals say why and write nothing.
 */
export async function authorizeSpend(tx: Tx, account: LockedAccount, plan: PlanRecord, request: SpendRequest): Promise<SpendDecision> {
  const grants = await loadSpendableGrants(tx, account, request.feature.creditType, request.seat);
  const decision = await decideBalance({ plan, grants, overageUsed: () => loadOverageUsed(tx, account, request.feature.creditType) }, request);
  if (decision.kind !== 'authorized') return decision;
  const limits = await checkSpendLimits(
    tx,
    account,
    { creditType: request.feature.creditType, featureKey: request.feature.key, seatId: request.seat?.id ?? null, tags: request.tags },
    request.cost,
  );
  if (limits.exceeded) return { kind: 'spendLimitExceeded', spendLimit: limits.exceeded };
  return { ...decision, limitsReached: limits.reached };
}
