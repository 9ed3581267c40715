"""S3 benchmark: equivalent-learning-rate mode against a plain (learning rate x weight decay)
search, on a batch-norm CNN of about 95k parameters and a Fashion-MNIST subset.

Per seed, three methods over the same genome, data split, trainer (`worker train`), epochs,
batch size, optimizer (SGD with Nesterov momentum 0.9) and cosine schedule:
  grid    plain head, 5 learning rates x 5 weight decays (25 trials)
  random  plain head, 5 (learning rate, weight decay) draws, log-uniform in the same ranges
  elr     ELR mode (cosine head, norms projected back), 5 ELR values log-spaced over the range
          that corresponds to the grid's learning rates (elr = lr / (1/3), the squared filter
          norm of the default initialisation)
Reported: test accuracy of the best-validation trial after k trials (k = 1..5, and 25 for the
grid, trials in a seeded random order for grid and elr), mean and spread over seeds.
Writes <out>/s3.jsonl (one line per trial) and <out>/s3.md (the table).
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "search"))
from common import Settings, train  # noqa: E402

def _conv(c):
    return {"type": "conv", "out_channels": c, "kernel": 3, "stride": 1}


_BN = {"type": "batch_norm"}
_RELU = {"type": "activation", "kind": "relu"}
_POOL = {"type": "pool", "kind": "max", "size": 2}
GENOME = {
    "input": {"channels": 1, "height": 28, "width": 28},
    "num_classes": 10,
    "blocks": [_conv(32), _BN, _RELU, _POOL, _conv(64), _BN, _RELU, _POOL,
               _conv(128), _BN, _RELU, {"type": "global_avg_pool"}],
}
LR_RANGE = (0.01, 0.3)
WD_VALUES = [0.0, 1e-5, 1e-4, 5e-4, 2e-3]
DEFAULT_INIT_SQUARED_NORM = 1.0 / 3.0
SCALE = 16.0


def log_space(lo, hi, n):
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def hparams(lr, wd, epochs, batch, objective=None):
    hp = {"optimizer": "sgd", "learning_rate": lr, "schedule": "cosine", "batch_size": batch,
          "weight_decay": wd, "epochs": epochs}
    if objective is not None:
        hp["objective"] = objective
    return hp


def trials_for(method, seed, epochs, batch):
    rng = random.Random(f"s3:{method}:{seed}")
    if method == "grid":
        cells = [(lr, wd) for lr in log_space(*LR_RANGE, 5) for wd in WD_VALUES]
        rng.shuffle(cells)
        return [hparams(lr, wd, epochs, batch) for lr, wd in cells]
    if method == "random":
        out = []
        for _ in range(5):
            lr = math.exp(rng.uniform(math.log(LR_RANGE[0]), math.log(LR_RANGE[1])))
            wd = 0.0 if rng.random() < 0.2 else math.exp(rng.uniform(math.log(1e-5), math.log(2e-3)))
            out.append(hparams(lr, wd, epochs, batch))
        return out
    if method == "elr":
        elrs = log_space(LR_RANGE[0] / DEFAULT_INIT_SQUARED_NORM, LR_RANGE[1] / DEFAULT_INIT_SQUARED_NORM, 5)
        rng.shuffle(elrs)
        return [hparams(0.01, 0.0, epochs, batch, {"elr": {"elr": e, "scale": SCALE}}) for e in elrs]
    raise ValueError(method)


def best_after(rows, k):
    """Test accuracy of the best-validation trial among the first k."""
    done = [r for r in rows[:k] if r["val_accuracy"] is not None]
    if not done:
        return None
    return max(done, key=lambda r: r["val_accuracy"])["test_accuracy"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=6000)
    ap.add_argument("--test-subset", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/out/objectives")
    ap.add_argument("--methods", default="elr,random,grid")
    args = ap.parse_args()
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    os.makedirs(args.out, exist_ok=True)
    settings = Settings(root=root, out_dir=args.out, budget=0, train_subset=args.train_subset,
                        test_subset=args.test_subset, validation_fraction=1 / 6, threads=args.threads)
    work = tempfile.mkdtemp(prefix="s3-")
    genome_path = os.path.join(work, "genome.json")
    with open(genome_path, "w") as f:
        json.dump(GENOME, f)
    jsonl = os.path.join(args.out, "s3.jsonl")
    rows = []
    with open(jsonl, "w") as out:
        for seed in range(1, args.seeds + 1):
            for method in args.methods.split(","):
                for i, hp in enumerate(trials_for(method, seed, args.epochs, args.batch)):
                    hp_path = os.path.join(work, f"{method}-{seed}-{i}.json")
                    with open(hp_path, "w") as f:
                        json.dump(hp, f)
                    res, err = train(settings, genome_path, hp_path, split_seed=seed,
                                     seed=1000 * seed + i, log_path=os.path.join(args.out, "s3.log"))
                    row = {"method": method, "seed": seed, "trial": i, "hparams": hp,
                           "val_accuracy": res and res.get("val_accuracy"),
                           "test_accuracy": res and res.get("test_accuracy"), "error": err}
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(f"{method} seed {seed} trial {i}: val {row['val_accuracy']} test {row['test_accuracy']} {err or ''}", flush=True)
    report(rows, args.out)


def report(rows, out_dir):
    methods = sorted({r["method"] for r in rows}, key=["grid", "random", "elr"].index)
    seeds = sorted({r["seed"] for r in rows})
    ks = [1, 2, 3, 5, 25]
    lines = ["| method | " + " | ".join(f"best of {k}" for k in ks) + " |",
             "|---|" + "---|" * len(ks)]
    for m in methods:
        cells = []
        for k in ks:
            vals = []
            for s in seeds:
                rs = [r for r in rows if r["method"] == m and r["seed"] == s]
                if len(rs) >= k:
                    v = best_after(rs, k)
                    if v is not None:
                        vals.append(v)
            if len(vals) == len(seeds) and vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
            else:
                cells.append("—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "s3.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        rows = [json.loads(l) for l in open(sys.argv[2])]
        report(rows, os.path.dirname(sys.argv[2]))
    else:
        main()
