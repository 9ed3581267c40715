#!/usr/bin/env bash
# Transfer benchmarks.
#
# s4 (default): gradient-mixing fine-tune. A Fashion-MNIST model adapted to a stream of six
#   scenes (rotated 30/60/90 degrees, inverted, low contrast with noise, MNIST; 10 examples per
#   class each, one pass) with plain fine-tuning, experience replay, A-GEM and gradient mixing;
#   average accuracy over the scenes and forgetting of the source, 3 seeds. About 5 minutes on a
#   2-core machine. Writes <out>/s4.jsonl, s4.md and s4.log.
# s2: predictor quality. A zoo of 14 source models trained on a Fashion-MNIST subset, probed
#   (LogME/LEEP/NCE) and brute-force fine-tuned on 4 target tasks (MNIST 50 per class, digits,
#   Fashion-MNIST rotated 90 degrees few-shot, MNIST low contrast with noise) with 4 settings;
#   the predictor (leave-one-task-out) against LogME, source accuracy, parameter count and
#   random: weighted Kendall tau, top-1 regret, compute. About 13 minutes on a 2-core machine.
#   Writes <out>/s2.jsonl, s2.md and s2.log.
# e2e: a transfer experiment end to end through the real cluster (master serve + worker join):
#   a source exploration on a Fashion-MNIST subset, a probing transfer to digits (the predictor's
#   history), then per seed on MNIST 50 per class: (T) a [transfer] experiment (probes, the
#   predictor, several models x settings, a fifth of (b)'s epochs), (a) the source's best model
#   fine-tuned once with the default settings, (b) the explorer from scratch; best
#   validation-selected test accuracy and compute (epochs + probes, seconds). About 8 minutes
#   on a 2-core machine. Writes <out>/e2e.jsonl, e2e.md and e2e.log.
# all: s4, then s2, then e2e.
#
#   bash bench/transfer.sh [s4] [--seeds N] [--source-subset N] [--lr LR] [--threads T] [--out DIR]
#   bash bench/transfer.sh s2 [--source-subset N] [--models N] [--tasks N] [--threads T]
#                             [--jobs J] [--evaluate-only] [--out DIR]
#   bash bench/transfer.sh e2e [--seeds N] [--source-subset N] [--source-epochs E]
#                              [--scratch-epochs E] [--transfer-epochs E] [--models M]
#                              [--workers W] [--threads T] [--keep-work] [--out DIR]
#   bash bench/transfer.sh all [--out DIR]
#
# Needs target/debug/worker and the datasets of scripts/setup.sh (default out:
# bench/transfer/results); s2 also builds the example master/examples/transfer_predictor.rs,
# e2e also needs target/debug/master.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
which=s4
case "${1:-}" in
    s4|s2|e2e|all) which="$1"; shift ;;
esac
[ -x "${CARGO_TARGET_DIR:-target}/debug/worker" ] || cargo build -p explore-worker --bin worker --quiet
if [ "$which" = e2e ] || [ "$which" = all ]; then
    [ -x "${CARGO_TARGET_DIR:-target}/debug/master" ] || cargo build -p explore-master --bin master --quiet
fi
if [ "$which" = s2 ] || [ "$which" = all ]; then
    cargo build -p explore-master --example transfer_predictor --quiet
fi
case "$which" in
    s4) exec python3 bench/transfer/s4.py "$@" ;;
    s2) exec python3 bench/transfer/s2.py "$@" ;;
    e2e) exec python3 bench/transfer/e2e.py "$@" ;;
    all)
        python3 bench/transfer/s4.py "$@"
        python3 bench/transfer/s2.py "$@"
        exec python3 bench/transfer/e2e.py "$@"
        ;;
esac
