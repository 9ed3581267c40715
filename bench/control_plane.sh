#!/usr/bin/env bash
# Control-plane benchmark (issue 11): the real master (release build, SQLite on disk, loopback)
# driven by simulated workers (`worker simulate`: real gRPC clients, real registration, leases,
# heartbeats and completions, instant synthetic scores, no training), against Optuna with RDB
# storage (SQLite, 8 processes, random and TPE samplers, trivial objective) and Ray Tune (a
# trivial trainable, 8 concurrent) in the same run.
#
#   bench/control_plane.sh            # 25 s per explore run, 20 s per Optuna / Ray run
#   bench/control_plane.sh --quick    # 8 s per run (what a 2-core machine runs in ~5 minutes)
#
# Explore runs: 1, 8, 100 and 1,000 simulated workers on a fresh pool, reporting at once
# (saturating the master), and 1,000 whose trials take 10 s each; 8 workers on pools
# pre-filled with 10,000, 100,000 and 1,000,000 completed trials (`master dev-prefill`, a
# hidden subcommand writing rows the scheduler treats as a real completed pool). Each reports
# trials/s, p50/p99 of Acquire, Heartbeat, Complete and ListExperiments (the status view, polled
# every 200 ms), errors, lost trials (completed by a worker but not in the pool, or twice), and
# the master's CPU seconds and peak RSS (from /proc). The master logs at `warn` (RUST_LOG).
#
# Python packages go into a venv under ~/.cache/explore/bench-venv (created and filled once).
# PostgreSQL storage does not exist yet in explore, so it is not measured.
# Results: bench/control_plane/results.json (this run) and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/control_plane
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
    SECS=8
    PY_SECS=8
else
    SECS=25
    PY_SECS=20
fi
POOLS=(10000 100000 1000000)
WORKER_COUNTS=(1 8 100 1000)

mkdir -p "$HOME/.cache/explore"
RUN=$(mktemp -d "$HOME/.cache/explore/control-plane-run.XXXXXX")
MASTER_PID=
cleanup() {
    if [[ -n "$MASTER_PID" ]]; then kill "$MASTER_PID" 2>/dev/null || true; fi
    rm -rf "$RUN"
}
trap cleanup EXIT

echo "== building the release master and worker" >&2
cargo build --release -q -p explore-master -p explore-worker
MASTER=$ROOT/target/release/master
WORKER=$ROOT/target/release/worker

VENV=$HOME/.cache/explore/bench-venv
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import optuna" 2>/dev/null; then
    echo "== installing optuna into $VENV" >&2
    "$VENV/bin/pip" install -q optuna
fi
RAY_NOTE=""
if ! "$VENV/bin/python" -c "import ray.tune" 2>/dev/null; then
    echo "== installing ray[tune] into $VENV (may take a few minutes)" >&2
    if ! timeout 900 "$VENV/bin/pip" install -q "ray[tune]" >"$RUN/ray-install.log" 2>&1; then
        RAY_NOTE="ray[tune] could not be installed here: $(tail -1 "$RUN/ray-install.log")"
    fi
fi

SPEC=$RUN/spec.toml
cat >"$SPEC" <<'EOF'
name = "control-plane"
seed = 7
[budget]
max_trials = 100000
EOF

CLK=$(getconf CLK_TCK)
cpu_seconds() { awk -v clk="$CLK" '{ print ($14 + $15) / clk }' "/proc/$1/stat"; }

