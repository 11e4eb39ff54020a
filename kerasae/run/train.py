"""Training a recipe: data -> model -> fit, epoch by epoch -> evaluate -> zoo entry.

`run` trains one epoch per `fit` call, each on its own data order (a function of the seed and
the epoch only), and checkpoints between them: a resumed run sees exactly the batches an
uninterrupted one would. An epoch may also run in segments that end at step checkpoints.
"""

import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import numpy as np

from kerasae import backend, defaults, families, likelihood
from kerasae import data as data_module
from kerasae.errors import DataError, KerasaeError, TrainingStopped, ZooError
from kerasae.run import checkpoint, entry
from kerasae.run.callbacks import Guard, KLWarmup, OneEpoch, RunScope, Snapshots, StepClock
from kerasae.spec import builder
from kerasae.store import zoo


def run(recipe, zoo_dir=None, overwrite=False, verbose=None, callbacks=(), resume=False):
    """Trains a validated recipe, checkpointing every epoch, and writes its zoo entry.

    Args:
        recipe: a `Recipe` from `kerasae.spec.recipe.load`.
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
    state, snapshots = checkpoint.load(folder, recipe) if resume else (checkpoint.RunState(recipe.to_dict()), {})
    if main and not resume:
        _clear_interrupted_run(folder, recipe, overwrite)
    keras.utils.set_random_seed(recipe.train.seed)
    dataset = data_module.load(recipe.data, seed=recipe.train.seed)
    _check_values(dataset, recipe)
    num_classes = _check_labels(dataset, recipe)
    with backend.distributed(recipe.distribute) as replicas:
        loop = Loop(recipe, dataset, replicas, folder, state, num_classes, resume)
        loop.snapshots.restore(snapshots)
        stopped = loop.train(callbacks, verbose)
    try:
        if not backend.is_main_process():
            return None, None  # the main process writes the entry
        state = loop.state
        trained = entry.Trained(loop.model, state.history, loop.snapshots, state.train_seconds, loop.timings)
        with backend.host_local(loop.model):
            written = entry.write(recipe, dataset, trained, zoo_dir, overwrite, stopped)
        shutil.rmtree(folder, ignore_errors=True)  # the run's checkpoints: the entry holds what it made
        return written
    finally:
        backend.barrier("kerasae-entry-written")


def _clear_interrupted_run(folder, recipe, overwrite):
    if not os.path.exists(folder):
        return
    if os.path.isfile(os.path.join(folder, zoo.STATE_FILE)) and not overwrite:
        raise ZooError(
            f"an interrupted run of '{recipe.name}' has checkpoints in {folder}; "
            "pass --resume to continue it or --overwrite to start over (or delete the folder)"
        )
    shutil.rmtree(folder)


class Loop:
    """One training run's loop: the model, its data in batches, its callbacks and its state.

    Args:
        recipe: the validated recipe.
        dataset: its `data.Dataset`.
        replicas: `backend.Replicas` of the run.
        folder: the run's checkpoint folder.
        state: a `checkpoint.RunState` (a fresh one, or an interrupted run's).
        num_classes: labels of a conditional family.
        resume: continue from the checkpoint's model in `folder`.
    """

    def __init__(self, recipe, dataset, replicas, folder, state, num_classes, resume):
        self.recipe, self.replicas, self.folder, self.state = recipe, replicas, folder, state
        train = recipe.train
        if train.batch_size % replicas.count:
            raise KerasaeError(
                f"train.batch_size: {train.batch_size} does not split evenly over "
                f"{replicas.count} replicas (distribute.devices)"
            )
        self.x, self.batch_size = dataset.x_train, train.batch_size
        # Every batch must split evenly over the replicas: the last, short one loses up to
        # (replicas - 1) images when it does not.
        self.usable = len(self.x) - (len(self.x) % self.batch_size) % replicas.count
        self.steps_per_epoch = math.ceil(self.usable / self.batch_size)
        self.model = self._model(dataset, num_classes, resume)
        shown = max(2, recipe.outputs.n_examples)  # an interpolation walks between the first two
        labels = None if dataset.y_test is None else dataset.y_test[:shown]
        epochs = sorted({e for e in recipe.outputs.epochs if e <= train.epochs} | {train.epochs})
        self.snapshots = Snapshots(dataset.x_test[:shown], labels, epochs)
        self.guard, self.one_epoch, self.clock = Guard(), OneEpoch(), StepClock()
        self.timings = {"epoch_seconds": [], "epoch_step_seconds": []}
        self._feed(dataset)

    def _model(self, dataset, num_classes, resume):
        train = self.recipe.train
        jit = backend.jit_compile(
            train.jit_compile, distributed=self.recipe.distribute.strategy != "none", conv=self.recipe.model.conv
        )
        if resume:
            model = checkpoint.load_model(self.folder)
            model.jit_compile = jit  # the checkpoint's compile settings are those of the backend that wrote it
            return model
        model = builder.build(
            self.recipe, dataset.image_shape, num_classes=num_classes, train_size=len(dataset.x_train)
        )
        scale = self.replicas.count if self.recipe.distribute.scale_learning_rate else 1
        steps = backend.steps_per_execution(train.steps_per_execution, self.replicas.count)
        optimizer = builder.optimizer(train, scale, total_steps=train.epochs * self.steps_per_epoch)
        model.compile(optimizer=optimizer, steps_per_execution=steps, jit_compile=jit)
        return model

    def _feed(self, dataset):
        """How batches reach `fit`: `self.batches(rows)` gives its data arguments for rows of the
        training set in order; `self.validation` the validation data (made once)."""
        replicas = self.replicas
        _, y = self.model.inputs_for(dataset.x_train, dataset.y_train)  # labels only where the model trains on them
        val_batch = _validation_batch(self.model, self.batch_size)
        n_val = len(dataset.x_val) - (len(dataset.x_val) % val_batch) % replicas.count
        val_rows = _local_rows(np.arange(n_val), val_batch, replicas)
        local_batch, local_val_batch = self.batch_size // replicas.processes, val_batch // replicas.processes
        x_val, y_val = self.model.inputs_for(dataset.x_val, dataset.y_val)
        streamed = isinstance(self.x, data_module.MappedImages)  # dataset: npy, read batch by batch
        feed = None if streamed else backend.array_feed(self.model, self.x, y, local_batch)
        if streamed:
            self.batches = lambda rows: {"x": data_module.batches(self.x, y, rows, local_batch)}
            validation = data_module.batches(x_val, y_val, val_rows, local_val_batch)
        elif feed:
            self.batches = lambda rows: dict(zip(("x", "steps_per_epoch"), feed(rows)))
            y_rows = None if y_val is None else y_val[val_rows]
            validation = backend.array_batches(x_val[val_rows], y_rows, local_val_batch)
        else:
            self.batches = lambda rows: {
                "x": self.x[rows],
                "y": None if y is None else y[rows],
                "batch_size": local_batch,
            }
            validation = (x_val[val_rows], None if y_val is None else y_val[val_rows])
        self.validation = validation if n_val else None
        self.validation_batch = None if streamed or feed else local_val_batch

    def train(self, callbacks=(), verbose=None):
        """Trains from the state's epoch to the recipe's last; returns why it stopped early (a
        callback set `model.stop_training`: "after epoch 3"), else None.

        Raises:
            TrainingStopped: a signal (checkpointed after the current step) or a loss that is no
                longer finite.
        """
        scoped = [RunScope(callback) for callback in callbacks]
        fit_callbacks = [self.clock, self.snapshots, self.guard, *scoped, self.one_epoch]
        loss = self.recipe.loss
        if loss.kl_warmup_epochs:
            # Up to beta; the β-TCVAE has no beta (its terms carry their own weights): up to 1.
            fit_callbacks.append(KLWarmup(1.0 if loss.beta is None else loss.beta, loss.kl_warmup_epochs))
        if self.recipe.train.tensorboard:
            fit_callbacks.append(keras.callbacks.TensorBoard(os.path.join(self.folder, "logs")))
        self.fit_arguments = {
            "callbacks": fit_callbacks,
            "verbose": _verbosity() if verbose is None else verbose,
            "epochs": self.recipe.train.epochs,
            "shuffle": False,
        }
        stopped = None
        with _catch_signals(self.guard):
            while self.state.epochs_done < self.recipe.train.epochs and not stopped:
                stopped = self.epoch()
        last_logs = {key: values[-1] for key, values in self.state.history.items()}
        for callback in scoped:
            callback.end(last_logs)
        return stopped

    def epoch(self):
        """Trains the state's epoch to its end (or to a callback's stop); checkpoints it."""
        state, started = self.state, time.perf_counter()
        epoch, steps = state.epochs_done, self.steps_per_epoch
        order = _epoch_order(self.recipe.train.seed, epoch, len(self.x))[: self.usable]
        while state.steps_done < steps:
            if self.segment(order) and self.guard.signal is None:  # a callback ended the run
                if state.steps_done < steps:
                    return f"after step {state.steps_done} of epoch {epoch + 1}"
                state.finish_epoch()
                return f"after epoch {epoch + 1}"
            if state.steps_done < steps:  # a step checkpoint, or a signal mid-epoch
                checkpoint.save(self.folder, self.model, state, self.snapshots)
                _stop_if_asked(self.guard, self.recipe, self.folder, state)
        state.finish_epoch()
        every = self.recipe.train.checkpoint_every_epochs
        if state.epochs_done % every == 0 or state.epochs_done == self.recipe.train.epochs or self.guard.signal:
            checkpoint.save(self.folder, self.model, state, self.snapshots)
        self.timings["epoch_seconds"].append(round(time.perf_counter() - started, 4))
        self.timings["epoch_step_seconds"].append(round(self.clock.take(), 4))
        _stop_if_asked(self.guard, self.recipe, self.folder, state)
        return None

    def segment(self, order):
        """One `fit` over the epoch's steps up to the next step checkpoint (or the epoch's end);
        only the segment that ends the epoch validates. True when a callback asked to stop."""
        state, steps, every = self.state, self.steps_per_epoch, self.recipe.train.checkpoint_every_steps
        step = state.steps_done
        global_step = state.epochs_done * steps + step
        end = min(steps, step + (every - global_step % every)) if every else steps
        rows = _local_rows(order[step * self.batch_size : end * self.batch_size], self.batch_size, self.replicas)
        start = time.perf_counter()
        logs = self.model.fit(
            **self.batches(rows),
            **self.fit_arguments,
            initial_epoch=state.epochs_done,
            validation_data=self.validation if end == steps else None,
            validation_batch_size=self.validation_batch,
        ).history
        state.train_seconds += time.perf_counter() - start
        if self.guard.bad_step is not None:
            if isinstance(self.guard.bad_step, int):
                self.guard.bad_step += step  # counted from the epoch's start
            _stop_if_asked(self.guard, self.recipe, self.folder, state)
        # Keras reports the last step of a multi-step call as if the call were full.
        taken = min(self.guard.steps, end - step)
        state.partial.add(logs, taken)
        state.steps_done += taken
        return self.one_epoch.asked


def _epoch_order(seed, epoch, n):
    """The training order of one epoch: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(n)


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
    needs_unit_range = recipe.loss.type == "bce" or recipe.loss.likelihood in ("bernoulli", "logistic")
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


