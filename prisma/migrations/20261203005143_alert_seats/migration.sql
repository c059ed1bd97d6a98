-- AlterTable
ALTER TABLE "alerts" ADD COLUMN     "seat_id" TEXT;

-- Alerts raised before this column existed: a seat's spend-limit alert belongs to that seat.
UPDATE "alerts" AS a SET "seat_id" = l."scope_value"
FROM "spend_limits" AS l
WHERE l."scope" = 'SEAT' AND a."kind" = 'SPEND_LIMIT_REACHED' AND a."dedupe_key" LIKE 'spend-limit:' || l."id" || ':%';
