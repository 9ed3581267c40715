#!/usr/bin/env bash
# The GPU path in one command, on a machine with one NVIDIA GPU. Prints one JSON object:
#
#   device            the GPU's name (nvidia-smi) and the libtorch CUDA build
#   trainer           `worker train` (tch) against PyTorch eager (bench/pytorch_cnn2.py) on the
#                     same model (cnn2 preset), data (full Fashion-MNIST, 54k train), schedule and
#                     GPU: samples/s each and their ratio
#   epoch             one epoch of `worker train`: the training loop's wall time (validation
#                     pass included) and the whole process's (CUDA start-up, data load)
#   slots             aggregate training samples/s of one `worker join --slots N` for N in
#                     1, 4, 8, against a real master on loopback (2*N cnn2 trials of one epoch,
#                     from the first lease to the last completion; one copy of the data on the GPU)
#   bf16_autocast     PyTorch eager samples/s with bf16 autocast off and on; the tch trainer
#                     has no mixed-precision mode (reported as not supported, with the reason)
#
# Setting up and building (scripts/setup.sh, cargo build --release) comes first and is not
# timed; the measurements take about 2-3 minutes on one H100 and every step has a time limit
# (GPU_BENCH_STEP_SECS, default 240) so nothing hangs. Without a GPU it stops at once, exit
# status 2, with {"error": ...} on stdout and the reason on stderr.
#
#   bash bench/gpu.sh                      (GPU_BENCH_SLOTS="1 4 8" GPU_BENCH_EPOCHS=2 to change)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
epochs="${GPU_BENCH_EPOCHS:-2}"
slot_counts="${GPU_BENCH_SLOTS:-1 4 8}"
step_secs="${GPU_BENCH_STEP_SECS:-240}"
data_dir="${EXPLORE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"

fail() {
  echo "bench/gpu.sh: $1" >&2
  python3 -c 'import json,sys; print(json.dumps({"error": sys.argv[1]}))' "$1"
  exit 2
}

# 1. A GPU, before anything slow.
command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA GPU: nvidia-smi is not installed"
gpu_name="$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)"
[ -n "$gpu_name" ] || fail "no NVIDIA GPU: nvidia-smi lists none (driver not loaded or no device visible)"

# 2. Set-up and build (not timed).
bash scripts/setup.sh >&2
python="$(readlink -f .libtorch)/../../../../bin/python"
[ -x "$python" ] || fail "no python next to the libtorch in .libtorch (run scripts/setup.sh)"
timeout 60 "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || fail "the GPU '$gpu_name' is not usable from PyTorch (torch.cuda.is_available() is False: CPU-only torch build or driver too old)"
[ -f "$(readlink -f .libtorch)/lib/libtorch_cuda.so" ] \
  || fail "the libtorch in .libtorch has no libtorch_cuda.so: a CPU-only build cannot use the GPU"
cargo build --release -p explore-worker -p explore-master --bins --quiet >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release"
ldd "$bin/worker" | grep -q libtorch_cuda || fail "$bin/worker does not link libtorch_cuda"

out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
step() { timeout --kill-after=10 "$step_secs" "$@"; }
hp="$out/hparams.json"
echo "{\"optimizer\":\"adamw\",\"learning_rate\":0.002,\"schedule\":\"one_cycle\",\"batch_size\":128,\"weight_decay\":0.0001,\"epochs\":$epochs}" >"$hp"
hp1="$out/hparams1.json"
echo "{\"optimizer\":\"adamw\",\"learning_rate\":0.002,\"schedule\":\"one_cycle\",\"batch_size\":128,\"weight_decay\":0.0001,\"epochs\":1}" >"$hp1"

# 3. tch trainer against PyTorch eager, same GPU; then one epoch's wall time.
echo "==> worker train (tch), cuda, $epochs epochs" >&2
step "$bin/worker" train --genome preset:cnn2 --hparams "$hp" --device cuda --seed 1 \
  --data-dir "$data_dir" 2>"$out/train.log" >"$out/tch.json" \
  || { tail -n 20 "$out/train.log" >&2; fail "worker train on cuda failed (log above)"; }
echo "==> PyTorch eager, cuda, $epochs epochs, autocast off / bf16" >&2
step "$python" bench/pytorch_cnn2.py --device cuda --epochs "$epochs" --seed 1 \
  --data-dir "$data_dir" >"$out/pytorch.json" || fail "PyTorch on cuda failed"
step "$python" bench/pytorch_cnn2.py --device cuda --epochs "$epochs" --seed 1 --autocast bf16 \
  --data-dir "$data_dir" >"$out/pytorch-bf16.json" || fail "PyTorch bf16 autocast on cuda failed"
echo "==> one epoch of worker train" >&2
start_ns=$(date +%s%N)
step "$bin/worker" train --genome preset:cnn2 --hparams "$hp1" --device cuda --seed 2 \
  --data-dir "$data_dir" 2>>"$out/train.log" >"$out/tch-epoch.json" || fail "worker train (one epoch) failed"
echo "$(( ($(date +%s%N) - start_ns) / 1000000 ))" >"$out/tch-epoch.process_ms"

