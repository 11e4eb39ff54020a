#!/usr/bin/env python3
"""kerasae's speed as users meet it: `kerasae train` on the shipped recipes, end to end, in one run
next to reference loops that do the same work.

    .venv/bin/python benchmarks/run.py                 # vae/ae/dae on all MNIST, conv-vae on 3,840 images
    .venv/bin/python benchmarks/run.py --recipes vae --backends jax --epochs 3
    .venv/bin/python benchmarks/run.py --smoke         # a minute: 2 epochs of 1,200 images (the tests run this)

kerasae: `kerasae train recipes/<name>.yaml --set train.epochs=E` as a subprocess per backend, the recipe
otherwise as shipped (its binarization or corruption drawn per step, its validation split, a checkpoint
every epoch, figure snapshots, evaluation, figures, export). Its output is read line by line as it
comes: an epoch ends when Keras prints that epoch's line. Reported per run:
  * s / epoch: the median time between the ends of consecutive epochs (so everything the loop does
    per epoch counts: steps, validation, checkpoint, snapshots, data order), epoch 1 (compilation) left out;
  * start-up: process start to the first epoch's first step (imports, data, model, compilation starts);
  * end: the last epoch's end to the process's exit (test evaluation, NLL, figures, export, card);
  * outside steps: the share of an epoch spent outside the training steps, from the timings kerasae
    writes to the entry's metrics.json (each epoch's wall-clock and in-step seconds).
The reference loops are the ones a user writes by hand, doing per epoch what the recipe does: a fresh
order, the recipe's random binarization or corruption drawn per step, Adam, and a validation pass over
the same held-out images; "PyTorch eager" as in the PyTorch examples, "JAX jit" with the whole step
under `jax.jit` (conv recipes with `lax.conv_transpose`, as Flax's layers). Speed-ups are reference
s / epoch over kerasae's, measured in this one run; TARGETS are the project's goals (issue 31). On a
GPU machine it runs unchanged and says which device trained.
Results: benchmarks/results.json and a Markdown table (the README's).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ("vae", "ae", "dae", "conv-vae")
# Training images of a recipe when --limit is not given (None: all): 27 steps of 128 keep the JAX
# hand loop's transposed convolutions (~1 s a step on a CPU) to minutes.
DEFAULT_LIMITS = {"conv-vae": 3840}
BACKENDS = ("tensorflow", "jax", "torch")
# The least speed-up over each hand loop that each backend should reach (issue 31): every backend at
# least the PyTorch loop's speed, JAX at least 0.9x the jitted JAX loop (the practical limit).
TARGETS = {"PyTorch eager": {"tensorflow": 1.0, "jax": 1.0, "torch": 1.0}, "JAX jit": {"jax": 0.9}}
OUTSIDE_STEPS_TARGET = 0.10  # at most this share of an epoch outside the training steps
EPOCH_BEGIN = re.compile(r"^Epoch (\d+)/(\d+)\s*$")
EPOCH_END = re.compile(r"^\s*\d+/\d+ - \d")


def installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def per_epoch(ends):
    """Median seconds between consecutive epoch ends, the first epoch (compilation) left out."""
    gaps = np.diff(ends)
    return float(statistics.median(gaps)) if len(gaps) else float("nan")


# -- kerasae, the real command ----------------------------------------------------------------


def kerasae_train(recipe, backend, epochs, limit, zoo):
    """Runs `kerasae train recipes/<recipe>.yaml` on `backend`; its timings from outside and inside."""
    command = [os.path.join(os.path.dirname(sys.executable), "kerasae"), "train"]
    command += [os.path.join(ROOT, "recipes", f"{recipe}.yaml"), "--zoo", zoo, "--set", f"train.epochs={epochs}"]
    if limit:
        command += ["--set", f"data.limit={limit}"]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    begins, ends, lines = [], [], []
    for line in process.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        if EPOCH_BEGIN.match(line):
            begins.append(now)
        elif EPOCH_END.match(line):
            ends.append(now)
    process.wait()
    total = time.perf_counter() - start
    if process.returncode != 0 or len(ends) != epochs:
        raise RuntimeError(f"kerasae train {recipe} on {backend} failed:\n{''.join(lines[-30:])}")
    entry = lines[-1].strip().removeprefix("wrote ")
    with open(os.path.join(entry, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    timings = metrics["timings"]
    outside = [1 - steps / wall for wall, steps in zip(timings["epoch_seconds"], timings["epoch_step_seconds"])]
    return {
        "s_per_epoch": per_epoch(ends),
        "startup_s": begins[0],
        "end_s": total - ends[-1],
        "total_s": total,
        "outside_steps_share": float(statistics.median(outside[1:] or outside)),
        "hardware": metrics["versions"]["hardware"],
    }


# -- what the recipes do, for the reference loops ------------------------------------------------


def recipe_work(recipe, limit):
    """The shipped recipe's model, data and per-step randomness, as plain values and arrays."""
    sys.path.insert(0, ROOT)
    from kerasae import data
    from kerasae.spec import recipe as recipe_module

    r = recipe_module.load(os.path.join(ROOT, "recipes", f"{recipe}.yaml"), [f"data.limit={limit}"] if limit else [])
    d = data.load(r.data, seed=r.train.seed)
    return {
        "family": r.model.family,
        "encoder": [layer if isinstance(layer, int) else layer.model_dump() for layer in r.model.encoder],
        "latent": r.model.latent_dim,
        "latent_activation": r.model.latent_activation,
        "bernoulli": r.data.binarize == "bernoulli",
        "corruption": (r.corruption.type, r.corruption.p) if r.corruption.type != "none" else None,
        "batch": r.train.batch_size,
        "lr": r.train.learning_rate,
        "x": np.asarray(d.x_train, dtype="float32"),
        "x_val": np.asarray(d.x_val, dtype="float32"),
    }


