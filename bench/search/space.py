"""The search space of the search benchmark, in one place.

Everything the three methods share lives here:

* the hard constraints and value sets of the space (`SPACE`), from which the explorer's
  `[search]` section is generated (`explorer_search_section`);
* the flat parametrisation used by the random and TPE baselines (`suggest_flat`), with
  conditional, stage-indexed parameter names so that TPE can model it;
* the genome builder that turns a flat configuration into the genome JSON the trainer reads
  (`build_genome`) and the hyperparameters JSON (`build_hparams`);
* the two seed configurations every method evaluates first (`SEEDS`).

Flat parametrisation: `n_stages` in {1, 2, 3}; per stage s (0-based) `s{s}_channels`,
`s{s}_kernel` in {3, 5} and `s{s}_convs` in {1, 2}; one shared `batch_norm` flag and one shared
`activation`. A stage is (conv [+ batch_norm] + activation) x convs, then a 2x2 max pool while
the feature map is at least 4 wide. The head is a dropout of rate `dropout`, then, when
`dense_units` > 0, a dense layer + activation, optionally followed by another dropout of the
same rate (`dropout_after_dense`). The classifier layer to 10 classes is implicit (added by the
trainer). The hyperparameters are the optimiser, learning rate, schedule, batch size, weight
decay and epochs of the trial.
"""

INPUT = {"channels": 1, "height": 28, "width": 28}
NUM_CLASSES = 10

SPACE = {
    "channels": [16, 24, 32, 48, 64, 96],
    "dense_units": [64, 128, 256],
    "kernels": [3, 5],
    "learning_rate": [0.0005, 0.01],
    "batch_sizes": [64, 128, 256],
    "epochs": [2, 4],
    "optimizers": ["adamw", "adam", "sgd"],
    "schedules": ["one_cycle", "cosine", "constant"],
    "weight_decay": [1e-5, 1e-3],
    "max_params": 1_000_000,
    "max_flops": 30_000_000,
    "max_blocks": 20,
    "architecture_mutation_probability": 0.6,
    # Flat parametrisation only.
    "stages": [1, 2, 3],
    "convs_per_stage": [1, 2],
    "activations": ["relu", "gelu", "silu"],
    "dropout": [0.0, 0.5],
}

# The `cnn2` preset of common/src/presets.rs, literally: seed A must train exactly this genome.
CNN2_GENOME = {
    "input": INPUT,
    "num_classes": NUM_CLASSES,
    "blocks": [
        {"type": "conv", "out_channels": 32, "kernel": 3, "stride": 1},
        {"type": "batch_norm"},
        {"type": "activation", "kind": "relu"},
        {"type": "pool", "kind": "max", "size": 2},
        {"type": "conv", "out_channels": 64, "kernel": 3, "stride": 1},
        {"type": "batch_norm"},
        {"type": "activation", "kind": "relu"},
        {"type": "pool", "kind": "max", "size": 2},
        {"type": "dropout", "rate": 0.25},
        {"type": "dense", "units": 128},
        {"type": "activation", "kind": "relu"},
        {"type": "dropout", "rate": 0.25},
    ],
}

# The two seed configurations, as flat parameters (the keys `suggest_flat` produces).
SEED_A = {
    "n_stages": 2,
    "s0_channels": 32, "s0_kernel": 3, "s0_convs": 1,
    "s1_channels": 64, "s1_kernel": 3, "s1_convs": 1,
    "batch_norm": True,
    "activation": "relu",
    "dropout": 0.25,
    "dense_units": 128,
    "dropout_after_dense": True,
    "optimizer": "adamw",
    "learning_rate": 0.002,
    "schedule": "one_cycle",
    "batch_size": 128,
    "weight_decay": 0.0001,
    "epochs": 3,
}
# Seed B: seed A with a third stage of 96 channels, a lighter head and a higher learning rate.
SEED_B = {
    **SEED_A,
    "n_stages": 3,
    "s2_channels": 96, "s2_kernel": 3, "s2_convs": 1,
    "dropout": 0.2,
    "dropout_after_dense": False,
    "learning_rate": 0.003,
}
SEEDS = [("A", SEED_A), ("B", SEED_B)]

HPARAM_KEYS = ["optimizer", "learning_rate", "schedule", "batch_size", "weight_decay", "epochs"]


