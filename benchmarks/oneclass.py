#!/usr/bin/env python3
"""One-class MNIST as users run it: `kerasae train recipes/oneclass-mnist.yaml --set data.classes=[d]`,
one model per digit, each scoring all 10,000 test images with the other nine digits as anomalies;
scikit-learn's IsolationForest on the same training pixels, in the same run.

    .venv/bin/python benchmarks/oneclass.py                       # 10 digits, the recipe as shipped
    .venv/bin/python benchmarks/oneclass.py --digits 3 5 --epochs 2 --backend jax

Reported per digit: kerasae's test AUROC and AUPRC (from the entry's metrics.json, computed by
`kerasae.anomaly`), the precision and recall of its flags at the calibrated threshold, the wall-clock of
the command, and IsolationForest's AUROC (100 trees, seed 0, fitted on the same training images of the
digit, scored with `-score_samples`). Results: benchmarks/oneclass.json and a Markdown table (the README's).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def train_digit(recipe, digit, zoo_dir, backend, epochs):
    name = f"oneclass-mnist-{digit}"
    command = [os.path.join(os.path.dirname(sys.executable), "kerasae"), "train", recipe, "--quiet", "--zoo", zoo_dir]
    command += ["--set", f"name={name}", "--set", f"data.classes=[{digit}]"]
    if epochs:
        command += ["--set", f"train.epochs={epochs}"]
    env = dict(os.environ, KERAS_BACKEND=backend)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(os.path.join(zoo_dir, name, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics["evaluation"]["anomaly"], seconds


def isolation_forest(recipe, digit):
    """AUROC of scikit-learn's IsolationForest on the recipe's data for one digit."""
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from kerasae import data
    from kerasae.spec import recipe as recipe_module

    spec = recipe_module.load(recipe, [f"data.classes=[{digit}]"])
    dataset = data.load(spec.data, seed=spec.train.seed)
    forest = IsolationForest(n_estimators=100, random_state=0)
    forest.fit(dataset.x_train.reshape(len(dataset.x_train), -1))
    scores = -forest.score_samples(dataset.x_test.reshape(len(dataset.x_test), -1))
    return float(roc_auc_score(dataset.anomalous, scores))


def table(rows, backend):
    lines = [
        f"| digit | kerasae AUROC ({backend}) | AUPRC | precision / recall at threshold | IsolationForest AUROC | s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['digit']} | {r['auroc']:.3f} | {r['auprc']:.3f} | {r['precision']:.3f} / {r['recall']:.3f} "
            f"| {r['isolation_forest_auroc']:.3f} | {r['seconds']:.0f} |"
        )
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("auroc", "auprc", "isolation_forest_auroc")}
    lines.append(f"| mean | {mean['auroc']:.3f} | {mean['auprc']:.3f} | | {mean['isolation_forest_auroc']:.3f} | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "oneclass-mnist.yaml"))
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--epochs", type=int, help="override train.epochs (default: the recipe's)")
    parser.add_argument("--zoo", help="keep the entries here (default: a temporary folder)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "oneclass.json"))
    parser.add_argument("--card", help="a zoo entry of the recipe: write the table to its benchmark.md and card")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kerasae-oneclass-") as scratch:
        zoo_dir = args.zoo or scratch
        for digit in args.digits:
            anomaly, seconds = train_digit(args.recipe, digit, zoo_dir, args.backend, args.epochs)
            keep = ("auroc", "auprc", "precision", "recall", "threshold", "flagged")
            row = {"digit": digit, **{k: anomaly[k] for k in keep}, "seconds": round(seconds, 1)}
            row["isolation_forest_auroc"] = isolation_forest(args.recipe, digit)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "recipe": os.path.relpath(args.recipe, ROOT),
        "backend": args.backend,
        "epochs": args.epochs,
        "rows": rows,
    }
    result["table"] = table(rows, args.backend)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(result["table"])
    if args.card:
        write_card(result, args.card)


def write_card(result, entry):
    """The table, with how it was made, as the entry's benchmark.md; then its card again."""
    from kerasae.assess import cards
    from kerasae.store import zoo

    epochs = f" --epochs {result['epochs']}" if result["epochs"] else ""
    text = (
        f"One model per digit, trained by `benchmarks/oneclass.py{epochs}` (`kerasae train {result['recipe']} "
        f"--set data.classes=[d]` on {result['backend']}), each scoring all 10,000 MNIST test images with the "
        "other nine digits as anomalies; scikit-learn's IsolationForest (100 trees) on the same training "
        "pixels in the same run. Precision and recall are those of the flags at each model's threshold "
        "(the 0.99-quantile of its held-out normal scores).\n\n" + result["table"] + "\n"
    )
    zoo.write_text(os.path.join(entry, zoo.BENCHMARK_FILE), text)
    with open(os.path.join(entry, zoo.METRICS_FILE)) as f:
        metrics = json.load(f)
    from kerasae.spec import recipe as recipe_module

    spec = recipe_module.load(os.path.join(entry, zoo.RECIPE_FILE))
    cards.entry_card(entry, spec.to_dict(), metrics)


if __name__ == "__main__":
    main()
