-- AlterTable
ALTER TABLE "scheduled_grants" ADD COLUMN     "feature_keys" TEXT[] DEFAULT ARRAY[]::TEXT[];
