-- Named per-epoch metrics of a trial's training objective (e.g. "elr.norm_drift"), as the
-- heartbeat that reported the epoch carried them: a JSON object of name to number. NULL when
-- the epoch had none, so the rows of older pools and of the plain objective stay as they were.
ALTER TABLE trial_epochs ADD COLUMN metrics_json TEXT;