# 4. Aggregate samples/s at N slots: a master, one worker with --slots N, 2N one-epoch trials.
for n in $slot_counts; do
  echo "==> worker join --slots $n" >&2
  dir="$out/slots-$n"
  mkdir -p "$dir"
  trials=$((2 * n))
  {
    printf 'name = "gpu-slots-%s"\nseed = 1\n\n[budget]\nmax_trials = %s\n\n' "$n" "$trials"
    printf '[data]\ndataset = "fashion-mnist"\nvalidation_fraction = 0.1\n\n'
    printf '[search]\nepochs = [1, 1]\n'
    # Distinct learning rates: every trial is its own seed, the same cnn2 model.
    for i in $(seq 1 "$trials"); do
      printf '\n[[seeds]]\npreset = "cnn2"\nhparams = { optimizer = "adamw", learning_rate = 0.00%s, schedule = "one_cycle", batch_size = 128, weight_decay = 0.0001, epochs = 1 }\n' "$((1000 + i))"
    done
  } >"$dir/spec.toml"
  "$bin/master" serve --listen 127.0.0.1:0 --data-dir "$dir/master" --heartbeat-secs 2 \
    --lease-secs 60 >"$dir/master.out" 2>"$dir/master.log" &
  master_pid=$!
  url=""
  for _ in $(seq 1 300); do
    url="$(sed -n 's/^master listening on //p' "$dir/master.out" | head -n1)"
    [ -n "$url" ] && break
    kill -0 "$master_pid" 2>/dev/null || fail "master exited at start (see its log: $(tail -n 3 "$dir/master.log"))"
    sleep 0.1
  done
  [ -n "$url" ] || fail "master did not start within 30 s"
  url="http://$url"
  "$bin/worker" join --master "$url" --token-file "$dir/master/token" --device cuda \
    --slots "$n" --data-dir "$data_dir" --idle-exit-secs 5 2>"$dir/worker.log" &
  worker_pid=$!
  step "$bin/master" submit "$dir/spec.toml" --watch --master "$url" --data-dir "$dir/master" \
    >"$dir/submit.out" 2>&1 || { tail -n 20 "$dir/worker.log" >&2; fail "slots=$n: the experiment did not finish (worker log above)"; }
  kill "$worker_pid" 2>/dev/null || true
  wait "$worker_pid" 2>/dev/null || true
  kill "$master_pid" 2>/dev/null || true
  wait "$master_pid" 2>/dev/null || true
done

# 5. The report.
"$python" - "$out" "$gpu_name" "$epochs" "$slot_counts" <<'PY'
import json, sqlite3, sys
out, gpu, epochs, slot_counts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
load = lambda name: json.load(open(f"{out}/{name}.json"))
import torch
TRAIN = 54000  # full Fashion-MNIST, 10% held out for validation
tch_run, pt, pt_bf16, epoch = load("tch"), load("pytorch"), load("pytorch-bf16"), load("tch-epoch")
sps = lambda examples, n_epochs, secs: round(examples * n_epochs / secs, 1)
tch_sps = sps(TRAIN, tch_run["epochs_run"], tch_run["train_seconds"])
pt_sps = sps(pt["train_examples"], pt["epochs"], pt["train_seconds"])
slots = {}
for n in slot_counts:
    db = sqlite3.connect(f"{out}/slots-{n}/master/explore.db")
    rows = db.execute(
        "SELECT COUNT(*), SUM(epoch), MIN(started_at_ms), MAX(finished_at_ms) FROM trials WHERE status = 'completed'"
    ).fetchone()
    done, epochs_done, first, last = rows
    secs = (last - first) / 1000.0
    slots[n] = {"trials": done, "epochs": epochs_done, "wall_seconds": round(secs, 2),
                "samples_per_second": sps(TRAIN, epochs_done, secs)}
print(json.dumps({
    "device": {"name": gpu, "torch": torch.__version__, "cuda": torch.version.cuda},
    "model": "cnn2 preset, full Fashion-MNIST (54k train / 6k validation), AdamW one-cycle, batch 128",
    "trainer": {
        "epochs": epochs,
        "tch_samples_per_second": tch_sps,
        "pytorch_eager_samples_per_second": pt_sps,
        "tch_over_pytorch": round(tch_sps / pt_sps, 3),
        "tch_test_accuracy": tch_run["test_accuracy"],
        "pytorch_test_accuracy": pt["test_accuracy"],
        "note": "samples/s = training examples x epochs / training-loop seconds (per-epoch validation included, both sides)",
    },
    "epoch": {
        "train_loop_seconds": round(epoch["train_seconds"], 3),
        "process_seconds": int(open(f"{out}/tch-epoch.process_ms").read()) / 1000.0,
    },
    "slots": slots,
    "bf16_autocast": {
        "pytorch_eager_off_samples_per_second": pt_sps,
        "pytorch_eager_bf16_samples_per_second": sps(pt_bf16["train_examples"], pt_bf16["epochs"], pt_bf16["train_seconds"]),
        "pytorch_eager_bf16_test_accuracy": pt_bf16["test_accuracy"],
        "tch_trainer": "not supported: the tch trainer has no mixed-precision mode, and tch 0.24 can only switch CUDA autocast on with libtorch's default fp16 dtype (no call selects bf16)",
    },
}, indent=2))
PY
