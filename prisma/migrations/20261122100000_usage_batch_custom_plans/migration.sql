-- record_usage_hot_batch plans its statement for each call's own events (a custom plan). The plan
-- cache may otherwise settle on a generic plan, one that cannot know the batch's size or accounts;
-- measured, such a plan costs more per event with every call as the tables grow (0.9 ms rising to
-- over 3 ms an event, against a steady 0.2 ms), and a batch of 1,000 could take seconds.
ALTER FUNCTION record_usage_hot_batch(jsonb, timestamp(3), integer[]) SET plan_cache_mode = force_custom_plan;
