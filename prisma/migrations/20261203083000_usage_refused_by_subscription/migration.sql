-- New usage of an account whose subscription refuses it (accounts.usage_refused_from reached on the
-- account's clock: a renewal unpaid past its grace period, or a subscription ended without a free
-- plan) is refused by the complete path with a typed error, under the account lock. The one-statement
-- paths (record_usage_hot, record_usage_hot_batch) do not read that column: this trigger refuses the
-- statement that would record such a usage, so nothing of it is written, and the paths hand the
-- usage to the complete path (as with period_usage_totals_within_credits). It runs once per
-- statement over the rows inserted (a transition table), a primary-key join per row. A settled hold
-- (idempotency key `reservation:<id>`) was taken before the refusal and may still be settled.
CREATE FUNCTION refuse_usage_of_refused_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM inserted_usage i JOIN accounts a ON a.id = i.account_id
    WHERE a.usage_refused_from IS NOT NULL AND a.usage_refused_from <= i.created_at
      AND i.idempotency_key NOT LIKE 'reservation:%'
  ) THEN
    RAISE EXCEPTION 'usage_refused_by_subscription: the account''s subscription refuses new usage'
      USING ERRCODE = 'check_violation', CONSTRAINT = 'usage_refused_by_subscription';
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER usage_refused_by_subscription
  AFTER INSERT ON usage_events
  REFERENCING NEW TABLE AS inserted_usage
  FOR EACH STATEMENT EXECUTE FUNCTION refuse_usage_of_refused_accounts();
