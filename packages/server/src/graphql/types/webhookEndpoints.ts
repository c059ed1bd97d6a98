import { createWebhookEndpoint, LEDGER_EVENT_TYPES, MAX_WEBHOOK_ENDPOINTS, toWebhookEndpointRecord, updateWebhookEndpoint, type WebhookEndpointRecord } from '../../alerts/ledgerWebhooks.ts';
import { checkWebhookTarget } from '../../alerts/webhookTarget.ts';
import { audited } from '../../audit/auditLog.ts';
import { inTransaction } from '../../db/transaction.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';

const WebhookEndpointRef = builder.objectRef<WebhookEndpointRecord>('WebhookEndpoint').implement({
  description: `Where ledger events are POSTed, signed with the endpoint's secret (Billing-Signature, as alert webhooks). Events: ${LEDGER_EVENT_TYPES.join(', ')}.`,
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    url: t.exposeString('url', { description: 'The receiver (https to a public address).' }),
    eventTypes: t.exposeStringList('eventTypes', { description: 'The event types it receives; empty: all.' }),
    accountId: t.exposeID('accountId', { nullable: true, description: "Only this account's events; null: every account's." }),
    enabled: t.exposeBoolean('enabled', { description: 'False: nothing is sent to it (and no new deliveries are written for it).' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
  }),
});

const WebhookEndpointCreatedRef = builder.objectRef<{ endpoint: WebhookEndpointRecord; secret: string }>('WebhookEndpointCreated').implement({
  description: 'A new endpoint and its signing secret, shown only this once.',
  fields: (t) => ({
    endpoint: t.field({ type: WebhookEndpointRef, description: 'The endpoint.', resolve: (created) => created.endpoint }),
    secret: t.exposeString('secret', { description: 'Verify each delivery with it (the SDK’s verifyLedgerWebhook).' }),
  }),
});

const CreateWebhookEndpointInput = builder.inputType('CreateWebhookEndpointInput', {
  description: `A receiver of ledger events (at most ${MAX_WEBHOOK_ENDPOINTS} enabled).`,
  fields: (t) => ({
    url: t.string({ required: true, description: 'https URL to a public address.' }),
    eventTypes: t.stringList({ description: `Only these event types (${LEDGER_EVENT_TYPES.join(', ')}); omit or empty for all.` }),
    accountId: t.id({ description: "Only this account's events; omit for every account's." }),
  }),
});

const UpdateWebhookEndpointInput = builder.inputType('UpdateWebhookEndpointInput', {
  description: 'Changes to an endpoint.',
  fields: (t) => ({
    id: t.id({ required: true, description: 'The endpoint.' }),
    eventTypes: t.stringList({ description: 'Only these event types from now on; empty for all.' }),
    enabled: t.boolean({ description: 'False stops sending to it.' }),
  }),
});

builder.queryFields((t) => ({
  webhookEndpoints: t.field({
    authScopes: { admin: true },
    type: [WebhookEndpointRef],
    description: `The ledger event endpoints, oldest first (operator only; at most ${MAX_WEBHOOK_ENDPOINTS} enabled, the disabled after them).`,
    resolve: async (_root, _args, context) =>
      (await context.prisma.webhookEndpoint.findMany({ orderBy: [{ enabled: 'desc' }, { createdAt: 'asc' }, { id: 'asc' }], take: 200 })).map(toWebhookEndpointRecord),
  }),
}));

builder.mutationFields((t) => ({
  createWebhookEndpoint: t.field({
    authScopes: { admin: true },
    type: WebhookEndpointCreatedRef,
    description: 'Sends ledger events to a URL as signed POSTs, through the alert outbox with its retries (operator only).',
    args: { input: t.arg({ type: CreateWebhookEndpointInput, required: true, description: 'The endpoint.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      await checkWebhookTarget(input.url, context.webhookTargets);
      const created = await inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, createWebhookEndpoint(tx, context.clock, input, context.webhookTargets), (endpoint) => ({
          action: 'createWebhookEndpoint',
          accountId: endpoint.accountId,
          subjectId: endpoint.id,
          details: { url: endpoint.url, eventTypes: endpoint.eventTypes },
        })),
      );
      const { secret, ...endpoint } = created;
      return { endpoint, secret };
    },
  }),
  updateWebhookEndpoint: t.field({
    authScopes: { admin: true },
    type: WebhookEndpointRef,
    description: 'Changes the event types of an endpoint or turns it off or on (operator only).',
    args: { input: t.arg({ type: UpdateWebhookEndpointInput, required: true, description: 'The change.' }) },
    resolve: (_root, { input }, context) =>
      inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, requireActor(context), updateWebhookEndpoint(tx, input), (endpoint) => ({
          action: 'updateWebhookEndpoint',
          accountId: endpoint.accountId,
          subjectId: endpoint.id,
          details: { eventTypes: input.eventTypes, enabled: input.enabled },
        })),
      ),
  }),
}));
