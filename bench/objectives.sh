#!/usr/bin/env bash
# Training-objective benchmarks. S3 (equivalent-learning-rate mode): a batch-norm CNN of about
# 95k parameters on a Fashion-MNIST subset, (a) a 25-point (learning rate x weight decay) grid,
# (b) 5 random (learning rate, weight decay) trials, (c) ELR mode with 5 ELR values; test
# accuracy of the best-validation trial against the number of trials, 3 seeds.
#
#   bash bench/objectives.sh [--seeds N] [--epochs E] [--train-subset N] [--threads T] [--out DIR]
#
# Needs target/debug/worker (`cargo build --workspace --bins`); writes bench/out/objectives/
# s3.jsonl (every trial) and s3.md (the table). About 20 minutes on a 2-core machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
[ -x target/debug/worker ] || cargo build -p explore-worker --bin worker --quiet
exec python3 bench/objectives/s3.py "$@"
