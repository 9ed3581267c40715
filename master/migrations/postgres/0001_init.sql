-- The history model pool on PostgreSQL: one schema equivalent to the SQLite schema after its
-- migrations 0001..0007 (master/migrations/sqlite/). Integers are BIGINT (read as i64, like
-- SQLite's INTEGER), reals DOUBLE PRECISION, times BIGINT milliseconds since the epoch, JSON
-- TEXT. `trials.accepted` is a BOOLEAN (read as `Option<bool>`, as SQLite's 0/1 is).

CREATE TABLE experiments (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    -- The validated spec as JSON (seed genomes inlined).
    spec_json       TEXT NOT NULL,
    -- A stopped experiment stays 'running' with `stopped_at_ms` set.
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    status_reason   TEXT NOT NULL DEFAULT '',
    created_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT,
    best_trial_id   TEXT,
    -- When `master stop` stopped it (NULL unless stopped).
    stopped_at_ms   BIGINT,
    -- The finished stops, summed: not counted as running time.
    paused_ms       BIGINT NOT NULL DEFAULT 0,
    -- NULL while the experiment searches; why the search ended once the final phase began.
    search_ended    TEXT
);

CREATE TABLE trials (
    id                  TEXT PRIMARY KEY,
    experiment_id       TEXT NOT NULL REFERENCES experiments(id),
    seq                 BIGINT NOT NULL,
    parent_id           TEXT REFERENCES trials(id),
    origin              TEXT NOT NULL,
    genome_json         TEXT NOT NULL,
    genome_hash         TEXT NOT NULL,
    hparams_json        TEXT NOT NULL,
    params              BIGINT NOT NULL,
    flops               BIGINT NOT NULL,
    seed                BIGINT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('queued', 'leased', 'running', 'completed', 'pruned', 'failed', 'cancelled')),
    attempt             BIGINT NOT NULL DEFAULT 1,
    worker_id           TEXT,
    lease_deadline_ms   BIGINT,
    -- Epochs trained so far (the final count once the trial has ended).
    epoch               BIGINT NOT NULL DEFAULT 0,
    score               DOUBLE PRECISION,
    metrics_json        TEXT NOT NULL DEFAULT '{}',
    checkpoint_sha256   TEXT,
    accepted            BOOLEAN,
    temperature         DOUBLE PRECISION,
    error               TEXT NOT NULL DEFAULT '',
    created_at_ms       BIGINT NOT NULL,
    started_at_ms       BIGINT,
    finished_at_ms      BIGINT,
    -- The annealing chain that proposed the trial.
    chain               BIGINT NOT NULL DEFAULT 0,
    -- Checkpoint (sha256) of the parent whose weights the trial starts from, if any.
    inherit_from        TEXT,
    -- 'train' or 'probe'.
    kind                TEXT NOT NULL DEFAULT 'train',
    -- Which of the experiment's seeds a seed trial trains (transfer experiments).
    seed_index          BIGINT,
    -- The learned predictor's fine-tuned accuracy and its standard deviation.
    predicted_score     DOUBLE PRECISION,
    predicted_std       DOUBLE PRECISION,
    -- 'search', or 'final' for a final trial.
    phase               TEXT NOT NULL DEFAULT 'search' CHECK (phase IN ('search', 'final')),
    UNIQUE (experiment_id, seq)
);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    device            TEXT NOT NULL,
    slots             BIGINT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'left')),
    registered_at_ms  BIGINT NOT NULL,
    last_seen_ms      BIGINT NOT NULL
);

-- Results for an attempt that was no longer current when they arrived: kept as history, never
-- counted.
CREATE TABLE late_results (
    trial_id        TEXT NOT NULL REFERENCES trials(id),
    attempt         BIGINT NOT NULL,
    worker_id       TEXT NOT NULL,
    score           DOUBLE PRECISION NOT NULL,
    metrics_json    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL
);

