"""Baseline search driver of the search benchmark: one run of Optuna's TPESampler (`tpe`) or
RandomSampler (`random`) over the flat parametrisation of `space.py`, at a budget of training
epochs. The two methods share this code and differ only by the sampler.

The two seed configurations are enqueued first. Every later configuration is built into a
genome and checked with `worker analyze` against the space's constraints before training; one
that breaks them costs no epochs and is told to the study as pruned (TPE learns to avoid it,
random search simply draws again). A trained trial runs `worker train` with the run's split
seed and a training seed derived from (run seed, optuna trial number); its epochs are cut to
what is left of the budget, as the explorer does. A trial whose trainer fails is recorded as
`failed` and charged its planned epochs (conservative).

    python bench/search/baseline.py --method tpe --seed 1 --settings '{...}'

(`bench/search.sh` calls it; `--settings` is the JSON of `common.Settings`.)
"""
import argparse
import json
import os
import sys
import warnings

import optuna

import common
import space

# TPE with fewer random start-up trials than Optuna's default (10): at a budget of ~20 trials
# the default would leave TPE only half of them. Rejected (over-constraint) draws count as
# start-up trials too. The multivariate, grouped TPE handles the conditional stage parameters.
TPE_STARTUP_TRIALS = 8
# Give up when this many draws in a row break the constraints (the space would be unusable).
MAX_CONSECUTIVE_REJECTS = 2000


def make_sampler(method, seed):
    """The Optuna sampler of `method`, seeded by the run seed."""
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS,
                                              multivariate=True, group=True)
    raise ValueError(f"unknown method {method!r}")


def new_study(method, seed):
    """A maximising study with the two seed configurations enqueued."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(method, seed))
    for _, params in space.SEEDS:
        study.enqueue_trial(params)
    return study


def check_seed_trial(index, params):
    """The first trials must rebuild the seed configurations' genomes exactly."""
    if index < len(space.SEEDS):
        label, seed_params = space.SEEDS[index]
        if space.build_genome(params) != space.build_genome(seed_params):
            raise AssertionError(f"trial {index} does not rebuild seed {label}")


def run(settings, method, seed, run_dir):
    """One (method, seed) run; writes the run's JSON-lines and metadata files."""
    space.check_seeds()
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "train.log")
    study = new_study(method, seed)
    out = common.RunOutput(settings, method, seed)
    rejected, in_a_row = 0, 0
    try:
        while out.cum_epochs < settings.budget:
            trial = study.ask()
            params = space.suggest_flat(trial)
            check_seed_trial(trial.number, params)
            genome_path = os.path.join(run_dir, f"trial-{trial.number:04d}.genome.json")
            common.write_json(genome_path, space.build_genome(params))
            broken = space.violations(common.analyze(settings, genome_path))
            if broken:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                os.remove(genome_path)
                rejected, in_a_row = rejected + 1, in_a_row + 1
                if in_a_row >= MAX_CONSECUTIVE_REJECTS:
                    raise RuntimeError(f"{in_a_row} draws in a row broke the constraints")
                continue
            in_a_row = 0
            train_trial(settings, study, trial, params, seed, run_dir, log_path, out)
    except BaseException:
        out.abandon()
        raise
    out.finish(rejected=rejected, sampler=type(study.sampler).__name__)
    return out


def train_trial(settings, study, trial, params, seed, run_dir, log_path, out):
    """Trains one accepted configuration and records it in the study and the output."""
    epochs = min(params["epochs"], settings.budget - out.cum_epochs)
    hparams = space.build_hparams(params, epochs)
    stem = os.path.join(run_dir, f"trial-{trial.number:04d}")
    common.write_json(stem + ".hparams.json", hparams)
    result, error = common.train(settings, stem + ".genome.json", stem + ".hparams.json",
                                 split_seed=seed, seed=common.trial_seed(seed, trial.number),
                                 log_path=log_path)
    if result is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        cum = out.add(trial.number, epochs, None, None, "failed", config=params,
                      hparams=hparams, error=error)
    else:
        study.tell(trial, result["val_accuracy"])
        cum = out.add(trial.number, result["epochs_run"], result["val_accuracy"],
                      result["test_accuracy"], "completed", config=params, hparams=hparams,
                      params=result.get("params"), flops=result.get("flops"),
                      train_seconds=result.get("train_seconds"))
    val = "-" if result is None else f"{result['val_accuracy']:.4f}"
    print(f"[{out.name}] trial {trial.number}: {epochs} epochs, val {val}, "
          f"epochs {cum}/{settings.budget}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True, choices=["random", "tpe"])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--settings", required=True, help="JSON of common.Settings")
    a = ap.parse_args()
    settings = common.Settings(**json.loads(a.settings))
    run_dir = os.path.join(settings.out_dir, "runs", f"{a.method}-seed{a.seed}")
    run(settings, a.method, a.seed, run_dir)


if __name__ == "__main__":
    main()
