#!/usr/bin/env python3
"""Anomalies in a time series as users find them: `kerasae train recipes/sequence-sensor.yaml` on each
backend, end to end, beside a PCA of as many components as the recipe's code, scikit-learn's
IsolationForest and, where it is installed, PyOD's AutoEncoder, fitted on the same standardized
training windows in the same run.

    .venv/bin/python benchmarks/series.py                       # every installed backend
    .venv/bin/python benchmarks/series.py --backends jax

Every method is judged per time step of the test part, as kerasae reports it: a reference detector
scores every stride-1 window of the test part and a step gets the mean score of the windows that hold
it (kerasae: the mean reconstruction error of the step itself); the threshold is the same quantile of
the validation steps' scores (the recipe's `score.quantile`). Reported: AUROC and AUPRC of the steps,
precision / recall / F1 of the flagged steps against the injected anomalies, and the share of the
injected anomalies (runs of anomalous steps) with at least one flagged step. Results:
benchmarks/series.json and a Markdown table (the README's).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BACKENDS = ("tensorflow", "jax", "torch")
KEYS = ("auroc", "auprc", "precision", "recall", "f1", "events_detected")


def kerasae_row(recipe, backend, zoo_dir):
    command = [os.path.join(os.path.dirname(sys.executable), "kerasae"), "train", recipe, "--quiet"]
    command += ["--zoo", zoo_dir, "--overwrite"]
    start = time.perf_counter()
    subprocess.run(
        command, env=dict(os.environ, KERAS_BACKEND=backend), check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - start
    name = os.path.splitext(os.path.basename(recipe))[0]
    with open(os.path.join(zoo_dir, name, "metrics.json")) as f:
        steps = json.load(f)["evaluation"]["anomaly"]["steps"]
    return {"method": f"kerasae ({backend})", "seconds": round(seconds, 1)} | {k: steps[k] for k in KEYS}


def window_scores_per_step(score_windows, values, length):
    """Each step's score: the mean of the scores of the stride-1 windows that hold it."""
    from kerasae.data import series

    windows, at = series.cut(values, length, 1)
    scores = score_windows(windows.reshape(len(windows), -1))
    total, count = np.zeros(len(values)), np.zeros(len(values))
    for offset in range(length):
        np.add.at(total, at + offset, scores)
        np.add.at(count, at + offset, 1.0)
    return total / np.maximum(count, 1.0)


def reference_rows(recipe):
    """IsolationForest and PyOD's AutoEncoder on the windows kerasae trains on, judged per step."""
    from sklearn.ensemble import IsolationForest

    from kerasae import data
    from kerasae.data import series
    from kerasae.spec import recipe as recipe_module

    spec = recipe_module.load(recipe)
    dataset = data.load(spec.data, seed=spec.train.seed)
    kept, quantile = dataset.series, spec.score.threshold_quantile()
    x_fit = dataset.x_train.reshape(len(dataset.x_train), -1)
    detectors = {"IsolationForest (scikit-learn)": lambda: IsolationForest(n_estimators=100, random_state=0)}
    if importlib.util.find_spec("pyod") is not None:
        from pyod.models.auto_encoder import AutoEncoder

        detectors["AutoEncoder (PyOD)"] = lambda: AutoEncoder(epoch_num=40, verbose=0)
    rows = [pca_row(x_fit, kept, spec.model.latent_dim, quantile)]
    for name, make in detectors.items():
        start = time.perf_counter()
        detector = make().fit(x_fit)
        if hasattr(detector, "decision_scores_"):
            score = detector.decision_function
        else:
            score = lambda x, detector=detector: -detector.score_samples(x)  # noqa: E731
        validation = window_scores_per_step(score, kept.validation, kept.length)
        test = window_scores_per_step(score, kept.test, kept.length)
        found = series.step_metrics(test, float(np.quantile(validation, quantile)), kept.test_anomalous)
        rows.append({"method": name, "seconds": round(time.perf_counter() - start, 1)} | {k: found[k] for k in KEYS})
    sizes = {
        "train_windows": len(x_fit),
        "test_steps": len(kept.test),
        "anomalous_steps": int(kept.test_anomalous.sum()),
    }
    return rows, sizes


def pca_row(x_fit, kept, components, quantile):
    """Principal components of the training windows, as many as the recipe's code: each step's score is
    its squared error in the PCA reconstruction, averaged over the windows that hold it (kerasae's score)."""
    from sklearn.decomposition import PCA

    from kerasae.data import series

    start = time.perf_counter()
    pca = PCA(components, random_state=0).fit(x_fit)

    class Restored:
        def reconstruct(self, x):
            flat = x.reshape(len(x), -1)
            return pca.inverse_transform(pca.transform(flat)).reshape(x.shape)

    validation = series.step_scores(Restored(), kept.validation, kept.length)
    test = series.step_scores(Restored(), kept.test, kept.length)
    found = series.step_metrics(test, float(np.quantile(validation, quantile)), kept.test_anomalous)
    name = f"PCA, {components} components (scikit-learn)"
    return {"method": name, "seconds": round(time.perf_counter() - start, 1)} | {k: found[k] for k in KEYS}


def table(rows):
    lines = [
        "| method | AUROC (steps) | AUPRC | precision / recall / F1 of flagged steps | anomalies found | s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        flags = f"{r['precision']:.3f} / {r['recall']:.3f} / {r['f1']:.3f}"
        lines.append(
            f"| {r['method']} | {r['auroc']:.3f} | {r['auprc']:.3f} | {flags} | {r['events_detected']:.0%} "
            f"| {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "sequence-sensor.yaml"))
    parser.add_argument("--backends", nargs="+", default=[b for b in BACKENDS if importlib.util.find_spec(b)])
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "series.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kerasae-series-") as zoo_dir:
        for backend in args.backends:
            rows.append(kerasae_row(args.recipe, backend, zoo_dir))
            print(json.dumps(rows[-1]), flush=True)
    reference, sizes = reference_rows(args.recipe)
    rows += reference
    result = {"recipe": os.path.relpath(args.recipe, ROOT), **sizes, "rows": rows, "table": table(rows)}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(result["table"])


if __name__ == "__main__":
    main()
