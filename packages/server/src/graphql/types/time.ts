import { audited, recordAuditEvent } from '../../audit/auditLog.ts';
import { changePlan } from '../../accounts/changePlan.ts';
import { requireAccountAccess } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { advanceTestClock, createTestClock, findTestClock, type TestClockRecord } from '../../periods/testClocks.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';
import { PlanSubscriptionRef } from './account.ts';

const TestClockRef = builder.objectRef<TestClockRecord>('TestClock').implement({
  description: 'A clock that stands still until advanced; accounts attached to it live by its time.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    name: t.exposeString('name', { nullable: true, description: 'A label.' }),
    frozenTime: t.expose('frozenTime', { type: 'DateTime', description: 'The time it shows.' }),
  }),
});

const PlanChangeTimingEnum = builder.enumType('PlanChangeTiming', {
  description: 'When a plan change takes effect.',
  values: {
    IMMEDIATELY: {
      description:
        'Now: for the rest of the period, the new allocation less what the period already granted (an upgrade grants the difference, a downgrade nothing).',
    },
    AT_PERIOD_END: { description: 'At the next renewal (the pendingPlan until then).' },
  } as const,
});

const ChangePlanInput = builder.inputType('ChangePlanInput', {
  description: 'A plan change.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    planCode: t.string({ required: true, description: 'The new plan.' }),
    timing: t.field({ type: PlanChangeTimingEnum, description: 'Default: IMMEDIATELY for a pricier plan (upgrade), AT_PERIOD_END otherwise.' }),
  }),
});

const CreateTestClockInput = builder.inputType('CreateTestClockInput', {
  description: 'A new test clock.',
  fields: (t) => ({
    frozenTime: t.field({ type: 'DateTime', required: true, description: 'The time it starts at.' }),
    name: t.string({ description: 'A label.' }),
  }),
});

const AdvanceTestClockInput = builder.inputType('AdvanceTestClockInput', {
  description: 'Where to move a test clock.',
  fields: (t) => ({
    testClockId: t.id({ required: true, description: 'The clock.' }),
    to: t.field({ type: 'DateTime', required: true, description: 'The new time, not before the current one.' }),
  }),
});

builder.queryFields((t) => ({
  testClock: t.field({
    authScopes: { admin: true },
    type: TestClockRef,
    nullable: true,
    description: 'A test clock (operator only).',
    args: { id: t.arg.id({ required: true, description: 'The clock id.' }) },
    resolve: (_root, args, context) => findTestClock(context.prisma, args.id),
  }),
}));

builder.mutationFields((t) => ({
  changePlan: t.field({
    authScopes: { writer: true },
    type: PlanSubscriptionRef,
    description:
      'Moves the account to another plan: upgrades now, downgrades at the period end. With a Stripe subscription, a change to a plan sold through Stripe goes through the subscription: an upgrade applies (and grants its credits) once its proration invoice is paid (see pendingPaidUpgrade), a downgrade at the period end; a change to a plan not sold through Stripe is then refused (PLAN_NOT_SOLD_THROUGH_STRIPE). Otherwise an ADMIN key may change to any plan, an ACCOUNT key only to a selfServe plan of its own account (else FORBIDDEN).',
    args: { input: t.arg({ type: ChangePlanInput, required: true, description: 'The change.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      const paid = await context.subscriptions.changePlanThroughStripe(input);
      if (paid) {
        await recordAuditEvent(context.prisma, context.clock, actor, {
          action: 'changePlan',
          accountId: input.accountId,
          subjectId: input.accountId,
          details: { planCode: input.planCode, timing: input.timing, throughStripe: true },
        });
        return paid;
      }
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, changePlan(tx, context.clock, { ...input, actorRole: actor.role }), () => ({
          action: 'changePlan',
          accountId: input.accountId,
          subjectId: input.accountId,
          details: { planCode: input.planCode, timing: input.timing },
        })),
      );
    },
  }),
  createTestClock: t.field({
    authScopes: { admin: true },
    type: TestClockRef,
    description: 'Creates a test clock (operator only); attach accounts with createAccount(testClockId).',
    args: { input: t.arg({ type: CreateTestClockInput, required: true, description: 'The clock.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, createTestClock(tx, input), (clock) => ({ action: 'createTestClock', subjectId: clock.id, details: { ...input } })),
      );
    },
  }),
  advanceTestClock: t.field({
    authScopes: { admin: true },
    type: TestClockRef,
    description:
      'Moves a test clock forward and returns once every renewal, expiry and hold timeout that fell due has run (and the Stripe test clock mirroring it, if any, has moved too).',
    args: { input: t.arg({ type: AdvanceTestClockInput, required: true, description: 'The move.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      // The advance commits one transaction per attached account, so it is logged once all have.
      const from = (await findTestClock(context.prisma, input.testClockId))?.frozenTime;
      const advanced = await advanceTestClock(context.prisma, input.testClockId, input.to);
      await context.subscriptions.afterTestClockAdvanced(advanced.id, input.to);
      await recordAuditEvent(context.prisma, context.clock, actor, { action: 'advanceTestClock', subjectId: advanced.id, details: { from, to: input.to } });
      return advanced;
    },
  }),
}));
