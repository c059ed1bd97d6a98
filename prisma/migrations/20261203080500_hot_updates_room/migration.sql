-- Room on each page for the updates every debit makes. A debit updates its grant's remaining and its
-- period's total; neither column is indexed, so PostgreSQL can write the new row version on the same
-- page without touching any index (a HOT update), but only if the page has room. These tables are
-- filled densely (seeding, renewals, a period's first debits), and `pnpm bench` counted 0.7-0.95
-- index entries a debit for period_usage_totals and ~0.1 for grants: updates that had to move to
-- another page and enter every index again. Leaving part of each page free (pages written from now
-- on; a table rewrite would apply it to the old ones) keeps those updates on their page, and page
-- pruning reclaims the old versions there. These rows are small and few (one per grant, one per
-- account, credit type and period), so the space is cheap.
ALTER TABLE "period_usage_totals" SET (fillfactor = 50);
ALTER TABLE "grants" SET (fillfactor = 70);
