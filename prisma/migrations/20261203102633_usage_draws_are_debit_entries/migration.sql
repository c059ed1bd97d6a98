-- An event's draws are its DEBIT ledger entries (grant, credits, in consumption order by id), which
-- every debit path already wrote beside a usage_draws row repeating them: one row, two index
-- entries and two foreign-key checks less per draw. The draws field, refunds (newest draw first) and
-- the ledger verification read the DEBIT entries, through the index on usage_event_id created below.

-- Nothing is lost: every event's draws must be its DEBIT entries, the same grants and credits in the
-- same order, or the migration stops here with the first event that differs.
DO $$
DECLARE
  v_event text;
BEGIN
  SELECT coalesce(d.usage_event_id, l.usage_event_id) INTO v_event
  FROM (SELECT usage_event_id, array_agg(grant_id || ':' || credits ORDER BY position) AS draws
        FROM usage_draws GROUP BY usage_event_id) d
  FULL JOIN (SELECT usage_event_id, array_agg(grant_id || ':' || -credits ORDER BY id) AS draws
             FROM ledger_entries WHERE type = 'DEBIT' AND usage_event_id IS NOT NULL GROUP BY usage_event_id) l
    ON l.usage_event_id = d.usage_event_id
  WHERE d.draws IS DISTINCT FROM l.draws
  LIMIT 1;
  IF v_event IS NOT NULL THEN
    RAISE EXCEPTION 'usage event %: its usage_draws differ from its DEBIT ledger entries; not dropping usage_draws', v_event;
  END IF;
END
$$;

-- DropForeignKey
ALTER TABLE "usage_draws" DROP CONSTRAINT "usage_draws_grant_id_fkey";

-- DropForeignKey
ALTER TABLE "usage_draws" DROP CONSTRAINT "usage_draws_usage_event_id_fkey";

-- DropTable
DROP TABLE "usage_draws";

-- CreateIndex
CREATE INDEX "ledger_entries_usage_event_id_idx" ON "ledger_entries"("usage_event_id");

-- record_usage_hot and record_usage_hot_batch as in 20261203081000_one_definition_of_debits, without
-- the usage_draws insert.
CREATE OR REPLACE FUNCTION record_usage_hot(
  p_event_id text,
  p_account_id text,
  p_feature_key text,
  p_feature_fingerprint text,
  p_seat_id text,
  p_quantity integer,
  p_cost bigint,
  p_tags text[],
  p_idempotency_key text,
  p_request_hash text,
  p_occurred_at timestamp(3),
  p_metadata jsonb,
  p_clock_now timestamp(3),
  p_default_percents integer[]
) RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_account accounts%ROWTYPE;
  v_now timestamp(3);
  v_needs_complete boolean;
  v_replay boolean;
  v_credit_type text;
  v_requires_positive boolean;
  v_in_plan boolean;
  v_seat_found boolean;
  v_shared_allowed boolean;
  v_spendable bigint;
  v_available bigint;
  v_draw_ids text[];
  v_draw_credits bigint[];
  v_expiring bigint;
  v_next_expiry timestamp(3);
  v_allocation bigint;
  v_used bigint;
  v_overage bigint;
  v_reserved bigint;
  v_percents integer[];
  v_low bigint;
  v_before_pct numeric;
  v_after_pct numeric;