def _masks(kind, p, u):
    """(keep, salt) of a corruption from uniforms u: masking zeroes a fraction p, salt-and-pepper sets
    a fraction p to 0 or 1 evenly."""
    hit = u < p
    return ~hit, (u < 0.5 * p) if kind == "salt_and_pepper" else None


def torch_reference(work):
    """The model a user writes by hand in eager PyTorch: (its loss function of a batch and
    `training`, its Adam optimizer)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    variational = work["family"] == "vae"
    latent = work["latent"]
    heads = 2 * latent if variational else latent
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    if work["encoder"] and isinstance(work["encoder"][0], dict):  # conv: 28 -> 14 -> 7, and back
        f = [layer["filters"] for layer in work["encoder"]]
        encoder = nn.Sequential(
            nn.Conv2d(1, f[0], 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(f[0], f[1], 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(7 * 7 * f[1], heads),
            act[work["latent_activation"]]() if not variational else nn.Identity(),
        )
        decoder = nn.Sequential(
            nn.Linear(latent, 7 * 7 * f[1]),
            nn.ReLU(),
            nn.Unflatten(1, (f[1], 7, 7)),
            nn.ConvTranspose2d(f[1], f[1], 3, 2, 1, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(f[1], f[0], 3, 2, 1, 1),
            nn.ReLU(),
            nn.Conv2d(f[0], 1, 3, 1, 1),
            nn.Flatten(),
        )
        shape = (-1, 1, 28, 28)
    else:
        sizes = [784, *work["encoder"]]
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        encoder = nn.Sequential(*layers, nn.Linear(sizes[-1], heads))
        if not variational:
            encoder.append(act[work["latent_activation"]]())
        back = [latent, *reversed(work["encoder"])]
        layers = [m for a, b in zip(back, back[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        decoder = nn.Sequential(*layers, nn.Linear(back[-1], 784))
        shape = (-1, 784)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=work["lr"])

    def losses(xb, training):
        target = (torch.rand_like(xb) < xb).float() if training and work["bernoulli"] else xb
        noisy = target
        if training and work["corruption"]:
            keep, salt = _masks(*work["corruption"], torch.rand_like(target))
            noisy = target * keep + (salt.float() if salt is not None else 0)
        h = encoder(noisy.view(shape))
        kl = 0.0
        if variational:
            mu, log_var = h.chunk(2, dim=-1)
            h = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            kl = -0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=-1)
        logits = decoder(h)
        return (nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1) + kl).mean()

    return losses, optimizer


def torch_loop(work, epochs):
    """The loop a user writes by hand in eager PyTorch; returns the times of its epoch ends."""
    import torch

    losses, optimizer = torch_reference(work)
    x = torch.from_numpy(work["x"].reshape(len(work["x"]), -1))
    x_val = torch.from_numpy(work["x_val"].reshape(len(work["x_val"]), -1))
    if work["bernoulli"]:  # held-out images binarized once, as kerasae does
        x_val = (torch.rand_like(x_val) < x_val).float()
    start, ends = time.perf_counter(), []
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(work["batch"]):
            loss = losses(x[batch], training=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            sum(float(losses(xb, training=False)) for xb in x_val.split(work["batch"]))
        ends.append(time.perf_counter() - start)
    return ends


def jax_loop(work, epochs):
    """A plain JAX loop: pure functions, the whole step under `jax.jit`, optax-free Adam; conv
    recipes with `lax.conv_general_dilated` and `lax.conv_transpose` ("SAME"), as Flax's layers call
    them; returns the times of its epoch ends."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    variational = work["family"] == "vae"
    latent = work["latent"]
    heads = 2 * latent if variational else latent
    latent_act = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "linear": lambda h: h}[work["latent_activation"]]
    conv = bool(work["encoder"]) and isinstance(work["encoder"][0], dict)
    if conv:  # 28 -> 14 -> 7, and back, as the PyTorch loop
        f = [layer["filters"] for layer in work["encoder"]]
        shapes = [(3, 3, 1, f[0]), (3, 3, f[0], f[1]), (7 * 7 * f[1], heads)]  # encoder
        shapes += [(latent, 7 * 7 * f[1]), (3, 3, f[1], f[1]), (3, 3, f[1], f[0]), (3, 3, f[0], 1)]  # decoder
    else:
        encoder_sizes = [784, *work["encoder"], heads]
        decoder_sizes = [latent, *reversed(work["encoder"]), 784]
        shapes = list(zip(encoder_sizes, encoder_sizes[1:])) + list(zip(decoder_sizes, decoder_sizes[1:]))
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = [
        (jax.random.normal(k, s) * jnp.sqrt(2.0 / (np.prod(s[:-1]) + s[-1])), jnp.zeros(s[-1]))
        for k, s in zip(keys, shapes)
    ]
    n_encoder = 3 if conv else len(encoder_sizes) - 1
    dimensions = ("NHWC", "HWIO", "NHWC")

    def mlp(layers, h):
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = jax.nn.relu(h)
        return h

    def encode(layers, x):
        if not conv:
            return mlp(layers, x)
        h = x.reshape(-1, 28, 28, 1)
        for w, b in layers[:2]:
            h = jax.nn.relu(lax.conv_general_dilated(h, w, (2, 2), "SAME", dimension_numbers=dimensions) + b)
        w, b = layers[2]
        return h.reshape(len(x), -1) @ w + b

    def decode(layers, z):
        if not conv:
            return mlp(layers, z)
        (w, b), up0, up1, (wl, bl) = layers
        h = jax.nn.relu(z @ w + b).reshape(len(z), 7, 7, -1)
        for w, b in (up0, up1):
            h = jax.nn.relu(lax.conv_transpose(h, w, (2, 2), "SAME", dimension_numbers=dimensions) + b)
        return (lax.conv_general_dilated(h, wl, (1, 1), "SAME", dimension_numbers=dimensions) + bl).reshape(len(z), -1)

    def loss_fn(params, xb, key, training):
        k1, k2, k3 = jax.random.split(key, 3)
        target = (jax.random.uniform(k1, xb.shape) < xb).astype(xb.dtype) if training and work["bernoulli"] else xb
        noisy = target
        if training and work["corruption"]:
            keep, salt = _masks(*work["corruption"], jax.random.uniform(k2, xb.shape))
            noisy = target * keep + (salt if salt is not None else 0)
        h = encode(params[:n_encoder], noisy)
        kl = 0.0
        if variational:
            mu, log_var = jnp.split(h, 2, axis=-1)
            h = mu + jnp.exp(0.5 * log_var) * jax.random.normal(k3, mu.shape)
            kl = -0.5 * jnp.sum(1 + log_var - mu**2 - jnp.exp(log_var), axis=-1)
        else:
            h = latent_act(h)
        logits = decode(params[n_encoder:], h)
        rec = jnp.sum(jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))), axis=-1)
        return jnp.mean(rec + kl)

    @jax.jit
    def step(params, m, v, t, xb, key):
        grads = jax.grad(loss_fn)(params, xb, key, True)
        t = t + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        scale = work["lr"] * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-7), params, m, v)
        return params, m, v, t

    validate = jax.jit(lambda params, xb: loss_fn(params, xb, jax.random.key(0), False))
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t = jnp.zeros(())
    x = work["x"].reshape(len(work["x"]), -1)
    x_val = work["x_val"].reshape(len(work["x_val"]), -1)
    if work["bernoulli"]:
        x_val = (np.random.default_rng(0).random(x_val.shape, dtype=np.float32) < x_val).astype(np.float32)
    key, batch = jax.random.key(1), work["batch"]
    start, ends = time.perf_counter(), []
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(x))
        for i in range(0, len(x), batch):
            key, sub = jax.random.split(key)
            params, m, v, t = step(params, m, v, t, x[order[i : i + batch]], sub)
        sum(float(validate(params, x_val[i : i + batch])) for i in range(0, len(x_val), batch))
        ends.append(time.perf_counter() - start)
    return ends


