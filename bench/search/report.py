"""Report of the search benchmark: reads every finished run (`<method>-seed<S>.jsonl` with its
`.meta.json`) in the output directory and writes

* a markdown table to stdout and to `<out>/table.md`: for budget points at 25, 50, 75 and 100%
  of the epoch budget, per method the mean +- standard deviation over seeds of the best test
  accuracy reached, then the per-seed values at the full budget;
* the configuration of each method as its runs recorded it (`description` in the metadata);
* a PNG plot of the mean best test accuracy against cumulative epochs per method, with the
  min-max band over seeds (`bench/search_curve.png` for the default output directory, else
  `<out>/search_curve.png`; `--plot` overrides).

"Best at budget point b" selects on validation only: among the completed trials with
cum_epochs <= b, the one with the highest validation accuracy (the earliest on ties); its test
accuracy is reported. For an explorer run with a final phase (`[final]`), as the master
selects: once a final trial has finished, the best final trial by validation. "Epochs in selected model" is how many epochs the weights of that trial
had been trained in all: its own epochs, plus for the explorer those of the ancestors it
inherited from, and for PBT the epochs of the member's lineage (`member_epochs`). Runs made with another budget or data split than the reference (the flags,
else the most recent run) are left out with a warning.

    bench/.venv/bin/python bench/search/report.py [--out DIR] [--budget N] [--train-subset N]
"""
import argparse
import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "bench", "out", "search")
DEFAULT_PLOT = os.path.join(ROOT, "bench", "search_curve.png")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
METHOD_ORDER = ("explore", "random", "tpe", "hyperband", "pbt")


def load_runs(out_dir):
    """[(meta, rows)] of every finished run in `out_dir`, most recent first."""
    runs = []
    for path in glob.glob(os.path.join(out_dir, "*.jsonl")):
        meta_path = path[: -len(".jsonl")] + ".meta.json"
        if not os.path.exists(meta_path):
            print(f"warning: {path} has no metadata; skipped", file=sys.stderr)
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        runs.append((os.path.getmtime(meta_path), meta, rows))
    runs.sort(key=lambda r: -r[0])
    return [(meta, rows) for _, meta, rows in runs]


def comparable(runs, budget=None, train_subset=None):
    """The runs sharing the reference budget and data settings; the reference as a dict."""
    if not runs:
        return [], None
    keys = ("budget", "train_subset", "test_subset", "validation_fraction")
    ref = {k: runs[0][0].get(k) for k in keys}
    if budget is not None:
        ref["budget"] = budget
    if train_subset is not None:
        ref["train_subset"] = train_subset
    kept = []
    for meta, rows in runs:
        if all(meta.get(k) == ref[k] for k in keys):
            kept.append((meta, rows))
        else:
            print(f"warning: {meta['method']}-seed{meta['seed']} has other settings "
                  f"({', '.join(f'{k}={meta.get(k)}' for k in keys)}); left out", file=sys.stderr)
    return kept, ref


def is_final(row):
    """A trial of the explorer's final phase (`[final]`): the master names its origin
    "final: retrain of …"."""
    return str(row.get("origin") or "").startswith("final: ")


def best_row_at(rows, b):
    """The best-validation completed trial finished within b epochs (the earliest on ties), or
    None. As the master selects (`final_phase::outranks`): once a final-phase trial has
    finished, the result is the best final trial by validation, whatever the search scored."""
    best = None
    for r in rows:
        if r["status"] != "completed" or r["cum_epochs"] > b or r["val_accuracy"] is None:
            continue
        if best is None or (is_final(r), r["val_accuracy"]) > (is_final(best),
                                                               best["val_accuracy"]):
            best = r
    return best


def best_test_at(rows, b):
    """(test, val) of the best-validation completed trial finished within b epochs, or None."""
    best = best_row_at(rows, b)
    return None if best is None else (best["test_accuracy"], best["val_accuracy"])


def model_epochs(row, rows):
    """Epochs the weights of trial `row` were trained in all (see the module's docstring)."""
    if row.get("member_epochs") is not None:
        return row["member_epochs"]
    total = row["epochs_run"] or 0
    by_id = {r.get("trial_id"): r for r in rows if r.get("trial_id")}
    seen = set()
    while row.get("inherited") and row.get("parent_trial_id") in by_id:
        if row["parent_trial_id"] in seen:
            break
        seen.add(row["parent_trial_id"])
        row = by_id[row["parent_trial_id"]]
        total += row["epochs_run"] or 0
    return total


def descriptions(runs):
    """{method: description} from the runs' metadata (the most recent run's)."""
    out = {}
    for meta, _ in runs:
        if meta.get("description"):
            out.setdefault(meta["method"], meta["description"])
    return out


def by_method(runs):
    """{method: {seed: rows}} in a stable method order (explorer variants first)."""
    out = {}
    for meta, rows in runs:
        out.setdefault(meta["method"], {})[meta["seed"]] = rows
    def rank(m):
        base = m.split("-")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), m)
    order = sorted(out, key=rank)
    return {m: dict(sorted(out[m].items())) for m in order}


