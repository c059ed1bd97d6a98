import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { BillingApiError, createBillingClient, type BillingClient, type LedgerWebhookEvent } from '../packages/sdk/src/index.ts';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { normalizeUsage, recordUsageHot, type UsageHotPath } from '../packages/server/src/ledger/recordUsage.ts';
import { verifyLedger } from '../packages/server/src/observability/verifyLedger.ts';
import { addSeat, advanceClock, createKey, createTestClock, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Issue 20 item 1: voidGrant, adjustCredits and changeGrantExpiry, through the SDK over real HTTP.
 * The three questions, answered here as in ledger/corrections.ts: only ADMIN keys may call them
 * (ACCOUNT and SEAT keys are FORBIDDEN and nothing is written); a positive adjustment creates
 * credits without money, hence operator-only; hostile input (huge reasons, metadata or amounts,
 * someone else's grant) is refused with a typed code before anything is written.
 */
let server: TestServer;
let database: { url: string | undefined; drop(): Promise<void> };
let admin: BillingClient;
let receiver: Server;
let baseUrl: string;
const received: LedgerWebhookEvent[] = [];
const clients: BillingClient[] = [];

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error instanceof BillingApiError ? error.code : String(error);
  }
}

beforeAll(async () => {
  receiver = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString()) as LedgerWebhookEvent);
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  // Its own database: verifyLedger and the finance reports read every account's entries.
  database = await isolatedDatabase();
  server = await startTestServer({
    JOBS_ENABLED: 'false',
    ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
    ALERT_WEBHOOK_RETRY_BASE_MS: '10',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  });
  admin = operator(server);
  await admin.createWebhookEndpoint({ url: `${baseUrl}/hook`, eventTypes: ['grant.voided', 'adjustment', 'grant.created'] });
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
  await database?.drop();
  receiver?.close();
});

function clientFor(apiKey: string): BillingClient {
  const client = createBillingClient({ url: `${server.url}/graphql`, apiKey, webSocketImpl: WebSocket, retries: 0 });
  clients.push(client);
  return client;
}

async function deliverAll(): Promise<void> {
  const prisma = server.app.database.prisma;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    await server.app.dueWorkRunner.runTasks();
    if ((await prisma.alertDelivery.count({ where: { endpointId: { not: null }, deliveredAt: null } })) === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('deliveries still pending');
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** An account on a test clock at 2026-01-01 with a small plan allocation (expiring at the period end, 2026-02-01). */
async function setUp(allocation = 10) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const other = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: allocation }], featureKeys: [feature, other] });
  const clock = await createTestClock(server, '2026-01-01T00:00:00.000Z');
  const accountId = (await admin.createAccount({ name: unique('account'), planCode: plan, testClockId: clock })).id;
  return { pool, feature, other, plan, clock, accountId };
}

async function ledgerOf(accountId: string) {
  const entries = [];
  for await (const entry of admin.ledger.list(accountId)) entries.push(entry);
  return entries.reverse();
}

async function correctionsCount(accountId: string): Promise<number> {
  return server.app.database.prisma.correction.count({ where: { accountId } });
}

async function expectLedgerVerified(): Promise<void> {
  const verification = await verifyLedger(server.app.database.prisma);
  expect(verification.mismatches).toEqual([]);
  expect(verification.inconsistencies).toEqual([]);
}

async function available(accountId: string, pool: string): Promise<number> {
  return (await admin.balance(accountId, pool))!.available;
}

