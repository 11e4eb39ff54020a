"""A zoo entry, written in one place: a new one from a trained model (`write`, by `kerasae train`)
and an existing one evaluated again (`refresh`, by `kerasae eval`).

A new entry is built in a staging folder and renamed into place (`kerasae.store.zoo`), so a reader never
sees half of one. What an entry holds: `model.keras`, `check.npz`, `sampler.npz`, `recipe.yaml`,
`metrics.json`, `history.json`, `figures/`, a SavedModel when the recipe asks, a table's or a
series' `transform.json` and `series.json`, and the card `README.md`; the zoo's card lists it.
"""

import dataclasses
import importlib.util
import os
import platform

import keras

from kerasae import backend, data, likelihood
from kerasae.assess import cards, evaluate, figures, samplers
from kerasae.data import series, tables
from kerasae.spec import builder
from kerasae.spec import recipe as recipe_module
from kerasae.store import export, zoo

# Held-out normal items the anomaly threshold is calibrated on, at most.
CALIBRATION_ITEMS = 10_000


@dataclasses.dataclass
class Trained:
    """What a finished training run hands to `write`.

    Attributes:
        model: the trained model.
        history: Keras's history of every epoch, {metric: [value per epoch]}.
        snapshots: the per-epoch images some figures show (`kerasae.run.callbacks.Snapshots`).
        train_seconds: seconds spent training, over every resumed part of the run.
        timings: this process's epochs: wall-clock and in-step seconds.
    """

    model: keras.Model
    history: dict
    snapshots: object
    train_seconds: float
    timings: dict


def write(recipe, dataset, trained, zoo_dir=None, overwrite=False, stopped=None):
    """Evaluates a trained model and writes its entry; returns (entry folder, metrics).

    Args:
        recipe: the validated recipe it was trained from.
        dataset: the `Dataset` it was trained on.
        trained: a `Trained`.
        zoo_dir: the zoo folder (default: $KERASAE_ZOO, else ./zoo).
        overwrite: replace an entry of the recipe's name.
        stopped: why a callback ended the run early ("after epoch 3"), if one did.
    """
    model, outputs = trained.model, recipe.outputs
    inputs = model.inputs_for(dataset.x_test, dataset.y_test)
    with zoo.staging(recipe.name, zoo_dir) as stage:
        test = model.evaluate(*inputs, batch_size=likelihood.test_batch(model), verbose=0, return_dict=True)
        metrics = _metrics(recipe, dataset, trained, test, stopped)
        # A prior fitted to the training codes (a VQ-VAE's) and the threshold are part of the saved model.
        n = samplers.GMM_IMAGES * 6
        model.fit_prior(dataset.x_train[:n], None if dataset.y_train is None else dataset.y_train[:n])
        _calibrate(model, dataset, recipe.score)
        # Saved before evaluating, so that `kerasae eval` on the entry starts from the same
        # random state and reproduces these numbers.
        zoo.save_model(model, os.path.join(stage, zoo.MODEL_FILE))
        zoo.write_check(stage, model, dataset.x_test, dataset.y_test)
        sampler = samplers.fit_to_model(model, dataset)
        samplers.save(os.path.join(stage, zoo.SAMPLER_FILE), sampler)
        metrics["evaluation"] = evaluate.evaluate(
            model, dataset, nll_samples=outputs.nll_samples, sampler=sampler, fid_samples=outputs.fid_samples
        )
        metrics["sampler"] = {"gmm": {"components": len(sampler["weights"]), "images": int(sampler["images"])}}
        recipe_module.dump(recipe, os.path.join(stage, zoo.RECIPE_FILE))
        _write_data_files(stage, dataset)
        zoo.write_history(stage, trained.history)
        figures.draw_entry(
            os.path.join(stage, zoo.FIGURES_DIR),
            recipe.name,
            outputs.figures,
            model,
            dataset,
            outputs.n_examples,
            trained.history,
            trained.snapshots,
        )
        if outputs.export_saved_model and importlib.util.find_spec("tensorflow") is not None:
            export.export(
                "tf_saved_model", os.path.join(stage, zoo.MODEL_FILE), os.path.join(stage, zoo.SAVED_MODEL_DIR)
            )
        _write_metrics(stage, recipe, metrics)  # after the export: the card says whether one is shipped
        final = zoo.commit(stage, recipe.name, zoo_dir, overwrite)
    cards.zoo_table(zoo_dir)
    return final, metrics


