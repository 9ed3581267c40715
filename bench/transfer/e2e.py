"""S2 + S4 end to end: a `[transfer]` experiment through the real cluster against the source's
best model fine-tuned with the default settings and against the explorer from scratch.

Everything runs as a user would run it: `master serve` on a free loopback port, `worker join`
processes (one libtorch thread each), `master submit --watch`, and `master trials --json` to
read the trials back.

1. Source (the pool "from last week"): the explorer on a Fashion-MNIST subset (`--source-subset`
   examples, 10% held out for validation) with the default search from the `cnn2` and `cnn3`
   seeds, `--source-epochs` training epochs in all.
2. History: a probing transfer from that pool to scikit-learn's digits (`size = 28`, 50 per
   class), every (model, settings) pair fine-tuned, so that the pool holds enough fine-tunes for
   the learned predictor (`master/src/predictor`, 8 at least) when the new task comes; without
   it the transfer below would rank by LogME alone. Neither phase is charged to any arm below:
   both are earlier work the transfer reuses (their epochs and seconds are reported).
3. The master's data directory (SQLite pool and checkpoints) is copied once per seed, so that the
   seeds do not see each other's fine-tunes. The new task: MNIST, 50 training examples per class,
   20% of them held out for validation (the selection score), the first 1,000 test images for
   the test accuracy; the same experiment seed (so the same subset and split) for the three arms
   of a seed:
   (T) transfer: `[transfer] from = <source>`, `models` source models x 3 fine-tune settings,
       probes and the predictor (S2), `budget.max_epochs = --transfer-epochs`; once the ranked
       fine-tunes are spent the explorer goes on from them (annealing children inheriting the
       fine-tuned weights) until the epoch budget is used.
   (a) default fine-tune: `[transfer] models = 1, probe = false`, the default settings (AdamW
       1e-3, constant, batch 32, 2 epochs), `max_trials = 1`: the source's best model, once.
   (b) scratch: the explorer on the new task with the default search (`cnn2` seed, default
       annealing, early stopping and inheritance), `budget.max_epochs = --scratch-epochs`.
   Every arm uses the default training objective (`plain`).

Compute is counted as epochs trained on the new task (`epochs_run` of every train trial,
pruned ones included), plus the probes converted to epochs: a probe's in-process seconds
(`probe.seconds`) divided by the seconds one training epoch of the same architecture took in the
same experiment (`train_seconds / epochs_run`, median). Worker seconds (training plus probes,
in-process) and the wall seconds of each experiment (submit to end, dispatch and data loading
included) are reported beside it. An arm's accuracy is the test accuracy of its completed train
trial with the best validation accuracy.

    python3 bench/transfer/e2e.py [--seeds N] [--source-subset N] [--source-epochs E]
                                  [--scratch-epochs E] [--transfer-epochs E] [--models M]
                                  [--workers W] [--threads T] [--out DIR] [--keep-work]
    python3 bench/transfer/e2e.py --report bench/transfer/results/e2e.jsonl

Writes <out>/e2e.jsonl (kind = experiment | trial | arm), <out>/e2e.md and <out>/e2e.log.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "search"))
from explorer import toml_dumps  # noqa: E402  (the search benchmark's spec writer)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_NAME = "e2e-source"
TEST_SUBSET = 1000
NEW_TASK = {"dataset": "mnist", "per_class": 50, "test_subset": TEST_SUBSET,
            "validation_fraction": 0.2}
HISTORY_TASK = {"dataset": "digits", "size": 28, "per_class": 50,
                "validation_fraction": 0.2}
# The transfer's fine-tune settings (plain objective): two learning rates, and the longer
# fine-tune that was best on every task of the S2 benchmark.
FINE_TUNE = {"schedule": "constant", "batch_size": 32, "weight_decay": 0.0}
SETTINGS = [
    {"optimizer": "adamw", "learning_rate": 1e-3, "epochs": 3, **FINE_TUNE},
    {"optimizer": "adamw", "learning_rate": 3e-3, "epochs": 3, **FINE_TUNE},
    {"optimizer": "adamw", "learning_rate": 1e-3, "epochs": 6, **FINE_TUNE},
]
ARMS = [
    ("transfer", "T", "transfer: probes + predictor, then the explorer"),
    ("default_finetune", "a", "source's best model, default fine-tune"),
    ("scratch", "b", "explorer from scratch (cnn2 seed)"),
]
READY_SECONDS = 60
STOP_GRACE_SECONDS = 20
FINISHED = ("completed", "pruned", "failed")


def binary(name):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", name)


def git_commit():
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True)
    return res.stdout.strip() or None


class Log:
    def __init__(self, path):
        self.f = open(path, "w")

    def __call__(self, text, echo=True):
        stamp = time.strftime("%H:%M:%S")
        self.f.write(f"[{stamp}] {text}\n")
        self.f.flush()
        if echo:
            print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    def block(self, title, text):
        self.f.write(f"\n==> {title}\n{text.rstrip()}\n\n")
        self.f.flush()


# ---- the cluster -----------------------------------------------------------------------------

class Cluster:
    """`master serve` on a free loopback port over `master_dir` and `workers` `worker join`s;
    `stop()` ends them all (SIGTERM, SIGKILL after a grace period)."""

    def __init__(self, bins, master_dir, run_dir, workers, threads, data_dir, log):
        self.bins, self.master_dir, self.run_dir = bins, master_dir, run_dir
        self.workers_wanted, self.threads, self.data_dir, self.log = workers, threads, data_dir, log
        self.procs, self.workers, self.url, self.worker_starts = [], [], None, 0

    def _spawn(self, args, name):
        out = open(os.path.join(self.run_dir, name), "a")
        env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS=str(self.threads))
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        self.procs.append(proc)
        return proc

    def client(self, *args):
        return [self.bins["master"], *args, "--master", self.url, "--data-dir", self.master_dir]

    def start(self):
        os.makedirs(self.run_dir, exist_ok=True)
        log_path = os.path.join(self.run_dir, "master.log")
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        master = self._spawn([self.bins["master"], "serve", "--listen", "127.0.0.1:0",
                              "--data-dir", self.master_dir], "master.log")
        deadline = time.time() + READY_SECONDS
        while time.time() < deadline:
            if master.poll() is not None:
                raise RuntimeError(f"master exited ({master.returncode}); see {log_path}")
            if self.url is None:
                with open(log_path) as f:
                    f.seek(offset)
                    m = re.search(r"master listening on (\S+)", f.read())
                if m:
                    self.url = f"http://{m.group(1)}"
            elif subprocess.run(self.client("status"), capture_output=True,
                                timeout=30).returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"master not ready within {READY_SECONDS} s; see {log_path}")
        for _ in range(self.workers_wanted):
            self.start_worker()

    def start_worker(self):
        self.worker_starts += 1
        self.workers.append(self._spawn(
            [self.bins["worker"], "join", "--master", self.url,
             "--token-file", os.path.join(self.master_dir, "token"),
             "--threads", str(self.threads), "--device", "cpu", "--data-dir", self.data_dir,
             "--name", f"e2e-{self.worker_starts}"], "worker.log"))

    def check_workers(self):
        """Restarts a worker that died (at most 4 restarts per cluster)."""
        for i, w in enumerate(self.workers):
            if w.poll() is not None and self.worker_starts < self.workers_wanted + 4:
                self.log(f"worker exited ({w.returncode}); restarting it")
                self.workers.pop(i)
                self.start_worker()
                return

    def stop(self):
        alive = [p for p in self.procs if p.poll() is None]
        # workers first (they drain), then the master
        for group in ([p for p in alive if p in self.workers],
                      [p for p in alive if p not in self.workers]):
            for p in group:
                p.terminate()
            deadline = time.time() + STOP_GRACE_SECONDS
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs, self.workers, self.url = [], [], None

    def run_experiment(self, spec, label, timeout):
        """Submits `spec` with --watch and follows it to its end. Returns (experiment id, end
        line, wall seconds, trials)."""
        spec_path = os.path.join(self.run_dir, f"{label}.toml")
        with open(spec_path, "w") as f:
            f.write(toml_dumps(spec))
        self.log.block(f"spec {label}", toml_dumps(spec))
        submit_log = os.path.join(self.run_dir, f"{label}.submit.log")
        started = time.monotonic()
        with open(submit_log, "w") as out:
            submit = subprocess.Popen(self.client("submit", spec_path, "--watch"), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=dict(os.environ, NO_COLOR="1"))
            try:
                while submit.poll() is None:
                    if time.monotonic() - started > timeout:
                        submit.terminate()
                        submit.wait()
                        raise RuntimeError(f"{label}: not finished after {timeout} s")
                    self.check_workers()
                    time.sleep(0.5)
            finally:
                if submit.poll() is None:
                    submit.kill()
        wall = time.monotonic() - started
        with open(submit_log) as f:
            text = f.read()
        # the progress bar redraws with carriage returns; keep the last state of each line
        clean = "\n".join(line.split("\r")[-1] for line in text.splitlines())
        self.log.block(f"master submit {label} --watch ({wall:.1f} s, exit {submit.returncode})",
                       clean[-6000:])
        ids = re.findall(r"submitted experiment (\S+)", text)
        if submit.returncode != 0 or not ids:
            raise RuntimeError(f"{label}: master submit failed (exit {submit.returncode}):\n"
                               f"{clean[-2000:]}")
        ends = re.findall(r"^experiment \S+ (\w+: .*)$", clean, re.M)
        res = subprocess.run(self.client("trials", ids[-1], "--json"), capture_output=True,
                             text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"master trials failed: {res.stderr.strip()[-1000:]}")
        trials = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        return ids[-1], (ends[-1] if ends else None), wall, trials


# ---- the specs -------------------------------------------------------------------------------

def source_spec(args):
    return {
        "name": SOURCE_NAME,
        "seed": args.source_seed,
        "budget": {"max_trials": 1000, "max_epochs": args.source_epochs},
        "data": {"dataset": "fashion-mnist", "train_subset": args.source_subset,
                 "test_subset": TEST_SUBSET, "validation_fraction": 0.1},
        "seeds": [{"preset": "cnn2"}, {"preset": "cnn3"}],
    }


def history_spec(args):
    return {
        "name": "e2e-history-digits",
        "seed": args.source_seed,
        "budget": {"max_trials": args.models * len(SETTINGS)},
        "data": dict(HISTORY_TASK),
        "early_stopping": {"rule": "none"},
        "transfer": {"from": SOURCE_NAME, "models": args.models, "settings": SETTINGS},
    }


def arm_spec(arm, seed, args):
    base = {"name": f"e2e-{arm}-seed{seed}", "seed": seed}
    data = dict(NEW_TASK)
    if arm == "transfer":
        return {**base, "budget": {"max_trials": 1000, "max_epochs": args.transfer_epochs},
                "data": data,
                "transfer": {"from": SOURCE_NAME, "models": args.models, "settings": SETTINGS,
                             "probe": True}}
    if arm == "default_finetune":
        return {**base, "budget": {"max_trials": 1}, "data": data,
                "transfer": {"from": SOURCE_NAME, "models": 1, "probe": False}}
    return {**base, "budget": {"max_trials": 1000, "max_epochs": args.scratch_epochs},
            "data": data}


# ---- accounting ------------------------------------------------------------------------------

def genome_key(trial):
    """A short hash of the trial's architecture."""
    text = json.dumps(trial.get("genome"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def trial_row(trial, phase, seed, experiment_id):
    m = trial.get("metrics") or {}
    return {
        "kind": "trial", "phase": phase, "seed": seed, "experiment_id": experiment_id,
        "trial_kind": trial.get("kind"), "seq": trial.get("seq"), "status": trial.get("status"),
        "origin": trial.get("origin"), "epochs_run": trial.get("epochs_run"),
        "val_accuracy": trial.get("score"), "test_accuracy": trial.get("test_accuracy"),
        "train_seconds": m.get("train_seconds"), "probe_seconds": m.get("probe.seconds"),
        "probe": {k[6:]: v for k, v in m.items() if k.startswith("probe.")} or None,
        "predicted_score": trial.get("predicted_score"),
        "predicted_std": trial.get("predicted_std"), "inherited": trial.get("inherited"),
        "inherited_tensors": trial.get("inherited_tensors"), "params": trial.get("params"),
        "flops": trial.get("flops"), "hparams": trial.get("hparams"),
        "genome_key": genome_key(trial), "created_at_ms": trial.get("created_at_ms"),
        "finished_at_ms": trial.get("finished_at_ms"), "error": trial.get("error"),
    }


def best_of(rows):
    """The completed train trial with the best validation accuracy (earliest on ties)."""
    done = [r for r in rows if r["trial_kind"] == "train" and r["status"] == "completed"
            and r["val_accuracy"] is not None]
    if not done:
        return None
    return max(done, key=lambda r: (r["val_accuracy"], -r["seq"]))


def summarize(rows, arm, seed, experiment):
    """The arm's result: best validation-selected test accuracy and compute."""
    train = [r for r in rows if r["trial_kind"] == "train" and r["status"] in FINISHED]
    probes = [r for r in rows if r["trial_kind"] == "probe"]
    epochs = sum(r["epochs_run"] or 0 for r in train)
    per_epoch = {}
    for r in train:
        if r["epochs_run"] and r["train_seconds"]:
            per_epoch.setdefault(r["genome_key"], []).append(r["train_seconds"] / r["epochs_run"])
    all_rates = [v for vs in per_epoch.values() for v in vs]
    probe_epochs = 0.0
    for p in probes:
        rates = per_epoch.get(p["genome_key"]) or all_rates
        if p["probe_seconds"] and rates:
            probe_epochs += p["probe_seconds"] / statistics.median(rates)
    best = best_of(rows)
    fine_tunes = [r for r in train if r["origin"] and r["origin"].startswith("transfer ")]
    ranked = [r for r in fine_tunes if "predicted" in r["origin"]]
    by_logme = [r for r in fine_tunes if "ranked by LogME" in r["origin"]]
    return {
        "kind": "arm", "arm": arm, "seed": seed, "experiment_id": experiment["experiment_id"],
        "test_accuracy": best and best["test_accuracy"],
        "val_accuracy": best and best["val_accuracy"], "best_origin": best and best["origin"],
        "best_params": best and best["params"],
        "epochs": epochs, "probes": len(probes), "probe_epochs": round(probe_epochs, 3),
        "compute_epochs": round(epochs + probe_epochs, 3),
        "train_seconds": round(sum(r["train_seconds"] or 0 for r in train), 2),
        "probe_seconds": round(sum(p["probe_seconds"] or 0 for p in probes), 2),
        "wall_seconds": experiment["wall_seconds"], "trials": len(train),
        "completed": sum(r["status"] == "completed" for r in train),
        "pruned": sum(r["status"] == "pruned" for r in train),
        "failed": sum(r["status"] == "failed" for r in train),
        "fine_tunes": len(fine_tunes), "fine_tunes_predicted": len(ranked),
        "fine_tunes_by_logme": len(by_logme),
    }


def best_within(rows, budget):
    """Test accuracy of the best-validation completed train trial among those finished within
    `budget` epochs (finishing order, cumulative `epochs_run`)."""
    train = [r for r in rows if r["trial_kind"] == "train" and r["status"] in FINISHED]
    train.sort(key=lambda r: (r["finished_at_ms"] or 0, r["seq"]))
    cum, seen = 0, []
    for r in train:
        cum += r["epochs_run"] or 0
        if cum > budget + 1e-9:
            break
        seen.append(r)
    best = best_of(seen)
    return (best["test_accuracy"], best["val_accuracy"]) if best else (None, None)


# ---- the run ---------------------------------------------------------------------------------

def run(args):
    for name in ("master", "worker"):
        if not os.access(binary(name), os.X_OK):
            sys.exit(f"missing {binary(name)}: build it first (cargo build --workspace --bins)")
    os.makedirs(args.out, exist_ok=True)
    log = Log(os.path.join(args.out, "e2e.log"))
    work = tempfile.mkdtemp(prefix="explore-e2e-")
    # A snapshot of the binaries: a concurrent `cargo build` must not change them mid-run.
    bins = {}
    for name in ("master", "worker"):
        bins[name] = os.path.join(work, name)
        shutil.copy2(binary(name), bins[name])
    started = time.monotonic()
    meta = {"kind": "meta", "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
            "args": {k: v for k, v in vars(args).items() if k != "report"},
            "settings": SETTINGS, "new_task": NEW_TASK, "history_task": HISTORY_TASK,
            "cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    log(f"work directory {work}; commit {meta['commit']}; load {meta['load_at_start']}")
    rows = [meta]
    jsonl = os.path.join(args.out, "e2e.jsonl")

    def save():
        with open(jsonl, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def experiment(cluster, spec, phase, seed, timeout):
        label = phase if seed is None else f"{phase}-seed{seed}"
        log(f"{label}: submitting {spec['name']}")
        eid, end, wall, trials = cluster.run_experiment(spec, label, timeout)
        exp = {"kind": "experiment", "phase": phase, "seed": seed, "experiment_id": eid,
               "end": end, "wall_seconds": round(wall, 1), "spec": spec}
        trows = [trial_row(t, phase, seed, eid) for t in trials]
        rows.append(exp)
        rows.extend(trows)
        save()
        done = [r for r in trows if r["status"] == "completed" and r["trial_kind"] == "train"]
        best = best_of(trows)
        log(f"{label}: {end}; {len(trows)} trials ({len(done)} completed), "
            f"{sum(r['epochs_run'] or 0 for r in trows)} epochs, {wall:.0f} s"
            + (f"; best val {best['val_accuracy']:.4f} test {best['test_accuracy']:.4f}"
               if best else ""))
        return exp, trows

    try:
        pool_dir = os.path.join(work, "pool")
        cluster = Cluster(bins, os.path.join(pool_dir, "master"), pool_dir, args.workers,
                          args.threads, args.data_dir, log)
        try:
            cluster.start()
            experiment(cluster, source_spec(args), "source", None, args.timeout)
            if args.models * len(SETTINGS) >= 8:
                experiment(cluster, history_spec(args), "history", None, args.timeout)
            else:
                log("history skipped: fewer than 8 fine-tunes; the transfer ranks by LogME")
        finally:
            cluster.stop()
        for seed in range(1, args.seeds + 1):
            run_dir = os.path.join(work, f"seed{seed}")
            shutil.copytree(pool_dir + "/master", os.path.join(run_dir, "master"))
            cluster = Cluster(bins, os.path.join(run_dir, "master"), run_dir, args.workers,
                              args.threads, args.data_dir, log)
            try:
                cluster.start()
                for arm, _, _ in ARMS:
                    exp, trows = experiment(cluster, arm_spec(arm, seed, args), arm, seed,
                                            args.timeout)
                    summary = summarize(trows, arm, seed, exp)
                    if arm == "scratch":
                        t = next(r for r in rows if r["kind"] == "arm" and r["seed"] == seed
                                 and r["arm"] == "transfer")
                        acc, val = best_within(trows, t["compute_epochs"])
                        summary["test_at_transfer_compute"] = acc
                        summary["val_at_transfer_compute"] = val
                    rows.append(summary)
                    save()
                    log(f"seed {seed} {arm}: test {summary['test_accuracy']} "
                        f"(val {summary['val_accuracy']}), {summary['epochs']} epochs + "
                        f"{summary['probe_epochs']} probe epochs, {summary['wall_seconds']} s")
            finally:
                cluster.stop()
    finally:
        rows[0]["wall_seconds"] = round(time.monotonic() - started, 1)
        rows[0]["load_at_end"] = os.getloadavg()
        save()
        if args.keep_work:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(jsonl, os.path.join(args.out, "e2e.md"))
    log(f"done in {time.monotonic() - started:.0f} s: {jsonl}, e2e.md")


# ---- the report ------------------------------------------------------------------------------

def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.4f}"
    return f"{m:.4f} ± {statistics.stdev(values):.4f}"


def fmt(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def report(jsonl, md_path):
    rows = [json.loads(line) for line in open(jsonl) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    arms = [r for r in rows if r["kind"] == "arm"]
    exps = {(r["phase"], r["seed"]): r for r in rows if r["kind"] == "experiment"}
    trials = [r for r in rows if r["kind"] == "trial"]
    seeds = sorted({r["seed"] for r in arms})
    a = meta["args"]
    out = []
    w = out.append
    w(f"S2 + S4 end to end (`bash bench/transfer.sh e2e`), commit {meta['commit']}, "
      f"{meta['date']}, {meta['cpus']} CPUs, {a['workers']} worker(s) x {a['threads']} "
      f"libtorch thread(s); {meta.get('wall_seconds', 0) / 60:.1f} minutes in all; load average "
      f"{meta['load_at_start'][0]:.1f} at the start, "
      f"{(meta.get('load_at_end') or [0])[0]:.1f} at the end.")
    w("")
    src = [t for t in trials if t["phase"] == "source"]
    src_best = best_of(src)
    if src_best:
        src_exp = exps[("source", None)]
        w(f"Source pool: `{SOURCE_NAME}`, Fashion-MNIST {a['source_subset']} examples, "
          f"{len(src)} trials "
          f"({sum(t['status'] == 'completed' for t in src)} completed), "
          f"{sum(t['epochs_run'] or 0 for t in src)} epochs, {src_exp['wall_seconds']:.0f} s; "
          f"best val {src_best['val_accuracy']:.4f} / test {src_best['test_accuracy']:.4f} "
          f"({src_best['params']} parameters).")
    hist = [t for t in trials if t["phase"] == "history"]
    if hist:
        hb = best_of(hist)
        w(f"History for the predictor: a probing transfer to digits (28x28, 50 per class), "
          f"{sum(t['trial_kind'] == 'train' for t in hist)} fine-tunes, "
          f"{sum(t['epochs_run'] or 0 for t in hist)} epochs, "
          f"{exps[('history', None)]['wall_seconds']:.0f} s"
          + (f"; best val {hb['val_accuracy']:.4f} / test {hb['test_accuracy']:.4f}." if hb
             else "."))
    w("")
    w(f"New task: MNIST 50 per class (20% held out for validation), test on the first "
      f"{TEST_SUBSET} test images; {len(seeds)} seed(s). Accuracy: the test accuracy of the "
      "arm's completed trial with the best validation accuracy. Compute: epochs trained on the "
      "new task plus probes converted to epochs (probe seconds / seconds per training epoch of "
      "the same architecture).")
    w("")
    w("| arm | test accuracy (mean ± std) | val of the pick | new-task epochs | probe epochs "
      "| compute (epochs) | worker s (train + probe) | wall s | trials (pruned) |")
    w("|---|---|---|---|---|---|---|---|---|")
    for arm, letter, desc in ARMS:
        rs = [r for r in arms if r["arm"] == arm]
        if not rs:
            continue

        def avg(key, digits=1):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return f"{statistics.fmean(vals):.{digits}f}" if vals else "—"
        w(f"| ({letter}) {desc} | **{mean_std([r['test_accuracy'] for r in rs])}** "
          f"| {mean_std([r['val_accuracy'] for r in rs])} | {avg('epochs')} "
          f"| {avg('probe_epochs', 2)} | {avg('compute_epochs', 2)} "
          f"| {statistics.fmean(r['train_seconds'] + r['probe_seconds'] for r in rs):.1f} "
          f"| {avg('wall_seconds')} | {avg('trials')} ({avg('pruned')}) |")
    w("")
    w("Per seed:")
    w("")
    w("| seed | (T) test | (a) test | (b) test | (b) test at (T)'s compute | (T) compute "
      "| (b) compute | (b)/(T) compute | (b)/(T) wall | (T) pick | (T) fine-tunes: "
      "predictor / LogME |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for s in seeds:
        by = {r["arm"]: r for r in arms if r["seed"] == s}
        t, da, b = by.get("transfer"), by.get("default_finetune"), by.get("scratch")
        if not (t and da and b):
            continue
        ratio = b["compute_epochs"] / t["compute_epochs"] if t["compute_epochs"] else None
        ratios.append(ratio)
        wall = b["wall_seconds"] / t["wall_seconds"] if t["wall_seconds"] else None
        w(f"| {s} | {fmt(t['test_accuracy'])} | {fmt(da['test_accuracy'])} "
          f"| {fmt(b['test_accuracy'])} | {fmt(b.get('test_at_transfer_compute'))} "
          f"| {t['compute_epochs']:.2f} | {b['compute_epochs']:.2f} | {fmt(ratio, 1)}× "
          f"| {fmt(wall, 1)}× | {t['best_origin']} | {t['fine_tunes_predicted']} / "
          f"{t['fine_tunes_by_logme']} |")
    w("")
    full = [(r["seed"], {x["arm"]: x for x in arms if x["seed"] == r["seed"]}) for r in arms
            if r["arm"] == "transfer"]
    full = [(s, by) for s, by in full if len(by) == 3]
    if full:
        t_acc = statistics.fmean(by["transfer"]["test_accuracy"] for _, by in full)
        a_acc = statistics.fmean(by["default_finetune"]["test_accuracy"] for _, by in full)
        b_acc = statistics.fmean(by["scratch"]["test_accuracy"] for _, by in full)
        wins = sum(by["transfer"]["test_accuracy"] >= max(by["default_finetune"]["test_accuracy"],
                                                          by["scratch"]["test_accuracy"])
                   for _, by in full)
        ratio = statistics.fmean(ratios)
        acc_ok = t_acc >= max(a_acc, b_acc)
        w(f"Goal (at least the best test accuracy of (a) and (b) at a fifth of (b)'s compute): "
          f"accuracy {'met' if acc_ok else 'NOT met'} on the mean ((T) {t_acc:.4f}, (a) "
          f"{a_acc:.4f}, (b) {b_acc:.4f}; (T) at least both in {wins} of {len(full)} seeds); "
          f"compute {'met' if ratio >= 5 else 'NOT met'} ((b)/(T) = {ratio:.1f}× on the mean).")
        w("")
    w("Trials of (T), first seed (fine-tunes in the order the scheduler queued them; `pred` "
      "is the predictor's mean ± std):")
    w("")
    w("| seq | kind | status | origin | epochs | val | test | pred | probe LogME | "
      "probe seconds |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    if seeds:
        for r in sorted((t for t in trials if t["phase"] == "transfer" and t["seed"] == seeds[0]),
                        key=lambda r: (r["trial_kind"] != "probe", r["seq"])):
            pred = (f"{r['predicted_score']:.3f} ± {r['predicted_std']:.3f}"
                    if r["predicted_score"] is not None else "")
            probe = r["probe"] or {}
            origin = (r["origin"] or "").replace("|", "/")
            w(f"| {r['seq']} | {r['trial_kind']} | {r['status']} | {origin[:110]} "
              f"| {r['epochs_run']} | {fmt(r['val_accuracy']) if not probe else ''} "
              f"| {fmt(r['test_accuracy']) if not probe else ''} "
              f"| {pred} | {fmt(probe.get('logme'), 3) if probe else ''} "
              f"| {fmt(probe.get('seconds'), 2) if probe else ''} |")
    text = "\n".join(out) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="new-task seeds (1..N)")
    ap.add_argument("--source-subset", type=int, default=5000)
    ap.add_argument("--source-epochs", type=int, default=40,
                    help="epoch budget of the source exploration")
    ap.add_argument("--source-seed", type=int, default=1)
    ap.add_argument("--scratch-epochs", type=int, default=100,
                    help="epoch budget of (b), the explorer from scratch")
    ap.add_argument("--transfer-epochs", type=int, default=0,
                    help="epoch budget of (T) (default: scratch/5 minus one per probed model)")
    ap.add_argument("--models", type=int, default=4, help="source models (T) probes")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=FASHION_DIR, help="Fashion-MNIST for the workers")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per experiment")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "transfer", "results"))
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the masters' data directories and logs (printed at the end)")
    ap.add_argument("--report", metavar="JSONL", help="only rewrite the report of a finished run")
    args = ap.parse_args()
    if args.report:
        report(args.report, os.path.splitext(args.report)[0] + ".md")
        return
    if not args.transfer_epochs:
        args.transfer_epochs = max(1, args.scratch_epochs // 5 - args.models)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run(args)


if __name__ == "__main__":
    main()
