#!/usr/bin/env python3
"""A memory-mapped data set larger than the memory its training uses.

    .venv/bin/python benchmarks/stream.py                    # 1,000,000 float32 images: 3.1 GB on disk
    .venv/bin/python benchmarks/stream.py --images 20000     # seconds

Writes an `npy` folder of float32 28x28 images (MNIST digits with a little noise,
tiled to the size asked for) and trains the seed's AE on it for one epoch through
`kerasae train` (`data.dataset: npy`), in a subprocess whose peak resident memory
is measured. The set is streamed when that peak stays well below the set's size.
Results go to benchmarks/stream.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 50_000


def source_digits():
    """MNIST from $KERASAE_DATA_DIR when there, else scikit-learn's digits scaled up."""
    path = os.path.join(os.environ.get("KERASAE_DATA_DIR", ""), "mnist.npz")
    if os.path.isfile(path):
        with np.load(path) as f:
            return f["x_train"].astype(np.float32) / 255.0
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import digit_images

    return digit_images(5000)[0].astype(np.float32) / 255.0


def write_set(folder, images):
    digits = source_digits()
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(
        os.path.join(folder, "x_train.npy"), mode="w+", dtype=np.float32, shape=(images, 28, 28)
    )
    for start in range(0, images, CHUNK):
        n = min(CHUNK, images - start)
        chunk = digits[rng.integers(0, len(digits), n)]
        x[start : start + n] = np.clip(chunk + rng.normal(0, 0.02, chunk.shape).astype(np.float32), 0, 1)
    x.flush()
    del x
    np.save(os.path.join(folder, "x_test.npy"), (digits[:2000] > 0.5).astype(np.uint8) * 255)
    return os.path.getsize(os.path.join(folder, "x_train.npy"))


def resident_bytes(pid, field="VmRSS"):
    """A process's resident memory now (VmRSS) or at its peak since it started (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        folder = os.path.join(tmp, "set")
        os.mkdir(folder)
        start = time.perf_counter()
        size = write_set(folder, args.images)
        written = time.perf_counter() - start
        recipe = {
            "name": "stream-ae",
            "model": {
                "family": "ae",
                "encoder": [],
                "latent_dim": 64,
                "latent_activation": "sigmoid",
                "output_activation": "sigmoid",
            },
            "loss": {"type": "bce"},
            "data": {"dataset": "npy", "path": folder, "binarize": "threshold", "validation_split": 0.01},
            "train": {"epochs": 1, "batch_size": 128},
            "outputs": {"figures": [], "export_saved_model": False, "nll_samples": 0},
        }
        recipe_file = os.path.join(tmp, "stream.yaml")
        with open(recipe_file, "w") as f:
            yaml.safe_dump(recipe, f)
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        start = time.perf_counter()
        log = open(os.path.join(tmp, "train.log"), "w+")
        child = subprocess.Popen(
            [sys.executable, "-m", "kerasae.cli", "train", recipe_file, "--zoo", os.path.join(tmp, "zoo"), "--quiet"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        # The training process's own peak (VmHWM, which starts afresh at exec). Not
        # getrusage(RUSAGE_CHILDREN): a child forked from this process counts the pages
        # this process has mapped until it execs, which is the data set just written.
        samples, peak = [], 0  # samples: (seconds, resident bytes), five a second
        while child.poll() is None:
            samples.append((time.perf_counter() - start, resident_bytes(child.pid)))
            peak = max(peak, resident_bytes(child.pid, "VmHWM"))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            log.seek(0)
            sys.exit(log.read()[-3000:])
    at = max(samples, key=lambda sample: sample[1]) if samples else (0.0, 0)
    out = {
        "peak_sampled_at_seconds": round(at[0], 1),
        "rss_samples_mb": [(round(t, 1), b // 2**20) for t, b in samples[:: max(1, len(samples) // 40)]],
        "images": args.images,
        "backend": args.backend,
        "data_bytes": size,
        "peak_rss_bytes": peak,
        "peak_rss_over_data": round(peak / size, 3),
        "write_seconds": round(written, 1),
        "train_seconds": round(seconds, 1),
        "images_per_second": round(args.images / seconds),
    }
    print(json.dumps(out, indent=2))
    print(
        f"data {size / 2**30:.2f} GiB on disk, training's peak resident memory {peak / 2**30:.2f} GiB "
        f"({out['peak_rss_over_data']:.2f}x the data)"
    )
    with open(os.path.join(ROOT, "benchmarks", "stream.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
