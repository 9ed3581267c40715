"""Baseline search driver of the search benchmark: one run of Optuna's TPESampler (`tpe`),
RandomSampler (`random`) or TPESampler with the HyperbandPruner (`hyperband`) over the flat
parametrisation of `space.py`, at a budget of training epochs. The methods share this code and
differ only by the sampler, the pruner and the per-trial epoch range.

The two seed configurations are enqueued first. Every later configuration is built into a
genome and checked with `worker analyze` against the space's constraints before training; one
that breaks them costs no epochs and is told to the study as pruned (TPE learns to avoid it,
random search simply draws again). A trained trial runs `worker train` with the run's split
seed and a training seed derived from (run seed, optuna trial number); its epochs are cut to
what is left of the budget, as the explorer does. A trial whose trainer fails is recorded as
`failed` and charged its planned epochs (conservative).

`--epochs LOW,HIGH` with `--label` gives the long-trial rows of random search and TPE
(`random-long`, `tpe-long`: the same samplers with trials of up to as many epochs as the
explorer's deepest lineages, so they too can spend their budget on few, long-trained models).

`hyperband` (multi-fidelity TPE): the sampler is configured exactly as for `tpe`; the study has
`optuna.pruners.HyperbandPruner(min_resource=1, max_resource=E, reduction_factor=3)` where E is
the top of its per-trial epoch range (`--epochs LOW,HIGH`, default 2,16: the explorer's deepest
lineages reach 13-17 epochs at the 60-epoch budget, so one model may get as many epochs as the
explorer's winner). The trainer runs with `--log-format json`; its validation accuracy after
every epoch is reported (`trial.report(val, epoch)`) and when `trial.should_prune()` says so the
trainer is stopped at once: the trial is recorded as `pruned` and charged the epochs it trained
(the rule of every method: charged epochs = epochs trained; failed trials their planned epochs).
The study has a fixed name, so Hyperband's bracket of each trial (a hash of the study name and
trial number) is reproducible. As in Optuna, TPE under Hyperband models each bracket's trials
separately, so its 8 start-up trials are per bracket (3 brackets): at a 60-epoch budget most
`hyperband` draws are still random start-up draws.

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
METHODS = ("random", "tpe", "hyperband")
# Hyperband (the `hyperband` method): rungs at 1, 3, 9 epochs (3 brackets for max 16).
HYPERBAND_MIN_RESOURCE = 1
HYPERBAND_REDUCTION_FACTOR = 3
HYPERBAND_EPOCHS = (2, 16)
# Give up when this many draws in a row break the constraints (the space would be unusable).
MAX_CONSECUTIVE_REJECTS = 2000


def make_sampler(method, seed):
    """The Optuna sampler of `method`, seeded by the run seed."""
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method in ("tpe", "hyperband"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS,
                                              multivariate=True, group=True)
    raise ValueError(f"unknown method {method!r}")


def make_pruner(method, epochs_range):
    """The pruner of `method`: Hyperband for `hyperband`, none for the others."""
    if method == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=HYPERBAND_MIN_RESOURCE,
                                              max_resource=epochs_range[1],
                                              reduction_factor=HYPERBAND_REDUCTION_FACTOR)
    return optuna.pruners.NopPruner()


def new_study(method, seed, epochs_range=None):
    """A maximising study with the two seed configurations enqueued."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(method, seed),
                                pruner=make_pruner(method, epochs_range or space.SPACE["epochs"]),
                                study_name=f"search-bench-{method}-seed{seed}")
    for _, params in space.SEEDS:
        study.enqueue_trial(params)
    return study


def check_seed_trial(index, params):
    """The first trials must rebuild the seed configurations' genomes exactly."""
    if index < len(space.SEEDS):
        label, seed_params = space.SEEDS[index]
        if space.build_genome(params) != space.build_genome(seed_params):
            raise AssertionError(f"trial {index} does not rebuild seed {label}")


