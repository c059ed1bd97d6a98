import { randomUUID } from 'node:crypto';
import { createServer, Socket, type Server } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, unique } from './support/server.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { freePort, startServerProcess, type ServerProcess } from './support/processServer.ts';

const KILLS = Number(process.env.FAULT_KILLS ?? 5);
const POSTGRES = SHARED_POSTGRES_URL;
const skip = skipUnless('test/faults.test.ts', [await postgresService(POSTGRES)]);

/**
 * Stands between the server and PostgreSQL so that the database can "go away" for this test alone:
 * PostgreSQL itself is shared by everything on the machine and is never restarted.
 */
class DatabaseProxy {
  private readonly sockets = new Set<Socket>();
  private refusing = false;
  private server: Server | null = null;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((client) => {
      if (this.refusing) return void client.destroy();
      const upstream = new Socket();
      upstream.connect(this.target.port, this.target.host);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
  }

  /** Every open connection dies at once and new ones are refused for `ms`, as if PostgreSQL restarted. */
  async outage(ms: number): Promise<void> {
    this.refusing = true;
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, ms));
    this.refusing = false;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

interface Target {
  server: ServerProcess;
}

interface Outcome {
  data?: any;
  errors?: Array<{ extensions?: { code?: string } }>;
}

const adminKey = `fault-admin-${randomUUID()}`;
let database: { url: string; drop(): Promise<void> };
let proxy: DatabaseProxy;
let target: Target;
let direct: pg.Client;
let env: Record<string, string>;

/**
 * A client that keeps its idempotency key across every retry, as the SDK does: a lost answer
 * (killed server, refused connection, 5xx, internal error) is retried until the server decides.
 */
async function decide(query: string, variables: Record<string, unknown>): Promise<Outcome> {
  for (;;) {
    try {
      const response = await fetch(`${target.server.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
        body: JSON.stringify({ query, variables }),
        signal: AbortSignal.timeout(15_000),
      });
      if (response.status < 500) {
        const body = (await response.json()) as Outcome;
        if (!body.errors?.some((error) => error.extensions?.code === 'INTERNAL_SERVER_ERROR' || !error.extensions?.code)) return body;
      }
    } catch {
      // The server is down or restarting: the same request goes again.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const RECORD = `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on UsageRecorded { usageEvent { id credits } } ... on Error { code } } }`;
const RESERVE = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on CreditsReserved { reservation { id } } ... on Error { code } } }`;
const SETTLE = `mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id credits } }`;
const REFUND = `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id } }`;

async function expectLedgerSound(): Promise<void> {
  const { rows } = await direct.query(
    `SELECT g.id, g.remaining, coalesce(sum(l.credits), 0) AS ledger FROM grants g LEFT JOIN ledger_entries l ON l.grant_id = g.id
     GROUP BY g.id, g.remaining HAVING g.remaining <> coalesce(sum(l.credits), 0) OR g.remaining < 0`,
  );
  expect(rows).toEqual([]);
}

beforeAll(async () => {
  database = await createPostgresDatabase(POSTGRES);
  const upstream = new URL(database.url);
  proxy = new DatabaseProxy({ host: upstream.hostname, port: Number(upstream.port || 5432) });
  await proxy.start();
  const throughProxy = new URL(database.url);
  throughProxy.hostname = '127.0.0.1';
  throughProxy.port = String(proxy.port);
  env = { DATABASE_URL: throughProxy.toString(), ADMIN_API_KEY: adminKey, JOBS_ENABLED: 'false', LOG_LEVEL: 'fatal', DATABASE_POOL_SIZE: '8' };
  target = { server: await startServerProcess(env) };
  direct = new pg.Client({ connectionString: database.url });
  await direct.connect();
});
afterAll(async () => {
  await target?.server.stop('SIGKILL');
  await direct?.end();
  await proxy?.stop();
  await database?.drop();
});

describe.skipIf(skip)('crash safety (needs PostgreSQL whatever TEST_DB says)', () => {
  it(`usage, holds and refunds are charged exactly once across ${KILLS} SIGKILLs and a database outage`, async () => {
    const pool = unique('credits');
    const empty = unique('empty');
    const feature = unique('feature');
    const gated = unique('gated');
    await decide(`mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`, { input: { key: feature, name: feature, creditType: pool, pricing: 'PER_UNIT', unitCredits: 1 } });
    await decide(`mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`, {
      input: { key: gated, name: gated, creditType: empty, pricing: 'PER_UNIT', unitCredits: 1, requiresPositiveBalance: true },
    });
    const plan = unique('plan');
    await decide(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
      input: { code: plan, name: plan, interval: 'MONTH', price: { amount: 0, currency: 'USD' }, allocations: [{ creditType: pool, amount: 1_000_000 }], featureKeys: [feature, gated] },
    });
    const accountId = (await decide(`mutation($input: CreateAccountInput!) { createAccount(input: $input) { id } }`, { input: { name: 'faults', planCode: plan } })).data.createAccount.id;

    const accepted = new Map<string, { id: string; credits: number }>();
    const refused = new Set<string>();
    const settled = new Map<string, string>();
    const refunds = new Map<string, string>();
    let running = true;

    async function worker(index: number): Promise<void> {
      for (let round = 0; running; round += 1) {
        const idempotencyKey = `w${index}-${round}-${randomUUID().slice(0, 8)}`;
        const choice = round % 5;
        if (choice === 4) {
          // Refused for want of credits: must never be charged, however often it is retried.
          const outcome = await decide(RECORD, { input: { accountId, featureKey: gated, quantity: 1, idempotencyKey } });
          expect(outcome.data.recordUsage.__typename).toBe('InsufficientCredits');
          refused.add(idempotencyKey);
        } else if (choice === 3) {
          const held = await decide(RESERVE, { input: { accountId, featureKey: feature, credits: 7, idempotencyKey } });
          const reservationId = held.data.reserveCredits.reservation.id;
          const settle = await decide(SETTLE, { input: { reservationId, credits: 4 } });
          expect(settle.errors, JSON.stringify(settle.errors)).toBeUndefined();
          settled.set(reservationId, settle.data.settleReservation.id);
        } else {
          const outcome = await decide(RECORD, { input: { accountId, featureKey: feature, quantity: 1 + (round % 3), idempotencyKey } });
          const event = outcome.data.recordUsage.usageEvent;
          accepted.set(idempotencyKey, event);
          if (choice === 2) {
            const refundKey = `refund-${idempotencyKey}`;
            const refund = await decide(REFUND, { input: { usageEventId: event.id, credits: 1, idempotencyKey: refundKey } });
            expect(refund.errors, JSON.stringify(refund.errors)).toBeUndefined();
            refunds.set(refundKey, event.id);
          }
        }
      }
    }

    const workers = Array.from({ length: 4 }, (_, index) => worker(index));
    let survived = 0;
    let outageRecovered = false;
    for (let kill = 1; kill <= KILLS; kill += 1) {
      await new Promise((resolve) => setTimeout(resolve, 150 + Math.random() * 600));
      await target.server.stop('SIGKILL');
      target.server = await startServerProcess(env);
      survived += 1;
      await expectLedgerSound();
      if (kill === Math.ceil(KILLS / 2)) {
        const before = accepted.size;
        await proxy.outage(2_000);
        const deadline = Date.now() + 30_000;
        while (accepted.size <= before + 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
        expect(target.server.child.exitCode).toBeNull();
        expect(accepted.size, 'usage is accepted again after the database came back, without a restart').toBeGreaterThan(before + 4);
        outageRecovered = true;
      }
    }
    running = false;
    await Promise.all(workers);
    await expectLedgerSound();

    const { rows: events } = await direct.query<{ id: string; idempotency_key: string; credits: string }>(
      `SELECT id, idempotency_key, credits FROM usage_events WHERE account_id = $1`,
      [accountId],
    );
    const byKey = new Map<string, Array<{ id: string; credits: number }>>();
    for (const event of events) byKey.set(event.idempotency_key, [...(byKey.get(event.idempotency_key) ?? []), { id: event.id, credits: Number(event.credits) }]);
    for (const [key, event] of accepted) expect(byKey.get(key), key).toEqual([event]);
    for (const key of refused) expect(byKey.get(key), key).toBeUndefined();
    for (const [reservationId, eventId] of settled) expect(byKey.get(`reservation:${reservationId}`)?.map((event) => event.id)).toEqual([eventId]);
    expect(events.length).toBe(accepted.size + settled.size);

    const { rows: refundRows } = await direct.query<{ idempotency_key: string; usage_event_id: string; credits: string }>(
      `SELECT idempotency_key, usage_event_id, credits FROM refunds WHERE account_id = $1`,
      [accountId],
    );
    expect(refundRows.length).toBe(refunds.size);
    for (const row of refundRows) expect(refunds.get(row.idempotency_key)).toBe(row.usage_event_id);

    const { rows: totals } = await direct.query<{ remaining: string }>(`SELECT coalesce(sum(remaining), 0) AS remaining FROM grants WHERE account_id = $1 AND credit_type = $2`, [accountId, pool]);
    const spent = [...accepted.values()].reduce((sum, event) => sum + event.credits, 0) + settled.size * 4 - refunds.size;
    expect(Number(totals[0]!.remaining)).toBe(1_000_000 - spent);

    console.info(`faults: survived ${survived} SIGKILLs and ${outageRecovered ? 1 : 0} database outage; ${accepted.size} usage, ${settled.size} holds, ${refunds.size} refunds, ${refused.size} refusals`);
    expect(survived).toBe(KILLS);
    expect(outageRecovered).toBe(KILLS > 0);
  }, 60_000 + KILLS * 20_000);
});
