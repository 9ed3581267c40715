-- Search at cluster scale: annealing chains, early stopping (the 'pruned' status and per-epoch
-- validation curves) and weight inheritance.
--
-- SQLite cannot change a CHECK constraint in place, so `trials` is rebuilt: copied into a new
-- table, dropped, and the copy renamed. The migration runs inside one transaction with foreign
-- keys enforced (they cannot be switched off there), so `late_results`, the only table that
-- references `trials`, is rebuilt the same way first, and the copies reference each other;
-- renaming rewrites those references to the final names. Checks are deferred to the commit so
-- rows may be copied in any order.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE trials_v2 (
    id                  TEXT PRIMARY KEY,
    experiment_id       TEXT NOT NULL REFERENCES experiments(id),
    seq                 INTEGER NOT NULL,
    parent_id           TEXT REFERENCES trials_v2(id),
    origin              TEXT NOT NULL,
    genome_json         TEXT NOT NULL,
    genome_hash         TEXT NOT NULL,
    hparams_json        TEXT NOT NULL,
    params              INTEGER NOT NULL,
    flops               INTEGER NOT NULL,
    seed                INTEGER NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('queued', 'leased', 'running', 'completed', 'pruned', 'failed', 'cancelled')),
    attempt             INTEGER NOT NULL DEFAULT 1,
    worker_id           TEXT,
    lease_deadline_ms   INTEGER,
    -- Epochs trained so far (the final count once the trial has ended).
    epoch               INTEGER NOT NULL DEFAULT 0,
    score               REAL,
    metrics_json        TEXT NOT NULL DEFAULT '{}',
    checkpoint_sha256   TEXT,
    accepted            INTEGER,
    temperature         REAL,
    error               TEXT NOT NULL DEFAULT '',
    created_at_ms       INTEGER NOT NULL,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    -- The annealing chain that proposed the trial.
    chain               INTEGER NOT NULL DEFAULT 0,
    -- Checkpoint (sha256) of the parent whose weights the trial starts from, if any.
    inherit_from        TEXT,
    UNIQUE (experiment_id, seq)
);

INSERT INTO trials_v2 (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash,
        hparams_json, params, flops, seed, status, attempt, worker_id, lease_deadline_ms, epoch,
        score, metrics_json, checkpoint_sha256, accepted, temperature, error, created_at_ms,
        started_at_ms, finished_at_ms)
    SELECT id, experiment_id, seq, parent_id, origin, genome_json, genome_hash,
        hparams_json, params, flops, seed, status, attempt, worker_id, lease_deadline_ms, epoch,
        score, metrics_json, checkpoint_sha256, accepted, temperature, error, created_at_ms,
        started_at_ms, finished_at_ms
    FROM trials;

CREATE TABLE late_results_v2 (
    trial_id        TEXT NOT NULL REFERENCES trials_v2(id),
    attempt         INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    score           REAL NOT NULL,
    metrics_json    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL
);

INSERT INTO late_results_v2 (trial_id, attempt, worker_id, score, metrics_json, reason,
        received_at_ms)
    SELECT trial_id, attempt, worker_id, score, metrics_json, reason, received_at_ms
    FROM late_results;

DROP TABLE late_results;
DROP TABLE trials;
ALTER TABLE trials_v2 RENAME TO trials;
ALTER TABLE late_results_v2 RENAME TO late_results;
CREATE INDEX trials_by_status ON trials (status, experiment_id, seq);
CREATE INDEX trials_by_genome ON trials (experiment_id, genome_hash);

-- Validation accuracy after each epoch, as reported by heartbeats: what early stopping compares
-- a trial against.
CREATE TABLE trial_epochs (
    trial_id        TEXT NOT NULL REFERENCES trials(id),
    epoch           INTEGER NOT NULL,
    val_accuracy    REAL NOT NULL,
    train_loss      REAL,
    PRIMARY KEY (trial_id, epoch)
);

-- One row per annealing chain of an experiment: its temperature, its current state and how
-- long it has gone without improving.
CREATE TABLE chains (
    experiment_id       TEXT NOT NULL REFERENCES experiments(id),
    chain               INTEGER NOT NULL,
    temperature         REAL NOT NULL,
    current_trial_id    TEXT REFERENCES trials(id),
    best_score          REAL,
    since_improvement   INTEGER NOT NULL DEFAULT 0,
    results             INTEGER NOT NULL DEFAULT 0,
    accepted            INTEGER NOT NULL DEFAULT 0,
    reheats             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, chain)
);
