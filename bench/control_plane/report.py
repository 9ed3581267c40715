"""Collects a control_plane.sh run into results.json and prints the table and the issue's goals."""
import json
import os
import platform
import subprocess
import sys


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def postgres_status(explore, others):
    """"measured", or which PostgreSQL runs could not be measured and why."""
    failed = [f"{r['label']}: {r['error']}" for r in explore if r.get("store") == "postgres" and "error" in r]
    failed += [f"{o['system']} ({o.get('sampler')}): {o['error']}" for o in others
               if o.get("system") == "optuna-rdb-postgres" and "error" in o]
    return "measured" if not failed else "some runs not measured: " + "; ".join(failed)


def pool_goal(goal, small, large):
    """The flat-cost goal: every hot-path call's p99 on the large pool within 2x of the small one."""
    worst = []
    for call in ["acquire", "heartbeat", "complete", "status"]:
        s, l = small[call]["p99_ms"], large[call]["p99_ms"]
        worst.append((call, l / s if s else float("inf"), s, l))
    ok = all(r <= 2 for _, r, _, _ in worst) and large["master_peak_rss_mb"] <= 300
    detail = ", ".join(f"{c} {s:.2f} -> {l:.2f} ms ({r:.2f}x)" for c, r, s, l in worst)
    return goal, ok, f"{detail}; RSS {large['master_peak_rss_mb']} MB"


