"""The JAX backend: its `Trainer` and random draws.

Laid out as Keras's `keras/src/backend/jax/trainer.py`: the model's `compute_losses` runs
statelessly (variables in, new values out) so that `jax.value_and_grad` differentiates it, and
`steps_per_execution` steps run as one `lax.scan`.
"""

import contextlib
import math
import os

import jax
import keras
import numpy as np

from kerasae.backend import private
from kerasae.backend.common import (  # noqa: F401
    LossTracking,
    array_batches,
    array_feed,
    sigmoid_cross_entropy,
    split_same_shape,
    take_group,
    variable_numpy,
)
from kerasae.backend.jax_conv import conv, conv_transpose  # noqa: F401 -- this backend's convolutions

TRAIN_FUNCTION = "keras.Model.train_function (replaced by make_train_function)"

# XLA's compiled programs, kept on disk between runs (JAX's persistent compilation cache): a run
# on JAX compiles a few hundred programs (its steps, predict, each op called outside them), most
# of a small recipe's run on a CPU; a second run of the same recipe, or `kerasae serve` on the
# entries it trained, reads them back. $KERASAE_JAX_CACHE names the folder, or "off"; a cache set
# through JAX's own settings (JAX_COMPILATION_CACHE_DIR) is left as it is.
JAX_CACHE_ENV = "KERASAE_JAX_CACHE"
# Past this, the oldest programs go when a process starts, down to 3/4 of it. (Not JAX's own
# `jax_compilation_cache_max_size`: it lists and reads the whole folder at every program it
# writes, which made the JAX test suite take 1,448 s instead of 782 s.)
JAX_CACHE_BYTES = 2**30