# explore_run LABEL WORKERS POOL: one line of JSON into $RUN/explore.jsonl
explore_run() {
    local label=$1 workers=$2 pool=$3 trial_secs=${4:-0} secs=${5:-$SECS}
    local dir=$RUN/$label
    mkdir -p "$dir"
    echo "== explore: $label ($workers simulated workers, pool of $pool)" >&2
    local t0 prefill_s
    t0=$(date +%s.%N)
    "$MASTER" dev-prefill "$SPEC" --data-dir "$dir/data" --trials "$pool" >"$dir/experiment" 2>"$dir/prefill.log"
    prefill_s=$(echo "$(date +%s.%N) - $t0" | bc)
    RUST_LOG=warn "$MASTER" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/master.out" 2>"$dir/master.log" &
    MASTER_PID=$!
    local addr=""
    for _ in $(seq 1 200); do
        addr=$(sed -n 's/^master listening on //p' "$dir/master.out" 2>/dev/null || true)
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    [[ -n "$addr" ]] || { echo "master did not start: $(cat "$dir/master.log")" >&2; exit 1; }
    local cpu0 cpu1 rss
    cpu0=$(cpu_seconds "$MASTER_PID")
    "$WORKER" simulate --master "http://$addr" --token-file "$dir/data/token" --count "$workers" \
        --duration-secs "$secs" --trial-secs "$trial_secs" --status-every-ms 200 --json >"$dir/sim.json" 2>"$dir/sim.log"
    cpu1=$(cpu_seconds "$MASTER_PID")
    rss=$(awk '/VmHWM/ { print $2 }' "/proc/$MASTER_PID/status")
    kill -TERM "$MASTER_PID"
    wait "$MASTER_PID" || true
    MASTER_PID=
    local completed open
    completed=$(sqlite3 "$dir/data/explore.db" "SELECT COUNT(*) FROM trials WHERE status = 'completed'")
    open=$(sqlite3 "$dir/data/explore.db" "SELECT COUNT(*) FROM trials WHERE status IN ('leased', 'running')")
    python3 - "$dir/sim.json" "$label" "$workers" "$pool" "$cpu0" "$cpu1" "$rss" "$completed" "$open" "$prefill_s" >>"$RUN/explore.jsonl" <<'EOF'
import json, sys
sim = json.load(open(sys.argv[1]))
label, workers, pool = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cpu0, cpu1, rss_kb = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
completed, held, prefill_s = int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10])
sim.update(label=label, pool=pool, master_cpu_seconds=round(cpu1 - cpu0, 2),
           master_peak_rss_mb=round(rss_kb / 1024, 1), prefill_seconds=round(prefill_s, 1),
           # Completions in the pool that no worker reported, or reports the pool lacks.
           lost_trials=abs(completed - pool - sim["trials"]) + sim["duplicate_completions"],
           held_after_deregistration=held)
print(json.dumps(sim))
EOF
    rm -rf "$dir/data"
}

: >"$RUN/explore.jsonl"
for n in "${WORKER_COUNTS[@]}"; do
    explore_run "workers-$n" "$n" 0
done
# 1,000 workers whose trials "train" for 10 s each (100 trials/s offered, below what the master
# serves; the runs above report at once and saturate it), for 30 s.
explore_run "workers-1000-paced" 1000 0 10 30
for pool in "${POOLS[@]}"; do
    explore_run "pool-$pool" 8 "$pool"
done

: >"$RUN/others.jsonl"
for sampler in random tpe; do
    echo "== optuna RDB (SQLite), 8 processes, $sampler sampler" >&2
    "$VENV/bin/python" "$OUT/optuna_rdb.py" "$sampler" 8 "$PY_SECS" "$RUN" >>"$RUN/others.jsonl" 2>"$RUN/optuna-$sampler.log" \
        || echo "{\"system\": \"optuna-rdb-sqlite\", \"sampler\": \"$sampler\", \"error\": \"failed, see log\"}" >>"$RUN/others.jsonl"
done
if [[ -z "$RAY_NOTE" ]]; then
    echo "== ray tune, 8 concurrent" >&2
    if ! "$VENV/bin/python" "$OUT/ray_tune.py" 8 "$PY_SECS" 2>"$RUN/ray.log" | tail -1 >>"$RUN/others.jsonl"; then
        RAY_NOTE="ray tune run failed: $(tail -1 "$RUN/ray.log")"
    fi
fi

python3 "$OUT/report.py" "$RUN/explore.jsonl" "$RUN/others.jsonl" "$OUT/results.json" \
    "$QUICK" "$SECS" "$RAY_NOTE"
