import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { toCredits } from '../domain/credits.ts';
import type { FeatureRecord } from '../catalog/features.ts';
import type { OveragePolicy } from '../catalog/plans.ts';
import type { AlertSettingsRecord } from '../alerts/alerts.ts';
import { DEFAULT_ALERT_PERCENTS } from '../alerts/alerts.ts';
import type { SpendableGrant } from './consumptionOrder.ts';
import type { PriceTier, PricingModel } from './pricing.ts';

/**
 * Everything a debit needs, read in one statement right after taking the account's row lock: the
 * account and its plan, the feature, the seat, a previous event under the same key, the pool's
 * unexpired grants (all seats'), its holds, allocation and period totals, and its alert settings.
 * The hot path then decides in memory and writes once.
 */
export interface DebitSnapshot {
  accountId: string;
  planId: string;
  currentPeriodStart: Date;
  currentPeriodEnd: Date;
  now: Date;
  /** Work the hot path leaves to the complete path: a period to renew, spend limits, auto top-up. */
  needsCompletePath: boolean;
  featureKeys: string[];
  overagePolicy: OveragePolicy;
  maxOverageCredits: number | null;
  previous: { id: string; requestHash: string } | null;
  feature: FeatureRecord | null;
  seat: { id: string; canUseSharedPool: boolean } | null;
  grants: SpendableGrant[];
  reserved: number;
  periodAllocation: number;
  periodUsed: number;
  overageUsed: number;
  alertSettings: AlertSettingsRecord;
}

interface SnapshotRow {
  id: string;
  plan_id: string;
  current_period_start: Date;
  current_period_end: Date;
  now: Date;
  needs_complete_path: boolean;
  feature_keys: string[];
  overage_policy: OveragePolicy;
  max_overage_credits: bigint | null;
  previous: { id: string; hash: string } | null;
  feature: {
    key: string;
    name: string;
    credit_type: string;
    pricing: PricingModel;
    unit_credits: number | null;
    tiers: PriceTier[] | null;
    requires_positive_balance: boolean;
    max_credits_per_event: number | null;
  } | null;
  seat: { id: string; can_use_shared_pool: boolean } | null;
  grants: Array<{ id: string; seat_id: string | null; remaining: number; expires_at: number | null; priority: number; created_at: number }>;
  reserved: bigint;
  allocation: bigint;
  used: bigint;
  overage: bigint;
  alert_settings: { percents: number[]; low_balance: number | null; expiring_within_days: number | null } | null;
}

function parseJson<T>(value: T | string): T {
  return typeof value === 'string' ? (JSON.parse(value) as T) : value;
}

