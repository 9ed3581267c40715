"""S5 benchmark: domain disentanglement against pooled training (ERM) and DANN.

Two domain-generalisation settings; the target domain is never trained or selected on:
  rotated   Fashion-MNIST rotated 15, 30, 45, 60 and 75 degrees are the training domains;
            the targets are the upright (0 degree) and the 90 degree test images (the
            DomainBed Rotated-MNIST protocol on Fashion-MNIST). A trial trains once with the
            upright target; its checkpoint is re-scored with `worker evaluate` on a data
            section whose target is rotated 90 degrees (same training domains and split seed,
            so the same normalisation, and the same validation accuracy, which is checked).
  digits    the real shift MNIST -> scikit-learn digits (8x8, resized to 28x28). The domain
            objectives need at least two labelled training domains, so MNIST is given as three
            derived domains (upright, rotated 20 degrees, low contrast with noise); the target
            is the digits test split (360 images).
Methods, each over the same small batch-norm CNN (conv 16-32 with batch-norm and max pooling,
dense 64, about 105k parameters), the same data, trainer (`worker train --data-config`),
optimizer (Adam, cosine schedule), batch size, epochs and seeds:
  erm          objective "plain" on the pooled training domains
  dann         objective "dann" (gradient reversal), lambda from a small list
  disentangle  objective "disentangle" (S5: invariant/specific split, CLUB penalty), (lambda,
               dim) from a small list
Model selection: per seed and method, the configuration with the best validation accuracy of
the training domains (the trainer's score); the target is only reported. Reported: target
test accuracy (for `rotated` the mean of 0 and 90 degrees, and each) mean +- standard deviation
over seeds, the training-domain validation accuracy, and the last epoch's linear domain probe
on the invariant features (on the trunk's features for DANN; ERM reports none) against chance.
Writes <out>/s5.jsonl (one line per trained configuration), <out>/s5.md (the table) and
<out>/s5.log (the data sections, every command and the trainer's log).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
METHODS = ["erm", "dann", "disentangle"]
BENCHES = ["rotated", "digits"]


def _conv(c):
    return {"type": "conv", "out_channels": c, "kernel": 3, "stride": 1}


_BN = {"type": "batch_norm"}
_RELU = {"type": "activation", "kind": "relu"}
_POOL = {"type": "pool", "kind": "max", "size": 2}
GENOME = {
    "input": {"channels": 1, "height": 28, "width": 28},
    "num_classes": 10,
    "blocks": [_conv(16), _BN, _RELU, _POOL, _conv(32), _BN, _RELU, _POOL,
               {"type": "dense", "units": 64}, _RELU],
}

ROTATED_TRAIN = [15, 30, 45, 60, 75]
ROTATED_TARGETS = [0, 90]
DIGITS_TRAIN = [("mnist", {}), ("mnist_rot20", {"rotate": 20}),
                ("mnist_noisy", {"low_contrast": 0.5, "noise": 0.1})]


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "worker")


def inline(transform):
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v)
    return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in transform.items()) + " }"


def domain(name, transform=None, dataset=None, target=False):
    lines = ["[[data.domains]]", f"name = {json.dumps(name)}"]
    if dataset:
        lines.append(f"dataset = {json.dumps(dataset)}")
    if transform:
        lines.append(f"transform = {inline(transform)}")
    if target:
        lines.append("target = true")
    return "\n".join(lines)


def rotated_toml(target_angle, args):
    parts = ["[data]", 'dataset = "fashion-mnist"', f"train_subset = {args.per_domain}",
             f"test_subset = {args.test_subset}", f"validation_fraction = {args.validation_fraction}"]
    parts += [domain(f"rot{a}", {"rotate": a}) for a in ROTATED_TRAIN]
    parts.append(domain(f"rot{target_angle}", {"rotate": target_angle} if target_angle else None,
                        target=True))
    return "\n".join(parts) + "\n"


def digits_toml(args):
    parts = ["[data]", 'dataset = "mnist"', f"train_subset = {args.per_domain}",
             "test_subset = 0", f"validation_fraction = {args.validation_fraction}"]
    parts += [domain(name, t) for name, t in DIGITS_TRAIN]
    parts.append(domain("digits", dataset="digits", target=True))
    return "\n".join(parts) + "\n"


def configs(method, args):
    """(label, objective settings or None) of a method's configurations."""
    if method == "erm":
        return [("plain", None)]
    if method == "dann":
        lambdas = [float(x) for x in args.dann_lambdas.split(",")]
        return [(f"λ={l:g}", {"dann": {"lambda": l}}) for l in lambdas]
    out = []
    for pair in args.disentangle_configs.split(","):
        l, dim = pair.split(":")
        out.append((f"λ={float(l):g} dim={int(dim)}",
                    {"disentangle": {"lambda": float(l), "dim": int(dim)}}))
    return out