-- Validation accuracy (and the objective's named metrics, a JSON object or NULL) after each
-- epoch, as reported by heartbeats.
CREATE TABLE trial_epochs (
    trial_id        TEXT NOT NULL REFERENCES trials(id),
    epoch           BIGINT NOT NULL,
    val_accuracy    DOUBLE PRECISION NOT NULL,
    train_loss      DOUBLE PRECISION,
    metrics_json    TEXT,
    PRIMARY KEY (trial_id, epoch)
);

-- One row per annealing chain of an experiment.
CREATE TABLE chains (
    experiment_id       TEXT NOT NULL REFERENCES experiments(id),
    chain               BIGINT NOT NULL,
    temperature         DOUBLE PRECISION NOT NULL,
    current_trial_id    TEXT REFERENCES trials(id),
    best_score          DOUBLE PRECISION,
    since_improvement   BIGINT NOT NULL DEFAULT 0,
    results             BIGINT NOT NULL DEFAULT 0,
    accepted            BIGINT NOT NULL DEFAULT 0,
    reheats             BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, chain)
);

-- Tallies kept by triggers (as SQLite's 0005_scale.sql): per experiment, kind and status, how
-- many trials and the sum of their `epoch`; per chain how many training trials are open
-- (queued or held) and how many there are in all.
CREATE TABLE trial_tallies (
    experiment_id   TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               BIGINT NOT NULL DEFAULT 0,
    epochs          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, kind, status)
);

CREATE TABLE chain_tallies (
    experiment_id   TEXT NOT NULL,
    chain           BIGINT NOT NULL,
    open            BIGINT NOT NULL DEFAULT 0,
    total           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, chain)
);

-- The functions keep the search_path the migration ran with, so the triggers find these tables
-- whatever the writing session's search_path.

-- Adds `dn` trials and `de` epochs to one trial tally.
CREATE FUNCTION explore_tally_add(e TEXT, k TEXT, s TEXT, dn BIGINT, de BIGINT)
RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO trial_tallies (experiment_id, kind, status, n, epochs)
        VALUES (e, k, s, dn, de)
        ON CONFLICT (experiment_id, kind, status)
        DO UPDATE SET n = trial_tallies.n + EXCLUDED.n,
                      epochs = trial_tallies.epochs + EXCLUDED.epochs;
$$;

-- Adds `dopen` open trials and `dtotal` trials to one chain tally.
CREATE FUNCTION explore_chain_tally_add(e TEXT, c BIGINT, dopen BIGINT, dtotal BIGINT)
RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO chain_tallies (experiment_id, chain, open, total)
        VALUES (e, c, dopen, dtotal)
        ON CONFLICT (experiment_id, chain)
        DO UPDATE SET open = chain_tallies.open + EXCLUDED.open,
                      total = chain_tallies.total + EXCLUDED.total;
$$;

