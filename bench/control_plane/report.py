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


def main():
    explore_path, others_path, out_path, quick, secs, ray_note = sys.argv[1:7]
    explore = lines(explore_path)
    others = lines(others_path)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip() != ""
    by_label = {r["label"]: r for r in explore}
    optuna = {o.get("sampler"): o for o in others if o.get("system") == "optuna-rdb-sqlite"}
    ray = next((o for o in others if o.get("system") == "ray-tune"), None)

    def tps(o):
        return o.get("trials_per_second") if o and "trials_per_second" in o else None

    ratios = {}
    w8 = by_label.get("workers-8")
    for name, o in [("optuna_random", optuna.get("random")), ("optuna_tpe", optuna.get("tpe")), ("ray_tune", ray)]:
        if w8 and tps(o):
            ratios[f"explore_8_workers_over_{name}"] = round(w8["trials_per_second"] / tps(o), 1)

    goals = []
    if "explore_8_workers_over_optuna_random" in ratios:
        r = ratios["explore_8_workers_over_optuna_random"]
        goals.append(("8 simulated workers >= 50x Optuna-RDB (SQLite, 8 processes, random) trials/s", r >= 50, f"{r}x"))
    w1 = by_label.get("workers-1")
    if w1:
        a, c = w1["acquire"]["p50_ms"], w1["complete"]["p50_ms"]
        goals.append(("1 simulated worker: Acquire and Complete p50 <= 2 ms", a <= 2 and c <= 2, f"acquire {a:.2f} ms, complete {c:.2f} ms"))
    w1000 = by_label.get("workers-1000")
    if w1000:
        p99 = w1000["acquire"]["p99_ms"]
        ok = p99 <= 10 and w1000["errors"] == 0 and w1000["lost_trials"] == 0
        goals.append(("1,000 simulated workers: p99 Acquire <= 10 ms, no errors, no lost trials", ok,
                      f"p99 acquire {p99:.1f} ms, {w1000['errors']} errors, {w1000['lost_trials']} lost"))
    paced = by_label.get("workers-1000-paced")
    if paced:
        p99 = paced["acquire"]["p99_ms"]
        ok = p99 <= 10 and paced["errors"] == 0 and paced["lost_trials"] == 0
        goals.append(("same, with trials that take 10 s (100 trials/s offered, not saturating the master)", ok,
                      f"p99 acquire {p99:.1f} ms, {paced['errors']} errors, {paced['lost_trials']} lost, {paced['trials_per_second']:.0f} trials/s"))
    small, large = by_label.get("pool-10000"), by_label.get("pool-1000000")
    if small and large:
        worst = []
        for call in ["acquire", "heartbeat", "complete", "status"]:
            s, l = small[call]["p99_ms"], large[call]["p99_ms"]
            worst.append((call, l / s if s else float("inf"), s, l))
        ok = all(r <= 2 for _, r, _, _ in worst) and large["master_peak_rss_mb"] <= 300
        detail = ", ".join(f"{c} {s:.2f} -> {l:.2f} ms ({r:.2f}x)" for c, r, s, l in worst)
        goals.append(("1,000,000-trial pool: p99 of every hot-path call within 2x of 10,000, RSS <= 300 MB", ok,
                      f"{detail}; RSS {large['master_peak_rss_mb']} MB"))

    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release()},
        "commit": commit + ("-dirty" if dirty else ""),
        "command": "bench/control_plane.sh" + (" --quick" if quick == "1" else ""),
        "seconds_per_explore_run": float(secs),
        "explore": explore,
        "others": others,
        "ray": ray_note or "measured",
        "postgresql": "not measured: explore has no PostgreSQL storage yet",
        "ratios": ratios,
        "goals": [{"goal": g, "met": m, "figure": f} for g, m, f in goals],
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\ncontrol plane, {result['machine']['cpus']} cpus ({result['machine']['cpu']}), commit {result['commit']}, {result['command']}")
    print(f"{'run':<16} {'trials':>7} {'trials/s':>9} {'acq p50':>8} {'acq p99':>8} {'hb p99':>8} {'cpl p50':>8} {'cpl p99':>8} {'stat p99':>8} {'err':>4} {'lost':>4} {'cpu s':>6} {'rss MB':>7}")
    for r in explore:
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
    print("postgresql: not measured (explore has no PostgreSQL storage yet)")
    for k, v in ratios.items():
        print(f"ratio {k}: {v}")
    print("\ngoals (issue 11):")
    for g, m, f in goals:
        print(f"  [{'met' if m else 'MISSED'}] {g}: {f}")
    print(f"\nresults: {out_path}")


if __name__ == "__main__":
    main()