def refresh(path, nll_samples=None, keep_nll=False):
    """Evaluates an entry again on its recipe's test data; updates its metrics, its card and the zoo's.

    Args:
        path: the entry's folder.
        nll_samples: importance samples per image for the NLL (default: the recipe's).
        keep_nll: skip the NLL and keep the stored one (the rest is evaluated again).

    Returns:
        The entry's metrics with a fresh "evaluation" section.
    """
    model = zoo.load(path)
    spec = recipe_module.load(os.path.join(path, zoo.RECIPE_FILE))
    metrics = zoo.read_metrics(path)
    dataset = data.load(spec.data, seed=spec.train.seed)
    # Compiled as when it was trained: the random draws of XLA and of TensorFlow's kernels differ.
    jit = backend.jit_compile(
        spec.train.jit_compile, distributed=spec.distribute.strategy != "none", conv=spec.model.conv
    )
    model.compile(optimizer=builder.optimizer(spec.train), jit_compile=jit)
    samples = 0 if keep_nll else spec.outputs.nll_samples if nll_samples is None else nll_samples
    stored = metrics.get("evaluation", {})
    metrics["evaluation"] = evaluate.evaluate(
        model,
        dataset,
        nll_samples=samples,
        sampler=samplers.for_entry(path, model),
        fid_samples=spec.outputs.fid_samples,
    )
    if keep_nll:
        metrics["evaluation"].update({key: stored[key] for key in ("nll", "nll_samples") if key in stored})
    _write_metrics(path, spec, metrics)
    cards.zoo_table(os.path.dirname(os.path.abspath(path)))
    return metrics


def _write_metrics(folder, spec, metrics):
    """metrics.json and the card drawn from it."""
    zoo.write_metrics(folder, metrics)
    cards.entry_card(folder, spec.to_dict(), metrics)


def _metrics(recipe, dataset, trained, test, stopped):
    """metrics.json's account of the run: what trained, on what, how long; the test loss terms."""
    history = trained.history
    metrics = {
        "name": recipe.name,
        "family": recipe.model.family,
        "latent_dim": recipe.model.latent_dim,
        "units": "nats per image" if recipe.loss.type != "mse" else "1/2 sum of squared errors per image",
        "train": _final(history),
        "validation": _final(history, validation=True),
        "test": {k: float(v) for k, v in test.items()},
        "epochs": len(history.get("loss", [])),
        "train_seconds": round(trained.train_seconds, 2),
        # This process's epochs (a resumed run's, since the resume): wall-clock and in-step seconds.
        "timings": trained.timings,
        "data": dataset.record,
        "versions": versions(),
    }
    if stopped:
        metrics["stopped_early"] = f"{stopped}: a callback set model.stop_training"
    return metrics


def _final(history, validation=False):
    """Last-epoch values of the training (or validation) terms."""
    return {
        key.removeprefix("val_"): float(values[-1])
        for key, values in history.items()
        if key.startswith("val_") == validation
    }


def versions():
    """The versions and hardware a run trained with, for metrics.json."""
    import numpy
    import pydantic

    return {
        "kerasae": __import__("kerasae").__version__,
        "keras": keras.__version__,
        "backend": backend.NAME,
        "numpy": numpy.__version__,
        "pydantic": pydantic.__version__,
        "python": platform.python_version(),
        "hardware": backend.hardware(),
    }


def _calibrate(model, dataset, score):
    """Sets the model's anomaly threshold from up to `CALIBRATION_ITEMS` held-out normal items:
    the validation split, else (none held out) the training set."""
    held_out = len(dataset.x_val) > 0
    x, y = (dataset.x_val, dataset.y_val) if held_out else (dataset.x_train, dataset.y_train)
    labels = None if y is None else y[:CALIBRATION_ITEMS]
    model.calibrate(x[:CALIBRATION_ITEMS], labels, score.threshold_quantile())
    if dataset.series is not None:  # and a series' threshold of step scores, on its validation steps
        series.calibrate(model, dataset.series, score.threshold_quantile())


def _write_data_files(stage, dataset):
    """What `kerasae score` needs to read new data as the training data was read: a table's or a
    series' fitted transform, a series' window and step threshold."""
    if dataset.transform is not None:
        zoo.write_json(os.path.join(stage, tables.TRANSFORM_FILE), dataset.transform)
    if dataset.series is not None:
        zoo.write_json(os.path.join(stage, series.SERIES_FILE), dataset.series.to_dict())
