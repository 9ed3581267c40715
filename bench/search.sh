#!/usr/bin/env bash
# Search benchmark: the annealing explorer against random search, Optuna's TPE, multi-fidelity
# TPE (Hyperband pruning) and population-based training on Fashion-MNIST, at an equal compute
# budget (the same total number of training epochs per run,
# the same data subset and split, the same trainer binary).
#
#   bash bench/search.sh [--budget EPOCHS] [--seeds N] [--jobs J] [--train-subset N] [--out DIR]
#                        [--methods explore,explore-flat,explore-defaults,random,tpe,random-long,
#                                   tpe-long,hyperband,pbt]
#                        [--first-seed S] [--threads T] [--long-epochs LOW,HIGH]
#                        [--hyperband-epochs LOW,HIGH] [--pbt-population P]
#                        [--pbt-ready R] [--pbt-schedule constant|member]
#                        [--explore-label NAME] [--explorer-config FILE] [--explore-set K=V]...
#                        [--resume]                      (all flags: --help)
#
# Defaults: 60 epochs per run, seeds 1..3, 2 runs at a time, one torch thread per trainer,
# 12000 training examples (10000 train / 2000 validation, split by the run's seed), the full
# 10000-example test set, all nine methods (27 runs); about 4 hours on a 2-core machine (each
# run 10-20 minutes with 2 side by side; explore,random,tpe alone: about 40-60 minutes).
#
# Methods (bench/search/):
#   explore  `master serve` + one `worker join` on loopback; the spec (explorer.py) is generated
#            from the space (space.py): 2 adaptive annealing chains, median early stopping,
#            weight inheritance; `master trials --json` gives the trials back.
#   explore-flat  the same explorer with `[search.flat]` (space.explorer_flat_section()): its
#            architecture moves stay in the flat space the baselines sample (a stage's width,
#            kernel or conv count, a stage more or less, the network's activation or batch-norm,
#            the head's dropout and dense layer), so explore - explore-flat is what the wider
#            architecture language buys and explore-flat - the baselines what the search method
#            and weight inheritance buy.
#   explore-defaults  the explorer as a user who sets nothing but the space would run it: the
#            spec leaves [annealing], [early_stopping] and [inheritance] to the master's defaults
#            (since 2026-12-07 the same settings as explore; the committed runs in
#            bench/search/results/defaults/ measured the earlier defaults: one chain per worker
#            slot, exponential cooling from 0.02, reheat after 6).
#   random   Optuna's RandomSampler over a flat parametrisation of the same space (baseline.py),
#            every trial a `worker train` run.
#   tpe      the same driver with Optuna's TPESampler.
#   random-long, tpe-long  random and tpe with per-trial epochs drawn from [2, 16] instead of
#            [2, 4] (--long-epochs), so that they too can spend their budget on a few models trained
#            as long as the explorer's deepest lineages (13-17 epochs at a 60-epoch budget).
#   hyperband  the same driver: TPESampler configured as for tpe, plus
#            optuna.pruners.HyperbandPruner(min_resource=1, max_resource=16, reduction_factor=3)
#            (rungs at 1, 3, 9 epochs); per-trial epochs drawn from [2, 16] instead of [2, 4]
#            (--hyperband-epochs; max_resource = the top of the range), so one model can get as
#            many epochs as the explorer's deepest lineages (13-17 epochs at a 60-epoch budget).
#            The trainer runs with --log-format json; the validation accuracy of every epoch is
#            reported to the pruner and a pruned trainer is stopped at once.
#   pbt      population-based training in the harness (pbt.py; Ray Tune is not needed): population
#            4 (the two seeds, then the random baseline's first draws), rounds of 2 epochs with
#            `worker train --parent-checkpoint/--save-checkpoint`; after each round the bottom
#            quartile copies a top-quartile member's architecture, weights and hyperparameters
#            (exploit) and perturbs learning rate and weight decay by x0.8/x1.2, resampling with
#            probability 0.25 (explore). Constant learning rate within a round by default (PBT's
#            perturbations are the schedule; --pbt-schedule member restarts each member's own
#            schedule every round instead). Each round of each member is one JSONL line.
# Charged epochs, every method: the epochs trained (a pruned trial: the epochs it finished before
# it was stopped; the explorer: the current attempt's); a failed trial: its planned epochs.
# Every method evaluates the same two seed configurations first (cnn2 and a 3-stage CNN), with
# the same training seeds (PBT: as its first round, 2 epochs at a constant rate). Draws that
# break the space's constraints (checked with `worker analyze`) cost no epochs.
#
# Output: per run bench/out/search/<method>-seed<S>.jsonl (one line per finished trial, in
# finishing order, with cum_epochs) and .meta.json, logs in bench/out/search/runs/; then the
# report (report.py): bench/out/search/table.md (also printed) and the plot
# bench/search_curve.png (<out>/search_curve.png when --out is given). "Best at b epochs" is the
# test accuracy of the highest-validation completed trial finished within b epochs.
#
# Ablations: e.g. `--methods explore --explore-label explore-noinherit
# --explore-set inheritance.enabled=false` adds a run set beside the existing ones.
# Needs target/debug/{master,worker} (built beforehand: `cargo build --workspace --bins`) and
# creates the Python environment bench/.venv (optuna, matplotlib) on first use.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
# run.py stops its runs itself on Ctrl-C / SIGTERM; then stop here too, without the report.
trap 'echo "interrupted" >&2; exit 130' INT TERM

venv="$root/bench/.venv"
if ! "$venv/bin/python" -c "import optuna, matplotlib" 2>/dev/null; then
  echo "==> creating $venv (optuna, matplotlib)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet optuna matplotlib
fi
py="$venv/bin/python"

for arg in "$@"; do
  case "$arg" in -h|--help) exec "$py" bench/search/run.py --help ;; esac
done

bin="${CARGO_TARGET_DIR:-$root/target}/debug"
for b in master worker; do
  if [ ! -x "$bin/$b" ]; then
    echo "missing $bin/$b: build it first (cargo build --workspace --bins)" >&2
    exit 1
  fi
done

# The report is made from whatever finished, even when a run failed.
status=0
"$py" bench/search/run.py "$@" || status=$?

report_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--budget|--train-subset) report_args+=("$1" "$2"); shift 2 ;;
    --out=*|--budget=*|--train-subset=*) report_args+=("$1"); shift ;;
    *) shift ;;
  esac
done
echo
"$py" bench/search/report.py "${report_args[@]}" || status=$?
exit "$status"
