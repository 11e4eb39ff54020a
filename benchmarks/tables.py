#!/usr/bin/env python3
"""Anomaly detection on a table as users run it: `kerasae train recipes/table-breast-cancer.yaml` on each
backend, end to end, beside scikit-learn's IsolationForest and, where it is installed, PyOD's AutoEncoder
and VAE detectors, fitted on the same standardized training rows and scored on the same test rows in the
same run.

    .venv/bin/python benchmarks/tables.py                       # every installed backend
    .venv/bin/python benchmarks/tables.py --backends jax

kerasae's AUROC, AUPRC and the precision / recall of its flags at the calibrated threshold come from the
entry's metrics.json; the others' AUROC and AUPRC from scikit-learn on their scores. Each is fitted
with its defaults (PyOD: `AutoEncoder()` / `VAE()`, `epoch_num` raised to 100 for the 249 rows), seed 0
or PyOD's 42. Results: benchmarks/tables.json and a Markdown table (the README's).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BACKENDS = ("tensorflow", "jax", "torch")


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
        found = json.load(f)["evaluation"]["anomaly"]
    return {"method": f"kerasae ({backend})", "seconds": round(seconds, 1)} | {
        k: found[k] for k in ("auroc", "auprc", "precision", "recall")
    }


def reference_rows(recipe):
    """IsolationForest and PyOD's detectors on the rows kerasae trains and tests on."""
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import average_precision_score, roc_auc_score

    from kerasae import data
    from kerasae.spec import recipe as recipe_module

    spec = recipe_module.load(recipe)
    dataset = data.load(spec.data, seed=spec.train.seed)
    x_fit = dataset.x_train.reshape(len(dataset.x_train), -1)
    x_test = dataset.x_test.reshape(len(dataset.x_test), -1)
    detectors = {"IsolationForest (scikit-learn)": lambda: IsolationForest(n_estimators=100, random_state=0)}
    if importlib.util.find_spec("pyod") is not None:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.vae import VAE

        detectors["AutoEncoder (PyOD)"] = lambda: AutoEncoder(epoch_num=100, verbose=0)
        detectors["VAE (PyOD)"] = lambda: VAE(epoch_num=100, verbose=0)
    rows = []
    for name, make in detectors.items():
        start = time.perf_counter()
        detector = make().fit(x_fit)
        scores = detector.decision_function(x_test) if hasattr(detector, "decision_scores_") else None
        scores = -detector.score_samples(x_test) if scores is None else scores
        rows.append(
            {
                "method": name,
                "auroc": float(roc_auc_score(dataset.anomalous, scores)),
                "auprc": float(average_precision_score(dataset.anomalous, scores)),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    return rows, {"train_rows": len(x_fit), "test_rows": len(x_test), "anomalies": int(dataset.anomalous.sum())}


def table(rows):
    lines = ["| method | AUROC | AUPRC | precision / recall at threshold | s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        flags = f"{r['precision']:.3f} / {r['recall']:.3f}" if "precision" in r else ""
        lines.append(f"| {r['method']} | {r['auroc']:.3f} | {r['auprc']:.3f} | {flags} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "table-breast-cancer.yaml"))
    parser.add_argument(
        "--backends",
        nargs="+",
        default=[b for b in BACKENDS if importlib.util.find_spec(b)],
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "tables.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kerasae-tables-") as zoo_dir:
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