def suggest_flat(trial, epochs=None):
    """Samples one flat configuration from an optuna trial (conditional parameters included);
    `epochs` = (low, high) replaces the space's per-trial epoch range (the multi-fidelity
    methods get a wider one)."""
    s = SPACE
    p = {"n_stages": trial.suggest_int("n_stages", s["stages"][0], s["stages"][-1])}
    for i in range(p["n_stages"]):
        p[f"s{i}_channels"] = trial.suggest_categorical(f"s{i}_channels", s["channels"])
        p[f"s{i}_kernel"] = trial.suggest_categorical(f"s{i}_kernel", s["kernels"])
        p[f"s{i}_convs"] = trial.suggest_int(
            f"s{i}_convs", s["convs_per_stage"][0], s["convs_per_stage"][-1])
    p["batch_norm"] = trial.suggest_categorical("batch_norm", [True, False])
    p["activation"] = trial.suggest_categorical("activation", s["activations"])
    p["dropout"] = trial.suggest_float("dropout", *s["dropout"])
    p["dense_units"] = trial.suggest_categorical("dense_units", [0] + s["dense_units"])
    if p["dense_units"] > 0:
        p["dropout_after_dense"] = trial.suggest_categorical("dropout_after_dense", [False, True])
    p["optimizer"] = trial.suggest_categorical("optimizer", s["optimizers"])
    p["learning_rate"] = trial.suggest_float("learning_rate", *s["learning_rate"], log=True)
    p["schedule"] = trial.suggest_categorical("schedule", s["schedules"])
    p["batch_size"] = trial.suggest_categorical("batch_size", s["batch_sizes"])
    p["weight_decay"] = trial.suggest_float("weight_decay", *s["weight_decay"], log=True)
    p["epochs"] = trial.suggest_int("epochs", *(epochs or s["epochs"]))
    return p


def build_genome(p):
    """The genome JSON (as a dict) of a flat configuration."""
    blocks = []
    width = INPUT["width"]
    act = {"type": "activation", "kind": p["activation"]}
    for i in range(p["n_stages"]):
        for _ in range(p[f"s{i}_convs"]):
            blocks.append({"type": "conv", "out_channels": p[f"s{i}_channels"],
                           "kernel": p[f"s{i}_kernel"], "stride": 1})
            if p["batch_norm"]:
                blocks.append({"type": "batch_norm"})
            blocks.append(dict(act))
        if width >= 4:
            blocks.append({"type": "pool", "kind": "max", "size": 2})
            width //= 2
    if p["dropout"] > 0:
        blocks.append({"type": "dropout", "rate": p["dropout"]})
    if p["dense_units"] > 0:
        blocks.append({"type": "dense", "units": p["dense_units"]})
        blocks.append(dict(act))
        if p.get("dropout_after_dense") and p["dropout"] > 0:
            blocks.append({"type": "dropout", "rate": p["dropout"]})
    return {"input": dict(INPUT), "num_classes": NUM_CLASSES, "blocks": blocks}


def build_hparams(p, epochs=None):
    """The hyperparameters JSON (as a dict); `epochs` overrides the configuration's epochs."""
    hp = {k: p[k] for k in HPARAM_KEYS}
    if epochs is not None:
        hp["epochs"] = epochs
    return hp


def violations(analysis):
    """The constraints a genome analysis (`worker analyze` output) breaks, as text; [] if none."""
    s = SPACE
    out = []
    if analysis["params"] > s["max_params"]:
        out.append(f"params {analysis['params']} > {s['max_params']}")
    if analysis["flops"] > s["max_flops"]:
        out.append(f"flops {analysis['flops']} > {s['max_flops']}")
    if analysis["blocks"] > s["max_blocks"]:
        out.append(f"blocks {analysis['blocks']} > {s['max_blocks']}")
    return out


def explorer_search_section():
    """The explorer spec's `[search]` table, from the same space."""
    s = SPACE
    keys = ["max_params", "max_flops", "max_blocks", "channels", "dense_units", "learning_rate",
            "batch_sizes", "epochs", "optimizers", "schedules", "weight_decay",
            "architecture_mutation_probability"]
    return {k: s[k] for k in keys}


def explorer_flat_section():
    """The explorer spec's `[search.flat]` table (the `explore-flat` method): the explorer's
    architecture moves restricted to this flat parametrisation (stages, convs per stage,
    kernels, one activation, one batch-norm flag, one head dropout up to the space's largest);
    channels and dense units come from the `[search]` table."""
    s = SPACE
    return {"max_stages": s["stages"][-1], "convs_per_stage": [s["convs_per_stage"][0],
            s["convs_per_stage"][-1]], "kernels": s["kernels"], "activations": s["activations"],
            "max_dropout": s["dropout"][1]}


def check_seeds():
    """Fails loudly if seed A does not rebuild the `cnn2` preset exactly."""
    if build_genome(SEED_A) != CNN2_GENOME:
        raise AssertionError("seed A does not build the cnn2 preset genome")
