"""S2 benchmark: how well the transfer predictor picks the best (model, settings) pair for a new task.

1. A zoo of source models is trained directly on a Fashion-MNIST subset (not taken from a
   master's exploration): the four presets and hand-written genome variants (channels, depth,
   dense units, dropout, activation, pooling), 1 to 3 epochs each so that source quality varies.
   Each model's validation accuracy (the source score), test accuracy, parameters, FLOPs
   (`worker analyze`) and checkpoint are kept.
2. Four target tasks, as `[data]` files: MNIST 50 per class, scikit-learn's digits 60 per class
   (8x8, resized to 28x28 here, see `digits_idx`), Fashion-MNIST rotated 90 degrees few-shot (30
   per class), and MNIST in low contrast (0.6) with Gaussian noise (0.2), 100 per class. 20% of
   each task's examples are held out for validation; tests on the first 1000 test images (the
   digits: its 360).
3. Four fine-tune settings (plain objective, constant schedule, batch 32, no weight decay):
   AdamW 1e-3 3 epochs, AdamW 3e-3 3 epochs, SGD (Nesterov) 1e-2 3 epochs, AdamW 1e-3 8 epochs.
4. Ground truth: every (model, task, settings) fine-tune with `worker train` from the model's
   checkpoint, seeded (validation accuracy = the selection score, test accuracy reported).
   Probes: `worker probe` once per (model, task), timed.
5. Evaluation: `master/examples/transfer_predictor.rs` reads <out>/s2.jsonl, fits the predictor
   leave-one-task-out and compares rankings (weighted Kendall tau, top-1 regret) and compute;
   its markdown goes to <out>/s2.md.

Every command runs with one libtorch thread (--threads) on the CPU; the wall time of every
command (process start and data loading included) is what the compute comparison uses.
Writes <out>/s2.jsonl (kind = model | probe | finetune), <out>/s2.md and <out>/s2.log.
"""
import argparse
import concurrent.futures
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPLIT_SEED = 1
TEST_SUBSET = 1000


def conv(c, k=3):
    return {"type": "conv", "out_channels": c, "kernel": k, "stride": 1}


BN = {"type": "batch_norm"}
POOL = {"type": "pool", "kind": "max", "size": 2}
AVG = {"type": "pool", "kind": "avg", "size": 2}
GAP = {"type": "global_avg_pool"}


def act(kind="relu"):
    return {"type": "activation", "kind": kind}


def drop(rate):
    return {"type": "dropout", "rate": rate}


def dense(units):
    return {"type": "dense", "units": units}


def genome(blocks):
    return {"input": {"channels": 1, "height": 28, "width": 28}, "num_classes": 10,
            "blocks": blocks}


# (name, genome: "preset:NAME" or a genome dict, source epochs, source learning rate)
ZOO = [
    ("cnn2", "preset:cnn2", 3, 2e-3),
    ("cnn3", "preset:cnn3", 3, 2e-3),
    ("mlp", "preset:mlp", 3, 2e-3),
    ("resnet_small", "preset:resnet_small", 2, 2e-3),
    ("cnn2_narrow", genome([conv(16), BN, act(), POOL, conv(32), BN, act(), POOL,
                            dense(64), act()]), 3, 2e-3),
    ("cnn2_wide_drop", genome([conv(48), BN, act(), POOL, conv(96), BN, act(), POOL,
                               drop(0.5), dense(256), act(), drop(0.5)]), 2, 2e-3),
    ("cnn1", genome([conv(16, 5), act(), POOL, dense(64), act()]), 3, 2e-3),
    ("cnn3_narrow", genome([conv(16), BN, act(), POOL, conv(32), BN, act(), POOL, conv(48), BN,
                            act(), dense(64), act()]), 2, 2e-3),
    ("cnn2_gelu_avg", genome([conv(32), act("gelu"), AVG, conv(64), act("gelu"), AVG,
                              dense(128), act("gelu")]), 2, 2e-3),
    ("cnn3_gap", genome([conv(32), BN, act(), POOL, conv(64), BN, act(), POOL, conv(128), BN,
                         act(), GAP]), 3, 2e-3),
    ("mlp_wide", genome([dense(512), act(), drop(0.3), dense(256), act()]), 2, 2e-3),
    ("mlp_small", genome([dense(64), act("tanh")]), 1, 2e-3),
    ("cnn2_1epoch", "preset:cnn2", 1, 5e-4),
    ("cnn4_deep", genome([conv(16), BN, act(), conv(16), BN, act(), POOL, conv(32), BN, act(),
                          conv(32), BN, act(), POOL, drop(0.25), dense(96), act()]), 2, 2e-3),
]