describe('voidGrant', () => {
  it('removes what is left, keeps what was spent, voids held credits when they come back, and replays by key', async () => {
    const { pool, feature, accountId } = await setUp();
    const bonus = await admin.grantCredits({
      accountId,
      creditType: pool,
      amount: 50,
      source: 'BONUS',
      expiresAt: '2026-01-20T00:00:00.000Z',
      reason: 'welcome offer',
      metadata: { ticket: 'SUP-1' },
    });
    expect(bonus).toMatchObject({ reason: 'welcome offer', metadata: { ticket: 'SUP-1' }, voidedAt: null });
    // The reason is for whoever reads the grant; the metadata is the operator's own.
    const ownGrants = await clientFor(await createKey(server, 'ACCOUNT', accountId)).grants(accountId);
    expect(ownGrants.edges.find((edge) => edge.node.id === bonus.id)!.node).toMatchObject({ reason: 'welcome offer', metadata: null });
    const usage = await admin.recordUsage({ accountId, featureKey: feature, quantity: 20 });
    if (usage.__typename !== 'UsageRecorded') throw new Error(usage.__typename);
    const hold = await admin.reserveCredits({ accountId, featureKey: feature, credits: 5 });
    if (hold.__typename !== 'CreditsReserved') throw new Error(hold.__typename);
    expect(await available(accountId, pool)).toBe(35);

    const key = unique('void');
    const voided = await admin.voidGrant({ accountId, grantId: bonus.id, reason: 'granted by mistake', idempotencyKey: key });
    expect(voided.replayed).toBe(false);
    expect(voided.correction).toMatchObject({ kind: 'VOID', credits: -25, reason: 'granted by mistake', creditType: pool, idempotencyKey: key });
    expect(voided.correction.grant).toMatchObject({ id: bonus.id, remaining: 0, amount: 50 });
    expect(voided.correction.grant?.voidedAt).toBe('2026-01-01T00:00:00.000Z');
    expect(voided.correction.entries.map((entry) => [entry.type, entry.credits, entry.grant.id])).toEqual([['ADJUST', -25, bonus.id]]);
    // The plan's 10 are left; the 5 held stay held.
    expect(voided.balance).toMatchObject({ available: 10, reserved: 5 });

    // Same key, same input: the first answer. Same key, other input: a conflict. New key: already void.
    const again = await admin.voidGrant({ accountId, grantId: bonus.id, reason: 'granted by mistake', idempotencyKey: key });
    expect(again.replayed).toBe(true);
    expect(again.correction.id).toBe(voided.correction.id);
    expect(await codeOf(admin.voidGrant({ accountId, grantId: bonus.id, reason: 'another reason', idempotencyKey: key }))).toBe('IDEMPOTENCY_CONFLICT');
    expect(await codeOf(admin.voidGrant({ accountId, grantId: bonus.id, reason: 'granted by mistake' }))).toBe('GRANT_VOIDED');
    expect(await correctionsCount(accountId)).toBe(1);

    // Held credits released, and a refund of what was spent, come back to the void grant and leave again.
    await admin.releaseReservation(hold.reservation.id);
    await admin.refundUsage({ usageEventId: usage.usageEvent.id, credits: 4, reason: 'provider failed' });
    expect(await available(accountId, pool)).toBe(10);
    const entries = (await ledgerOf(accountId)).filter((entry) => entry.grant.id === bonus.id).map((entry) => [entry.type, entry.credits]);
    expect(entries).toEqual([
      ['GRANT', 50],
      ['DEBIT', -20],
      ['RESERVE', -5],
      ['ADJUST', -25],
      ['RELEASE', 5],
      ['ADJUST', -5],
      ['REFUND', 4],
      ['ADJUST', -4],
    ]);
    // The ledger shows which correction (and why) each ADJUST entry belongs to; so does the export.
    const adjustEntries = (await ledgerOf(accountId)).filter((entry) => entry.type === 'ADJUST');
    expect(adjustEntries.map((entry) => entry.correction)).toEqual([
      { id: voided.correction.id, kind: 'VOID', reason: 'granted by mistake' },
      { id: voided.correction.id, kind: 'VOID', reason: 'granted by mistake' },
      { id: voided.correction.id, kind: 'VOID', reason: 'granted by mistake' },
    ]);
    expect((await ledgerOf(accountId)).filter((entry) => entry.type !== 'ADJUST').every((entry) => entry.correction === null)).toBe(true);
    const exported = await fetch(`${server.url}/ledger/export.ndjson?${new URLSearchParams({ from: '2026-01-01T00:00:00.000Z', to: '2026-01-02T00:00:00.000Z', accountId })}`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    const rows = (await exported.text()).trim().split('\n').map((line) => JSON.parse(line) as { type: string; correctionId: string | null });
    expect(rows.filter((row) => row.type === 'ADJUST').map((row) => row.correctionId)).toEqual([voided.correction.id, voided.correction.id, voided.correction.id]);
    expect(rows.filter((row) => row.type !== 'ADJUST').every((row) => row.correctionId === null)).toBe(true);
    // What was spent stays spent: the event keeps its 20 credits less the 4 refunded.
    expect((await admin.usageEvents(accountId)).edges[0]!.node).toMatchObject({ credits: 20, refundedCredits: 4 });

    // Audited with its actor and reason.
    const audit = await admin.auditEvents({ accountId, action: 'voidGrant' });
    expect(audit.edges).toHaveLength(1);
    expect(audit.edges[0]!.node).toMatchObject({ actorRole: 'ADMIN', subjectId: bonus.id });
    expect(audit.edges[0]!.node.details).toMatchObject({ reason: 'granted by mistake', credits: -25, correctionId: voided.correction.id });
    await expectLedgerVerified();
  });

  it('voids a grant spent to nothing without an entry, and refuses unknown and other accounts’ grants', async () => {
    const { pool, feature, accountId } = await setUp(1);
    const small = await admin.grantCredits({ accountId, creditType: pool, amount: 3, source: 'BONUS', expiresAt: '2026-01-10T00:00:00.000Z' });
    const spent = await admin.recordUsage({ accountId, featureKey: feature, quantity: 3 });
    expect(spent.__typename).toBe('UsageRecorded');
    const voided = await admin.voidGrant({ accountId, grantId: small.id, reason: 'closing the promotion' });
    expect(voided.correction).toMatchObject({ credits: 0, entries: [] });
    expect(voided.correction.grant?.voidedAt).not.toBeNull();

    const stranger = await setUp();
    const theirs = await admin.grantCredits({ accountId: stranger.accountId, creditType: stranger.pool, amount: 5, source: 'BONUS' });
    expect(await codeOf(admin.voidGrant({ accountId, grantId: theirs.id, reason: 'x' }))).toBe('GRANT_NOT_FOUND');
    expect(await codeOf(admin.voidGrant({ accountId, grantId: '00000000-0000-0000-0000-000000000000', reason: 'x' }))).toBe('GRANT_NOT_FOUND');
    expect(await codeOf(admin.voidGrant({ accountId: unique('nobody'), grantId: theirs.id, reason: 'x' }))).toBe('ACCOUNT_NOT_FOUND');
    expect(await available(stranger.accountId, stranger.pool)).toBe(15);
    expect(await correctionsCount(stranger.accountId)).toBe(0);
  });
});

describe('adjustCredits', () => {
  it('adds an ADJUSTMENT grant entered as ADJUST, promotional unless told, with reason and metadata', async () => {
    const { pool, accountId } = await setUp();
    const added = await admin.adjustCredits({ accountId, creditType: pool, amount: 40, reason: 'goodwill after outage', metadata: { ticket: 'SUP-2' } });
    if (added.__typename !== 'CreditsCorrected') throw new Error(added.__typename);
    expect(added.correction).toMatchObject({ kind: 'ADJUST', credits: 40 });
    expect(added.correction.grant).toMatchObject({
      source: 'ADJUSTMENT',
      amount: 40,
      remaining: 40,
      funding: 'PROMOTIONAL',
      unitCost: 0,
      reason: 'goodwill after outage',
      metadata: { ticket: 'SUP-2' },
      priority: 40,
    });
    expect(added.correction.entries.map((entry) => [entry.type, entry.credits])).toEqual([['ADJUST', 40]]);
    expect(added.balance.available).toBe(50);

    const paid = await admin.adjustCredits({
      accountId,
      creditType: pool,
      amount: 10,
      reason: 'paid by bank transfer',
      costBasis: { unitCost: 3, currency: 'EUR', funding: 'PAID' },
      expiresAt: '2026-06-01T00:00:00.000Z',
    });
    if (paid.__typename !== 'CreditsCorrected') throw new Error(paid.__typename);
    expect(paid.correction.grant).toMatchObject({ funding: 'PAID', unitCost: 3, costCurrency: 'EUR', expiresAt: '2026-06-01T00:00:00.000Z' });
    await expectLedgerVerified();
  });

  it('takes a negative amount in consumption order, one entry per grant, never below zero', async () => {
    const { pool, feature, accountId } = await setUp();
    // Consumption order: soonest expiry first; the scoped grant is not taken (void it instead).
    const late = await admin.grantCredits({ accountId, creditType: pool, amount: 30, source: 'BONUS', expiresAt: '2026-01-25T00:00:00.000Z' });
    const soon = await admin.grantCredits({ accountId, creditType: pool, amount: 7, source: 'BONUS', expiresAt: '2026-01-05T00:00:00.000Z' });
    const scoped = await admin.grantCredits({ accountId, creditType: pool, amount: 100, source: 'BONUS', featureKeys: [feature], expiresAt: '2026-01-03T00:00:00.000Z' });
    const never = await admin.grantCredits({ accountId, creditType: pool, amount: 5, source: 'BONUS' });
    // Spendable by the adjustment: 7 + 30 + 10 (plan, expiring 2026-02-01) + 5 = 52.
    const refused = await admin.adjustCredits({ accountId, creditType: pool, amount: -53, reason: 'chargeback' });
    expect(refused).toMatchObject({ __typename: 'InsufficientCredits', code: 'INSUFFICIENT_CREDITS', required: 53, available: 52 });
    expect(await correctionsCount(accountId)).toBe(0);

    const taken = await admin.adjustCredits({ accountId, creditType: pool, amount: -40, reason: 'chargeback' });
    if (taken.__typename !== 'CreditsCorrected') throw new Error(taken.__typename);
    expect(taken.correction).toMatchObject({ kind: 'ADJUST', credits: -40, grant: null });
    expect(taken.correction.entries.map((entry) => [entry.grant.id, entry.credits])).toEqual([
      [soon.id, -7],
      [late.id, -30],
      [expect.any(String), -3],
    ]);
    expect(taken.correction.grants.map((grant) => grant.source)).toEqual(['BONUS', 'BONUS', 'PLAN']);
    expect(taken.balance.available).toBe(152 - 40);
    const remaining = async (id: string) => (await admin.grants(accountId)).edges.find((edge) => edge.node.id === id)!.node.remaining;
    expect(await remaining(scoped.id)).toBe(100);
    expect(await remaining(never.id)).toBe(5);

    // A seat's own grants, when the seat is named.
    const seatId = await addSeat(server, accountId);
    await admin.grantCredits({ accountId, creditType: pool, amount: 8, source: 'BONUS', seatId });
    const fromSeat = await admin.adjustCredits({ accountId, creditType: pool, amount: -8, reason: 'seat left', seatId });
    if (fromSeat.__typename !== 'CreditsCorrected') throw new Error(fromSeat.__typename);
    expect(fromSeat.correction.grants.map((grant) => grant.remaining)).toEqual([0]);

    // One ledger page, two corrections: each entry's correction lists that correction's entries, and
    // only them (they are read for the whole page at once).
    const page = await server.gql<{ account: { ledger: { edges: Array<{ node: { id: string; type: string; correction: { id: string; entries: Array<{ id: string }> } | null } }> } } }>(
      `query($id: ID!) { account(id: $id) { ledger(first: 50) { edges { node { id type correction { id entries { id } } } } } } }`,
      { id: accountId },
    );
    const adjusted = page.data!.account.ledger.edges.map((edge) => edge.node).filter((node) => node.type === 'ADJUST');
    const entriesOf = (correctionId: string) => adjusted.filter((node) => node.correction?.id === correctionId).map((node) => node.id).sort();
    expect(adjusted.map((node) => node.correction!.id).sort()).toEqual([taken.correction.id, taken.correction.id, taken.correction.id, fromSeat.correction.id].sort());
    for (const node of adjusted) expect(node.correction!.entries.map((entry) => entry.id).sort()).toEqual(entriesOf(node.correction!.id));
    expect(entriesOf(taken.correction.id)).toHaveLength(3);
    await expectLedgerVerified();
  });

  it('refuses bad input with typed codes and writes nothing', async () => {
    const { pool, accountId } = await setUp();
    const grant = await admin.grantCredits({ accountId, creditType: pool, amount: 5, source: 'BONUS' });
    const before = await ledgerOf(accountId);
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 0, reason: 'zero' }), 'INVALID_CREDITS'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: Number.MAX_SAFE_INTEGER, reason: 'absurd' }), 'INVALID_CREDITS'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 2 ** 60, reason: 'absurd' }), 'INVALID_CREDITS'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 1.5, reason: 'fraction' }), 'INVALID_CREDITS'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: '' }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: '   ' }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: 'x'.repeat(501) }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: 'big', metadata: { blob: 'x'.repeat(17 * 1024) } }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: -1, reason: 'neg', expiresAt: '2026-03-01T00:00:00.000Z' }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: -1, reason: 'neg', metadata: { a: 1 } }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: 'past', expiresAt: '2025-12-01T00:00:00.000Z' }), 'INVALID_INPUT'],
      [() => admin.adjustCredits({ accountId, creditType: pool, amount: 5, reason: 'seat', seatId: unique('seat') }), 'SEAT_NOT_FOUND'],
      [() => admin.adjustCredits({ accountId: unique('nobody'), creditType: pool, amount: 5, reason: 'who' }), 'ACCOUNT_NOT_FOUND'],
      [() => admin.voidGrant({ accountId, grantId: grant.id, reason: 'y'.repeat(501) }), 'INVALID_INPUT'],
      [() => admin.voidGrant({ accountId, grantId: grant.id, reason: '' }), 'INVALID_INPUT'],
      [() => admin.changeGrantExpiry({ accountId, grantId: grant.id, reason: '', expiresAt: '2026-03-01T00:00:00.000Z' }), 'INVALID_INPUT'],
      [() => admin.grantCredits({ accountId, creditType: pool, amount: 5, source: 'BONUS', reason: 'z'.repeat(501) }), 'INVALID_INPUT'],
      [() => admin.grantCredits({ accountId, creditType: pool, amount: 5, source: 'BONUS', metadata: { blob: 'x'.repeat(17 * 1024) } }), 'INVALID_INPUT'],
    ];
    // One at a time, each awaited: a refusal is never left unhandled.
    for (const [call, code] of cases) expect(await codeOf(call())).toBe(code);
    // Beyond what a pool can state: the positive adjustment is refused.
    expect(await codeOf(admin.adjustCredits({ accountId, creditType: pool, amount: Number.MAX_SAFE_INTEGER - 10, reason: 'overflow' }))).toBe('INVALID_CREDITS');
    expect(await ledgerOf(accountId)).toEqual(before);
    expect(await correctionsCount(accountId)).toBe(0);
  });
});

