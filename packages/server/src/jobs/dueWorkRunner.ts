import type { Logger } from 'pino';
import { lockAccount } from '../accounts/lockAccount.ts';
import { inTransaction } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { processDueWork } from '../periods/dueWork.ts';
import { renewDueBatch } from '../periods/renewBatch.ts';

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

/** Accounts renewed per set-based transaction: at most the wait of a request on one of their locks. */
const RENEWAL_CHUNK = 250;

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
 * are caught up in order on the next poll. Plain renewals (one period due, nothing unusual) are done
 * set-based, many accounts a statement (`renewDueBatch`); every other account takes the complete
 * path, one transaction per account.
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
      await this.runTasks();
    } catch (error) {
      this.options.logger.error({ err: error }, 'due work poll failed');
    }
    // A full batch means more may be waiting: go again at once instead of sleeping.
    this.schedule(processed >= (this.options.batchSize ?? 200) ? 0 : this.options.intervalMs);
  }

  /** The periodic tasks, once each (a failing one is logged and does not stop the others). */
  async runTasks(): Promise<void> {
    for (const task of this.options.tasks ?? []) {
      await task(this.options.clock.now()).catch((error: unknown) => this.options.logger.error({ err: error }, 'periodic task failed'));
    }
  }

  /** One pass: claims due accounts and processes them. Returns how many accounts were worked on. */
  async runOnce(): Promise<number> {
    const { prisma, clock } = this.options;
    const now = clock.now();
    const batchSize = this.options.batchSize ?? 200;
    const concurrency = this.options.concurrency ?? 4;
    const renewals = await this.renewPlainAccounts(now, batchSize, concurrency);
    const queue = [...renewals.fallback];
    // Plain renewals come first; the rest of the pass goes to whatever else is due. A backlog of
    // renewals therefore delays expiries and hold timeouts by the time it takes to work through it
    // (a pass renews a full batch in well under a second).
    const room = batchSize - renewals.claimed;
    if (room > 0) {
      const due = await prisma.$queryRaw<Array<{ id: string }>>`
        SELECT id FROM accounts WHERE test_clock_id IS NULL AND current_period_end <= ${now}
        UNION
        SELECT g.account_id FROM grants g JOIN accounts a ON a.id = g.account_id
        WHERE a.test_clock_id IS NULL AND g.expired_at IS NULL AND g.expires_at <= ${now}
        UNION
        SELECT r.account_id FROM reservations r JOIN accounts a ON a.id = r.account_id
        WHERE a.test_clock_id IS NULL AND r.status = 'HELD' AND r.expires_at <= ${now}
        UNION
        SELECT s.account_id FROM scheduled_grants s JOIN accounts a ON a.id = s.account_id
        WHERE a.test_clock_id IS NULL AND s.next_at <= ${now}
        LIMIT ${room}`;
      const queued = new Set(queue);
      for (const row of due) if (!queued.has(row.id)) queue.push(row.id);
    }
    let worked = renewals.renewed;
    const worker = async () => {
      for (let accountId = queue.shift(); accountId !== undefined; accountId = queue.shift()) {
        if (await this.processAccount(accountId, now)) worked += 1;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return worked;
  }

  /**
   * Renews the plain due accounts set-based, in chunks (each one transaction holding its accounts'
   * locks, kept short for the requests that may wait on one of them), several at once. Returns the
   * accounts claimed but not plain, for the complete path.
   */
  private async renewPlainAccounts(now: Date, batchSize: number, concurrency: number): Promise<{ claimed: number; renewed: number; fallback: string[] }> {
    const chunks = Array.from({ length: Math.ceil(batchSize / RENEWAL_CHUNK) }, (_, index) => Math.min(RENEWAL_CHUNK, batchSize - index * RENEWAL_CHUNK));
    const result = { claimed: 0, renewed: 0, fallback: [] as string[] };
    let exhausted = false;
    const worker = async () => {
      for (let size = chunks.shift(); size !== undefined && !exhausted; size = chunks.shift()) {
        try {
          const chunk = await renewDueBatch(this.options.prisma, now, size);
          result.claimed += chunk.claimed;
          result.renewed += chunk.renewed.length;
          result.fallback.push(...chunk.fallback);
          // Fewer than asked: nothing more is due for renewal that another chunk could claim.
          if (chunk.claimed < size) exhausted = true;
        } catch (error) {
          // Nothing of the chunk was written: its accounts are still due for the complete path.
          this.options.logger.error({ err: error }, 'set-based renewal failed; the accounts are left to the complete path');
          exhausted = true;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, chunks.length) }, worker));
    return result;
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
