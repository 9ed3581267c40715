#!/usr/bin/env bash
# What data augmentation costs in training time, side by side in the same run: `worker train`
# of the cnn3 preset on SUBSET examples of Fashion-MNIST, one CPU thread, with every
# augmentation on at its largest searched strength (crop padding 4, flip 0.5, erasing 0.5)
# against the same trial without augmentation (same seed, data and schedule), run alternately
# ROUNDS times. Prints a markdown table with the time ratio.
#
#   bash bench/augment_cost.sh [SUBSET] [ROUNDS]     (defaults: 6000 examples, 3 rounds)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
subset="${1:-6000}"
rounds="${2:-3}"
bash scripts/setup.sh >/dev/null
cargo build -p explore-worker --bin worker --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
out="$(mktemp -d)"
base='"optimizer":"adamw","learning_rate":0.003,"schedule":"one_cycle","batch_size":64,"weight_decay":0.0001,"epochs":2'
echo "{$base}" >"$out/plain.json"
echo "{$base,\"augment\":{\"crop_pad\":4,\"flip\":0.5,\"erase\":0.5}}" >"$out/augmented.json"

for r in $(seq 1 "$rounds"); do
  for kind in plain augmented; do
    "$bin/worker" train --genome preset:cnn3 --hparams "$out/$kind.json" --train-subset "$subset" \
      --threads 1 --device cpu --seed "$r" 2>/dev/null >"$out/$kind-$r.json"
  done
done

python3 - "$out" "$rounds" "$subset" <<'PY'
import json, sys, statistics as st
out, rounds, subset = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda name: [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)]
plain, aug = load("plain"), load("augmented")
mean = lambda rows, k: st.mean(r[k] for r in rows)
print(f"cnn3, 2 epochs on {subset} Fashion-MNIST examples, batch 64, 1 thread, {rounds} alternating rounds")
print()
print("| training | train seconds (mean) | val accuracy (mean) |")
print("|---|---|---|")
for name, rows in (("without augmentation", plain), ("crop 4 + flip 0.5 + erase 0.5", aug)):
    print(f"| {name} | {mean(rows,'train_seconds'):.1f} | {mean(rows,'val_accuracy'):.4f} |")
print()
print(f"time ratio augmented / plain: {mean(aug,'train_seconds') / mean(plain,'train_seconds'):.3f}")
PY