# -- the run ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (s / epoch: the median of the last E-1)")
    parser.add_argument("--limit", type=int, default=None, help="training images (default: DEFAULT_LIMITS, else all)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of every command per recipe, alternated; medians are reported"
    )
    parser.add_argument("--smoke", action="store_true", help="2 epochs of 1,200 images, to check it runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results.json"))
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.limit = 2, 1200
    backends = [b for b in args.backends.split(",") if installed(b)]
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "hardware": {}},
        "settings": {"epochs": args.epochs, "rounds": args.rounds, "smoke": args.smoke},
        "recipes": {},
    }
    with tempfile.TemporaryDirectory(prefix="kerasae-bench-") as zoo:
        for recipe in args.recipes.split(","):
            limit = args.limit or DEFAULT_LIMITS.get(recipe)
            work = recipe_work(recipe, limit)
            rounds = []
            for _ in range(args.rounds):  # every run once per round: a slow spell of the machine hits all
                runs = {}
                for backend in backends:
                    run = kerasae_train(recipe, backend, args.epochs, limit, zoo)
                    results["machine"]["hardware"][backend] = run.pop("hardware")
                    runs[f"kerasae {backend}"] = run
                    print(f"{recipe} on {backend}: {run['s_per_epoch']:.2f} s/epoch", file=sys.stderr, flush=True)
                if installed("torch"):
                    runs["PyTorch eager"] = {"s_per_epoch": per_epoch(torch_loop(work, args.epochs))}
                if installed("jax"):
                    runs["JAX jit"] = {"s_per_epoch": per_epoch(jax_loop(work, args.epochs))}
                rounds.append(runs)
            runs = merged(rounds)
            results["recipes"][recipe] = {"limit": limit, "runs": runs, "checks": checks(runs)}
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return 0


