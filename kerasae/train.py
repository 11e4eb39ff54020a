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
import tempfile
import threading
import time

import keras
import numpy as np

from kerasae import backend, builder, cards, evaluate, export, families, figures, zoo
from kerasae import data as data_module
from kerasae import recipe as recipe_module
from kerasae.backend import private
from kerasae.errors import DataError, KerasaeError, TrainingStopped, ZooError


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
        with backend.host_local(self.model):
            self.reconstructions[epoch + 1] = self.model.reconstruct(self.images, self.labels)
            if self.model.variational and len(self.images) >= 2:
                extra = {"labels": tuple(self.labels[:2])} if self.model.needs_labels else {}
                self.interpolations[epoch + 1] = self.model.interpolate(
                    self.images[0], self.images[1], self.steps, **extra
                )


class KLWarmup(keras.callbacks.Callback):
    """Raises a VAE's `kl_weight` linearly from 0 to `beta` over the first epochs."""

    def __init__(self, beta, epochs):
        super().__init__()
        self.beta = beta
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.beta * min(1.0, epoch / self.epochs))


def _check_labels(dataset, recipe):
    if not families.get(recipe.model.family).conditional:
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
            if isinstance(x, data_module.MappedImages):
                continue  # checked chunk by chunk when it was opened
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
        for key, values in history.items()
        if key.startswith("val_") == validation
    }


class Guard(keras.callbacks.Callback):
    """Ends training after the current step on SIGINT/SIGTERM or a loss that is no longer finite."""

    def __init__(self):
        super().__init__()
        self.signal = None
        self.bad_step = None
        self.steps = 0  # steps finished in the current `fit`

    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = batch + 1
        # A signal after the last step lets the epoch end normally, validation included; without
        # the hook that skips validation in a stopped `fit`, so does a signal at any step.
        last = self.params.get("steps") is not None and batch + 1 >= self.params["steps"]
        mid_epoch = not last and private.available("keras.Model._should_eval")
        if self.bad_step is not None or (self.signal is not None and mid_epoch):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss", 0.0)
        if not math.isfinite(float(loss)) and self.bad_step is None:
            self.bad_step = "validation"


class StepClock(keras.callbacks.Callback):
    """Seconds spent inside training steps: from the first step of each `fit` to its last.

    An epoch's wall-clock time minus these is what it spends outside the steps
    (validation, checkpoints, snapshots, the data's order): metrics.json keeps both.
    """

    def __init__(self):
        super().__init__()
        self.seconds, self.first, self.last = 0.0, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    def on_train_end(self, logs=None):
        if self.first is not None and self.last is not None:
            self.seconds += self.last - self.first
        self.first = self.last = None

    def take(self):
        """The seconds counted since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class OneEpoch(keras.callbacks.Callback):
    """Ends `fit` after one epoch: kerasae runs each epoch on its own data order and checkpoints it.

    Runs after every other callback, so `asked` tells whether one of them (EarlyStopping, a time
    budget) had already set `model.stop_training`: that ends the whole run.
    """

    asked = False

    def on_epoch_end(self, epoch, logs=None):
        self.asked = bool(self.model.stop_training)
        self.model.stop_training = True


class RunScope(keras.callbacks.Callback):
    """Shows a caller's callback the whole run as one `fit`.

    kerasae calls `fit` once per epoch (or checkpoint segment); Keras callbacks such as
    EarlyStopping reset their state in `on_train_begin`, so the wrapped callback gets
    `on_train_begin` once, at the start, and `on_train_end` from `end()`, when the run ends.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback, self.started = callback, False
        for hook in (
            "epoch_begin",
            "epoch_end",
            "train_batch_begin",
            "train_batch_end",
            "test_begin",
            "test_end",
            "test_batch_begin",
            "test_batch_end",
        ):
            setattr(self, f"on_{hook}", getattr(callback, f"on_{hook}"))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs=None):
        if not self.started:
            self.started = True
            self.callback.on_train_begin(logs)

    def end(self, logs=None):
        self.callback.on_train_end(logs)


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


def save_checkpoint(folder, model, epochs_done, history, snapshots, seconds, recipe, steps_done=0, partial=None):
    """Model (with optimizer and random states), progress and snapshots, each file replaced atomically.

    `steps_done` > 0 marks a checkpoint inside epoch `epochs_done + 1`, with the
    logged means of its finished steps in `partial`. Of several hosts, only the
    main process writes.
    """
    if not backend.is_main_process():
        return
    with backend.host_local(model):
        _save_checkpoint(folder, model, epochs_done, history, snapshots, seconds, recipe, steps_done, partial)


