#!/usr/bin/env bash
# A/B of two master binaries on the control plane: alternating runs of each, a fresh SQLite pool
# per run, the same `worker simulate` driving both; one JSON line per run on stdout, then the
# median ratio new/old of each figure. For judging a change to the hot path, where
# `bench/control_plane.sh` (one master, many configurations) cannot compare two builds.
#
#   [POOL=N] bench/ab_masters.sh OLD_MASTER NEW_MASTER [ROUNDS [SECS [WORKER_COUNTS...]]]
#   e.g. bench/ab_masters.sh /tmp/old/target/release/master target/release/master 3 10 1 8
#
# POOL=N pre-fills each run's pool with N completed trials (`master dev-prefill`; default 0).
#
# The worker binary is target/release/worker (`cargo build --release -p explore-worker`).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/master.sh
old=$1 new=$2 rounds=${3:-3} secs=${4:-10}
shift $(( $# < 4 ? $# : 4 ))
counts=("$@"); [[ ${#counts[@]} -gt 0 ]] || counts=(1 8)
worker=${WORKER:-target/release/worker}
[[ -x $worker ]] || { echo "no $worker: cargo build --release -p explore-worker" >&2; exit 1; }
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
printf 'name = "ab"\nseed = 7\n[budget]\nmax_trials = 100000\n' >"$run/spec.toml"
for r in $(seq 1 "$rounds"); do
  for count in "${counts[@]}"; do
    for arm in old new; do
      m=$old; [[ $arm == new ]] && m=$new
      d=$run/$arm-$count-$r
      mkdir -p "$d"
      "$m" dev-prefill "$run/spec.toml" --data-dir "$d/data" --db sqlite --trials "${POOL:-0}" >/dev/null 2>"$d/prefill.log"
      start_master "$m" "$d"
      "$worker" simulate --master "http://$addr" --token-file "$d/data/token" --count "$count" \
        --duration-secs "$secs" --trial-secs 0 --json >"$d/sim.json" 2>/dev/null
      kill $pid
      wait $pid 2>/dev/null || true
      python3 - "$d/sim.json" "$arm" "$r" "$count" <<'PY' | tee -a "$run/all.jsonl"
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"arm": sys.argv[2], "round": int(sys.argv[3]), "workers": int(sys.argv[4]),
                  "trials_per_s": round(d["trials_per_second"], 1),
                  "acquire_p50_ms": round(d["acquire"]["p50_ms"], 3), "acquire_p99_ms": round(d["acquire"]["p99_ms"], 3),
                  "complete_p50_ms": round(d["complete"]["p50_ms"], 3), "complete_p99_ms": round(d["complete"]["p99_ms"], 3),
                  "errors": d["errors"]}))
PY
    done
  done
done
python3 - "$run/all.jsonl" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for w in sorted({r["workers"] for r in rows}):
    for k in ("trials_per_s", "acquire_p50_ms", "acquire_p99_ms", "complete_p50_ms", "complete_p99_ms"):
        old = [r[k] for r in rows if r["arm"] == "old" and r["workers"] == w]
        new = [r[k] for r in rows if r["arm"] == "new" and r["workers"] == w]
        print(f"{w} workers {k}: old {old} new {new} median new/old {st.median(new) / st.median(old):.3f}")
print("errors:", sum(r["errors"] for r in rows))
PY
