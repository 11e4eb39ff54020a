"""Training a recipe: data -> model -> fit -> evaluate -> zoo entry."""

import json
import os
import platform
import sys
import time

import keras

from kerasae import backend, builder, cards, evaluate, figures, zoo
from kerasae import data as data_module
from kerasae import recipe as recipe_module
from kerasae.errors import DataError


class Snapshots(keras.callbacks.Callback):
    """After chosen epochs (1-based), keeps what the figures show of the model then:
    reconstructions of fixed test images (the seed's Fig. 2) and, for variational
    models, a latent walk between the first two of them (the seed's Fig. 7)."""

    def __init__(self, images, labels, epochs, steps=10):
        super().__init__()
        self.images = images
        self.labels = labels
        self.epochs = set(epochs)
        self.steps = steps
        self.reconstructions = {}
        self.interpolations = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        self.reconstructions[epoch + 1] = self.model.reconstruct(self.images, self.labels)
        if hasattr(self.model, "interpolate") and len(self.images) >= 2:
            extra = {"labels": tuple(self.labels[:2])} if self.model.needs_labels else {}
            self.interpolations[epoch + 1] = self.model.interpolate(self.images[0], self.images[1], self.steps, **extra)


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


def run(recipe, zoo_dir=None, overwrite=False, verbose=None, callbacks=()):
    """Trains a validated recipe and writes its zoo entry.

    Args:
        recipe: a `Recipe` from `kerasae.recipe.load`.
        zoo_dir: the zoo folder (default: $KERASAE_ZOO, else ./zoo).
        overwrite: replace an existing entry of the same name.
        verbose: Keras verbosity; default: a progress bar on a terminal,
            one line per epoch otherwise.
        callbacks: extra Keras callbacks for `fit` (timers, custom logging).

    Returns:
        (entry folder, metrics dict).
    """
    zoo.check_free(recipe.name, zoo_dir, overwrite)
    keras.utils.set_random_seed(recipe.train.seed)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    _check_values(dataset, recipe)
    num_classes = _check_labels(dataset, recipe)
    model = builder.build(recipe, dataset.image_shape, num_classes=num_classes)
    model.compile(optimizer=builder.optimizer(recipe.train),
                  steps_per_execution=backend.steps_per_execution(recipe.train.steps_per_execution))
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
        callbacks = [keras.callbacks.CSVLogger(os.path.join(stage, zoo.HISTORY_FILE)), snapshots, *callbacks]
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
        # Saved before evaluating, so that `kerasae eval` on the entry starts from the same
        # random state and reproduces these numbers.
        model.save(os.path.join(stage, zoo.MODEL_FILE))
        metrics["evaluation"] = evaluate.evaluate(model, dataset, nll_samples=outputs.nll_samples)
        recipe_module.dump(recipe, os.path.join(stage, zoo.RECIPE_FILE))
        write_metrics(stage, metrics)
        write_figures(os.path.join(stage, zoo.FIGURES_DIR), recipe, model, dataset, history, snapshots)
        cards.entry_card(stage, recipe.to_dict(), metrics)
        if outputs.export_saved_model and _tensorflow_available():
            backend.export_saved_model(os.path.join(stage, zoo.MODEL_FILE), os.path.join(stage, zoo.SAVED_MODEL_DIR))
        final = zoo.commit(stage, recipe.name, zoo_dir, overwrite)
    cards.zoo_table(zoo_dir)
    return final, metrics


def write_metrics(folder, metrics):
    path = os.path.join(folder, zoo.METRICS_FILE)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    os.replace(temporary, path)


def evaluate_entry(entry, nll_samples=None):
    """Re-evaluates a zoo entry on its recipe's test data; updates metrics.json and the cards.

    Returns:
        The entry's metrics with a fresh "evaluation" section.
    """
    model = zoo.load(entry)
    recipe = recipe_module.load(os.path.join(entry, zoo.RECIPE_FILE))
    metrics = zoo.read_metrics(entry)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    if not model.compiled:
        model.compile(optimizer=builder.optimizer(recipe.train))
    samples = recipe.outputs.nll_samples if nll_samples is None else nll_samples
    metrics["evaluation"] = evaluate.evaluate(model, dataset, nll_samples=samples)
    write_metrics(entry, metrics)
    cards.entry_card(entry, recipe.to_dict(), metrics)
    cards.zoo_table(os.path.dirname(os.path.abspath(entry)))
    return metrics


def write_figures(folder, recipe, model, dataset, history=None, snapshots=None):
    """Draws every figure the recipe asks for into `folder`."""
    wanted = recipe.outputs.figures
    os.makedirs(folder, exist_ok=True)
    name, n = recipe.name, recipe.outputs.n_examples
    x, y = dataset.x_test[:n], dataset.y_test[:n] if dataset.y_test is not None else None
    labels = y if model.needs_labels else None

    def path(figure):
        return os.path.join(folder, f"{figure}.png")

    if "reconstructions" in wanted and snapshots and snapshots.reconstructions:
        taken = snapshots.reconstructions
        rows = [("input", x)] + [(f"epoch {e}", taken[e]) for e in sorted(taken)]
        figures.image_rows(rows, path("reconstructions"), f"{name}: reconstructions after each epoch shown")
    if "loss" in wanted and history:
        figures.loss_curves(history, path("loss"), f"{name}: loss per epoch")
    if "filters" in wanted:
        first = next(layer for layer in model.encoder.layers if hasattr(layer, "kernel"))
        kernel = keras.ops.convert_to_numpy(first.kernel)
        tile = kernel.shape[:2] if kernel.ndim == 4 else dataset.image_shape[:2]
        figures.filters(kernel, tile, path("filters"), f"{name}: first-layer filters ({first.name})")
    if "latent" in wanted:
        codes = model.encode(dataset.x_test, dataset.y_test if model.needs_labels else None)
        figures.latent_scatter(codes, dataset.y_test, path("latent"), f"{name}: test codes by digit")
    if "denoising" in wanted:
        noisy = model.corrupt(x)
        rows = [("input", x), ("noisy", noisy), ("output", model.reconstruct(noisy, labels))]
        figures.image_rows(rows, path("denoising"), f"{name}: input, noisy input, output")
    if "samples" in wanted:
        images = model.generate(digits=list(range(model.num_classes)) * 4, seed=0) if model.needs_labels \
            else model.generate(40, seed=0)
        rows = [("", images[i : i + 10]) for i in range(0, len(images), 10)]
        figures.image_rows(rows, path("samples"), f"{name}: samples from the prior")
    if "interpolation" in wanted and snapshots and snapshots.interpolations:
        walks = snapshots.interpolations
        rows = [(f"epoch {e}", walks[e]) for e in sorted(walks)]
        figures.image_rows(rows, path("interpolation"), f"{name}: latent interpolation after each epoch shown")
    if "manifold" in wanted:
        decode = (lambda z: model.decode(z, [0] * len(z))) if model.needs_labels else model.decode
        figures.manifold(decode, path("manifold"), f"{name}: decoded latent grid")


def _tensorflow_available():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None