describe('idempotency of corrections', () => {
  it('answers a retry with the first correction and writes once; other input under the key is a conflict, across the three', async () => {
    const { pool, accountId } = await setUp();
    const grant = await admin.grantCredits({ accountId, creditType: pool, amount: 30, source: 'BONUS', expiresAt: '2026-01-20T00:00:00.000Z' });
    const key = unique('adjust');
    const input = { accountId, creditType: pool, amount: 12, reason: 'goodwill', metadata: { ticket: 'SUP-3' }, idempotencyKey: key };
    const first = await admin.adjustCredits(input);
    const retry = await admin.adjustCredits(input);
    if (first.__typename !== 'CreditsCorrected' || retry.__typename !== 'CreditsCorrected') throw new Error('not corrected');
    expect(retry).toMatchObject({ replayed: true, correction: { id: first.correction.id, grant: { id: first.correction.grant!.id } } });
    expect((await admin.grants(accountId)).edges.filter((edge) => edge.node.source === 'ADJUSTMENT')).toHaveLength(1);
    for (const other of [{ amount: 13 }, { reason: 'other reason' }, { metadata: { ticket: 'SUP-4' } }, { amount: -12, metadata: undefined }]) {
      expect(await codeOf(admin.adjustCredits({ ...input, ...other }))).toBe('IDEMPOTENCY_CONFLICT');
    }
    // Keys are shared by the three corrections of an account.
    expect(await codeOf(admin.voidGrant({ accountId, grantId: grant.id, reason: 'goodwill', idempotencyKey: key }))).toBe('IDEMPOTENCY_CONFLICT');

    const taking = { accountId, creditType: pool, amount: -5, reason: 'take back', idempotencyKey: unique('take') };
    const took = await admin.adjustCredits(taking);
    const tookAgain = await admin.adjustCredits(taking);
    if (took.__typename !== 'CreditsCorrected' || tookAgain.__typename !== 'CreditsCorrected') throw new Error('not corrected');
    expect(tookAgain.correction.id).toBe(took.correction.id);
    expect(tookAgain.balance.available).toBe(took.balance.available);

    const moving = { accountId, grantId: grant.id, expiresAt: '2026-01-25T00:00:00.000Z', reason: 'a bit longer', idempotencyKey: unique('move') };
    const moved = await admin.changeGrantExpiry(moving);
    expect(await admin.changeGrantExpiry(moving)).toMatchObject({ replayed: true, correction: { id: moved.correction.id } });
    expect(await codeOf(admin.changeGrantExpiry({ ...moving, expiresAt: '2026-01-26T00:00:00.000Z' }))).toBe('IDEMPOTENCY_CONFLICT');
    expect(await correctionsCount(accountId)).toBe(3);
    expect((await admin.auditEvents({ accountId })).edges.filter((edge) => ['adjustCredits', 'changeGrantExpiry'].includes(edge.node.action))).toHaveLength(3);
    await expectLedgerVerified();
  });
});

