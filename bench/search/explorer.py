"""Explorer driver of the search benchmark: one run of the annealing explorer as the real
cluster, on loopback, at a budget of training epochs.

It writes the experiment spec (`spec.toml`, generated from `space.py` plus the annealing, early
stopping and inheritance settings below, which `--explorer-config FILE` and `--set KEY=VALUE`
override), starts `master serve` on a free loopback port and one `worker join` (one torch
thread), submits the spec with `master submit --watch`, and when the experiment ends (or the
run's time limit passes) reads every trial back with `master trials ID --json`. Finished
trials (completed, pruned, failed) are written in finishing order with their cumulative epochs;
the epochs charged are the master's own (`epochs_run`: a pruned trial counts the epochs it ran,
an inheriting child its fine-tune epochs). The master and the worker are always stopped
(SIGTERM, SIGKILL after 20 s), also on errors, Ctrl-C and SIGTERM.

With `--flat` the explorer's architecture moves stay in the baselines' flat space
(`[search.flat]` from `space.explorer_flat_section()`): the `explore-flat` method. With
`--product-defaults` the spec leaves annealing, early stopping and inheritance to the master's
defaults: the `explore-defaults` method. Since 2026-12-07 those defaults are EXPLORER_DEFAULTS
below (the runs of `explore` made them the defaults); the committed `explore-defaults` runs
measured the earlier ones (one chain per worker slot, exponential cooling from 0.02, reheat
after 6).

    python bench/search/explorer.py --seed 1 --label explore --settings '{...}' [--flat] [--set K=V]...
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib

import common
import space

# Everything of the spec except the data, the budget, the search space and the seeds:
# what an ablation changes.
EXPLORER_DEFAULTS = {
    "annealing": {
        "chains": 2,
        "cooling": "adaptive",
        "initial_temperature": 0.01,
        "min_temperature": 0.0005,
        "cooling_rate": 0.85,
        "target_acceptance": 0.3,
        "reheat_after": 4,
    },
    "early_stopping": {"rule": "median", "grace_epochs": 1, "min_peers": 3},
    "inheritance": {"enabled": True, "fine_tune_epochs": 2},
}
STOP_GRACE_SECONDS = 20
READY_SECONDS = 60
FINISHED = ("completed", "pruned", "failed")


# ---- the spec ------------------------------------------------------------------------------

def build_spec(settings, seed, run_dir, overrides, product_defaults=False):
    """The experiment spec of run `seed` as a dict; seed genomes are written to `run_dir`.
    With `product_defaults` the annealing, early-stopping and inheritance tables are left out,
    so the master applies its own defaults (the `explore-defaults` method)."""
    seeds = []
    for label, params in space.SEEDS:
        path = os.path.abspath(os.path.join(run_dir, f"seed-{label}.genome.json"))
        common.write_json(path, space.build_genome(params))
        seeds.append({"genome_file": path, "hparams": space.build_hparams(params)})
    spec = {
        "name": f"search-bench-seed{seed}",
        "seed": seed,
        "budget": {"max_trials": 100000, "max_epochs": settings.budget},
        "data": {"dataset": "fashion-mnist", **settings.data_config()},
        **({} if product_defaults else json.loads(json.dumps(EXPLORER_DEFAULTS))),
        "search": space.explorer_search_section(),
        "seeds": seeds,
    }
    for override in overrides:
        deep_merge(spec, override)
    if spec.get("training", {}).get("objective") == "elr":
        # ELR mode searches one step size in place of learning rate and weight decay: the same
        # step sizes as the space's learning-rate range, on default-initialised norms (1/3).
        search = spec["search"]
        lo, hi = search.pop("learning_rate")
        search.pop("weight_decay")
        search.setdefault("elr", [lo * 3, hi * 3])
    return spec


def deep_merge(base, extra):
    """Merges `extra` into `base` (tables recursively, everything else replaced)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value


def parse_set(assignment):
    """`a.b.c=VALUE` (VALUE in TOML syntax, else a plain string) as a nested dict."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set wants KEY=VALUE, got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    out = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def toml_value(v):
    """One value in TOML syntax (dicts become inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def toml_dumps(spec):
    """The spec as TOML: scalars, then [tables], then [[arrays of tables]]."""
    lines, tables, arrays = [], [], []
    for key, value in spec.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{key}]]"] + [f"{k} = {toml_value(v)}" for k, v in item.items()]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != spec:
        raise AssertionError("the generated spec TOML does not read back as the spec")
    return text