-- Whether a trial in this status is open (queued or held).
CREATE FUNCTION explore_is_open(s TEXT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s IN ('queued', 'leased', 'running') THEN 1::BIGINT ELSE 0::BIGINT END;
$$;

-- Keeps both tallies right on every write of `trials`. Two tally rows a change touches are
-- updated in a fixed order (by key), so concurrent transactions lock them in the same order.
CREATE FUNCTION explore_trials_tally() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM explore_tally_add(NEW.experiment_id, NEW.kind, NEW.status, 1, NEW.epoch);
        IF NEW.kind = 'train' THEN
            PERFORM explore_chain_tally_add(NEW.experiment_id, NEW.chain,
                                            explore_is_open(NEW.status), 1);
        END IF;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM explore_tally_add(OLD.experiment_id, OLD.kind, OLD.status, -1, -OLD.epoch);
        IF OLD.kind = 'train' THEN
            PERFORM explore_chain_tally_add(OLD.experiment_id, OLD.chain,
                                            -explore_is_open(OLD.status), -1);
        END IF;
        RETURN NULL;
    END IF;
    -- UPDATE
    IF (OLD.experiment_id, OLD.kind, OLD.status) = (NEW.experiment_id, NEW.kind, NEW.status) THEN
        IF OLD.epoch <> NEW.epoch THEN
            PERFORM explore_tally_add(NEW.experiment_id, NEW.kind, NEW.status, 0,
                                      NEW.epoch - OLD.epoch);
        END IF;
    ELSIF (OLD.experiment_id, OLD.kind, OLD.status) < (NEW.experiment_id, NEW.kind, NEW.status) THEN
        PERFORM explore_tally_add(OLD.experiment_id, OLD.kind, OLD.status, -1, -OLD.epoch);
        PERFORM explore_tally_add(NEW.experiment_id, NEW.kind, NEW.status, 1, NEW.epoch);
    ELSE
        PERFORM explore_tally_add(NEW.experiment_id, NEW.kind, NEW.status, 1, NEW.epoch);
        PERFORM explore_tally_add(OLD.experiment_id, OLD.kind, OLD.status, -1, -OLD.epoch);
    END IF;
    IF OLD.kind = 'train' AND NEW.kind = 'train'
       AND (OLD.experiment_id, OLD.chain) = (NEW.experiment_id, NEW.chain) THEN
        IF explore_is_open(OLD.status) <> explore_is_open(NEW.status) THEN
            PERFORM explore_chain_tally_add(NEW.experiment_id, NEW.chain,
                explore_is_open(NEW.status) - explore_is_open(OLD.status), 0);
        END IF;
    ELSE
        IF OLD.kind = 'train' THEN
            PERFORM explore_chain_tally_add(OLD.experiment_id, OLD.chain,
                                            -explore_is_open(OLD.status), -1);
        END IF;
        IF NEW.kind = 'train' THEN
            PERFORM explore_chain_tally_add(NEW.experiment_id, NEW.chain,
                                            explore_is_open(NEW.status), 1);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER trials_tally_insert AFTER INSERT ON trials
    FOR EACH ROW EXECUTE FUNCTION explore_trials_tally();

CREATE TRIGGER trials_tally_update AFTER UPDATE OF status, epoch, kind, chain, experiment_id
    ON trials FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.epoch IS DISTINCT FROM NEW.epoch
          OR OLD.kind IS DISTINCT FROM NEW.kind OR OLD.chain IS DISTINCT FROM NEW.chain
          OR OLD.experiment_id IS DISTINCT FROM NEW.experiment_id)
    EXECUTE FUNCTION explore_trials_tally();

CREATE TRIGGER trials_tally_delete AFTER DELETE ON trials
    FOR EACH ROW EXECUTE FUNCTION explore_trials_tally();

-- Indexes (as in SQLite's migrations):
-- * the queue and held trials by status;
CREATE INDEX trials_by_status ON trials (status, experiment_id, seq);
-- * the accepted pool by score, for a Boltzmann draw over the best accepted trials;
CREATE INDEX trials_accepted_by_score ON trials (experiment_id, score DESC, seq)
    WHERE kind = 'train' AND status = 'completed' AND accepted;
-- * the duplicate check on architecture and hyperparameters together; the hyperparameters by
--   their hash, so that a long JSON text never exceeds a B-tree entry's size (the query
--   compares the hash and then the text);
CREATE INDEX trials_by_candidate ON trials (experiment_id, genome_hash, md5(hparams_json));
-- * the trials a worker holds;
CREATE INDEX trials_held_by_worker ON trials (worker_id) WHERE status IN ('leased', 'running');
-- * epoch reports by epoch, for early stopping's peers;
CREATE INDEX trial_epochs_by_epoch ON trial_epochs (epoch, trial_id);
-- * the dashboard's trial pages by score and its best-so-far curve;
CREATE INDEX trials_by_score ON trials (experiment_id, score, seq);
CREATE INDEX trials_by_finish ON trials (experiment_id, finished_at_ms, seq, status, kind, score);
-- * the final trials of an experiment.
CREATE INDEX trials_final ON trials (experiment_id, seq) WHERE phase = 'final';
