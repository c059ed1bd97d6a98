-- AlterTable
ALTER TABLE "overage_invoices" ADD COLUMN     "standalone" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "stripe_subscription_id" TEXT;