# ---- the processes -------------------------------------------------------------------------

class Cluster:
    """A master and one worker on loopback, stopped by `stop()` whatever happened."""

    def __init__(self, settings, run_dir):
        self.settings = settings
        self.run_dir = run_dir
        self.master_dir = os.path.join(run_dir, "master")
        self.procs = []
        self.url = None
        self.worker = None
        self.worker_starts = 0

    def _spawn(self, args, stdout_name, stderr_name):
        out = open(os.path.join(self.run_dir, stdout_name), "a")
        err = out if stderr_name == stdout_name else open(
            os.path.join(self.run_dir, stderr_name), "a")
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=common._quiet_env())
        self.procs.append(proc)
        return proc

    def master_args(self, *args):
        """A `master` client command against this cluster."""
        return [self.settings.binary("master"), *args, "--master", self.url,
                "--data-dir", self.master_dir]

    def start_master(self):
        os.makedirs(self.master_dir, exist_ok=True)
        out_path = os.path.join(self.run_dir, "master.out")
        open(out_path, "w").close()
        master = self._spawn([self.settings.binary("master"), "serve", "--listen", "127.0.0.1:0",
                              "--data-dir", self.master_dir], "master.out", "master.log")
        deadline = time.time() + READY_SECONDS
        while time.time() < deadline:
            if master.poll() is not None:
                raise RuntimeError(f"master exited ({master.returncode}); see master.log")
            if self.url is None:
                with open(out_path) as f:
                    m = re.search(r"master listening on (\S+)", f.read())
                if m:
                    self.url = f"http://{m.group(1)}"
            elif subprocess.run(self.master_args("status"), capture_output=True,
                                timeout=30).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"master not ready within {READY_SECONDS} s; see master.log")

    def start_worker(self):
        self.worker_starts += 1
        self.worker = self._spawn(
            [self.settings.binary("worker"), "join", "--master", self.url,
             "--token-file", os.path.join(self.master_dir, "token"),
             "--threads", str(self.settings.threads), "--device", "cpu",
             "--data-dir", self.settings.data_dir, "--idle-exit-secs", "30",
             "--name", f"bench-{self.worker_starts}"], "worker.log", "worker.log")

    def stop(self):
        """SIGTERM to every process still running, SIGKILL after the grace period."""
        alive = [p for p in self.procs if p.poll() is None]
        for p in alive:
            p.terminate()
        deadline = time.time() + STOP_GRACE_SECONDS
        for p in alive:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def watch(cluster, spec_path, timeout):
    """Submits the spec and follows it until it ends or `timeout` seconds pass.
    Returns (experiment id, final status line or None, timed out?)."""
    submit = cluster._spawn(cluster.master_args("submit", spec_path, "--watch"),
                            "submit.log", "submit.log")
    log_path = os.path.join(cluster.run_dir, "submit.log")
    deadline = time.time() + timeout
    timed_out = False
    while submit.poll() is None:
        if time.time() > deadline:
            timed_out = True
            break
        if cluster.worker.poll() is not None:
            log = os.path.join(cluster.run_dir, "worker.log")
            if cluster.worker_starts >= 4:
                with open(log) as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"the worker exited {cluster.worker_starts} times; last "
                                   f"log lines ({log}):\n{tail}")
            print(f"worker exited ({cluster.worker.returncode}) during the experiment; "
                  "restarting it", file=sys.stderr, flush=True)
            cluster.start_worker()
        time.sleep(2)
    with open(log_path) as f:
        text = f.read()
    ids = re.findall(r"submitted experiment (\S+)", text)
    if not ids:
        raise RuntimeError(f"no experiment id in submit.log:\n{text[-2000:]}")
    ends = re.findall(r"^experiment \S+ (\w+): (.*)$", text, re.M)
    return ids[-1], (" ".join(ends[-1]) if ends else None), timed_out


