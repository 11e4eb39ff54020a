"""The only package that branches on the Keras backend.

Models write their loss once, with `keras.ops`, in `compute_losses(x, y, training)` returning
a dict whose "loss" entry is minimised. Each backend's module turns that into `train_step` /
`test_step`, as Keras's own per-backend trainers do (`keras/src/backend/<name>/trainer.py`):

- `tensorflow.py`: a GradientTape; `steps_per_execution` steps as one XLA loop; random draws
  with a named algorithm; in-memory arrays as one `tf.data` pipeline per run.
- `jax.py`: a stateless step returning its new state; the steps as one `lax.scan`.
- `torch.py`: `backward()`; Adam's update in one fused kernel; convolutions as `F.conv2d` calls.
- `torch_trace.py`: the training losses traced into a graph of PyTorch operators and replayed.
- `jax_conv.py`: convolutions as one matrix product and a reshuffle, for XLA on a CPU.
- `distribute.py`: data-parallel training on several devices or hosts.
- `private.py`: every private Keras / JAX / PyTorch name used, with its public fallback.

Each backend module defines the same names: `Trainer`, `random`, `coarse_uniform`,
`array_feed`, `array_batches` (None where the trainer slices numpy itself), `hardware`,
`sigmoid_cross_entropy` (a Bernoulli pixel's loss from its logit: PyTorch's fused kernel on torch),
`padded_rows` (the batch a call outside training pads n items to: powers of two on JAX, where each
new shape is a new program to compile; n elsewhere), `variable_numpy` (a variable's value in numpy,
for checkpoints: TensorFlow reads a distributed one first), and
`conv` / `conv_transpose` ("same"-padded 2-D convolutions: on a CPU, JAX's are rewritten in
`jax_conv.py` as convolutions XLA compiles well; PyTorch's call `F.conv2d` on channels-first
views; TensorFlow's are Keras's).
Everything else in kerasae is backend-neutral.
"""

import keras
import numpy as np

from kerasae import defaults
from kerasae.backend import private

NAME = keras.backend.backend()

if NAME != "tensorflow" and private.available("keras.src.utils.module_utils.tensorflow._available"):
    # Keras asks "is TensorFlow installed?" by importing it (in `keras.utils.set_random_seed` and
    # when saving a model), which costs a JAX or torch run ~450 MB and seconds. kerasae needs
    # TensorFlow only in the export subprocess, so on these backends Keras takes its
    # TensorFlow-less paths, as where TensorFlow is not installed. Explicit uses (the
    # TensorBoard callback) still import it.
    from keras.src.utils import module_utils

    if getattr(module_utils.tensorflow, "_available", None) is None:
        module_utils.tensorflow._available = False

if NAME == "tensorflow":
    from kerasae.backend import tensorflow as implementation
elif NAME == "jax":
    from kerasae.backend import jax as implementation
elif NAME == "torch":
    from kerasae.backend import torch as implementation
else:  # pragma: no cover -- Keras ships these three trainers and numpy/openvino (inference only)
    raise ImportError(f"kerasae trains on the tensorflow, jax and torch backends. Received: KERAS_BACKEND={NAME}")

Trainer, random, coarse_uniform, hardware = (
    implementation.Trainer,
    implementation.random,
    implementation.coarse_uniform,
    implementation.hardware,
)
array_feed, array_batches = implementation.array_feed, implementation.array_batches
conv, conv_transpose = implementation.conv, implementation.conv_transpose
sigmoid_cross_entropy = implementation.sigmoid_cross_entropy
padded_rows = implementation.padded_rows
variable_numpy = implementation.variable_numpy

from kerasae.backend.distribute import (  # noqa: E402 -- after the backend's own module
    Replicas,
    barrier,
    distributed,
    host_local,
    is_main_process,
    multi_host_settings,
    tf_cluster,
    writes_entry,
)

__all__ = [
    "NAME",
    "Trainer",
    "random",
    "coarse_uniform",
    "array_feed",
    "array_batches",
    "hardware",
    "conv",
    "conv_transpose",
    "sigmoid_cross_entropy",
    "padded_rows",
    "variable_numpy",
    "Replicas",
    "distributed",
    "host_local",
    "barrier",
    "is_main_process",
    "multi_host_settings",
    "tf_cluster",
    "writes_entry",
    "steps_per_execution",
    "jit_compile",
    "pad_rows",
]


def pad_rows(inputs, batch_size):
    """(inputs, n): numpy inputs (an array or a structure of arrays, n items each) padded with rows
    of zeros to this backend's `padded_rows(n, batch_size)`; slice the outputs back to n."""
    n = len(keras.tree.flatten(inputs)[0])
    extra = padded_rows(n, batch_size) - n
    if not extra:
        return inputs, n
    return keras.tree.map_structure(lambda a: np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]), inputs), n


def steps_per_execution(requested=None, replicas=1):
    """Training steps per call of the trainer's step function: many, to drown the Python overhead
    of each step (on TensorFlow and JAX one compiled loop runs them, on PyTorch one Python loop
    without Keras's per-batch loop around it). One under `tf.distribute` (Keras 3.15's multi-step
    loop fails there): there a recipe's `steps_per_execution` runs its steps one call each, which
    trains the same weights (test_models checks grouped against single steps)."""
    if NAME == "tensorflow" and replicas > 1:
        return 1
    if NAME == "torch" and not private.available("keras.Model.train_function (replaced by make_train_function)"):
        return 1
    return requested or defaults.STEPS_PER_EXECUTION


def jit_compile(requested=None, distributed=False, conv=False):
    """Whether training and evaluation steps compile: the recipe's choice, else XLA on TensorFlow
    and JAX (Keras's "auto" is XLA on JAX but never on a CPU-only TensorFlow, where XLA trains
    the seed's VAE ~25% and its AE ~30% faster here: benchmarks/). Off on PyTorch (torch.compile
    takes ~30 s to pay back), under tf.distribute (as Keras has it), and for conv layers
    (`conv`) on a CPU-only TensorFlow: XLA's CPU transposed convolutions made a step of the
    conv VQ-VAE ~25x slower than TensorFlow's own kernels (2 s against 80 ms). A model with a
    layer XLA cannot compile runs uncompiled, with Keras's warning. (XLA draws other random
    numbers than TensorFlow's kernels: an entry is re-evaluated with the setting it was trained
    with.)"""
    if requested is not None:
        return requested
    if NAME == "tensorflow" and conv and hardware().startswith("CPU"):
        return False
    return not (NAME == "torch" or (NAME == "tensorflow" and distributed))