def run(cmd, log, retries=2):
    """Runs a worker command; returns its last stdout line as JSON. A failure is retried (the
    binary may be replaced by a concurrent build) before it is raised."""
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1")
    env.setdefault("RUST_LOG", "info")
    for attempt in range(retries + 1):
        log.write("\n==> " + " ".join(cmd) + "\n")
        log.flush()
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                             timeout=1800)
        if res.returncode == 0:
            return json.loads(res.stdout.strip().splitlines()[-1])
        log.write(f"(exit {res.returncode}, attempt {attempt + 1})\n")
        if attempt < retries:
            while not os.path.exists(cmd[0]):
                time.sleep(5)
            time.sleep(10)
    raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {res.returncode}); see the log")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def one_seed(bench, seed, args, tmp, log, out):
    worker = binary()
    runtime = ["--threads", str(args.threads), "--device", "cpu", "--split-seed", str(seed)]
    genome = write(os.path.join(tmp, "genome.json"), json.dumps(GENOME))
    if bench == "rotated":
        train_cfg = os.path.join(tmp, "rotated-0.toml")
        extra = {90: os.path.join(tmp, "rotated-90.toml")}
    else:
        train_cfg = os.path.join(tmp, "digits.toml")
        extra = {}
    rows = []
    for method in METHODS:
        for index, (label, objective) in enumerate(configs(method, args)):
            hp = {"optimizer": "adam", "learning_rate": args.lr, "schedule": "cosine",
                  "batch_size": args.batch, "weight_decay": 0.0, "epochs": args.epochs}
            if objective is not None:
                hp["objective"] = objective
            hp_path = write(os.path.join(tmp, f"{bench}-{method}-{index}.json"), json.dumps(hp))
            ckpt = os.path.join(tmp, f"{bench}-{method}-{index}-{seed}.safetensors")
            started = time.time()
            res = run([worker, "train", "--genome", genome, "--hparams", hp_path,
                       "--data-config", train_cfg, "--seed", str(seed),
                       "--save-checkpoint", ckpt] + runtime, log)
            metrics = res.get("metrics", {})
            prefix = {"erm": None, "dann": "dann", "disentangle": "disentangle"}[method]
            row = {"bench": bench, "method": method, "config": label, "seed": seed,
                   "hparams": hp, "val_accuracy": res["val_accuracy"],
                   "train_seconds": res["train_seconds"], "params": res["params"],
                   "metrics": metrics,
                   "domain_probe": metrics.get(f"{prefix}.domain_probe") if prefix else None,
                   "probe_chance": metrics.get(f"{prefix}.probe_chance") if prefix else None}
            if bench == "rotated":
                target = {0: res["test_accuracy"]}
                for angle, cfg in extra.items():
                    ev = run([worker, "evaluate", "--genome", genome, "--checkpoint", ckpt,
                              "--data-config", cfg] + runtime, log)
                    if abs(ev["val_accuracy"] - res["val_accuracy"]) > 1e-9:
                        raise RuntimeError(f"re-scored validation {ev['val_accuracy']} differs "
                                           f"from the trained {res['val_accuracy']}")
                    target[angle] = ev["test_accuracy"]
                row["target"] = {f"rot{a}": v for a, v in sorted(target.items())}
            else:
                row["target"] = {"digits": res["test_accuracy"]}
            row["target_mean"] = statistics.mean(row["target"].values())
            row["wall_seconds"] = round(time.time() - started, 1)
            os.remove(ckpt)
            rows.append(row)
            out.write(json.dumps(row, sort_keys=True) + "\n")
            out.flush()
            probe = row["domain_probe"]
            print(f"{bench} seed {seed} {method} {label}: val {row['val_accuracy']:.4f} "
                  f"target {row['target_mean']:.4f} probe {'—' if probe is None else f'{probe:.3f}'}"
                  f" ({row['wall_seconds']} s)", flush=True)
    return rows


def selected(rows, bench, method):
    """Per seed, the configuration with the best training-domain validation accuracy."""
    out = []
    for seed in sorted({r["seed"] for r in rows if r["bench"] == bench}):
        mine = [r for r in rows if r["bench"] == bench and r["method"] == method
                and r["seed"] == seed]
        if mine:
            out.append(max(mine, key=lambda r: r["val_accuracy"]))
    return out


