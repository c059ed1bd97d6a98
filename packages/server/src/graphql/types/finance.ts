import { deferredRevenue, FINANCE_REPORT_KINDS, financeFlow, financeSummary, type FinanceAmount, type FinanceReportKind, type FinanceSummaryRow } from '../../ledger/financeReports.ts';
import { builder } from '../builder.ts';
import { COSTLY_OPERATION_THRESHOLD } from '../queryCost.ts';

/**
 * A report reads every ledger entry of its range or before its instant, of every account
 * (financeReport: eight such statements), holding a connection of the pool meanwhile: at a cost of 1
 * a request ran fifteen at once, and requests in parallel as many as they liked. Counted as balanceAt
 * is, each waits for its share of the process's cost budget (fifteen at once in all).
 */
const REPORT_COST = COSTLY_OPERATION_THRESHOLD;

const FinanceAmountRef = builder.objectRef<FinanceAmount>('FinanceAmount').implement({
  description: 'Credits of PAID grants and their value at cost basis, in one currency.',
  fields: (t) => ({
    currency: t.exposeString('currency', { description: 'ISO 4217 code of the grants’ cost basis.' }),
    amount: t.float({ description: 'Minor units of the currency (fractional: a credit may cost a fraction of a cent; 6 decimals).', resolve: (row) => Number(row.amount) }),
    amountDecimal: t.string({
      description: 'The same amount as exact decimal text (6 decimals), for books that must add up to the last digit.',
      resolve: (row) => row.amount,
    }),
    credits: t.float({ description: 'The credits counted.', resolve: (row) => Number(row.credits) }),
  }),
});

const FinanceCurrencyReportRef = builder.objectRef<FinanceSummaryRow>('FinanceCurrencyReport').implement({
  description:
    'The finance reports of one currency over a range. deferredAtEnd − deferredAtStart = issued − recognised + refunded − breakage − clawedBack + adjusted.',
  fields: (t) => ({
    currency: t.exposeString('currency', { description: 'ISO 4217 code.' }),
    deferredAtStart: t.field({ type: FinanceAmountRef, description: 'Deferred revenue at `from`: PAID credits granted and not yet consumed, expired or taken back.', resolve: (row) => row.deferredAtStart }),
    deferredAtEnd: t.field({ type: FinanceAmountRef, description: 'Deferred revenue at `to`.', resolve: (row) => row.deferredAtEnd }),
    issued: t.field({ type: FinanceAmountRef, description: 'PAID credits granted in the range (rollovers excluded: they carry credits issued before).', resolve: (row) => row.flows.issued }),
    recognised: t.field({ type: FinanceAmountRef, description: 'PAID credits consumed in the range (usage and settled holds).', resolve: (row) => row.flows.recognised }),
    refunded: t.field({ type: FinanceAmountRef, description: 'PAID credits given back by usage refunds in the range.', resolve: (row) => row.flows.refunded }),
    breakage: t.field({ type: FinanceAmountRef, description: 'PAID credits that expired unspent in the range, less what rollovers carried on.', resolve: (row) => row.flows.breakage }),
    clawedBack: t.field({ type: FinanceAmountRef, description: 'PAID credits taken back in the range after their purchase was refunded.', resolve: (row) => row.flows.clawedBack }),
    adjusted: t.field({ type: FinanceAmountRef, description: 'Other movements of PAID credits in the range (corrections, voids), signed.', resolve: (row) => row.flows.adjusted }),
  }),
});

const FinanceReportKindEnum = builder.enumType('FinanceReportKind', {
  description: 'One flow report of the ledger over a range.',
  values: Object.fromEntries(FINANCE_REPORT_KINDS.map((kind) => [kind.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase(), { value: kind, description: `The ${kind} report.` }])) as Record<string, { value: FinanceReportKind; description: string }>,
});

builder.queryFields((t) => ({
  financeReport: t.field({
    authScopes: { admin: true },
    complexity: REPORT_COST,
    type: [FinanceCurrencyReportRef],
    description:
      'Deferred revenue at both ends of [from, to) and every flow in between, per currency, each one SQL statement over the whole ledger (operator only; instants are the ledger’s, a test clock’s for accounts on one). Counts as 5,000 in the query cost.',
    args: {
      from: t.arg({ type: 'DateTime', required: true, description: 'Start of the range (inclusive).' }),
      to: t.arg({ type: 'DateTime', required: true, description: 'End of the range (exclusive).' }),
      currency: t.arg.string({ description: 'Only this currency.' }),
    },
    resolve: (_root, args, context) => financeSummary(context.prisma, args.from, args.to, args.currency ?? null),
  }),
  financeFlow: t.field({
    authScopes: { admin: true },
    complexity: REPORT_COST,
    type: [FinanceAmountRef],
    description: 'One flow report over [from, to) per currency, one SQL statement (operator only). Counts as 5,000 in the query cost.',
    args: {
      kind: t.arg({ type: FinanceReportKindEnum, required: true, description: 'Which report.' }),
      from: t.arg({ type: 'DateTime', required: true, description: 'Start of the range (inclusive).' }),
      to: t.arg({ type: 'DateTime', required: true, description: 'End of the range (exclusive).' }),
      currency: t.arg.string({ description: 'Only this currency.' }),
    },
    resolve: (_root, args, context) => financeFlow(context.prisma, args.kind, args.from, args.to, args.currency ?? null),
  }),
  deferredRevenue: t.field({
    authScopes: { admin: true },
    complexity: REPORT_COST,
    type: [FinanceAmountRef],
    description: 'PAID credits granted and not yet consumed, expired or taken back before an instant, per currency (operator only). Counts as 5,000 in the query cost.',
    args: {
      at: t.arg({ type: 'DateTime', required: true, description: 'The instant.' }),
      currency: t.arg.string({ description: 'Only this currency.' }),
    },
    resolve: (_root, args, context) => deferredRevenue(context.prisma, args.at, args.currency ?? null),
  }),
}));
