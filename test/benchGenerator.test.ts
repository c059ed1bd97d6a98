import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLoop, percentile } from '../bench/openLoop.ts';

// The bench's open-loop generator against a server that stalls: the requests due during the stall
// must be charged with it (coordinated omission corrected), whatever the machine's load; only lower
// bounds are asserted, which a slower machine cannot break.
let server: Server;
let url: string;
let stallFrom = Number.POSITIVE_INFINITY;
let stallUntil = Number.POSITIVE_INFINITY;
beforeAll(async () => {
  server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const answer = () => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{"data":{"__typename":"Mutation"}}');
      };
      const now = performance.now();
      if (now >= stallFrom && now < stallUntil) setTimeout(answer, stallUntil - now);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('the open-loop bench generator', () => {
  it('charges a stall to every request that was due during it, not only to the ones in flight', async () => {
    // 100 req/s for 2 s over 4 connections; everything arriving from 0.5 s to 1.0 s after the start
    // is answered at 1.0 s. The requests due from 0.5 s to 0.8 s (15 % of them) wait at least
    // 200 ms from their due instant, so the 90th percentile is at least 200 ms, though only the
    // 4 connections' requests were in flight when the stall began.
    const start = performance.now();
    stallFrom = start + 500;
    stallUntil = start + 1_000;
    const result = await openLoop({ url, apiKey: 'unused' }, () => '{"query":"mutation { __typename }"}', { rate: 100, seconds: 2, connections: 4 });
    expect(result.errors).toBe(0);
    expect(result.p90).toBeGreaterThanOrEqual(200);
    expect(result.max).toBeGreaterThanOrEqual(300);
  });

  it('reads percentiles by nearest rank', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, index) => index + 1);
    expect(percentile(sorted, 50)).toBe(50);
    expect(percentile(sorted, 99)).toBe(99);
    expect(percentile(sorted, 100)).toBe(100);
    expect(percentile(new Float64Array(0), 99)).toBe(0);
  });
});
