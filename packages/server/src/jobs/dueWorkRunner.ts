import type { Logger } from 'pino';
import { lockAccount } from '../accounts/lockAccount.ts';
import { inTransaction } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { processDueWork } from '../periods/dueWork.ts';

export interface DueWorkRunnerOptions {
  prisma: PrismaClient;
  clock: Clock;
  logger: Logger;
  /** Pause between polls when nothing was due. */
  intervalMs: number;
  /** Accounts claimed per poll. */
  batchSize?: number;
  /** Accounts processed at once (each holds one connection). */
  concurrency?: number;
  /** Further periodic work run after each poll (purchase retries, alert deliveries, …). */
  tasks?: Array<(now: Date) => Promise<unknown>>;
}

/** Runs `task` at most once every `intervalMs`, skipping the calls in between. */
export function throttle(intervalMs: number, task: (now: Date) => Promise<unknown>): (now: Date) => Promise<unknown> {
  let last = Number.NEGATIVE_INFINITY;
  return async (now) => {
    if (now.getTime() - last < intervalMs) return;
    last = now.getTime();
    await task(now);
  };
}

/**
 * Renewals, grant expiries and hold timeouts for accounts on the real clock (test-clock accounts
 * move only when their clock is advanced). Safe with any number of instances: each account is
 * claimed with `FOR UPDATE SKIP LOCKED`, so two runners never work on one account at once and a
 * runner never waits behind a request holding it; the work itself re-reads the state under the lock
 * (and the renewal row is unique per period), so nothing runs twice. Missed periods after downtime
 * are caught up in order on the next poll.
 */
export class DueWorkRunner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = true;

  constructor(private readonly options: DueWorkRunnerOptions) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops polling and waits for the account being processed to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.poll().finally(() => {
        this.running = null;
      });
    }, delayMs);
  }

  private async poll(): Promise<void> {
    let processed = 0;
    try {
      processed = await this.runOnce();
      for (const task of this.options.tasks ?? []) {
        await task(this.options.clock.now()).catch((error: unknown) => this.options.logger.error({ err: error }, 'periodic task failed'));
      }
    } catch (error) {
      this.options.logger.error({ err: error }, 'due work poll failed');
    }
    // A full batch means more may be waiting: go again at once instead of sleeping.
    this.schedule(processed >= (this.options.batchSize ?? 200) ? 0 : this.options.intervalMs);
  }

  /** One pass: claims due accounts and processes them. Returns how many accounts were worked on. */
  async runOnce(): Promise<number> {
    const { prisma, clock } = this.options;
    const now = clock.now();
    const batchSize = this.options.batchSize ?? 200;
    const due = await prisma.$queryRaw<Array<{ id: string }>>`
      SELECT id FROM accounts WHERE test_clock_id IS NULL AND current_period_end <= ${now}
      UNION
      SELECT g.account_id FROM grants g JOIN accounts a ON a.id = g.account_id
      WHERE a.test_clock_id IS NULL AND g.expired_at IS NULL AND g.expires_at <= ${now}
      UNION
      SELECT r.account_id FROM reservations r JOIN accounts a ON a.id = r.account_id
      WHERE a.test_clock_id IS NULL AND r.status = 'HELD' AND r.expires_at <= ${now}
      LIMIT ${batchSize}`;
    const queue = due.map((row) => row.id);
    let worked = 0;
    const worker = async () => {
      for (let accountId = queue.shift(); accountId !== undefined; accountId = queue.shift()) {
        if (await this.processAccount(accountId, now)) worked += 1;
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency ?? 4 }, worker));
    return worked;
  }

  private async processAccount(accountId: string, now: Date): Promise<boolean> {
    try {
      return await inTransaction(this.options.prisma, async (tx) => {
        const claimed = await tx.$queryRaw<unknown[]>`SELECT id FROM accounts WHERE id = ${accountId} FOR UPDATE SKIP LOCKED`;
        if (claimed.length === 0) return false;
        await processDueWork(tx, await lockAccount(tx, this.options.clock, accountId), now);
        return true;
      });
    } catch (error) {
      this.options.logger.error({ err: error, accountId }, 'due work failed for an account; it will be retried');
      return false;
    }
  }
}
