"""The only module that branches on the Keras backend.

Models write their loss once, with `keras.ops`, in `compute_losses(x, y,
training)` returning a dict whose "loss" entry is minimised. `Trainer` turns
that into `train_step` / `test_step` for the active backend: a GradientTape on
TensorFlow, a stateless function returning its new state on JAX, `backward()`
on PyTorch. Everything else in kerasae is backend-neutral.
"""

import contextlib
import contextvars
import dataclasses
import itertools
import os
import subprocess
import sys

import keras
import numpy as np

NAME = keras.backend.backend()
DEFAULT_STEPS_PER_EXECUTION = 32

if NAME != "tensorflow":
    # Keras asks "is TensorFlow installed?" by importing it (in `keras.utils.set_random_seed`
    # and when saving a model), which costs a JAX or torch run ~450 MB and seconds. kerasae needs TensorFlow only in the
    # export subprocess, so on these backends Keras takes its TensorFlow-less paths, as it does
    # where TensorFlow is not installed. Explicit uses (the TensorBoard callback) still import it.
    from keras.src.utils import module_utils

    if getattr(module_utils.tensorflow, "_available", None) is None:
        module_utils.tensorflow._available = False


class _LossTracking:
    """Shared by every backend: per-loss `Mean` trackers reported as logs."""

    def update_loss_metrics(self, losses):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def _data(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x, y


def _take_group(iterator, steps, stack):
    """The next `steps` batches of a `fit`'s iterator: (their leaves stacked, True) when there are
    that many and of one shape, else (the batches as a list, False): a short group at an epoch's
    end, taken step by step. No batch at all: ([], False)."""
    batches = list(itertools.islice(iterator, steps))
    shapes = {tuple(tuple(leaf.shape) for leaf in keras.tree.flatten(batch)) for batch in batches}
    if len(batches) == steps and len(shapes) == 1:
        return keras.tree.map_structure(lambda *leaves: stack(leaves), *batches), True
    return batches, False


if NAME == "tensorflow":
    import tensorflow as tf

    def _reducible(logs):
        """Keras 3 reduces multi-worker logs along axis 0, which a scalar lacks, and fails
        (tensorflow/tensorflow#72388): there the logs travel as 1-element vectors."""
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @contextlib.contextmanager
    def _tracing_for(model):
        """Marks the step being traced as XLA's when the model compiles with XLA."""
        token = _IN_XLA.set(bool(model.jit_compile) and not tf.distribute.has_strategy())
        try:
            yield
        finally:
            _IN_XLA.reset(token)

    class Trainer(_LossTracking):
        def train_step(self, data):
            with _tracing_for(self):
                return self._train_step(data)

        def test_step(self, data):
            with _tracing_for(self):
                x, y = self._data(data)
                return _reducible(self.update_loss_metrics(self.compute_losses(x, y, training=False)))

        def _train_step(self, data):
            x, y = self._data(data)
            with tf.GradientTape() as tape:
                losses = self.compute_losses(x, y, training=True)
                # tf.distribute sums the replicas' gradients: each replica's mean loss
                # counts 1/replicas, so the update is that of the global batch's mean.
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                objective = losses["loss"] / replicas if replicas > 1 else losses["loss"]
                objective = self.optimizer.scale_loss(objective)  # mixed_float16's loss scale; else as is
            grads = tape.gradient(objective, self.trainable_weights)
            self.optimizer.apply(grads, self.trainable_weights)
            return _reducible(self.update_loss_metrics(losses))

        def make_train_function(self, force=False):
            """`steps_per_execution` steps in one XLA program: Keras's TensorFlow trainer runs a
            graph loop that launches the compiled step once per batch (~1 ms each for the seed's
            VAE, a third of the step); here full groups of batches, stacked, run as one XLA
            `while` loop over them, and only a short group (the end of an epoch) takes single
            steps. Not under tf.distribute, nor without XLA."""
            if self.train_function is not None and not force:
                return self.train_function
            super().make_train_function(force=True)
            steps = self.steps_per_execution
            if steps == 1 or self.run_eagerly or not self.jit_compile or tf.distribute.has_strategy():
                return self.train_function
            single = self.train_function

            @tf.function(jit_compile=True, reduce_retracing=True)
            def scan_steps(batches):
                def body(i, logs):
                    return i + 1, self.train_step(tf.nest.map_structure(lambda leaf: leaf[i], batches))

                logs = {name: tf.zeros((), tracker.dtype) for name, tracker in self.loss_trackers.items()}
                return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), logs))[1]

            def train_function(iterator):
                group, stacked = _take_group(iterator, steps, tf.stack)
                if stacked:
                    return scan_steps(group)
                if not group:
                    raise StopIteration
                return single(iter(group))

            self.train_function = train_function
            return self.train_function

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
            as the step itself; here full groups of batches run as a `lax.scan` over the stacked
            batches, and only a short group (the end of an epoch) takes single steps."""
            if self.train_function is not None and not force:
                return
            super().make_train_function(force=True)
            steps = self.steps_per_execution
            if steps == 1 or self.run_eagerly or not self.jit_compile or keras.distribution.distribution():
                return  # sharded batches (keras.distribution) keep Keras's own loop
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
                    group, stacked = _take_group(iterator, steps, np.stack)
                ahead.clear()
                if stacked:
                    logs, state = scanned(state, group)
                    # JAX returns before the call finishes: stack the next group meanwhile, but
                    # queue no more calls than that (each holds its batches in memory).
                    ahead.append((iterator, _take_group(iterator, steps, np.stack)))
                    jax.block_until_ready(logs)
                    return logs, state
                logs = None
                for batch in group:
                    logs, state = single(state, iter([batch]))
                if logs is None:
                    raise StopIteration
                return logs, state

            self.train_function = train_function

elif NAME == "torch":
    import math
    import types

    import torch

    def _fused_adam_update(optimizer, grads, variables, learning_rate):
        """Keras's Adam update of m, v and the weights in one pass of torch's fused kernel, where
        Keras's torch Adam runs nine `_foreach` passes over them (~7x slower on a CPU: ~2.3 ms a
        step for the seed's VAE, against ~0.35 ms). Keras divides by sqrt(v) + eps, torch by
        sqrt(v) / sqrt(1 - beta_2^t) + eps: the eps passed is scaled so that the two agree.
        AdamW's decay, clipping, EMA and the step counter stay with Keras's `apply` around this."""
        weights = [v.value for v in variables]
        grads = list(grads)
        if any(w.device.type != "cpu" or g.dtype != w.dtype for w, g in zip(weights, grads)):
            return optimizer._keras_update_step(grads, variables, learning_rate)
        index = optimizer._get_variable_index
        step = float(optimizer.iterations) + 1
        torch._fused_adam_(
            weights,
            grads,
            [optimizer._momentums[index(v)].value for v in variables],
            [optimizer._velocities[index(v)].value for v in variables],
            [],
            [torch.tensor(step, dtype=torch.float32)] * len(weights),
            lr=float(learning_rate),
            beta1=optimizer.beta_1,
            beta2=optimizer.beta_2,
            weight_decay=0.0,
            eps=optimizer.epsilon / math.sqrt(1 - optimizer.beta_2**step),
            amsgrad=False,
            maximize=False,
        )

    def _fuse(optimizer):
        """Gives a Keras Adam or AdamW (not AMSGrad) the fused update on CPU tensors; the class,
        and so the saved config, stay Keras's."""
        if isinstance(optimizer, keras.optimizers.Adam) and not optimizer.amsgrad:
            if not hasattr(optimizer, "_keras_update_step"):
                optimizer._keras_update_step = optimizer._parallel_update_step
                optimizer._parallel_update_step = types.MethodType(_fused_adam_update, optimizer)

    class Trainer(_LossTracking):
        # (Fused here, not in `compile`: Keras skips `compile_from_config` for a custom `compile`.)
        def train_step(self, data):
            _fuse(self.optimizer)
            x, y = self._data(data)
            self.zero_grad()
            losses = self.compute_losses(x, y, training=True)
            self.optimizer.scale_loss(losses["loss"]).backward()  # mixed_float16's loss scale; else as is
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
    raise ImportError(f"kerasae trains on the tensorflow, jax and torch backends. Received: KERAS_BACKEND={NAME}")


