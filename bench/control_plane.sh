#!/usr/bin/env bash
# Control-plane benchmark (issues 11 and 13): the real master (release build, loopback, its pool
# in SQLite on disk and, in the same run, in PostgreSQL) driven by simulated workers (`worker
# simulate`: real gRPC clients, real registration, leases, heartbeats and completions, instant
# synthetic scores, no training), against Optuna with RDB storage (SQLite and PostgreSQL, 8
# processes, random and TPE samplers, trivial objective) and Ray Tune (a trivial trainable, 8
# concurrent) in the same run.
#
#   bench/control_plane.sh            # 25 s per explore run, 20 s per Optuna / Ray run
#   bench/control_plane.sh --quick    # 8 s per run (what a 2-core machine runs in ~5 minutes)
#
# Explore runs: 1, 8, 100 and 1,000 simulated workers on a fresh pool, reporting at once
# (saturating the master), and 1,000 whose trials take 10 s each (all alike and starting
# together: lock-step; then 5-15 s, joining over 10 s: as a real cluster); 8 workers on pools
# pre-filled with 10,000, 100,000 and 1,000,000 completed trials (`master dev-prefill`, a
# hidden subcommand writing rows the scheduler treats as a real completed pool). Each reports
# trials/s, p50/p99 of Acquire, Heartbeat, Complete and ListExperiments (the status view, polled
# every 200 ms), errors, lost trials (completed by a worker but not in the pool, or twice), and
# the master's CPU seconds and peak RSS (from /proc). The master logs at `warn` (RUST_LOG).
#
# PostgreSQL: a private, throwaway cluster (scripts/pg-test-cluster.sh: loopback, fsync and
# synchronous_commit off, as for the tests), stopped when the script exits. The explore runs
# pg-workers-1, pg-workers-8 and pg-workers-100 each serve a fresh pool in a fresh database
# (`master serve --db postgres://...`, the experiment submitted with `master submit`), and
# pg-pool-10000, pg-pool-100000 and pg-pool-1000000 serve 8 workers on pools pre-filled in a fresh
# database (`master dev-prefill --db postgres://...`, the same rows as on SQLite). Optuna RDB runs
# on a fresh database per sampler as well. If the cluster cannot start (no server binaries, ...), or
# psycopg2 cannot be installed, those rows are reported as "not measured: <reason>" and the rest
# of the bench runs as before.
#
# Python packages go into a venv under ~/.cache/explore/bench-venv (created and filled once).
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
# The PostgreSQL cluster's directory. As root the server runs as the `postgres` user, which cannot
# enter $HOME (/root), so the cluster then lives under /tmp (pg-test-cluster.sh says the same).
if [[ $(id -u) -eq 0 ]]; then
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/explore-bench-pg.XXXXXX")
else
    PG_DIR=$RUN/pg
