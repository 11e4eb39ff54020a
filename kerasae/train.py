"""Training a recipe: data -> model -> fit -> evaluate -> zoo entry."""

import json
import os
import platform
import sys
import time

import keras

from kerasae import backend, builder, figures, zoo
from kerasae import data as data_module
from kerasae import recipe as recipe_module
from kerasae.errors import DataError


class Snapshots(keras.callbacks.Callback):
    """Keeps reconstructions of fixed images after chosen epochs (1-based), for figures."""

    def __init__(self, images, labels, epochs):
        super().__init__()
        self.images = images
        self.labels = labels
        self.epochs = set(epochs)
        self.taken = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            self.taken[epoch + 1] = self.model.reconstruct(self.images, self.labels)


class KLWarmup(keras.callbacks.Callback):
    """Raises a VAE's `kl_weight` linearly from 0 to `beta` over the first epochs."""

    def __init__(self, beta, epochs):
        super().__init__()
        self.beta = beta
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.beta * min(1.0, epoch / self.epochs))


def _check_labels(dataset, recipe):
    if recipe.model.family not in recipe_module.LABELLED_FAMILIES:
        return 0
    for split in ("y_train", "y_val", "y_test"):
        if getattr(dataset, split) is None:
            raise DataError(
                f"family '{recipe.model.family}' needs labels, but the data has no {split} "
                f"({dataset.record['source']}; for npz, set data.keys.y_train / y_test)"
            )
    return int(max(dataset.y_train.max(), dataset.y_test.max())) + 1


def _check_values(dataset, recipe):
    needs_unit_range = recipe.loss.type == "bce" or recipe.loss.likelihood == "bernoulli"
    if needs_unit_range:
        for split in ("x_train", "x_val", "x_test"):
            x = getattr(dataset, split)
            if x.size and (x.min() < 0.0 or x.max() > 1.0):
                raise DataError(f"{split}: values must lie in [0, 1] for a bce/bernoulli loss")


def _verbosity():
    # One line per epoch when the output is a log file rather than a terminal.
    return 1 if sys.stdout.isatty() else 2


def versions():
    import numpy
    import pydantic

    return {
        "kerasae": __import__("kerasae").__version__,
        "keras": keras.__version__,
        "backend": backend.NAME,
        "numpy": numpy.__version__,
        "pydantic": pydantic.__version__,
        "python": platform.python_version(),
    }


def _final(history, prefix=""):
    return {k[len(prefix):]: float(v[-1]) for k, v in history.items() if k.startswith(prefix) and (prefix or not k.startswith("val_"))}


def run(recipe, zoo_dir=None, overwrite=False, verbose=None):
    """Trains a validated recipe and writes its zoo entry.

    Args:
        recipe: a `Recipe` from `kerasae.recipe.load`.
        zoo_dir: the zoo folder (default: $KERASAE_ZOO, else ./zoo).
        overwrite: replace an existing entry of the same name.
        verbose: Keras verbosity; default: a progress bar on a terminal,
            one line per epoch otherwise.

    Returns:
        (entry folder, metrics dict).
    """
    zoo.check_free(recipe.name, zoo_dir, overwrite)
    keras.utils.set_random_seed(recipe.train.seed)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    _check_values(dataset, recipe)
    num_classes = _check_labels(dataset, recipe)
    model = builder.build(recipe, dataset.image_shape, num_classes=num_classes)
    model.compile(optimizer=builder.optimizer(recipe.train))
    # Conditional families train on (images, labels); the others on images alone.
    labelled = model.needs_labels

    def split(x, y):
        return (x, y) if labelled else (x,)

    outputs = recipe.outputs
    examples = dataset.x_test[: outputs.n_examples]
    example_labels = dataset.y_test[: outputs.n_examples] if labelled else None
    last = recipe.train.epochs
    snapshots = Snapshots(examples, example_labels, sorted({e for e in outputs.epochs if e <= last} | {last}))
    with zoo.staging(recipe.name, zoo_dir) as stage:
        callbacks = [keras.callbacks.CSVLogger(os.path.join(stage, zoo.HISTORY_FILE)), snapshots]
        if recipe.loss.kl_warmup_epochs:
            callbacks.append(KLWarmup(recipe.loss.beta, recipe.loss.kl_warmup_epochs))
        if recipe.train.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(stage, "logs")))
        validation = split(dataset.x_val, dataset.y_val) if len(dataset.x_val) else None
        start = time.perf_counter()
        history = model.fit(
            *split(dataset.x_train, dataset.y_train), batch_size=recipe.train.batch_size,
            epochs=recipe.train.epochs, validation_data=validation, shuffle=True, callbacks=callbacks,
            verbose=_verbosity() if verbose is None else verbose,
        ).history
        wall = time.perf_counter() - start
        test = model.evaluate(*split(dataset.x_test, dataset.y_test), batch_size=recipe.train.batch_size,
                              verbose=0, return_dict=True)

        metrics = {
            "name": recipe.name,
            "family": recipe.model.family,
            "latent_dim": recipe.model.latent_dim,
            "units": "nats per image" if recipe.loss.type != "mse" else "1/2 sum of squared errors per image",
            "train": _final(history),
            "validation": _final(history, "val_"),
            "test": {k: float(v) for k, v in test.items()},
            "epochs": recipe.train.epochs,
            "train_seconds": round(wall, 2),
            "data": dataset.record,
            "versions": versions(),
        }
        model.save(os.path.join(stage, zoo.MODEL_FILE))
        recipe_module.dump(recipe, os.path.join(stage, zoo.RECIPE_FILE))
        with open(os.path.join(stage, zoo.METRICS_FILE), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        _write_figures(stage, recipe, history, examples, snapshots.taken)
        if outputs.export_saved_model and _tensorflow_available():
            backend.export_saved_model(os.path.join(stage, zoo.MODEL_FILE), os.path.join(stage, zoo.SAVED_MODEL_DIR))
        final = zoo.commit(stage, recipe.name, zoo_dir, overwrite)
    return final, metrics


def _write_figures(stage, recipe, history, examples, taken):
    wanted = recipe.outputs.figures
    if not wanted:
        return
    folder = os.path.join(stage, zoo.FIGURES_DIR)
    os.makedirs(folder, exist_ok=True)
    if "reconstructions" in wanted and taken:
        rows = [("input", examples)] + [(f"epoch {e}", taken[e]) for e in sorted(taken)]
        figures.image_rows(rows, os.path.join(folder, "reconstructions.png"), f"{recipe.name}: reconstructions")
    if "loss" in wanted:
        figures.loss_curves(history, os.path.join(folder, "loss.png"), f"{recipe.name}: loss per epoch")


def _tensorflow_available():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None



