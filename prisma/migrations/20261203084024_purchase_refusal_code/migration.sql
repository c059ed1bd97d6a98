-- The typed error a purchase Stripe refused was answered with, answered again to a retry with its key.
-- AlterTable
ALTER TABLE "top_up_purchases" ADD COLUMN     "refusal_code" TEXT;