describe('changeGrantExpiry', () => {
  it('moves an expiry later, earlier or away, and the expiry job follows the new one', async () => {
    const { pool, clock, accountId } = await setUp();
    const grant = await admin.grantCredits({ accountId, creditType: pool, amount: 20, source: 'BONUS', expiresAt: '2026-01-10T00:00:00.000Z' });
    const later = await admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-03-01T00:00:00.000Z', reason: 'extended for the customer' });
    expect(later.correction).toMatchObject({ kind: 'EXPIRY', credits: 0, previousExpiresAt: '2026-01-10T00:00:00.000Z', expiresAt: '2026-03-01T00:00:00.000Z' });
    expect(later.correction.grant?.expiresAt).toBe('2026-03-01T00:00:00.000Z');
    expect(later.correction.entries.map((entry) => [entry.type, entry.credits])).toEqual([['ADJUST', 0]]);
    const never = await admin.changeGrantExpiry({ accountId, grantId: grant.id, removeExpiry: true, reason: 'never expires' });
    expect(never.correction).toMatchObject({ previousExpiresAt: '2026-03-01T00:00:00.000Z', expiresAt: null });
    expect(never.correction.grant?.expiresAt).toBeNull();

    // In the past of the account's clock, before its effectiveAt, or both fields: refused.
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2025-12-31T23:59:59.000Z', reason: 'past' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-01-01T00:00:00.000Z', reason: 'now' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, reason: 'neither' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, reason: 'both', removeExpiry: true, expiresAt: '2026-03-01T00:00:00.000Z' }))).toBe('INVALID_INPUT');

    const earlier = await admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-01-04T00:00:00.000Z', reason: 'promotion ends sooner' });
    expect(earlier.balance.nextExpiry).toBe('2026-01-04T00:00:00.000Z');
    await advanceClock(server, clock, '2026-01-06T00:00:00.000Z');
    const expired = (await ledgerOf(accountId)).filter((entry) => entry.grant.id === grant.id && entry.type === 'EXPIRE');
    expect(expired.map((entry) => [entry.credits, entry.createdAt])).toEqual([[-20, '2026-01-04T00:00:00.000Z']]);
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-05-01T00:00:00.000Z', reason: 'revive' }))).toBe('GRANT_EXPIRED');
    await admin.voidGrant({ accountId, grantId: grant.id, reason: 'done' });
    expect(await codeOf(admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-05-01T00:00:00.000Z', reason: 'revive' }))).toBe('GRANT_VOIDED');
    const audit = await admin.auditEvents({ accountId, action: 'changeGrantExpiry' });
    expect(audit.edges).toHaveLength(3);
    await expectLedgerVerified();
  });
});

