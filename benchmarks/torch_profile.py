#!/usr/bin/env python3
"""DIAGNOSTIC: where a training step's milliseconds go on the PyTorch backend, next to the hand
PyTorch loop of benchmarks/run.py doing the same work (issue 31: the torch backend's profile).

    .venv/bin/python benchmarks/torch_profile.py                # vae and conv-vae, 60 steps each
    .venv/bin/python benchmarks/torch_profile.py --recipes vae --steps 20

kerasae's step is cut where its PyTorch trainer (`kerasae/backend/torch.py`) cuts it: the forward pass
(`compute_losses`: binarization, encoder, sampling, decoder, losses; replayed from its traced graph, as in
`fit`, with the random draws drawn by Keras beside it: `backend/torch_trace.py`), `backward()`, the optimizer's
`apply` (Keras's Adam around torch's fused kernel); "fit's loop" is what a step costs inside `model.fit`
beyond those, fed and grouped as `kerasae train` does (`steps_per_execution` steps per call, the loss
trackers updated once per group, Keras's epoch iterator and callbacks, the batches' gathers). The hand
loop's step: forward, `zero_grad` + `backward()`, `optimizer.step()`. For each forward pass, "in
PyTorch ops" is the self time of the `aten::` operators that `torch.profiler` records: the rest is
Python, in Keras's layers or the hand loop's modules. Medians over --steps steps of 128 images; the
recipe as shipped (its Bernoulli draws per step). Writes benchmarks/torch_profile.json.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "torch"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import run  # noqa: E402 -- benchmarks/run.py: the recipe's work and the hand loop
import torch  # noqa: E402

from kerasae import backend  # noqa: E402
from kerasae.spec import builder, recipe  # noqa: E402


@contextlib.contextmanager
def timed(phases, name):
    """Adds the block's wall-clock ms to phases[name]."""
    start = time.perf_counter()
    yield
    phases.setdefault(name, []).append(1000 * (time.perf_counter() - start))


@contextlib.contextmanager
def in_aten(ms):
    """Appends to ms the block's `aten::` self time in ms."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        yield
    ms.append(sum(e.self_cpu_time_total for e in profile.key_averages() if e.key.startswith("aten::")) / 1000)


def kerasae_step_phases(name, work, steps):
    r = recipe.load(os.path.join(ROOT, "recipes", f"{name}.yaml"))
    steps = min(steps, len(work["x"]) // work["batch"])
    keras.utils.set_random_seed(0)
    model = builder.build(r, work["x"].shape[1:])
    model.compile(optimizer=builder.optimizer(r.train), steps_per_execution=backend.steps_per_execution())
    x_all = work["x"][: steps * work["batch"]]
    feed = backend.array_feed(model, x_all, None, work["batch"])  # as `kerasae train` feeds `fit`
    model.fit(x_all[: 2 * work["batch"]], batch_size=work["batch"], epochs=1, verbose=0)  # builds, warms up
    batches, count = feed(np.random.default_rng(0).permutation(len(x_all)))
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=count, epochs=1, verbose=0, shuffle=False)
    fit_ms = 1000 * (time.perf_counter() - start) / steps
    phases, in_ops = {}, []
    for i in range(steps):
        x = torch.as_tensor(x_all[i * work["batch"] : (i + 1) * work["batch"]])
        if i % 4 == 0:  # a profiled forward pass, apart from the timed step
            with in_aten(in_ops):
                model._training_losses(x, None)
        model.zero_grad()
        with timed(phases, "forward"):
            losses = model._training_losses(x, None)  # as fit runs it: the traced graph where it applies
        with timed(phases, "backward"):
            losses["loss"].backward()
        grads = [v.value.grad for v in model.trainable_weights]
        with torch.no_grad(), timed(phases, "optimizer"):
            model.optimizer.apply(grads, model.trainable_weights)
    out = {phase: statistics.median(ms) for phase, ms in phases.items()}
    out["forward in PyTorch ops"] = statistics.median(in_ops)
    out["fit's loop"] = max(fit_ms - sum(out[p] for p in phases), 0.0)
    out["step in fit"] = fit_ms
    return out


def hand_step_phases(work, steps):
    steps = min(steps, len(work["x"]) // work["batch"])
    losses, optimizer = run.torch_reference(work)
    x_all = torch.as_tensor(work["x"].reshape(len(work["x"]), -1))
    phases, in_ops = {}, []
    for i in range(steps + 2):
        xb = x_all[(i % steps) * work["batch"] : (i % steps + 1) * work["batch"]]
        if i % 4 == 0:
            with in_aten(in_ops):
                losses(xb, training=True)
        with timed(phases, "forward"):
            loss = losses(xb, training=True)
        with timed(phases, "backward"):
            optimizer.zero_grad()
            loss.backward()
        with timed(phases, "optimizer"):
            optimizer.step()
    out = {phase: statistics.median(ms[2:]) for phase, ms in phases.items()}
    out["forward in PyTorch ops"] = statistics.median(in_ops)
    out["step"] = sum(out[p] for p in phases)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="vae,conv-vae")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "torch_profile.json"))
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "steps": args.steps, "recipes": {}}
    rows = ["| recipe | phase | kerasae torch ms | hand PyTorch loop ms |", "| --- | --- | ---: | ---: |"]
    for name in args.recipes.split(","):
        work = run.recipe_work(name, (args.steps + 4) * 128 * 10 // 9)  # the recipe's validation split left out
        work["x"] = np.asarray(work["x"], dtype="float32")
        ours, hand = kerasae_step_phases(name, work, args.steps), hand_step_phases(work, args.steps)
        results["recipes"][name] = {"kerasae": ours, "hand loop": hand}
        for phase in ("forward", "forward in PyTorch ops", "backward", "optimizer", "fit's loop"):
            rows.append(
                f"| {name} | {phase} | {ours[phase]:.2f} | {hand[phase]:.2f} |"
                if phase in hand
                else f"| {name} | {phase} | {ours[phase]:.2f} | |"
            )
        rows.append(f"| {name} | **step** | **{ours['step in fit']:.2f}** | **{hand['step']:.2f}** |")
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"DIAGNOSTIC: PyTorch {torch.__version__}, {results['threads']} threads, median of <= {args.steps} steps\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
