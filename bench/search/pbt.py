"""Population-based training (PBT) driver of the search benchmark, implemented in the harness
(Ray Tune installs here, but the benchmark keeps one dependency set, one trainer call and one
epoch accounting for every method; this is the synchronous variant of Ray Tune's
`PopulationBasedTraining` with its default exploit/explore rules).

* Population: P members (`--population`, default 4). The first two are the benchmark's seed
  configurations (cnn2 and the 3-stage CNN); the others are the first draws of Optuna's
  RandomSampler over the flat space under the run seed (the draws of the `random` baseline;
  draws breaking the space's constraints cost nothing), so the initial population is paired
  with the other methods.
* Rounds: every member trains `ready` epochs (`--ready`, default 2) per round with
  `worker train --parent-checkpoint <its last checkpoint> --save-checkpoint <new>`: the trainer
  copies the matching tensors (weights and batch-norm statistics; the optimizer state is not
  kept, as for the explorer's inheriting children). A round's score is the member's validation
  accuracy at its end.
* After each round (while budget is left) `exploit_explore`: members ranked by score; the
  bottom quantile (fraction 0.25, at least 1, at most half: Ray's rule) each copy a random
  top-quantile member's architecture, weights and hyperparameters (truncation selection), then
  explore: learning rate and weight decay are each resampled log-uniformly from the space's
  range with probability 0.25, else multiplied by 0.8 or 1.2 (clipped to the space's range).
  The other members keep their configuration. Architecture, optimizer, batch size and schedule
  are only ever copied, never perturbed (Ray's `hyperparam_mutations` = {lr, weight decay}).
* Learning-rate schedule: the trainer's schedule is per call, so by default (`--schedule
  constant`) every PBT round trains with a constant learning rate: the schedule over the
  member's life is the one PBT builds by its perturbations, as in Ray's PBT examples. With
  `--schedule member` each round uses the member's own schedule (one_cycle / cosine / constant),
  which restarts every round (warm restarts; a known deviation from Ray's PBT, where one
  trainable runs a single schedule).
* Budget: rounds go on until the run's epoch budget is spent; the last round is cut to what is
  left (members in order of score, best first, each min(ready, left) epochs). Charged epochs =
  epochs trained; a failed round is charged its planned epochs and the member keeps its
  previous weights and configuration, with no score (so it ranks last).

Output: one JSON line per round of one member (a "trial" whose test accuracy is that member's
model at that point) with `member`, `round`, `member_epochs` (epochs its weights have been
trained, inherited ones included), `exploited_from` and `explore` (what the last exploit/explore
step changed for that member); every exploit/explore step is also printed to the run's log and
listed in the run's metadata (`pbt_steps`).

    python bench/search/pbt.py --seed 1 --settings '{...}' [--population 4] [--ready 2]
"""
import argparse
import json
import math
import os
import random
import shutil
import sys

import baseline
import common
import space

POPULATION = 4
READY_EPOCHS = 2
QUANTILE_FRACTION = 0.25
RESAMPLE_PROBABILITY = 0.25
PERTURBATION_FACTORS = (0.8, 1.2)
MUTATED = ("learning_rate", "weight_decay")