export async function loadDebitSnapshot(
  tx: Tx,
  clock: Clock,
  input: { accountId: string; featureKey: string; seatId: string | null; idempotencyKey: string },
): Promise<DebitSnapshot | null> {
  // The lock comes first, in a statement of its own: under READ COMMITTED each statement reads as of
  // its own start, so only a read that begins after the lock is granted sees the debits that held it.
  const locked = await tx.$queryRaw<unknown[]>`SELECT id FROM accounts WHERE id = ${input.accountId} FOR UPDATE`;
  if (locked.length === 0) return null;
  const rows = await tx.$queryRaw<SnapshotRow[]>`
    WITH account AS (
      SELECT a.*, coalesce(tc.frozen_time, ${clock.now()}::timestamp) AS now
      FROM accounts a LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
      WHERE a.id = ${input.accountId}
    ),
    feature AS (SELECT * FROM features WHERE key = ${input.featureKey})
    SELECT a.id, a.plan_id, a.current_period_start, a.current_period_end, a.now,
      (a.current_period_end <= a.now
        OR EXISTS (SELECT 1 FROM spend_limits l WHERE l.account_id = a.id)
        OR EXISTS (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = a.id AND c.enabled)) AS needs_complete_path,
      p.feature_keys, p.overage_policy::text AS overage_policy, p.max_overage_credits,
      (SELECT json_build_object('id', e.id, 'hash', e.request_hash) FROM usage_events e
        WHERE e.account_id = a.id AND e.idempotency_key = ${input.idempotencyKey}) AS previous,
      (SELECT json_build_object('key', f.key, 'name', f.name, 'credit_type', f.credit_type, 'pricing', f.pricing,
              'unit_credits', f.unit_credits, 'tiers', f.tiers, 'requires_positive_balance', f.requires_positive_balance,
              'max_credits_per_event', f.max_credits_per_event) FROM feature f) AS feature,
      (SELECT json_build_object('id', s.id, 'can_use_shared_pool', s.can_use_shared_pool) FROM seats s
        WHERE s.id = ${input.seatId} AND s.account_id = a.id AND s.removed_at IS NULL) AS seat,
      (SELECT coalesce(json_agg(json_build_object('id', g.id, 'seat_id', g.seat_id, 'remaining', g.remaining,
                'expires_at', (extract(epoch FROM g.expires_at) * 1000)::bigint, 'priority', g.priority,
                'created_at', (extract(epoch FROM g.created_at) * 1000)::bigint)), '[]'::json)
        FROM grants g, feature f
        WHERE g.account_id = a.id AND g.credit_type = f.credit_type AND g.remaining > 0
          AND g.effective_at <= a.now AND (g.expires_at IS NULL OR g.expires_at > a.now)) AS grants,
      (SELECT coalesce(sum(r.held), 0)::bigint FROM reservations r, feature f
        WHERE r.account_id = a.id AND r.status = 'HELD' AND r.credit_type = f.credit_type) AS reserved,
      (SELECT coalesce(sum(g.amount), 0)::bigint FROM grants g, feature f
        WHERE g.account_id = a.id AND g.credit_type = f.credit_type AND g.source IN ('PLAN', 'SEAT')
          AND g.period_start = a.current_period_start) AS allocation,
      coalesce((SELECT t.used FROM period_usage_totals t, feature f
        WHERE t.account_id = a.id AND t.credit_type = f.credit_type AND t.period_start = a.current_period_start), 0)::bigint AS used,
      coalesce((SELECT t.overage FROM period_usage_totals t, feature f
        WHERE t.account_id = a.id AND t.credit_type = f.credit_type AND t.period_start = a.current_period_start), 0)::bigint AS overage,
      (SELECT json_build_object('percents', st.percents, 'low_balance', st.low_balance, 'expiring_within_days', st.expiring_within_days)
        FROM alert_settings st, feature f WHERE st.account_id = a.id AND st.credit_type = f.credit_type) AS alert_settings
    FROM account a JOIN plans p ON p.id = a.plan_id`;
  const row = rows[0];
  if (!row) return null;
  const feature = row.feature ? parseJson(row.feature) : null;
  const seat = row.seat ? parseJson(row.seat) : null;
  const settings = row.alert_settings ? parseJson(row.alert_settings) : null;
  return {
    accountId: row.id,
    planId: row.plan_id,
    currentPeriodStart: row.current_period_start,
    currentPeriodEnd: row.current_period_end,
    now: row.now,
    needsCompletePath: row.needs_complete_path,
    featureKeys: row.feature_keys,
    overagePolicy: row.overage_policy,
    maxOverageCredits: row.max_overage_credits === null ? null : toCredits(row.max_overage_credits),
    previous: row.previous ? { id: parseJson(row.previous).id, requestHash: parseJson(row.previous).hash } : null,
    feature: feature
      ? {
          key: feature.key,
          name: feature.name,
          creditType: feature.credit_type,
          pricing: feature.pricing,
          unitCredits: feature.unit_credits,
          tiers: feature.tiers,
          requiresPositiveBalance: feature.requires_positive_balance,
          maxCreditsPerEvent: feature.max_credits_per_event,
        }
      : null,
    seat: seat ? { id: seat.id, canUseSharedPool: seat.can_use_shared_pool } : null,
    grants: parseJson(row.grants).map((grant) => ({
      id: grant.id,
      seatId: grant.seat_id,
      remaining: Number(grant.remaining),
      expiresAt: grant.expires_at === null ? null : new Date(Number(grant.expires_at)),
      priority: grant.priority,
      createdAt: new Date(Number(grant.created_at)),
    })),
    reserved: toCredits(row.reserved),
    periodAllocation: toCredits(row.allocation),
    periodUsed: toCredits(row.used),
    overageUsed: toCredits(row.overage),
    alertSettings: {
      accountId: row.id,
      creditType: feature?.credit_type ?? '',
      percents: settings ? [...settings.percents].sort((a, b) => a - b) : DEFAULT_ALERT_PERCENTS,
      lowBalance: settings?.low_balance ?? null,
      expiringWithinDays: settings?.expiring_within_days ?? null,
    },
  };
}
