#!/usr/bin/env bash
# A/B of two master binaries at the end of an experiment with many idle workers: a budget of
# TRIALS trials for WORKERS simulated workers whose trials take 5-15 s and who join over 5 s, so
# that the last thousand completions arrive while the workers that are done long-poll `Acquire`
# (each leaves after 5 s without a trial). Alternating runs, a fresh SQLite pool each; one JSON
# line per run: wall time until the last worker left, the master's CPU seconds, call percentiles.
#
#   bench/ab_tail.sh OLD_MASTER NEW_MASTER [ROUNDS [WORKERS [TRIALS]]]
#   e.g. bench/ab_tail.sh /tmp/old/target/release/master target/release/master 2 1000 2000
#
# The worker binary is target/release/worker (`cargo build --release -p explore-worker`).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/master.sh
old=$1 new=$2 rounds=${3:-2} workers=${4:-1000} trials=${5:-2000}
worker=${WORKER:-target/release/worker}
[[ -x $worker ]] || { echo "no $worker: cargo build --release -p explore-worker" >&2; exit 1; }
run=$(mktemp -d)
pid=
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$run"' EXIT
printf 'name = "tail"\nseed = 7\n[budget]\nmax_trials = %d\n' "$trials" >"$run/spec.toml"
clk=$(getconf CLK_TCK)
cpu() { awk -v c="$clk" '{ print ($14 + $15) / c }' "/proc/$1/stat"; }
for r in $(seq 1 "$rounds"); do
  for arm in old new; do
    m=$old; [[ $arm == new ]] && m=$new
    d=$run/$arm-$r
    mkdir -p "$d"
    start_master "$m" "$d"
    "$m" submit "$run/spec.toml" --master "http://$addr" --token-file "$d/data/token" >"$d/submit.log" 2>&1
    c0=$(cpu "$pid"); t0=$(date +%s.%N)
    "$worker" simulate --master "http://$addr" --token-file "$d/data/token" --count "$workers" \
      --trial-secs 10 --trial-jitter 0.5 --ramp-secs 5 --idle-exit-secs 5 --json 2>/dev/null >"$d/sim.json"
    t1=$(date +%s.%N); c1=$(cpu "$pid")
    kill "$pid"; wait "$pid" || true; pid=
    python3 - "$d/sim.json" "$arm" "$t0" "$t1" "$c0" "$c1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"arm": sys.argv[2], "trials": s["trials"], "wall_s": round(float(sys.argv[4]) - float(sys.argv[3]), 1),
                  "master_cpu_s": round(float(sys.argv[6]) - float(sys.argv[5]), 1),
                  "acquire_p50_ms": round(s["acquire"]["p50_ms"], 1), "acquire_p99_ms": round(s["acquire"]["p99_ms"], 1),
                  "complete_p99_ms": round(s["complete"]["p99_ms"], 1), "errors": s["errors"],
                  "duplicate_completions": s["duplicate_completions"]}))
PY
  done
done
