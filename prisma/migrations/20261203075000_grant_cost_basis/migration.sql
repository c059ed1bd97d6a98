-- Cost basis of grants (issue 20 item 2): what one credit cost the customer, in minor units of
-- cost_currency (fractional: a credit may cost a fraction of a cent), and whether it was PAID for or
-- PROMOTIONAL. The finance reports value ledger entries of PAID grants at their grant's unit cost.

CREATE TYPE "GrantFunding" AS ENUM ('PAID', 'PROMOTIONAL');

ALTER TABLE "plan_allocations" ADD COLUMN "unit_cost" DECIMAL(40,20);

ALTER TABLE "grants" ADD COLUMN "cost_currency" TEXT,
ADD COLUMN "funding" "GrantFunding",
ADD COLUMN "unit_cost" DECIMAL(40,20);

-- The unit cost of a plan's credits: the allocation's own when the operator set one, else the plan
-- price shared evenly over every credit the plan allocates per period (a per-seat allocation counted
-- once: the plan price does not grow with seats).
CREATE FUNCTION plan_credit_unit_cost(p_plan_id text, p_credit_type text, p_per_seat boolean)
RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    (SELECT pa.unit_cost FROM plan_allocations pa WHERE pa.plan_id = p_plan_id AND pa.credit_type = p_credit_type AND pa.per_seat = p_per_seat),
    (SELECT CASE WHEN sum(pa.amount) > 0 THEN p.price_amount::numeric(40,20) / sum(pa.amount) ELSE 0 END
     FROM plans p LEFT JOIN plan_allocations pa ON pa.plan_id = p.id WHERE p.id = p_plan_id GROUP BY p.id, p.price_amount),
    0)
$$;

-- Existing grants: purchases at what was paid, plan credits at their account's plan today, the rest
-- promotional at zero.
UPDATE grants g SET unit_cost = t.amount::numeric(40,20) / t.credits, cost_currency = t.currency
FROM top_up_purchases t WHERE t.grant_id = g.id AND t.credits > 0;
UPDATE grants g SET unit_cost = plan_credit_unit_cost(a.plan_id, g.credit_type, g.source = 'SEAT'), cost_currency = p.price_currency
FROM accounts a JOIN plans p ON p.id = a.plan_id
WHERE g.unit_cost IS NULL AND a.id = g.account_id AND g.source IN ('PLAN', 'SEAT', 'ROLLOVER');
UPDATE grants SET unit_cost = 0 WHERE unit_cost IS NULL;
UPDATE grants SET funding = CASE WHEN unit_cost > 0 AND source IN ('PLAN', 'SEAT', 'ROLLOVER', 'PURCHASE', 'AUTO_TOP_UP') THEN 'PAID' ELSE 'PROMOTIONAL' END::"GrantFunding";

ALTER TABLE "grants" ALTER COLUMN "funding" SET NOT NULL, ALTER COLUMN "unit_cost" SET NOT NULL;
ALTER TABLE "grants" ADD CONSTRAINT grants_unit_cost_not_negative CHECK (unit_cost >= 0);

-- Every path that inserts grants (TypeScript, renew_due_batch, what later issues add) gets a cost
-- basis without having to know the rule: an insert that leaves unit_cost out has it filled here.
--   PLAN, SEAT: plan_credit_unit_cost of the account's plan (every path updates the account's plan
--     before granting the new plan's credits) in the plan's currency.
--   ROLLOVER: the average unit cost, weighted by credits, of the plan-sourced shared grants of that
--     credit type whose expiry at this same instant it carries from, so that carried credits keep
--     their value (the breakage report subtracts what was carried).
--   PURCHASE, AUTO_TOP_UP: the caller passes price / credits; left out, zero.
--   BONUS, TRIAL, ADJUSTMENT: zero unless the operator says otherwise.
-- funding left out: PAID for a positive unit cost of a plan, rollover or bought grant, else PROMOTIONAL.
CREATE FUNCTION grants_cost_basis() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.unit_cost IS NULL THEN
    IF NEW.source IN ('PLAN', 'SEAT') THEN
      SELECT plan_credit_unit_cost(a.plan_id, NEW.credit_type, NEW.source = 'SEAT'), p.price_currency
      INTO NEW.unit_cost, NEW.cost_currency
      FROM accounts a JOIN plans p ON p.id = a.plan_id WHERE a.id = NEW.account_id;
    ELSIF NEW.source = 'ROLLOVER' THEN
      SELECT CASE WHEN sum(-l.credits) > 0 THEN sum(-l.credits * g.unit_cost) / sum(-l.credits) END, min(g.cost_currency)
      INTO NEW.unit_cost, NEW.cost_currency
      FROM grants g JOIN ledger_entries l ON l.grant_id = g.id AND l.type = 'EXPIRE'
      WHERE g.account_id = NEW.account_id AND g.credit_type = NEW.credit_type AND g.seat_id IS NULL
        AND g.source IN ('PLAN', 'ROLLOVER') AND g.expired_at = NEW.effective_at;
    END IF;
    NEW.unit_cost := coalesce(NEW.unit_cost, 0);
  END IF;
  IF NEW.funding IS NULL THEN
    NEW.funding := CASE WHEN NEW.unit_cost > 0 AND NEW.source IN ('PLAN', 'SEAT', 'ROLLOVER', 'PURCHASE', 'AUTO_TOP_UP') THEN 'PAID' ELSE 'PROMOTIONAL' END;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER grants_cost_basis BEFORE INSERT ON grants FOR EACH ROW EXECUTE FUNCTION grants_cost_basis();
