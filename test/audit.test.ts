import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, createKey, createTestClock, defineFeature, definePlan, grantCredits, ok, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let pool: string;
let feature: string;
let plan: string;
let accountId: string;

const AUDIT = `query($accountId: ID, $action: String, $first: Int, $after: String) {
  auditEvents(accountId: $accountId, action: $action, first: $first, after: $after) {
    edges { cursor node { id actorKeyId actorRole action accountId subjectId details createdAt } }
    pageInfo { hasNextPage endCursor }
  } }`;

beforeAll(async () => {
  server = await startTestServer();
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool });
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
  accountId = await createAccount(server, plan);
});
afterAll(async () => {
  await server?.stop();
});

/** The suite shares one database on PostgreSQL: other files' events interleave with ours. */
async function findEvent(action: string, matches: (event: any) => boolean): Promise<any> {
  let after: string | null = null;
  for (;;) {
    const page: any = ok(await server.gql(AUDIT, { action, first: 500, after })).auditEvents;
    const found = page.edges.map((edge: any) => edge.node).find(matches);
    if (found || !page.pageInfo.hasNextPage) return found;
    after = page.pageInfo.endCursor;
  }
}

describe('audit log of operator actions', () => {
  it('records who granted credits, changed plans, set limits, moved clocks and edited the catalogue', async () => {
    const grantId = await grantCredits(server, { accountId, creditType: pool, amount: 25 });
    const other = await definePlan(server, { allocations: [{ creditType: pool, amount: 500 }], featureKeys: [feature] });
    await operator(server).changePlan({ accountId, planCode: other });
    await operator(server).setSpendLimit({ accountId, scope: 'ACCOUNT', limit: 50, period: 'BILLING_PERIOD' });
    const clock = await createTestClock(server, '2026-01-01T00:00:00Z');
    await operator(server).advanceTestClock({ testClockId: clock, to: '2026-01-02T00:00:00Z' });

    const forAccount = ok(await server.gql(AUDIT, { accountId })).auditEvents.edges.map((edge: any) => edge.node);
    expect(forAccount.map((event: any) => event.action)).toEqual(['setSpendLimit', 'changePlan', 'grantCredits', 'createAccount']);
    const grant = forAccount.find((event: any) => event.action === 'grantCredits');
    expect(grant).toMatchObject({ actorRole: 'ADMIN', accountId, subjectId: grantId, details: { creditType: pool, amount: 25, source: 'BONUS' } });
    expect(grant.actorKeyId).toBe(forAccount.find((event: any) => event.action === 'createAccount').actorKeyId);
    expect(forAccount.find((event: any) => event.action === 'changePlan').details).toMatchObject({ planCode: other });

    expect(await findEvent('upsertPlan', (event) => event.subjectId === other)).toMatchObject({ actorRole: 'ADMIN', details: { code: other } });
    expect(await findEvent('upsertPlan', (event) => event.subjectId === plan)).toBeDefined();
    expect(await findEvent('upsertFeature', (event) => event.subjectId === feature)).toMatchObject({ details: { creditType: pool } });
    expect(await findEvent('createTestClock', (event) => event.subjectId === clock)).toBeDefined();
    expect(await findEvent('advanceTestClock', (event) => event.subjectId === clock)).toMatchObject({
      details: { from: '2026-01-01T00:00:00.000Z', to: '2026-01-02T00:00:00.000Z' },
    });
  });

  it('a refused action leaves no audit event', async () => {
    const before = ok(await server.gql(AUDIT, { accountId })).auditEvents.edges.length;
    const refused = await server.gql(`mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } } }`, {
      input: { accountId, planCode: 'no-such-plan' },
    });
    expect(refused.errors?.[0]?.extensions?.code).toBe('PLAN_NOT_FOUND');
    expect(ok(await server.gql(AUDIT, { accountId })).auditEvents.edges.length).toBe(before);
  });

  it('records keys created, rotated and revoked by an ACCOUNT key, without their secrets', async () => {
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    const created = ok(
      await server.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }`, { input: { role: 'ACCOUNT', accountId, name: 'ci' } }, accountKey),
    ).createApiKey;
    const rotated = ok(await server.gql(`mutation($id: ID!) { rotateApiKey(id: $id) { secret apiKey { id } } }`, { id: created.apiKey.id }, accountKey)).rotateApiKey;
    ok(await server.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: rotated.apiKey.id }, accountKey));

    const events = ok(await server.gql(AUDIT, { accountId, first: 4 })).auditEvents.edges.map((edge: any) => edge.node);
    expect(events.map((event: any) => event.action)).toEqual(['revokeApiKey', 'rotateApiKey', 'createApiKey', 'createApiKey']);
    expect(events[2]).toMatchObject({ actorRole: 'ACCOUNT', subjectId: created.apiKey.id, details: { role: 'ACCOUNT', name: 'ci' } });
    expect(events[1].details).toMatchObject({ replacedKeyId: created.apiKey.id });
    const everything = JSON.stringify(ok(await server.gql(AUDIT, { first: 500 })));
    for (const secret of [accountKey, created.secret, rotated.secret, server.adminKey]) expect(everything).not.toContain(secret.slice(13));
  });

  it('pages newest first and is for the operator only', async () => {
    const first = ok(await server.gql(AUDIT, { first: 2 })).auditEvents;
    const second = ok(await server.gql(AUDIT, { first: 2, after: first.pageInfo.endCursor })).auditEvents;
    const ids = [...first.edges, ...second.edges].map((edge: any) => Number(edge.node.id));
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    expect(new Set(ids).size).toBe(4);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    expect((await server.gql(AUDIT, {}, accountKey)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('rotating a key', () => {
  it('issues a key with the same role, account, seat and name and revokes the old one at once', async () => {
    const seat = (await operator(server).addSeat({ accountId, name: 'analyst' })).id;
    const old = await operator(server).createApiKey({ role: 'SEAT', accountId, seatId: seat, name: 'front end' });
    const rotated = await operator(server).rotateApiKey(old.apiKey.id);
    expect(rotated.apiKey).toMatchObject({ role: 'SEAT', accountId, seatId: seat, name: 'front end', revokedAt: null });
    expect(rotated.apiKey.id).not.toBe(old.apiKey.id);
    expect(rotated.secret.startsWith(rotated.apiKey.prefix)).toBe(true);
    expect((await server.gql(`{ viewer { role } }`, {}, old.secret)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(ok(await server.gql(`{ viewer { role seat { id } } }`, {}, rotated.secret)).viewer).toEqual({ role: 'SEAT', seat: { id: seat } });

    const again = await server.gql(`mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, { id: old.apiKey.id });
    expect(again.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
  });

  it("refuses a SEAT key, and an ACCOUNT key rotating another account's key answers as for a missing key", async () => {
    const otherAccount = await createAccount(server, plan);
    const otherKey = await operator(server).createApiKey({ role: 'ACCOUNT', accountId: otherAccount });
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    const ROTATE = `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`;
    const foreign = await server.gql(ROTATE, { id: otherKey.apiKey.id }, accountKey);
    const missing = await server.gql(ROTATE, { id: 'no-such-key' }, accountKey);
    expect(foreign.errors?.[0]?.extensions?.code).toBe('API_KEY_NOT_FOUND');
    expect(foreign.errors?.[0]?.extensions).toEqual(missing.errors?.[0]?.extensions);
    expect(ok(await server.gql(`{ viewer { role } }`, {}, otherKey.secret)).viewer.role).toBe('ACCOUNT');
    const seat = (await operator(server).addSeat({ accountId, name: unique('seat') })).id;
    const seatKey = await createKey(server, 'SEAT', accountId, seat);
    expect((await server.gql(ROTATE, { id: otherKey.apiKey.id }, seatKey)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});
