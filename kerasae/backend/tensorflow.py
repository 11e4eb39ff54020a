"""The TensorFlow backend: its `Trainer`, random draws and in-memory data feed.

Laid out as Keras's `keras/src/backend/tensorflow/trainer.py`: the model's `compute_losses`
becomes a `train_step` under a GradientTape, and `steps_per_execution` steps run as one XLA
loop. Random draws name their algorithm (Keras leaves TensorFlow's "auto_select", which XLA on
a CPU lowers to a slow generator); arrays become one `tf.data` pipeline per run.
"""

import collections
import contextlib
import contextvars
import os

import numpy as np
import tensorflow as tf

from kerasae.backend import common, private
from kerasae.backend.common import (  # noqa: F401 -- Keras's
    LossTracking,
    conv,
    padded_rows,
    sigmoid_cross_entropy,
    take_group,
)
from kerasae.quiet import native_stderr

# TensorFlow looks for its devices on first use; on a machine without a GPU, its CUDA plugin then
# writes "failed call to cuInit: ... UNKNOWN ERROR (303)" to stderr, an error line before every
# run that no user can act on. Looking now, quietly, spares it (TF_CPP_MIN_LOG_LEVEL=0 shows it).
with native_stderr():
    tf.config.list_physical_devices("GPU")

TRAIN_FUNCTION = "keras.Model.train_function (replaced by make_train_function)"

# Set while a TensorFlow training or test step is traced for XLA: the draws there use threefry.
_IN_XLA = contextvars.ContextVar("kerasae_in_xla", default=False)


def _tf_seed(seed_generator):
    """The next seed of a layer's generator, as TensorFlow's stateless ops take it. Under a
    `tf.distribute` strategy every replica would read the same generator state and draw the same
    noise for its part of the batch; there the seed is offset by the replica's index."""
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
    draw = tf.random.stateless_normal if kind == "normal" else tf.random.stateless_uniform
    return draw(shape, seed=_tf_seed(seed_generator), dtype=dtype, alg=_tf_algorithm())


class Positions(collections.namedtuple("Positions", ["positions"])):
    """A training batch as the positions of its rows in the epoch's order (an `ArrayFeed`'s
    element): the training step gathers the images itself."""


