import type { Tx } from '../db/transaction.ts';
import { invalidInput } from '../domain/errors.ts';
import { Prisma, type PrismaClient } from '../generated/prisma/client.ts';

/**
 * Finance reports over the ledger (issue 20 item 2). Every amount is the ledger entries of PAID
 * grants valued at their grant's unit cost, per currency, in minor units (fractional: a credit may
 * cost a fraction of a cent; rounded to 6 decimals). Each report is one SQL statement, aggregated by
 * the database in one pass over the ledger entries it reads (memory is one row per currency).
 *
 * Instants are the ledger's: an entry is dated at its account's time (a test clock's for accounts on
 * one). Ranges are [from, to); deferred revenue at an instant counts the entries before it, so that
 *   deferred(to) − deferred(from) = issued − recognised + refunded − breakage − clawedBack + adjusted.
 */
export type FinanceReportKind = 'issued' | 'recognised' | 'refunded' | 'breakage' | 'clawedBack' | 'adjusted';

export const FINANCE_REPORT_KINDS: readonly FinanceReportKind[] = ['issued', 'recognised', 'refunded', 'breakage', 'clawedBack', 'adjusted'];

export interface FinanceAmount {
  currency: string;
  /** Minor units, as exact decimal text rounded to 6 places. */
  amount: string;
  credits: string;
}

/**
 * What each flow report counts: the sign turns it into a positive figure.
 * - issued: PAID credits granted (rollover grants excluded: they carry credits already issued).
 * - recognised: PAID credits consumed (DEBIT entries: usage and settled holds).
 * - refunded: PAID credits given back by usage refunds (revenue recognised earlier, reversed).
 * - breakage: PAID credits expired unspent, less what a rollover carried into the next period.
 * - clawedBack: PAID credits taken back after the purchase was refunded.
 * - adjusted: every other movement of PAID credits (corrections, voids), signed.
 */
const FLOWS: Record<FinanceReportKind, Prisma.Sql> = {
  issued: Prisma.sql`CASE WHEN l.type = 'GRANT' AND g.source <> 'ROLLOVER' THEN l.credits ELSE 0 END`,
  recognised: Prisma.sql`CASE WHEN l.type = 'DEBIT' THEN -l.credits ELSE 0 END`,
  refunded: Prisma.sql`CASE WHEN l.type = 'REFUND' THEN l.credits ELSE 0 END`,
  breakage: Prisma.sql`CASE WHEN l.type = 'EXPIRE' THEN -l.credits WHEN l.type = 'GRANT' AND g.source = 'ROLLOVER' THEN -l.credits ELSE 0 END`,
  clawedBack: Prisma.sql`CASE WHEN l.type = 'CLAWBACK' THEN -l.credits ELSE 0 END`,
  adjusted: Prisma.sql`CASE WHEN l.type::text NOT IN ('GRANT', 'DEBIT', 'REFUND', 'EXPIRE', 'CLAWBACK', 'RESERVE', 'RELEASE') THEN l.credits ELSE 0 END`,
};

/** The entry types each flow reads, so that the database skips the others before joining. */
const FLOW_TYPES: Record<FinanceReportKind, Prisma.Sql> = {
  issued: Prisma.sql`l.type = 'GRANT'`,
  recognised: Prisma.sql`l.type = 'DEBIT'`,
  refunded: Prisma.sql`l.type = 'REFUND'`,
  breakage: Prisma.sql`l.type IN ('EXPIRE', 'GRANT')`,
  clawedBack: Prisma.sql`l.type = 'CLAWBACK'`,
  adjusted: Prisma.sql`l.type::text NOT IN ('GRANT', 'DEBIT', 'REFUND', 'EXPIRE', 'CLAWBACK', 'RESERVE', 'RELEASE')`,
};

function currencyFilter(currency: string | null): Prisma.Sql {
  return currency === null ? Prisma.empty : Prisma.sql`AND g.cost_currency = ${currency}`;
}

/** Whether a report's currency argument has the form of an ISO 4217 code (any case). */
export function isCurrencyCode(currency: string): boolean {
  return /^[A-Za-z]{3}$/.test(currency);
}