fi
PG_STARTED=0
MASTER_PID=
cleanup() {
    if [[ -n "$MASTER_PID" ]]; then kill "$MASTER_PID" 2>/dev/null || true; fi
    if ((PG_STARTED)) || [[ -e "$PG_DIR/.explore-pg-test-cluster" ]]; then
        scripts/pg-test-cluster.sh stop "$PG_DIR" || true
    fi
    rm -rf "$RUN"
    [[ -d "$PG_DIR" ]] && rmdir "$PG_DIR" 2>/dev/null || true
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
PG_OPTUNA_NOTE=""
if ! "$VENV/bin/python" -c "import psycopg2" 2>/dev/null; then
    echo "== installing psycopg2-binary into $VENV" >&2
    if ! "$VENV/bin/pip" install -q psycopg2-binary >"$RUN/psycopg2-install.log" 2>&1; then
        PG_OPTUNA_NOTE="psycopg2-binary could not be installed here: $(tail -1 "$RUN/psycopg2-install.log")"
    fi
fi
RAY_NOTE=""
if ! "$VENV/bin/python" -c "import ray.tune" 2>/dev/null; then
    echo "== installing ray[tune] into $VENV (may take a few minutes)" >&2
    if ! timeout 900 "$VENV/bin/pip" install -q "ray[tune]" >"$RUN/ray-install.log" 2>&1; then
        RAY_NOTE="ray[tune] could not be installed here: $(tail -1 "$RUN/ray-install.log")"
    fi
fi

# PostgreSQL: PG_URL is the cluster's URL (its `postgres` database); pg_db NAME creates a fresh
# database and prints its URL.
PG_NOTE=""
PG_URL=""
echo "== starting a private PostgreSQL (scripts/pg-test-cluster.sh)" >&2
if PG_URL=$(scripts/pg-test-cluster.sh start "$PG_DIR" 2>"$RUN/pg-start.log"); then
    PG_STARTED=1
elif [[ -e "$PG_DIR/.explore-pg-test-cluster" ]]; then
    PG_NOTE="not measured: the PostgreSQL cluster did not start: $(grep 'pg-test-cluster:' "$RUN/pg-start.log" | tail -1)"
else
    PG_NOTE="not measured: $(tail -1 "$RUN/pg-start.log")"
fi
if [[ -n "$PG_NOTE" ]]; then
    PG_URL=""
    echo "== $PG_NOTE" >&2
fi
pg_db() {
    PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL" -q -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    echo "${PG_URL%/*}/$1"
}

SPEC=$RUN/spec.toml
cat >"$SPEC" <<'EOF'
name = "control-plane"
seed = 7
[budget]
max_trials = 100000
EOF

CLK=$(getconf CLK_TCK)
cpu_seconds() { awk -v clk="$CLK" '{ print ($14 + $15) / clk }' "/proc/$1/stat"; }

# explore_run LABEL WORKERS POOL [TRIAL_SECS [SECS [DB_URL [SIM_ARGS]]]]: one line of JSON into
# $RUN/explore.jsonl. SIM_ARGS: more `worker simulate` flags, one word each. Without DB_URL the pool is SQLite in the run's data directory; with a
# PostgreSQL DB_URL (a fresh database) the master serves `--db DB_URL`. Either way the pool is
# pre-filled with POOL completed trials (`master dev-prefill`, which submits the experiment).
explore_run() {
    local label=$1 workers=$2 pool=$3 trial_secs=${4:-0} secs=${5:-$SECS} db=${6:-}
    local sim_args
    read -r -a sim_args <<<"${7:-}"
    local dir=$RUN/$label store=sqlite
    [[ -n "$db" ]] && store=postgres
    mkdir -p "$dir"
    echo "== explore: $label ($workers simulated workers, pool of $pool, $store)" >&2
    local t0 prefill_s=0
    local db_args=(--db "${db:-sqlite}")
    t0=$(date +%s.%N)
    "$MASTER" dev-prefill "$SPEC" --data-dir "$dir/data" "${db_args[@]}" --trials "$pool" >"$dir/experiment" 2>"$dir/prefill.log" \
        || { echo "prefill failed: $(tail -3 "$dir/prefill.log")" >&2; exit 1; }
    prefill_s=$(echo "$(date +%s.%N) - $t0" | bc)
    RUST_LOG=warn "$MASTER" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "${db_args[@]}" >"$dir/master.out" 2>"$dir/master.log" &
    MASTER_PID=$!
    local addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^master listening on //p' "$dir/master.out" 2>/dev/null || true)
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    [[ -n "$addr" ]] || { echo "master did not start: $(tail -5 "$dir/master.log")" >&2; exit 1; }
    local cpu0 cpu1 rss
    cpu0=$(cpu_seconds "$MASTER_PID")
    "$WORKER" simulate --master "http://$addr" --token-file "$dir/data/token" --count "$workers" \
        --duration-secs "$secs" --trial-secs "$trial_secs" --status-every-ms 200 "${sim_args[@]}" \
        --json >"$dir/sim.json" 2>"$dir/sim.log"
    cpu1=$(cpu_seconds "$MASTER_PID")
    rss=$(awk '/VmHWM/ { print $2 }' "/proc/$MASTER_PID/status")
    kill -TERM "$MASTER_PID"
    wait "$MASTER_PID" || true
    MASTER_PID=
    local completed open
    local q_completed="SELECT COUNT(*) FROM trials WHERE status = 'completed'"
    local q_open="SELECT COUNT(*) FROM trials WHERE status IN ('leased', 'running')"
    if [[ -z "$db" ]]; then
        completed=$(sqlite3 "$dir/data/explore.db" "$q_completed")
        open=$(sqlite3 "$dir/data/explore.db" "$q_open")
    else
        completed=$(psql "$db" -Atc "$q_completed")
        open=$(psql "$db" -Atc "$q_open")
    fi
    python3 - "$dir/sim.json" "$label" "$workers" "$pool" "$cpu0" "$cpu1" "$rss" "$completed" "$open" "$prefill_s" "$store" >>"$RUN/explore.jsonl" <<'EOF'
import json, sys
sim = json.load(open(sys.argv[1]))
label, workers, pool = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cpu0, cpu1, rss_kb = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
completed, held, prefill_s = int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10])
sim.update(label=label, store=sys.argv[11], pool=pool, master_cpu_seconds=round(cpu1 - cpu0, 2),
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
# The same 1,000 workers as a real cluster runs them: they join over 10 s (as a Kubernetes job's
# pods start) and their trials take 5-15 s (trials differ in size), so they do not ask in
# lock-step; 60 s, so most calls are made after the ramp.
explore_run "workers-1000-cluster" 1000 0 10 60 "" "--trial-jitter 0.5 --ramp-secs 10"
for pool in "${POOLS[@]}"; do
    explore_run "pool-$pool" 8 "$pool"
done

# The same load on PostgreSQL: fresh pools, then pre-filled ones. A run that fails is recorded as
# not measured (with its reason) rather than ending the bench; it runs in a subshell with its own
# `set -e` and a trap that stops its master.
PG_RUNS=("1 0" "8 0" "100 0")
for pool in "${POOLS[@]}"; do PG_RUNS+=("8 $pool"); done
for run in "${PG_RUNS[@]}"; do
    read -r n pool <<<"$run"
    if ((pool == 0)); then label=pg-workers-$n; else label=pg-pool-$pool; fi
    if [[ -z "$PG_URL" ]]; then
        echo "{\"label\": \"$label\", \"store\": \"postgres\", \"workers\": $n, \"error\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$PG_NOTE")}" >>"$RUN/explore.jsonl"
        continue
    fi
    set +e
    (
        set -e
        trap '[[ -n "$MASTER_PID" ]] && kill "$MASTER_PID" 2>/dev/null; true' EXIT
        db_url=$(pg_db "bench_explore_${n}_$pool")
        explore_run "$label" "$n" "$pool" 0 "$SECS" "$db_url"
    ) 2>"$RUN/$label.err"
    rc=$?
    set -e
    cat "$RUN/$label.err" >&2
    if ((rc != 0)); then
        reason="not measured: run failed: $(grep -v '^==' "$RUN/$label.err" | tail -1)"
        echo "{\"label\": \"$label\", \"store\": \"postgres\", \"workers\": $n, \"error\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$reason")}" >>"$RUN/explore.jsonl"
    fi
    if [[ -n "$PG_URL" ]]; then
        psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS bench_explore_${n}_$pool" >/dev/null 2>&1 || true
    fi
done

: >"$RUN/others.jsonl"
for sampler in random tpe; do
    echo "== optuna RDB (SQLite), 8 processes, $sampler sampler" >&2
    "$VENV/bin/python" "$OUT/optuna_rdb.py" "$sampler" 8 "$PY_SECS" "$RUN" >>"$RUN/others.jsonl" 2>"$RUN/optuna-$sampler.log" \
        || echo "{\"system\": \"optuna-rdb-sqlite\", \"sampler\": \"$sampler\", \"error\": \"failed, see log\"}" >>"$RUN/others.jsonl"
done
for sampler in random tpe; do
    echo "== optuna RDB (PostgreSQL), 8 processes, $sampler sampler" >&2
    note=${PG_NOTE:-$PG_OPTUNA_NOTE}
    if [[ -z "$note" ]]; then
        if url=$(pg_db "bench_optuna_$sampler" 2>"$RUN/optuna-pg-$sampler.log") &&
            "$VENV/bin/python" "$OUT/optuna_rdb.py" "$sampler" 8 "$PY_SECS" "$RUN" "$url" >>"$RUN/others.jsonl" 2>>"$RUN/optuna-pg-$sampler.log"; then
            continue
        fi
        note="failed: $(tail -1 "$RUN/optuna-pg-$sampler.log")"
    fi
    [[ $note == "not measured:"* ]] || note="not measured: $note"
    echo "{\"system\": \"optuna-rdb-postgres\", \"sampler\": \"$sampler\", \"error\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$note")}" >>"$RUN/others.jsonl"
done
if [[ -z "$RAY_NOTE" ]]; then
    echo "== ray tune, 8 concurrent" >&2
    if ! "$VENV/bin/python" "$OUT/ray_tune.py" 8 "$PY_SECS" 2>"$RUN/ray.log" | tail -1 >>"$RUN/others.jsonl"; then
        RAY_NOTE="ray tune run failed: $(tail -1 "$RUN/ray.log")"
    fi
fi

python3 "$OUT/report.py" "$RUN/explore.jsonl" "$RUN/others.jsonl" "$OUT/results.json" \
    "$QUICK" "$SECS" "$RAY_NOTE" "$PG_NOTE"
