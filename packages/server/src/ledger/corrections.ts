import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { MAX_CREDITS, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import { Prisma } from '../generated/prisma/client.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';
import { getActiveSeat } from './authorizeSpend.ts';
import { loadBalance, type BalanceRecord } from './balances.ts';
import { assertCostBasis, assertExpiryAfter, assertGrantFeatures, assertPoolRoom, assertReason, type GrantCreditsCommand } from './grantCredits.ts';
import { insertGrant } from './grants.ts';
import { ledgerPolicies } from './ledgerPolicies.ts';
import { LEDGER_ENTRY_COLUMNS, toLedgerEntryRecord, type LedgerEntryRecord, type LedgerEntryRow } from './queries.ts';
import { assertIdempotencyKey, assertMetadata } from './usageInput.ts';

/**
 * Operator corrections (issue 20 item 1): voidGrant, adjustCredits, changeGrantExpiry.
 *
 * Who may call them: ADMIN keys only (scope `corrector`, auth/access.ts). An ACCOUNT or SEAT key is
 * refused before anything is read. A positive adjustment creates credits without money, and a void
 * or a negative one takes credits a customer may have paid for: both are the operator's decisions.
 *
 * What they write: a `corrections` row (kind, reason, actor, idempotency key) and ADJUST ledger
 * entries pointing back to it; history is never edited (a grant's `remaining`, `voided_at` and
 * `expires_at` change, the entries and the correction row say what moved and what it was). Each
 * runs under the account lock, like every debit, so a correction and a debit of the same grant are
 * serialized; the grants' CHECK (remaining >= 0) is the last line of defence.
 *
 * What a hostile input costs: a reason of at most 500 characters, metadata of at most 16 KiB, one
 * grant read by id, and for a negative adjustment the account's spendable grants of one pool (the
 * query the debit paths run). Idempotency: the same key and input answer the first correction,
 * another input under the key is IDEMPOTENCY_CONFLICT; keys are per account, shared by the three.
 */

export type CorrectionKind = 'VOID' | 'ADJUST' | 'EXPIRY';

export interface CorrectionRecord {
  id: string;
  accountId: string;
  kind: CorrectionKind;
  grantId: string | null;
  grantIds: string[];
  creditType: string;
  /** The change of the pool's credits, signed. */
  credits: number;
  reason: string;
  previousExpiresAt: Date | null;
  expiresAt: Date | null;
  idempotencyKey: string;
  actorKeyId: string | null;
  createdAt: Date;
}

export interface Corrected {
  kind: 'corrected';
  correction: CorrectionRecord;
  /** The pool's balance now (for a replay: now, not then). */
  balance: BalanceRecord;
  replayed: boolean;
}

/** A negative adjustment larger than what the pool could give; nothing was written. */
export interface AdjustmentRefused {
  kind: 'insufficientCredits';
  creditType: string;
  required: number;
  available: number;
}

interface CorrectionRow {
  id: string;
  account_id: string;
  kind: CorrectionKind;
  grant_id: string | null;
  grant_ids: string[];
  credit_type: string;
  credits: bigint;
  reason: string;
  previous_expires_at: Date | null;
  expires_at: Date | null;
  idempotency_key: string;
  request_hash: string;
  actor_key_id: string | null;
  created_at: Date;
}

/** The columns of a correction as `toCorrectionRecord` reads them. */
const CORRECTION_COLUMNS = Prisma.sql`id, account_id, kind::text AS kind, grant_id, grant_ids, credit_type, credits, reason, previous_expires_at,
  expires_at, idempotency_key, request_hash, actor_key_id, created_at`;

function toCorrectionRecord(row: CorrectionRow): CorrectionRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    kind: row.kind,
    grantId: row.grant_id,
    grantIds: row.grant_ids,
    creditType: row.credit_type,
    credits: toCredits(row.credits),
    reason: row.reason,
    previousExpiresAt: row.previous_expires_at,
    expiresAt: row.expires_at,
    idempotencyKey: row.idempotency_key,
    actorKeyId: row.actor_key_id,
    createdAt: row.created_at,
  };
}

