#!/usr/bin/env python3
"""Diagnostics of kerasae's training: in-epoch speed, memory, evaluation cost, scaling, quality per second.

DIAGNOSTIC numbers, measured on a path users do not run as such: the recipes are changed (threshold
binarization, no validation split, no figures or export) and only the inside of each epoch is timed
(`on_epoch_begin` to `on_epoch_end`). What users run is measured by benchmarks/run.py: the shipped recipes
through `kerasae train`, end to end. These isolate parts of it:

    .venv/bin/python benchmarks/diagnostics.py                        # full MNIST, every installed backend
    .venv/bin/python benchmarks/diagnostics.py --smoke                # seconds: tiny data, 2 epochs
    .venv/bin/python benchmarks/diagnostics.py --parts eval,quality   # only some parts

For the seed's VAE (784-400-20, ReLU, Bernoulli decoder) and AE (784-64-784, sigmoid), batch 128:
  * kerasae: `kerasae.run.train.run` on recipes/vae.yaml and recipes/ae.yaml, changed as above, one
    subprocess per backend, timed inside each epoch;
  * a plain PyTorch eager loop of the same model, without validation or random binarization;
  * a plain JAX loop, `jax.jit`-compiled, with a hand-written Adam;
  * the GEMM-only bound: the same matrix products (forward and backward) timed alone in torch.
Seconds per epoch are the median of the epochs after the first (warm-up). On the fastest backend it
also measures: peak memory over 1x and 2x the epochs; the importance-sampled NLL against the same
number of decoder passes alone (and its memory as k grows); s/epoch as the data grows (10k, 30k, 60k)
and as the hidden layer widens (400, 1024, 2048); the test ELBO that kerasae and the PyTorch loop
reach in the same training time (--budget). Results go to benchmarks/diagnostics.json and a Markdown
table.
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
    """Binarized MNIST training and test images as float32 (N, 784), through kerasae's own data resolution."""
    sys.path.insert(0, ROOT)
    from kerasae import data
    from kerasae.spec.recipe import DataSection

    d = data.load(DataSection(binarize="threshold", validation_split=0.0, limit=limit))
    return d.x_train.reshape(len(d.x_train), -1), d.x_test.reshape(len(d.x_test), -1)


# -- kerasae ------------------------------------------------------------------


PEAK_MB = r"""
def peak_mb():
    # VmHWM: this process's own peak. (On Linux, ru_maxrss of a child carries the parent's peak
    # over fork and exec, so a benchmark process that grew would show through.)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

KERASAE_CHILD = (
    PEAK_MB
    + r"""
import json, sys, time, resource
sys.path.insert(0, sys.argv[1])
import keras
from kerasae.spec import recipe
from kerasae.run import train

class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.start)

times = []
r = recipe.load(sys.argv[2], json.loads(sys.argv[3]))
train.run(r, zoo_dir=sys.argv[4], verbose=0, callbacks=[EpochTimer()])
print(json.dumps({"epoch_seconds": times, "peak_rss_mb": peak_mb()}))
"""
)


def kerasae_run(backend, model, epochs, limit, extra=(), child=KERASAE_CHILD, args=()):
    """One `kerasae.run.train.run` of the model's recipe in a fresh process on `backend`; the child's JSON."""
    recipe_file = os.path.join(ROOT, "recipes", MODELS[model][0])
    overrides = [
        f"train.epochs={epochs}",
        "outputs.figures=[]",
        "outputs.nll_samples=0",
        "outputs.fid_samples=0",  # sample quality is not what the diagnostics time
        "outputs.export_saved_model=false",
        "data.validation_split=0",
        f"data.limit={limit}",
        "data.binarize=threshold",
        f"train.batch_size={BATCH}",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as zoo_dir:
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(
            [sys.executable, "-c", child, ROOT, recipe_file, json.dumps(overrides), zoo_dir, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise RuntimeError(f"kerasae on {backend} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


EVAL_CHILD = (
    PEAK_MB
    + r"""
import json, sys, time, resource
sys.path.insert(0, sys.argv[1])
import keras
import numpy as np
from kerasae import data
from kerasae.assess import evaluate
from kerasae.spec import recipe
from kerasae.run import train
from kerasae.store import zoo

class DecoderPasses(keras.Model):
    # The decoder alone on a batch of codes, each output row summed (so outputs stay small).
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder
    def call(self, z):
        return keras.ops.sum(self.decoder(z), axis=-1)

