/*
  Warnings:

  - A unique constraint covering the columns `[stripe_subscription_id]` on the table `accounts` will be added. If there are existing duplicate values, this will fail.
  - A unique constraint covering the columns `[stripe_test_clock_id]` on the table `test_clocks` will be added. If there are existing duplicate values, this will fail.

*/
-- CreateEnum
CREATE TYPE "SubscriptionStatus" AS ENUM ('INCOMPLETE', 'ACTIVE', 'PAST_DUE', 'UNPAID', 'CANCELED');

-- AlterEnum
ALTER TYPE "AlertKind" ADD VALUE 'SUBSCRIPTION_PAST_DUE';

-- AlterTable
ALTER TABLE "accounts" ADD COLUMN     "past_due_invoice_id" TEXT,
ADD COLUMN     "past_due_since" TIMESTAMP(3),
ADD COLUMN     "stripe_subscription_id" TEXT,
ADD COLUMN     "stripe_subscription_item_id" TEXT,
ADD COLUMN     "subscription_cancel_at_period_end" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "subscription_status" "SubscriptionStatus",
ADD COLUMN     "usage_refused_from" TIMESTAMP(3),
ADD COLUMN     "usage_refused_reason" TEXT;

-- AlterTable
ALTER TABLE "plans" ADD COLUMN     "stripe_price_id" TEXT;

-- AlterTable
ALTER TABLE "test_clocks" ADD COLUMN     "stripe_test_clock_id" TEXT;

-- CreateTable
CREATE TABLE "subscription_checkouts" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "plan_id" TEXT NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'PENDING',
    "checkout_session_id" TEXT,
    "checkout_url" TEXT,
    "stripe_subscription_id" TEXT,
    "success_url" TEXT NOT NULL,
    "cancel_url" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,
    "completed_at" TIMESTAMP(3),

    CONSTRAINT "subscription_checkouts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "subscription_changes" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "from_plan_id" TEXT NOT NULL,
    "to_plan_id" TEXT NOT NULL,
    "stripe_subscription_id" TEXT NOT NULL,
    "stripe_invoice_id" TEXT,
    "invoice_url" TEXT,
    "amount_due" INTEGER,
    "currency" TEXT,
    "status" TEXT NOT NULL DEFAULT 'PENDING',
    "created_at" TIMESTAMP(3) NOT NULL,
    "applied_at" TIMESTAMP(3),

    CONSTRAINT "subscription_changes_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "subscription_invoices_paid" (
    "invoice_id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "paid_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "subscription_invoices_paid_pkey" PRIMARY KEY ("invoice_id")
);

-- CreateIndex
CREATE UNIQUE INDEX "subscription_checkouts_checkout_session_id_key" ON "subscription_checkouts"("checkout_session_id");

-- CreateIndex
CREATE UNIQUE INDEX "subscription_checkouts_account_id_idempotency_key_key" ON "subscription_checkouts"("account_id", "idempotency_key");

-- CreateIndex
CREATE UNIQUE INDEX "subscription_changes_stripe_invoice_id_key" ON "subscription_changes"("stripe_invoice_id");

-- CreateIndex
CREATE INDEX "subscription_changes_account_id_status_idx" ON "subscription_changes"("account_id", "status");

-- CreateIndex
CREATE UNIQUE INDEX "accounts_stripe_subscription_id_key" ON "accounts"("stripe_subscription_id");

-- CreateIndex
CREATE UNIQUE INDEX "test_clocks_stripe_test_clock_id_key" ON "test_clocks"("stripe_test_clock_id");

-- AddForeignKey
ALTER TABLE "subscription_checkouts" ADD CONSTRAINT "subscription_checkouts_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "subscription_changes" ADD CONSTRAINT "subscription_changes_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
