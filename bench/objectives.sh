#!/usr/bin/env bash
# Training-objective benchmarks; the first argument picks which (default s3), the rest go to it.
#
#   bash bench/objectives.sh [s3] [--seeds N] [--epochs E] [--train-subset N] [--threads T] [--out DIR]
#   bash bench/objectives.sh s5 [--seeds N] [--epochs E] [--per-domain N] [--threads T] [--out DIR]
#   bash bench/objectives.sh all          (s3 then s5, each with its defaults)
#
# S3 (equivalent-learning-rate mode, bench/objectives/s3.py): a batch-norm CNN of about 95k
# parameters on a Fashion-MNIST subset, (a) a 25-point (learning rate x weight decay) grid,
# (b) 5 random (learning rate, weight decay) trials, (c) ELR mode with 5 ELR values; test
# accuracy of the best-validation trial against the number of trials, 3 seeds. Writes
# bench/out/objectives/s3.jsonl (every trial) and s3.md (the table). About 20 minutes on a
# 2-core machine.
#
# S5 (domain disentanglement, bench/objectives/s5.py): rotated Fashion-MNIST (train 15-75
# degrees, targets 0 and 90) and MNIST -> scikit-learn digits; pooled training (ERM), DANN and
# disentangle on a batch-norm CNN of about 105k parameters, selection on training-domain
# validation, 3 seeds. Writes bench/objectives/results/s5.jsonl (every configuration), s5.md
# (the table) and s5.log. About 20 minutes on a 2-core machine with --threads 1.
#
# Needs target/debug/worker (`cargo build --workspace --bins`), Fashion-MNIST, MNIST and digits
# (`scripts/setup.sh`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
which=s3
case "${1:-}" in
    s3|s5|all) which="$1"; shift ;;
esac
[ -x target/debug/worker ] || cargo build -p explore-worker --bin worker --quiet
case "$which" in
    s3) exec python3 bench/objectives/s3.py "$@" ;;
    s5) exec python3 bench/objectives/s5.py "$@" ;;
    all)
        [ $# -eq 0 ] || { echo "bench/objectives.sh all takes no flags; run s3 and s5 separately" >&2; exit 2; }
        python3 bench/objectives/s3.py
        exec python3 bench/objectives/s5.py ;;
esac
