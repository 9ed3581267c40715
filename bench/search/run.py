"""Orchestrator of the search benchmark (called by `bench/search.sh`): runs every
(method, seed) pair, `--jobs` of them at a time, each as its own process (`explorer.py` or
`baseline.py` for random / tpe / hyperband, `pbt.py`) with its log in `<out>/runs/<method>-seed<S>.log`.

Runs are started seed by seed, so that an interrupted benchmark still has whole seeds. Each run
is started in its own process group; on Ctrl-C, SIGTERM or an error every running group gets
SIGTERM, then SIGKILL after 30 s, so no trainer, master or worker is left behind.
With `--resume`, a run whose output is already complete for the same settings is kept.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("explore", "explore-flat", "explore-defaults", "random", "tpe", "random-long",
           "tpe-long", "hyperband", "pbt")
# Explorer variants: method -> the explorer.py flag that makes it.
EXPLORER_VARIANTS = {"explore": None, "explore-flat": "--flat",
                     "explore-defaults": "--product-defaults"}
# The long-trial variants of the flat baselines: (sampler method, per-trial epochs from --long-epochs).
LONG = {"random-long": "random", "tpe-long": "tpe"}
KILL_GRACE_SECONDS = 30


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bash bench/search.sh", description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=60, help="training epochs per run (60)")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (3)")
    ap.add_argument("--first-seed", type=int, default=1, help="seeds are FIRST..FIRST+N-1 (1)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (2)")
    ap.add_argument("--train-subset", type=int, default=12000,
                    help="training examples, validation included (12000)")
    ap.add_argument("--test-subset", type=int, default=0, help="test examples, 0 = all (0)")
    ap.add_argument("--validation-fraction", type=float, default=1 / 6,
                    help="held-out share of the training subset (1/6)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trainer (1)")
    ap.add_argument("--out", default=None, help="output directory (bench/out/search)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated subset of " + ",".join(METHODS) +
                    " (default: all nine)")
    ap.add_argument("--hyperband-epochs", default="2,16", metavar="LOW,HIGH",
                    help="per-trial epoch range of hyperband; its max_resource is HIGH (2,16)")
    ap.add_argument("--long-epochs", default="2,16", metavar="LOW,HIGH",
                    help="per-trial epoch range of random-long and tpe-long (2,16: as deep as "
                    "the explorer's lineages get at 60 epochs)")
    ap.add_argument("--pbt-population", type=int, default=4, help="PBT population size (4)")
    ap.add_argument("--pbt-ready", type=int, default=2, help="PBT epochs per round (2)")
    ap.add_argument("--pbt-schedule", choices=["constant", "member"], default="constant",
                    help="learning-rate schedule within a PBT round (constant)")
    ap.add_argument("--explore-label", default="explore",
                    help="method name of the explorer runs, e.g. explore-noinherit")
    ap.add_argument("--explorer-config", action="append", default=[], metavar="FILE",
                    help="TOML snippet merged into the explorer spec (repeatable)")
    ap.add_argument("--explore-set", action="append", default=[], metavar="KEY=VALUE",
                    help="one explorer spec key, e.g. inheritance.enabled=false (repeatable)")
    ap.add_argument("--explore-timeout", type=int, default=0,
                    help="seconds one explorer run may take (default: from the budget)")
    ap.add_argument("--trial-timeout", type=int, default=3600,
                    help="seconds one baseline trial may take (3600)")
    ap.add_argument("--resume", action="store_true",
                    help="keep runs already complete with the same settings")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        ap.error(f"--methods: unknown {bad}; choose from {','.join(METHODS)}")
    if a.budget < 1 or a.seeds < 1 or a.jobs < 1:
        ap.error("--budget, --seeds and --jobs must be at least 1")
    for flag, text in (("--hyperband-epochs", a.hyperband_epochs),
                       ("--long-epochs", a.long_epochs)):
        try:
            lo, hi = (int(x) for x in text.split(","))
            assert 1 <= lo <= hi
        except (ValueError, AssertionError):
            ap.error(f"{flag}: LOW,HIGH with 1 <= LOW <= HIGH")
    if a.pbt_population < 2 or a.pbt_ready < 1:
        ap.error("--pbt-population must be at least 2 and --pbt-ready at least 1")
    a.methods = methods
    return a


def make_settings(a, root):
    out = os.path.abspath(a.out or os.path.join(root, "bench", "out", "search"))
    return common.Settings(root=root, out_dir=out, budget=a.budget, train_subset=a.train_subset,
                           test_subset=a.test_subset, validation_fraction=a.validation_fraction,
                           threads=a.threads, trial_timeout=a.trial_timeout)


def run_commands(a, settings):
    """(name, command) of every run, seed by seed."""
    py = sys.executable
    blob = json.dumps(common.settings_to_json(settings))
    runs = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for method in a.methods:
            if method in EXPLORER_VARIANTS:
                label = a.explore_label if method == "explore" else method
                cmd = [py, os.path.join(HERE, "explorer.py"), "--seed", str(seed),
                       "--label", label, "--settings", blob]
                if EXPLORER_VARIANTS[method]:
                    cmd.append(EXPLORER_VARIANTS[method])
                for path in a.explorer_config:
                    cmd += ["--config", os.path.abspath(path)]
                for assignment in a.explore_set:
                    cmd += ["--set", assignment]
                if a.explore_timeout:
                    cmd += ["--timeout", str(a.explore_timeout)]
                name = f"{label}-seed{seed}"
            elif method == "pbt":
                cmd = [py, os.path.join(HERE, "pbt.py"), "--seed", str(seed), "--settings", blob,
                       "--population", str(a.pbt_population), "--ready", str(a.pbt_ready),
                       "--schedule", a.pbt_schedule]
                name = f"pbt-seed{seed}"
            else:
                cmd = [py, os.path.join(HERE, "baseline.py"), "--method", LONG.get(method, method),
                       "--seed", str(seed), "--settings", blob]
                if method in LONG:
                    cmd += ["--label", method, "--epochs", a.long_epochs]
                if method == "hyperband":
                    cmd += ["--epochs", a.hyperband_epochs]
                name = f"{method}-seed{seed}"
            runs.append((name, cmd))
    return runs


def already_done(settings, name):
    """Whether run `name` has a complete output made with the same budget and data."""
    meta_path = os.path.join(settings.out_dir, name + ".meta.json")
    if not (os.path.exists(meta_path) and os.path.exists(
            os.path.join(settings.out_dir, name + ".jsonl"))):
        return False
    with open(meta_path) as f:
        meta = json.load(f)
    want = {"budget": settings.budget, **settings.data_config()}
    return all(meta.get(k) == v for k, v in want.items()) and not meta.get("timed_out")


class Pool:
    """At most `jobs` runs at a time, each in its own process group."""

    def __init__(self, settings, jobs):
        self.settings = settings
        self.jobs = jobs
        self.running = {}  # name -> (Popen, start time)
        self.failed = []

    def start(self, name, cmd):
        log = open(os.path.join(self.settings.out_dir, "runs", name + ".log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=HERE)
        self.running[name] = (proc, time.time())
        say(f"started {name} (log: {_short(log.name, self.settings.root)})")

    def reap(self):
        for name, (proc, t0) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[name]
            minutes = (time.time() - t0) / 60
            if proc.returncode == 0:
                note = " (TIMED OUT: only the trials finished by then)" if _timed_out(
                    self.settings, name) else ""
                say(f"finished {name} in {minutes:.1f} min{note}")
            else:
                self.failed.append(name)
                say(f"FAILED {name} (exit {proc.returncode}) after {minutes:.1f} min; "
                    f"see runs/{name}.log")

    def run_all(self, runs):
        for name, cmd in runs:
            while len(self.running) >= self.jobs:
                time.sleep(1)
                self.reap()
            self.start(name, cmd)
        while self.running:
            time.sleep(1)
            self.reap()

    def kill_all(self):
        """SIGTERM to every running group, SIGKILL to what is left after the grace period."""
        for proc, _ in self.running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + KILL_GRACE_SECONDS
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
        self.running.clear()


def _timed_out(settings, name):
    try:
        with open(os.path.join(settings.out_dir, name + ".meta.json")) as f:
            return bool(json.load(f).get("timed_out"))
    except (OSError, ValueError):
        return False


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _short(path, root):
    """`path` relative to `root` when inside it, else absolute."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv):
    root = os.path.dirname(os.path.dirname(HERE))
    a = parse_args(argv)
    settings = make_settings(a, root)
    os.makedirs(os.path.join(settings.out_dir, "runs"), exist_ok=True)
    runs = run_commands(a, settings)
    if a.resume:
        kept = [n for n, _ in runs if already_done(settings, n)]
        if kept:
            say(f"keeping finished runs: {', '.join(kept)}")
        runs = [(n, c) for n, c in runs if n not in kept]
    say(f"{len(runs)} runs, budget {settings.budget} epochs each, {a.jobs} at a time, "
        f"train subset {settings.train_subset}, output in {settings.out_dir}")
    pool = Pool(settings, a.jobs)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        pool.run_all(runs)
    finally:
        if pool.running:
            say("stopping the runs still going")
            pool.kill_all()
    if pool.failed:
        say(f"{len(pool.failed)} run(s) failed: {', '.join(pool.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
