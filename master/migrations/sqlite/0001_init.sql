-- The history model pool: experiments, their trials (every proposed and trained model), the
-- workers that trained them, and results that arrived for superseded attempts.

CREATE TABLE experiments (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    -- The validated spec as JSON (seed genomes inlined).
    spec_json       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    status_reason   TEXT NOT NULL DEFAULT '',
    created_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    best_trial_id   TEXT
);

CREATE TABLE trials (
    id                  TEXT PRIMARY KEY,
    experiment_id       TEXT NOT NULL REFERENCES experiments(id),
    seq                 INTEGER NOT NULL,
    parent_id           TEXT REFERENCES trials(id),
    origin              TEXT NOT NULL,
    genome_json         TEXT NOT NULL,
    genome_hash         TEXT NOT NULL,
    hparams_json        TEXT NOT NULL,
    params              INTEGER NOT NULL,
    flops               INTEGER NOT NULL,
    seed                INTEGER NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('queued', 'leased', 'running', 'completed', 'failed', 'cancelled')),
    attempt             INTEGER NOT NULL DEFAULT 1,
    worker_id           TEXT,
    lease_deadline_ms   INTEGER,
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
    UNIQUE (experiment_id, seq)
);

CREATE INDEX trials_by_status ON trials (status, experiment_id, seq);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    device            TEXT NOT NULL,
    slots             INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'left')),
    registered_at_ms  INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL
);

-- Results for an attempt that was no longer current when they arrived: kept as history, never
-- counted.
CREATE TABLE late_results (
    trial_id        TEXT NOT NULL REFERENCES trials(id),
    attempt         INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    score           REAL NOT NULL,
    metrics_json    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL
);