# (name, dataset, per_class, transform); "digits" is turned into 28x28 IDX files first (see
# `digits_idx`).
TASKS = [
    ("mnist_50pc", "mnist", 50, {}),
    ("digits_60pc", "digits", 60, {}),
    ("fashion_rot90_30pc", "fashion-mnist", 30, {"rotate": 90}),
    ("mnist_lowcontrast_noise_100pc", "mnist", 100, {"low_contrast": 0.6, "noise": 0.2}),
]
VALIDATION_FRACTION = 0.2

# Fine-tune settings, in the fixed order the single-score baselines break ties by.
SETTINGS = [
    ("adamw_1e-3_3ep", {"optimizer": "adamw", "learning_rate": 1e-3, "epochs": 3}),
    ("adamw_3e-3_3ep", {"optimizer": "adamw", "learning_rate": 3e-3, "epochs": 3}),
    ("sgd_1e-2_3ep", {"optimizer": "sgd", "learning_rate": 1e-2, "epochs": 3}),
    ("adamw_1e-3_8ep", {"optimizer": "adamw", "learning_rate": 1e-3, "epochs": 8}),
]
FINE_TUNE_COMMON = {"schedule": "constant", "batch_size": 32, "weight_decay": 0.0}


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "worker")


def example_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "examples", "transfer_predictor")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def data_toml(dataset, transform=None, per_class=0, train_subset=0, validation_fraction=0.1,
              test_subset=TEST_SUBSET, files=None):
    lines = ["[data]", f"dataset = {json.dumps(dataset)}",
             f"validation_fraction = {validation_fraction}"]
    for key, path in (files or {}).items():
        lines.append(f"{key} = {json.dumps(path)}")
    if test_subset:
        lines.append(f"test_subset = {test_subset}")
    if per_class:
        lines.append(f"per_class = {per_class}")
    if train_subset:
        lines.append(f"train_subset = {train_subset}")
    if transform:
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in transform.items())
        lines.append(f"transform = {{ {inner} }}")
    return "\n".join(lines) + "\n"


def data_dir():
    """Where scripts/setup.sh installs MNIST and the digits (as worker::data::default_data_dir)."""
    if os.environ.get("EXPLORE_DATA_DIR"):
        return os.environ["EXPLORE_DATA_DIR"]
    if os.environ.get("EXPLORE_CACHE"):
        return os.path.join(os.environ["EXPLORE_CACHE"], "data")
    return os.path.join(os.path.expanduser("~"), ".cache", "explore", "data")


DIGITS_TEST_ROWS = 360  # worker/src/data/digits.rs: the last 360 rows are the test split


def digits_idx(tmp, size=28):
    """scikit-learn's digits as four IDX files of `size`x`size` images.

    `dataset = "digits"` alone loads 8x8 images, which no 28x28 genome of the zoo takes (the
    worker resizes only inside a multi-domain `[data]`, to the first training domain), so the
    benchmark does the resize here, the way the worker would: pixels scaled v*255/16 and
    rounded, bilinear at pixel centres (align_corners = false), rounded; the same fixed cut
    (the last 360 rows are the test file).
    """
    path = os.path.join(data_dir(), "digits", "digits.csv.gz")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run scripts/setup.sh")
    images, labels = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            if not line.strip():
                continue
            values = [float(v) for v in line.split(",")]
            images.append([math.floor(v * 255 / 16 + 0.5) for v in values[:64]])
            labels.append(int(values[64]))
    scale = 8 / size
    axis = []
    for i in range(size):
        f = min(max((i + 0.5) * scale - 0.5, 0.0), 7.0)
        lo = int(math.floor(f))
        axis.append((lo, min(lo + 1, 7), f - lo))

    def resize(img):
        out = bytearray()
        for y0, y1, ty in axis:
            for x0, x1, tx in axis:
                top = img[y0 * 8 + x0] * (1 - tx) + img[y0 * 8 + x1] * tx
                bottom = img[y1 * 8 + x0] * (1 - tx) + img[y1 * 8 + x1] * tx
                out.append(min(255, max(0, math.floor(top * (1 - ty) + bottom * ty + 0.5))))
        return bytes(out)

    cut = len(labels) - DIGITS_TEST_ROWS
    files = {}
    for part, rows in (("train", range(cut)), ("test", range(cut, len(labels)))):
        rows = list(rows)
        img_path = os.path.join(tmp, f"digits28-{part}-images-idx3-ubyte")
        with open(img_path, "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(rows), size, size))
            for r in rows:
                f.write(resize(images[r]))
        lab_path = os.path.join(tmp, f"digits28-{part}-labels-idx1-ubyte")
        with open(lab_path, "wb") as f:
            f.write(struct.pack(">II", 0x801, len(rows)))
            f.write(bytes(labels[r] for r in rows))
        files[f"{part}_images"] = img_path
        files[f"{part}_labels"] = lab_path
    return files


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


class Runner:
    def __init__(self, log):
        self.log = log

    def run(self, cmd):
        """Runs a worker command; returns (its JSON output, wall seconds)."""
        env = dict(os.environ, RUST_LOG="warn")
        started = time.monotonic()
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, timeout=1800)
        wall = time.monotonic() - started
        self.log.write(f"\n==> {' '.join(cmd)}\n({wall:.2f} s, exit {res.returncode})\n"
                       + res.stderr + res.stdout)
        self.log.flush()
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {res.returncode}):\n"
                               f"{res.stderr[-2000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1]), wall


