-- CreateEnum
CREATE TYPE "BillingInterval" AS ENUM ('MONTH', 'YEAR');

-- CreateEnum
CREATE TYPE "RolloverKind" AS ENUM ('NONE', 'CAP_MULTIPLE', 'PERCENT');

-- CreateEnum
CREATE TYPE "PricingModel" AS ENUM ('PER_UNIT', 'TIERED', 'DYNAMIC');

-- CreateEnum
CREATE TYPE "OveragePolicy" AS ENUM ('HARD_STOP', 'PAY_AS_YOU_GO');

-- CreateEnum
CREATE TYPE "GrantSource" AS ENUM ('PLAN', 'SEAT', 'ROLLOVER', 'PURCHASE', 'AUTO_TOP_UP', 'BONUS', 'TRIAL', 'ADJUSTMENT');

-- CreateEnum
CREATE TYPE "ApiKeyRole" AS ENUM ('ADMIN', 'ACCOUNT', 'SEAT');

-- CreateEnum
CREATE TYPE "LedgerEntryType" AS ENUM ('GRANT', 'DEBIT', 'EXPIRE', 'REFUND', 'RESERVE', 'RELEASE', 'CLAWBACK', 'ADJUST');

-- CreateEnum
CREATE TYPE "ReservationStatus" AS ENUM ('HELD', 'SETTLED', 'RELEASED', 'EXPIRED');

-- CreateEnum
CREATE TYPE "SpendLimitScope" AS ENUM ('ACCOUNT', 'SEAT', 'FEATURE', 'TAG');

-- CreateEnum
CREATE TYPE "SpendLimitPeriod" AS ENUM ('BILLING_PERIOD', 'LIFETIME');

-- CreateTable
CREATE TABLE "plans" (
    "id" TEXT NOT NULL,
    "code" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "interval" "BillingInterval" NOT NULL,
    "price_amount" INTEGER NOT NULL,
    "price_currency" TEXT NOT NULL,
    "feature_keys" TEXT[],
    "overage_policy" "OveragePolicy" NOT NULL DEFAULT 'HARD_STOP',
    "max_overage_credits" BIGINT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "plans_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "plan_allocations" (
    "id" TEXT NOT NULL,
    "plan_id" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "per_seat" BOOLEAN NOT NULL DEFAULT false,
    "rollover" "RolloverKind" NOT NULL DEFAULT 'NONE',
    "rollover_value" DOUBLE PRECISION,
    "position" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "plan_allocations_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "features" (
    "key" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "pricing" "PricingModel" NOT NULL,
    "unit_credits" BIGINT,
    "tiers" JSONB,
    "requires_positive_balance" BOOLEAN NOT NULL DEFAULT false,
    "max_credits_per_event" BIGINT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "features_pkey" PRIMARY KEY ("key")
);

-- CreateTable
CREATE TABLE "credit_packs" (
    "code" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "credits" BIGINT NOT NULL,
    "price_amount" INTEGER NOT NULL,
    "price_currency" TEXT NOT NULL,
    "expires_after_days" INTEGER,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "credit_packs_pkey" PRIMARY KEY ("code")
);

