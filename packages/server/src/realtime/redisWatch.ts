import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Redis is optional at run time: while it is away, rate limits fall back to a per-instance count,
 * live events reach only this instance's subscribers, and readiness says "degraded" without taking
 * the instance out of rotation. ioredis reports every failed reconnection as an `error` event
 * (several a second); this turns them into one structured warning when the outage starts and one
 * line when every connection is back.
 */
export class RedisWatch {
  private readonly down = new Set<string>();
  private outageStarted = 0;
  private stopped = false;

  constructor(private readonly logger: Logger) {}

  /** Follows one connection; `role` names it in the log (events, subscriptions, rate limits, …). */
  watch(client: Redis, role: string): Redis {
    client.on('error', (error: Error) => this.lost(role, error));
    client.on('close', () => {
      if (client.status !== 'end') this.lost(role, new Error('connection closed'));
    });
    client.on('ready', () => this.back(role));
    return client;
  }

  /** Whether some connection is away right now. */
  get degraded(): boolean {
    return this.down.size > 0;
  }

  /** The connections are being closed on purpose: nothing more to report. */
  stop(): void {
    this.stopped = true;
  }

  private lost(role: string, error: Error): void {
    if (this.stopped || this.down.has(role)) return;
    const first = this.down.size === 0;
    this.down.add(role);
    if (!first) return;
    this.outageStarted = Date.now();
    this.logger.warn(
      { redis: { connection: role, reason: error.message.split('\n')[0] } },
      'Redis unavailable: rate limits count per instance and live events stay on this instance until it returns',
    );
  }

  private back(role: string): void {
    if (!this.down.delete(role) || this.down.size > 0) return;
    this.logger.info({ redis: { outageMs: Date.now() - this.outageStarted } }, 'Redis available again');
  }
}
