"""The only module that branches on the Keras backend.

Models write their loss once, with `keras.ops`, in `compute_losses(x, y,
training)` returning a dict whose "loss" entry is minimised. `Trainer` turns
that into `train_step` / `test_step` for the active backend: a GradientTape on
TensorFlow, a stateless function returning its new state on JAX, `backward()`
on PyTorch. Everything else in kerasae is backend-neutral.
"""

import os
import subprocess
import sys

import keras

NAME = keras.backend.backend()
DEFAULT_STEPS_PER_EXECUTION = 32


class _LossTracking:
    """Shared by every backend: per-loss `Mean` trackers reported as logs."""

    def update_loss_metrics(self, losses):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def _data(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x, y


if NAME == "tensorflow":
    import tensorflow as tf

    class Trainer(_LossTracking):
        def train_step(self, data):
            x, y = self._data(data)
            with tf.GradientTape() as tape:
                losses = self.compute_losses(x, y, training=True)
            grads = tape.gradient(losses["loss"], self.trainable_weights)
            self.optimizer.apply(grads, self.trainable_weights)
            return self.update_loss_metrics(losses)

        def test_step(self, data):
            x, y = self._data(data)
            return self.update_loss_metrics(self.compute_losses(x, y, training=False))

elif NAME == "jax":
    import jax

    def _stateless(variables, values, fn):
        """Runs fn() with `variables` read from `values`; returns (result, new values)."""
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            result = fn()
        new_values = []
        for variable, value in zip(variables, values):
            current = scope.get_current_value(variable)
            new_values.append(value if current is None else current)
        return result, new_values

    class Trainer(_LossTracking):
        def _losses_and_state(self, trainable, non_trainable, x, y, training):
            variables = self.trainable_variables + self.non_trainable_variables
            losses, values = _stateless(
                variables, list(trainable) + list(non_trainable),
                lambda: self.compute_losses(x, y, training=training),
            )
            # Seed generator states and other non-trainable updates come back as state.
            return losses["loss"], (losses, values[len(trainable):])

        def _update_metrics(self, metrics_values, losses):
            return _stateless(self.metrics_variables, metrics_values, lambda: self.update_loss_metrics(losses))

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_values, metrics_values = state
            x, y = self._data(data)
            grad_fn = jax.value_and_grad(self._losses_and_state, has_aux=True)
            (_, (losses, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y, True)
            trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, grads, trainable)
            logs, metrics_values = self._update_metrics(metrics_values, losses)
            return logs, (trainable, non_trainable, optimizer_values, metrics_values)

        def test_step(self, state, data):
            trainable, non_trainable, metrics_values = state
            x, y = self._data(data)
            _, (losses, non_trainable) = self._losses_and_state(trainable, non_trainable, x, y, False)
            logs, metrics_values = self._update_metrics(metrics_values, losses)
            return logs, (trainable, non_trainable, metrics_values)

elif NAME == "torch":
    import torch

    class Trainer(_LossTracking):
        def train_step(self, data):
            x, y = self._data(data)
            self.zero_grad()
            losses = self.compute_losses(x, y, training=True)
            losses["loss"].backward()
            grads = [v.value.grad for v in self.trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(grads, self.trainable_weights)
            return self.update_loss_metrics(losses)

        def test_step(self, data):
            x, y = self._data(data)
            with torch.no_grad():
                losses = self.compute_losses(x, y, training=False)
            return self.update_loss_metrics(losses)

else:  # pragma: no cover -- Keras only ships these three trainers and numpy/openvino (inference only)
    raise ImportError(
        f"kerasae trains on the tensorflow, jax and torch backends. Received: KERAS_BACKEND={NAME}"
    )


def hardware():
    """What trains here, in words: the accelerators the backend sees, else the CPU cores."""
    if NAME == "jax":
        import jax

        accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    elif NAME == "tensorflow":
        import tensorflow as tf

        accelerators = [d.name for d in tf.config.list_physical_devices("GPU")]
    else:
        import torch

        accelerators = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if accelerators:
        return f"{len(accelerators)} x {accelerators[0]}"
    return f"CPU, {os.cpu_count()} cores"


def steps_per_execution(requested=None):
    """Training steps per compiled call: many on TensorFlow and JAX, to drown the Python
    overhead of each step; PyTorch runs eagerly and takes exactly one."""
    if NAME == "torch":
        if requested not in (None, 1):
            from kerasae.errors import KerasaeError

            raise KerasaeError(f"train.steps_per_execution must be 1 on the torch backend, got {requested}")
        return 1
    return requested or DEFAULT_STEPS_PER_EXECUTION


def export(format, model_path, out_dir):
    """Writes a serving export ("tf_saved_model" or "onnx") of a saved `.keras` model.

    Keras exports SavedModels and ONNX (through tf2onnx) from the TensorFlow
    backend (JAX and torch would need jax2tf or torch_xla), and the `.keras`
    file is backend-independent, so on other backends the export runs in a
    TensorFlow subprocess.
    """
    if NAME == "tensorflow":
        from kerasae.export import export as run

        return run(format, model_path, out_dir)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    code = "import sys; from kerasae.export import export; export(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, format, str(model_path), str(out_dir)], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{format} export failed: {tail[0]}")