def count_layers(blocks):
    """Blocks counted as `Genome::depth` does (residual bodies included)."""
    return sum(1 + count_layers(b["body"]) if b["type"] == "residual" else 1 for b in blocks)


# The presets' blocks as common/src/presets.rs writes them, for the depth and block-count
# features (`worker analyze` gives the parameters and FLOPs; both are checked to agree).
PRESETS = {
    "cnn2": genome([conv(32), BN, act(), POOL, conv(64), BN, act(), POOL, drop(0.25),
                    dense(128), act(), drop(0.25)]),
    "cnn3": genome([conv(32), BN, act(), POOL, conv(64), BN, act(), POOL, conv(96), BN,
                    act(), drop(0.2), dense(128), act()]),
    "mlp": genome([dense(256), act(), drop(0.2), dense(128), act()]),
    "resnet_small": genome([
        conv(32), BN, act(),
        {"type": "residual", "body": [conv(32), BN, act(), conv(32), BN]},
        act(), POOL, conv(64), BN, act(),
        {"type": "residual", "body": [conv(64), BN, act(), conv(64), BN]},
        act(), POOL, GAP]),
}


def train_zoo(args, tmp, runner, out_rows):
    worker = binary()
    common = ["--threads", str(args.threads), "--device", "cpu", "--split-seed", str(SPLIT_SEED)]
    src_cfg = write(os.path.join(tmp, "source.toml"),
                    data_toml("fashion-mnist", train_subset=args.source_subset))
    models = []
    for i, (name, spec, epochs, lr) in enumerate(ZOO[:args.models]):
        if isinstance(spec, str):
            g = PRESETS[spec.split(":", 1)[1]]
        else:
            g = spec
        gpath = write(os.path.join(tmp, f"{name}.genome.json"), json.dumps(g))
        # A drift of the copy from the preset cannot go unseen: both analysed, must agree.
        analysis, _ = runner.run([worker, "analyze", "--genome", gpath])
        if isinstance(spec, str):
            check, _ = runner.run([worker, "analyze", "--genome", spec])
            if (check["params"], check["flops"]) != (analysis["params"], analysis["flops"]):
                raise RuntimeError(f"the copy of {spec} in s2.py differs from the preset")
        hp = {"optimizer": "adamw", "learning_rate": lr, "schedule": "one_cycle",
              "batch_size": 128, "weight_decay": 1e-4, "epochs": epochs}
        hpath = write(os.path.join(tmp, f"{name}.source-hp.json"), json.dumps(hp))
        ckpt = os.path.join(tmp, f"{name}.safetensors")
        res, wall = runner.run([worker, "train", "--genome", gpath, "--hparams", hpath,
                                "--data-config", src_cfg, "--seed", str(1 + i),
                                "--save-checkpoint", ckpt] + common)
        row = {"kind": "model", "model": name, "genome_source": spec if isinstance(spec, str)
               else "variant", "params": analysis["params"], "flops": analysis["flops"],
               "depth": count_layers(g["blocks"]), "blocks": len(g["blocks"]),
               "source_epochs": epochs, "source_lr": lr,
               "source_val": res["val_accuracy"], "source_test": res["test_accuracy"],
               "wall_seconds": wall}
        print(f"model {name}: val {row['source_val']:.4f} test {row['source_test']:.4f} "
              f"params {row['params']} ({wall:.1f} s)", flush=True)
        out_rows.append(row)
        models.append((row, gpath, ckpt))
    return models


