-- S2 (predictor-guided transfer).
--
-- A trial's kind: 'train' trains a model (every trial of an older pool); 'probe' runs a source
-- model's features over a transfer experiment's new task and reports transferability scores
-- (LogME, LEEP, NCE) and its latency per image. A probe costs seconds, is never a model of the
-- pool, and counts against no budget.
ALTER TABLE trials ADD COLUMN kind TEXT NOT NULL DEFAULT 'train';
-- Which of the experiment's seeds a seed trial trains; NULL for mutations, probes and the trials
-- of older pools (whose seeds were queued in index order, seq = index). A transfer experiment
-- queues its seeds in the predictor's order instead.
ALTER TABLE trials ADD COLUMN seed_index INTEGER;
-- The predictor's fine-tuned validation accuracy and its standard deviation, for a seed the
-- learned predictor ranked; NULL otherwise.
ALTER TABLE trials ADD COLUMN predicted_score REAL;
ALTER TABLE trials ADD COLUMN predicted_std REAL;
