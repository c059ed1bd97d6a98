import {
  acknowledgeAlert,
  findAlert,
  listAlertSettings,
  listAlerts,
  setAlertSettings,
  type AlertRecord,
  type AlertSettingsRecord,
} from '../../alerts/alerts.ts';
import { configureAlertWebhook, type AlertWebhookRecord } from '../../alerts/alertWebhooks.ts';
import { checkWebhookTarget } from '../../alerts/webhookTarget.ts';
import { findAccountState } from '../../accounts/lockAccount.ts';
import { canReadAccount, requireAccountAccess, seatScopeOf, type Actor } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { loadBalances, readAccountWithBalances, type BalanceRecord } from '../../ledger/balances.ts';
import type { AlertPayload } from '../../realtime/events.ts';
import { snapshotThenLive } from '../../realtime/snapshotFeed.ts';
import { filter, pipe } from 'graphql-yoga';
import { builder } from '../builder.ts';
import { requireActor, type GraphQLContext } from '../context.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { AccountRef, BalanceRef } from './account.ts';

const AlertKindEnum = builder.enumType('AlertKind', {
  description: 'What an alert is about.',
  values: {
    USAGE_THRESHOLD: { description: 'A percentage of the period allocation was used (threshold: the percentage).' },
    LOW_BALANCE: { description: 'The balance fell below the low-balance level (threshold: the level).' },
    EXPIRING_SOON: { description: 'Credits expire within the configured days (threshold: the days).' },
    POOL_EXHAUSTED: { description: 'The pool has nothing left: its features are paused.' },
    AUTO_TOP_UP_SUCCEEDED: { description: 'An auto top-up bought credits.' },
    AUTO_TOP_UP_FAILED: { description: 'An auto top-up payment failed.' },
    SPEND_LIMIT_REACHED: { description: 'A spend limit was used up.' },
    AUTO_TOP_UP_PAUSED: { description: 'Auto top-up paused itself after failed payments in a row; it stays off until reconfigured.' },
    PAYMENT_ACTION_REQUIRED: { description: 'An off-session payment waits for the customer to authenticate it (the purchase is REQUIRES_ACTION, with its actionUrl).' },
    SUBSCRIPTION_PAST_DUE: { description: 'A subscription payment failed: usage goes on for the grace period, then is refused until the invoice is paid.' },
  } as const,
});

const AlertRef = builder.objectRef<AlertRecord>('Alert').implement({
  description: 'Something about credits worth telling the customer; raised once (per threshold and period).',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    kind: t.expose('kind', { type: AlertKindEnum, description: 'What it is about.' }),
    creditType: t.exposeString('creditType', { nullable: true, description: 'The pool concerned.' }),
    threshold: t.exposeInt('threshold', { nullable: true, description: 'The percentage or credit level that was crossed, where the kind has one.' }),
    message: t.exposeString('message', { description: 'What happened, for people.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was raised (the account clock).' }),
    acknowledgedAt: t.expose('acknowledgedAt', { type: 'DateTime', nullable: true, description: 'When someone marked it seen.' }),
  }),
});

const AlertConnectionRef = defineConnection('Alert', AlertRef, 'alert');

const AlertSettingsRef = builder.objectRef<AlertSettingsRecord>('AlertSettings').implement({
  description: 'When to alert about one pool.',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool.' }),
    percents: t.exposeIntList('percents', { description: 'Percentages of the period allocation used that raise an alert (default 75, 85, 90, 100).' }),
    lowBalance: t.expose('lowBalance', { type: 'Credits', nullable: true, description: 'Alert when the balance falls below this.' }),
    expiringWithinDays: t.exposeInt('expiringWithinDays', { nullable: true, description: 'Alert about credits expiring within this many days.' }),
  }),
});

const AlertWebhookRef = builder.objectRef<AlertWebhookRecord>('AlertWebhook').implement({
  description: 'Where the account’s alerts are POSTed, signed.',
  fields: (t) => ({
    url: t.exposeString('url', { description: 'The receiver.' }),
    enabled: t.exposeBoolean('enabled', { description: 'Whether alerts are sent.' }),
    secret: t.exposeString('secret', {
      description: 'Signs each delivery: header Billing-Signature `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.',
    }),
  }),
});

const SetAlertSettingsInput = builder.inputType('SetAlertSettingsInput', {
  description: 'When to alert about one pool.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    creditType: t.string({ required: true, description: 'The pool.' }),
    percents: t.intList({ required: true, description: 'Percentages of the allocation used, 1 to 1000.' }),
    lowBalance: t.field({ type: 'Credits', description: 'Alert when the balance falls below this.' }),
    expiringWithinDays: t.int({ description: 'Alert about credits expiring within this many days (1 to 366).' }),
  }),
});

const ConfigureAlertWebhookInput = builder.inputType('ConfigureAlertWebhookInput', {
  description: 'Where to POST the account’s alerts.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    url: t.string({ required: true, description: 'An http(s) URL.' }),
    enabled: t.boolean({ description: 'Default true.' }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  alerts: t.field({
    type: AlertConnectionRef,
    description: 'Alerts, newest first.',
    args: {
      unacknowledgedOnly: t.arg.boolean({ description: 'Only alerts nobody acknowledged.' }),
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, ['integer']);
      const rows = await listAlerts(
        context.prisma,
        account.id,
        args.unacknowledgedOnly ?? false,
        { limit: limit + 1, afterSeq: after ? Number(after[0]) : null },
        seatScopeOf(context.actor),
      );
      return toConnection(rows, limit, (alert) => [alert.seq]);
    },
  }),
  alertSettings: t.field({
    type: [AlertSettingsRef],
    description: 'Alert settings per credit type (defaults where none were set).',
    resolve: async (account, _args, context) => {
      const balances = await loadBalances(context.prisma, { ...account, accountId: account.id });
      return listAlertSettings(context.prisma, account.id, balances.map((balance) => balance.creditType));
    },
  }),
}));