def _save_checkpoint(folder, model, epochs_done, history, snapshots, seconds, recipe, steps_done, partial):
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
    _write_json(
        os.path.join(folder, zoo.STATE_FILE),
        {
            "epochs_done": epochs_done,
            "steps_done": steps_done,
            "partial": partial.to_state() if partial else None,
            "history": history,
            "train_seconds": seconds,
            "recipe": recipe.to_dict(),
        },
    )


# What a resumed run may change: how long it trains, how often it checkpoints, and (in sections
# `outputs` and `distribute`, not compared) what it writes and on how many devices.
RESUMABLE_CHANGES = ("epochs", "checkpoint_every_epochs", "checkpoint_every_steps", "jit_compile")


def _resume_state(folder, recipe):
    state_file = os.path.join(folder, zoo.STATE_FILE)
    if not os.path.isfile(state_file) or not os.path.isfile(os.path.join(folder, zoo.CHECKPOINT_FILE)):
        raise ZooError(f"--resume: no checkpoint of '{recipe.name}' in {folder}")
    with open(state_file, encoding="utf-8") as f:
        state = json.load(f)
    before, now = state["recipe"], recipe.to_dict()
    changed = sorted(k for k in now if before.get(k) != now[k] and k not in ("train", "outputs", "distribute"))
    changed += [
        f"train.{k}" for k in now["train"] if k not in RESUMABLE_CHANGES and before["train"].get(k) != now["train"][k]
    ]
    schedule = before["train"].get("learning_rate_schedule", "constant")
    if schedule != "constant" and before["train"]["epochs"] != now["train"]["epochs"]:
        # The schedule's length was fixed when the optimizer was built.
        changed.append("train.epochs (the learning-rate schedule spans the original epochs)")
    if changed:
        raise ZooError(
            f"--resume: the recipe changed since the checkpoint ({', '.join(changed)}); "
            f"only {', '.join(f'train.{k}' for k in RESUMABLE_CHANGES)} may change"
        )
    return state


def run(recipe, zoo_dir=None, overwrite=False, verbose=None, callbacks=(), resume=False):
    """Trains a validated recipe, checkpointing every epoch, and writes its zoo entry.

    Args:
        recipe: a `Recipe` from `kerasae.recipe.load`.
        zoo_dir: the zoo folder (default: $KERASAE_ZOO, else ./zoo).
        overwrite: replace an existing entry of the same name (and start over
            from any interrupted run's checkpoint). Without it, a name the zoo
            holds already trains into its next free version, `<name>-v2`, ...
        verbose: Keras verbosity; default: a progress bar on a terminal,
            one line per epoch otherwise.
        callbacks: extra Keras callbacks (timers, logging, EarlyStopping). They see the
            run as one `fit`: `on_train_begin` at its start, `on_train_end` at its end; one
            that sets `model.stop_training` ends the run, and the entry is written.
        resume: continue from the last checkpoint of an interrupted run.

    Returns:
        (entry folder, metrics dict); (None, None) on the other processes of a
        multi-host run, where the main one (JAX process 0, the TensorFlow chief)
        writes the entry.

    Raises:
        TrainingStopped: on SIGINT/SIGTERM (after the current step, checkpointed
            there) or a loss that is not finite (the last good checkpoint is kept).
    """
    # A name the zoo holds already trains into its next version: an entry is never replaced silently.
    recipe = recipe.model_copy(update={"name": zoo.version_name(recipe.name, zoo_dir, overwrite)})
    if not backend.writes_entry(recipe.distribute):  # another process owns the run's folder and entry
        if backend.NAME != "tensorflow":
            return _run(recipe, zoo_dir, overwrite, verbose, callbacks, resume, main=False)
        # A TensorFlow worker runs every step the chief runs, evaluation included, so it
        # writes its own copy of everything into a scratch zoo that is thrown away.
        with tempfile.TemporaryDirectory(prefix="kerasae-worker-") as scratch:
            if resume:
                shutil.copytree(zoo.run_path(recipe.name, zoo_dir), zoo.run_path(recipe.name, scratch))
            _run(recipe, scratch, True, verbose, callbacks, resume)
        return None, None
    with zoo.claim_run(recipe.name, zoo_dir):
        return _run(recipe, zoo_dir, overwrite, verbose, callbacks, resume)


