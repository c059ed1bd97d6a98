-- CreateTable
CREATE TABLE "period_usage_totals" (
    "account_id" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "period_start" TIMESTAMP(3) NOT NULL,
    "used" BIGINT NOT NULL DEFAULT 0,
    "overage" BIGINT NOT NULL DEFAULT 0,

    CONSTRAINT "period_usage_totals_pkey" PRIMARY KEY ("account_id","credit_type","period_start")
);

-- CreateTable
CREATE TABLE "audit_events" (
    "id" BIGSERIAL NOT NULL,
    "actor_key_id" TEXT NOT NULL,
    "actor_role" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "account_id" TEXT,
    "subject_id" TEXT,
    "details" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "audit_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "audit_events_account_id_id_idx" ON "audit_events"("account_id", "id");

-- CreateIndex
CREATE INDEX "audit_events_action_id_idx" ON "audit_events"("action", "id");

-- Hand-written: totals of the usage already recorded.
INSERT INTO "period_usage_totals" ("account_id", "credit_type", "period_start", "used", "overage")
SELECT "account_id", "credit_type", "period_start", sum("credits" - "refunded_credits"), sum("overage_credits" - "overage_refunded")
FROM "usage_events" GROUP BY 1, 2, 3;
