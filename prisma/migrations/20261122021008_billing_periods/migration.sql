-- AlterTable
ALTER TABLE "usage_events" ADD COLUMN     "overage_refunded" BIGINT NOT NULL DEFAULT 0;

-- CreateTable
CREATE TABLE "period_renewals" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "period_start" TIMESTAMP(3) NOT NULL,
    "period_end" TIMESTAMP(3) NOT NULL,
    "plan_id" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "period_renewals_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "refunds" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "usage_event_id" TEXT NOT NULL,
    "credits" BIGINT NOT NULL,
    "reason" TEXT,
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "refunds_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "period_renewals_account_id_period_start_key" ON "period_renewals"("account_id", "period_start");

-- CreateIndex
CREATE INDEX "refunds_usage_event_id_idx" ON "refunds"("usage_event_id");

-- CreateIndex
CREATE UNIQUE INDEX "refunds_account_id_idempotency_key_key" ON "refunds"("account_id", "idempotency_key");

-- CreateIndex
CREATE INDEX "grants_account_id_expires_at_idx" ON "grants"("account_id", "expires_at");

-- AddForeignKey
ALTER TABLE "period_renewals" ADD CONSTRAINT "period_renewals_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "refunds" ADD CONSTRAINT "refunds_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "refunds" ADD CONSTRAINT "refunds_usage_event_id_fkey" FOREIGN KEY ("usage_event_id") REFERENCES "usage_events"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
