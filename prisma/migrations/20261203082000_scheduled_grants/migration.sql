-- CreateEnum
CREATE TYPE "ScheduleInterval" AS ENUM ('ONCE', 'MONTH', 'YEAR');

-- CreateTable
CREATE TABLE "scheduled_grants" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "seat_id" TEXT,
    "credit_type" TEXT NOT NULL,
    "source" "GrantSource" NOT NULL,
    "amount" BIGINT NOT NULL,
    "priority" INTEGER,
    "interval" "ScheduleInterval" NOT NULL,
    "starts_at" TIMESTAMP(3) NOT NULL,
    "ends_at" TIMESTAMP(3),
    "expires_after_days" INTEGER,
    "unit_cost" DECIMAL(40,20),
    "cost_currency" TEXT,
    "funding" "GrantFunding",
    "issued" INTEGER NOT NULL DEFAULT 0,
    "next_at" TIMESTAMP(3),
    "canceled_at" TIMESTAMP(3),
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "scheduled_grants_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "scheduled_grants_next_at_idx" ON "scheduled_grants"("next_at");

-- CreateIndex
CREATE INDEX "scheduled_grants_account_id_created_at_idx" ON "scheduled_grants"("account_id", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "scheduled_grants_account_id_idempotency_key_key" ON "scheduled_grants"("account_id", "idempotency_key");

-- AddForeignKey
ALTER TABLE "scheduled_grants" ADD CONSTRAINT "scheduled_grants_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
