/**
 * An open-loop load generator, as wrk2 measures: requests are due at evenly spaced instants whatever
 * the server does, and each one's latency is counted from the instant it was due, not from when it
 * was sent. A server that stalls therefore pays for every request that should have left during the
 * stall (coordinated omission corrected), and a generator that falls behind pays too: its own
 * lateness is in the figures, and reported beside them so that it can be told apart.
 *
 * Over undici's keep-alive pool: each connection carries one request at a time; a request due while
 * all are busy waits for one, its wait counted.
 */
import { Pool } from 'undici';

export interface Target {
  url: string;
  apiKey: string;
}

export interface OpenLoopResult {
  /** Requests a second offered. */
  offered: number;
  /** Requests a second answered (over the time from the first due instant to the last answer). */
  achieved: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** The 99th percentile of how late the generator sent a request after its due instant. */
  sendLagP99: number;
  /** Requests that failed, answered other than 200, or answered with GraphQL errors. */
  errors: number;
}

export interface BackToBackResult {
  rps: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
}

/** The value at rank p of the sorted values (nearest rank). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function request(pool: Pool, target: Target, body: string): Promise<boolean> {
  return pool
    .request({
      path: new URL(target.url).pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${target.apiKey}` },
      body,
    })
    .then(async (response) => {
      const text = await response.body.text();
      return response.statusCode === 200 && !text.includes('"errors"');
    });
}

/** `rate` requests a second for `seconds`, each due at its instant, over up to `connections` connections. */
export async function openLoop(target: Target, body: () => string, options: { rate: number; seconds: number; connections?: number }): Promise<OpenLoopResult> {
  const pool = new Pool(new URL(target.url).origin, { connections: options.connections ?? 64, pipelining: 1, keepAliveTimeout: 60_000 });
  const total = Math.max(1, Math.round(options.rate * options.seconds));
  const interval = 1000 / options.rate;
  const latencies = new Float64Array(total);
  const lags = new Float64Array(total);
  let errors = 0;
  let finished = 0;
  let lastAnswer = 0;
  // A little lead, so that the first requests are not already late when the loop starts.
  const start = performance.now() + 20;
  await new Promise<void>((resolve) => {
    let next = 0;
    const fire = (index: number, now: number) => {
      const due = start + index * interval;
      lags[index] = now - due;
      request(pool, target, body())
        .then(
          (ok) => {
            if (!ok) errors += 1;
          },
          () => {
            errors += 1;
          },
        )
        .finally(() => {
          lastAnswer = performance.now();
          latencies[index] = lastAnswer - due;
          finished += 1;
          if (finished === total) resolve();
        });
    };
    const tick = () => {
      const now = performance.now();
      while (next < total && start + next * interval <= now) fire(next++, now);
      // Timers fire a millisecond late at best: the requests due meanwhile leave together, late, and count it.
      if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now()));
    };
    setTimeout(tick, Math.max(0, start - performance.now()));
  });
  await pool.close();
  latencies.sort();
  lags.sort();
  return {
    offered: options.rate,
    achieved: total / ((lastAnswer - start) / 1000),
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    max: latencies[latencies.length - 1] ?? 0,
    sendLagP99: percentile(lags, 99),
    errors,
  };
}

/** One connection, each request sent when the previous one is answered, for `seconds`. */
export async function backToBack(target: Target, body: () => string, options: { seconds: number }): Promise<BackToBackResult> {
  const pool = new Pool(new URL(target.url).origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const deadline = start + options.seconds * 1000;
  while (performance.now() < deadline) {
    const sent = performance.now();
    const ok = await request(pool, target, body()).catch(() => false);
    latencies.push(performance.now() - sent);
    if (!ok) errors += 1;
  }
  const elapsed = (performance.now() - start) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? 0, errors };
}

/**
 * Closed loop over `connections` connections for `seconds`: the requests answered in each
 * `windowSeconds` (as requests a second), to see throughput change during a run.
 */
export async function closedLoopWindows(
  target: Target,
  body: () => string,
  options: { connections: number; seconds: number; windowSeconds: number },
): Promise<{ windows: number[]; errors: number }> {
  const pool = new Pool(new URL(target.url).origin, { connections: options.connections, pipelining: 1, keepAliveTimeout: 60_000 });
  const counts = new Array<number>(Math.ceil(options.seconds / options.windowSeconds)).fill(0);
  let errors = 0;
  const start = performance.now();
  const deadline = start + options.seconds * 1000;
  await Promise.all(
    Array.from({ length: options.connections }, async () => {
      while (performance.now() < deadline) {
        const ok = await request(pool, target, body()).catch(() => false);
        const window = Math.floor((performance.now() - start) / 1000 / options.windowSeconds);
        if (window < counts.length) counts[window]! += 1;
        if (!ok) errors += 1;
      }
    }),
  );
  await pool.close();
  return { windows: counts.map((count) => count / options.windowSeconds), errors };
}