def read_trials(cluster, experiment_id):
    """Every trial of the experiment from `master trials --json`."""
    res = subprocess.run(cluster.master_args("trials", experiment_id, "--json"),
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"master trials failed: {res.stderr.strip()[-1000:]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def write_trials(out, trials):
    """The finished trials in finishing order into the run's output."""
    done = [t for t in trials if t["status"] in FINISHED]
    done.sort(key=lambda t: (t.get("finished_at_ms") or 0, t["seq"]))
    for t in done:
        out.add(t["seq"], t["epochs_run"], t.get("score"), t.get("test_accuracy"), t["status"],
                origin=t.get("origin"), trial_id=t.get("trial_id"),
                parent_trial_id=t.get("parent_trial_id"), chain=t.get("chain"),
                inherited=t.get("inherited"), accepted=t.get("accepted"),
                params=t.get("params"), flops=t.get("flops"), hparams=t.get("hparams"),
                genome=t.get("genome"), error=t.get("error"))
    return len(trials) - len(done)


def default_timeout(settings):
    """Ten minutes plus three times a generous estimate of the run's time: 1.5 s per epoch and
    1000 training examples (one torch thread on this 2-core machine, compiles beside it)."""
    examples = settings.train_subset or 60000
    return int(600 + 3 * settings.budget * 1.5 * examples / 1000)


def run(settings, seed, label, overrides, timeout=None, product_defaults=False):
    """One explorer run; writes `<label>-seed<S>.jsonl` and its metadata."""
    space.check_seeds()
    run_dir = os.path.join(settings.out_dir, "runs", f"{label}-seed{seed}")
    if os.path.isdir(os.path.join(run_dir, "master")):
        subprocess.run(["rm", "-rf", os.path.join(run_dir, "master")], check=True)
    os.makedirs(run_dir, exist_ok=True)
    spec = build_spec(settings, seed, run_dir, overrides, product_defaults)
    spec_path = os.path.join(run_dir, "spec.toml")
    with open(spec_path, "w") as f:
        f.write(toml_dumps(spec))
    timeout = timeout or default_timeout(settings)
    cluster = Cluster(settings, run_dir)
    out = common.RunOutput(settings, label, seed)
    try:
        cluster.start_master()
        cluster.start_worker()
        experiment_id, end, timed_out = watch(cluster, spec_path, timeout)
        trials = read_trials(cluster, experiment_id)
    except BaseException:
        out.abandon()
        raise
    finally:
        cluster.stop()
    skipped = write_trials(out, trials)
    if timed_out:
        print(f"[{out.name}] timed out after {timeout} s; kept the {out.count} finished trials",
              file=sys.stderr, flush=True)
    out.finish(experiment_id=experiment_id, experiment_end=end, timed_out=timed_out,
               unfinished_trials=skipped, spec=spec)
    print(f"[{out.name}] {out.count} trials, {out.cum_epochs}/{settings.budget} epochs, "
          f"{end or 'no end'}", file=sys.stderr, flush=True)
    return out


def load_overrides(config_files, assignments):
    """The spec overrides: TOML files first, then KEY=VALUE assignments."""
    overrides = []
    for path in config_files:
        with open(path, "rb") as f:
            overrides.append(tomllib.load(f))
    overrides += [parse_set(a) for a in assignments]
    return overrides


def _exit_on_sigterm(signum, frame):
    sys.exit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--label", default="explore", help="method name in the output")
    ap.add_argument("--settings", required=True, help="JSON of common.Settings")
    ap.add_argument("--config", action="append", default=[], metavar="FILE",
                    help="TOML merged into the spec (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one spec key, e.g. inheritance.enabled=false (repeatable)")
    ap.add_argument("--timeout", type=int, default=0, help="seconds (default: from the budget)")
    ap.add_argument("--flat", action="store_true",
                    help="restrict architecture moves to the flat space ([search.flat])")
    ap.add_argument("--product-defaults", action="store_true",
                    help="leave [annealing], [early_stopping] and [inheritance] to the master's "
                    "defaults")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = common.Settings(**json.loads(a.settings))
    overrides = load_overrides(a.config, a.set)
    if a.flat:
        overrides.insert(0, {"search": {"flat": space.explorer_flat_section()}})
    run(settings, a.seed, a.label, overrides, a.timeout or None, a.product_defaults)


if __name__ == "__main__":
    main()