def quantile_size(population, fraction=QUANTILE_FRACTION):
    """Members in the bottom (and top) quantile, Ray Tune's rule: ceil(P * fraction), at most
    half of the population.

    >>> [quantile_size(p) for p in (2, 3, 4, 5, 6, 8, 9)]
    [1, 1, 1, 2, 2, 2, 3]
    """
    n = int(math.ceil(population * fraction))
    return min(n, population // 2)


def explore(config, rng, bounds=None, resample_probability=RESAMPLE_PROBABILITY,
            factors=PERTURBATION_FACTORS):
    """A copy of `config` with its mutated keys (learning rate, weight decay) resampled
    log-uniformly within `bounds` with probability `resample_probability`, else multiplied by a
    factor drawn from `factors`; clipped to `bounds`. Returns (new config, {key: how}).

    >>> class Fixed:  # a stand-in for random.Random: scripted draws
    ...     def __init__(self, uniforms, choices): self.u, self.c = list(uniforms), list(choices)
    ...     def random(self): return self.u.pop(0)
    ...     def uniform(self, a, b): return a + (b - a) * self.u.pop(0)
    ...     def choice(self, seq): return seq[self.c.pop(0)]
    >>> bounds = {"learning_rate": (0.0005, 0.01), "weight_decay": (1e-5, 1e-3)}
    >>> new, how = explore({"learning_rate": 0.002, "weight_decay": 1e-4, "batch_size": 64},
    ...                    Fixed([0.9, 0.9], [1, 0]), bounds)
    >>> round(new["learning_rate"], 6), round(new["weight_decay"], 8), new["batch_size"]
    (0.0024, 8e-05, 64)
    >>> how
    {'learning_rate': 'x1.2', 'weight_decay': 'x0.8'}
    >>> new, how = explore({"learning_rate": 0.009, "weight_decay": 1e-4},
    ...                    Fixed([0.9, 0.1, 0.5], [1]), bounds)  # x1.2 clipped; resampled
    >>> new["learning_rate"], round(new["weight_decay"], 8), how["weight_decay"]
    (0.01, 0.0001, 'resampled')
    """
    bounds = bounds or {k: tuple(space.SPACE[k]) for k in MUTATED}
    new, how = dict(config), {}
    for key in MUTATED:
        lo, hi = bounds[key]
        if rng.random() < resample_probability:
            value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            how[key] = "resampled"
        else:
            factor = rng.choice(factors)
            value = config[key] * factor
            how[key] = f"x{factor}"
        new[key] = min(hi, max(lo, value))
    return new, how


def exploit_explore(scores, configs, rng, fraction=QUANTILE_FRACTION, bounds=None,
                    resample_probability=RESAMPLE_PROBABILITY, factors=PERTURBATION_FACTORS):
    """One synchronous PBT step (truncation selection). `scores[i]` is member i's last
    validation accuracy (None = no score: ranks last), `configs[i]` its configuration (a dict
    with at least the mutated keys). Members are ranked by score (ties: the lower index ranks
    higher); each bottom-quantile member copies a random top-quantile member (exploit) and then
    perturbs the copy (explore). Returns one step per exploiting member, in ranking order:
    {"member", "source", "config" (the new configuration), "explore" ({key: how})}. The
    members not listed keep their weights and configuration. Pure: all randomness from `rng`.

    >>> rng = random.Random(0)
    >>> configs = [{"learning_rate": 0.001 * (i + 1), "weight_decay": 1e-4, "arch": i}
    ...            for i in range(4)]
    >>> steps = exploit_explore([0.80, 0.91, None, 0.85], configs, rng)
    >>> [(s["member"], s["source"], s["config"]["arch"]) for s in steps]
    [(2, 1, 1)]
    >>> steps[0]["explore"], round(steps[0]["config"]["learning_rate"], 6)
    ({'learning_rate': 'x1.2', 'weight_decay': 'resampled'}, 0.0024)
    >>> steps = exploit_explore([0.5, 0.9, 0.7, 0.6, 0.95, 0.8], [dict(c, arch=i) for i, c in
    ...                          enumerate(configs + configs[:2])], random.Random(1))
    >>> sorted((s["member"], s["source"] in (4, 1)) for s in steps)
    [(0, True), (3, True)]
    >>> configs[0]["arch"], configs[2]["arch"]  # the inputs are not changed
    (0, 2)
    """
    n = len(scores)
    ranked = sorted(range(n), key=lambda i: (scores[i] is None,
                                             -(scores[i] if scores[i] is not None else 0.0), i))
    q = quantile_size(n, fraction)
    if q == 0:
        return []
    top, bottom = ranked[:q], ranked[n - q:]
    steps = []
    for member in reversed(bottom):  # the worst member first
        source = rng.choice(top)
        config, how = explore(configs[source], rng, bounds, resample_probability, factors)
        steps.append({"member": member, "source": source, "config": config, "explore": how})
    return steps


class Member:
    """One population member: its configuration (flat parameters), its current checkpoint, its
    score and how many epochs its weights have been trained."""

    def __init__(self, index, config, seed_index):
        self.index = index
        self.config = config
        self.seed_index = seed_index  # optuna trial number it was drawn as (its first seed)
        self.checkpoint = None
        self.score = None
        self.test = None
        self.epochs = 0
        self.exploited_from = None
        self.explore = None


def initial_population(settings, seed, size, run_dir):
    """The seed configurations, then the random baseline's first accepted draws."""
    study = baseline.new_study("random", seed)
    members, rejected = [], 0
    while len(members) < size:
        trial = study.ask()
        params = space.suggest_flat(trial)
        baseline.check_seed_trial(trial.number, params)
        genome_path = os.path.join(run_dir, f"draw-{trial.number:04d}.genome.json")
        common.write_json(genome_path, space.build_genome(params))
        broken = space.violations(common.analyze(settings, genome_path))
        os.remove(genome_path)
        if broken:
            study.tell(trial, state=baseline.optuna.trial.TrialState.PRUNED)
            rejected += 1
            if rejected >= baseline.MAX_CONSECUTIVE_REJECTS:
                raise RuntimeError("too many draws broke the constraints")
            continue
        study.tell(trial, state=baseline.optuna.trial.TrialState.PRUNED)  # not evaluated here
        members.append(Member(len(members), params, trial.number))
    return members, rejected


def round_hparams(config, epochs, schedule):
    hp = space.build_hparams(config, epochs)
    if schedule == "constant":
        hp["schedule"] = "constant"
    return hp


def run(settings, seed, run_dir, population=POPULATION, ready=READY_EPOCHS, schedule="constant"):
    """One PBT run; writes the run's JSON-lines and metadata files."""
    space.check_seeds()
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "train.log")
    rng = random.Random(f"pbt:{seed}")
    members, rejected = initial_population(settings, seed, population, run_dir)
    out = common.RunOutput(settings, "pbt", seed)
    steps_log = []
    round_no = 0
    try:
        while out.cum_epochs < settings.budget:
            left = settings.budget - out.cum_epochs
            order = list(range(population))
            if left < population * ready:  # the last round: best first, cut to the budget
                order.sort(key=lambda i: (members[i].score is None, -(members[i].score or 0.0), i))
            for i in order:
                left = settings.budget - out.cum_epochs
                if left <= 0:
                    break
                train_round(settings, seed, run_dir, log_path, out, members[i], round_no,
                            min(ready, left), schedule)
            round_no += 1
            if out.cum_epochs >= settings.budget:
                break
            steps = exploit_explore([m.score for m in members], [m.config for m in members], rng)
            for step in steps:
                apply_step(members, step, run_dir, round_no)
                entry = {"after_round": round_no - 1, "member": step["member"],
                         "source": step["source"], "explore": step["explore"],
                         "learning_rate": step["config"]["learning_rate"],
                         "weight_decay": step["config"]["weight_decay"]}
                steps_log.append(entry)
                print(f"[{out.name}] after round {round_no - 1}: member {step['member']} "
                      f"exploits member {step['source']} (val {members[step['source']].score}), "
                      f"explore {step['explore']} -> lr {step['config']['learning_rate']:.5g}, "
                      f"wd {step['config']['weight_decay']:.3g}", file=sys.stderr, flush=True)
    except BaseException:
        out.abandon()
        raise
    out.finish(rejected=rejected, population=population, ready=ready, schedule=schedule,
               rounds=round_no, quantile_fraction=QUANTILE_FRACTION,
               resample_probability=RESAMPLE_PROBABILITY,
               perturbation_factors=list(PERTURBATION_FACTORS), pbt_steps=steps_log,
               description=describe(population, ready, schedule))
    return out


