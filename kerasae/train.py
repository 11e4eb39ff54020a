"""Training a recipe: data -> model -> fit -> evaluate -> zoo entry."""

import contextlib
import csv
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time

import keras
import numpy as np

from kerasae import backend, builder, cards, evaluate, figures, zoo
from kerasae import data as data_module
from kerasae import recipe as recipe_module
from kerasae.errors import DataError, TrainingStopped, ZooError


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
        "hardware": backend.hardware(),
    }


def _final(history, validation=False):
    """Last-epoch values of the training (or validation) terms."""
    return {
        key.removeprefix("val_"): float(values[-1])
        for key, values in history.items() if key.startswith("val_") == validation
    }


class Guard(keras.callbacks.Callback):
    """Ends training after the current step on SIGINT/SIGTERM or a loss that is no longer finite."""

    def __init__(self):
        super().__init__()
        self.signal = None
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = batch + 1
        if self.signal is not None or self.bad_step is not None:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss", 0.0)
        if not math.isfinite(float(loss)) and self.bad_step is None:
            self.bad_step = "validation"


class OneEpoch(keras.callbacks.Callback):
    """Ends `fit` after one epoch: kerasae runs each epoch on its own data order and checkpoints it."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


@contextlib.contextmanager
def _catch_signals(guard):
    """SIGINT and SIGTERM set a flag that `Guard` turns into a clean stop after the current step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        guard.signal = signum

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _epoch_order(seed, epoch, n):
    """The training order of one epoch: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _write_json(path, value):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(temporary, path)


def save_checkpoint(folder, model, epochs_done, history, snapshots, seconds, recipe):
    """Model (with optimizer and random states), progress and snapshots, each file replaced atomically."""
    os.makedirs(folder, exist_ok=True)
    checkpoint = os.path.join(folder, zoo.CHECKPOINT_FILE)
    temporary = os.path.join(folder, f"tmp-{os.getpid()}-{zoo.CHECKPOINT_FILE}")
    model.save(temporary)
    os.replace(temporary, checkpoint)
    arrays = {f"reconstruction_{e}": a for e, a in snapshots.reconstructions.items()}
    arrays |= {f"interpolation_{e}": a for e, a in snapshots.interpolations.items()}
    snapshot_file = os.path.join(folder, zoo.SNAPSHOTS_FILE)
    with open(f"{snapshot_file}.tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(f"{snapshot_file}.tmp", snapshot_file)
    _write_json(os.path.join(folder, zoo.STATE_FILE), {
        "epochs_done": epochs_done, "history": history, "train_seconds": seconds, "recipe": recipe.to_dict(),
    })


def _resume_state(folder, recipe):
    state_file = os.path.join(folder, zoo.STATE_FILE)
    if not os.path.isfile(state_file) or not os.path.isfile(os.path.join(folder, zoo.CHECKPOINT_FILE)):
        raise ZooError(f"--resume: no checkpoint of '{recipe.name}' in {folder}")
    with open(state_file, encoding="utf-8") as f:
        state = json.load(f)
    before, now = state["recipe"], recipe.to_dict()
    changed = sorted(k for k in now if before.get(k) != now[k] and k != "train")
    changed += [f"train.{k}" for k in now["train"] if k != "epochs" and before["train"].get(k) != now["train"][k]]
    if changed:
        raise ZooError(f"--resume: the recipe changed since the checkpoint ({', '.join(changed)}); "
                       "only train.epochs may change")
    return state


def run(recipe, zoo_dir=None, overwrite=False, verbose=None, callbacks=(), resume=False):
    """Trains a validated recipe, checkpointing every epoch, and writes its zoo entry.

    Args:
        recipe: a `Recipe` from `kerasae.recipe.load`.
        zoo_dir: the zoo folder (default: $KERASAE_ZOO, else ./zoo).
        overwrite: replace an existing entry of the same name (and start over
            from any interrupted run's checkpoint).
        verbose: Keras verbosity; default: a progress bar on a terminal,
            one line per epoch otherwise.
        callbacks: extra Keras callbacks for `fit` (timers, custom logging).
        resume: continue from the last checkpoint of an interrupted run.

    Returns:
        (entry folder, metrics dict).

    Raises:
        TrainingStopped: on SIGINT/SIGTERM (after the current step) or a loss
            that is not finite; the last finished epoch's checkpoint is kept.
    """
    zoo.check_free(recipe.name, zoo_dir, overwrite)
    with zoo.claim_run(recipe.name, zoo_dir):
        return _run(recipe, zoo_dir, overwrite, verbose, callbacks, resume)


def _run(recipe, zoo_dir, overwrite, verbose, callbacks, resume):
    folder = zoo.run_path(recipe.name, zoo_dir)
    state = _resume_state(folder, recipe) if resume else None
    if not resume and os.path.exists(folder):
        if os.path.isfile(os.path.join(folder, zoo.STATE_FILE)) and not overwrite:
            raise ZooError(f"an interrupted run of '{recipe.name}' has checkpoints in {folder}; "
                           "pass --resume to continue it or --overwrite to start over")
        shutil.rmtree(folder)

    keras.utils.set_random_seed(recipe.train.seed)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    _check_values(dataset, recipe)
    num_classes = _check_labels(dataset, recipe)
    if state:
        model = keras.saving.load_model(os.path.join(folder, zoo.CHECKPOINT_FILE))
    else:
        model = builder.build(recipe, dataset.image_shape, num_classes=num_classes)
        model.compile(optimizer=builder.optimizer(recipe.train),
                      steps_per_execution=backend.steps_per_execution(recipe.train.steps_per_execution))
    # Conditional families train on (images, labels); the others on images alone.
    labelled = model.needs_labels

    def split(x, y):
        return (x, y) if labelled else (x,)

    outputs, last = recipe.outputs, recipe.train.epochs
    examples = dataset.x_test[: outputs.n_examples]
    example_labels = dataset.y_test[: outputs.n_examples] if labelled else None
    snapshots = Snapshots(examples, example_labels, sorted({e for e in outputs.epochs if e <= last} | {last}))
    history, seconds, first_epoch = {}, 0.0, 0
    if state:
        history, seconds, first_epoch = state["history"], state["train_seconds"], state["epochs_done"]
        with np.load(os.path.join(folder, zoo.SNAPSHOTS_FILE)) as saved:
            for key in saved.files:
                kind, epoch = key.rsplit("_", 1)
                getattr(snapshots, f"{kind}s")[int(epoch)] = saved[key]

    guard = Guard()
    fit_callbacks = [snapshots, guard, OneEpoch(), *callbacks]
    if recipe.loss.kl_warmup_epochs:
        fit_callbacks.append(KLWarmup(recipe.loss.beta, recipe.loss.kl_warmup_epochs))
    if recipe.train.tensorboard:
        fit_callbacks.append(keras.callbacks.TensorBoard(os.path.join(folder, "logs")))
    validation = split(dataset.x_val, dataset.y_val) if len(dataset.x_val) else None
    x, y = dataset.x_train, dataset.y_train
    with _catch_signals(guard):
        for epoch in range(first_epoch, last):
            start = time.perf_counter()
            order = _epoch_order(recipe.train.seed, epoch, len(x))
            logs = model.fit(
                *split(x[order], None if y is None else y[order]), batch_size=recipe.train.batch_size,
                initial_epoch=epoch, epochs=last, validation_data=validation, shuffle=False,
                callbacks=fit_callbacks, verbose=_verbosity() if verbose is None else verbose,
            ).history
            _stop_if_asked(guard, recipe, folder, epoch)
            seconds += time.perf_counter() - start
            for key, values in logs.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            if (epoch + 1) % recipe.train.checkpoint_every_epochs == 0 or epoch + 1 == last:
                save_checkpoint(folder, model, epoch + 1, history, snapshots, seconds, recipe)
    return _write_entry(recipe, zoo_dir, overwrite, model, dataset, history, snapshots, seconds, folder, split)


def _stop_if_asked(guard, recipe, folder, epoch):
    if guard.signal is None and guard.bad_step is None:
        return
    kept = f"the checkpoint after epoch {epoch}" if epoch else "no checkpoint yet (nothing was finished)"
    if guard.bad_step is not None:
        raise TrainingStopped(
            f"the loss of '{recipe.name}' is no longer finite in epoch {epoch + 1}, step {guard.bad_step}; "
            f"{kept} is kept in {folder}. Lower train.learning_rate, then resume with --resume "
            "(only train.epochs may change) or start over with --overwrite"
        )
    name = signal.Signals(guard.signal).name
    raise TrainingStopped(
        f"{name}: stopped '{recipe.name}' during epoch {epoch + 1}; {kept} is kept in {folder}. "
        f"Resume with: kerasae train <recipe> --resume",
        exit_code=128 + guard.signal,
    )


def _write_entry(recipe, zoo_dir, overwrite, model, dataset, history, snapshots, seconds, folder, split):
    outputs = recipe.outputs
    with zoo.staging(recipe.name, zoo_dir) as stage:
        test = model.evaluate(*split(dataset.x_test, dataset.y_test), batch_size=recipe.train.batch_size,
                              verbose=0, return_dict=True)
        metrics = {
            "name": recipe.name,
            "family": recipe.model.family,
            "latent_dim": recipe.model.latent_dim,
            "units": "nats per image" if recipe.loss.type != "mse" else "1/2 sum of squared errors per image",
            "train": _final(history),
            "validation": _final(history, validation=True),
            "test": {k: float(v) for k, v in test.items()},
            "epochs": recipe.train.epochs,
            "train_seconds": round(seconds, 2),
            "data": dataset.record,
            "versions": versions(),
        }
        # Saved before evaluating, so that `kerasae eval` on the entry starts from the same
        # random state and reproduces these numbers.
        zoo.save_model(model, os.path.join(stage, zoo.MODEL_FILE))
        zoo.write_check(stage, model, dataset.x_test, dataset.y_test)
        metrics["evaluation"] = evaluate.evaluate(model, dataset, nll_samples=outputs.nll_samples)
        recipe_module.dump(recipe, os.path.join(stage, zoo.RECIPE_FILE))
        write_metrics(stage, metrics)
        write_history(os.path.join(stage, zoo.HISTORY_FILE), history)
        write_figures(os.path.join(stage, zoo.FIGURES_DIR), recipe, model, dataset, history, snapshots)
        cards.entry_card(stage, recipe.to_dict(), metrics)
        if outputs.export_saved_model and _tensorflow_available():
            backend.export("tf_saved_model", os.path.join(stage, zoo.MODEL_FILE), os.path.join(stage, zoo.SAVED_MODEL_DIR))
        final = zoo.commit(stage, recipe.name, zoo_dir, overwrite)
    shutil.rmtree(folder, ignore_errors=True)
    cards.zoo_table(zoo_dir)
    return final, metrics


def write_history(path, history):
    """history.csv: one row per finished epoch (an interrupted epoch is not one)."""
    keys = sorted(history)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history.get("loss", []))):
            writer.writerow([epoch, *(history[k][epoch] for k in keys)])


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



