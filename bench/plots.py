"""Plots of the committed benchmark results for BENCHMARKS.md (run through `bash bench/plots.sh`).

Reads only the result files in the repository and draws

* bench/objectives/results/s3.png  S3: test accuracy of the best-validation trial among the
  first k trials against k, per arm (grid, random, ELR), mean and min-max band over seeds (the
  quantity of the S3 table, `best_after` in bench/objectives/s3.py);
* bench/objectives/results/s5.png  S5: target accuracy of the configuration selected on
  training-domain validation, mean +- std over seeds, per method and scenario, and the domain
  probe's accuracy with its chance level (the quantities of the S5 tables, bench/objectives/s5.py);
* bench/transfer/results/s2.png    S2: LogME of every (source model, target task) against the
  models' fine-tuned validation accuracies, one panel and colour per task (the per-pair
  predictions of the leave-one-task-out predictor are not in s2.jsonl or s2.md, so they cannot
  be drawn from the committed results);
* bench/transfer/results/s4.png    S4: average accuracy over the scenes against forgetting of
  the source, per method, mean +- std over seeds and the single seeds.

Prints the numbers it plots at the points the tables report, to check them against BENCHMARKS.md.

    bench/.venv/bin/python bench/plots.py [--only s3,s5,s2,s4]
"""
import argparse
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJ = os.path.join(ROOT, "bench", "objectives", "results")
TRANSFER = os.path.join(ROOT, "bench", "transfer", "results")
DPI = 120


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_sd(values):
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {os.path.relpath(path, ROOT)}")


# ---------------------------------------------------------------------------------------- S3