def main():
    explore_path, others_path, out_path, quick, secs, ray_note = sys.argv[1:7]
    # Why PostgreSQL was not measured at all (the cluster did not start); empty when it was.
    pg_note = sys.argv[7] if len(sys.argv) > 7 else ""
    explore = lines(explore_path)
    others = lines(others_path)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip() != ""
    # Runs that failed (PostgreSQL runs that could not be measured) carry "error" and no figures.
    by_label = {r["label"]: r for r in explore if "error" not in r}
    optuna = {o.get("sampler"): o for o in others if o.get("system") == "optuna-rdb-sqlite"}
    optuna_pg = {o.get("sampler"): o for o in others if o.get("system") == "optuna-rdb-postgres"}
    ray = next((o for o in others if o.get("system") == "ray-tune"), None)

    def tps(o):
        return o.get("trials_per_second") if o and "trials_per_second" in o else None

    ratios = {}
    w8 = by_label.get("workers-8")
    for name, o in [("optuna_random", optuna.get("random")), ("optuna_tpe", optuna.get("tpe")), ("ray_tune", ray)]:
        if w8 and tps(o):
            ratios[f"explore_8_workers_over_{name}"] = round(w8["trials_per_second"] / tps(o), 1)
    # PostgreSQL against PostgreSQL: explore with 8 simulated workers on a PostgreSQL pool over
    # Optuna with its study in PostgreSQL.
    pg8 = by_label.get("pg-workers-8")
    for name, o in [("optuna_pg_random", optuna_pg.get("random")), ("optuna_pg_tpe", optuna_pg.get("tpe"))]:
        if pg8 and tps(o):
            ratios[f"explore_pg_8_workers_over_{name}"] = round(pg8["trials_per_second"] / tps(o), 1)
    # explore on PostgreSQL against explore on SQLite, same load (fresh pools): trials/s and p50s.
    for n in [1, 8, 100]:
        sq, pg = by_label.get(f"workers-{n}"), by_label.get(f"pg-workers-{n}")
        if sq and pg and sq["trials_per_second"]:
            ratios[f"explore_pg_over_sqlite_trials_per_second_{n}_workers"] = round(pg["trials_per_second"] / sq["trials_per_second"], 2)
            for call in ["acquire", "complete"]:
                if sq[call]["p50_ms"]:
                    ratios[f"explore_pg_over_sqlite_{call}_p50_{n}_workers"] = round(pg[call]["p50_ms"] / sq[call]["p50_ms"], 2)

    goals = []
    if "explore_8_workers_over_optuna_random" in ratios:
        r = ratios["explore_8_workers_over_optuna_random"]
        goals.append(("8 simulated workers >= 50x Optuna-RDB (SQLite, 8 processes, random) trials/s", r >= 50, f"{r}x"))
    if "explore_pg_8_workers_over_optuna_pg_random" in ratios:
        r = ratios["explore_pg_8_workers_over_optuna_pg_random"]
        goals.append(("same on PostgreSQL: 8 simulated workers (pool in PostgreSQL) >= 50x Optuna-RDB (PostgreSQL, 8 processes, random)",
                      r >= 50, f"{r}x"))
    w1 = by_label.get("workers-1")
    if w1:
        a, c = w1["acquire"]["p50_ms"], w1["complete"]["p50_ms"]
        goals.append(("1 simulated worker: Acquire and Complete p50 <= 2 ms", a <= 2 and c <= 2, f"acquire {a:.2f} ms, complete {c:.2f} ms"))
    # The 1,000-worker goal, for each way of running 1,000 workers.
    for label, goal in [
        ("workers-1000", "1,000 simulated workers: p99 Acquire <= 10 ms, no errors, no lost trials"),
        ("workers-1000-paced", "same, with trials that take 10 s (100 trials/s offered, not saturating the master)"),
        ("workers-1000-cluster", "same, as a cluster runs: trials of 5-15 s, workers joining over 10 s (60 s run)"),
    ]:
        r = by_label.get(label)
        if r:
            p99 = r["acquire"]["p99_ms"]
            ok = p99 <= 10 and r["errors"] == 0 and r["lost_trials"] == 0
            figure = f"p99 acquire {p99:.1f} ms, {r['errors']} errors, {r['lost_trials']} lost"
            if label != "workers-1000":
                figure += f", {r['trials_per_second']:.0f} trials/s"
            goals.append((goal, ok, figure))
    for prefix, goal in [("pool-", "1,000,000-trial pool: p99 of every hot-path call within 2x of 10,000, RSS <= 300 MB"),
                         ("pg-pool-", "same on PostgreSQL (pool pre-filled in PostgreSQL)")]:
        small, large = by_label.get(f"{prefix}10000"), by_label.get(f"{prefix}1000000")
        if small and large:
            goals.append(pool_goal(goal, small, large))

    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release()},
        "commit": commit + ("-dirty" if dirty else ""),
        "command": "bench/control_plane.sh" + (" --quick" if quick == "1" else ""),
        "seconds_per_explore_run": float(secs),
        "explore": explore,
        "others": others,
        "ray": ray_note or "measured",
        "postgresql": pg_note or postgres_status(explore, others),
        "ratios": ratios,
        "goals": [{"goal": g, "met": m, "figure": f} for g, m, f in goals],
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\ncontrol plane, {result['machine']['cpus']} cpus ({result['machine']['cpu']}), commit {result['commit']}, {result['command']}")
    print(f"{'run':<16} {'trials':>7} {'trials/s':>9} {'acq p50':>8} {'acq p99':>8} {'hb p99':>8} {'cpl p50':>8} {'cpl p99':>8} {'stat p99':>8} {'err':>4} {'lost':>4} {'cpu s':>6} {'rss MB':>7}")
    for r in explore:
        if "error" in r:
            print(f"{r['label']:<16} {r['error']}")
            continue
        print(f"{r['label']:<16} {r['trials']:>7} {r['trials_per_second']:>9.1f} {r['acquire']['p50_ms']:>8.2f} {r['acquire']['p99_ms']:>8.2f} "
              f"{r['heartbeat']['p99_ms']:>8.2f} {r['complete']['p50_ms']:>8.2f} {r['complete']['p99_ms']:>8.2f} {r['status']['p99_ms']:>8.2f} "
              f"{r['errors']:>4} {r['lost_trials']:>4} {r['master_cpu_seconds']:>6.1f} {r['master_peak_rss_mb']:>7.1f}")
    for o in others:
        label = o.get("system", "?") + (f" ({o['sampler']})" if "sampler" in o else "")
        if "trials_per_second" in o:
            print(f"{label:<32} {o['trials']:>7} trials in {o['seconds']:.1f} s: {o['trials_per_second']:.1f} trials/s")
        else:
            print(f"{label:<32} {o.get('error', 'no result')}")
    if ray_note:
        print(f"ray: {ray_note}")
    print(f"postgresql: {result['postgresql']}")
    for k, v in ratios.items():
        print(f"ratio {k}: {v}")
    print("\ngoals (issue 11):")
    for g, m, f in goals:
        print(f"  [{'met' if m else 'MISSED'}] {g}: {f}")
    print(f"\nresults: {out_path}")


if __name__ == "__main__":
    main()
