/*
  Warnings:

  - A unique constraint covering the columns `[seq]` on the table `alerts` will be added. If there are existing duplicate values, this will fail.

*/
-- DropIndex
DROP INDEX "alerts_account_id_created_at_idx";

-- AlterTable
ALTER TABLE "alerts" ADD COLUMN     "seq" BIGSERIAL NOT NULL;

-- CreateTable
CREATE TABLE "alert_settings" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "percents" INTEGER[],
    "low_balance" BIGINT,
    "expiring_within_days" INTEGER,

    CONSTRAINT "alert_settings_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "alert_webhooks" (
    "account_id" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "alert_webhooks_pkey" PRIMARY KEY ("account_id")
);

-- CreateTable
CREATE TABLE "alert_deliveries" (
    "id" TEXT NOT NULL,
    "alert_id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMP(3) NOT NULL,
    "delivered_at" TIMESTAMP(3),
    "last_error" TEXT,

    CONSTRAINT "alert_deliveries_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "alert_settings_account_id_credit_type_key" ON "alert_settings"("account_id", "credit_type");

-- CreateIndex
CREATE INDEX "alert_deliveries_delivered_at_next_attempt_at_idx" ON "alert_deliveries"("delivered_at", "next_attempt_at");

-- CreateIndex
CREATE UNIQUE INDEX "alerts_seq_key" ON "alerts"("seq");

-- CreateIndex
CREATE INDEX "alerts_account_id_seq_idx" ON "alerts"("account_id", "seq");

-- AddForeignKey
ALTER TABLE "alert_settings" ADD CONSTRAINT "alert_settings_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "alert_webhooks" ADD CONSTRAINT "alert_webhooks_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "alert_deliveries" ADD CONSTRAINT "alert_deliveries_alert_id_fkey" FOREIGN KEY ("alert_id") REFERENCES "alerts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