def mean_std(values):
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(methods, ref, described=None):
    """The markdown report."""
    budget = ref["budget"]
    points = [max(1, round(f * budget)) for f in FRACTIONS]
    n_val = round(ref["train_subset"] * ref["validation_fraction"]) if ref["train_subset"] else None
    data = (f"train subset {ref['train_subset']} ({ref['train_subset'] - n_val} train / {n_val} "
            f"validation)" if n_val is not None else "full training set")
    test = f"test {ref['test_subset']}" if ref["test_subset"] else "full test set (10000)"
    lines = [f"Search benchmark on Fashion-MNIST: budget {budget} training epochs per run, {data}, "
             f"{test}.", "",
             "Best test accuracy reached at a budget point (test accuracy of the trial with the "
             "highest validation accuracy among those finished within that many epochs), "
             "mean ± std over seeds:", ""]
    head = ["method", "seeds"] + [f"{b} ep ({round(f * 100)}%)" for f, b in zip(FRACTIONS, points)]
    head += ["val of selected (100%)", "epochs in selected model (100%)", "trials (mean)",
             "pruned (mean)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, seeds in methods.items():
        cells = [method, str(len(seeds))]
        for b in points:
            cells.append(mean_std([v[0] for v in (best_test_at(r, b) for r in seeds.values())
                                   if v is not None and v[0] is not None]))
        finals = [best_test_at(r, budget) for r in seeds.values()]
        cells.append(mean_std([v[1] for v in finals if v is not None]))
        depths = [model_epochs(row, r) for r in seeds.values()
                  for row in [best_row_at(r, budget)] if row is not None]
        cells.append(f"{statistics.mean(depths):.1f}" if depths else "–")
        cells.append(f"{statistics.mean(len(r) for r in seeds.values()):.1f}")
        cells.append(f"{statistics.mean(sum(x['status'] == 'pruned' for x in r) for r in seeds.values()):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Per seed, best test accuracy at {budget} epochs (100%):", ""]
    all_seeds = sorted({s for seeds in methods.values() for s in seeds})
    lines += ["| method | " + " | ".join(f"seed {s}" for s in all_seeds) + " |",
              "|" + "---|" * (len(all_seeds) + 1)]
    for method, seeds in methods.items():
        cells = []
        for s in all_seeds:
            v = best_test_at(seeds[s], budget) if s in seeds else None
            cells.append("–" if v is None or v[0] is None else f"{v[0]:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if described:
        lines += ["", "Methods as run:", ""]
        lines += [f"- `{m}`: {described[m]}" for m in methods if m in described]
    return "\n".join(lines) + "\n"


def plot(methods, ref, path):
    """Mean best test accuracy against cumulative epochs, min-max band over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = ref["budget"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
    for index, (method, seeds) in enumerate(methods.items()):
        xs, mean, lo, hi = [], [], [], []
        for b in range(budget + 1):
            vals = [best_test_at(r, b) for r in seeds.values()]
            if any(v is None or v[0] is None for v in vals):
                continue
            tests = [v[0] for v in vals]
            xs.append(b)
            mean.append(statistics.mean(tests))
            lo.append(min(tests))
            hi.append(max(tests))
        if not xs:
            continue
        line, = ax.step(xs, mean, where="post", linestyle=styles[index % len(styles)],
                        label=f"{method} ({len(seeds)} seeds)")
        ax.fill_between(xs, lo, hi, step="post", alpha=0.2, color=line.get_color())
    ax.set_xlabel("cumulative training epochs")
    ax.set_ylabel("test accuracy of the best-validation trial")
    ax.set_xlim(0, budget)
    ax.set_title(f"Search on Fashion-MNIST ({ref['train_subset'] or 'all'} training examples), "
                 "mean and min–max over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory of the runs")
    ap.add_argument("--budget", type=int, default=None, help="only runs with this budget")
    ap.add_argument("--train-subset", type=int, default=None,
                    help="only runs with this train subset")
    ap.add_argument("--plot", default=None, help="PNG path (see above for the default)")
    a = ap.parse_args(argv)
    out_dir = os.path.abspath(a.out)
    runs, ref = comparable(load_runs(out_dir), a.budget, a.train_subset)
    if not runs:
        print(f"no finished runs in {out_dir}", file=sys.stderr)
        return 1
    methods = by_method(runs)
    text = table(methods, ref, descriptions(runs))
    timed_out = [f"{m['method']}-seed{m['seed']}" for m, _ in runs if m.get("timed_out")]
    if timed_out:
        text += (f"\nTimed out (only the trials finished by then count): "
                 f"{', '.join(sorted(timed_out))}\n")
    print(text, end="")
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    default_plot = DEFAULT_PLOT if out_dir == os.path.abspath(DEFAULT_OUT) else os.path.join(
        out_dir, "search_curve.png")
    plot_path = a.plot or default_plot
    plot(methods, ref, plot_path)
    print(f"\nplot: {plot_path}\ntable: {os.path.join(out_dir, 'table.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
