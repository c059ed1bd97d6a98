-- AlterEnum
ALTER TYPE "AlertKind" ADD VALUE 'AUTO_TOP_UP_PAUSED';

-- AlterTable
ALTER TABLE "auto_top_up_configs" ADD COLUMN     "armed" BOOLEAN NOT NULL DEFAULT true,
ADD COLUMN     "max_amount_per_month" INTEGER,
ADD COLUMN     "max_consecutive_failures" INTEGER NOT NULL DEFAULT 3,
ADD COLUMN     "max_purchases_per_month" INTEGER,
ADD COLUMN     "paused_at" TIMESTAMP(3),
ADD COLUMN     "target_balance_credits" BIGINT;

-- AlterTable
ALTER TABLE "top_up_purchases" ADD COLUMN     "reconcile_not_before" TIMESTAMP(3);

-- CreateIndex
CREATE INDEX "top_up_purchases_auto_top_up_config_id_created_at_idx" ON "top_up_purchases"("auto_top_up_config_id", "created_at");