def run(settings, method, seed, run_dir, epochs_range=None, label=None):
    """One (method, seed) run; writes the run's JSON-lines and metadata files. `epochs_range`
    (low, high) replaces the space's per-trial epoch range; `label` names the run's rows
    (default: the method), e.g. `random-long` for random search over longer trials."""
    space.check_seeds()
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "train.log")
    study = new_study(method, seed, epochs_range)
    out = common.RunOutput(settings, label or method, seed)
    rejected, in_a_row = 0, 0
    try:
        while out.cum_epochs < settings.budget:
            trial = study.ask()
            params = space.suggest_flat(trial, epochs_range)
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
            if method == "hyperband":
                train_trial_pruned(settings, study, trial, params, seed, run_dir, log_path, out)
            else:
                train_trial(settings, study, trial, params, seed, run_dir, log_path, out)
    except BaseException:
        out.abandon()
        raise
    meta = {"rejected": rejected, "sampler": type(study.sampler).__name__,
            "pruner": type(study.pruner).__name__,
            "epochs_range": list(epochs_range or space.SPACE["epochs"])}
    if method == "hyperband":
        meta["pruner_settings"] = {"min_resource": HYPERBAND_MIN_RESOURCE,
                                   "max_resource": epochs_range[1],
                                   "reduction_factor": HYPERBAND_REDUCTION_FACTOR}
    meta["description"] = describe(method, epochs_range)
    out.finish(**meta)
    return out


def describe(method, epochs_range=None):
    """One line saying how `method` was configured (shown by the report)."""
    lo, hi = epochs_range or space.SPACE["epochs"]
    if method == "random":
        return f"Optuna RandomSampler, {lo}-{hi} epochs per trial"
    tpe = f"Optuna TPESampler (multivariate, grouped, {TPE_STARTUP_TRIALS} start-up trials)"
    if method == "tpe":
        return f"{tpe}, {lo}-{hi} epochs per trial"
    return (f"{tpe} + HyperbandPruner(min_resource={HYPERBAND_MIN_RESOURCE}, max_resource={hi}, "
            f"reduction_factor={HYPERBAND_REDUCTION_FACTOR}), {lo}-{hi} epochs per trial, "
            "pruned trials charged the epochs they trained")


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


def train_trial_pruned(settings, study, trial, params, seed, run_dir, log_path, out):
    """Trains one accepted configuration under the study's pruner: the validation accuracy of
    every epoch is reported, and the trainer is stopped as soon as the pruner says so."""
    epochs = min(params["epochs"], settings.budget - out.cum_epochs)
    hparams = space.build_hparams(params, epochs)
    stem = os.path.join(run_dir, f"trial-{trial.number:04d}")
    common.write_json(stem + ".hparams.json", hparams)

    def on_epoch(epoch, val):
        if val is None:
            return False
        trial.report(val, epoch)
        return epoch < epochs and trial.should_prune()

    run = common.train_stream(settings, stem + ".genome.json", stem + ".hparams.json",
                              split_seed=seed, seed=common.trial_seed(seed, trial.number),
                              log_path=log_path, on_epoch=on_epoch)
    result = run["result"]
    if run["stopped"]:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        cum = out.add(trial.number, run["epochs_done"], run["last_val"], None, "pruned",
                      config=params, hparams=hparams, planned_epochs=epochs)
        val = f"{run['last_val']:.4f}, pruned after {run['epochs_done']}/{epochs}"
    elif result is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        cum = out.add(trial.number, epochs, None, None, "failed", config=params,
                      hparams=hparams, planned_epochs=epochs, error=run["error"])
        val = "-"
    else:
        study.tell(trial, result["val_accuracy"])
        cum = out.add(trial.number, result["epochs_run"], result["val_accuracy"],
                      result["test_accuracy"], "completed", config=params, hparams=hparams,
                      planned_epochs=epochs, params=result.get("params"),
                      flops=result.get("flops"), train_seconds=result.get("train_seconds"))
        val = f"{result['val_accuracy']:.4f}"
    print(f"[{out.name}] trial {trial.number}: {epochs} epochs planned, val {val}, "
          f"epochs {cum}/{settings.budget}", file=sys.stderr, flush=True)


def parse_range(text):
    lo, hi = (int(x) for x in text.split(","))
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"bad epoch range {text!r}")
    return lo, hi


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True, choices=list(METHODS))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--settings", required=True, help="JSON of common.Settings")
    ap.add_argument("--epochs", type=parse_range, default=None, metavar="LOW,HIGH",
                    help="per-trial epoch range (default: the space's, 2,16 for hyperband)")
    ap.add_argument("--label", default=None,
                    help="name of the run's rows and files (default: the method)")
    a = ap.parse_args()
    epochs_range = a.epochs or (HYPERBAND_EPOCHS if a.method == "hyperband" else None)
    settings = common.Settings(**json.loads(a.settings))
    label = a.label or a.method
    run_dir = os.path.join(settings.out_dir, "runs", f"{label}-seed{a.seed}")
    run(settings, a.method, a.seed, run_dir, epochs_range, label)


if __name__ == "__main__":
    main()
