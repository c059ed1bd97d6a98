-- DropForeignKey
ALTER TABLE "alert_deliveries" DROP CONSTRAINT "alert_deliveries_alert_id_fkey";

-- AlterTable
ALTER TABLE "alert_deliveries" ADD COLUMN     "endpoint_id" TEXT,
ADD COLUMN     "event_type" TEXT,
ADD COLUMN     "payload" JSONB,
ALTER COLUMN "alert_id" DROP NOT NULL;

-- CreateTable
CREATE TABLE "webhook_endpoints" (
    "id" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "event_types" TEXT[],
    "account_id" TEXT,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "created_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "webhook_endpoints_pkey" PRIMARY KEY ("id")
);

-- AddForeignKey
ALTER TABLE "alert_deliveries" ADD CONSTRAINT "alert_deliveries_alert_id_fkey" FOREIGN KEY ("alert_id") REFERENCES "alerts"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "alert_deliveries" ADD CONSTRAINT "alert_deliveries_endpoint_id_fkey" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- An alert delivery or an event delivery, never both or neither.
ALTER TABLE "alert_deliveries" ADD CONSTRAINT alert_deliveries_one_kind CHECK ((alert_id IS NULL) <> (endpoint_id IS NULL));

-- Ledger events (issue 20 item 6): triggers write one outbox row per matching enabled endpoint in
-- the transaction of the change itself, whatever code path made it (TypeScript, renew_due_batch, a
-- later issue's), so an event is sent exactly when its change committed. The job runner delivers
-- them as it delivers alerts (lease, signature, retries with backoff, the SSRF rules).
CREATE FUNCTION emit_ledger_event(p_type text, p_account_id text, p_at timestamp(3), p_data jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_event_id text := gen_random_uuid()::text;
BEGIN
  INSERT INTO alert_deliveries (id, alert_id, account_id, attempts, next_attempt_at, endpoint_id, event_type, payload)
  SELECT gen_random_uuid()::text, NULL, p_account_id, 0, (now() AT TIME ZONE 'UTC')::timestamp(3), e.id, p_type,
         jsonb_build_object('id', v_event_id, 'type', p_type, 'accountId', p_account_id,
                            'createdAt', to_char(p_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'data', p_data)
  FROM webhook_endpoints e
  WHERE e.enabled AND (e.account_id IS NULL OR e.account_id = p_account_id)
    AND (cardinality(e.event_types) = 0 OR p_type = ANY (e.event_types));
END
$$;

CREATE FUNCTION grants_ledger_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM emit_ledger_event('grant.created', NEW.account_id, NEW.created_at, jsonb_build_object(
      'grantId', NEW.id, 'creditType', NEW.credit_type, 'source', NEW.source, 'amount', NEW.amount, 'seatId', NEW.seat_id,
      'effectiveAt', to_char(NEW.effective_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'expiresAt', to_char(NEW.expires_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'unitCost', NEW.unit_cost::text, 'costCurrency', NEW.cost_currency, 'funding', NEW.funding));
  ELSE
    PERFORM emit_ledger_event('grant.expired', NEW.account_id, NEW.expired_at, jsonb_build_object(
      'grantId', NEW.id, 'creditType', NEW.credit_type, 'source', NEW.source, 'expiredCredits', OLD.remaining - NEW.remaining));
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER grants_created_event AFTER INSERT ON grants FOR EACH ROW EXECUTE FUNCTION grants_ledger_events();
-- UPDATE OF expired_at: debits, which update remaining only, never even consider this trigger.
CREATE TRIGGER grants_expired_event AFTER UPDATE OF expired_at ON grants FOR EACH ROW
  WHEN (OLD.expired_at IS NULL AND NEW.expired_at IS NOT NULL) EXECUTE FUNCTION grants_ledger_events();

-- Corrections written as ADJUST entries; the WHEN clause keeps debits from calling the function.
CREATE FUNCTION ledger_adjustment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM emit_ledger_event('adjustment', NEW.account_id, NEW.created_at,
    jsonb_build_object('grantId', NEW.grant_id, 'credits', NEW.credits, 'entryId', NEW.id::text));
  RETURN NULL;
END
$$;
CREATE TRIGGER ledger_adjustment_event AFTER INSERT ON ledger_entries FOR EACH ROW
  WHEN (NEW.type = 'ADJUST') EXECUTE FUNCTION ledger_adjustment_event();

CREATE FUNCTION purchase_ledger_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM emit_ledger_event(CASE WHEN NEW.status = 'COMPLETED' THEN 'purchase.completed' ELSE 'purchase.failed' END,
    NEW.account_id, coalesce(NEW.completed_at, NEW.created_at), jsonb_build_object(
      'purchaseId', NEW.id, 'packCode', NEW.pack_code, 'quantity', NEW.quantity, 'credits', NEW.credits, 'amount', NEW.amount,
      'currency', NEW.currency, 'source', NEW.source, 'grantId', NEW.grant_id, 'failureCode', NEW.failure_code));
  RETURN NULL;
END
$$;
CREATE TRIGGER purchase_finished_event AFTER UPDATE OF status ON top_up_purchases FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('COMPLETED', 'FAILED')) EXECUTE FUNCTION purchase_ledger_event();
CREATE TRIGGER purchase_failed_at_once_event AFTER INSERT ON top_up_purchases FOR EACH ROW
  WHEN (NEW.status IN ('COMPLETED', 'FAILED')) EXECUTE FUNCTION purchase_ledger_event();

CREATE FUNCTION plan_changed_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM emit_ledger_event('plan.changed', NEW.id, coalesce((SELECT frozen_time FROM test_clocks WHERE id = NEW.test_clock_id), (now() AT TIME ZONE 'UTC')::timestamp(3)),
    jsonb_build_object('fromPlan', (SELECT code FROM plans WHERE id = OLD.plan_id), 'toPlan', (SELECT code FROM plans WHERE id = NEW.plan_id)));
  RETURN NULL;
END
$$;
CREATE TRIGGER plan_changed_event AFTER UPDATE OF plan_id ON accounts FOR EACH ROW
  WHEN (OLD.plan_id IS DISTINCT FROM NEW.plan_id) EXECUTE FUNCTION plan_changed_event();

CREATE FUNCTION alert_raised_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM emit_ledger_event('alert.raised', NEW.account_id, NEW.created_at, jsonb_build_object(
    'alertId', NEW.id, 'kind', NEW.kind, 'creditType', NEW.credit_type, 'threshold', NEW.threshold, 'message', NEW.message));
  RETURN NULL;
END
$$;
CREATE TRIGGER alert_raised_event AFTER INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION alert_raised_event();