def _cache_folder(jax_folder):
    """The folder for compiled programs; None where JAX was given its own (`jax_folder`), where
    $KERASAE_JAX_CACHE is "off", or where the folder cannot be written (a read-only home: then
    every run compiles, as without a cache)."""
    chosen = os.environ.get(JAX_CACHE_ENV)
    if jax_folder is not None or (chosen and chosen.lower() == "off"):
        return None
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = chosen or os.path.join(home, "kerasae", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _use_compilation_cache():
    folder = _cache_folder(jax.config.jax_compilation_cache_dir)
    if folder is None:
        return
    with contextlib.suppress(OSError):  # (another process pruning at the same time)
        _prune(folder, JAX_CACHE_BYTES)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # JAX's default: only >= 1 s


def _prune(folder, most):
    """Deletes the oldest files of `folder` until they hold 3/4 of `most` bytes, if they hold more."""
    entries = [entry for entry in os.scandir(folder) if entry.is_file()]
    files = [(entry.stat().st_mtime, entry.stat().st_size, entry.path) for entry in entries]
    held = sum(size for _, size, _ in files)
    if held <= most:
        return
    for _, size, path in sorted(files):
        if held <= most * 3 // 4:
            break
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        held -= size


_use_compilation_cache()


def random(kind, shape, dtype, seed_generator):
    """`keras.random.normal` or `.uniform` (kind) drawn from a layer's generator."""
    return getattr(keras.random, kind)(shape, dtype=dtype, seed=seed_generator)


def coarse_uniform(shape, dtype, seed_generator):
    """Uniform on [0, 1) in steps of 2^-16 for `u < p` draws (see `kerasae.backend`): two draws
    from each 32 random bits, where threefry costs in proportion to the bits."""
    n = math.prod(shape)
    words = jax.random.bits(seed_generator.next(), ((n + 1) // 2,), "uint32")
    halves = jax.numpy.concatenate([words & 0xFFFF, words >> 16])[:n]
    return (halves.astype(dtype) * (1.0 / 65536)).reshape(shape)


# The smallest padded batch: a call on 1 to 16 items is one program.
SMALLEST_PADDED_BATCH = 16


def padded_rows(n, batch_size):
    """Rows n inputs are padded to before a call outside training, fed `batch_size` at a time.

    Every new input shape is a new XLA program to compile (0.5-2 s for a small conv network on a
    CPU, against milliseconds to run it), and outside training the number of items changes from
    call to call: the figures' few examples, a check's 32 digits, a test set's last batch, a web
    page's one code. A partial batch is padded to the next power of two (16 at least, `batch_size`
    at most), so that calls on 1 to 16, 17 to 32, ... items share one program; whole batches are
    left as they are. The padded rows are zeros and their outputs are dropped.
    """
    whole, rest = divmod(n, batch_size)
    if not rest:
        return n
    return whole * batch_size + min(batch_size, max(SMALLEST_PADDED_BATCH, 1 << (rest - 1).bit_length()))


def hardware():
    """The accelerators JAX sees, else the CPU's cores, in words."""
    accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    return f"{len(accelerators)} x {accelerators[0]}" if accelerators else f"CPU, {os.cpu_count()} cores"


def _stateless(variables, values, fn):
    """Runs fn() with `variables` read from `values`; returns (result, new values)."""
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
        result = fn()
    new_values = []
    for variable, value in zip(variables, values):
        current = scope.get_current_value(variable)
        new_values.append(value if current is None else current)
    return result, new_values


class Trainer(LossTracking):
    """`train_step` / `test_step` of a kerasae model on JAX (mixed into `Autoencoder`)."""

    def _losses_and_state(self, trainable, non_trainable, x, y, training, optimizer_values=None):
        variables = self.trainable_variables + self.non_trainable_variables
        losses, values = _stateless(
            variables,
            list(trainable) + list(non_trainable),
            lambda: self.compute_losses(x, y, training=training),
        )
        objective = losses["loss"]
        if optimizer_values is not None:  # mixed_float16's loss scale (a variable of the optimizer); else as is
            objective, _ = _stateless(
                self.optimizer.variables, optimizer_values, lambda: self.optimizer.scale_loss(objective)
            )
        # Seed generator states and other non-trainable updates come back as state.
        return objective, (losses, values[len(trainable) :])

    def _update_metrics(self, metrics_values, losses):
        return _stateless(self.metrics_variables, metrics_values, lambda: self.update_loss_metrics(losses))

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y = self._data(data)
        grad_fn = jax.value_and_grad(self._losses_and_state, has_aux=True)
        (_, (losses, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y, True, optimizer_values)
        trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, grads, trainable)
        logs, metrics_values = self._update_metrics(metrics_values, losses)
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        x, y = self._data(data)
        _, (losses, non_trainable) = self._losses_and_state(trainable, non_trainable, x, y, False)
        logs, metrics_values = self._update_metrics(metrics_values, losses)
        return logs, (trainable, non_trainable, metrics_values)

    def make_train_function(self, force=False):
        """`steps_per_execution` steps in one compiled call: Keras's JAX trainer calls its
        compiled step once per batch from Python, whose dispatch costs a small model as much
        as the step itself; here groups of batches of one shape run as a `lax.scan` over the stacked
        batches, and only a batch of another size (an epoch's last) takes a single step."""
        if self.train_function is not None and not force:
            return
        super().make_train_function(force=True)
        steps = self.steps_per_execution
        if steps == 1 or self.run_eagerly or not self.jit_compile or keras.distribution.distribution():
            return  # sharded batches (keras.distribution) keep Keras's own loop
        if not private.available(TRAIN_FUNCTION):
            return
        single = self.train_function

        def scan_steps(state, batches):
            state, logs = jax.lax.scan(lambda s, batch: self.train_step(s, batch)[::-1], state, batches)
            return jax.tree.map(lambda value: value[-1], logs), state

        scanned = jax.jit(scan_steps, donate_argnums=0)
        ahead = []  # (iterator, its next group): taken while the last call computes

        def train_function(state, iterator):
            # (A group taken from another iterator is of a `fit` that stopped early: dropped.)
            if ahead and ahead[0][0] is iterator:
                group, stacked = ahead.pop()[1]
            else:
                group, stacked = take_group(iterator, steps, np.stack)
            ahead.clear()
            if stacked:
                logs, state = scanned(state, group)
                # JAX returns before the call finishes: stack the next group meanwhile, but
                # queue no more calls than that (each holds its batches in memory).
                ahead.append((iterator, take_group(iterator, steps, np.stack)))
                jax.block_until_ready(logs)
                return logs, state
            # A short group (an epoch's end, or an epoch shorter than a group): its full batches
            # as one shorter scan (compiled once per length), the others step by step. Single
            # steps cost ~1.6x a scanned step of the conv VAE here.
            stacked, rest = split_same_shape(group, np.stack)
            logs = None
            if stacked is not None:
                logs, state = scanned(state, stacked)
            for batch in rest:
                logs, state = single(state, iter([batch]))
            if logs is None:
                raise StopIteration
            return logs, state

        self.train_function = train_function