class ArrayFeed:
    """The batches of in-memory arrays in a given row order, for `fit`, on TensorFlow without a
    `tf.distribute` strategy: `feed(rows)` returns (a `tf.data.Dataset`, its number of batches).

    Given numpy arrays, Keras's TensorFlow trainer converts a fresh copy of them into a new
    dataset at every `fit` call, and kerasae calls `fit` once per epoch: the copy, and deleting
    the last epoch's dataset (TensorFlow unregisters its functions), took ~0.7 s of a 2.5 s
    epoch of the seed's VAE. Here the arrays become tensors once, the epoch's rows are held in a
    variable, and the dataset, one per number of rows, made once, yields each batch's positions
    in that order (`Positions`): the training step gathers its images (`Trainer.train_step`).
    A dataset that gathers them itself needs a `map`, and every iterator of a `map` instantiates
    its function: ~7 ms, twice a `fit` (Keras makes the next epoch's iterator as one ends), of
    the ~60 ms an AE epoch spent outside its steps; a `range().batch()` iterator takes ~0.5 ms.
    (JAX's feed gathers batch by batch in Python, `common.array_feed`; PyTorch's through a
    `DataLoader`, `torch.array_feed`.)
    """

    def __init__(self, x, y, batch_size):
        self.tensors = tuple(tf.constant(a) for a in (x, y) if a is not None)
        self.order = tf.Variable(tf.zeros([0], "int64"), shape=tf.TensorShape([None]), trainable=False)
        self.batch_size = batch_size
        self.datasets = {}  # rows per call -> its dataset: one for full epochs, a few more for segments

    def __call__(self, rows):
        self.order.assign(np.asarray(rows, dtype="int64"))
        n = len(rows)
        if n not in self.datasets:
            batches = tf.data.Dataset.range(n).batch(self.batch_size)
            self.datasets[n] = _untuned(tf.data.Dataset.zip(Positions(batches)))  # a zip, not a map: no function
        return self.datasets[n], -(-n // self.batch_size)

    def gather(self, positions):
        """A batch's arrays, from its `Positions` (inside the traced training step)."""
        rows = tf.gather(self.order, positions.positions)
        return tuple(tf.gather(t, rows) for t in self.tensors)


def array_feed(model, x, y, batch_size):
    """An `ArrayFeed` of x (and y) whose batches `model`'s training steps gather; None under a
    `tf.distribute` strategy, where the caller passes `x[rows]`."""
    if tf.distribute.has_strategy():
        return None
    model.array_feed = ArrayFeed(x, y, batch_size)
    return model.array_feed


def _untuned(dataset):
    """The dataset with tf.data's autotuning off. Autotuning puts a prefetch of its own at the end
    of the pipeline, and destroying an iterator of it (every `fit` makes one) then blocked for
    ~1.2 s in one epoch of two, after the epoch's last step: most of the time TensorFlow spent
    outside its steps."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def array_batches(x, y, batch_size):
    """Arrays as a `tf.data.Dataset` of batches on TensorFlow without a strategy (made once: see
    `array_feed`); None elsewhere."""
    if tf.distribute.has_strategy():
        return None
    arrays = tuple(a for a in (x, y) if a is not None)
    return _untuned(tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).prefetch(2))


def coarse_uniform(shape, dtype, seed_generator):
    """Uniform on [0, 1) in steps of 2^-16, for comparisons `u < p`: a Bernoulli pixel or a
    corruption mask. 16 bits hold any probability within 2^-16 (an 8-bit grey level needs 8),
    and each 32 random bits give two draws: on JAX and under XLA, where the generators cost in
    proportion to the bits, the draw of a batch of MNIST pixels takes ~40% less (benchmarks/rng.py).
    PyTorch's generator does not gain from it: there this is `uniform`."""

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


class Trainer(LossTracking):
    """`train_step` / `test_step` of a kerasae model on TensorFlow (mixed into `Autoencoder`)."""

    array_feed = None  # the `ArrayFeed` whose `Positions` the training steps receive, once a run made one

    def train_step(self, data):
        with _tracing_for(self):
            if isinstance(data, Positions):
                data = self.array_feed.gather(data)
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
        if not private.available(TRAIN_FUNCTION):
            return self.train_function
        single = self.train_function

        @tf.function(jit_compile=True, reduce_retracing=True)
        def scan_steps(batches):
            def body(i, logs):
                return i + 1, self.train_step(tf.nest.map_structure(lambda leaf: leaf[i], batches))

            logs = {name: tf.zeros((), tracker.dtype) for name, tracker in self.loss_trackers.items()}
            return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), logs))[1]

        def train_function(iterator):
            group, stacked = take_group(iterator, steps, tf.stack)
            if stacked:
                return scan_steps(group)
            if not group:
                raise StopIteration
            return single(iter(group))

        self.train_function = train_function
        return self.train_function


def conv_transpose(x, kernel, strides):
    """Keras's "same"-padded transposed convolution, a kernel smaller than its strides first padded
    with zero taps up to them (the same function: "same" padding puts no tap before the first).
    TensorFlow 2.21's CPU kernel gradient of a 1x1 transposed convolution with strides crashes the
    process (oneDNN; a segmentation fault with 8 or 9 filters on 5x5 inputs, for one); a 2x2 kernel
    runs."""
    kh, kw = kernel.shape[:2]
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    if kh < sh or kw < sw:
        kernel = tf.pad(kernel, [[0, max(sh - kh, 0)], [0, max(sw - kw, 0)], [0, 0], [0, 0]])
    return common.conv_transpose(x, kernel, strides)


def variable_numpy(variable):
    """A Keras variable's value as a numpy array. Under a `tf.distribute` strategy a scalar
    `MirroredVariable` (the optimizer's step, a KL weight) does not convert as it is (numpy:
    "object __array__ method not producing an array"): its value is read first."""
    return variable.value.read_value().numpy()


def hardware():
    """The GPUs TensorFlow sees, else the CPU's cores, in words."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU, {os.cpu_count()} cores"
