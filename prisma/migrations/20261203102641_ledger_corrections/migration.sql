-- CreateEnum
CREATE TYPE "CorrectionKind" AS ENUM ('VOID', 'ADJUST', 'EXPIRY');

-- AlterTable
ALTER TABLE "grants" ADD COLUMN     "metadata" JSONB,
ADD COLUMN     "reason" TEXT,
ADD COLUMN     "voided_at" TIMESTAMP(3);

-- AlterTable
ALTER TABLE "ledger_entries" ADD COLUMN     "correction_id" TEXT;

-- CreateTable
CREATE TABLE "corrections" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "kind" "CorrectionKind" NOT NULL,
    "grant_id" TEXT,
    "grant_ids" TEXT[],
    "credit_type" TEXT NOT NULL,
    "credits" BIGINT NOT NULL,
    "reason" TEXT NOT NULL,
    "previous_expires_at" TIMESTAMP(3),
    "expires_at" TIMESTAMP(3),
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "actor_key_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "corrections_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "corrections_grant_id_idx" ON "corrections"("grant_id");

-- CreateIndex
CREATE UNIQUE INDEX "corrections_account_id_idempotency_key_key" ON "corrections"("account_id", "idempotency_key");

-- AddForeignKey
ALTER TABLE "corrections" ADD CONSTRAINT "corrections_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;


-- Corrections (issue 20 item 1) as ledger events. A void is `grant.voided` (with the credits it
-- removed and the reason), written when its correction row is; its ADJUST entries, and those that
-- void credits coming back to the grant later, are not also `adjustment` events. Every other ADJUST
-- entry is an `adjustment`, with what its correction says (kind, reason, a new expiry). A correction
-- row is always inserted before its entries, in an earlier statement of the same transaction.
CREATE FUNCTION grant_voided_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM emit_ledger_event('grant.voided', NEW.account_id, NEW.created_at, jsonb_build_object(
    'grantId', NEW.grant_id, 'creditType', NEW.credit_type, 'voidedCredits', -NEW.credits, 'reason', NEW.reason,
    'correctionId', NEW.id));
  RETURN NULL;
END
$$;
CREATE TRIGGER grant_voided_event AFTER INSERT ON corrections FOR EACH ROW
  WHEN (NEW.kind = 'VOID') EXECUTE FUNCTION grant_voided_event();

CREATE OR REPLACE FUNCTION ledger_adjustment_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_correction corrections%ROWTYPE;
BEGIN
  SELECT * INTO v_correction FROM corrections WHERE id = NEW.correction_id;
  IF v_correction.kind = 'VOID' THEN RETURN NULL; END IF;
  PERFORM emit_ledger_event('adjustment', NEW.account_id, NEW.created_at, jsonb_build_object(
    'grantId', NEW.grant_id, 'credits', NEW.credits, 'entryId', NEW.id::text, 'correctionId', NEW.correction_id,
    'kind', v_correction.kind, 'creditType', v_correction.credit_type, 'reason', v_correction.reason,
    'previousExpiresAt', to_char(v_correction.previous_expires_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'expiresAt', to_char(v_correction.expires_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')));
  RETURN NULL;
END
$$;
