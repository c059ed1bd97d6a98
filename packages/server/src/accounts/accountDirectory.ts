import { assertName } from '../catalog/validation.ts';
import type { Clock } from '../domain/clock.ts';
import { toLockedAccount, type AccountRow, type LockedAccount } from './lockAccount.ts';
import type { Tx } from '../db/transaction.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { Prisma, type PrismaClient } from '../generated/prisma/client.ts';
import { assertMetadata } from '../ledger/usageInput.ts';

/** The operator's own customer id: printable ASCII without spaces, so that it is safe in URLs and logs. */
const EXTERNAL_ID_PATTERN = /^[\x21-\x7E]{1,255}$/;

export function assertExternalId(value: string): string {
  if (!EXTERNAL_ID_PATTERN.test(value)) throw invalidInput('externalId must be 1-255 printable ASCII characters without spaces', 'externalId');
  return value;
}

/** Account metadata is a JSON object (key-value pairs), at most 16 KiB like usage metadata. */
export function assertAccountMetadata(value: unknown): Prisma.InputJsonValue | typeof Prisma.DbNull {
  if (value === null || value === undefined) return Prisma.DbNull;
  if (typeof value !== 'object' || Array.isArray(value)) throw invalidInput('metadata must be a JSON object', 'metadata');
  return assertMetadata(value) as Prisma.InputJsonValue;
}

/**
 * An external id is refused when another account holds it, and when it is another account's id:
 * a value given where an account id is accepted must name one account only.
 */
async function assertExternalIdFree(tx: Tx, externalId: string, forAccountId: string | null): Promise<void> {
  const [taken] = await tx.$queryRaw<Array<{ id: string }>>`
    SELECT id FROM accounts WHERE (external_id = ${externalId} OR id = ${externalId}) AND id IS DISTINCT FROM ${forAccountId} LIMIT 1`;
  if (taken) throw new BillingError(ErrorCode.EXTERNAL_ID_TAKEN, `externalId ${externalId} already names another account`, { field: 'externalId' });
}

/** Unique violations of the external id (a concurrent twin) answer as the check above does. */
function isExternalIdConflict(error: unknown): boolean {
  return error instanceof Prisma.PrismaClientKnownRequestError && error.code === 'P2002' && JSON.stringify(error.meta ?? {}).includes('external_id');
}

export async function setExternalId(tx: Tx, accountId: string, externalId: string): Promise<void> {
  await assertExternalIdFree(tx, externalId, accountId);
  try {
    await tx.$executeRaw`UPDATE accounts SET external_id = ${externalId} WHERE id = ${accountId}`;
  } catch (error) {
    if (isExternalIdConflict(error) || String(error).includes('accounts_external_id_key')) {
      throw new BillingError(ErrorCode.EXTERNAL_ID_TAKEN, `externalId ${externalId} already names another account`, { field: 'externalId' });
    }
    throw error;
  }
}

export interface AccountProfile {
  id: string;
  externalId: string | null;
  metadata: unknown;
}

export interface UpdateAccountCommand {
  accountId: string;
  name?: string | null;
  externalId?: string | null;
  /** Replaces the metadata as a whole; null clears it, absent leaves it. */
  metadata?: unknown;
  clearMetadata: boolean;
}

/**
 * Renames an account, sets its external id (once: a customer's id in the operator's system does
 * not change, and instances cache the mapping forever) and replaces its metadata.
 */
