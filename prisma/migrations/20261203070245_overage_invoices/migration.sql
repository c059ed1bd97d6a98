-- CreateEnum
CREATE TYPE "OverageInvoiceStatus" AS ENUM ('PENDING', 'INVOICED', 'NOT_BILLED');

-- AlterTable
ALTER TABLE "period_renewals" ADD COLUMN     "closed_plan_id" TEXT;

-- AlterTable
ALTER TABLE "plan_allocations" ADD COLUMN     "overage_price_amount" INTEGER,
ADD COLUMN     "overage_price_credits" BIGINT;

-- CreateTable
CREATE TABLE "overage_invoices" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "period_start" TIMESTAMP(3) NOT NULL,
    "period_end" TIMESTAMP(3) NOT NULL,
    "currency" TEXT NOT NULL,
    "status" "OverageInvoiceStatus" NOT NULL,
    "stripe_invoice_id" TEXT,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "first_attempt_at" TIMESTAMP(3),
    "next_attempt_at" TIMESTAMP(3) NOT NULL,
    "lease_until" TIMESTAMP(3),
    "last_error" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL,
    "invoiced_at" TIMESTAMP(3),

    CONSTRAINT "overage_invoices_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "overage_charges" (
    "id" TEXT NOT NULL,
    "overage_invoice_id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "period_start" TIMESTAMP(3) NOT NULL,
    "credits" BIGINT NOT NULL,
    "plan_id" TEXT NOT NULL,
    "price_amount" INTEGER,
    "price_credits" BIGINT,
    "amount" BIGINT NOT NULL,
    "currency" TEXT NOT NULL,
    "stripe_invoice_item_id" TEXT,

    CONSTRAINT "overage_charges_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "stripe_invoices" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "number" TEXT,
    "status" TEXT NOT NULL,
    "billing_reason" TEXT,
    "subscription_id" TEXT,
    "currency" TEXT NOT NULL,
    "subtotal" BIGINT NOT NULL,
    "total" BIGINT NOT NULL,
    "amount_due" BIGINT NOT NULL,
    "amount_paid" BIGINT NOT NULL,
    "amount_remaining" BIGINT NOT NULL,
    "attempt_count" INTEGER NOT NULL,
    "next_payment_attempt" TIMESTAMP(3),
    "hosted_invoice_url" TEXT,
    "invoice_pdf" TEXT,
    "period_start" TIMESTAMP(3) NOT NULL,
    "period_end" TIMESTAMP(3) NOT NULL,
    "lines" JSONB NOT NULL,
    "lines_complete" BOOLEAN NOT NULL,
    "stripe_created_at" TIMESTAMP(3) NOT NULL,
    "status_rank" INTEGER NOT NULL,
    "last_event_created" TIMESTAMP(3) NOT NULL,
    "last_event_id" TEXT NOT NULL,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "stripe_invoices_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "overage_invoices_stripe_invoice_id_key" ON "overage_invoices"("stripe_invoice_id");

-- CreateIndex
CREATE INDEX "overage_invoices_status_next_attempt_at_idx" ON "overage_invoices"("status", "next_attempt_at");

-- CreateIndex
CREATE UNIQUE INDEX "overage_invoices_account_id_period_start_key" ON "overage_invoices"("account_id", "period_start");

-- CreateIndex
CREATE UNIQUE INDEX "overage_charges_stripe_invoice_item_id_key" ON "overage_charges"("stripe_invoice_item_id");

-- CreateIndex
CREATE INDEX "overage_charges_overage_invoice_id_idx" ON "overage_charges"("overage_invoice_id");

-- CreateIndex
CREATE UNIQUE INDEX "overage_charges_account_id_credit_type_period_start_key" ON "overage_charges"("account_id", "credit_type", "period_start");

-- CreateIndex
CREATE INDEX "stripe_invoices_account_id_stripe_created_at_id_idx" ON "stripe_invoices"("account_id", "stripe_created_at", "id");

-- AddForeignKey
ALTER TABLE "overage_charges" ADD CONSTRAINT "overage_charges_overage_invoice_id_fkey" FOREIGN KEY ("overage_invoice_id") REFERENCES "overage_invoices"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- An overage price is a positive amount per a positive number of credits, both or neither.
ALTER TABLE "plan_allocations" ADD CONSTRAINT "plan_allocations_overage_price_valid" CHECK (
  (overage_price_amount IS NULL AND overage_price_credits IS NULL)
  OR (overage_price_amount > 0 AND overage_price_credits > 0));
ALTER TABLE "overage_charges" ADD CONSTRAINT "overage_charges_amounts_valid" CHECK (credits > 0 AND amount >= 0);