def describe(population, ready, schedule):
    return (f"synchronous PBT in the harness: population {population}, {ready} epochs per round, "
            f"truncation selection (quantile {QUANTILE_FRACTION}), lr/wd x0.8|x1.2 or resampled "
            f"(p {RESAMPLE_PROBABILITY}), {schedule} learning rate within a round")


def apply_step(members, step, run_dir, round_no):
    """Exploit: member copies the source's weights (a copy of its checkpoint file) and its
    configuration as explored; its score goes with the copied weights."""
    member, source = members[step["member"]], members[step["source"]]
    if source.checkpoint:
        path = os.path.join(run_dir, f"member{member.index}-r{round_no:03d}-copy.safetensors")
        shutil.copyfile(source.checkpoint, path)
        _replace_checkpoint(member, path)
    else:
        _replace_checkpoint(member, None)
    member.config = step["config"]
    member.score, member.test, member.epochs = source.score, source.test, source.epochs
    member.exploited_from = source.index
    member.explore = step["explore"]


def _replace_checkpoint(member, path):
    if member.checkpoint and member.checkpoint != path and os.path.exists(member.checkpoint):
        os.remove(member.checkpoint)
    member.checkpoint = path


def train_round(settings, seed, run_dir, log_path, out, member, round_no, epochs, schedule):
    """One round of one member: `epochs` epochs from its checkpoint; one JSON line."""
    row_index = out.count
    train_seed = common.trial_seed(seed, member.seed_index if round_no == 0 else 100000 + row_index)
    stem = os.path.join(run_dir, f"member{member.index}-r{round_no:03d}")
    hparams = round_hparams(member.config, epochs, schedule)
    common.write_json(stem + ".genome.json", space.build_genome(member.config))
    common.write_json(stem + ".hparams.json", hparams)
    new_checkpoint = stem + ".safetensors"
    run = common.train_stream(settings, stem + ".genome.json", stem + ".hparams.json",
                              split_seed=seed, seed=train_seed, log_path=log_path,
                              parent_checkpoint=member.checkpoint,
                              save_checkpoint=new_checkpoint)
    result = run["result"]
    extra = {"member": member.index, "round": round_no, "config": member.config,
             "hparams": hparams, "parent_checkpoint": bool(member.checkpoint),
             "exploited_from": member.exploited_from, "explore": member.explore}
    if result is None:
        member.score = None
        cum = out.add(row_index, epochs, None, None, "failed", member_epochs=member.epochs,
                      error=run["error"], **extra)
        val = "-"
    else:
        member.epochs += result["epochs_run"]
        member.score, member.test = result["val_accuracy"], result["test_accuracy"]
        _replace_checkpoint(member, new_checkpoint)
        cum = out.add(row_index, result["epochs_run"], result["val_accuracy"],
                      result["test_accuracy"], "completed", member_epochs=member.epochs,
                      params=result.get("params"), flops=result.get("flops"),
                      inherited_tensors=result.get("inherited_tensors"),
                      train_seconds=result.get("train_seconds"), **extra)
        val = f"{result['val_accuracy']:.4f} (test {result['test_accuracy']:.4f})"
    member.exploited_from, member.explore = None, None
    print(f"[{out.name}] round {round_no} member {member.index}: {epochs} epochs "
          f"(model at {member.epochs}), lr {hparams['learning_rate']:.5g}, val {val}, "
          f"epochs {cum}/{settings.budget}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--settings", required=True, help="JSON of common.Settings")
    ap.add_argument("--population", type=int, default=POPULATION)
    ap.add_argument("--ready", type=int, default=READY_EPOCHS, help="epochs per round")
    ap.add_argument("--schedule", choices=["constant", "member"], default="constant",
                    help="learning-rate schedule within a round (see above)")
    a = ap.parse_args()
    if a.population < 2 or a.ready < 1:
        ap.error("--population must be at least 2 and --ready at least 1")
    settings = common.Settings(**json.loads(a.settings))
    run_dir = os.path.join(settings.out_dir, "runs", f"pbt-seed{a.seed}")
    run(settings, a.seed, run_dir, a.population, a.ready, a.schedule)


if __name__ == "__main__":
    main()
