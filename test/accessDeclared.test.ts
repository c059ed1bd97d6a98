import { isObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { declaredRoles } from '../packages/server/src/graphql/builder.ts';
import { schema } from '../packages/server/src/graphql/schema.ts';

const EVERY_KEY = ['ACCOUNT', 'ADMIN', 'SEAT'];
const OPERATOR = ['ADMIN'];
const ACCOUNT_WRITERS = ['ACCOUNT', 'ADMIN'];

/**
 * Who may call each root field, as declared where the field is defined (`authScopes`). A change of
 * roles, or a new field, has to change this table too, so a review sees it.
 */
const expected: Record<string, string[]> = {
  'Query.account': EVERY_KEY,
  'Query.accounts': OPERATOR,
  'Query.auditEvents': OPERATOR,
  'Query.creditPacks': EVERY_KEY,
  'Query.deferredRevenue': OPERATOR,
  'Query.features': EVERY_KEY,
  'Query.financeFlow': OPERATOR,
  'Query.financeReport': OPERATOR,
  'Query.plan': EVERY_KEY,
  'Query.plans': EVERY_KEY,
  'Query.testClock': OPERATOR,
  'Query.topUpPurchase': EVERY_KEY,
  'Query.viewer': EVERY_KEY,
  'Query.webhookEndpoints': OPERATOR,
  'Mutation.acknowledgeAlert': EVERY_KEY,
  'Mutation.addSeat': ACCOUNT_WRITERS,
  // Corrections create or remove credits without money: the operator alone (scope `corrector`).
  'Mutation.adjustCredits': OPERATOR,
  'Mutation.advanceTestClock': OPERATOR,
  'Mutation.cancelScheduledGrant': OPERATOR,
  'Mutation.cancelSubscription': ACCOUNT_WRITERS,
  'Mutation.changeGrantExpiry': OPERATOR,
  'Mutation.changePlan': ACCOUNT_WRITERS,
  'Mutation.configureAlertWebhook': ACCOUNT_WRITERS,
  'Mutation.configureAutoTopUp': ACCOUNT_WRITERS,
  'Mutation.createAccount': OPERATOR,
  'Mutation.createApiKey': ACCOUNT_WRITERS,
  // And an account-wide session token issued with canBuy (scopesOf); never a SEAT key or a seat's session.
  'Mutation.createBillingPortalSession': ACCOUNT_WRITERS,
  'Mutation.createPaymentMethodSetup': ACCOUNT_WRITERS,
  'Mutation.createSessionToken': ACCOUNT_WRITERS,
  'Mutation.createTestClock': OPERATOR,
  'Mutation.createWebhookEndpoint': OPERATOR,
  'Mutation.grantCredits': OPERATOR,
  'Mutation.linkPlanToStripePrice': OPERATOR,
  'Mutation.purchaseCreditPack': ACCOUNT_WRITERS,
  'Mutation.recordUsage': ACCOUNT_WRITERS,
  'Mutation.recordUsageBatch': ACCOUNT_WRITERS,
  'Mutation.refundUsage': ACCOUNT_WRITERS,
  'Mutation.releaseReservation': ACCOUNT_WRITERS,
  'Mutation.removePaymentMethod': ACCOUNT_WRITERS,
  'Mutation.removeSeat': ACCOUNT_WRITERS,
  'Mutation.removeSpendLimit': ACCOUNT_WRITERS,
  'Mutation.reserveCredits': ACCOUNT_WRITERS,
  'Mutation.revokeApiKey': ACCOUNT_WRITERS,
  'Mutation.revokeSessionToken': ACCOUNT_WRITERS,
  'Mutation.rotateApiKey': ACCOUNT_WRITERS,
  'Mutation.scheduleGrant': OPERATOR,
  'Mutation.setAlertSettings': ACCOUNT_WRITERS,
  'Mutation.setSpendLimit': ACCOUNT_WRITERS,
  'Mutation.settleReservation': ACCOUNT_WRITERS,
  'Mutation.subscribeToPlan': ACCOUNT_WRITERS,
  'Mutation.updateSeat': ACCOUNT_WRITERS,
  'Mutation.updateWebhookEndpoint': OPERATOR,
  'Mutation.updateAccount': OPERATOR,
  'Mutation.upsertCreditPack': OPERATOR,
  'Mutation.upsertFeature': OPERATOR,
  'Mutation.upsertPlan': OPERATOR,
  'Mutation.voidGrant': OPERATOR,
  'Subscription.balanceUpdated': EVERY_KEY,
  'Subscription.creditAlerts': EVERY_KEY,
  'Subscription.topUpUpdated': EVERY_KEY,
};

const declared = Object.fromEntries(
  [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((type) =>
    type ? Object.values(type.getFields()).map((field) => [`${type.name}.${field.name}`, declaredRoles(field)] as const) : [],
  ),
);

describe('who may call each root field is declared where it is defined', () => {
  it('every root field declares the roles that may call it', () => {
    expect(Object.entries(declared).filter(([, roles]) => roles === null).map(([field]) => field)).toEqual([]);
  });

  it('the declared roles are the reviewed ones', () => {
    expect(declared).toEqual(expected);
  });

  it('invoices, a non-root field, are declared too: SEAT keys do not read them', () => {
    const account = schema.getType('Account');
    expect(isObjectType(account) ? declaredRoles(account.getFields().invoices!) : null).toEqual(ACCOUNT_WRITERS);
  });

  it('the ledger, a non-root field, is declared too: SEAT keys do not read it', () => {
    const account = schema.getType('Account');
    expect(isObjectType(account) ? declaredRoles(account.getFields().ledger!) : null).toEqual(ACCOUNT_WRITERS);
  });
});
