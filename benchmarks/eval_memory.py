#!/usr/bin/env python3
"""Peak memory of the importance-sampled NLL as k and the test set grow, for a dense and a conv VAE.

    .venv/bin/python benchmarks/eval_memory.py [--backend jax]
    .venv/bin/python benchmarks/eval_memory.py --smoke   # seconds: tiny k and test sets (the test suite runs this)

Each point runs in its own process: the shipped recipe's model (recipes/vae.yaml, the seed's dense
VAE; recipes/conv-vae.yaml with the Gaussian likelihood, the case that once grew to 9.5 GB) is built
on random test images of MNIST's shape, and `evaluate.importance_sampled_nll` runs at the given k and
test-set size. Reported: the process's peak resident memory (VmHWM) before the NLL (runtime and model)
and after it, and the NLL's wall time. Weights are untrained: memory does not depend on their values.
Results go to benchmarks/eval_memory.json.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (model, recipe, overrides, [(k, test images), ...]): k grows at a fixed size, then the size at a fixed k.
POINTS = (
    ("dense vae", "vae.yaml", [], [(100, 1000), (300, 1000), (1000, 1000), (100, 4000)]),
    (
        "conv vae (gaussian)",
        "conv-vae.yaml",
        ["loss.likelihood=gaussian", "data.binarize=none"],
        [(100, 100), (300, 100), (1000, 100), (100, 400)],
    ),
)

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from kerasae.spec import builder, recipe
from kerasae.assess import evaluate

def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))

r = recipe.load(sys.argv[2], sys.argv[5:])
k, n = int(sys.argv[3]), int(sys.argv[4])
model = builder.build(r, (28, 28, 1))
x = (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.2).astype("float32")
model.reconstruct(x[:8])  # the runtime and the model, before the NLL
before = peak_mb()
start = time.perf_counter()
nll = evaluate.importance_sampled_nll(model, x, k=k)
print(json.dumps({"peak_before_mb": round(before), "peak_after_mb": round(peak_mb()),
                  "seconds": round(time.perf_counter() - start, 1), "nll": round(nll, 2),
                  "images_per_batch": evaluate.images_per_batch(model, min(100, k)),
                  "decoded_values": evaluate.decoded_values(model)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "eval_memory.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny k and test sets, to check that it runs")
    args = parser.parse_args()
    points = (
        [
            (name, recipe_file, overrides, [(max(2, grid[0][0] // 100), max(4, grid[0][1] // 100))])
            for name, recipe_file, overrides, grid in POINTS
        ]
        if args.smoke
        else POINTS
    )
    env = {**os.environ, "KERAS_BACKEND": args.backend}
    results = {"backend": args.backend, "points": []}
    print("| model | k | test images | peak before NLL (MB) | peak after (MB) | NLL s | images per batch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, recipe_file, overrides, grid in points:
        for k, n in grid:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    ROOT,
                    os.path.join(ROOT, "recipes", recipe_file),
                    str(k),
                    str(n),
                    *overrides,
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"{name} k={k} n={n} failed: {done.stderr[-1500:]}")
            point = {"model": name, "k": k, "test_images": n, **json.loads(done.stdout.strip().splitlines()[-1])}
            results["points"].append(point)
            print(
                f"| {name} | {k} | {n} | {point['peak_before_mb']} | {point['peak_after_mb']} | "
                f"{point['seconds']} | {point['images_per_batch']} |",
                flush=True,
            )
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
