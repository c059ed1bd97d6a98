-- A period's usage total is read back as a JSON number: beyond 2^53 - 1 it could not be stated, and
-- every balance read of the account failed. Debits that would take it there are refused (typed) by
-- the code; this holds it even so. NOT VALID: rows written before are not re-read at deploy.
ALTER TABLE "period_usage_totals"
  ADD CONSTRAINT "period_usage_totals_within_credits" CHECK ("used" <= 9007199254740991 AND "overage" <= 9007199254740991) NOT VALID;