function toAlertRecord(payload: AlertPayload): AlertRecord {
  return {
    id: payload.id,
    accountId: payload.accountId,
    kind: payload.kind as AlertRecord['kind'],
    creditType: payload.creditType,
    threshold: payload.threshold,
    message: payload.message,
    seatId: payload.seatId ?? null,
    seq: 0,
    createdAt: new Date(payload.createdAt),
    acknowledgedAt: payload.acknowledgedAt ? new Date(payload.acknowledgedAt) : null,
  };
}

/** A change announced by the pubsub (the balance is read when sent), or a snapshot's balance already read. */
interface BalanceChange {
  creditType: string;
  balance?: BalanceRecord;
}

/** An alert about one seat is that seat's and the account's, not another seat's. */
function canSeeAlert(actor: Actor, alert: { accountId: string; seatId?: string | null }): boolean {
  const seatId = seatScopeOf(actor);
  return canReadAccount(actor, alert.accountId) && (seatId === null || !alert.seatId || alert.seatId === seatId);
}

/** Subscriptions refuse another tenant's account exactly like a missing one. */
function requireSubscribableAccount(context: GraphQLContext, accountId: string): void {
  if (!canReadAccount(requireActor(context), accountId)) {
    throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
  }
}

builder.subscriptionType({ description: 'Live events over WebSocket (graphql-ws), from whichever instance raised them.' });

builder.subscriptionFields((t) => ({
  creditAlerts: t.field({
    authScopes: { signedIn: true },
    type: AlertRef,
    description: 'Alerts for one account as they are raised, on whichever server instance.',
    args: { accountId: t.arg.id({ required: true, description: 'The account.' }) },
    subscribe: async (_root, args, context) => {
      requireSubscribableAccount(context, args.accountId);
      if (!(await findAccountState(context.prisma, context.clock, args.accountId))) {
        throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${args.accountId} not found`);
      }
      const actor = requireActor(context);
      return pipe(context.pubSub.subscribe('creditAlert', args.accountId), filter((payload: AlertPayload) => canSeeAlert(actor, payload)));
    },
    resolve: (payload: AlertPayload) => toAlertRecord(payload),
  }),
  balanceUpdated: t.field({
    authScopes: { signedIn: true },
    type: BalanceRef,
    description:
      'The balance of every credit type of the account when the subscription starts (each time, so a client that resubscribes after a lost connection misses nothing), then the balance of a credit type each time it changes (read after the change committed).',
    args: { accountId: t.arg.id({ required: true, description: 'The account.' }) },
    subscribe: async (_root, args, context) => {
      requireSubscribableAccount(context, args.accountId);
      if (!(await findAccountState(context.prisma, context.clock, args.accountId))) {
        throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${args.accountId} not found`);
      }
      const changes: AsyncIterable<BalanceChange> = context.pubSub.subscribe('balanceUpdated', args.accountId);
      return snapshotThenLive(changes, async () => {
        const read = await readAccountWithBalances(context.database, context.clock, args.accountId, null, true);
        return (read?.all ?? []).map((balance) => ({ creditType: balance.creditType, balance }));
      });
    },
    resolve: async (change: BalanceChange, args, context) => {
      if (change.balance) return change.balance;
      const read = await readAccountWithBalances(context.database, context.clock, args.accountId, change.creditType);
      const balance = read?.balances.get(change.creditType);
      if (!balance) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${args.accountId} not found`);
      return balance;
    },
  }),
}));

builder.mutationFields((t) => ({
  setAlertSettings: t.field({
    authScopes: { writer: true },
    type: AlertSettingsRef,
    description: 'Sets when to alert about one pool.',
    args: { input: t.arg({ type: SetAlertSettingsInput, required: true, description: 'The settings.' }) },
    resolve: (_root, { input }, context) => {
      requireAccountAccess(requireActor(context), input.accountId, 'write');
      return inTransaction(context.prisma, (tx) => setAlertSettings(tx, context.clock, input));
    },
  }),
  acknowledgeAlert: t.field({
    authScopes: { signedIn: true },
    type: AlertRef,
    description: 'Marks an alert seen (any key of the account, seats included).',
    args: { id: t.arg.id({ required: true, description: 'The alert.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const alert = await findAlert(context.prisma, args.id);
      if (!alert || !canSeeAlert(actor, alert)) throw new BillingError(ErrorCode.ALERT_NOT_FOUND, `alert ${args.id} not found`);
      return inTransaction(context.prisma, (tx) => acknowledgeAlert(tx, context.clock, args.id));
    },
  }),
  configureAlertWebhook: t.field({
    authScopes: { writer: true },
    type: AlertWebhookRef,
    description: 'Sends the account’s alerts to a URL as signed POSTs, retried until delivered.',
    args: { input: t.arg({ type: ConfigureAlertWebhookInput, required: true, description: 'The receiver.' }) },
    resolve: async (_root, { input }, context) => {
      requireAccountAccess(requireActor(context), input.accountId, 'write');
      await checkWebhookTarget(input.url, context.webhookTargets);
      return inTransaction(context.prisma, (tx) => configureAlertWebhook(tx, context.clock, input, context.webhookTargets));
    },
  }),
}));