def merged(rounds):
    """One entry per run over the rounds: each number the median of its rounds, and the rounds' s / epoch
    (`per_round`), so that a speed-up is the median of ratios measured side by side."""
    out = {}
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        out[name] = {key: statistics.median(v[key] for v in values) for key in values[0]}
        out[name]["per_round"] = [v["s_per_epoch"] for v in values]
    return out


def speedup(reference, run):
    """The reference's s / epoch over the run's: the median of the rounds' ratios."""
    pairs = zip(reference.get("per_round", [reference["s_per_epoch"]]), run.get("per_round", [run["s_per_epoch"]]))
    return statistics.median(ref / ours for ref, ours in pairs)


def checks(runs):
    """Each target met or not in this run: the measured ratio or share, and the goal."""
    out = {}
    for name, run in runs.items():
        if not name.startswith("kerasae "):
            continue
        backend = name.removeprefix("kerasae ")
        for loop, goals in TARGETS.items():
            if loop in runs and backend in goals:
                ratio = speedup(runs[loop], run)
                out[f"{backend} speed-up over {loop}"] = {
                    "value": ratio,
                    "goal": goals[backend],
                    "met": ratio >= goals[backend],
                }
        share, goal = run["outside_steps_share"], OUTSIDE_STEPS_TARGET
        out[f"{backend} outside steps"] = {"value": share, "goal": goal, "met": share <= goal}
    return out


def table(results):
    s = results["settings"]
    hardware = ", ".join(f"{b}: {h}" for b, h in results["machine"]["hardware"].items())
    lines = [
        f"`kerasae train recipes/<recipe>.yaml --set train.epochs={s['epochs']}`, end to end, training images as "
        f"listed; {results['machine']['cpus']} CPU cores ({hardware}). s / epoch: median time between "
        "consecutive epoch ends after the first; speed-up: a hand loop's s / epoch over this run's"
        + (
            f"; {s['rounds']} rounds, every run once per round, medians (of ratios within a round)."
            if s.get("rounds", 1) > 1
            else "."
        ),
        "",
        "| recipe | images | run | s / epoch | vs PyTorch eager | vs JAX jit | start-up s | end s | outside steps |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for recipe, r in results["recipes"].items():
        loops = [r["runs"].get(loop) for loop in TARGETS]
        images = f"{r['limit']:,}" if r["limit"] else "all"
        for name, run in r["runs"].items():
            ratios = " | ".join(f"{speedup(loop, run):.2f}x" if loop else "" for loop in loops)
            extra = (
                f"{run['startup_s']:.1f} | {run['end_s']:.1f} | {100 * run['outside_steps_share']:.0f}%"
                if "startup_s" in run
                else " | | "
            )
            lines.append(f"| {recipe} | {images} | {name} | {run['s_per_epoch']:.2f} | {ratios} | {extra} |")
    lines += ["", "| recipe | target | measured | goal | met |", "| --- | --- | ---: | ---: | :---: |"]
    for recipe, r in results["recipes"].items():
        for name, c in r["checks"].items():
            measured, goal = (
                (f"{100 * c['value']:.0f}%", f"<= {100 * c['goal']:.0f}%")
                if "outside" in name
                else (f"{c['value']:.2f}x", f">= {c['goal']:.1f}x")
            )
            lines.append(f"| {recipe} | {name} | {measured} | {goal} | {'yes' if c['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