export async function updateAccount(tx: Tx, command: UpdateAccountCommand): Promise<{ id: string; changed: string[] }> {
  const [account] = await tx.$queryRaw<Array<{ id: string; external_id: string | null }>>`
    SELECT id, external_id FROM accounts WHERE id = ${command.accountId} FOR UPDATE`;
  if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
  const changed: string[] = [];
  if (command.name !== undefined && command.name !== null) {
    await tx.account.update({ where: { id: account.id }, data: { name: assertName(command.name) } });
    changed.push('name');
  }
  if (command.externalId !== undefined && command.externalId !== null) {
    const externalId = assertExternalId(command.externalId);
    if (account.external_id !== null && account.external_id !== externalId) {
      throw new BillingError(ErrorCode.EXTERNAL_ID_TAKEN, `account ${account.id} already has externalId ${account.external_id}; it is set once`, { field: 'externalId' });
    }
    if (account.external_id === null) {
      await setExternalId(tx, account.id, externalId);
      changed.push('externalId');
    }
  }
  if (command.metadata !== undefined || command.clearMetadata) {
    await tx.account.update({ where: { id: account.id }, data: { metadata: command.clearMetadata ? Prisma.DbNull : assertAccountMetadata(command.metadata) } });
    changed.push('metadata');
  }
  return { id: account.id, changed };
}

export interface AccountFilter {
  /** Case-insensitive part of the name. */
  nameContains?: string | null;
  externalId?: string | null;
  planCode?: string | null;
  subscriptionStatus?: string | null;
}

function likePattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (character) => `\\${character}`)}%`;
}

/**
 * Accounts oldest first, filtered; at most `limit` rows after the cursor (created_at, id). The
 * name filter scans the accounts the other filters leave (at most every account, never more);
 * external id and cursor use indexes.
 */
export async function listAccounts(
  tx: Tx | PrismaClient,
  clock: Clock,
  filter: AccountFilter,
  page: { limit: number; after: Array<string | number> | null },
): Promise<Array<LockedAccount & { createdAt: Date }>> {
  const conditions: Prisma.Sql[] = [];
  if (filter.nameContains !== undefined && filter.nameContains !== null) {
    if (filter.nameContains.length < 1 || filter.nameContains.length > 200) throw invalidInput('filter.nameContains must be 1-200 characters', 'filter.nameContains');
    conditions.push(Prisma.sql`a.name ILIKE ${likePattern(filter.nameContains)}`);
  }
  if (filter.externalId !== undefined && filter.externalId !== null) conditions.push(Prisma.sql`a.external_id = ${filter.externalId}`);
  if (filter.planCode !== undefined && filter.planCode !== null) conditions.push(Prisma.sql`a.plan_id = (SELECT id FROM plans WHERE code = ${filter.planCode})`);
  if (filter.subscriptionStatus !== undefined && filter.subscriptionStatus !== null) {
    conditions.push(Prisma.sql`a.subscription_status::text = ${filter.subscriptionStatus}`);
  }
  if (page.after) conditions.push(Prisma.sql`(a.created_at, a.id) > (${new Date(String(page.after[0]))}, ${String(page.after[1])})`);
  const where = conditions.length ? Prisma.sql`WHERE ${Prisma.join(conditions, ' AND ')}` : Prisma.empty;
  const rows = await tx.$queryRaw<Array<AccountRow & { created_at: Date }>>`
    SELECT a.id, a.name, a.plan_id, a.pending_plan_id, a.period_anchor, a.period_index,
           a.current_period_start, a.current_period_end, a.test_clock_id, tc.frozen_time, a.created_at,
           EXISTS (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = a.id AND c.enabled) AS has_auto_top_up
    FROM accounts a LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id ${where}
    ORDER BY a.created_at, a.id LIMIT ${page.limit}::int`;
  return rows.map((row) => ({ ...toLockedAccount(row, clock), createdAt: row.created_at }));
}

/** External ids and metadata of accounts, by id (for the Account fields that show them). */
export async function loadAccountProfiles(prisma: PrismaClient, ids: readonly string[]): Promise<Map<string, AccountProfile>> {
  const rows = await prisma.account.findMany({ where: { id: { in: [...ids] } }, select: { id: true, externalId: true, metadata: true } });
  return new Map(rows.map((row) => [row.id, { id: row.id, externalId: row.externalId, metadata: row.metadata }]));
}
