"""Helpers shared by the search benchmark's drivers: the run settings, calls to the
`worker train` / `worker analyze` binaries, deterministic trial seeds and the per-run output
files (`<method>-seed<S>.jsonl` plus `<method>-seed<S>.meta.json`).

A run's JSON-lines file is written as `<name>.jsonl.partial` while the run goes on and renamed to
`<name>.jsonl` only when it finished, so a report never mixes in an interrupted run.
"""
import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass

DATA_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class Settings:
    """What every run of one benchmark invocation shares."""
    root: str  # repository root
    out_dir: str  # where the .jsonl / .meta.json files go
    budget: int  # training epochs per run
    train_subset: int
    test_subset: int
    validation_fraction: float
    threads: int = 1
    data_dir: str = DATA_DIR
    trial_timeout: int = 3600  # seconds one `worker train` may take

    @property
    def bin_dir(self):
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(self.root, "target"))
        return os.path.join(target, "debug")

    def binary(self, name):
        return os.path.join(self.bin_dir, name)

    def data_config(self):
        return {"train_subset": self.train_subset, "test_subset": self.test_subset,
                "validation_fraction": self.validation_fraction}


def trial_seed(run_seed, trial_index):
    """Training seed of trial `trial_index` of run `run_seed` (deterministic, 31 bits)."""
    digest = hashlib.sha256(f"search-bench:{run_seed}:{trial_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def analyze(settings, genome_path):
    """`worker analyze`: {"params", "flops", "blocks"}; raises on an invalid genome."""
    res = subprocess.run([settings.binary("worker"), "analyze", "--genome", genome_path],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise ValueError(f"worker analyze failed: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def train(settings, genome_path, hparams_path, split_seed, seed, log_path):
    """One `worker train` run. Returns (result dict or None, error text or None); the trainer's
    log (stderr) is appended to `log_path`."""
    cmd = [settings.binary("worker"), "train", "--genome", genome_path, "--hparams", hparams_path,
           "--data-dir", settings.data_dir, "--train-subset", str(settings.train_subset),
           "--test-subset", str(settings.test_subset),
           "--validation-fraction", repr(settings.validation_fraction),
           "--split-seed", str(split_seed), "--seed", str(seed),
           "--threads", str(settings.threads), "--device", "cpu"]
    with open(log_path, "a") as log:
        log.write(f"\n==> {' '.join(cmd)}\n")
        log.flush()
        try:
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                 timeout=settings.trial_timeout, env=_quiet_env())
        except subprocess.TimeoutExpired:
            return None, f"timed out after {settings.trial_timeout} s"
    if res.returncode != 0:
        return None, f"exit status {res.returncode}"
    try:
        return json.loads(res.stdout.strip().splitlines()[-1]), None
    except (json.JSONDecodeError, IndexError):
        return None, f"unreadable output {res.stdout[-200:]!r}"


def _quiet_env():
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class RunOutput:
    """The JSON-lines file of one run (method, seed) and its metadata."""

    def __init__(self, settings, method, seed):
        self.settings = settings
        self.method = method
        self.seed = seed
        self.name = f"{method}-seed{seed}"
        self.path = os.path.join(settings.out_dir, self.name + ".jsonl")
        self.meta_path = os.path.join(settings.out_dir, self.name + ".meta.json")
        self.partial = self.path + ".partial"
        self.cum_epochs = 0
        self.count = 0
        self.started = time.time()
        for p in (self.path, self.meta_path, self.partial):
            if os.path.exists(p):
                os.remove(p)
        self._file = open(self.partial, "w")

    def add(self, trial, epochs_run, val, test, status, **extra):
        """Appends one finished trial; returns the cumulative epochs after it."""
        self.cum_epochs += epochs_run
        self.count += 1
        row = {"method": self.method, "seed": self.seed, "trial": trial, "epochs_run": epochs_run,
               "cum_epochs": self.cum_epochs, "val_accuracy": val, "test_accuracy": test,
               "status": status}
        row.update(extra)
        self._file.write(json.dumps(row, sort_keys=False) + "\n")
        self._file.flush()
        return self.cum_epochs

    def finish(self, **meta):
        """Closes the file, renames it into place and writes the metadata."""
        self._file.close()
        os.replace(self.partial, self.path)
        info = {"method": self.method, "seed": self.seed, "budget": self.settings.budget,
                "epochs_used": self.cum_epochs, "trials": self.count,
                "wall_seconds": round(time.time() - self.started, 1)}
        info.update(self.settings.data_config())
        info.update(meta)
        write_json(self.meta_path, info)

    def abandon(self):
        """Leaves the partial file for inspection (not read by the report)."""
        if not self._file.closed:
            self._file.close()


def settings_to_json(settings):
    return asdict(settings)