def probe_and_finetune(args, tmp, runner, models, out_rows):
    worker = binary()
    common = ["--threads", str(args.threads), "--device", "cpu", "--split-seed", str(SPLIT_SEED)]
    task_cfgs = []
    for name, dataset, per_class, transform in TASKS[:args.tasks]:
        files = None
        if dataset == "digits":
            files = digits_idx(tmp)
        cfg = write(os.path.join(tmp, f"task-{name}.toml"),
                    data_toml("idx" if files else dataset, transform, per_class=per_class,
                              validation_fraction=VALIDATION_FRACTION, files=files))
        task_cfgs.append((name, dataset, per_class, transform, cfg))
    setting_paths = []
    for sname, s in SETTINGS:
        hp = dict(FINE_TUNE_COMMON, **s)
        setting_paths.append((sname, hp, write(os.path.join(tmp, f"ft-{sname}.json"),
                                                json.dumps(hp))))

    jobs = []
    for mi, (model, gpath, ckpt) in enumerate(models):
        for ti, (tname, dataset, per_class, transform, cfg) in enumerate(task_cfgs):
            jobs.append(("probe", mi, ti, None))
            for si in range(len(setting_paths)):
                jobs.append(("finetune", mi, ti, si))

    def do(job):
        kind, mi, ti, si = job
        model, gpath, ckpt = models[mi]
        tname, dataset, per_class, transform, cfg = task_cfgs[ti]
        base = {"model": model["model"], "task": tname, "task_dataset": dataset,
                "task_per_class": per_class, "task_transform": transform}
        if kind == "probe":
            res, wall = runner.run([worker, "probe", "--genome", gpath, "--checkpoint", ckpt,
                                    "--data-config", cfg] + common)
            return dict(base, kind="probe", logme=res["logme"], leep=res["leep"],
                        nce=res["nce"], latency_ms=res["latency_ms"],
                        examples=res["examples"], classes=res["classes"],
                        probe_seconds=res["seconds"], wall_seconds=wall)
        sname, hp, hpath = setting_paths[si]
        seed = 1000 + 100 * mi + 10 * ti + si
        res, wall = runner.run([worker, "train", "--genome", gpath, "--hparams", hpath,
                                "--data-config", cfg, "--seed", str(seed),
                                "--parent-checkpoint", ckpt] + common)
        return dict(base, kind="finetune", settings=sname, settings_index=si,
                    optimizer=hp["optimizer"], learning_rate=hp["learning_rate"],
                    epochs=hp["epochs"], batch_size=hp["batch_size"],
                    weight_decay=hp["weight_decay"], objective="plain", seed=seed,
                    val_accuracy=res["val_accuracy"], test_accuracy=res["test_accuracy"],
                    train_seconds=res["train_seconds"],
                    inherited_tensors=res["inherited_tensors"], wall_seconds=wall)

    started = time.monotonic()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(do, jobs):
            out_rows.append(row)
            done += 1
            if done % 20 == 0 or done == len(jobs):
                print(f"{done}/{len(jobs)} probes and fine-tunes "
                      f"({time.monotonic() - started:.0f} s)", flush=True)


def evaluate(args):
    jsonl = os.path.join(args.out, "s2.jsonl")
    res = subprocess.run([example_binary(), jsonl], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit(f"transfer_predictor failed (exit {res.returncode})")
    write(os.path.join(args.out, "s2.md"), res.stdout)
    print(res.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-subset", type=int, default=3000,
                   help="Fashion-MNIST training examples of the zoo (10%% held out)")
    p.add_argument("--models", type=int, default=len(ZOO), help="first N zoo models")
    p.add_argument("--tasks", type=int, default=len(TASKS), help="first N target tasks")
    p.add_argument("--threads", type=int, default=1, help="libtorch threads per command")
    p.add_argument("--jobs", type=int, default=1, help="commands run at once")
    p.add_argument("--evaluate-only", action="store_true",
                   help="only re-run the evaluation on an existing <out>/s2.jsonl")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "transfer", "results"))
    args = p.parse_args()
    if not os.path.exists(example_binary()):
        sys.exit(f"{example_binary()} is missing: run "
                 "`cargo build -p explore-master --example transfer_predictor`")
    os.makedirs(args.out, exist_ok=True)
    if args.evaluate_only:
        evaluate(args)
        return
    if not os.path.exists(binary()):
        sys.exit(f"{binary()} is missing: run `cargo build -p explore-worker --bin worker`")
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, \
            open(os.path.join(args.out, "s2.log"), "w") as log:
        runner = Runner(log)
        models = train_zoo(args, tmp, runner, rows)
        probe_and_finetune(args, tmp, runner, models, rows)
        log.write(f"\ntotal wall time {time.monotonic() - started:.0f} s\n")
    with open(os.path.join(args.out, "s2.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    print(f"data collected in {time.monotonic() - started:.0f} s", flush=True)
    evaluate(args)


if __name__ == "__main__":
    main()