describe('expiring-soon alerts after a change of expiry', () => {
  it('the due work raises EXPIRING_SOON for the new expiry, not the old one', async () => {
    const { pool, clock, accountId } = await setUp();
    await admin.setAlertSettings({ accountId, creditType: pool, percents: [], expiringWithinDays: 7 });
    const grant = await admin.grantCredits({ accountId, creditType: pool, amount: 20, source: 'BONUS', expiresAt: '2026-01-25T00:00:00.000Z' });
    const expiringSoon = async () => (await admin.alerts(accountId)).edges.map((edge) => edge.node).filter((alert) => alert.kind === 'EXPIRING_SOON');
    // The plan's credits expire at the period end (2026-02-01): outside the 7 days too.
    await advanceClock(server, clock, '2026-01-02T00:00:00.000Z');
    expect(await expiringSoon()).toEqual([]);
    await admin.changeGrantExpiry({ accountId, grantId: grant.id, expiresAt: '2026-01-05T00:00:00.000Z', reason: 'promotion ends sooner' });
    await advanceClock(server, clock, '2026-01-02T01:00:00.000Z');
    expect((await expiringSoon()).map((alert) => alert.message)).toEqual([`20 ${pool} credits expire on 2026-01-05T00:00:00.000Z: use them or lose them`]);
  });
});

