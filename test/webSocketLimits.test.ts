import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { addSeat, createAccount, createKey, defineFeature, definePlan } from './support/fixtures.ts';
import { BALANCE_SUBSCRIPTION, connectLive, type LiveClient } from './support/live.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const servers: TestServer[] = [];
const clients: LiveClient[] = [];
const sockets: WebSocket[] = [];
afterAll(async () => {
  for (const socket of sockets) socket.terminate();
  await Promise.all(clients.map((client) => client.dispose()));
  await Promise.all(servers.map((server) => server.stop()));
});

async function serverWith(env: Record<string, string>): Promise<TestServer> {
  const server = await startTestServer({ JOBS_ENABLED: 'false', ...env });
  servers.push(server);
  return server;
}

async function seatKeyOn(server: TestServer): Promise<{ accountId: string; seatKey: string }> {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
  return { accountId, seatKey: await createKey(server, 'SEAT', accountId, await addSeat(server, accountId)) };
}

interface RawSocket {
  socket: WebSocket;
  messages: Array<Record<string, any>>;
  closed: Promise<number>;
  send(message: unknown): void;
  /** The messages about operation `id`, once one of them ends it (error or complete). */
  outcome(id: string, timeoutMs?: number): Promise<Array<Record<string, any>>>;
}

