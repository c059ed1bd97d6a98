/*
  Warnings:

  - A unique constraint covering the columns `[stripe_customer_id]` on the table `accounts` will be added. If there are existing duplicate values, this will fail.

*/
-- CreateEnum
CREATE TYPE "TopUpStatus" AS ENUM ('PENDING', 'COMPLETED', 'FAILED', 'REFUNDED');

-- CreateEnum
CREATE TYPE "AlertKind" AS ENUM ('USAGE_THRESHOLD', 'LOW_BALANCE', 'EXPIRING_SOON', 'POOL_EXHAUSTED', 'AUTO_TOP_UP_SUCCEEDED', 'AUTO_TOP_UP_FAILED', 'SPEND_LIMIT_REACHED');

-- AlterTable
ALTER TABLE "accounts" ADD COLUMN     "stripe_customer_id" TEXT;

-- CreateTable
CREATE TABLE "top_up_purchases" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "pack_code" TEXT NOT NULL,
    "quantity" INTEGER NOT NULL,
    "credits" BIGINT NOT NULL,
    "amount" INTEGER NOT NULL,
    "currency" TEXT NOT NULL,
    "status" "TopUpStatus" NOT NULL,
    "source" "GrantSource" NOT NULL,
    "off_session" BOOLEAN NOT NULL,
    "checkout_session_id" TEXT,
    "checkout_url" TEXT,
    "payment_intent_id" TEXT,
    "grant_id" TEXT,
    "clawed_back_credits" BIGINT NOT NULL DEFAULT 0,
    "uncollected_credits" BIGINT NOT NULL DEFAULT 0,
    "failure_code" TEXT,
    "failure_message" TEXT,
    "auto_top_up_config_id" TEXT,
    "period_start" TIMESTAMP(3) NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,
    "completed_at" TIMESTAMP(3),

    CONSTRAINT "top_up_purchases_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "stripe_events" (
    "id" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "received_at" TIMESTAMP(3) NOT NULL,
    "processed_at" TIMESTAMP(3),

    CONSTRAINT "stripe_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "auto_top_up_configs" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "credit_type" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL,
    "threshold_credits" BIGINT NOT NULL,
    "pack_code" TEXT NOT NULL,
    "max_purchases_per_period" INTEGER NOT NULL,
    "consecutive_failures" INTEGER NOT NULL DEFAULT 0,
    "retry_not_before" TIMESTAMP(3),
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "auto_top_up_configs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "alerts" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "kind" "AlertKind" NOT NULL,
    "credit_type" TEXT,
    "threshold" INTEGER,
    "message" TEXT NOT NULL,
    "period_start" TIMESTAMP(3),
    "dedupe_key" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,
    "acknowledged_at" TIMESTAMP(3),

    CONSTRAINT "alerts_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "top_up_purchases_checkout_session_id_key" ON "top_up_purchases"("checkout_session_id");

-- CreateIndex
CREATE UNIQUE INDEX "top_up_purchases_payment_intent_id_key" ON "top_up_purchases"("payment_intent_id");

-- CreateIndex
CREATE UNIQUE INDEX "top_up_purchases_grant_id_key" ON "top_up_purchases"("grant_id");

-- CreateIndex
CREATE INDEX "top_up_purchases_account_id_created_at_idx" ON "top_up_purchases"("account_id", "created_at");

-- CreateIndex
CREATE INDEX "top_up_purchases_status_created_at_idx" ON "top_up_purchases"("status", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "top_up_purchases_account_id_idempotency_key_key" ON "top_up_purchases"("account_id", "idempotency_key");

-- CreateIndex
CREATE UNIQUE INDEX "auto_top_up_configs_account_id_credit_type_key" ON "auto_top_up_configs"("account_id", "credit_type");

-- CreateIndex
CREATE UNIQUE INDEX "alerts_dedupe_key_key" ON "alerts"("dedupe_key");

-- CreateIndex
CREATE INDEX "alerts_account_id_created_at_idx" ON "alerts"("account_id", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "accounts_stripe_customer_id_key" ON "accounts"("stripe_customer_id");

-- AddForeignKey
ALTER TABLE "top_up_purchases" ADD CONSTRAINT "top_up_purchases_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "auto_top_up_configs" ADD CONSTRAINT "auto_top_up_configs_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "alerts" ADD CONSTRAINT "alerts_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