def _run(recipe, zoo_dir, overwrite, verbose, callbacks, resume, main=True):
    folder = zoo.run_path(recipe.name, zoo_dir)
    state = _resume_state(folder, recipe) if resume else None
    if main and not resume and os.path.exists(folder):
        if os.path.isfile(os.path.join(folder, zoo.STATE_FILE)) and not overwrite:
            raise ZooError(
                f"an interrupted run of '{recipe.name}' has checkpoints in {folder}; "
                "pass --resume to continue it or --overwrite to start over (or delete the folder)"
            )
        shutil.rmtree(folder)

    keras.utils.set_random_seed(recipe.train.seed)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    _check_values(dataset, recipe)
    num_classes = _check_labels(dataset, recipe)
    last = recipe.train.epochs
    with backend.distributed(recipe.distribute) as replicas:
        if recipe.train.batch_size % replicas.count:
            raise KerasaeError(
                f"train.batch_size: {recipe.train.batch_size} does not split evenly over "
                f"{replicas.count} replicas (distribute.devices)"
            )
        x, y = dataset.x_train, dataset.y_train
        batch_size = recipe.train.batch_size
        # Every batch must split evenly over the replicas: the last, short one loses up to
        # (replicas - 1) images when it does not.
        usable = len(x) - (len(x) % batch_size) % replicas.count
        steps_per_epoch = math.ceil(usable / batch_size)
        jit = backend.jit_compile(recipe.train.jit_compile, distributed=recipe.distribute.strategy != "none")
        if state:
            model = keras.saving.load_model(os.path.join(folder, zoo.CHECKPOINT_FILE))
            # The checkpoint's compile settings are those of the backend that wrote it.
            model.jit_compile = jit
        else:
            model = builder.build(recipe, dataset.image_shape, num_classes=num_classes)
            scale = replicas.count if recipe.distribute.scale_learning_rate else 1
            steps = backend.steps_per_execution(recipe.train.steps_per_execution, replicas.count)
            optimizer = builder.optimizer(recipe.train, scale, total_steps=last * steps_per_epoch)
            model.compile(optimizer=optimizer, steps_per_execution=steps, jit_compile=jit)
        # Conditional families train on (images, labels); the others on images alone.
        labelled = model.needs_labels

        def split(x, y):
            return (x, y) if labelled else (x,)

        outputs = recipe.outputs
        shown = max(2, outputs.n_examples)  # an interpolation walks between the first two
        examples = dataset.x_test[:shown]
        example_labels = dataset.y_test[:shown] if labelled else None
        snapshots = Snapshots(examples, example_labels, sorted({e for e in outputs.epochs if e <= last} | {last}))
        history, seconds, first_epoch, stopped = {}, 0.0, 0, None
        if state:
            history, seconds, first_epoch = state["history"], state["train_seconds"], state["epochs_done"]
            with np.load(os.path.join(folder, zoo.SNAPSHOTS_FILE)) as saved:
                for key in saved.files:
                    kind, epoch = key.rsplit("_", 1)
                    getattr(snapshots, f"{kind}s")[int(epoch)] = saved[key]

        guard, one_epoch, clock = Guard(), OneEpoch(), StepClock()
        scoped = [RunScope(callback) for callback in callbacks]
        fit_callbacks = [clock, snapshots, guard, *scoped, one_epoch]
        if recipe.loss.kl_warmup_epochs:
            fit_callbacks.append(KLWarmup(recipe.loss.beta, recipe.loss.kl_warmup_epochs))
        if recipe.train.tensorboard:
            fit_callbacks.append(keras.callbacks.TensorBoard(os.path.join(folder, "logs")))
        val_batch = _validation_batch(model, batch_size)
        n_val = len(dataset.x_val) - (len(dataset.x_val) % val_batch) % replicas.count
        val_rows = _local_rows(np.arange(n_val), val_batch, replicas)
        local_batch, local_val_batch = batch_size // replicas.processes, val_batch // replicas.processes
        streamed = isinstance(x, data_module.MappedImages)  # dataset: npy, read batch by batch
        feed = None if streamed else backend.array_feed(x, y if labelled else None, local_batch)
        if streamed:
            validation = data_module.batches(dataset.x_val, dataset.y_val, val_rows, local_val_batch)
        elif feed:
            y_val = dataset.y_val[val_rows] if labelled else None
            validation = backend.array_batches(dataset.x_val[val_rows], y_val, local_val_batch)
        else:
            validation = split(dataset.x_val[val_rows], None if dataset.y_val is None else dataset.y_val[val_rows])
        validation = validation if n_val else None
        every = recipe.train.checkpoint_every_steps
        step = state.get("steps_done", 0) if state else 0  # steps already taken in the first epoch
        partial = Partial.from_state(state)
        timings = {"epoch_seconds": [], "epoch_step_seconds": []}
        with _catch_signals(guard):
            for epoch in range(first_epoch, last):
                epoch_start = time.perf_counter()
                order = _epoch_order(recipe.train.seed, epoch, len(x))[:usable]
                while step < steps_per_epoch:
                    # An epoch runs in segments that end at the step checkpoints; only the segment
                    # that ends the epoch validates. Batches are those of the whole epoch's order.
                    global_step = epoch * steps_per_epoch + step
                    end = min(steps_per_epoch, step + (every - global_step % every)) if every else steps_per_epoch
                    rows = _local_rows(order[step * batch_size : end * batch_size], batch_size, replicas)
                    start = time.perf_counter()
                    data = None  # the last segment's copy goes first: a fresh one would fault in new pages
                    if streamed:
                        data = {"x": data_module.batches(x, y, rows, local_batch)}
                    elif feed:
                        data = dict(zip(("x", "steps_per_epoch"), feed(rows)))
                    else:
                        data = dict(
                            zip(("x", "y"), split(x[rows], None if y is None else y[rows])), batch_size=local_batch
                        )
                    logs = model.fit(
                        **data,
                        initial_epoch=epoch,
                        epochs=last,
                        validation_data=validation if end == steps_per_epoch else None,
                        validation_batch_size=None if streamed or feed else local_val_batch,
                        shuffle=False,
                        callbacks=fit_callbacks,
                        verbose=_verbosity() if verbose is None else verbose,
                    ).history
                    seconds += time.perf_counter() - start
                    if guard.bad_step is not None:
                        if isinstance(guard.bad_step, int):
                            guard.bad_step += step  # counted from the epoch's start
                        _stop_if_asked(guard, recipe, folder, epoch, step)
                    # Keras reports the last step of a multi-step call as if the call were full.
                    taken = min(guard.steps, end - step)
                    partial.add(logs, taken)
                    step += taken
                    if one_epoch.asked and guard.signal is None:  # a callback ended the run
                        stopped = (
                            f"after step {step} of epoch {epoch + 1}"
                            if step < steps_per_epoch
                            else f"after epoch {epoch + 1}"
                        )
                        break
                    if step < steps_per_epoch:  # a step checkpoint, or a signal mid-epoch
                        save_checkpoint(folder, model, epoch, history, snapshots, seconds, recipe, step, partial)
                        _stop_if_asked(guard, recipe, folder, epoch, step)
                if step == steps_per_epoch:  # a finished epoch (one cut short by a callback is not one)
                    for key, value in partial.means().items():
                        history.setdefault(key, []).append(value)
                if stopped:  # (a bad loss or a signal raised above)
                    break
                step, partial = 0, Partial()
                if (epoch + 1) % recipe.train.checkpoint_every_epochs == 0 or epoch + 1 == last or guard.signal:
                    save_checkpoint(folder, model, epoch + 1, history, snapshots, seconds, recipe)
                timings["epoch_seconds"].append(round(time.perf_counter() - epoch_start, 4))
                timings["epoch_step_seconds"].append(round(clock.take(), 4))
                _stop_if_asked(guard, recipe, folder, epoch + 1, 0)
        last_logs = {key: values[-1] for key, values in history.items()}
        for callback in scoped:
            callback.end(last_logs)
    try:
        if not backend.is_main_process():
            return None, None  # the main process writes the entry
        with backend.host_local(model):
            return _write_entry(
                recipe, zoo_dir, overwrite, model, dataset, history, snapshots, seconds, folder, split, stopped, timings
            )
    finally:
        backend.barrier("kerasae-entry-written")


