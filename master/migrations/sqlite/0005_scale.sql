-- Scale (issue 11): the calls on the hot path (proposal, acquire, complete, heartbeat, status)
-- must not slow down as the pool grows, so nothing there may read every trial.
--
-- 1. Tallies kept by triggers: per experiment, kind and status, how many trials and the sum of
--    their `epoch` (trial counts and the epoch budget), and per chain how many trials are open
--    (queued or held) and how many there are in all (the least-loaded chain). Every path that
--    writes `trials` (the scheduler, migrations, a bulk pre-fill) keeps them right.
CREATE TABLE trial_tallies (
    experiment_id   TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               INTEGER NOT NULL DEFAULT 0,
    epochs          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, kind, status)
) WITHOUT ROWID;

CREATE TABLE chain_tallies (
    experiment_id   TEXT NOT NULL,
    chain           INTEGER NOT NULL,
    open            INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, chain)
) WITHOUT ROWID;

INSERT INTO trial_tallies (experiment_id, kind, status, n, epochs)
    SELECT experiment_id, kind, status, COUNT(*), COALESCE(SUM(epoch), 0)
      FROM trials GROUP BY experiment_id, kind, status;

INSERT INTO chain_tallies (experiment_id, chain, open, total)
    SELECT experiment_id, chain, SUM(status IN ('queued', 'leased', 'running')), COUNT(*)
      FROM trials WHERE kind = 'train' GROUP BY experiment_id, chain;

CREATE TRIGGER trials_tally_insert AFTER INSERT ON trials BEGIN
    INSERT INTO trial_tallies (experiment_id, kind, status, n, epochs)
        VALUES (NEW.experiment_id, NEW.kind, NEW.status, 1, NEW.epoch)
        ON CONFLICT (experiment_id, kind, status)
        DO UPDATE SET n = n + 1, epochs = epochs + excluded.epochs;
    INSERT INTO chain_tallies (experiment_id, chain, open, total)
        SELECT NEW.experiment_id, NEW.chain, NEW.status IN ('queued', 'leased', 'running'), 1
         WHERE NEW.kind = 'train'
        ON CONFLICT (experiment_id, chain)
        DO UPDATE SET open = open + excluded.open, total = total + 1;
END;

CREATE TRIGGER trials_tally_update AFTER UPDATE OF status, epoch, kind, chain, experiment_id
    ON trials BEGIN
    UPDATE trial_tallies SET n = n - 1, epochs = epochs - OLD.epoch
     WHERE experiment_id = OLD.experiment_id AND kind = OLD.kind AND status = OLD.status;
    INSERT INTO trial_tallies (experiment_id, kind, status, n, epochs)
        VALUES (NEW.experiment_id, NEW.kind, NEW.status, 1, NEW.epoch)
        ON CONFLICT (experiment_id, kind, status)
        DO UPDATE SET n = n + 1, epochs = epochs + excluded.epochs;
    UPDATE chain_tallies SET open = open - (OLD.status IN ('queued', 'leased', 'running')),
            total = total - 1
     WHERE OLD.kind = 'train' AND experiment_id = OLD.experiment_id AND chain = OLD.chain;
    INSERT INTO chain_tallies (experiment_id, chain, open, total)
        SELECT NEW.experiment_id, NEW.chain, NEW.status IN ('queued', 'leased', 'running'), 1
         WHERE NEW.kind = 'train'
        ON CONFLICT (experiment_id, chain)
        DO UPDATE SET open = open + excluded.open, total = total + 1;
END;

CREATE TRIGGER trials_tally_delete AFTER DELETE ON trials BEGIN
    UPDATE trial_tallies SET n = n - 1, epochs = epochs - OLD.epoch
     WHERE experiment_id = OLD.experiment_id AND kind = OLD.kind AND status = OLD.status;
    UPDATE chain_tallies SET open = open - (OLD.status IN ('queued', 'leased', 'running')),
            total = total - 1
     WHERE OLD.kind = 'train' AND experiment_id = OLD.experiment_id AND chain = OLD.chain;
END;

-- 2. Indexes for the remaining per-call lookups:
--    * the accepted pool by score, for a Boltzmann draw over the best accepted trials (a
--      bounded candidate set) instead of over every accepted trial;
--    * the duplicate check on architecture and hyperparameters together (the genome-only
--      index walked every trial of an architecture, and one architecture can have millions);
--    * the trials a worker holds (deregistration);
--    * epoch reports by epoch, for early stopping's peers.
CREATE INDEX trials_accepted_by_score ON trials (experiment_id, score DESC, seq)
    WHERE kind = 'train' AND status = 'completed' AND accepted = 1;
DROP INDEX trials_by_genome;
CREATE INDEX trials_by_candidate ON trials (experiment_id, genome_hash, hparams_json);
CREATE INDEX trials_held_by_worker ON trials (worker_id)
    WHERE status IN ('leased', 'running');
CREATE INDEX trial_epochs_by_epoch ON trial_epochs (epoch, trial_id);