-- CreateTable
CREATE TABLE "test_clocks" (
    "id" TEXT NOT NULL,
    "name" TEXT,
    "frozen_time" TIMESTAMP(3) NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "test_clocks_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "accounts" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "plan_id" TEXT NOT NULL,
    "pending_plan_id" TEXT,
    "period_anchor" TIMESTAMP(3) NOT NULL,
    "period_index" INTEGER NOT NULL DEFAULT 0,
    "current_period_start" TIMESTAMP(3) NOT NULL,
    "current_period_end" TIMESTAMP(3) NOT NULL,
    "test_clock_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "accounts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "seats" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "can_use_shared_pool" BOOLEAN NOT NULL DEFAULT true,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "removed_at" TIMESTAMP(3),

    CONSTRAINT "seats_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "grants" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "seat_id" TEXT,
    "credit_type" TEXT NOT NULL,
    "source" "GrantSource" NOT NULL,
    "amount" BIGINT NOT NULL,
    "remaining" BIGINT NOT NULL,
    "priority" INTEGER NOT NULL DEFAULT 100,
    "effective_at" TIMESTAMP(3) NOT NULL,
    "expires_at" TIMESTAMP(3),
    "expired_at" TIMESTAMP(3),
    "period_start" TIMESTAMP(3),
    "idempotency_key" TEXT,
    "request_hash" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "grants_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "usage_events" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "seat_id" TEXT,
    "feature_key" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "quantity" INTEGER NOT NULL,
    "credits" BIGINT NOT NULL,
    "refunded_credits" BIGINT NOT NULL DEFAULT 0,
    "overage_credits" BIGINT NOT NULL DEFAULT 0,
    "tags" TEXT[],
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "occurred_at" TIMESTAMP(3) NOT NULL,
    "period_start" TIMESTAMP(3) NOT NULL,
    "metadata" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "usage_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "usage_draws" (
    "id" TEXT NOT NULL,
    "usage_event_id" TEXT NOT NULL,
    "grant_id" TEXT NOT NULL,
    "credits" BIGINT NOT NULL,
    "position" INTEGER NOT NULL,

    CONSTRAINT "usage_draws_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ledger_entries" (
    "id" BIGSERIAL NOT NULL,
    "account_id" TEXT NOT NULL,
    "grant_id" TEXT NOT NULL,
    "usage_event_id" TEXT,
    "reservation_id" TEXT,
    "type" "LedgerEntryType" NOT NULL,
    "credits" BIGINT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "ledger_entries_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "reservations" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "seat_id" TEXT,
    "feature_key" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "held" BIGINT NOT NULL,
    "status" "ReservationStatus" NOT NULL,
    "tags" TEXT[],
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "expires_at" TIMESTAMP(3) NOT NULL,
    "usage_event_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL,
    "closed_at" TIMESTAMP(3),

    CONSTRAINT "reservations_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "reservation_draws" (
    "id" TEXT NOT NULL,
    "reservation_id" TEXT NOT NULL,
    "grant_id" TEXT NOT NULL,
    "credits" BIGINT NOT NULL,
    "position" INTEGER NOT NULL,

    CONSTRAINT "reservation_draws_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "spend_limits" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "scope" "SpendLimitScope" NOT NULL,
    "scope_value" TEXT,
    "credit_type" TEXT,
    "limit" BIGINT NOT NULL,
    "period" "SpendLimitPeriod" NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "spend_limits_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "api_keys" (
    "id" TEXT NOT NULL,
    "role" "ApiKeyRole" NOT NULL,
    "account_id" TEXT,
    "seat_id" TEXT,
    "name" TEXT,
    "prefix" TEXT NOT NULL,
    "secret_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMP(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "plans_code_key" ON "plans"("code");

-- CreateIndex
CREATE UNIQUE INDEX "plan_allocations_plan_id_credit_type_per_seat_key" ON "plan_allocations"("plan_id", "credit_type", "per_seat");

-- CreateIndex
CREATE INDEX "accounts_current_period_end_idx" ON "accounts"("current_period_end");

-- CreateIndex
CREATE INDEX "accounts_test_clock_id_idx" ON "accounts"("test_clock_id");

-- CreateIndex
CREATE INDEX "seats_account_id_idx" ON "seats"("account_id");

-- CreateIndex
CREATE INDEX "grants_account_id_credit_type_idx" ON "grants"("account_id", "credit_type");

-- CreateIndex
CREATE INDEX "grants_expires_at_idx" ON "grants"("expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "grants_account_id_idempotency_key_key" ON "grants"("account_id", "idempotency_key");

-- CreateIndex
CREATE INDEX "usage_events_account_id_occurred_at_idx" ON "usage_events"("account_id", "occurred_at");

-- CreateIndex
CREATE INDEX "usage_events_account_id_period_start_idx" ON "usage_events"("account_id", "period_start");

-- CreateIndex
CREATE UNIQUE INDEX "usage_events_account_id_idempotency_key_key" ON "usage_events"("account_id", "idempotency_key");

-- CreateIndex
CREATE INDEX "usage_draws_usage_event_id_idx" ON "usage_draws"("usage_event_id");

-- CreateIndex
CREATE INDEX "ledger_entries_account_id_id_idx" ON "ledger_entries"("account_id", "id");

-- CreateIndex
CREATE INDEX "ledger_entries_grant_id_idx" ON "ledger_entries"("grant_id");

-- CreateIndex
CREATE UNIQUE INDEX "reservations_usage_event_id_key" ON "reservations"("usage_event_id");

-- CreateIndex
CREATE INDEX "reservations_status_expires_at_idx" ON "reservations"("status", "expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "reservations_account_id_idempotency_key_key" ON "reservations"("account_id", "idempotency_key");

-- CreateIndex
CREATE INDEX "reservation_draws_reservation_id_idx" ON "reservation_draws"("reservation_id");

-- CreateIndex
CREATE INDEX "spend_limits_account_id_idx" ON "spend_limits"("account_id");

-- CreateIndex
CREATE UNIQUE INDEX "api_keys_prefix_key" ON "api_keys"("prefix");

-- CreateIndex
CREATE INDEX "api_keys_account_id_idx" ON "api_keys"("account_id");

-- AddForeignKey
ALTER TABLE "plan_allocations" ADD CONSTRAINT "plan_allocations_plan_id_fkey" FOREIGN KEY ("plan_id") REFERENCES "plans"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_plan_id_fkey" FOREIGN KEY ("plan_id") REFERENCES "plans"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_pending_plan_id_fkey" FOREIGN KEY ("pending_plan_id") REFERENCES "plans"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_test_clock_id_fkey" FOREIGN KEY ("test_clock_id") REFERENCES "test_clocks"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "seats" ADD CONSTRAINT "seats_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "grants" ADD CONSTRAINT "grants_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "grants" ADD CONSTRAINT "grants_seat_id_fkey" FOREIGN KEY ("seat_id") REFERENCES "seats"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "usage_events" ADD CONSTRAINT "usage_events_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "usage_draws" ADD CONSTRAINT "usage_draws_usage_event_id_fkey" FOREIGN KEY ("usage_event_id") REFERENCES "usage_events"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "usage_draws" ADD CONSTRAINT "usage_draws_grant_id_fkey" FOREIGN KEY ("grant_id") REFERENCES "grants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_grant_id_fkey" FOREIGN KEY ("grant_id") REFERENCES "grants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_usage_event_id_fkey" FOREIGN KEY ("usage_event_id") REFERENCES "usage_events"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_usage_event_id_fkey" FOREIGN KEY ("usage_event_id") REFERENCES "usage_events"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "reservation_draws" ADD CONSTRAINT "reservation_draws_reservation_id_fkey" FOREIGN KEY ("reservation_id") REFERENCES "reservations"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "spend_limits" ADD CONSTRAINT "spend_limits_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- Hand-written: invariants Prisma cannot express.
ALTER TABLE "grants" ADD CONSTRAINT "grants_remaining_non_negative" CHECK ("remaining" >= 0);
ALTER TABLE "grants" ADD CONSTRAINT "grants_remaining_within_amount" CHECK ("remaining" <= "amount");
ALTER TABLE "grants" ADD CONSTRAINT "grants_amount_positive" CHECK ("amount" > 0);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP USING ERRCODE = 'check_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_entries_no_update_delete
  BEFORE UPDATE OR DELETE ON "ledger_entries"
  FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
CREATE TRIGGER ledger_entries_no_truncate
  BEFORE TRUNCATE ON "ledger_entries"
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();