function assertCurrency(currency: string | null | undefined): string | null {
  if (currency === null || currency === undefined) return null;
  if (!isCurrencyCode(currency)) throw invalidInput('currency must be an ISO 4217 code such as USD', 'currency');
  return currency.toUpperCase();
}

export function assertRange(from: Date, to: Date): void {
  if (!(to.getTime() > from.getTime())) throw invalidInput('to must be after from', 'to');
}

type Row = { currency: string; amount: string; credits: string };

/** Deferred revenue: PAID credits granted and not yet consumed, expired or taken back, before `at` (held credits are still owed). */
export async function deferredRevenue(tx: Tx | PrismaClient, at: Date, currency: string | null = null): Promise<FinanceAmount[]> {
  const only = assertCurrency(currency);
  return tx.$queryRaw<Row[]>`
    SELECT g.cost_currency AS currency, round(sum(l.credits * g.unit_cost), 6)::text AS amount, sum(l.credits)::text AS credits
    FROM ledger_entries l JOIN grants g ON g.id = l.grant_id
    WHERE l.created_at < ${at} AND l.type NOT IN ('RESERVE', 'RELEASE') AND g.funding = 'PAID' ${currencyFilter(only)}
    GROUP BY g.cost_currency ORDER BY g.cost_currency`;
}

/** One flow report over [from, to). */
export async function financeFlow(tx: Tx | PrismaClient, kind: FinanceReportKind, from: Date, to: Date, currency: string | null = null): Promise<FinanceAmount[]> {
  assertRange(from, to);
  const only = assertCurrency(currency);
  const flow = FLOWS[kind];
  return tx.$queryRaw<Row[]>`
    SELECT g.cost_currency AS currency, round(sum((${flow}) * g.unit_cost), 6)::text AS amount, sum(${flow})::text AS credits
    FROM ledger_entries l JOIN grants g ON g.id = l.grant_id
    WHERE l.created_at >= ${from} AND l.created_at < ${to} AND ${FLOW_TYPES[kind]} AND g.funding = 'PAID' ${currencyFilter(only)}
    GROUP BY g.cost_currency ORDER BY g.cost_currency`;
}

export interface FinanceSummaryRow {
  currency: string;
  deferredAtStart: FinanceAmount;
  deferredAtEnd: FinanceAmount;
  flows: Record<FinanceReportKind, FinanceAmount>;
}

/** Every report over [from, to), one statement each, merged per currency. */
export async function financeSummary(tx: Tx | PrismaClient, from: Date, to: Date, currency: string | null = null): Promise<FinanceSummaryRow[]> {
  assertRange(from, to);
  // One after another: a transaction's statements cannot run in parallel.
  const start = await deferredRevenue(tx, from, currency);
  const end = await deferredRevenue(tx, to, currency);
  const flows: FinanceAmount[][] = [];
  for (const kind of FINANCE_REPORT_KINDS) flows.push(await financeFlow(tx, kind, from, to, currency));
  const currencies = [...new Set([start, end, ...flows].flat().map((row) => row.currency))].sort();
  const pick = (rows: FinanceAmount[], code: string): FinanceAmount => rows.find((row) => row.currency === code) ?? { currency: code, amount: '0', credits: '0' };
  return currencies.map((code) => ({
    currency: code,
    deferredAtStart: pick(start, code),
    deferredAtEnd: pick(end, code),
    flows: Object.fromEntries(FINANCE_REPORT_KINDS.map((kind, index) => [kind, pick(flows[index]!, code)])) as Record<FinanceReportKind, FinanceAmount>,
  }));
}

/** The summary as CSV: one line per currency, amounts in minor units, credits beside them. */
export function financeSummaryCsv(rows: FinanceSummaryRow[]): string {
  const columns = ['deferredAtStart', ...FINANCE_REPORT_KINDS, 'deferredAtEnd'] as const;
  const header = ['currency', ...columns.flatMap((column) => [`${column}_amount`, `${column}_credits`])].join(',');
  const lines = rows.map((row) =>
    [
      row.currency,
      ...columns.flatMap((column) => {
        const value = column === 'deferredAtStart' || column === 'deferredAtEnd' ? row[column] : row.flows[column];
        return [value.amount, value.credits];
      }),
    ].join(','),
  );
  return `${[header, ...lines].join('\n')}\n`;
}