BEGIN
  SELECT * INTO v_account FROM accounts WHERE id = p_account_id FOR UPDATE;
  IF NOT FOUND THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'account'); END IF;

  SELECT coalesce(tc.frozen_time, p_clock_now),
         EXISTS (SELECT 1 FROM spend_limits WHERE account_id = p_account_id)
           OR EXISTS (SELECT 1 FROM auto_top_up_configs WHERE account_id = p_account_id AND enabled),
         EXISTS (SELECT 1 FROM usage_events WHERE account_id = p_account_id AND idempotency_key = p_idempotency_key)
           OR EXISTS (SELECT 1 FROM refused_requests
                      WHERE account_id = p_account_id AND kind = 'usage' AND idempotency_key = p_idempotency_key),
         f.credit_type, f.requires_positive_balance, p_feature_key = ANY (coalesce(p.feature_keys, '{}')),
         s.id IS NOT NULL, coalesce(s.can_use_shared_pool, true)
  INTO v_now, v_needs_complete, v_replay, v_credit_type, v_requires_positive, v_in_plan, v_seat_found, v_shared_allowed
  FROM plans p
  LEFT JOIN test_clocks tc ON tc.id = v_account.test_clock_id
  LEFT JOIN features f ON f.key = p_feature_key AND md5(f::text) = p_feature_fingerprint
  LEFT JOIN seats s ON s.id = p_seat_id AND s.account_id = p_account_id AND s.removed_at IS NULL
  WHERE p.id = v_account.plan_id;

  IF v_account.current_period_end <= v_now THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'period'); END IF;
  IF v_needs_complete THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'limits'); END IF;
  IF v_replay THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'replay'); END IF;
  IF v_credit_type IS NULL THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'feature'); END IF;
  IF NOT v_in_plan THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'plan'); END IF;
  IF p_seat_id IS NOT NULL AND NOT v_seat_found THEN RETURN jsonb_build_object('path', 'complete', 'reason', 'seat'); END IF;

  -- The pool's live grants (for the balance it answers), and the spender's in consumption order with
  -- what this debit draws from each (spendable_draws).
  WITH pool AS (
    SELECT g.id, g.remaining, g.expires_at FROM live_grants(p_account_id, v_credit_type, v_now) g
  ),
  spend AS (
    SELECT * FROM spendable_draws(p_account_id, v_credit_type, v_now, p_seat_id, v_shared_allowed, p_feature_key, p_cost)
  ),
  after AS (
    SELECT pool.expires_at, pool.remaining - coalesce(spend.credits, 0) AS remaining
    FROM pool LEFT JOIN spend ON spend.grant_id = pool.id
  )
  SELECT (SELECT coalesce(sum(remaining), 0) FROM spend),
         (SELECT coalesce(sum(remaining), 0) FROM pool),
         (SELECT coalesce(array_agg(grant_id ORDER BY position) FILTER (WHERE credits > 0), '{}') FROM spend),
         (SELECT coalesce(array_agg(credits ORDER BY position) FILTER (WHERE credits > 0), '{}') FROM spend),
         (SELECT coalesce(sum(remaining) FILTER (WHERE expires_at <= v_account.current_period_end), 0) FROM after WHERE remaining > 0),
         (SELECT min(expires_at) FROM after WHERE remaining > 0),
         (SELECT coalesce(sum(amount), 0) FROM grants
           WHERE account_id = p_account_id AND credit_type = v_credit_type AND source IN ('PLAN', 'SEAT')
             AND period_start = v_account.current_period_start),
         coalesce(t.used, 0), coalesce(t.overage, 0),
         coalesce(st.percents, p_default_percents), st.low_balance,
         (SELECT coalesce(sum(held), 0) FROM reservations
           WHERE account_id = p_account_id AND status = 'HELD' AND credit_type = v_credit_type)
  INTO v_spendable, v_available, v_draw_ids, v_draw_credits, v_expiring, v_next_expiry, v_allocation,
       v_used, v_overage, v_percents, v_low, v_reserved
  FROM (SELECT 1) AS one
  LEFT JOIN period_usage_totals t
    ON t.account_id = p_account_id AND t.credit_type = v_credit_type AND t.period_start = v_account.current_period_start
  LEFT JOIN alert_settings st ON st.account_id = p_account_id AND st.credit_type = v_credit_type;

  IF debit_coverage(v_spendable, 0, p_cost, v_requires_positive) <> 'covered' THEN
    RETURN jsonb_build_object('path', 'complete', 'reason', 'credits');
  END IF;

  -- Alert levels (alerts.ts, evaluateBalanceAlerts): the low-balance level, exhaustion, and the usage
  -- percentages. Those are compared unrounded with a margin wider than the API's rounding to two
  -- decimals, so that a crossing is never missed; a near miss merely takes the complete path.
  IF v_low IS NOT NULL AND v_available >= v_low AND v_available - p_cost < v_low THEN
    RETURN jsonb_build_object('path', 'complete', 'reason', 'alert');
  END IF;
  IF v_available > 0 AND v_available - p_cost <= 0 THEN
    RETURN jsonb_build_object('path', 'complete', 'reason', 'alert');
  END IF;
  IF v_allocation > 0 THEN
    v_before_pct := v_used * 100.0 / v_allocation;
    v_after_pct := (v_used + p_cost) * 100.0 / v_allocation;
    IF EXISTS (SELECT 1 FROM unnest(v_percents) AS t(percent) WHERE v_before_pct < t.percent + 0.01 AND v_after_pct >= t.percent - 0.01) THEN
      RETURN jsonb_build_object('path', 'complete', 'reason', 'alert');
    END IF;
  END IF;

  WITH drawn AS (
    SELECT grant_id, credits, position::int AS position
    FROM unnest(v_draw_ids, v_draw_credits) WITH ORDINALITY AS d(grant_id, credits, position)
  ),
  event AS (
    INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, overage_credits, tags,
                              idempotency_key, request_hash, occurred_at, period_start, metadata, created_at)
    VALUES (p_event_id, p_account_id, p_seat_id, p_feature_key, v_credit_type, p_quantity, p_cost, 0, p_tags,
            p_idempotency_key, p_request_hash, coalesce(p_occurred_at, v_now), v_account.current_period_start, p_metadata, v_now)
  ),
  debited AS (
    UPDATE grants SET remaining = grants.remaining - drawn.credits FROM drawn WHERE grants.id = drawn.grant_id
  ),
  totals AS (
    INSERT INTO period_usage_totals (account_id, credit_type, period_start, used, overage)
    VALUES (p_account_id, v_credit_type, v_account.current_period_start, p_cost, 0)
    ON CONFLICT (account_id, credit_type, period_start) DO UPDATE SET used = period_usage_totals.used + EXCLUDED.used
  )
  INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, type, credits, created_at)
  SELECT p_account_id, grant_id, p_event_id, 'DEBIT', -credits, v_now FROM drawn ORDER BY position;

  RETURN jsonb_build_object(
    'path', 'hot',
    'creditType', v_credit_type,
    'now', (extract(epoch FROM v_now) * 1000)::bigint,
    'occurredAt', (extract(epoch FROM coalesce(p_occurred_at, v_now)) * 1000)::bigint,
    'available', v_available - p_cost,
    'reserved', v_reserved,
    'periodAllocation', v_allocation,
    'periodUsed', v_used + p_cost,
    'overageUsed', v_overage,
    'expiringAtPeriodEnd', v_expiring,
    'nextExpiry', (extract(epoch FROM v_next_expiry) * 1000)::bigint
  );