def s3():
    rows = load(os.path.join(OBJ, "s3.jsonl"))
    arms = [("grid", "grid (5 lr × 5 wd)", "o", "-"), ("random", "random (lr, wd)", "s", "--"),
            ("elr", "ELR (5 values)", "^", "-")]
    seeds = sorted({r["seed"] for r in rows})

    def best_after(trials, k):
        done = [r for r in trials[:k] if r["val_accuracy"] is not None]
        return max(done, key=lambda r: r["val_accuracy"])["test_accuracy"] if done else None

    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("S3: test accuracy of the best-validation trial among the first k, mean ± std over seeds")
    for method, label, marker, style in arms:
        per_seed = {s: sorted((r for r in rows if r["method"] == method and r["seed"] == s),
                              key=lambda r: r["trial"]) for s in seeds}
        n = min(len(t) for t in per_seed.values())
        ks, mean, lo, hi = [], [], [], []
        for k in range(1, n + 1):
            vals = [best_after(t, k) for t in per_seed.values()]
            if any(v is None for v in vals):
                continue
            ks.append(k)
            mean.append(statistics.mean(vals))
            lo.append(min(vals))
            hi.append(max(vals))
            if k in (1, 2, 3, 5, 25):
                m, sd = mean_sd(vals)
                print(f"  {method:7s} best of {k:2d}: {m:.4f} ± {sd:.4f}")
        line, = ax.plot(ks, mean, marker=marker, linestyle=style, markersize=4,
                        label=f"{label}, {n} trials")
        ax.fill_between(ks, lo, hi, alpha=0.18, color=line.get_color(), linewidth=0)
    ax.set_xscale("log")
    ticks = [1, 2, 3, 5, 10, 25]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("number of trials k (log scale; grid in its seeded random order)")
    ax.set_ylabel("test accuracy of the best-validation trial")
    ax.set_title(f"S3: ELR mode against an (lr × wd) search, Fashion-MNIST subset, "
                 f"mean and min–max over {len(seeds)} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save(fig, os.path.join(OBJ, "s3.png"))


# ---------------------------------------------------------------------------------------- S5

S5_METHODS = [("erm", "ERM"), ("dann", "DANN"), ("disentangle", "disentangle")]


def s5_selected(rows, bench, method):
    """Per seed, the configuration with the best training-domain validation accuracy (as s5.py)."""
    out = []
    for seed in sorted({r["seed"] for r in rows if r["bench"] == bench}):
        mine = [r for r in rows if r["bench"] == bench and r["method"] == method and r["seed"] == seed]
        if mine:
            out.append(max(mine, key=lambda r: r["val_accuracy"]))
    return out


def s5():
    rows = load(os.path.join(OBJ, "s5.jsonl"))
    # Target groups: (label, bench, value of a selected row).
    groups = [("rotated: mean\nof 0° and 90°", "rotated", lambda r: r["target_mean"]),
              ("rotated: 0°", "rotated", lambda r: r["target"]["rot0"]),
              ("rotated: 90°", "rotated", lambda r: r["target"]["rot90"]),
              ("MNIST → digits", "digits", lambda r: r["target"]["digits"])]
    sel = {(b, m): s5_selected(rows, b, m) for b in ("rotated", "digits") for m, _ in S5_METHODS}
    seeds = len(sel[("rotated", "erm")])

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.26
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    print("S5: accuracy in %, mean ± std over seeds of the selected configuration")
    for i, (method, label) in enumerate(S5_METHODS):
        means, sds = [], []
        for glabel, bench, value in groups:
            m, sd = mean_sd(100 * value(r) for r in sel[(bench, method)])
            means.append(m)
            sds.append(sd)
            print(f"  {bench:7s} {method:11s} {glabel.splitlines()[-1]:14s}: {m:.1f} ± {sd:.1f}")
        xs = [g + (i - 1) * width for g in range(len(groups))]
        ax.bar(xs, means, width, yerr=sds, capsize=3, label=label, color=colours[i])
        for x, m in zip(xs, means):
            ax.text(x, 1.5, f"{m:.1f}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=9)
    ax.set_ylabel("target accuracy (%)")
    ax.set_ylim(0, 70)
    ax.set_title(f"Target accuracy of the configuration selected on training-domain validation\n"
                 f"mean ± std over {seeds} seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)

    # Domain probe: DANN (trunk, 64 features) and disentangle (invariant part), with chance.
    benches = [("rotated", "rotated\n(5 domains)"), ("digits", "MNIST → digits\n(3 domains)")]
    for j, (method, label) in enumerate(S5_METHODS[1:], start=1):
        means, sds = [], []
        for bench, _ in benches:
            probes = [100 * r["domain_probe"] for r in sel[(bench, method)]
                      if r["domain_probe"] is not None]
            m, sd = mean_sd(probes)
            means.append(m)
            sds.append(sd)
            print(f"  {bench:7s} {method:11s} domain probe  : {m:.1f} ± {sd:.1f}")
        xs = [g + (j - 1.5) * 0.34 for g in range(len(benches))]
        bx.bar(xs, means, 0.34, yerr=sds, capsize=3, color=colours[j], label=label)
        for x, m in zip(xs, means):
            bx.text(x, 2, f"{m:.1f}", ha="center", va="bottom", fontsize=7, color="white")
    for g, (bench, _) in enumerate(benches):
        chance = next(r["probe_chance"] for m in ("dann", "disentangle")
                      for r in sel[(bench, m)] if r["probe_chance"])
        bx.hlines(100 * chance, g - 0.42, g + 0.42, colors="black", linestyles="--", linewidth=1.2,
                  zorder=3, label="chance (1 / number of domains)" if g == 0 else None)
    bx.set_xticks(range(len(benches)))
    bx.set_xticklabels([b[1] for b in benches], fontsize=9)
    bx.set_ylabel("domain-probe accuracy (%)")
    bx.set_ylim(0, 100)
    bx.set_title("Linear probe predicting the training domain\n"
                 "(lower = more invariant features)", fontsize=9)
    bx.grid(axis="y", alpha=0.3)
    bx.legend(loc="upper left", fontsize=8)
    save(fig, os.path.join(OBJ, "s5.png"))


# ---------------------------------------------------------------------------------------- S2

def s2():
    rows = load(os.path.join(TRANSFER, "s2.jsonl"))
    probes = {(r["task"], r["model"]): r["logme"] for r in rows if r["kind"] == "probe"}
    tunes = [r for r in rows if r["kind"] == "finetune"]
    tasks = list(dict.fromkeys(r["task"] for r in tunes))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, axes = plt.subplots(2, 2, figsize=(9, 7), sharey=True)
    print("S2: LogME against fine-tuned validation accuracy (pairs per task, best per model)")
    for i, (task, ax) in enumerate(zip(tasks, axes.flat)):
        mine = [r for r in tunes if r["task"] == task]
        xs = [probes[(task, r["model"])] for r in mine]
        ys = [r["val_accuracy"] for r in mine]
        ax.scatter(xs, ys, s=14, alpha=0.35, color=colours[i], linewidths=0,
                   label="each of the 4 settings")
        models = sorted({r["model"] for r in mine})
        best = {m: max(r["val_accuracy"] for r in mine if r["model"] == m) for m in models}
        ax.scatter([probes[(task, m)] for m in models], [best[m] for m in models], s=42,
                   color=colours[i], edgecolors="black", linewidths=0.6,
                   label="best setting per model")
        print(f"  {task}: {len(mine)} pairs, {len(models)} models, LogME "
              f"{min(xs):.3f}..{max(xs):.3f}, val {min(ys):.3f}..{max(ys):.3f}, "
              f"mean val {statistics.mean(ys):.3f}")
        ax.set_title(f"{task} ({len(models)} models × {len(mine) // len(models)} settings)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("S2: LogME against fine-tuned accuracy per target task "
                 "(the predictor's per-pair predictions are not in the results)", fontsize=9)
    fig.supxlabel("LogME of the source model on the task's training examples "
                  "(x range differs per task)", fontsize=10)
    fig.supylabel("fine-tuned validation accuracy (one seed per pair)", fontsize=10)
    save(fig, os.path.join(TRANSFER, "s2.png"))


# ---------------------------------------------------------------------------------------- S4

def s4():
    rows = load(os.path.join(TRANSFER, "s4.jsonl"))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    labels = {"plain": "plain fine-tuning", "replay": "experience replay", "agem": "A-GEM",
              "gradient_mixing": "gradient mixing"}
    markers = ["o", "s", "D", "^", "v", "P"]
    seeds = sorted({r["seed"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("S4: mean ± std over seeds")
    for i, method in enumerate(methods):
        mine = [r for r in rows if r["method"] == method]
        fx = [r["forgetting"] for r in mine]
        ay = [r["average"] for r in mine]
        (mf, sf), (ma, sa) = mean_sd(fx), mean_sd(ay)
        print(f"  {method:16s} average {ma:.3f} ± {sa:.3f}, forgetting {mf:.3f} ± {sf:.3f}")
        ax.scatter(fx, ay, s=16, alpha=0.4, marker=markers[i % len(markers)], color=f"C{i}",
                   linewidths=0)
        ax.errorbar(mf, ma, xerr=sf, yerr=sa, fmt=markers[i % len(markers)], color=f"C{i}",
                    markersize=8, capsize=3, markeredgecolor="black",
                    label=f"{labels.get(method, method)}: {ma:.3f} / {mf:.3f}")
    before = statistics.mean(r["source_before"] for r in rows)
    ax.set_xlabel(f"forgetting of the source (test accuracy before − after; before = {before:.3f})")
    ax.set_ylabel("average test accuracy over the 6 scenes")
    ax.set_title(f"S4: scene stream, mean ± std over {len(seeds)} seeds (small marks: single seeds)",
                 fontsize=9)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(title="method: average / forgetting (better: up and left)", fontsize=8,
              title_fontsize=8, loc="upper right")
    save(fig, os.path.join(TRANSFER, "s4.png"))


def main(argv):
    plots = {"s3": s3, "s5": s5, "s2": s2, "s4": s4}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(plots), help="comma-separated subset of s3,s5,s2,s4")
    a = ap.parse_args(argv)
    for name in a.only.split(","):
        if name not in plots:
            ap.error(f"unknown plot {name!r}")
        plots[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