# -- data-parallel training ---------------------------------------------------------------

# Released Keras runs `keras.distribution` on JAX only; the torch backend gets it in 3.16.
TORCH_DISTRIBUTION_KERAS = (3, 16)
MULTI_HOST_ENV = {
    "coordinator_address": "KERASAE_COORDINATOR_ADDRESS",
    "num_processes": "KERASAE_NUM_PROCESSES",
    "process_id": "KERASAE_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class Replicas:
    """How a run is spread: model replicas in all, and this process among the hosts'."""

    count: int = 1
    processes: int = 1
    process_id: int = 0


def multi_host_settings(spec, environ=None):
    """(coordinator address, number of processes, process id) from the recipe, else the environment.

    Returns None for a single-host run.
    """
    from kerasae.errors import KerasaeError

    environ = os.environ if environ is None else environ
    values = {}
    for key, variable in MULTI_HOST_ENV.items():
        value = getattr(spec, key)
        if value is None and environ.get(variable):
            value = environ[variable]
            if key != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise KerasaeError(f"${variable}: expected an integer, got {value!r}") from None
        values[key] = value
    if values["num_processes"] in (None, 1):
        return None
    missing = [f"distribute.{k} (or ${MULTI_HOST_ENV[k]})" for k, v in values.items() if v is None]
    if missing:
        raise KerasaeError(f"a run over {values['num_processes']} processes also needs {', '.join(missing)}")
    if not 0 <= values["process_id"] < values["num_processes"]:
        raise KerasaeError(
            f"distribute.process_id: must be in 0..{values['num_processes'] - 1}, got {values['process_id']}"
        )
    return values["coordinator_address"], values["num_processes"], values["process_id"]


def _keras_version():
    return tuple(int(part) for part in keras.__version__.split(".")[:2] if part.isdigit())


def _pick(devices, wanted):
    from kerasae.errors import KerasaeError

    if wanted == "auto":
        return devices
    if wanted > len(devices):
        raise KerasaeError(f"distribute.devices: {wanted} asked for, {len(devices)} available ({', '.join(devices)})")
    return devices[:wanted]


@contextlib.contextmanager
def distributed(spec):
    """Sets up the recipe's `distribute` section for the block; yields `Replicas`.

    JAX (and torch from Keras 3.16): `keras.distribution.DataParallel` over a
    mesh of the devices, several hosts joined by `keras.distribution.initialize`.
    TensorFlow: `MirroredStrategy` over the local GPUs (else CPUs), or
    `MultiWorkerMirroredStrategy` when $TF_CONFIG describes a cluster. Build,
    compile and fit the model inside the block.
    """
    from kerasae.errors import KerasaeError

    if spec.strategy == "none":
        yield Replicas()
        return
    if NAME == "torch" and _keras_version() < TORCH_DISTRIBUTION_KERAS:
        raise KerasaeError(
            f"distribute.strategy: data_parallel needs Keras >= {'.'.join(map(str, TORCH_DISTRIBUTION_KERAS))} "
            f"on the torch backend (installed: Keras {keras.__version__}); use KERAS_BACKEND=jax or tensorflow"
        )
    if NAME == "tensorflow":
        with _tf_strategy(spec) as replicas:
            yield replicas
        return
    hosts = multi_host_settings(spec)
    if hosts:
        address, processes, process_id = hosts
        if NAME == "jax":
            import jax

            # CPU devices of several processes talk through gloo (GPUs and TPUs use their own).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(job_addresses=address, num_processes=processes, process_id=process_id)
    devices = _pick(keras.distribution.list_devices(), spec.devices)
    previous = keras.distribution.distribution()
    distribution = keras.distribution.DataParallel(devices=devices)
    if hosts:
        distribution.auto_shard_dataset = False  # each process feeds its own slice (train._local_rows)
    keras.distribution.set_distribution(distribution)
    try:
        yield Replicas(len(devices), *(hosts[1:] if hosts else (1, 0)))
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def host_local(model):
    """Inside the block the model reads as an ordinary one-process model.

    With several JAX processes, variables are global arrays that no process can
    fetch whole; their replicas are complete on every process, so the block
    swaps in this process's copy (and lifts the distribution) for saving,
    predicting and drawing figures, and restores the global arrays after.
    """
    if NAME != "jax":
        yield
        return
    import jax

    if jax.process_count() == 1:
        yield
        return
    model.jax_state_sync()  # inside `fit` the latest values may still sit in the trainer's state
    variables = list(model.variables) + list(model.metrics_variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    # Private to Keras's JAX variables: the value, and the layout an `assign` re-shards to.
    saved = [(v._value, v._layout) for v in variables]
    device = jax.local_devices()[0]
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    # Functions compiled for the global mesh would wait for the other processes: set them
    # aside, let Keras compile local ones for the block, and put the global ones back after.
    functions = ("train_function", "test_function", "predict_function")
    compiled = {name: getattr(model, name, None) for name in functions}
    for name in functions:
        setattr(model, name, None)
    try:
        for v, (value, _) in zip(variables, saved):
            v._layout = None
            if isinstance(value, jax.Array) and not value.is_fully_addressable:
                # A copy: a compiled call may donate (free) the buffers it is given.
                v._value = jax.numpy.array(jax.device_put(value.addressable_data(0), device), copy=True)
        yield
    finally:
        for v, (value, layout) in zip(variables, saved):
            v._value, v._layout = value, layout
        for name, function in compiled.items():
            setattr(model, name, function)
        keras.distribution.set_distribution(distribution)


def barrier(name):
    """Waits until every process of a multi-host run gets here (a no-op on one host).

    The others wait for process 0 to write the entry: a JAX process that exits
    early takes the coordination service, and so the whole run, down with it.
    """
    if NAME == "jax":
        import jax

        if jax.process_count() > 1:
            # The coordination service's barrier: no device computation, so it cannot be
            # confused with work process 0 is still doing. Waits up to a day.
            from jax._src import distributed

            distributed.global_state.client.wait_at_barrier(name, 24 * 3600 * 1000)


def is_main_process():
    """True on the one process (of several hosts) that writes checkpoints and the zoo entry."""
    if NAME == "jax":
        import jax

        return jax.process_index() == 0
    return True


def tf_cluster(environ=None):
    """(number of workers, whether this one is the chief) from $TF_CONFIG, or None without it.

    The chief is the task of type "chief", else worker 0.
    """
    import json

    from kerasae.errors import KerasaeError

    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster", {}), config.get("task", {})
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as e:
        raise KerasaeError(f"$TF_CONFIG: not a cluster description ({e})") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return workers, chief


def writes_entry(spec):
    """False on the processes of a multi-host run that leave checkpoints and the entry to
    another: JAX processes other than 0, TensorFlow workers other than the chief."""
    if spec.strategy == "none":
        return True
    if NAME == "tensorflow":
        cluster = tf_cluster()
        return cluster is None or cluster[1]
    hosts = multi_host_settings(spec)
    return not hosts or hosts[2] == 0


@contextlib.contextmanager
def _tf_strategy(spec):
    import tensorflow as tf

    if tf_cluster():
        # Keras shards numpy input over the workers, and every worker runs the same steps
        # (evaluation included): to kerasae each is one process.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        devices = _pick([d.name for d in tf.config.list_logical_devices(kind)], spec.devices)
        strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        yield Replicas(strategy.num_replicas_in_sync)


# Set while a TensorFlow training or test step is traced for XLA: the draws there use threefry.
_IN_XLA = contextvars.ContextVar("kerasae_in_xla", default=False)


def _tf_seed(seed_generator):
    """The next seed of a layer's generator, as TensorFlow's stateless ops take it. Under a
    `tf.distribute` strategy every replica would read the same generator state and draw the same
    noise for its part of the batch; there the seed is offset by the replica's index."""
    import tensorflow as tf

    seed = tf.cast(tf.math.floormod(seed_generator.next(), tf.int32.max - 1), "int32")  # as Keras casts it
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        offset = tf.cast(context.replica_id_in_sync_group, seed.dtype)
        seed = seed + tf.stack([tf.zeros_like(offset), offset])
    return seed


def _tf_algorithm():
    """Keras leaves TensorFlow's "auto_select", which XLA on a CPU lowers to a generator ~40x
    slower than Philox (27 ms for a batch of MNIST pixels, against 0.6 ms: more than the whole
    training step); under XLA threefry costs least (0.2 ms). TensorFlow's own kernels, outside
    XLA, have Philox only."""
    return "threefry" if _IN_XLA.get() else "philox"


def random(kind, shape, dtype, seed_generator):
    """`keras.random.normal` or `.uniform` (kind) drawn from a layer's generator; on TensorFlow
    with the algorithm `_tf_algorithm` picks and a seed per replica (`_tf_seed`)."""
    if NAME == "tensorflow":
        import tensorflow as tf

        draw = tf.random.stateless_normal if kind == "normal" else tf.random.stateless_uniform
        return draw(shape, seed=_tf_seed(seed_generator), dtype=dtype, alg=_tf_algorithm())
    return getattr(keras.random, kind)(shape, dtype=dtype, seed=seed_generator)


def array_feed(x, y, batch_size):
    """The batches of in-memory arrays in a given row order, for `fit`, on TensorFlow without a
    `tf.distribute` strategy: `feed(rows)` returns (a `tf.data.Dataset`, its number of batches).

    Given numpy arrays, Keras's TensorFlow trainer converts a fresh copy of them into a new
    dataset at every `fit` call, and kerasae calls `fit` once per epoch: the copy, and deleting
    the last epoch's dataset (TensorFlow unregisters its functions), took ~0.7 s of a 2.5 s
    epoch of the seed's VAE. Here the arrays become tensors once, and one dataset, made once,
    gathers each batch by the rows of the epoch (held in a variable). None on JAX and PyTorch,
    whose trainers slice numpy arrays batch by batch: there the caller passes `x[rows]`.
    """
    if NAME != "tensorflow":
        return None
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return None
    tensors = tuple(tf.constant(a) for a in (x, y) if a is not None)
    order = tf.Variable(tf.zeros([0], "int64"), shape=tf.TensorShape([None]), trainable=False)
    count = tf.Variable(0, dtype="int64", trainable=False)

    def batch(i):
        rows = order[i * batch_size : (i + 1) * batch_size]
        return tuple(tf.gather(t, rows) for t in tensors)

    dataset = tf.data.Dataset.range(2**62).take_while(lambda i: i < count).map(batch)

    def feed(rows):
        order.assign(np.asarray(rows, dtype="int64"))
        count.assign(-(-len(rows) // batch_size))
        return dataset, int(count.numpy())

    return feed


def array_batches(x, y, batch_size):
    """Arrays as a `tf.data.Dataset` of batches on TensorFlow without a strategy (made once: see
    `array_feed`); None elsewhere."""
    if NAME != "tensorflow":
        return None
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return None
    return tf.data.Dataset.from_tensor_slices(tuple(a for a in (x, y) if a is not None)).batch(batch_size)


def coarse_uniform(shape, dtype, seed_generator):
    """Uniform on [0, 1) in steps of 2^-16, for comparisons `u < p`: a Bernoulli pixel or a
    corruption mask. 16 bits hold any probability within 2^-16 (an 8-bit grey level needs 8),
    and each 32 random bits give two draws: on JAX and under XLA, where the generators cost in
    proportion to the bits, the draw of a batch of MNIST pixels takes ~40% less (benchmarks/rng.py).
    PyTorch's generator does not gain from it: there this is `uniform`."""
    if NAME == "torch":
        return random("uniform", shape, dtype, seed_generator)
    if NAME == "jax":
        import math

        import jax

        n = math.prod(shape)
        words = jax.random.bits(seed_generator.next(), ((n + 1) // 2,), "uint32")
        halves = jax.numpy.concatenate([words & 0xFFFF, words >> 16])[:n]
        return (halves.astype(dtype) * (1.0 / 65536)).reshape(shape)
    import tensorflow as tf

    shape = tf.stack([tf.cast(d, "int32") for d in shape])  # some sizes are tensors in a traced step
    n = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform(
        tf.reshape((n + 1) // 2, [1]),
        seed=_tf_seed(seed_generator),
        dtype="uint32",
        minval=None,
        maxval=None,
        alg=_tf_algorithm(),
    )
    halves = tf.concat([tf.bitwise.bitwise_and(words, 0xFFFF), tf.bitwise.right_shift(words, 16)], 0)[:n]
    return tf.reshape(tf.cast(halves, dtype) * (1.0 / 65536), shape)


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


def steps_per_execution(requested=None, replicas=1):
    """Training steps per compiled call: many on TensorFlow and JAX, to drown the Python
    overhead of each step. PyTorch runs eagerly and Keras's torch trainer takes exactly one, and
    so does TensorFlow under `tf.distribute` (Keras 3.15's multi-step loop fails there): there a
    recipe's `steps_per_execution` runs its steps one call each, which trains the same weights
    (test_models checks grouped against single steps)."""
    if NAME == "torch" or (NAME == "tensorflow" and replicas > 1):
        return 1
    return requested or DEFAULT_STEPS_PER_EXECUTION


def jit_compile(requested=None, distributed=False):
    """Whether training and evaluation steps compile: the recipe's choice, else XLA on TensorFlow
    and JAX (Keras's "auto" is XLA on JAX but never on a CPU-only TensorFlow, where XLA trains
    the seed's VAE ~25% and its AE ~30% faster here: benchmarks/). Off on PyTorch (torch.compile
    takes ~30 s to pay back) and under tf.distribute (as Keras has it). A model with a layer XLA
    cannot compile runs uncompiled, with Keras's warning. (XLA draws other random numbers than
    TensorFlow's kernels: an entry is re-evaluated with the setting it was trained with.)"""
    if requested is not None:
        return requested
    return not (NAME == "torch" or (NAME == "tensorflow" and distributed))


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