describe('corrections for operators only', () => {
  it('refuses ACCOUNT and SEAT keys and session tokens with FORBIDDEN and writes nothing', async () => {
    const { pool, accountId } = await setUp();
    const grant = await admin.grantCredits({ accountId, creditType: pool, amount: 5, source: 'BONUS', expiresAt: '2026-01-20T00:00:00.000Z' });
    const seatId = await addSeat(server, accountId);
    const before = await ledgerOf(accountId);
    // An account-wide session token that may even buy is refused too.
    const session = (await admin.createSessionToken({ accountId, canBuy: true })).token;
    for (const key of [await createKey(server, 'ACCOUNT', accountId), await createKey(server, 'SEAT', accountId, seatId), session]) {
      const caller = clientFor(key);
      expect(await codeOf(caller.voidGrant({ accountId, grantId: grant.id, reason: 'mine' }))).toBe('FORBIDDEN');
      expect(await codeOf(caller.adjustCredits({ accountId, creditType: pool, amount: 1_000, reason: 'free credits' }))).toBe('FORBIDDEN');
      expect(await codeOf(caller.adjustCredits({ accountId, creditType: pool, amount: -1, reason: 'take' }))).toBe('FORBIDDEN');
      expect(await codeOf(caller.changeGrantExpiry({ accountId, grantId: grant.id, removeExpiry: true, reason: 'keep forever' }))).toBe('FORBIDDEN');
    }
    expect(await ledgerOf(accountId)).toEqual(before);
    expect(await correctionsCount(accountId)).toBe(0);
    expect((await admin.auditEvents({ accountId })).edges.map((edge) => edge.node.action)).not.toContain('adjustCredits');
  });
});

