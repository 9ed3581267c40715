-- The base-candidate read (a Boltzmann draw over the experiment's best accepted trials, at every
-- proposal) takes `id, seq, score` of up to 256 trials. The index held `seq` and `score` only,
-- so each of the 256 rows cost a lookup of its `id` in the trials table, whose rows are large
-- (genome and hyperparameters inline) and scattered over the file: in a grown pool, most of the
-- read's time and of the master's file reads. Now the index covers the read: `id`, and the three
-- columns of the partial index's condition, which the query repeats (SQLite counts a column the
-- query names as one the index must hold, even where the index's condition fixes its value).
DROP INDEX trials_accepted_by_score;
CREATE INDEX trials_accepted_by_score
    ON trials (experiment_id, score DESC, seq, id, kind, status, accepted)
    WHERE kind = 'train' AND status = 'completed' AND accepted = 1;
