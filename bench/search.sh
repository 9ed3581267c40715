#!/usr/bin/env bash
# Search benchmark: the annealing explorer against random search and Optuna's TPE on
# Fashion-MNIST, at an equal compute budget (the same total number of training epochs per run,
# the same data subset and split, the same trainer binary).
#
#   bash bench/search.sh [--budget EPOCHS] [--seeds N] [--jobs J] [--train-subset N] [--out DIR]
#                        [--methods explore,random,tpe] [--first-seed S] [--threads T]
#                        [--explore-label NAME] [--explorer-config FILE] [--explore-set K=V]...
#                        [--resume]                      (all flags: --help)
#
# Defaults: 60 epochs per run, seeds 1..3, 2 runs at a time, one torch thread per trainer,
# 12000 training examples (10000 train / 2000 validation, split by the run's seed), the full
# 10000-example test set; about 40-60 minutes on a 2-core machine.
#
# Methods (bench/search/):
#   explore  `master serve` + one `worker join` on loopback; the spec (explorer.py) is generated
#            from the space (space.py): 2 adaptive annealing chains, median early stopping,
#            weight inheritance; `master trials --json` gives the trials back.
#   random   Optuna's RandomSampler over a flat parametrisation of the same space (baseline.py),
#            every trial a `worker train` run.
#   tpe      the same driver with Optuna's TPESampler.
# Every method evaluates the same two seed configurations first (cnn2 and a 3-stage CNN). Draws
# that break the space's constraints (checked with `worker analyze`) cost no epochs.
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