describe('what a correction raises', () => {
  it('balance events and alerts as a debit would, ledger webhooks, and the finance reports’ adjusted column', async () => {
    const { pool, accountId } = await setUp(1);
    await admin.setAlertSettings({ accountId, creditType: pool, percents: [], lowBalance: 30 });
    const paid = await admin.grantCredits({
      accountId,
      creditType: pool,
      amount: 100,
      source: 'PURCHASE',
      // A currency no other test here uses: the reports cover every account of the database.
      costBasis: { unitCost: 2, currency: 'GBP', funding: 'PAID' },
      expiresAt: '2026-01-30T00:00:00.000Z',
    });
    const front = clientFor(await createKey(server, 'ACCOUNT', accountId));
    const balances: number[] = [];
    front.subscribeToBalance(accountId, (balance) => {
      if (balance.creditType === pool) balances.push(balance.available);
    });
    await until(() => balances.length > 0, 'the first balance');

    const taken = await admin.adjustCredits({ accountId, creditType: pool, amount: -75, reason: 'fraud' });
    expect(taken.__typename).toBe('CreditsCorrected');
    await until(() => balances.includes(26), 'the balance after the adjustment');
    const alerts = (await admin.alerts(accountId)).edges.map((edge) => edge.node);
    expect(alerts.filter((alert) => alert.kind === 'LOW_BALANCE')).toHaveLength(1);

    const voided = await admin.voidGrant({ accountId, grantId: paid.id, reason: 'refund outside Stripe' });
    expect(voided.correction.credits).toBe(-25);
    await until(() => balances.includes(1), 'the balance after the void');
    const added = await admin.adjustCredits({ accountId, creditType: pool, amount: 9, reason: 'goodwill' });
    if (added.__typename !== 'CreditsCorrected') throw new Error(added.__typename);
    const moved = await admin.changeGrantExpiry({ accountId, grantId: added.correction.grant!.id, expiresAt: '2026-04-01T00:00:00.000Z', reason: 'longer' });

    // Finance: the PAID grant's 75 taken and 25 voided, at 2 minor units each, are adjusted; nothing is deferred any more.
    const range = { from: '2026-01-01T00:00:00.000Z', to: '2026-01-02T00:00:00.000Z', currency: 'GBP' };
    const adjusted = await admin.financeFlow({ ...range, kind: 'ADJUSTED' });
    expect(adjusted.map((row) => [row.currency, Number(row.amount), Number(row.credits)])).toEqual([['GBP', -200, -100]]);
    const deferred = await admin.deferredRevenue({ at: '2026-01-02T00:00:00.000Z', currency: 'GBP' });
    expect(deferred.map((row) => Number(row.credits))).toEqual([0]);

    await deliverAll();
    const mine = received.filter((event) => event.accountId === accountId);
    const voidedEvents = mine.filter((event) => event.type === 'grant.voided');
    expect(voidedEvents.map((event) => event.data)).toEqual([
      { grantId: paid.id, creditType: pool, voidedCredits: 25, reason: 'refund outside Stripe', correctionId: voided.correction.id },
    ]);
    const adjustments = mine.filter((event) => event.type === 'adjustment').map((event) => event.data as Record<string, unknown>);
    // The negative adjustment (one entry per grant), the positive one and the change of expiry; the void is no adjustment.
    expect(adjustments.map((data) => [data.kind, data.credits, data.reason])).toEqual([
      ...(taken.__typename === 'CreditsCorrected' ? taken.correction.entries.map((entry) => ['ADJUST', entry.credits, 'fraud']) : []),
      ['ADJUST', 9, 'goodwill'],
      ['EXPIRY', 0, 'longer'],
    ]);
    expect(adjustments.at(-1)).toMatchObject({ grantId: added.correction.grant!.id, expiresAt: '2026-04-01T00:00:00.000Z', previousExpiresAt: null, correctionId: moved.correction.id });
    const created = mine.filter((event) => event.type === 'grant.created').map((event) => (event.data as { source: string }).source);
    expect(created).toContain('ADJUSTMENT');
    await expectLedgerVerified();
  });
});

