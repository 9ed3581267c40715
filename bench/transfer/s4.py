"""S4 benchmark: a Fashion-MNIST model adapted to a stream of scenes without forgetting.

Per seed: a source model (preset cnn2) is trained on a Fashion-MNIST subset. It is then
fine-tuned through a stream of six scenes, one after the other, each scene's model starting
from the previous one's weights: Fashion-MNIST rotated 30, 60 and 90 degrees, inverted, low
contrast with noise, and MNIST; 10 training examples per class in each scene (90 trained, 10
held out), one pass. Four methods run the same stream with the same genome, hyperparameters
(AdamW, constant learning rate, batch 10, one epoch per scene), seeds and data:
  plain            plain fine-tuning
  replay           experience replay with a fixed 1:1 mix (mean of the two gradients)
  agem             A-GEM (transfer gradient projected off the history gradient on conflict)
  gradient_mixing  S4 (cosine-weighted mix of normalised gradients, conflict removed first,
                   library re-chosen by conflict after every scene)
The three replaying methods share one memory: a class-balanced sample of the source's training
examples ([data.history]: 40 candidates per class, 20 replayed; only gradient mixing re-chooses).
Reported after the whole stream: average test accuracy over the six scenes, the source's test
accuracy and its forgetting (source accuracy before the stream minus after), mean and spread
over seeds, and for the replaying methods the fraction of steps whose two gradients conflicted
(negative cosine). Every evaluation uses 1000 test examples of its scene.
Writes <out>/s4.jsonl (one line per method and seed) and <out>/s4.md (the table).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
METHODS = ["plain", "replay", "agem", "gradient_mixing"]
SCENES = [
    ("rot30", "fashion-mnist", {"rotate": 30}),
    ("rot60", "fashion-mnist", {"rotate": 60}),
    ("rot90", "fashion-mnist", {"rotate": 90}),
    ("inverted", "fashion-mnist", {"invert": True}),
    ("low_contrast_noise", "fashion-mnist", {"low_contrast": 0.6, "noise": 0.1}),
    ("mnist", "mnist", {}),
]
TEST_SUBSET = 1000


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "worker")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def data_toml(dataset, transform, per_class=0, train_subset=0, history=False):
    lines = ["[data]", f"dataset = {json.dumps(dataset)}", f"test_subset = {TEST_SUBSET}"]
    if per_class:
        lines.append(f"per_class = {per_class}")
    if train_subset:
        lines.append(f"train_subset = {train_subset}")
    if transform:
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in transform.items())
        lines.append(f"transform = {{ {inner} }}")
    if history:
        lines += ["[data.history]", 'dataset = "fashion-mnist"', "per_class = 40",
                  "library_per_class = 20", f"test_subset = {TEST_SUBSET}"]
    return "\n".join(lines) + "\n"


def run(cmd, log):
    log.write("\n==> " + " ".join(cmd) + "\n")
    log.flush()
    env = dict(os.environ, RUST_LOG="warn")
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                         timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {res.returncode}); see the log")
    return json.loads(res.stdout.strip().splitlines()[-1])


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def one_seed(seed, args, tmp, log):
    worker = binary()
    common = ["--threads", str(args.threads), "--device", "cpu", "--split-seed", str(seed)]
    src_cfg = write(os.path.join(tmp, "source.toml"),
                    data_toml("fashion-mnist", {}, train_subset=args.source_subset))
    source = os.path.join(tmp, f"source-{seed}.safetensors")
    src = run([worker, "train", "--genome", "preset:cnn2", "--hparams", "default",
               "--data-config", src_cfg, "--seed", str(seed), "--save-checkpoint", source]
              + common, log)
    scene_cfgs = {}
    for name, dataset, transform in SCENES:
        scene_cfgs[name] = (
            write(os.path.join(tmp, f"{name}.toml"),
                  data_toml(dataset, transform, per_class=10)),
            write(os.path.join(tmp, f"{name}-history.toml"),
                  data_toml(dataset, transform, per_class=10, history=True)),
        )
    rows = []
    for method in METHODS:
        hp = {"optimizer": "adamw", "learning_rate": args.lr, "schedule": "constant",
              "batch_size": 10, "weight_decay": 0.0, "epochs": 1}
        if method != "plain":
            hp["objective"] = method
        hp_path = write(os.path.join(tmp, f"{method}.json"), json.dumps(hp))
        parent = source
        conflicts = []
        for i, (name, _, _) in enumerate(SCENES):
            plain_cfg, history_cfg = scene_cfgs[name]
            out = os.path.join(tmp, f"{method}-{seed}-{i}.safetensors")
            res = run([worker, "train", "--genome", "preset:cnn2", "--hparams", hp_path,
                 "--data-config", plain_cfg if method == "plain" else history_cfg,
                 "--seed", str(seed * 100 + i), "--parent-checkpoint", parent,
                 "--save-checkpoint", out] + common, log)
            rate = res.get("metrics", {}).get(f"{method}.conflict_rate")
            if rate is not None:
                conflicts.append(rate)
            parent = out
        scene_acc = {}
        for name, _, _ in SCENES:
            ev = run([worker, "evaluate", "--genome", "preset:cnn2", "--checkpoint", parent,
                      "--data-config", scene_cfgs[name][0]] + common, log)
            scene_acc[name] = ev["test_accuracy"]
        ev = run([worker, "evaluate", "--genome", "preset:cnn2", "--checkpoint", parent,
                  "--data-config", src_cfg] + common, log)
        row = {"seed": seed, "method": method, "source_before": src["test_accuracy"],
               "source_after": ev["test_accuracy"],
               "forgetting": src["test_accuracy"] - ev["test_accuracy"],
               "scenes": scene_acc,
               "conflict_rate": statistics.mean(conflicts) if conflicts else None,
               "average": statistics.mean(scene_acc.values())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows, seeds):
    def stat(values):
        m = statistics.mean(values)
        s = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{m:.3f} ± {s:.3f}"

    lines = [f"S4 scene stream, {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
             "test accuracy after the whole stream (1000 examples per scene).", "",
             "| method | average over scenes | source after | forgetting | conflict rate | "
             + " | ".join(n for n, _, _ in SCENES) + " |",
             "|---|---|---|---|---|" + "---|" * len(SCENES)]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        cells = [stat([r["average"] for r in mine]), stat([r["source_after"] for r in mine]),
                 stat([r["forgetting"] for r in mine])]
        rates = [r["conflict_rate"] for r in mine if r.get("conflict_rate") is not None]
        cells.append(f"{statistics.mean(rates):.2f}" if rates else "—")
        cells += [f"{statistics.mean(r['scenes'][n] for r in mine):.3f}" for n, _, _ in SCENES]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    before = statistics.mean(r["source_before"] for r in rows)
    lines += ["", f"Source test accuracy before the stream: {before:.3f} (mean over seeds)."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--source-subset", type=int, default=12000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "transfer", "results"))
    args = p.parse_args()
    if not os.path.exists(binary()):
        sys.exit(f"{binary()} is missing: run `cargo build -p explore-worker --bin worker`")
    os.makedirs(args.out, exist_ok=True)
    seeds = list(range(1, args.seeds + 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            open(os.path.join(args.out, "s4.log"), "w") as log:
        for seed in seeds:
            rows += one_seed(seed, args, tmp, log)
    with open(os.path.join(args.out, "s4.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    md = table(rows, seeds)
    write(os.path.join(args.out, "s4.md"), md)
    print(md)


if __name__ == "__main__":
    main()
