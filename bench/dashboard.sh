#!/usr/bin/env bash
# Dashboard paging benchmark (issue 15): the real master (release build, SQLite on disk,
# loopback) over a pool pre-filled with 100,000 completed trials (`master dev-prefill`), asked
# for what the dashboard asks: trial pages (first, deep offset, sorted by score, params,
# status, chain and objective, filtered by status, chain, score and objective),
# the best-so-far curve, the genealogy, the chains' temperatures, the experiment list and
# /metrics. Each request is timed N times from a Python client (stdlib only); p50 and p99 in
# milliseconds. Baseline in the same run: listing the whole pool as a script did before the
# dashboard (`master trials --json`, every trial through the paged gRPC listing).
#
#   bench/dashboard.sh               # 100,000 trials, 30 requests per endpoint
#   bench/dashboard.sh 20000 10      # pool size, requests per endpoint
#
# Results: bench/dashboard/results.json and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
POOL=${1:-100000}
REPS=${2:-30}
RUN=$(mktemp -d)
MASTER_PID=
cleanup() {
    if [[ -n "$MASTER_PID" ]]; then kill "$MASTER_PID" 2>/dev/null || true; fi
    rm -rf "$RUN"
}
trap cleanup EXIT

echo "== building the release master (first build about 6 minutes on 2 cores)" >&2
cargo build --release -q -p explore-master
MASTER=$ROOT/target/release/master

cat >"$RUN/spec.toml" <<'SPEC'
name = "dashboard-paging"
seed = 7
[budget]
max_trials = 100000
[annealing]
chains = 4
SPEC
echo "== pre-filling a pool with $POOL completed trials" >&2
"$MASTER" dev-prefill "$RUN/spec.toml" --data-dir "$RUN/data" --trials "$POOL" >"$RUN/experiment"
EXP=$(tail -1 "$RUN/experiment")

RUST_LOG=warn "$MASTER" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --data-dir "$RUN/data" >"$RUN/master.out" 2>"$RUN/master.log" &
MASTER_PID=$!
for _ in $(seq 100); do
    grep -q "^http listening on" "$RUN/master.out" 2>/dev/null && break
    sleep 0.1
done
GRPC=$(sed -n 's/^master listening on //p' "$RUN/master.out")
HTTP=$(sed -n 's/^http listening on \([^ ]*\).*/\1/p' "$RUN/master.out")
[[ -n "$HTTP" ]] || { cat "$RUN/master.log" >&2; exit 1; }

echo "== baseline: master trials --json over the whole pool" >&2
t0=$(date +%s.%N)
"$MASTER" trials "$EXP" --json --master "http://$GRPC" --data-dir "$RUN/data" >"$RUN/all.jsonl"
t1=$(date +%s.%N)
LISTED=$(wc -l <"$RUN/all.jsonl")

echo "== timing the dashboard's requests ($REPS each)" >&2
python3 - "$HTTP" "$EXP" "$REPS" "$POOL" "$(echo "$t1 - $t0" | bc)" "$LISTED" \
    "$(git rev-parse --short HEAD)" >"$ROOT/bench/dashboard/results.json" <<'PY'
import json, statistics, sys, time, urllib.request
http, exp, reps, pool, baseline_s, listed, commit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
base = f"http://{http}"
t = f"/api/v1/experiments/{exp}/trials"
cases = [
    ("first page (seq desc, 50)", t),
    ("deep page (offset = half the pool)", f"{t}?offset={pool // 2}"),
    ("sorted by score, 50", f"{t}?sort=score"),
    ("status=completed, by score", f"{t}?status=completed&sort=score"),
    ("chain=2 and min_score=0.85", f"{t}?chain=2&min_score=0.85"),
    ("objective=plain (every trial matches)", f"{t}?objective=plain"),
    ("sorted by params", f"{t}?sort=params"),
    ("sorted by status", f"{t}?sort=status"),
    ("sorted by chain", f"{t}?sort=chain"),
    ("sorted by objective", f"{t}?sort=objective"),
    ("500 per page", f"{t}?limit=500"),
    ("best-so-far curve", f"/api/v1/experiments/{exp}/best"),
    ("genealogy (60 best + ancestors)", f"/api/v1/experiments/{exp}/genealogy"),
    ("chains + temperature history", f"/api/v1/experiments/{exp}/chains"),
    ("experiment list", "/api/v1/experiments"),
    ("/metrics", "/metrics"),
]
rows = []
for label, path in cases:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with urllib.request.urlopen(base + path) as r:
            body = r.read()
            assert r.status == 200, (path, r.status)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    rows.append(dict(request=label, path=path, p50_ms=round(statistics.median(times), 2),
                     p99_ms=round(p99, 2), bytes=len(body)))
    if "trials" in path and "?" not in path:
        total = json.loads(body)["total"]
result = dict(commit=commit, pool=pool, requests_per_endpoint=reps, total_reported=total,
              baseline=dict(what="master trials --json (whole pool)", seconds=round(baseline_s, 2),
                            trials_listed=listed),
              requests=rows)
json.dump(result, sys.stdout, indent=1)
print(file=sys.stderr)
print(f"pool {pool} trials (API total {total}); whole-pool listing {baseline_s:.2f} s for {listed} trials", file=sys.stderr)
print(f"{'request':40} {'p50 ms':>8} {'p99 ms':>8} {'vs listing':>11}", file=sys.stderr)
for r in rows:
    print(f"{r['request']:40} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {baseline_s * 1000 / r['p50_ms']:10.0f}x", file=sys.stderr)
PY
echo "results: bench/dashboard/results.json" >&2