r = recipe.load(sys.argv[2], json.loads(sys.argv[3]))
entry, _ = train.run(r, zoo_dir=sys.argv[4], verbose=0)
model = zoo.load(entry)
x = data.load(r.data, seed=r.train.seed).x_test
k_small, k = int(sys.argv[5]), int(sys.argv[6])
evaluate.importance_sampled_nll(model, x[:100], k=k_small)  # compiles
before = peak_mb()
evaluate.importance_sampled_nll(model, x, k=k_small)
after_small = peak_mb()
start = time.perf_counter()
nll = evaluate.importance_sampled_nll(model, x, k=k)
nll_seconds = time.perf_counter() - start
after_large = peak_mb()
# The same number of decoder passes: len(x) * k codes, in the chunks the NLL uses.
chunk = min(100, k)
passes = DecoderPasses(model.decoder)
z = np.random.default_rng(0).standard_normal((len(x) * chunk, r.model.latent_dim)).astype("float32")
passes.predict(z[:1000], batch_size=500 * chunk, verbose=0)  # compiles
start = time.perf_counter()
for _ in range(k // chunk):
    passes.predict(z, batch_size=500 * chunk, verbose=0)
decoder_seconds = (time.perf_counter() - start) * k / (k // chunk * chunk)
print(json.dumps({"nll": nll, "k": k, "images": len(x), "nll_seconds": nll_seconds,
                  "decoder_seconds": decoder_seconds, "rss_before_mb": before,
                  "rss_after_small_k_mb": after_small, "rss_after_large_k_mb": after_large, "k_small": k_small}))
"""
)


def evaluation_cost(backend, k, limit):
    """The importance-sampled NLL with k samples on the test set, against the same number of decoder
    passes timed alone, and the peak memory with a small k then the full k (flat in k: the same)."""
    run = kerasae_run(
        backend, "vae", 1, limit, extra=["data.binarize=bernoulli"], child=EVAL_CHILD, args=(max(2, k // 10), k)
    )
    run["nll_over_decoder"] = run["nll_seconds"] / run["decoder_seconds"]
    run["rss_growth_small_to_large_k_mb"] = run["rss_after_large_k_mb"] - run["rss_after_small_k_mb"]
    return run


# -- reference loops ------------------------------------------------------------


def layer_sizes(model):
    """(inputs, outputs) of each dense layer; a VAE's encoder head emits mean and log-variance."""
    _, hidden, latent, variational = MODELS[model]
    if variational:
        return [(784, hidden[0]), (hidden[0], 2 * latent), (latent, hidden[0]), (hidden[0], 784)]
    return [(784, latent), (latent, 784)]


def torch_loop(x, model, epochs, budget_s=None, x_test=None):
    """The loop a user writes by hand: nn.Module, Adam, eager PyTorch. Returns the epoch times; with
    `budget_s`, trains until that many seconds have passed and returns (seconds, epochs, test ELBO)."""
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

    def per_image_loss(xb):
        h = encoder(xb)
        if variational:
            mu, log_var = h.chunk(2, dim=-1)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            kl = -0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=-1)
        else:
            z, kl = h, 0.0
        logits = decoder(z)
        return nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1) + kl

    times, begin, done = [], time.perf_counter(), 0
    while len(times) < epochs if budget_s is None else not done:
        start = time.perf_counter()
        for batch in torch.randperm(len(data)).split(BATCH):
            loss = per_image_loss(data[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if budget_s is not None and time.perf_counter() - begin >= budget_s:
                done = True
                break
        times.append(time.perf_counter() - start)
    if budget_s is None:
        return times
    seconds = time.perf_counter() - begin
    with torch.no_grad():  # one-sample ELBO, the estimator kerasae's evaluation uses
        loss = torch.cat([per_image_loss(xb) for xb in torch.from_numpy(x_test).split(1000)])
    return seconds, len(times), -float(loss.mean())


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


def quality_per_second(backend, s_per_epoch, budget_s, x, x_test, limit):
    """The VAE's test ELBO after `budget_s` seconds of training: kerasae (whole epochs, ending at the
    last epoch that fits in the budget) and the PyTorch loop (until the budget runs out), same
    hyperparameters."""
    epochs = 2 * max(1, int(budget_s / s_per_epoch)) + 10  # a bound: the budget ends the run first
    run = kerasae_run(backend, "vae", epochs, limit, child=METRICS_CHILD, args=(budget_s,))
    seconds, torch_epochs, torch_elbo = torch_loop(x, "vae", None, budget_s=budget_s, x_test=x_test)
    return {
        f"kerasae_{backend}": {
            "train_seconds": run["train_seconds"],
            "epochs": run["epochs"],
            "test_elbo": run["elbo"],
        },
        "torch_loop": {"train_seconds": seconds, "epochs": torch_epochs, "test_elbo": torch_elbo},
        "budget_s": budget_s,
    }


METRICS_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import keras
from kerasae.spec import recipe
from kerasae.run import train

class TimeBudget(keras.callbacks.Callback):
    # Ends the run after the last epoch that fits in the budget (the next one would overrun it).
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self.start + (now - self.epoch_start) > self.seconds:
            self.model.stop_training = True

r = recipe.load(sys.argv[2], json.loads(sys.argv[3]))
_, metrics = train.run(r, zoo_dir=sys.argv[4], verbose=0, callbacks=[TimeBudget(float(sys.argv[5]))])
print(json.dumps({"train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
                  "elbo": metrics["evaluation"]["elbo"]}))
"""


def scaling(backend, epochs, sizes, widths):
    """kerasae's VAE s/epoch as the data grows (at hidden 400) and as the hidden layer widens (at the
    largest size); per-image seconds stay flat when time grows linearly with the data."""
    out = {"images": {}, "hidden": {}}
    for n in sizes:
        run = kerasae_run(backend, "vae", epochs, n)
        out["images"][str(n)] = {"s_per_epoch": median_after_warmup(run["epoch_seconds"])}
        out["images"][str(n)]["us_per_image"] = 1e6 * out["images"][str(n)]["s_per_epoch"] / n
    for width in widths:
        run = kerasae_run(backend, "vae", epochs, max(sizes), extra=[f"model.encoder=[{width}]"])
        flops = 6 * (784 * width + width * 40 + 20 * width + width * 784)  # forward + backward MACs x 2
        out["hidden"][str(width)] = {
            "s_per_epoch": median_after_warmup(run["epoch_seconds"]),
            "gflop_per_s": flops * max(sizes) / median_after_warmup(run["epoch_seconds"]) / 1e9,
        }
    return out


def memory_over_epochs(backend, epochs, limit):
    """Peak RSS of a VAE training run of `epochs` and of twice as many: flat when equal."""
    short = kerasae_run(backend, "vae", epochs, limit)["peak_rss_mb"]
    long = kerasae_run(backend, "vae", 2 * epochs, limit)["peak_rss_mb"]
    return {"epochs": [epochs, 2 * epochs], "peak_rss_mb": [short, long], "growth_mb": long - short}


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
    parser.add_argument(
        "--parts",
        default="speed,memory,eval,scaling,quality",
        help="speed: s/epoch against the loops; memory: peak RSS over 1x and 2x the epochs; "
        "eval: NLL cost against decoder passes; scaling: data size and width; quality: test "
        "ELBO after a fixed training time",
    )
    parser.add_argument("--nll-samples", type=int, default=1000, help="k for the eval part")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of training for the quality part")
    parser.add_argument("--sizes", default="10000,30000,60000", help="training images for the scaling part")
    parser.add_argument("--widths", default="400,1024,2048", help="VAE hidden widths for the scaling part")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to check the benchmark runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "diagnostics.json"))
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.limit, args.nll_samples, args.budget = 2, 512, 20, 3.0
        args.sizes, args.widths = "256,512", "64"
    parts = set(args.parts.split(","))
    backends = [b for b in args.backends.split(",") if installed(b if b != "tensorflow" else "tensorflow")]
    x, x_test = load_images(args.limit)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"epochs": args.epochs, "images": len(x), "batch": BATCH},
        "models": {},
    }
    for model in args.models.split(",") if "speed" in parts else []:
        row = {}
        for backend in backends:
            run = kerasae_run(backend, model, args.epochs, args.limit)
            row[f"kerasae_{backend}"] = {
                "s_per_epoch": median_after_warmup(run["epoch_seconds"]),
                "peak_rss_mb": run["peak_rss_mb"],
            }
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
    # The other parts run on the fastest backend for the VAE (jax when the speed part did not run).
    fastest = results["models"].get("vae", {}).get("fastest_kerasae", "kerasae_jax")[len("kerasae_") :]
    fastest = fastest if fastest in backends else backends[0]
    if "memory" in parts:
        results["memory_over_epochs"] = {"backend": fastest, **memory_over_epochs(fastest, args.epochs, args.limit)}
    if "eval" in parts:
        results["evaluation"] = {"backend": fastest, **evaluation_cost(fastest, args.nll_samples, args.limit)}
    if "scaling" in parts:
        sizes = [int(n) for n in args.sizes.split(",")]
        widths = [int(w) for w in args.widths.split(",")]
        results["scaling"] = {"backend": fastest, **scaling(fastest, args.epochs, sizes, widths)}
    if "quality" in parts and installed("torch"):
        vae = results["models"].get("vae", {}).get("runs", {}).get(f"kerasae_{fastest}")
        s_per_epoch = (
            vae["s_per_epoch"]
            if vae
            else median_after_warmup(kerasae_run(fastest, "vae", args.epochs, args.limit)["epoch_seconds"])
        )
        results["quality_per_second"] = quality_per_second(fastest, s_per_epoch, args.budget, x, x_test, args.limit)
    results["benchmark_peak_rss_mb"] = peak_rss_mb()
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return 0


def table(results):
    lines = [
        "DIAGNOSTIC (not what users run: see benchmarks/run.py): "
        f"images per epoch: {results['settings']['images']}, batch {BATCH}, "
        f"{results['settings']['epochs']} epochs, timed inside each epoch (median after the first)",
        "",
    ]
    for model, r in results["models"].items():
        lines += [
            f"## {model}",
            "",
            "| run | s / epoch | samples / s | peak RSS (MB) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, run in r["runs"].items():
            rss = f"{run['peak_rss_mb']:.0f}" if "peak_rss_mb" in run else ""
            lines.append(f"| {name} | {run['s_per_epoch']:.3f} | {run['samples_per_s']:.0f} | {rss} |")
        lines += ["", "| ratio | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items()]
        lines.append("")
    if "memory_over_epochs" in results:
        m = results["memory_over_epochs"]
        lines += [
            f"## Memory over epochs ({m['backend']})",
            "",
            f"VAE peak RSS after {m['epochs'][0]} epochs {m['peak_rss_mb'][0]:.0f} MB, after "
            f"{m['epochs'][1]} epochs {m['peak_rss_mb'][1]:.0f} MB (growth {m['growth_mb']:+.0f} MB).",
            "",
        ]
    if "evaluation" in results:
        e = results["evaluation"]
        lines += [
            f"## Evaluation ({e['backend']})",
            "",
            f"NLL with k = {e['k']} on {e['images']} test images: {e['nll_seconds']:.1f} s; the same "
            f"decoder passes alone {e['decoder_seconds']:.1f} s; ratio {e['nll_over_decoder']:.2f}. Peak RSS "
            f"{e['rss_after_small_k_mb']:.0f} MB after k = {e['k_small']}, {e['rss_after_large_k_mb']:.0f} MB "
            f"after k = {e['k']} (growth {e['rss_growth_small_to_large_k_mb']:+.0f} MB).",
            "",
        ]
    if "scaling" in results:
        sc = results["scaling"]
        lines += [
            f"## Scaling ({sc['backend']}, VAE)",
            "",
            "| training images | s / epoch | us / image |",
            "| ---: | ---: | ---: |",
        ]
        lines += [f"| {n} | {r['s_per_epoch']:.3f} | {r['us_per_image']:.1f} |" for n, r in sc["images"].items()]
        lines += ["", "| hidden units | s / epoch | GFLOP/s |", "| ---: | ---: | ---: |"]
        lines += [f"| {w} | {r['s_per_epoch']:.3f} | {r['gflop_per_s']:.1f} |" for w, r in sc["hidden"].items()]
        lines.append("")
    if "quality_per_second" in results:
        q = results["quality_per_second"]
        lines += [
            f"## Test ELBO after {q['budget_s']:.0f} s of training (VAE)",
            "",
            "| run | train s | epochs | test ELBO (nats) |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {name} | {r['train_seconds']:.0f} | {r['epochs']} | {r['test_elbo']:.2f} |"
            for name, r in q.items()
            if name != "budget_s"
        ]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
