#!/usr/bin/env python3
"""DIAGNOSTIC: what the random draws inside a training step cost, on each backend.

    .venv/bin/python benchmarks/rng.py                 # vae and dae, every installed backend
    .venv/bin/python benchmarks/rng.py --smoke         # a few steps, to check it runs

The shipped recipe's model (recipes/vae.yaml: dynamic binarization and the sampling layer;
recipes/dae.yaml: masking noise) trains on random images in `fit`, compiled as `kerasae train`
compiles it, once as it is and once with every draw replaced by a constant of the same shape
(the same arithmetic around it, no random numbers, and a value a compiler cannot fold). The share
of a step spent drawing is 1 - (step without draws) / (step with them); issue 16 asks for at most 15%.
Steps are timed inside `fit`, best of several alternating repeats: a diagnostic of one part of a
step, not what users run (benchmarks/run.py measures that).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import keras
from kerasae import backend
from kerasae.spec import builder, recipe

def constant(kind, shape, dtype, seed_generator):
    # Same shape, no random numbers, and a value known only at run time (the generator's state
    # times 0), so that a compiler cannot fold the comparisons and masks around it away.
    runtime = keras.ops.cast(seed_generator.state[0], dtype) * 0.0
    return keras.ops.full(shape, 0.5, dtype=dtype) + runtime

r = recipe.load(sys.argv[2], [])
steps, repeats = int(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(0).random((steps * r.train.batch_size, 28, 28, 1), dtype=np.float32)
models = {}
for name in ("with draws", "without draws"):
    keras.utils.set_random_seed(0)
    model = builder.build(r, (28, 28, 1))
    model.compile(
        optimizer=builder.optimizer(r.train),
        steps_per_execution=backend.steps_per_execution(r.train.steps_per_execution),
        jit_compile=backend.jit_compile(r.train.jit_compile),
    )
    models[name] = model
random, coarse = backend.random, backend.coarse_uniform
best = {name: float("inf") for name in models}
for repeat in range(repeats + 1):  # the first round compiles
    for name, model in models.items():
        if name == "without draws":
            backend.random, backend.coarse_uniform = constant, lambda *a: constant(None, *a)
        start = time.perf_counter()
        model.fit(x, batch_size=r.train.batch_size, epochs=1, verbose=0, shuffle=False)
        seconds = (time.perf_counter() - start) / steps
        backend.random, backend.coarse_uniform = random, coarse
        if repeat:
            best[name] = min(best[name], seconds)
print(json.dumps({name: 1000 * s for name, s in best.items()}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="vae,dae")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--steps", type=int, default=256, help="training steps per timed `fit`")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "rng.json"))
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats = 8, 1
    results = {"steps": args.steps, "repeats": args.repeats, "runs": {}}
    lines = [
        "DIAGNOSTIC: ms per training step inside `fit`, with the recipe's random draws and with constants instead",
        "",
        "| recipe | backend | ms / step | ms / step without draws | share drawing |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for recipe in args.recipes.split(","):
        for backend in args.backends.split(","):
            result = subprocess.run(
                [sys.executable, "-c", CHILD, ROOT, os.path.join(ROOT, "recipes", f"{recipe}.yaml")]
                + [str(args.steps), str(args.repeats)],
                env={**os.environ, "KERAS_BACKEND": backend},
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"{recipe} on {backend}:\n{result.stderr[-2000:]}")
            ms = json.loads(result.stdout.strip().splitlines()[-1])
            share = 1 - ms["without draws"] / ms["with draws"]
            results["runs"][f"{recipe} {backend}"] = {**ms, "share_drawing": share}
            lines.append(
                f"| {recipe} | {backend} | {ms['with draws']:.2f} | {ms['without draws']:.2f} | {100 * share:.0f}% |"
            )
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
