"""Optuna with RDB storage (SQLite or PostgreSQL): N processes share one study through the
database, each running trials of a trivial objective until the time is up. Prints one JSON line.

    optuna_rdb.py SAMPLER PROCESSES SECONDS WORKDIR [STORAGE_URL]

Without STORAGE_URL the study lives in a fresh SQLite file in WORKDIR (system
`optuna-rdb-sqlite`); with a postgres:// or postgresql:// URL (a fresh, empty database; psycopg2
installed) it lives there (system `optuna-rdb-postgres`)."""
import json
import multiprocessing as mp
import os
import sys
import time

import optuna


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_float("y", -10, 10)
    return (x - 2) ** 2 + (y + 1) ** 2


def sampler_of(name, seed):
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def run(storage, study_name, sampler, seconds, seed):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler_of(sampler, seed))
    study.optimize(objective, timeout=seconds)


def storage_of(sampler, workdir, url):
    """The SQLAlchemy URL of the study's storage and the system's name."""
    if not url or url.startswith("sqlite"):
        db = os.path.join(workdir, f"optuna-{sampler}.db")
        if os.path.exists(db):
            os.remove(db)
        return f"sqlite:///{db}", "optuna-rdb-sqlite"
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            # SQLAlchemy names the dialect `postgresql` and the driver after a `+`.
            return "postgresql+psycopg2://" + url[len(scheme):], "optuna-rdb-postgres"
    if url.startswith("postgresql+"):
        return url, "optuna-rdb-postgres"
    sys.exit(f"unsupported storage URL {url!r} (sqlite or postgres)")


def main():
    sampler, processes, seconds, workdir = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    url = sys.argv[5] if len(sys.argv) > 5 else ""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, system = storage_of(sampler, workdir, url)
    study_name = f"bench-{sampler}"
    optuna.create_study(study_name=study_name, storage=storage, direction="minimize")
    started = time.time()
    procs = [mp.Process(target=run, args=(storage, study_name, sampler, seconds, i)) for i in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.time() - started
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
    print(json.dumps({
        "system": system,
        "optuna": optuna.__version__,
        "sampler": sampler,
        "processes": processes,
        "trials": done,
        "seconds": elapsed,
        "trials_per_second": done / elapsed,
    }))


if __name__ == "__main__":
    main()
