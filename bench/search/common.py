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
import tempfile
import threading
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


def train_stream(settings, genome_path, hparams_path, split_seed, seed, log_path,
                 on_epoch=None, parent_checkpoint=None, save_checkpoint=None):
    """One `worker train` run that follows its progress: the trainer runs with
    `--log-format json`, and every "epoch done" event on its stderr (fields `epoch`,
    `val_accuracy`) is passed to `on_epoch(epoch, val_accuracy)`; when that returns True the
    trainer is stopped at once (SIGTERM, then SIGKILL) and the run counts as stopped.
    `parent_checkpoint` / `save_checkpoint` are the trainer's flags of the same names.

    Returns a dict: result (the trainer's JSON result, None when stopped or failed), error (text
    or None), epochs_done (the epochs whose "epoch done" event was seen: what a stopped run
    trained), last_val (the validation accuracy of the last finished epoch, or None), stopped.
    The trainer's log lines are appended to `log_path`."""
    cmd = [settings.binary("worker"), "train", "--genome", genome_path, "--hparams", hparams_path,
           "--data-dir", settings.data_dir, "--train-subset", str(settings.train_subset),
           "--test-subset", str(settings.test_subset),
           "--validation-fraction", repr(settings.validation_fraction),
           "--split-seed", str(split_seed), "--seed", str(seed),
           "--threads", str(settings.threads), "--device", "cpu", "--log-format", "json"]
    if parent_checkpoint:
        cmd += ["--parent-checkpoint", parent_checkpoint]
    if save_checkpoint:
        cmd += ["--save-checkpoint", save_checkpoint]
    out = {"result": None, "error": None, "epochs_done": 0, "last_val": None, "stopped": False}
    timed_out = threading.Event()
    with open(log_path, "a") as log, tempfile.TemporaryFile("w+") as stdout:
        log.write(f"\n==> {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                env=_quiet_env())
        def _expire():
            timed_out.set()
            _stop(proc)
        timer = threading.Timer(settings.trial_timeout, _expire)
        timer.start()
        try:
            for line in proc.stderr:
                log.write(line)
                event = _json_event(line)
                if event is None or event.get("message") != "epoch done":
                    continue
                out["epochs_done"] = int(event["epoch"])
                out["last_val"] = event.get("val_accuracy")
                if on_epoch is not None and not out["stopped"] and on_epoch(
                        out["epochs_done"], out["last_val"]):
                    out["stopped"] = True
                    _stop(proc)
            proc.wait()
        except BaseException:
            _stop(proc)
            raise
        finally:
            timer.cancel()
            log.flush()
        if out["stopped"]:
            log.write(f"==> stopped after epoch {out['epochs_done']}\n")
            return out
        if timed_out.is_set():
            out["error"] = f"timed out after {settings.trial_timeout} s"
            return out
        if proc.returncode != 0:
            out["error"] = f"exit status {proc.returncode}"
            return out
        stdout.seek(0)
        text = stdout.read()
    try:
        out["result"] = json.loads(text.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out["error"] = f"unreadable output {text[-200:]!r}"
    return out


def _json_event(line):
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _stop(proc, grace=10):
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
