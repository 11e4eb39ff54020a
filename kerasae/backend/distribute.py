"""Data-parallel training over several devices or hosts, through the backends' own engines:
`keras.distribution.DataParallel` on JAX (and torch from Keras 3.16), `tf.distribute` on
TensorFlow; and what a multi-host run needs besides (the main process, a barrier, a process's
own copy of the weights for saving).
"""

import contextlib
import dataclasses
import json
import os

import keras

from kerasae.backend import private
from kerasae.errors import KerasaeError

NAME = keras.backend.backend()


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
    if not private.available("keras.Variable._value, _layout (JAX)"):
        raise KerasaeError("this Keras's JAX variables moved; kerasae cannot save a multi-host run with it")
    model.jax_state_sync()  # inside `fit` the latest values may still sit in the trainer's state
    variables = list(model.variables) + list(model.metrics_variables)
    if model.compiled and model.optimizer is not None:
        variables += list(model.optimizer.variables)
    # Private to Keras's JAX variables: the value, and the layout an `assign` re-shards to.
    saved = [(v._value, v._layout) for v in variables]
    device = jax.local_devices()[0]
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    # Functions compiled for the global mesh would wait for the other processes: set them
    # aside, let Keras compile local ones for the block, and put the global ones back after.
    functions = ("train_function", "test_function", "predict_function")
    compiled = {name: getattr(model, name) for name in functions}
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
            if private.available("jax._src.distributed.global_state.client.wait_at_barrier"):
                from jax._src import distributed

                distributed.global_state.client.wait_at_barrier(name, 24 * 3600 * 1000)
            else:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices(name)


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
