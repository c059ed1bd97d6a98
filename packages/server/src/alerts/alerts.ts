import type { Tx } from '../db/transaction.ts';
import { newId } from '../domain/ids.ts';

export type AlertKind =
  | 'USAGE_THRESHOLD'
  | 'LOW_BALANCE'
  | 'EXPIRING_SOON'
  | 'POOL_EXHAUSTED'
  | 'AUTO_TOP_UP_SUCCEEDED'
  | 'AUTO_TOP_UP_FAILED'
  | 'SPEND_LIMIT_REACHED';

export interface NewAlert {
  accountId: string;
  kind: AlertKind;
  creditType: string | null;
  threshold: number | null;
  message: string;
  periodStart: Date | null;
  /** Identifies the alert: raising the same one again (concurrently or later) does nothing. */
  dedupeKey: string;
  at: Date;
}

/** Stores an alert once per dedupe key; returns its id when this call raised it, null when it existed. */
export async function raiseAlert(tx: Tx, alert: NewAlert): Promise<string | null> {
  const id = newId();
  const inserted = await tx.$executeRaw`
    INSERT INTO alerts (id, account_id, kind, credit_type, threshold, message, period_start, dedupe_key, created_at)
    VALUES (${id}, ${alert.accountId}, ${alert.kind}::"AlertKind", ${alert.creditType}, ${alert.threshold}, ${alert.message},
            ${alert.periodStart}, ${alert.dedupeKey}, ${alert.at})
    ON CONFLICT (dedupe_key) DO NOTHING`;
  return inserted > 0 ? id : null;
}
