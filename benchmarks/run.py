#!/usr/bin/env python3
"""kerasae's training speed and memory, next to reference loops measured in the same run.

    .venv/bin/python benchmarks/run.py                      # full MNIST, every installed backend
    .venv/bin/python benchmarks/run.py --smoke              # seconds: tiny data, 2 epochs (the test suite runs this)

For the seed's VAE (784-400-20, ReLU, Bernoulli decoder) and AE (784-64-784, sigmoid), batch 128:
  * kerasae: `kerasae.train.run` on recipes/vae.yaml and recipes/ae.yaml (the real code path), one
    subprocess per backend;
  * a plain PyTorch eager loop of the same model (the loop a user would write by hand);
  * a plain JAX loop, `jax.jit`-compiled, with a hand-written Adam;
  * the GEMM-only bound: the same matrix products (forward and backward) timed alone in torch.
Seconds per epoch are the median of the epochs after the first (warm-up). Only ratios measured in one
run mean anything on shared machines. Results go to benchmarks/results.json and a Markdown table.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 128
MODELS = {
    # name: (recipe, encoder sizes, latent, variational)
    "vae": ("vae.yaml", [400], 20, True),
    "ae": ("ae.yaml", [], 64, False),
}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_images(limit):
    """Binarized MNIST training images as float32 (N, 784), through kerasae's own data resolution."""
    sys.path.insert(0, ROOT)
    from kerasae import data
    from kerasae.recipe import DataSection

    d = data.load(DataSection(binarize="threshold", validation_split=0.0, limit=limit))
    return d.x_train.reshape(len(d.x_train), -1)


# -- kerasae ------------------------------------------------------------------


KERASAE_CHILD = r"""
import json, sys, time, resource
sys.path.insert(0, sys.argv[1])
import keras
from kerasae import recipe, train

class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.start)

times = []
r = recipe.load(sys.argv[2], json.loads(sys.argv[3]))
train.run(r, zoo_dir=sys.argv[4], verbose=0, callbacks=[EpochTimer()])
print(json.dumps({"epoch_seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def kerasae_run(backend, model, epochs, limit):
    recipe_file = os.path.join(ROOT, "recipes", MODELS[model][0])
    overrides = [f"train.epochs={epochs}", "outputs.figures=[]", "outputs.nll_samples=0",
                 "outputs.export_saved_model=false", "data.validation_split=0", f"data.limit={limit}",
                 "data.binarize=threshold", f"train.batch_size={BATCH}"]
    with tempfile.TemporaryDirectory() as zoo_dir:
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(
            [sys.executable, "-c", KERASAE_CHILD, ROOT, recipe_file, json.dumps(overrides), zoo_dir],
            env=env, capture_output=True, text=True,
        )
    if result.returncode != 0:
        raise RuntimeError(f"kerasae on {backend} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- reference loops ------------------------------------------------------------


def layer_sizes(model):
    """(inputs, outputs) of each dense layer; a VAE's encoder head emits mean and log-variance."""
    _, hidden, latent, variational = MODELS[model]
    if variational:
        return [(784, hidden[0]), (hidden[0], 2 * latent), (latent, hidden[0]), (hidden[0], 784)]
    return [(784, latent), (latent, 784)]


def torch_loop(x, model, epochs):
    """The loop a user writes by hand: nn.Module, Adam, eager PyTorch."""
    import torch
    from torch import nn

    _, hidden, latent, variational = MODELS[model]
    torch.manual_seed(0)
    if variational:
        encoder = nn.Sequential(nn.Linear(784, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], 2 * latent))
        decoder = nn.Sequential(nn.Linear(latent, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], 784))
    else:
        encoder = nn.Sequential(nn.Linear(784, latent), nn.Sigmoid())
        decoder = nn.Sequential(nn.Linear(latent, 784))
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    data = torch.from_numpy(x)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in torch.randperm(len(data)).split(BATCH):
            xb = data[batch]
            h = encoder(xb)
            if variational:
                mu, log_var = h.chunk(2, dim=-1)
                z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
                kl = -0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=-1)
            else:
                z, kl = h, 0.0
            logits = decoder(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1)
            loss = (rec + kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def jax_loop(x, model, epochs):
    """A plain JAX loop: pure functions, `jax.jit` on the whole step, hand-written Adam."""
    import jax
    import jax.numpy as jnp

    variational = MODELS[model][3]
    sizes = layer_sizes(model)
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = [(jax.random.normal(k, s) * jnp.sqrt(2.0 / sum(s)), jnp.zeros(s[1])) for k, s in zip(keys, sizes)]

    def loss_fn(params, xb, key):
        if variational:
            (w1, b1), (w2, b2), (w3, b3), (w4, b4) = params
            h = jax.nn.relu(xb @ w1 + b1) @ w2 + b2
            mu, log_var = jnp.split(h, 2, axis=-1)
            z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)
            logits = jax.nn.relu(z @ w3 + b3) @ w4 + b4
            kl = -0.5 * jnp.sum(1 + log_var - mu**2 - jnp.exp(log_var), axis=-1)
        else:
            (w1, b1), (w2, b2) = params
            logits = jax.nn.sigmoid(xb @ w1 + b1) @ w2 + b2
            kl = 0.0
        rec = jnp.sum(jnp.maximum(logits, 0) - logits * xb + jnp.log1p(jnp.exp(-jnp.abs(logits))), axis=-1)
        return jnp.mean(rec + kl)

    @jax.jit
    def step(params, m, v, t, xb, key):
        grads = jax.grad(loss_fn)(params, xb, key)
        t = t + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        scale = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-7), params, m, v)
        return params, m, v, t

    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t = jnp.zeros(())
    data = jnp.asarray(x)
    key = jax.random.key(1)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = np.random.default_rng(epoch).permutation(len(x))
        for i in range(0, len(x), BATCH):
            key, sub = jax.random.split(key)
            params, m, v, t = step(params, m, v, t, data[order[i : i + BATCH]], sub)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - start)
    return times