END
$$;

CREATE OR REPLACE FUNCTION record_usage_hot_batch(p_events jsonb, p_clock_now timestamp(3), p_default_percents integer[])
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET enable_nestloop = off AS $$
DECLARE
  v_result jsonb;
BEGIN
  PERFORM 1 FROM accounts
  WHERE id = ANY (ARRAY(SELECT DISTINCT e->>'accountId' FROM jsonb_array_elements(p_events) AS e))
  ORDER BY id FOR UPDATE;

  WITH ev AS (
    SELECT * FROM jsonb_to_recordset(p_events) AS e(
      i int, "eventId" text, "accountId" text, "featureKey" text, fingerprint text, "seatId" text, quantity int,
      cost bigint, tags jsonb, "idempotencyKey" text, "requestHash" text, "occurredAt" timestamp(3), metadata jsonb)
  ),
  acct AS (
    SELECT a.id, a.plan_id, a.current_period_start, a.current_period_end, coalesce(tc.frozen_time, p_clock_now) AS now
    FROM accounts a LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
    WHERE a.id = ANY (ARRAY(SELECT DISTINCT "accountId" FROM ev))
  ),
  evx AS (
    SELECT ev.*, f.credit_type, coalesce(f.requires_positive_balance, false) AS requires_positive,
           f.key IS NOT NULL AND ev."featureKey" = ANY (coalesce(p.feature_keys, '{}')) AND ev."seatId" IS NULL AS plain,
           sum(ev.cost) OVER (PARTITION BY ev."accountId" ORDER BY ev.i) AS cum_end
    FROM ev
    JOIN acct ON acct.id = ev."accountId"
    JOIN plans p ON p.id = acct.plan_id
    LEFT JOIN features f ON f.key = ev."featureKey" AND md5(f::text) = ev.fingerprint
  ),
  replayed AS (
    SELECT DISTINCT ev."accountId" AS account_id FROM ev
    WHERE (SELECT 1 FROM usage_events u WHERE u.account_id = ev."accountId" AND u.idempotency_key = ev."idempotencyKey") IS NOT NULL
       OR (SELECT 1 FROM refused_requests r
           WHERE r.account_id = ev."accountId" AND r.kind = 'usage' AND r.idempotency_key = ev."idempotencyKey") IS NOT NULL
  ),
  candidate AS (
    SELECT acct.*, s.credit_type, s.total, s.feature_key
    FROM (
      SELECT "accountId" AS account_id, min(credit_type) AS credit_type, sum(cost) AS total,
             CASE WHEN count(DISTINCT "featureKey") = 1 THEN min("featureKey") END AS feature_key
      FROM evx GROUP BY "accountId"
      HAVING bool_and(plain) AND count(DISTINCT credit_type) = 1 AND count(*) = count(DISTINCT "idempotencyKey")
    ) s
    JOIN acct ON acct.id = s.account_id
    WHERE acct.current_period_end > acct.now
      AND acct.id NOT IN (SELECT account_id FROM replayed)
      AND (SELECT 1 FROM spend_limits l WHERE l.account_id = acct.id LIMIT 1) IS NULL
      AND (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = acct.id AND c.enabled LIMIT 1) IS NULL
  ),
  -- The candidates' live grants (for the balances answered) and, for the spendable ones, their place
  -- in consumption order (spendable_grants; a batch takes no seat's usage, so the shared pool), each
  -- read per account through its index (a lateral join: OFFSET 0 keeps live_grants from being
  -- flattened into a hash join over every grant, which enable_nestloop = off would choose). When
  -- an account's events are of several features, a grant scoped to some of them would make their
  -- spendable sets differ: such an account is charged one event at a time (scoped, below).
  live AS (
    SELECT c.id AS account_id, g.id, g.remaining, g.expires_at, g.feature_keys
    FROM candidate c CROSS JOIN LATERAL (SELECT * FROM live_grants(c.id, c.credit_type, c.now) OFFSET 0) g
  ),
  spendable AS (
    SELECT c.id AS account_id, s.grant_id, s.ahead
    FROM candidate c CROSS JOIN LATERAL spendable_grants(c.id, c.credit_type, c.now, NULL, true, c.feature_key) s
  ),
  scoped AS (
    SELECT DISTINCT l.account_id FROM live l JOIN candidate c ON c.id = l.account_id
    WHERE c.feature_key IS NULL AND coalesce(cardinality(l.feature_keys), 0) > 0
  ),
  pool AS (
    SELECT l.account_id, l.id, l.remaining, l.expires_at, s.grant_id IS NOT NULL AS spendable, s.ahead
    FROM live l LEFT JOIN spendable s ON s.grant_id = l.id
  ),
  pool_sums AS (
    SELECT account_id, sum(remaining) AS available, coalesce(sum(remaining) FILTER (WHERE spendable), 0) AS spendable
    FROM pool GROUP BY account_id
  ),
  figures AS (
    SELECT c.*, coalesce(ps.available, 0) AS available, coalesce(ps.spendable, 0) AS spendable,
           (SELECT coalesce(sum(amount), 0) FROM grants g
             WHERE g.account_id = c.id AND g.credit_type = c.credit_type AND g.source IN ('PLAN', 'SEAT')
               AND g.period_start = c.current_period_start) AS allocation,
           coalesce((SELECT t.used FROM period_usage_totals t
             WHERE t.account_id = c.id AND t.credit_type = c.credit_type AND t.period_start = c.current_period_start), 0) AS used,
           coalesce((SELECT t.overage FROM period_usage_totals t
             WHERE t.account_id = c.id AND t.credit_type = c.credit_type AND t.period_start = c.current_period_start), 0) AS overage,
           coalesce((SELECT st.percents FROM alert_settings st WHERE st.account_id = c.id AND st.credit_type = c.credit_type),
                    p_default_percents) AS percents,
           (SELECT st.low_balance FROM alert_settings st WHERE st.account_id = c.id AND st.credit_type = c.credit_type) AS low_balance,
           (SELECT coalesce(sum(held), 0) FROM reservations r
             WHERE r.account_id = c.id AND r.status = 'HELD' AND r.credit_type = c.credit_type) AS reserved
    FROM candidate c
    LEFT JOIN pool_sums ps ON ps.account_id = c.id
  ),
  -- Each event paid by the grants after the ones before it (record_usage_hot's debit_coverage).
  covered AS (
    SELECT e."accountId" AS account_id FROM evx e JOIN figures f ON f.id = e."accountId"
    GROUP BY e."accountId" HAVING bool_and(debit_coverage(f.spendable, e.cum_end - e.cost, e.cost, e.requires_positive) = 'covered')
  ),
  -- The conditions of record_usage_hot, from before the first event to after the last.
  eligible AS (
    SELECT f.* FROM figures f
    WHERE f.id NOT IN (SELECT account_id FROM scoped) AND f.id IN (SELECT account_id FROM covered)
      AND NOT (f.low_balance IS NOT NULL AND f.available >= f.low_balance AND f.available - f.total < f.low_balance)
      AND NOT (f.available > 0 AND f.available - f.total <= 0)
      AND NOT (f.allocation > 0 AND EXISTS (
        SELECT 1 FROM unnest(f.percents) AS t(percent)
        WHERE f.used * 100.0 / f.allocation < t.percent + 0.01 AND (f.used + f.total) * 100.0 / f.allocation >= t.percent - 0.01))
  ),
  charged AS (
    SELECT e.*, el.now, el.current_period_start, el.current_period_end FROM evx e JOIN eligible el ON el.id = e."accountId"
  ),
  drawn AS (
    SELECT c.i, c."eventId" AS event_id, c."accountId" AS account_id, p.id AS grant_id,
           drawn_credits(p.ahead, p.remaining, c.cum_end - c.cost, c.cum_end) AS credits,
           row_number() OVER (PARTITION BY c."eventId" ORDER BY p.ahead) AS position, c.now
    FROM charged c JOIN pool p ON p.account_id = c."accountId" AND p.spendable
    WHERE drawn_credits(p.ahead, p.remaining, c.cum_end - c.cost, c.cum_end) > 0
  ),
  inserted_events AS (
    INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, overage_credits, tags,
                              idempotency_key, request_hash, occurred_at, period_start, metadata, created_at)
    SELECT "eventId", "accountId", NULL, "featureKey", credit_type, quantity, cost, 0,
           ARRAY(SELECT jsonb_array_elements_text(tags)), "idempotencyKey", "requestHash", coalesce("occurredAt", now),
           current_period_start, metadata, now
    FROM charged
  ),
  debited AS (
    UPDATE grants SET remaining = grants.remaining - d.credits
    FROM (SELECT grant_id, sum(credits) AS credits FROM drawn GROUP BY grant_id) d
    WHERE grants.id = d.grant_id AND grants.id = ANY (ARRAY(SELECT grant_id FROM drawn))
  ),
  totals AS (
    INSERT INTO period_usage_totals (account_id, credit_type, period_start, used, overage)
    SELECT id, credit_type, current_period_start, total, 0 FROM eligible
    ON CONFLICT (account_id, credit_type, period_start) DO UPDATE SET used = period_usage_totals.used + EXCLUDED.used
  ),
  entries AS (
    INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, type, credits, created_at)
    SELECT account_id, grant_id, event_id, 'DEBIT', -credits, now FROM drawn ORDER BY i, position
  ),
  -- Each event's balance as charging them one by one would have left it.
  after_each AS (
    SELECT c.i,
           coalesce(sum(p.remaining - CASE WHEN p.spendable THEN drawn_credits(p.ahead, p.remaining, 0, c.cum_end) ELSE 0 END)
             FILTER (WHERE p.expires_at <= c.current_period_end), 0) AS expiring_raw,
           min(p.expires_at) FILTER (WHERE p.remaining - CASE WHEN p.spendable THEN drawn_credits(p.ahead, p.remaining, 0, c.cum_end) ELSE 0 END > 0) AS next_expiry
    FROM charged c JOIN pool p ON p.account_id = c."accountId"
    GROUP BY c.i
  )
  SELECT jsonb_build_object(
    'charged', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
        'i', c.i,
        'creditType', c.credit_type,
        'now', (extract(epoch FROM c.now) * 1000)::bigint,
        'occurredAt', (extract(epoch FROM coalesce(c."occurredAt", c.now)) * 1000)::bigint,
        'available', f.available - c.cum_end,
        'reserved', f.reserved,
        'periodAllocation', f.allocation,
        'periodUsed', f.used + c.cum_end,
        'overageUsed', f.overage,
        'expiringAtPeriodEnd', coalesce(a.expiring_raw, 0),
        'nextExpiry', (extract(epoch FROM a.next_expiry) * 1000)::bigint))
      FROM charged c JOIN eligible f ON f.id = c."accountId" LEFT JOIN after_each a ON a.i = c.i), '[]'::jsonb),
    'fallback', coalesce((
      SELECT jsonb_agg(DISTINCT ev."accountId") FROM ev WHERE ev."accountId" NOT IN (SELECT id FROM eligible)), '[]'::jsonb))
  INTO v_result;
  RETURN v_result;
END
$$;

-- CREATE OR REPLACE resets the function's settings (see 20261203081000_one_definition_of_debits).
ALTER FUNCTION record_usage_hot_batch(jsonb, timestamp(3), integer[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION record_usage_hot_batch(jsonb, timestamp(3), integer[]) SET jit = off;
