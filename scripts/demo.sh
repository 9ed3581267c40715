#!/usr/bin/env bash
# The main job in one command: install what is missing, build, start a master (embedded SQLite
# in a data directory) and two local CPU workers, run a real exploration on Fashion-MNIST, then
# print the leaderboard and export the best model with its test accuracy.
#
#   bash scripts/demo.sh [SPEC]            (default: examples/fashion-demo.toml, ~15 minutes)
#
# Environment: EXPLORE_DEMO_DIR (data directory, default .explore-demo), EXPLORE_DEMO_HTTP
# (dashboard address, default a free loopback port, printed at start), EXPLORE_WORKERS
# (default 2), EXPLORE_WORKER_THREADS (torch threads per worker, default cores / workers).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
spec="${1:-examples/fashion-demo.toml}"
data_dir="${EXPLORE_DEMO_DIR:-$root/.explore-demo}"
workers="${EXPLORE_WORKERS:-2}"
threads="${EXPLORE_WORKER_THREADS:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}"
out="$data_dir/best-model"

bash scripts/setup.sh
echo "==> building explore (first build about 6 minutes on 2 cores: libtorch's C++ shim and"
echo "    about 400 crates; later builds take seconds)"
build_start=$SECONDS
# On a terminal cargo's own progress bar shows how far the build is; in a log, one line at the end.
if [[ -t 2 ]]; then quiet=(); else quiet=(--quiet); fi
cargo build --workspace --bins "${quiet[@]}"
echo "==> built in $((SECONDS - build_start)) s"
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

mkdir -p "$data_dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "==> starting the master (data in $data_dir, log in $data_dir/master.log)"
"$bin/master" serve --listen 127.0.0.1:0 --http-listen "${EXPLORE_DEMO_HTTP:-127.0.0.1:0}" \
  --data-dir "$data_dir" >"$data_dir/master.out" 2>"$data_dir/master.log" &
pids+=($!)
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^master listening on //p' "$data_dir/master.out" 2>/dev/null | head -1)"
  [ -n "$addr" ] && break
  sleep 0.2
done
[ -n "$addr" ] || { echo "the master did not start; see $data_dir/master.log" >&2; exit 1; }
url="http://$addr"
for _ in $(seq 1 50); do
  grep -q "^http listening on" "$data_dir/master.out" 2>/dev/null && break
  sleep 0.1
done
dashboard="$(sed -n 's/^http listening on \([^ ]*\).*/\1/p' "$data_dir/master.out" | head -1)"
[ -n "$dashboard" ] && echo "==> dashboard: http://$dashboard/ (open it in a browser to watch the exploration live)"

echo "==> starting $workers workers with $threads torch thread(s) each (logs in $data_dir/worker-N.log)"
for i in $(seq 1 "$workers"); do
  "$bin/worker" join --master "$url" --token-file "$data_dir/token" --name "demo-$i" \
    --device auto --threads "$threads" 2>"$data_dir/worker-$i.log" &
  pids+=($!)
done

echo "==> exploring ($spec; about 15 minutes on 2 cores for the default spec; the line below"
echo "    shows the budget used, the best score, the running trials and the ETA)"
"$bin/master" submit "$spec" --watch --master "$url" --data-dir "$data_dir"

echo
echo "==> best model"
rm -rf "$out"
"$bin/master" best --export "$out" --master "$url" --data-dir "$data_dir"

echo
echo "==> re-scoring the exported weights from $out (loads Fashion-MNIST: about 10 s)"
split="$(python3 - "$out/model.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["data"]
print(d["train_subset"], d["test_subset"], d["validation_fraction"], d["split_seed"])
PY
)"
read -r train_subset test_subset validation_fraction split_seed <<<"$split"
"$bin/worker" evaluate --genome "$out/genome.json" --checkpoint "$out/weights.safetensors" \
  --train-subset "$train_subset" --test-subset "$test_subset" \
  --validation-fraction "$validation_fraction" --split-seed "$split_seed" --device cpu
