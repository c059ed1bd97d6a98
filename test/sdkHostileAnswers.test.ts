import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BillingApiError, createBillingClient, verifyLedgerWebhook, WebhookVerificationError, type VerifyWebhookOptions } from '../packages/sdk/src/index.ts';

/**
 * The SDK against answers and inputs a host cannot trust: a server (or a proxy in front of it) whose
 * pages never end, and webhook deliveries or configuration that are not what the types say. Neither
 * may hang or crash the host, nor make a forged or replayed delivery pass. No database: a fake fetch.
 */

/** A client whose every call is answered by `answer` (the nth call, from 0); counts the calls. */
function clientAnswering(answer: (call: number) => unknown) {
  let calls = 0;
  // Each answer after a timer's turn, as over a network: a loop that never ends still lets the test's timeout fire.
  const fetch = (async () => {
    await new Promise((resolve) => setTimeout(resolve, 0));
    return new Response(JSON.stringify(answer(calls++)), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof globalThis.fetch;
  return { client: createBillingClient({ url: 'http://billing.invalid/graphql', apiKey: 'k', fetch, retries: 0 }), calls: () => calls };
}

const accountsPage = (ids: string[], hasNextPage: boolean, endCursor: string | null) => ({
  data: { accounts: { edges: ids.map((id) => ({ cursor: id, node: { id, name: id, externalId: null, metadata: null, subscription: null } })), pageInfo: { hasNextPage, endCursor } } },
});

/** Iterates at most `limit` nodes; what ended the loop. */
async function drain(iterable: AsyncIterable<{ id: string }>, limit = 1_000): Promise<{ ids: string[]; error: unknown }> {
  const ids: string[] = [];
  try {
    for await (const node of iterable) {
      ids.push(node.id);
      if (ids.length >= limit) return { ids, error: 'did not stop' };
    }
  } catch (error) {
    return { ids, error };
  }
  return { ids, error: null };
}

describe('SDK pagination against a server whose pages do not advance', () => {
  it('a repeated endCursor with hasNextPage ends .list() with a typed error instead of looping for ever', async () => {
    const { client, calls } = clientAnswering(() => accountsPage(['a1'], true, 'same'));
    const { ids, error } = await drain(client.accounts.list());
    expect(error).toBeInstanceOf(BillingApiError);
    expect(error).toMatchObject({ code: 'HTTP_ERROR' });
    expect(ids).toEqual(['a1', 'a1']);
    expect(calls()).toBe(2);
  });

  it('a cursor cycle (a, b, a) is caught too', async () => {
    const { client, calls } = clientAnswering((call) => accountsPage([`n${call}`], true, call % 2 === 0 ? 'a' : 'b'));
    const { error } = await drain(client.accounts.list());
    expect(error).toMatchObject({ code: 'HTTP_ERROR' });
    expect(calls()).toBe(3);
  });

  // Unfixed, this one looped for ever without yielding: the timeout turns the hang into a failure.
  it('hasNextPage with no edges ends .list() with a typed error (an empty page cannot advance)', { timeout: 5_000 }, async () => {
    const { client, calls } = clientAnswering((call) => accountsPage([], true, `c${call}`));
    const { ids, error } = await drain(client.accounts.list());
    expect(error).toMatchObject({ code: 'HTTP_ERROR' });
    expect(ids).toEqual([]);
    expect(calls()).toBe(1);
  });

  it('pages that advance are all read, and the last page (hasNextPage false) ends the loop', async () => {
    const { client } = clientAnswering((call) => accountsPage([`n${call}`], call < 4, `c${call}`));
    expect(await drain(client.accounts.list())).toEqual({ ids: ['n0', 'n1', 'n2', 'n3', 'n4'], error: null });
  });
});

describe('verifyLedgerWebhook against malformed deliveries and configuration', () => {
  const secret = 'whsec_test';
  const now = 1_800_000_000;
  const payload = JSON.stringify({ id: 'e1', type: 'grant.created', accountId: 'acc', createdAt: '2027-01-15T08:00:00.000Z', data: {} });
  const sign = (timestamp: number, body: string) => `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
  const refusal = (options: unknown) =>
    verifyLedgerWebhook(options as VerifyWebhookOptions).then(
      () => 'accepted',
      (error: unknown) => (error instanceof WebhookVerificationError ? 'refused' : `crashed: ${String(error)}`),
    );

  it('accepts a fresh, correctly signed delivery', async () => {
    expect(await verifyLedgerWebhook({ payload, signature: sign(now, payload), secret, now })).toMatchObject({ id: 'e1' });
  });

  it('a replay is refused even when the tolerance or the clock is not a number (NaN from a missing setting)', async () => {
    const old = sign(now - 86_400, payload);
    expect(await refusal({ payload, signature: old, secret, now, toleranceSeconds: Number(undefined) })).toBe('refused');
    expect(await refusal({ payload, signature: old, secret, now: Number.NaN })).toBe('refused');
  });

  it('a signature header that is not a string (a repeated header as an array, a number) is refused with the typed error', async () => {
    const signature = sign(now, payload);
    expect(await refusal({ payload, signature: [signature, signature], secret, now })).toBe('refused');
    expect(await refusal({ payload, signature: 42, secret, now })).toBe('refused');
  });

  it('a payload that is not the raw body (a parsed object, a number, nothing) is refused with the typed error', async () => {
    const signature = sign(now, payload);
    expect(await refusal({ payload: JSON.parse(payload), signature, secret, now })).toBe('refused');
    expect(await refusal({ payload: 7, signature, secret, now })).toBe('refused');
    expect(await refusal({ payload: undefined, signature, secret, now })).toBe('refused');
  });

  it('a header with more than four signatures is refused before the body is hashed for each; other lengths are not candidates', async () => {
    const genuine = sign(now, payload).split(',')[1]!;
    const forged = (count: number) => Array.from({ length: count }, (_, index) => `v1=${index.toString(16).padStart(64, '0')}`).join(',');
    expect(await refusal({ payload, signature: `t=${now},${forged(3)},${genuine}`, secret, now })).toBe('accepted');
    expect(await refusal({ payload, signature: `t=${now},${forged(200)},${genuine}`, secret, now })).toBe('refused');
    // Short hex values are not signatures at all: they neither count nor get hashed against.
    expect(await refusal({ payload, signature: `t=${now},${Array.from({ length: 200 }, () => 'v1=00').join(',')},${genuine}`, secret, now })).toBe('accepted');
  });

  it('a missing or empty secret (an unset environment variable) is refused with the typed error', async () => {
    const signature = sign(now, payload);
    expect(await refusal({ payload, signature, secret: '', now })).toBe('refused');
    expect(await refusal({ payload, signature, secret: undefined, now })).toBe('refused');
  });
});