describe('corrections racing debits', () => {
  /**
   * A property over random grants, usages, batches and corrections: a void of one of the grants and
   * a negative adjustment race single usages (over HTTP, and the one-statement hot path called
   * directly so that the race provably includes it) and batches (set-based) on the same grants.
   * Whatever the interleaving, nothing is overspent: no grant goes negative and each one's
   * remaining is its entries' sum, every credit granted is spent, voided/taken or still there,
   * usage charged equals its DEBIT entries (no overage on this HARD_STOP plan), the void grant
   * ends at 0, and what the corrections rows say equals their ADJUST entries.
   */
  it('never overspends, and the ledger reconciles exactly', async () => {
    const hotPath: UsageHotPath = { database: server.app.database, features: new FeatureCache(server.app.database) };
    let hotCharged = 0;
    let runs = 0;
    const scenario = fc.record({
      grants: fc.array(fc.record({ amount: fc.integer({ min: 1, max: 80 }), expires: fc.boolean() }), { minLength: 1, maxLength: 3 }),
      singles: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 4, maxLength: 20 }),
      hot: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 2, maxLength: 8 }),
      batches: fc.array(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 6 }), { maxLength: 3 }),
      voided: fc.nat(),
      take: fc.integer({ min: 1, max: 100 }),
      cut: fc.double({ min: 0, max: 1, noNaN: true }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async (run) => {
        runs += 1;
        const { pool, feature, accountId } = await setUp(1);
        // No usage thresholds: crossing one sends a usage to the complete path, and the hot one is wanted too.
        await admin.setAlertSettings({ accountId, creditType: pool, percents: [] });
        const grants = [];
        for (const grant of run.grants) {
          grants.push(
            await admin.grantCredits({ accountId, creditType: pool, amount: grant.amount, source: 'BONUS', ...(grant.expires ? { expiresAt: '2026-01-15T00:00:00.000Z' } : {}) }),
          );
        }
        const granted = 1 + run.grants.reduce((sum, grant) => sum + grant.amount, 0);
        const voidedId = grants[run.voided % grants.length]!.id;
        const debits: Array<() => Promise<unknown>> = [
          ...run.singles.map((quantity) => () => admin.recordUsage({ accountId, featureKey: feature, quantity })),
          ...run.hot.map((quantity) => async () => {
            const outcome = await recordUsageHot(hotPath, systemClock, normalizeUsage({ accountId, featureKey: feature, quantity, idempotencyKey: unique('hot') }), accountId);
            if (outcome.kind === 'recorded') hotCharged += 1;
          }),
          ...run.batches.map((quantities) => () => admin.recordUsageBatch(quantities.map((quantity) => ({ accountId, featureKey: feature, quantity })))),
        ];
        const corrections = [
          () => admin.voidGrant({ accountId, grantId: voidedId, reason: 'race' }),
          () => admin.adjustCredits({ accountId, creditType: pool, amount: -run.take, reason: 'race' }),
        ];
        const at = Math.floor(run.cut * debits.length);
        const settled = await Promise.allSettled([...debits.slice(0, at), ...corrections, ...debits.slice(at)].map((call) => call()));
        expect(settled.filter((outcome) => outcome.status === 'rejected')).toEqual([]);

        const prisma = server.app.database.prisma;
        const [sums] = await prisma.$queryRaw<Array<{ debited: bigint; adjusted: bigint; remaining: bigint; charged: bigint; overage: bigint; negative: bigint }>>`
          SELECT (SELECT coalesce(-sum(credits), 0) FROM ledger_entries WHERE account_id = ${accountId} AND type = 'DEBIT')::bigint AS debited,
                 (SELECT coalesce(-sum(credits), 0) FROM ledger_entries WHERE account_id = ${accountId} AND type = 'ADJUST')::bigint AS adjusted,
                 (SELECT coalesce(sum(remaining), 0) FROM grants WHERE account_id = ${accountId})::bigint AS remaining,
                 (SELECT coalesce(sum(credits), 0) FROM usage_events WHERE account_id = ${accountId})::bigint AS charged,
                 (SELECT coalesce(sum(overage_credits), 0) FROM usage_events WHERE account_id = ${accountId})::bigint AS overage,
                 (SELECT count(*) FROM grants WHERE account_id = ${accountId} AND remaining < 0)::bigint AS negative`;
        expect(Number(sums!.negative)).toBe(0);
        expect(Number(sums!.overage)).toBe(0);
        expect(Number(sums!.debited)).toBe(Number(sums!.charged));
        expect(Number(sums!.debited) + Number(sums!.adjusted) + Number(sums!.remaining)).toBe(granted);
        const corrected = await prisma.correction.findMany({ where: { accountId } });
        expect(Number(sums!.adjusted)).toBe(corrected.reduce((sum, correction) => sum - Number(correction.credits), 0));
        expect((await prisma.grant.findUniqueOrThrow({ where: { id: voidedId } })).remaining).toBe(0n);
        expect(await available(accountId, pool)).toBe(Number(sums!.remaining));
        const verification = await verifyLedger(prisma);
        expect(verification.mismatches).toEqual([]);
        expect(verification.inconsistencies).toEqual([]);
      }),
      { numRuns: 6 },
    );
    expect(runs).toBe(6);
    expect(hotCharged).toBeGreaterThan(0);
  });
});
