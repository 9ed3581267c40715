-- Control and the dashboard (issue 15): `master stop` and `master resume`, and two indexes.
--
-- A stopped experiment keeps `status = 'running'` (the column's CHECK cannot change in place,
-- and rebuilding `experiments` would mean rebuilding every table that references it) and has
-- `stopped_at_ms` set: it proposes and leases nothing until resumed, while trials already held
-- finish. `paused_ms` sums the finished stops, so the wall-time budget counts running time only.
ALTER TABLE experiments ADD COLUMN stopped_at_ms INTEGER;
ALTER TABLE experiments ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0;

-- The dashboard's reads (master/src/store/reads.rs): trial pages sorted or filtered by score,
-- and the best-so-far curve, read from these indexes alone instead of the table's rows.
CREATE INDEX trials_by_score ON trials (experiment_id, score, seq);
CREATE INDEX trials_by_finish ON trials (experiment_id, finished_at_ms, seq, status, kind, score);
