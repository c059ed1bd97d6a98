-- The refusal trigger of 20261203083000_usage_refused_by_subscription joins the usages inserted with
-- their accounts, keeping those whose subscription refuses usage (usage_refused_from set: rare).
-- Under record_usage_hot_batch's enable_nestloop = off that join was a hash join over a sequential
-- scan of every account (3.6 ms a statement of 250 events at 10,000 accounts, growing with the
-- accounts); this index holds only the refused accounts, so the join reads those few instead
-- (0.06 ms). Prisma's schema cannot state a partial index; its migrations leave it be.
CREATE INDEX accounts_usage_refused_idx ON accounts (id) WHERE usage_refused_from IS NOT NULL;