VALIDATION_IMAGES = defaults.PREDICT_BATCH


def _validation_batch(model, batch_size):
    """Images per validation batch: up to ~1024 within the decoding budget, a multiple of the
    training batch (so it splits over replicas as that does). Validation is a forward pass, and
    a call's overhead dominates small ones: 47 calls of 128 images took 10% of an epoch of the
    seed's VAE on TensorFlow."""
    images = likelihood.images_per_batch(model, 1, most=VALIDATION_IMAGES)
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


def _stop_if_asked(guard, recipe, folder, state):
    """Raises `TrainingStopped` once a signal or a bad loss was seen; `state` says how far the
    run got (and was checkpointed, for a signal)."""
    if guard.signal is None and guard.bad_step is None:
        return
    epoch, step = state.epochs_done, state.steps_done
    if guard.bad_step is not None:
        raise TrainingStopped(
            f"the loss of '{recipe.name}' is no longer finite in epoch {epoch + 1}, step {guard.bad_step}; "
            f"{checkpoint.describe(folder)} is kept in {folder}. Lower train.learning_rate, then resume with "
            "--resume (only train.epochs may change) or start over with --overwrite"
        )
    name = signal.Signals(guard.signal).name
    where = f"after step {step} of epoch {epoch + 1}" if step else f"after epoch {epoch}"
    raise TrainingStopped(
        f"{name}: stopped '{recipe.name}' {where}; its checkpoint is in {folder}. "
        f"Resume with: kerasae train <recipe> --resume",
        exit_code=128 + guard.signal,
    )
