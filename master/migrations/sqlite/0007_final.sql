-- The final-training phase (issue 14, `[final]` in the spec): once the search is over, the best
-- distinct architectures are trained again with a longer schedule.
--
-- `experiments.search_ended`: NULL while the experiment searches; once the search is over and
-- the final phase has begun, why the search ended ("trial budget reached", ...). The final
-- trials are queued in the same transaction that sets it, so a restarted master finds either
-- no final phase or the whole plan.
ALTER TABLE experiments ADD COLUMN search_ended TEXT;

-- `trials.phase`: 'search' for every trial the search proposed (all trials of older pools),
-- 'final' for a final trial (its parent is the trial it trains again). A final trial is a
-- training trial like any other (`kind = 'train'`): it counts in the trial and epoch budgets,
-- can be the best trial, and is leased, heartbeated and retried as usual.
ALTER TABLE trials ADD COLUMN phase TEXT NOT NULL DEFAULT 'search'
    CHECK (phase IN ('search', 'final'));
CREATE INDEX trials_final ON trials (experiment_id, seq) WHERE phase = 'final';
