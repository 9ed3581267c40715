#!/usr/bin/env bash
# Side by side, same run: `worker train` (tch) against plain PyTorch on the cnn2 preset, full
# Fashion-MNIST (54k train / 6k validation / 10k test), AdamW 2e-3 one-cycle, batch 128, one
# CPU thread each, run alternately ROUNDS times. Prints a markdown table with ratios.
#
#   bash bench/trainer_vs_pytorch.sh [EPOCHS] [ROUNDS]     (defaults: 2 epochs, 2 rounds)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
epochs="${1:-2}"
rounds="${2:-2}"
bash scripts/setup.sh >/dev/null
cargo build -p explore-worker --bin worker --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
python="$(readlink -f .libtorch)/../../../../bin/python"
out="$(mktemp -d)"
hp="$out/hparams.json"
echo "{\"optimizer\":\"adamw\",\"learning_rate\":0.002,\"schedule\":\"one_cycle\",\"batch_size\":128,\"weight_decay\":0.0001,\"epochs\":$epochs}" >"$hp"

for r in $(seq 1 "$rounds"); do
  "$bin/worker" train --genome preset:cnn2 --hparams "$hp" --threads 1 --device cpu --seed "$r" 2>/dev/null >"$out/explore-$r.json"
  "$python" bench/pytorch_cnn2.py --epochs "$epochs" --threads 1 --seed "$r" >"$out/pytorch-$r.json"
done

python3 - "$out" "$rounds" "$epochs" <<'PY'
import json, sys, statistics as st
out, rounds, epochs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda name: [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)]
ex, pt = load("explore"), load("pytorch")
mean = lambda rows, k: st.mean(r[k] for r in rows)
print(f"cnn2, {epochs} epochs, full Fashion-MNIST, 1 thread, {rounds} alternating rounds")
print()
print("| trainer | train seconds (mean) | val accuracy (mean) | test accuracy (mean) |")
print("|---|---|---|---|")
for name, rows in (("explore `worker train` (tch)", ex), ("PyTorch 2.11 (same model and schedule)", pt)):
    print(f"| {name} | {mean(rows,'train_seconds'):.1f} | {mean(rows,'val_accuracy'):.4f} | {mean(rows,'test_accuracy'):.4f} |")
print()
print(f"time ratio explore / PyTorch: {mean(ex,'train_seconds') / mean(pt,'train_seconds'):.2f}")
print(f"test accuracy difference explore - PyTorch: {mean(ex,'test_accuracy') - mean(pt,'test_accuracy'):+.4f}")
PY