-- The close of a billing period is its renewal: the row in period_renewals for the next period.
-- Whichever path renews (processDueWork in TypeScript, one account at a time, or renew_due_batch,
-- many accounts in one statement), this trigger records in the same statement, hence the same
-- transaction, the overage of every period of the account that ended and has none recorded yet:
-- one overage_invoices row per account and period, one overage_charges row per credit type with
-- overage, priced with the overage price of the plan the period closed on (closed_plan_id, or the
-- renewal's plan when it did not change). Refunds made before the close have already reduced
-- period_usage_totals.overage; later ones do not change what was recorded. Unpriced overage is
-- recorded too (NOT_BILLED, amount 0), so that each closed period is looked at exactly once and a
-- price set later never bills a past period. The unique (account, period start) keys make a second
-- recording of one period impossible, whichever runner or request renews.
CREATE FUNCTION close_period_overage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH computed AS (
    SELECT t.account_id, t.credit_type, t.period_start, n.period_start AS period_end, n.created_at AS closed_at,
           p.id AS plan_id, p.price_currency AS currency, t.overage AS credits,
           pa.overage_price_amount AS price_amount, pa.overage_price_credits AS price_credits,
           CASE WHEN pa.overage_price_amount IS NULL THEN 0
                ELSE least(round(t.overage::numeric * pa.overage_price_amount / pa.overage_price_credits), 9007199254740991)::bigint
           END AS amount
    FROM new_renewals n
    JOIN plans p ON p.id = coalesce(n.closed_plan_id, n.plan_id)
    JOIN period_usage_totals t ON t.account_id = n.account_id AND t.period_start < n.period_start AND t.overage > 0
    LEFT JOIN LATERAL (
      SELECT a.overage_price_amount, a.overage_price_credits FROM plan_allocations a
      WHERE a.plan_id = p.id AND a.credit_type = t.credit_type AND a.overage_price_amount IS NOT NULL
      ORDER BY a.per_seat LIMIT 1
    ) pa ON true
  ),
  groups AS (
    INSERT INTO overage_invoices (id, account_id, period_start, period_end, currency, status, next_attempt_at, created_at)
    SELECT gen_random_uuid()::text, c.account_id, c.period_start, min(c.period_end), min(c.currency),
           CASE WHEN max(c.amount) > 0 THEN 'PENDING' ELSE 'NOT_BILLED' END::"OverageInvoiceStatus",
           -- Due at once: a test clock's close instant may lie in the future of the real clock.
           least(min(c.closed_at), (now() AT TIME ZONE 'UTC')::timestamp(3)), min(c.closed_at)
    FROM computed c
    GROUP BY c.account_id, c.period_start
    ON CONFLICT (account_id, period_start) DO NOTHING
    RETURNING id, account_id, period_start
  )
  INSERT INTO overage_charges (id, overage_invoice_id, account_id, credit_type, period_start, credits, plan_id, price_amount, price_credits, amount, currency)
  SELECT gen_random_uuid()::text, g.id, c.account_id, c.credit_type, c.period_start, c.credits, c.plan_id, c.price_amount, c.price_credits, c.amount, c.currency
  FROM computed c JOIN groups g ON g.account_id = c.account_id AND g.period_start = c.period_start;
  RETURN NULL;
END $$;

CREATE TRIGGER period_renewals_close_overage AFTER INSERT ON period_renewals
  REFERENCING NEW TABLE AS new_renewals FOR EACH STATEMENT EXECUTE FUNCTION close_period_overage();

-- Periods that closed before overage was invoiced: recorded as not billed, so that a price set on
-- their plan now never bills them.
WITH computed AS (
  SELECT t.account_id, t.credit_type, t.period_start, t.overage AS credits, a.plan_id, p.price_currency AS currency,
         (SELECT min(pr.period_start) FROM period_renewals pr WHERE pr.account_id = t.account_id AND pr.period_start > t.period_start) AS period_end
  FROM period_usage_totals t JOIN accounts a ON a.id = t.account_id JOIN plans p ON p.id = a.plan_id
  WHERE t.overage > 0
),
groups AS (
  INSERT INTO overage_invoices (id, account_id, period_start, period_end, currency, status, next_attempt_at, created_at)
  SELECT gen_random_uuid()::text, c.account_id, c.period_start, min(c.period_end), min(c.currency), 'NOT_BILLED', min(c.period_end), min(c.period_end)
  FROM computed c WHERE c.period_end IS NOT NULL
  GROUP BY c.account_id, c.period_start
  RETURNING id, account_id, period_start
)
INSERT INTO overage_charges (id, overage_invoice_id, account_id, credit_type, period_start, credits, plan_id, amount, currency)
SELECT gen_random_uuid()::text, g.id, c.account_id, c.credit_type, c.period_start, c.credits, c.plan_id, 0, c.currency
FROM computed c JOIN groups g ON g.account_id = c.account_id AND g.period_start = c.period_start;
