-- record_usage_hot_batch's statement is planned once per connection (a generic plan) rather than for
-- each call's events. Planning the statement costs about 3 ms of database CPU, which for the small
-- batches of group commit (a few usages each) outweighs the charging itself; the generic plan costs
-- less per event at every size measured (1 to 1,000 events: 0.9 ms for one event alone against
-- 3 ms; 0.17 ms an event in a batch of 1,000 against 0.23 ms). It relies on current statistics (a
-- plan made while the tables were nearly empty scans them whole), which the job runner's
-- analyzeGrownTables or autovacuum keep, and whose refresh replans it.
ALTER FUNCTION record_usage_hot_batch(jsonb, timestamp(3), integer[]) SET plan_cache_mode = force_generic_plan;
