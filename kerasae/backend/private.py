"""Every private name of Keras, JAX and PyTorch that kerasae touches, in one list.

Each is worth its speed (or its saving of memory), and each may move in any release. The code
that uses one asks `available(name)` first; when the name is gone it takes Keras's public path
instead, slower but never wrong, and says so once in a warning. `tests/test_private.py` checks
every name against the installed versions and names the one that moved.
"""

import dataclasses
import functools
import importlib
import warnings

import keras

NAME = keras.backend.backend()


@dataclasses.dataclass(frozen=True)
class Private:
    """A private name and what kerasae does without it.

    Attributes:
        name: where it lives, dotted.
        used_by: the kerasae function that uses it, and what for.
        fallback: what kerasae does when it is gone.
        exists: checks it against the installed versions. A check that runs where a multi-host
            distribution may be set reads the classes' source and creates nothing (there a new
            variable is a collective the other processes would not join).
        backend: the Keras backend it belongs to (None: every backend).
    """

    name: str
    used_by: str
    fallback: str
    exists: object
    backend: str = None


def _attribute(module, path):
    """Whether `module` (imported) has the dotted attribute `path`."""
    value = importlib.import_module(module)
    for part in path.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def _adam_slots():
    variable = keras.Variable(keras.ops.zeros((2,)))  # (torch only: no multi-host distribution there)
    optimizer = keras.optimizers.Adam()
    optimizer.build([variable])
    return all(hasattr(optimizer, n) for n in ("_momentums", "_velocities", "_get_variable_index")) and hasattr(
        optimizer, "_parallel_update_step"
    )


def _train_function():
    # A model without a distribution: kerasae replaces train_function only when none is set.
    return hasattr(keras.Model, "make_train_function") and "train_function" in vars(keras.Model())


def _jax_variable():
    # Read from the classes' source, not from a new variable: under a multi-host distribution,
    # creating one is a collective that the other processes would not join.
    import inspect

    from keras.src.backend.common.variables import Variable as KerasVariable
    from keras.src.backend.jax.core import Variable as JaxVariable

    return "self._value" in inspect.getsource(KerasVariable) and "self._layout" in inspect.getsource(JaxVariable)


def _compiled_flag():
    import inspect

    from keras.src.trainers.trainer import Trainer

    return "self.compiled = True" in inspect.getsource(Trainer.compile)


NAMES = (
    Private(
        "keras.src.utils.module_utils.tensorflow._available",
        "backend/__init__: tells Keras that TensorFlow is absent on JAX and torch (saves ~450 MB and seconds)",
        "Keras imports TensorFlow where it is installed (slower start, more memory)",
        lambda: _attribute("keras.src.utils.module_utils", "tensorflow"),
    ),
    Private(
        "keras.Model._should_eval",
        "models.Autoencoder: no validation after a signal stopped `fit` inside an epoch",
        "a signal stops training at the end of the current epoch instead of after the current step",
        lambda: hasattr(keras.Model, "_should_eval"),
    ),
    Private(
        "keras.Layer._build_at_init",
        "layers: weightless layers are built in __init__, as Keras's GaussianNoise is",
        "the layers set `built = True` themselves",
        lambda: hasattr(keras.layers.Layer, "_build_at_init"),
    ),
    Private(
        "keras.export.ExportArchive._tf_trackable",
        "export.export_saved_model: drops the second copy of every weight from a SavedModel",
        "the SavedModel keeps both copies (twice the size)",
        lambda: hasattr(keras.export.ExportArchive(), "_tf_trackable"),
        backend="tensorflow",
    ),
    Private(
        "keras.Model.compiled",
        "zoo.save_model: saves an entry without its optimizer by unsetting it for the save",
        "the entry's model.keras keeps the optimizer's slots (larger file)",
        _compiled_flag,
    ),
    Private(
        "keras.Model.train_function (replaced by make_train_function)",
        "backend.tensorflow / backend.jax / backend.torch Trainer: runs steps_per_execution steps per call",
        "Keras's own loop, one compiled call per step",
        _train_function,
    ),
    Private(
        "keras.optimizers.Adam._parallel_update_step, _momentums, _velocities, _get_variable_index",
        "backend.torch._fused_adam_update: Adam's update in one fused PyTorch kernel",
        "Keras's own Adam update (~7x slower on a CPU)",
        _adam_slots,
        backend="torch",
    ),
    Private(
        "torch._fused_adam_",
        "backend.torch._fused_adam_update: Adam's update in one fused PyTorch kernel",
        "Keras's own Adam update (~7x slower on a CPU)",
        lambda: _attribute("torch", "_fused_adam_"),
        backend="torch",
    ),
    Private(
        "torch.fx.experimental.proxy_tensor.make_fx, keras.src.backend.torch.random",
        "backend.torch_trace: a model's training losses traced once into a graph of PyTorch operators",
        "Keras's eager pass, op by op (the dense recipes' steps ~1.5x slower on a CPU)",
        lambda: (
            _attribute("torch.fx.experimental.proxy_tensor", "make_fx")
            and _attribute("keras.src.backend.torch.random", "normal")
        ),
        backend="torch",
    ),
    Private(
        "keras.src.backend.torch.nn._maybe_convert_to_channels_last",
        "backend.torch._to_channels_last: conv kernels PyTorch's CPU backward takes on a batch of one image",
        "Keras's own conversion: a conv layer with one output channel fails to train on a batch of one image "
        "on a CPU (PyTorch's 'grad_weight must be contiguous')",
        lambda: _attribute("keras.src.backend.torch.nn", "_maybe_convert_to_channels_last"),
        backend="torch",
    ),
    Private(
        "keras.src.backend.torch.nn._transpose_conv_kernel",
        "backend.torch._dense_conv_kernel: dense transposed-conv kernels for a batch of one image",
        "Keras's own kernel view: a transposed conv from one input channel fails to train on a batch of one image "
        "on a CPU (PyTorch's 'grad_weight needs to be contiguous')",
        lambda: _attribute("keras.src.backend.torch.nn", "_transpose_conv_kernel"),
        backend="torch",
    ),
    Private(
        "keras.Variable._value, _layout (JAX)",
        "backend.distribute.host_local: a process's copy of a global array for saving on several hosts",
        "multi-host runs on JAX stop with an error before training (single-host runs are unaffected)",
        _jax_variable,
        backend="jax",
    ),
    Private(
        "jax._src.distributed.global_state.client.wait_at_barrier",
        "backend.distribute.barrier: waits for process 0 without device computation",
        "jax.experimental.multihost_utils.sync_global_devices (a device computation) as the barrier",
        lambda: _attribute("jax._src.distributed", "global_state"),
        backend="jax",
    ),
)

BY_NAME = {private.name: private for private in NAMES}


def applies(private):
    """Whether the name matters on the active backend."""
    return private.backend in (None, NAME)


@functools.cache
def available(name):
    """Whether a private name is there in the installed versions; warns once, with the
    fallback, when it is not."""
    private = BY_NAME[name]
    try:
        there = bool(private.exists())
    except Exception:  # an import or attribute that moved fails in its own way
        there = False
    if not there:
        warnings.warn(
            f"kerasae: {private.name} is not in the installed Keras/JAX/PyTorch; "
            f"{private.used_by.split(':')[0]} falls back: {private.fallback}",
            RuntimeWarning,
            stacklevel=2,
        )
    return there