interface Common {
  accountId: string;
  reason: string;
  idempotencyKey: string;
  /** The key that asked (kept on the correction; the audit log has it too). */
  actorKeyId?: string | null;
}

interface Prepared {
  account: LockedAccount;
  reason: string;
  idempotencyKey: string;
  requestHash: string;
  /** The first answer under the key, when this is a retry. */
  replay: Corrected | null;
}

/**
 * Validates what every correction takes, locks the account (doing what fell due first: expiries,
 * holds past their TTL, a renewal, so that a correction sees the grants as they stand), and looks
 * the key up.
 */
async function prepare(tx: Tx, clock: Clock, common: Common, input: Record<string, unknown>): Promise<Prepared> {
  const idempotencyKey = assertIdempotencyKey(common.idempotencyKey);
  const reason = assertReason(common.reason);
  const requestHash = hashRequest({ ...input, reason });
  const account = await ledgerPolicies().accountLocked(tx, await lockAccount(tx, clock, common.accountId), 'allDue');
  const [previous] = await tx.$queryRaw<CorrectionRow[]>`
    SELECT ${CORRECTION_COLUMNS} FROM corrections WHERE account_id = ${account.id} AND idempotency_key = ${idempotencyKey}`;
  if (!previous) return { account, reason, idempotencyKey, requestHash, replay: null };
  if (previous.request_hash !== requestHash) {
    throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different correction`, {
      correctionId: previous.id,
    });
  }
  const correction = toCorrectionRecord(previous);
  const balance = await loadBalance(tx, { ...account, accountId: account.id }, correction.creditType);
  return { account, reason, idempotencyKey, requestHash, replay: { kind: 'corrected', correction, balance, replayed: true } };
}

/** Written before its entries: the ledger-event trigger of an ADJUST entry reads it. */
async function insertCorrection(
  tx: Tx,
  prepared: Prepared,
  common: Common,
  correction: Omit<CorrectionRecord, 'id' | 'accountId' | 'reason' | 'idempotencyKey' | 'actorKeyId' | 'createdAt'>,
): Promise<CorrectionRecord> {
  const record: CorrectionRecord = {
    ...correction,
    id: newId(),
    accountId: prepared.account.id,
    reason: prepared.reason,
    idempotencyKey: prepared.idempotencyKey,
    actorKeyId: common.actorKeyId ?? null,
    createdAt: prepared.account.now,
  };
  await tx.$executeRaw`
    INSERT INTO corrections (id, account_id, kind, grant_id, grant_ids, credit_type, credits, reason, previous_expires_at, expires_at,
                             idempotency_key, request_hash, actor_key_id, created_at)
    VALUES (${record.id}, ${record.accountId}, ${record.kind}::"CorrectionKind", ${record.grantId}, ${record.grantIds}::text[],
            ${record.creditType}, ${BigInt(record.credits)}, ${record.reason}, ${record.previousExpiresAt}, ${record.expiresAt},
            ${record.idempotencyKey}, ${prepared.requestHash}, ${record.actorKeyId}, ${record.createdAt})`;
  return record;
}

/**
 * What a debit does once it has written: the balance event (balanceUpdated subscribers) and the
 * balance alerts (low balance, exhausted, usage thresholds) through the one ledger policy. An auto
 * top-up is not queued: it replaces credits spent, and an operator's correction is not spending
 * (a void must not charge the customer's card).
 */
async function corrected(tx: Tx, account: LockedAccount, correction: CorrectionRecord): Promise<Corrected> {
  notifyBalanceChanged(tx, account.id, correction.creditType);
  const balance = await loadBalance(tx, { ...account, accountId: account.id }, correction.creditType);
  await ledgerPolicies().balanceChanged(tx, account, balance);
  return { kind: 'corrected', correction, balance, replayed: false };
}

interface GrantState {
  id: string;
  credit_type: string;
  remaining: bigint;
  effective_at: Date;
  expires_at: Date | null;
  expired_at: Date | null;
  voided_at: Date | null;
}

/** The grant, if it is the account's: another account's grant is as unknown as a missing one. */
async function findGrant(tx: Tx, accountId: string, grantId: string): Promise<GrantState> {
  const [grant] = await tx.$queryRaw<GrantState[]>`
    SELECT id, credit_type, remaining, effective_at, expires_at, expired_at, voided_at FROM grants
    WHERE id = ${grantId} AND account_id = ${accountId}`;
  if (!grant) throw new BillingError(ErrorCode.GRANT_NOT_FOUND, `grant ${grantId} not found`, { grantId });
  if (grant.voided_at) throw new BillingError(ErrorCode.GRANT_VOIDED, `grant ${grantId} was voided`, { grantId });
  return grant;
}

export interface VoidGrantCommand extends Common {
  grantId: string;
}

/**
 * Removes what is left of a grant: its remaining credits leave in one ADJUST entry, what was spent
 * stays spent, and credits held by open reservations stay held (they are not in `remaining`):
 * settled, they are spent; released or refunded later, they come back to the void grant and leave
 * again at once (creditMovements.ts). A grant spent or expired to nothing is voided all the same
 * (no entry; later returns are voided too). Voiding a void grant again under a new key is
 * GRANT_VOIDED.
 */
export async function voidGrant(tx: Tx, clock: Clock, command: VoidGrantCommand): Promise<Corrected> {
  const prepared = await prepare(tx, clock, command, { kind: 'VOID', grantId: command.grantId });
  if (prepared.replay) return prepared.replay;
  const { account } = prepared;
  const grant = await findGrant(tx, account.id, command.grantId);
  const voided = toCredits(grant.remaining);
  const correction = await insertCorrection(tx, prepared, command, {
    kind: 'VOID',
    grantId: grant.id,
    grantIds: [grant.id],
    creditType: grant.credit_type,
    credits: -voided,
    previousExpiresAt: null,
    expiresAt: null,
  });
  await tx.$executeRaw`
    WITH voided AS (
      UPDATE grants SET remaining = 0, voided_at = ${account.now} WHERE id = ${grant.id} RETURNING id
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, correction_id, created_at)
    SELECT ${account.id}, id, 'ADJUST'::"LedgerEntryType", ${-BigInt(voided)}, ${correction.id}, ${account.now}
    FROM voided WHERE ${BigInt(voided)}::bigint > 0`;
  return corrected(tx, account, correction);
}

export interface AdjustCreditsCommand extends Common {
  creditType: string;
  /** Signed: positive grants (an ADJUSTMENT grant), negative takes back. */
  amount: number;
  /** Positive: give them to this seat; negative: take from this seat's own grants (else the shared pool's). */
  seatId?: string | null;
  expiresAt?: Date | null;
  priority?: number | null;
  costBasis?: GrantCreditsCommand['costBasis'];
  featureKeys?: readonly string[] | null;
  metadata?: unknown;
}

/**
 * A positive amount becomes a new ADJUSTMENT grant (PROMOTIONAL at zero cost unless a costBasis
 * says otherwise), entered in the ledger as an ADJUST entry (the finance reports count it as
 * adjusted, not issued). A negative amount is taken from the spendable grants of the shared pool
 * (or of the seat given) in consumption order, as spendable_draws (the debits' one definition)
 * orders and splits them, one ADJUST entry per grant touched; grants scoped to features are left
 * alone (void them instead). More than those grants hold is refused whole (nothing written), with
 * what could be taken: never below zero, and the operator decides what to take instead.
 */
export async function adjustCredits(tx: Tx, clock: Clock, command: AdjustCreditsCommand): Promise<Corrected | AdjustmentRefused> {
  const creditType = assertCode(command.creditType, 'creditType');
  const amount = command.amount;
  if (!Number.isSafeInteger(amount) || amount === 0 || Math.abs(amount) > MAX_CREDITS) {
    throw new BillingError(ErrorCode.INVALID_CREDITS, `amount must be a whole number of credits other than 0, at most ${MAX_CREDITS} in magnitude`, { field: 'amount' });
  }
  const positive = amount > 0;
  if (!positive) {
    for (const [field, value] of Object.entries({ expiresAt: command.expiresAt, priority: command.priority, costBasis: command.costBasis, metadata: command.metadata })) {
      if (value !== undefined && value !== null) throw invalidInput(`${field} applies to the grant of a positive adjustment only`, field);
    }
    if (command.featureKeys && command.featureKeys.length > 0) throw invalidInput('featureKeys applies to the grant of a positive adjustment only', 'featureKeys');
  }
  if (command.priority !== undefined && command.priority !== null && (!Number.isSafeInteger(command.priority) || command.priority < 0 || command.priority > 1_000_000)) {
    throw invalidInput('priority must be a whole number from 0 to 1000000', 'priority');
  }
  const cost = assertCostBasis(command.costBasis);
  const metadata = assertMetadata(command.metadata);
  const featureKeys = positive ? await assertGrantFeatures(tx, creditType, command.featureKeys) : [];
  const prepared = await prepare(tx, clock, command, {
    kind: 'ADJUST',
    creditType,
    amount,
    seatId: command.seatId ?? null,
    expiresAt: command.expiresAt?.toISOString() ?? null,
    priority: command.priority ?? null,
    ...(cost ? { cost } : {}),
    ...(featureKeys.length > 0 ? { featureKeys } : {}),
    ...(metadata !== null ? { metadata } : {}),
  });
  if (prepared.replay) return prepared.replay;
  const { account } = prepared;
  const seatId = command.seatId ? (await getActiveSeat(tx, account.id, command.seatId)).id : null;

  if (positive) {
    assertExpiryAfter(command.expiresAt ?? null, account.now, account.now);
    await assertPoolRoom(tx, account, creditType, amount, 'ADJUSTMENT');
    const grantId = newId();
    const correction = await insertCorrection(tx, prepared, command, {
      kind: 'ADJUST',
      grantId,
      grantIds: [grantId],
      creditType,
      credits: amount,
      previousExpiresAt: null,
      expiresAt: command.expiresAt ?? null,
    });
    await insertGrant(
      tx,
      {
        id: grantId,
        accountId: account.id,
        seatId,
        creditType,
        source: 'ADJUSTMENT',
        amount,
        priority: command.priority ?? undefined,
        effectiveAt: account.now,
        expiresAt: command.expiresAt ?? null,
        cost,
        featureKeys,
        reason: prepared.reason,
        metadata,
        entry: { type: 'ADJUST', correctionId: correction.id },
      },
      account.now,
    );
    return corrected(tx, account, correction);
  }

  const take = -amount;
  // The debits' definition of which grants, in which order, and what a take of `take` draws from
  // each: the shared pool's grants (seatId null, shared) or the seat's own (shared barred), and
  // with no feature named only the grants that pay for every feature.
  const draws = await tx.$queryRaw<Array<{ grant_id: string; remaining: bigint; credits: bigint }>>`
    SELECT grant_id, remaining, credits FROM spendable_draws(${account.id}::text, ${creditType}::text, ${account.now}::timestamp(3), ${seatId}::text, ${seatId === null}::boolean,
                                                        NULL::text, ${BigInt(take)}::bigint)
    ORDER BY position`;
  const available = draws.reduce((sum, draw) => sum + toCredits(draw.remaining), 0);
  if (available < take) return { kind: 'insufficientCredits', creditType, required: take, available };
  const taken = draws.filter((draw) => draw.credits > 0n);
  const correction = await insertCorrection(tx, prepared, command, {
    kind: 'ADJUST',
    grantId: null,
    grantIds: taken.map((draw) => draw.grant_id),
    creditType,
    credits: amount,
    previousExpiresAt: null,
    expiresAt: null,
  });
  await tx.$executeRaw`
    WITH taken AS (
      SELECT grant_id, credits, position
      FROM unnest(${taken.map((draw) => draw.grant_id)}::text[], ${taken.map((draw) => draw.credits)}::bigint[]) WITH ORDINALITY AS t(grant_id, credits, position)
    ),
    debited AS (
      UPDATE grants SET remaining = grants.remaining - taken.credits FROM taken WHERE grants.id = taken.grant_id
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, correction_id, created_at)
    SELECT ${account.id}, grant_id, 'ADJUST'::"LedgerEntryType", -credits, ${correction.id}, ${account.now} FROM taken ORDER BY position`;
  return corrected(tx, account, correction);
}

export interface ChangeGrantExpiryCommand extends Common {
  grantId: string;
  /** The new expiry; null: never. */
  expiresAt: Date | null;
}

/**
 * Moves a grant's expiry, earlier or later, or removes it. The new expiry must be after the
 * account's now (its test clock's) and after the grant's effectiveAt; an expired grant stays
 * expired (GRANT_EXPIRED: its credits are gone, grant new ones) and a void one void (GRANT_VOIDED).
 * The grant row's expires_at changes; the correction row keeps what it was, and a zero-credit
 * ADJUST entry marks the change in the ledger. Nothing caches expiries: the debit paths
 * (live_grants), the expiry job (expired_at IS NULL AND expires_at <= now) and the expiring-soon
 * alerts read the row, so the new expiry applies from the commit on.
 */
export async function changeGrantExpiry(tx: Tx, clock: Clock, command: ChangeGrantExpiryCommand): Promise<Corrected> {
  const prepared = await prepare(tx, clock, command, { kind: 'EXPIRY', grantId: command.grantId, expiresAt: command.expiresAt?.toISOString() ?? null });
  if (prepared.replay) return prepared.replay;
  const { account } = prepared;
  const grant = await findGrant(tx, account.id, command.grantId);
  if (grant.expired_at || (grant.expires_at && grant.expires_at.getTime() <= account.now.getTime())) {
    throw new BillingError(ErrorCode.GRANT_EXPIRED, `grant ${grant.id} has expired: its credits are gone`, { grantId: grant.id });
  }
  assertExpiryAfter(command.expiresAt, grant.effective_at, account.now);
  const correction = await insertCorrection(tx, prepared, command, {
    kind: 'EXPIRY',
    grantId: grant.id,
    grantIds: [grant.id],
    creditType: grant.credit_type,
    credits: 0,
    previousExpiresAt: grant.expires_at,
    expiresAt: command.expiresAt,
  });
  await tx.$executeRaw`
    WITH moved AS (
      UPDATE grants SET expires_at = ${command.expiresAt} WHERE id = ${grant.id} RETURNING id
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, correction_id, created_at)
    SELECT ${account.id}, id, 'ADJUST'::"LedgerEntryType", 0, ${correction.id}, ${account.now} FROM moved`;
  return corrected(tx, account, correction);
}

/** Corrections by id, for reads (a ledger page's ADJUST entries), in one statement. */
export async function findCorrections(tx: Pick<Tx, '$queryRaw'>, ids: readonly string[]): Promise<CorrectionRecord[]> {
  const rows = await tx.$queryRaw<CorrectionRow[]>`
    SELECT ${CORRECTION_COLUMNS} FROM corrections WHERE id = ANY(${[...ids]}::text[])`;
  return rows.map(toCorrectionRecord);
}

/**
 * The ledger entries each correction wrote, in order, in one statement (read through the grants'
 * index: every entry of a correction is on one of its grants).
 */
export async function listCorrectionEntries(tx: Pick<Tx, '$queryRaw'>, corrections: readonly CorrectionRecord[]): Promise<Map<string, LedgerEntryRecord[]>> {
  const grantIds = [...new Set(corrections.flatMap((correction) => correction.grantIds))];
  const rows = await tx.$queryRaw<LedgerEntryRow[]>`
    SELECT ${LEDGER_ENTRY_COLUMNS} FROM ledger_entries
    WHERE grant_id = ANY(${grantIds}::text[]) AND correction_id = ANY(${corrections.map((correction) => correction.id)}::text[]) ORDER BY id`;
  const byCorrection = new Map(corrections.map((correction) => [correction.id, [] as LedgerEntryRecord[]]));
  for (const entry of rows.map(toLedgerEntryRecord)) byCorrection.get(entry.correctionId ?? '')?.push(entry);
  return byCorrection;
}
