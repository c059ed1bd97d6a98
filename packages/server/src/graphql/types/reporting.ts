import { loadBalance } from '../../ledger/balances.ts';
import { forecastDepletion, summarizeUsage, type ForecastRecord, type UsageGroupRecord } from '../../ledger/reporting.ts';
import { builder } from '../builder.ts';
import { MAX_PAGE_SIZE, pageSize } from '../pagination.ts';
import { seatScopeOf } from '../../auth/access.ts';
import { AccountRef } from './account.ts';

const UsageGroupByEnum = builder.enumType('UsageGroupBy', {
  description: 'How to group a usage summary.',
  values: {
    FEATURE: { description: 'By feature key.' },
    SEAT: { description: 'By seat id ("" for usage without a seat).' },
    TAG: { description: 'By tag (an event counts under each of its tags).' },
    DAY: { description: 'By UTC day (YYYY-MM-DD).' },
  } as const,
});

const UsageGroupRef = builder.objectRef<UsageGroupRecord>('UsageGroup').implement({
  description: 'Usage of one group.',
  fields: (t) => ({
    key: t.exposeString('key', { description: 'The feature key, seat id, tag or ISO day, by groupBy.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'Credits charged, net of refunds.' }),
    events: t.exposeInt('events', { description: 'Usage events.' }),
  }),
});

const ForecastRef = builder.objectRef<ForecastRecord>('Forecast').implement({
  description: 'When a pool runs out at the current burn rate (credits used over the last 7 days).',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool.' }),
    burnRatePerDay: t.exposeFloat('burnRatePerDay', { description: 'Credits used per day over the last 7 days (or since the account began).' }),
    depletesAt: t.expose('depletesAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When the available balance reaches zero at the current burn rate; null if it does not.',
    }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  usageSummary: t.field({
    type: [UsageGroupRef],
    description: 'Usage grouped by feature, seat, tag or day, most credits first (at most `first` groups); the current period by default. A SEAT key sees only its own usage.',
    args: {
      from: t.arg({ type: 'DateTime', description: 'From (inclusive); default the current period start.' }),
      to: t.arg({ type: 'DateTime', description: 'To (exclusive); default the current period end.' }),
      groupBy: t.arg({ type: UsageGroupByEnum, required: true, description: 'The grouping.' }),
      // Tags (and days) are as many as the usage has: the answer is bounded like a page.
      first: t.arg.int({ defaultValue: MAX_PAGE_SIZE, description: `How many groups, the most credits first (1 to ${MAX_PAGE_SIZE}, default ${MAX_PAGE_SIZE}).` }),
    },
    resolve: async (account, args, context) => {
      const groups = await summarizeUsage(
        context.prisma,
        account.id,
        args.from ?? account.currentPeriodStart,
        args.to ?? account.currentPeriodEnd,
        args.groupBy,
        seatScopeOf(context.actor),
        pageSize(args.first),
      );
      return groups;
    },
  }),
  forecast: t.field({
    type: ForecastRef,
    description: 'When a pool runs out at the current burn rate.',
    args: { creditType: t.arg.string({ required: true, description: 'The pool.' }) },
    resolve: async (account, args, context) => {
      const { createdAt } = await context.prisma.account.findUniqueOrThrow({ where: { id: account.id }, select: { createdAt: true } });
      const balance = await loadBalance(context.prisma, { ...account, accountId: account.id }, args.creditType);
      return forecastDepletion(context.prisma, { id: account.id, now: account.now, createdAt }, args.creditType, balance.available);
    },
  }),
}));