def stat(values, scale=100.0):
    values = [v * scale for v in values if v is not None]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def report(rows, out_dir):
    lines = []
    means = {}
    for bench in BENCHES:
        if not any(r["bench"] == bench for r in rows):
            continue
        seeds = sorted({r["seed"] for r in rows if r["bench"] == bench})
        targets = sorted({k for r in rows if r["bench"] == bench for k in r["target"]},
                         key=lambda k: int(k[3:]) if k.startswith("rot") else 0)
        title = ("Rotated Fashion-MNIST (train 15–75°, targets 0° and 90°)" if bench == "rotated"
                 else "MNIST (3 derived domains) → scikit-learn digits")
        lines += [f"**{title}**, {len(seeds)} seeds; accuracy in %, mean ± std over seeds of the "
                  "configuration selected on training-domain validation.", ""]
        head = ["method", "selected config(s)"]
        if len(targets) > 1:
            head.append("target mean")
        head += [f"target {t}" for t in targets]
        head += ["train-domain val", "domain probe (chance)"]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for method in METHODS:
            sel = selected(rows, bench, method)
            if not sel:
                continue
            cfgs = sorted({r["config"] for r in sel})
            cells = [method, ", ".join(cfgs)]
            if len(targets) > 1:
                cells.append(stat([r["target_mean"] for r in sel]))
            cells += [stat([r["target"].get(t) for r in sel]) for t in targets]
            cells.append(stat([r["val_accuracy"] for r in sel]))
            probes = [r["domain_probe"] for r in sel if r["domain_probe"] is not None]
            chance = next((r["probe_chance"] for r in sel if r["probe_chance"]), None)
            cells.append(f"{stat(probes)} ({chance * 100:.0f})" if probes else "—")
            lines.append("| " + " | ".join(cells) + " |")
            means[(bench, method)] = statistics.mean(r["target_mean"] for r in sel)
        lines.append("")
        other = [r for r in rows if r["bench"] == bench and r["method"] != "erm"]
        if other:
            lines.append("Every configuration (mean over seeds): " + "; ".join(
                f"{m} {c}: target {stat([r['target_mean'] for r in other if (r['method'], r['config']) == (m, c)])}, "
                f"val {stat([r['val_accuracy'] for r in other if (r['method'], r['config']) == (m, c)])}"
                for m, c in sorted({(r["method"], r["config"]) for r in other})) + ".")
            lines.append("")
    goals = []
    if ("rotated", "disentangle") in means and ("rotated", "erm") in means:
        d = 100 * (means[("rotated", "disentangle")] - means[("rotated", "erm")])
        goals.append(f"rotated: disentangle − ERM = {d:+.1f} points (goal ≥ +1.0): "
                     + ("met" if d >= 1.0 else "not met"))
    if ("digits", "disentangle") in means and ("digits", "dann") in means:
        d = 100 * (means[("digits", "disentangle")] - means[("digits", "dann")])
        goals.append(f"digits: disentangle − DANN = {d:+.1f} points (goal > 0): "
                     + ("met" if d > 0 else "not met"))
    if goals:
        lines += ["Goals: " + "; ".join(goals) + ".", ""]
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "s5.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--benches", default="rotated,digits")
    p.add_argument("--per-domain", type=int, default=2000,
                   help="training examples per training domain (before the validation hold-out)")
    p.add_argument("--test-subset", type=int, default=2000,
                   help="target test images of the rotated setting (digits: all 360)")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dann-lambdas", default="0.1,1", help="dann_lambda values to select from")
    p.add_argument("--disentangle-configs", default="0.03:8,0.1:8,0.01:32",
                   help="disentangle_lambda:disentangle_dim pairs to select from (the CLUB "
                        "estimate sums over the dim coordinates, so lambda scales about 1/dim)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "objectives", "results"))
    args = p.parse_args()
    if not os.path.exists(binary()):
        sys.exit(f"{binary()} is missing: run `cargo build -p explore-worker --bin worker`")
    os.makedirs(args.out, exist_ok=True)
    benches = args.benches.split(",")
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s5-") as tmp, \
            open(os.path.join(args.out, "s5.log"), "w") as log, \
            open(os.path.join(args.out, "s5.jsonl"), "w") as out:
        log.write(f"# bench/objectives/s5.py {' '.join(sys.argv[1:])}\n# {vars(args)}\n")
        texts = {"rotated-0.toml": rotated_toml(0, args), "rotated-90.toml": rotated_toml(90, args),
                 "digits.toml": digits_toml(args)}
        for name, text in texts.items():
            write(os.path.join(tmp, name), text)
            log.write(f"\n# {name}\n{text}")
        for bench in benches:
            for seed in range(1, args.seeds + 1):
                rows += one_seed(bench, seed, args, tmp, log, out)
        log.write(f"\n# total {time.time() - started:.0f} s\n")
    report(rows, args.out)
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        rows = [json.loads(l) for l in open(sys.argv[2])]
        report(rows, os.path.dirname(os.path.abspath(sys.argv[2])))
    else:
        main()