/** graphql-transport-ws by hand: what a hostile client sends is not limited to what the official client would. */
async function rawSocket(server: TestServer, apiKey: string): Promise<RawSocket> {
  const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
  sockets.push(socket);
  const messages: Array<Record<string, any>> = [];
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  socket.on('message', (data) => messages.push(JSON.parse(String(data))));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${apiKey}` } }));
  const deadline = Date.now() + 5_000;
  while (!messages.some((message) => message.type === 'connection_ack')) {
    if (Date.now() > deadline || socket.readyState !== WebSocket.OPEN) throw new Error(`no connection_ack: ${JSON.stringify(messages)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    socket,
    messages,
    closed,
    send: (message) => socket.send(JSON.stringify(message)),
    async outcome(id, timeoutMs = 5_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const about = messages.filter((message) => message.id === id);
        if (about.some((message) => message.type === 'error' || message.type === 'complete')) return about;
        if (Date.now() > end) throw new Error(`operation ${id} did not end: ${JSON.stringify(about)} (socket ${socket.readyState})`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
  };
}

describe('WebSocket limits match HTTP', () => {
  it('every operation on a socket counts against the key’s rate limit', async () => {
    const server = await serverWith({ RATE_LIMIT_PER_SECOND: '5', RATE_LIMIT_BURST: '20' });
    const { seatKey } = await seatKeyOn(server);
    const raw = await rawSocket(server, seatKey);
    const outcomes = [];
    const started = Date.now();
    for (let index = 0; index < 130; index += 1) {
      raw.send({ id: `q${index}`, type: 'subscribe', payload: { query: '{ __typename }' } });
      outcomes.push(await raw.outcome(`q${index}`));
    }
    const limited = outcomes.filter((about) => about.some((message) => message.type === 'error' && message.payload[0]?.extensions?.code === 'RATE_LIMITED'));
    const answered = outcomes.filter((about) => about.some((message) => message.type === 'next'));
    const seconds = Math.ceil((Date.now() - started) / 1000) + 1;
    expect(answered.length + limited.length).toBe(130);
    // At most 5 a second plus a burst of 20 per 10 s, however long the (loaded) machine took.
    expect(answered.length).toBeLessThanOrEqual(5 * seconds + 20 * Math.ceil(seconds / 10));
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]!.find((message) => message.type === 'error')!.payload[0].extensions.retryAfter).toBeGreaterThanOrEqual(1);
    expect(raw.socket.readyState).toBe(WebSocket.OPEN);
  });

  it('a message larger than MAX_REQUEST_BODY_BYTES closes the socket (1009) without being parsed', async () => {
    const server = await serverWith({ MAX_REQUEST_BODY_BYTES: String(64 * 1024) });
    const { seatKey } = await seatKeyOn(server);
    const raw = await rawSocket(server, seatKey);
    const started = process.memoryUsage().rss;
    raw.send({ id: 'big', type: 'subscribe', payload: { query: `{ __typename }`, variables: { padding: 'x'.repeat(20 * 1024 * 1024) } } });
    expect(await raw.closed).toBe(1009);
    expect(raw.messages.filter((message) => message.id === 'big')).toEqual([]);
    expect(process.memoryUsage().rss - started).toBeLessThan(200 * 1024 * 1024);

    const small = await rawSocket(server, seatKey);
    small.send({ id: 'ok', type: 'subscribe', payload: { query: `{ __typename }`, variables: { padding: 'x'.repeat(32 * 1024) } } });
    expect((await small.outcome('ok')).map((message) => message.type)).toEqual(['next', 'complete']);
  });

  it('subscriptions per socket are capped (default 100): the next is refused with TOO_MANY_SUBSCRIPTIONS, the socket stays', async () => {
    const server = await serverWith({});
    const { accountId, seatKey } = await seatKeyOn(server);
    const raw = await rawSocket(server, seatKey);
    for (let index = 0; index < 100; index += 1) raw.send({ id: `s${index}`, type: 'subscribe', payload: { query: BALANCE_SUBSCRIPTION, variables: { accountId } } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(raw.messages.filter((message) => message.type === 'error')).toEqual([]);
    raw.send({ id: 'over', type: 'subscribe', payload: { query: BALANCE_SUBSCRIPTION, variables: { accountId } } });
    const [refused] = await raw.outcome('over');
    expect(refused).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }] });
    // Ending one makes room for another.
    raw.send({ id: 's0', type: 'complete' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    raw.send({ id: 'again', type: 'subscribe', payload: { query: BALANCE_SUBSCRIPTION, variables: { accountId } } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Accepted: it starts with the balance snapshot balanceUpdated sends on every subscribe, no error.
    expect(raw.messages.filter((message) => message.id === 'again').map((message) => message.type)).toContain('next');
    expect(raw.messages.filter((message) => message.id === 'again' && message.type === 'error')).toEqual([]);
    expect(raw.socket.readyState).toBe(WebSocket.OPEN);
  });

  it('sockets per key are capped (WS_MAX_SOCKETS_PER_KEY): one more is closed with 4429; closing one makes room', async () => {
    const server = await serverWith({ WS_MAX_SOCKETS_PER_KEY: '3' });
    const { accountId, seatKey } = await seatKeyOn(server);
    const open = [];
    for (let index = 0; index < 3; index += 1) {
      const client = connectLive(server.url, seatKey);
      clients.push(client);
      const balances = client.subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);
      open.push({ client, balances });
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const extra = connectLive(server.url, seatKey);
    clients.push(extra);
    expect(await extra.closed).toBe(4429);
    await open[0]!.client.dispose();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const again = await rawSocket(server, seatKey);
    expect(again.socket.readyState).toBe(WebSocket.OPEN);
    // Another key is counted on its own.
    const { seatKey: otherKey } = await seatKeyOn(server);
    expect((await rawSocket(server, otherKey)).socket.readyState).toBe(WebSocket.OPEN);
  });

  it('a document that fails to parse or validate is an error for that operation; the socket stays open', async () => {
    const server = await serverWith({});
    const { seatKey } = await seatKeyOn(server);
    const raw = await rawSocket(server, seatKey);
    raw.send({ id: 'syntax', type: 'subscribe', payload: { query: '{ nope' } });
    const [syntax] = await raw.outcome('syntax');
    expect(syntax).toMatchObject({ type: 'error', payload: [{ message: expect.stringMatching(/Syntax Error/) }] });
    raw.send({ id: 'invalid', type: 'subscribe', payload: { query: '{ noSuchField }' } });
    const [invalid] = await raw.outcome('invalid');
    expect(invalid).toMatchObject({ type: 'error', payload: [{ message: expect.stringMatching(/noSuchField/) }] });
    raw.send({ id: 'tokens', type: 'subscribe', payload: { query: `{ ${'__typename '.repeat(3_000)} }` } });
    const [tokens] = await raw.outcome('tokens');
    expect(tokens).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'TOO_MANY_TOKENS' } }] });
    raw.send({ id: 'fine', type: 'subscribe', payload: { query: '{ __typename }' } });
    expect((await raw.outcome('fine')).map((message) => message.type)).toEqual(['next', 'complete']);
    expect(raw.socket.readyState).toBe(WebSocket.OPEN);
  });

  it('variables nested too deep or holding NUL are refused as over HTTP, as an error for that operation', async () => {
    const server = await serverWith({});
    const { accountId, seatKey } = await seatKeyOn(server);
    const raw = await rawSocket(server, seatKey);
    const usage = 'mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }';
    // Written by hand: 5,000 levels are beyond what JSON.stringify in this worker can write.
    const deep = '['.repeat(5_000) + '1' + ']'.repeat(5_000);
    const input = `{"accountId":"${accountId}","featureKey":"f","quantity":1,"idempotencyKey":"k"`;
    raw.socket.send(`{"id":"deep","type":"subscribe","payload":{"query":${JSON.stringify(usage)},"variables":{"input":${input},"metadata":${deep}}}}}`);
    raw.send({ id: 'nul', type: 'subscribe', payload: { query: usage, variables: { input: { accountId, featureKey: 'f', quantity: 1, idempotencyKey: 'a\u0000b' } } } });
    for (const id of ['deep', 'nul']) {
      const [refused] = await raw.outcome(id);
      expect(refused, id).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'INVALID_INPUT' } }] });
      expect(refused!.payload[0].extensions.http, id).toBeUndefined();
    }
    expect(raw.socket.readyState).toBe(WebSocket.OPEN);
  });
});
