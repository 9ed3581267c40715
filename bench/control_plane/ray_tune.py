"""Ray Tune: a trivial function trainable, 8 trials at a time on a local Ray, for a fixed time.
Prints one JSON line."""
import json
import sys
import time

import ray
from ray import tune


def trainable(config):
    return {"loss": (config["x"] - 2) ** 2}


def main():
    concurrent, seconds = int(sys.argv[1]), float(sys.argv[2])
    ray.init(num_cpus=concurrent, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    started = time.time()
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(-10, 10)},
        tune_config=tune.TuneConfig(num_samples=1_000_000, max_concurrent_trials=concurrent,
                                    time_budget_s=seconds, metric="loss", mode="min"),
    )
    results = tuner.fit()
    elapsed = time.time() - started
    done = sum(1 for r in results if r.error is None and r.metrics)
    print(json.dumps({
        "system": "ray-tune",
        "ray": ray.__version__,
        "concurrent": concurrent,
        "trials": done,
        "seconds": elapsed,
        "trials_per_second": done / elapsed,
    }))


if __name__ == "__main__":
    main()