def gemm_bound(n_images, model, repeats):
    """The same matrix products alone: per batch, each layer's forward GEMM and its two backward GEMMs."""
    import torch

    mats = [(torch.randn(BATCH, i), torch.randn(i, o), torch.randn(BATCH, o)) for i, o in layer_sizes(model)]
    steps = -(-n_images // BATCH)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            for a, w, g in mats:
                a @ w  # forward
                g @ w.T  # gradient wrt the input
                a.T @ g  # gradient wrt the weights
        times.append(time.perf_counter() - start)
    return times


# -- the run ---------------------------------------------------------------------


def installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def median_after_warmup(times):
    return statistics.median(times[1:] if len(times) > 1 else times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=60000, help="training images")
    parser.add_argument("--models", default="vae,ae")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to check the benchmark runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results.json"))
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.limit = 2, 512
    backends = [b for b in args.backends.split(",") if installed(b if b != "tensorflow" else "tensorflow")]
    x = load_images(args.limit)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "settings": {"epochs": args.epochs, "images": len(x), "batch": BATCH}, "models": {}}
    for model in args.models.split(","):
        row = {}
        for backend in backends:
            run = kerasae_run(backend, model, args.epochs, args.limit)
            row[f"kerasae_{backend}"] = {"s_per_epoch": median_after_warmup(run["epoch_seconds"]),
                                         "peak_rss_mb": run["peak_rss_mb"]}
        if installed("torch"):
            row["torch_loop"] = {"s_per_epoch": median_after_warmup(torch_loop(x, model, args.epochs))}
            row["gemm_bound"] = {"s_per_epoch": median_after_warmup(gemm_bound(len(x), model, args.epochs))}
        if installed("jax"):
            row["jax_loop"] = {"s_per_epoch": median_after_warmup(jax_loop(x, model, args.epochs))}
        for entry in row.values():
            entry["samples_per_s"] = len(x) / entry["s_per_epoch"]
        kerasae_runs = {k: v for k, v in row.items() if k.startswith("kerasae_")}
        best = min(kerasae_runs, key=lambda k: kerasae_runs[k]["s_per_epoch"])
        ratios = {}
        for name, run in kerasae_runs.items():
            for ref in ("torch_loop", "jax_loop"):
                if ref in row:  # > 1: kerasae is faster
                    ratios[f"{name}_speedup_vs_{ref}"] = row[ref]["s_per_epoch"] / run["s_per_epoch"]
            if "gemm_bound" in row:  # >= 1: how far above the matrix products alone
                ratios[f"{name}_over_gemm_bound"] = run["s_per_epoch"] / row["gemm_bound"]["s_per_epoch"]
        results["models"][model] = {"runs": row, "ratios": ratios, "fastest_kerasae": best}
    results["benchmark_peak_rss_mb"] = peak_rss_mb()
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return 0


def table(results):
    lines = [f"images per epoch: {results['settings']['images']}, batch {BATCH}, "
             f"{results['settings']['epochs']} epochs (median after the first)", ""]
    for model, r in results["models"].items():
        lines += [f"## {model}", "", "| run | s / epoch | samples / s | peak RSS (MB) |", "| --- | ---: | ---: | ---: |"]
        for name, run in r["runs"].items():
            rss = f"{run['peak_rss_mb']:.0f}" if "peak_rss_mb" in run else ""
            lines.append(f"| {name} | {run['s_per_epoch']:.3f} | {run['samples_per_s']:.0f} | {rss} |")
        lines += ["", "| ratio | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
