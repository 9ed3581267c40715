#!/usr/bin/env bash
# Transfer benchmarks. S4 (gradient-mixing fine-tune): a Fashion-MNIST model adapted to a stream
# of six scenes (rotated 30/60/90 degrees, inverted, low contrast with noise, MNIST; 10 examples
# per class each, one pass) with plain fine-tuning, experience replay, A-GEM and gradient mixing;
# average accuracy over the scenes and forgetting of the source, 3 seeds.
#
#   bash bench/transfer.sh [--seeds N] [--source-subset N] [--lr LR] [--threads T] [--out DIR]
#
# Needs target/debug/worker and the datasets of scripts/setup.sh; writes <out>/s4.jsonl,
# s4.md and s4.log (default bench/transfer/results). About 5 minutes on a 2-core machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
[ -x "${CARGO_TARGET_DIR:-target}/debug/worker" ] || cargo build -p explore-worker --bin worker --quiet
exec python3 bench/transfer/s4.py "$@"