class Partial:
    """The logged means of an epoch's training segments, combined by their numbers of steps.

    Keras logs per-step means, so the weighted mean of the segments' means is
    the mean an unbroken epoch logs. Validation terms come from the last segment.
    """

    def __init__(self, sums=None, steps=0, validation=None):
        self.sums, self.steps, self.validation = dict(sums or {}), steps, dict(validation or {})

    @classmethod
    def from_state(cls, state):
        saved = (state or {}).get("partial") or {}
        return cls(saved.get("sums"), saved.get("steps", 0))

    def add(self, logs, steps):
        for key, values in logs.items():
            if key.startswith("val_"):
                self.validation[key] = float(values[-1])
            elif steps:
                self.sums[key] = self.sums.get(key, 0.0) + float(values[-1]) * steps
        self.steps += steps

    def means(self):
        return {k: v / self.steps for k, v in self.sums.items()} | self.validation

    def to_state(self):
        return {"sums": self.sums, "steps": self.steps}


VALIDATION_IMAGES = 1024


def _validation_batch(model, batch_size):
    """Images per validation batch: up to ~1024 within the decoding budget, a multiple of the
    training batch (so it splits over replicas as that does). Validation is a forward pass, and
    a call's overhead dominates small ones: 47 calls of 128 images took 10% of an epoch of the
    seed's VAE on TensorFlow."""
    images = evaluate.images_per_batch(model, 1, most=VALIDATION_IMAGES)
    return batch_size * max(1, images // batch_size)


def _local_rows(rows, batch_size, replicas):
    """This process's part of each global batch: on several hosts, each feeds its slice of
    every batch (JAX assembles the global batch from the processes' local data)."""
    if replicas.processes == 1:
        return rows
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        local = len(batch) // replicas.processes  # a short last batch splits evenly too
        parts.append(batch[replicas.process_id * local : (replicas.process_id + 1) * local])
    return np.concatenate(parts)


def _stop_if_asked(guard, recipe, folder, epoch, step):
    """Raises `TrainingStopped` once a signal or a bad loss was seen.

    `epoch` epochs and `step` steps of the next were finished (and checkpointed,
    for a signal).
    """
    if guard.signal is None and guard.bad_step is None:
        return
    if guard.bad_step is not None:
        kept = _checkpoint_kept(folder)
        raise TrainingStopped(
            f"the loss of '{recipe.name}' is no longer finite in epoch {epoch + 1}, step {guard.bad_step}; "
            f"{kept} is kept in {folder}. Lower train.learning_rate, then resume with --resume "
            "(only train.epochs may change) or start over with --overwrite"
        )
    name = signal.Signals(guard.signal).name
    where = f"after step {step} of epoch {epoch + 1}" if step else f"after epoch {epoch}"
    raise TrainingStopped(
        f"{name}: stopped '{recipe.name}' {where}; its checkpoint is in {folder}. "
        f"Resume with: kerasae train <recipe> --resume",
        exit_code=128 + guard.signal,
    )


def _checkpoint_kept(folder):
    """Names the last checkpoint in words, for messages."""
    try:
        with open(os.path.join(folder, zoo.STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return "no checkpoint yet (nothing was finished)"
    if state.get("steps_done"):
        return f"the checkpoint after step {state['steps_done']} of epoch {state['epochs_done'] + 1}"
    return f"the checkpoint after epoch {state['epochs_done']}"


def _write_entry(
    recipe, zoo_dir, overwrite, model, dataset, history, snapshots, seconds, folder, split, stopped=None, timings=None
):
    outputs = recipe.outputs
    with zoo.staging(recipe.name, zoo_dir) as stage:
        test = model.evaluate(
            *split(dataset.x_test, dataset.y_test), batch_size=recipe.train.batch_size, verbose=0, return_dict=True
        )
        metrics = {
            "name": recipe.name,
            "family": recipe.model.family,
            "latent_dim": recipe.model.latent_dim,
            "units": "nats per image" if recipe.loss.type != "mse" else "1/2 sum of squared errors per image",
            "train": _final(history),
            "validation": _final(history, validation=True),
            "test": {k: float(v) for k, v in test.items()},
            "epochs": len(history.get("loss", [])),
            "train_seconds": round(seconds, 2),
            # This process's epochs (a resumed run's, since the resume): wall-clock and in-step seconds.
            "timings": timings or {},
            "data": dataset.record,
            "versions": versions(),
        }
        if stopped:
            metrics["stopped_early"] = f"{stopped}: a callback set model.stop_training"
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
            export.export(
                "tf_saved_model", os.path.join(stage, zoo.MODEL_FILE), os.path.join(stage, zoo.SAVED_MODEL_DIR)
            )
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
    if not model.compiled:  # as when it was trained: the random draws of XLA and of TensorFlow's kernels differ
        jit = backend.jit_compile(recipe.train.jit_compile, distributed=recipe.distribute.strategy != "none")
        model.compile(optimizer=builder.optimizer(recipe.train), jit_compile=jit)
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
        rows = [("input", x)] + [(f"epoch {e}", taken[e][:n]) for e in sorted(taken)]
        figures.image_rows(rows, path("reconstructions"), f"{name}: reconstructions after each epoch shown")
    if "loss" in wanted and history:
        figures.loss_curves(history, path("loss"), f"{name}: loss per epoch")
    if "filters" in wanted:
        first = next(layer for layer in model.encoder.layers if hasattr(layer, "kernel"))
        kernel = keras.ops.convert_to_numpy(first.kernel)
        if kernel.ndim == 2:  # a conditional encoder's first layer also reads the one-hot label
            kernel = kernel[: int(np.prod(dataset.image_shape))]
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
        images = (
            model.generate(digits=list(range(model.num_classes)) * 4, seed=0)
            if model.needs_labels
            else model.generate(40, seed=0)
        )
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
