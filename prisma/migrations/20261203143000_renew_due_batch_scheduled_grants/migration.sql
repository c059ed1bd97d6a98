-- renew_due_batch leaves to the complete path an account with a scheduled grant occurrence due by
-- p_now. The complete path (processDueWork) issues due occurrences first, each dated at its own
-- instant, then renews: an occurrence due before the period end is in the ledger before the
-- renewal's entries, and a PLAN or ROLLOVER schedule's grant counts in the carry as it would have
-- had the runner not lagged. The set-based renewal, which reads no schedules, renewed such an account
-- first and the runner issued the occurrence after, out of time order.
--
-- The rest of the function is unchanged from 20261122090000_renew_due_batch (whose header says
-- which accounts are plain).
CREATE OR REPLACE FUNCTION renew_due_batch(p_now timestamp(3), p_limit integer, p_account_ids text[] DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_claimed text[];
  v_ids text[];
  v_ends_at timestamp(3)[];
  v_starts timestamp(3)[];
  v_new_ends timestamp(3)[];
  v_carry_accounts text[];
  v_carry_types text[];
  v_carry_credits bigint[];
  v_changed jsonb;
BEGIN
  SELECT coalesce(array_agg(claimed.id), '{}') INTO v_claimed
  FROM (
    SELECT a.id FROM accounts a
    WHERE a.test_clock_id IS NULL AND a.current_period_end <= p_now
      AND (p_account_ids IS NULL OR a.id = ANY (p_account_ids))
    ORDER BY a.current_period_end
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
  ) claimed;
  IF cardinality(v_claimed) = 0 THEN
    RETURN jsonb_build_object('renewed', '{}'::jsonb, 'fallback', '[]'::jsonb);
  END IF;

  WITH acct AS (
    SELECT a.id, a.current_period_end AS ends_at,
           a.period_anchor + make_interval(months => (a.period_index + 1) * CASE p."interval" WHEN 'YEAR' THEN 12 ELSE 1 END) AS new_start,
           a.period_anchor + make_interval(months => (a.period_index + 2) * CASE p."interval" WHEN 'YEAR' THEN 12 ELSE 1 END) AS new_end
    FROM accounts a JOIN plans p ON p.id = a.plan_id
    WHERE a.id = ANY (v_claimed) AND a.test_clock_id IS NULL AND a.current_period_end <= p_now AND a.pending_plan_id IS NULL
  )
  SELECT coalesce(array_agg(acct.id ORDER BY acct.id), '{}'), array_agg(acct.ends_at ORDER BY acct.id),
         array_agg(acct.new_start ORDER BY acct.id), array_agg(acct.new_end ORDER BY acct.id)
  INTO v_ids, v_ends_at, v_starts, v_new_ends
  FROM acct
  WHERE acct.new_end > p_now
    AND acct.id NOT IN (SELECT r.account_id FROM reservations r WHERE r.status = 'HELD' AND r.expires_at <= p_now)
    AND NOT EXISTS (SELECT 1 FROM seats s WHERE s.account_id = acct.id AND s.removed_at IS NULL)
    AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.account_id = acct.id AND g.expired_at IS NULL
                      AND g.expires_at > acct.ends_at AND g.expires_at <= p_now)
    AND NOT EXISTS (SELECT 1 FROM alert_settings st WHERE st.account_id = acct.id
                      AND (st.low_balance IS NOT NULL OR st.expiring_within_days IS NOT NULL))
    AND NOT EXISTS (SELECT 1 FROM period_usage_totals t WHERE t.account_id = acct.id AND t.period_start = acct.new_start AND t.used <> 0)
    AND NOT EXISTS (SELECT 1 FROM period_renewals pr WHERE pr.account_id = acct.id AND pr.period_start = acct.new_start)
    AND NOT EXISTS (SELECT 1 FROM scheduled_grants sg WHERE sg.account_id = acct.id AND sg.next_at <= p_now);

  IF cardinality(v_ids) > 0 THEN
    -- Before anything expires: the carries, and which pools' balances change (the expiring ones
    -- with credits left, and the plan's shared allocations).
    WITH due AS (
      SELECT g.account_id, g.credit_type, g.source, g.seat_id, g.remaining, g.expires_at, r.ends_at
      FROM grants g JOIN unnest(v_ids, v_ends_at) AS r(id, ends_at) ON r.id = g.account_id
      WHERE g.account_id = ANY (v_ids) AND g.expired_at IS NULL AND g.expires_at <= r.ends_at
    ),
    unused AS (
      SELECT due.account_id, due.credit_type, sum(due.remaining) AS unused FROM due
      WHERE due.seat_id IS NULL AND due.source IN ('PLAN', 'ROLLOVER') AND due.expires_at = due.ends_at
      GROUP BY due.account_id, due.credit_type
    ),
    carried AS (
      SELECT u.account_id, u.credit_type,
             CASE pa.rollover
               WHEN 'PERCENT' THEN floor(u.unused::float8 * coalesce(pa.rollover_value, 0) / 100)::bigint
               WHEN 'CAP_MULTIPLE' THEN least(u.unused::float8, greatest(0, floor((coalesce(pa.rollover_value, 1) - 1) * pa.amount::float8)))::bigint
               ELSE 0
             END AS credits
      FROM unused u
      JOIN accounts a ON a.id = u.account_id
      JOIN plan_allocations pa ON pa.plan_id = a.plan_id AND pa.credit_type = u.credit_type AND NOT pa.per_seat
      WHERE u.unused > 0
    ),
    changed AS (
      SELECT due.account_id, due.credit_type FROM due WHERE due.remaining > 0
      UNION
      SELECT a.id, pa.credit_type FROM accounts a JOIN plan_allocations pa ON pa.plan_id = a.plan_id
      WHERE a.id = ANY (v_ids) AND NOT pa.per_seat AND pa.amount > 0
    )
    SELECT coalesce((SELECT array_agg(c.account_id ORDER BY c.account_id, c.credit_type) FROM carried c WHERE c.credits > 0), '{}'),
           coalesce((SELECT array_agg(c.credit_type ORDER BY c.account_id, c.credit_type) FROM carried c WHERE c.credits > 0), '{}'),
           coalesce((SELECT array_agg(c.credits ORDER BY c.account_id, c.credit_type) FROM carried c WHERE c.credits > 0), '{}'),
           (SELECT jsonb_object_agg(ids.id, coalesce(ch.types, '[]'::jsonb))
            FROM unnest(v_ids) AS ids(id)
            LEFT JOIN (SELECT changed.account_id, jsonb_agg(changed.credit_type ORDER BY changed.credit_type) AS types
                       FROM changed GROUP BY changed.account_id) ch ON ch.account_id = ids.id)
    INTO v_carry_accounts, v_carry_types, v_carry_credits, v_changed;

    WITH due AS (
      SELECT g.id, g.account_id, g.remaining, g.expires_at
      FROM grants g JOIN unnest(v_ids, v_ends_at) AS r(id, ends_at) ON r.id = g.account_id
      WHERE g.account_id = ANY (v_ids) AND g.expired_at IS NULL AND g.expires_at <= r.ends_at
    ),
    expired AS (
      UPDATE grants SET remaining = 0, expired_at = due.expires_at FROM due WHERE grants.id = due.id
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
    SELECT due.account_id, due.id, 'EXPIRE', -due.remaining, due.expires_at FROM due WHERE due.remaining > 0
    ORDER BY due.account_id, due.expires_at, due.id;

    WITH r AS (
      SELECT * FROM unnest(v_ids, v_ends_at, v_starts, v_new_ends) AS r(id, ends_at, new_start, new_end)
    ),
    moved AS (
      UPDATE accounts a SET period_index = a.period_index + 1, current_period_start = r.new_start, current_period_end = r.new_end
      FROM r WHERE a.id = r.id
    ),
    renewals AS (
      INSERT INTO period_renewals (id, account_id, period_start, period_end, plan_id, created_at)
      SELECT gen_random_uuid()::text, r.id, r.new_start, r.new_end, a.plan_id, r.ends_at FROM r JOIN accounts a ON a.id = r.id
    ),
    new_grants AS (
      SELECT gen_random_uuid()::text AS id, n.account_id, n.credit_type, n.source, n.amount, n.priority, n.phase, n.position,
             r.ends_at, r.new_start, r.new_end
      FROM (
        SELECT c.account_id, c.credit_type, 'ROLLOVER'::"GrantSource" AS source, c.credits AS amount, 30 AS priority, 0 AS phase, 0 AS position
        FROM unnest(v_carry_accounts, v_carry_types, v_carry_credits) AS c(account_id, credit_type, credits)
        UNION ALL
        SELECT a.id, pa.credit_type, 'PLAN'::"GrantSource", pa.amount, 20, 1, pa.position
        FROM accounts a JOIN plan_allocations pa ON pa.plan_id = a.plan_id
        WHERE a.id = ANY (v_ids) AND NOT pa.per_seat AND pa.amount > 0
      ) n JOIN r ON r.id = n.account_id
    ),
    inserted AS (
      INSERT INTO grants (id, account_id, seat_id, credit_type, source, amount, remaining, priority, effective_at, expires_at,
                          period_start, created_at)
      SELECT id, account_id, NULL, credit_type, source, amount, amount, priority, ends_at, new_end, new_start, ends_at FROM new_grants
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
    SELECT account_id, id, 'GRANT', amount, ends_at FROM new_grants
    ORDER BY account_id, phase, position, credit_type;
  END IF;

  RETURN jsonb_build_object(
    'renewed', coalesce(v_changed, '{}'::jsonb),
    'fallback', to_jsonb(ARRAY(SELECT c.id FROM (SELECT unnest(v_claimed) EXCEPT SELECT unnest(v_ids)) AS c(id) ORDER BY c.id)));
END
$$;
