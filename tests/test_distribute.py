"""Data-parallel training: one recipe line moves a run onto a device mesh.

On this CPU machine JAX gets two virtual devices (XLA_FLAGS) and TensorFlow two
logical CPUs; both must be set before the backend starts, so each check runs in
its own interpreter on the backend it is about: once, in that backend's suite.
"""

import contextlib
import json
import os

import pytest
from conftest import run_python

from kerasae import backend
from kerasae.errors import KerasaeError, RecipeError
from kerasae.spec import recipe
from kerasae.store import zoo

# Trains the AE and the VAE on one device and data-parallel on two, with the same global
# batch, and prints the final losses and what the run was spread over.
SCRIPT = """
import json, sys
import keras
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, "tests")
from conftest import small_recipe
from kerasae.spec import recipe
from kerasae.run import train

class Spread(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        v = self.model.trainable_variables[0].value
        if keras.backend.backend() == "jax":
            self.devices = len(v.sharding.device_set)
        else:
            import tensorflow as tf
            self.devices = tf.distribute.get_strategy().num_replicas_in_sync
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

out = {}
for family in sys.argv[4].split(","):
    for mode in sys.argv[3].split(","):
        r = small_recipe(family.split("+")[0], sys.argv[1], epochs=3)
        r["train"]["batch_size"] = 32
        if mode == "data_parallel":  # "ae+lr": the linear scaling rule on
            r["distribute"] = {"strategy": "data_parallel", "devices": "auto", "scale_learning_rate": "+lr" in family}
        spread = Spread()
        zoo_dir = sys.argv[2] + "/" + mode + "-" + family
        _, metrics = train.run(recipe.validate(r), zoo_dir, verbose=0, callbacks=[spread])
        out[family + "/" + mode] = {"train": metrics["train"], "validation": metrics["validation"],
                                    "devices": spread.devices, "learning_rate": spread.learning_rate}
print(json.dumps(out))
"""


def _run(backend_name, mnist_like, tmp_path, families=("ae", "vae")):
    # One interpreter per TensorFlow data-parallel training: a second MirroredStrategy in a process
    # that already trained fails to all-reduce (Keras 3.15 / TF 2.21). JAX runs all in one.
    runs = [("single,data_parallel", ",".join(families))]
    if backend_name == "tensorflow":
        runs = [("single", ",".join(families))] + [("data_parallel", family) for family in families]
    out = {}
    with two_host_devices():
        for modes, names in runs:
            text = run_python(SCRIPT, backend=backend_name, args=(mnist_like, str(tmp_path), modes, names), timeout=600)
            out.update(json.loads(text.strip().splitlines()[-1]))
    return out


@contextlib.contextmanager
def two_host_devices():
    """$XLA_FLAGS of the interpreters started inside: two CPU devices for JAX, besides the flags set."""
    before = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"{before or ''} --xla_force_host_platform_device_count=2".strip()
    try:
        yield
    finally:
        if before is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = before


def _close(a, b, rel, keys=None):
    for split in ("train", "validation"):
        for key, value in a[split].items():
            if keys and key not in keys:
                continue
            assert b[split][key] == pytest.approx(value, rel=rel), (split, key, value, b[split][key])


@pytest.mark.backends("jax")
def test_jax_data_parallel_on_two_devices_matches_one_device(mnist_like, tmp_path):
    out = _run("jax", mnist_like, tmp_path, families=("ae", "vae", "ae+lr"))
    for family in ("ae", "vae"):
        assert out[f"{family}/single"]["devices"] == 1
        assert out[f"{family}/data_parallel"]["devices"] == 2
        # Same global batches, the same noise (JAX draws it for the global batch, then
        # shards it): only the order of float32 sums differs.
        _close(out[f"{family}/single"], out[f"{family}/data_parallel"], rel=1e-4)
    # The linear scaling rule: twice the rate on two replicas.
    assert out["ae+lr/data_parallel"]["learning_rate"] == pytest.approx(2 * out["ae/single"]["learning_rate"])


@pytest.mark.backends("tensorflow")
def test_tensorflow_mirrored_strategy_on_two_cpus_matches_one_device(mnist_like, tmp_path):
    out = _run("tensorflow", mnist_like, tmp_path)
    assert out["vae/data_parallel"]["devices"] == 2
    assert out["ae/data_parallel"]["learning_rate"] == pytest.approx(out["ae/single"]["learning_rate"])
    # The AE is deterministic: the replicas' gradients sum to the global batch's.
    _close(out["ae/single"], out["ae/data_parallel"], rel=1e-4)
    # The VAE's replicas draw their own noise (seeded per replica), so its losses agree
    # in distribution only: the total within 5% after three epochs on this small set
    # (measured: 1.2% train, 1.8% validation; its KL term alone moves by ~15%).
    _close(out["vae/single"], out["vae/data_parallel"], rel=0.05, keys=("loss",))


@pytest.mark.backends("torch")
def test_torch_refuses_data_parallel_naming_the_keras_version(mnist_like, tmp_path):
    code = """
    import sys, json
    sys.path.insert(0, "tests")
    from conftest import small_recipe
    from kerasae.spec import recipe
    from kerasae.run import train
    from kerasae.errors import KerasaeError
    r = small_recipe("ae", sys.argv[1], epochs=1)
    r["distribute"] = {"strategy": "data_parallel"}
    try:
        train.run(recipe.validate(r), sys.argv[2], verbose=0)
    except KerasaeError as e:
        print(e)
    """
    out = run_python(code, backend="torch", args=(mnist_like, str(tmp_path)))
    assert "data_parallel needs Keras >= 3.16 on the torch backend (installed: Keras 3." in out
    assert not os.path.exists(tmp_path / "test-ae")


@pytest.mark.once
def test_multi_host_settings_come_from_the_recipe_or_the_environment():
    spec = recipe.DistributeSection(strategy="data_parallel")
    assert backend.multi_host_settings(spec, {}) is None
    env = {"KERASAE_COORDINATOR_ADDRESS": "10.0.0.1:1234", "KERASAE_NUM_PROCESSES": "4", "KERASAE_PROCESS_ID": "3"}
    assert backend.multi_host_settings(spec, env) == ("10.0.0.1:1234", 4, 3)
    spec = recipe.DistributeSection(strategy="data_parallel", coordinator_address="host-0:9999", num_processes=2)
    assert backend.multi_host_settings(spec, {"KERASAE_PROCESS_ID": "1"}) == ("host-0:9999", 2, 1)
    with pytest.raises(KerasaeError, match=r"also needs distribute.process_id \(or \$KERASAE_PROCESS_ID\)"):
        backend.multi_host_settings(spec, {})
    with pytest.raises(KerasaeError, match=r"\$KERASAE_PROCESS_ID: expected an integer, got 'one'"):
        backend.multi_host_settings(spec, {"KERASAE_PROCESS_ID": "one"})
    with pytest.raises(KerasaeError, match=r"distribute.process_id: must be in 0..1, got 5"):
        backend.multi_host_settings(spec, {"KERASAE_PROCESS_ID": "5"})


@pytest.mark.once
def test_distribute_section_is_validated(mnist_like):
    from conftest import small_recipe

    r = small_recipe("ae", mnist_like)
    r["distribute"] = {"strategy": "data_paralel", "devices": 0, "num_processes": 2, "process_id": 2}
    with pytest.raises(RecipeError) as error:
        recipe.validate(r)
    text = str(error.value)
    assert "distribute.strategy" in text and "data_parallel" in text
    assert "distribute.devices" in text


def test_a_batch_that_does_not_split_over_the_replicas_is_refused(mnist_like, tmp_path):
    code = """
    import sys
    sys.path.insert(0, "tests")
    from conftest import small_recipe
    from kerasae.spec import recipe
    from kerasae.run import train
    from kerasae.errors import KerasaeError
    r = small_recipe("ae", sys.argv[1], epochs=1)
    r["train"]["batch_size"] = 33
    r["distribute"] = {"strategy": "data_parallel"}
    try:
        train.run(recipe.validate(r), sys.argv[2], verbose=0)
    except KerasaeError as e:
        print(e)
    """
    with two_host_devices():
        out = run_python(code, backend="jax", args=(mnist_like, str(tmp_path)))
    assert "train.batch_size: 33 does not split evenly over 2 replicas" in out


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes_against_one(mnist_like, tmp_path, backend_name, distribute, process_env):
    """Trains the AE (deterministic) in two cooperating processes and in one; returns
    (the two processes' stdout, their metrics, the single process's metrics)."""
    import subprocess
    import sys

    import yaml
    from conftest import ROOT, small_recipe

    r = small_recipe("ae", mnist_like, epochs=2)
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(r))
    r["distribute"] = distribute
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump(r))
    env = {**os.environ, "KERAS_BACKEND": backend_name}
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, "-m", "kerasae.cli", "train", "--quiet", "--zoo"]
    workers = [
        subprocess.Popen(
            command + [str(tmp_path / "zoo"), str(multi)],
            cwd=ROOT,
            text=True,
            env={**env, **process_env(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]
    baseline = subprocess.run(
        command + [str(tmp_path / "one"), str(single)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    leftovers = [n for n in os.listdir(tmp_path / "zoo") if n != zoo.RUNS_DIR]  # .runs/ keeps its lock files
    assert sorted(leftovers) == ["README.md", "test-ae"]  # one entry, no leftovers
    assert os.listdir(tmp_path / "zoo" / zoo.RUNS_DIR) == ["test-ae.lock"]
    both = [json.load(open(tmp_path / z / "test-ae" / "metrics.json")) for z in ("zoo", "one")]
    return [out for out, _ in outputs], both[0], both[1]


@pytest.mark.backends("jax")
def test_jax_two_processes_over_loopback_match_one_process(mnist_like, tmp_path):
    """Two hosts in miniature: two processes, one CPU device each, joined over 127.0.0.1."""
    distribute = {"strategy": "data_parallel", "coordinator_address": f"127.0.0.1:{_free_port()}", "num_processes": 2}
    outputs, multi, single = _two_processes_against_one(
        mnist_like, tmp_path, "jax", distribute, lambda i: {"KERASAE_PROCESS_ID": str(i)}
    )
    assert "wrote" in outputs[0] and "main process (JAX process 0" in outputs[1]
    # Each process fed its half of every global batch: the same steps as one process.
    _close(single, multi, rel=1e-4)


@pytest.mark.backends("tensorflow")
def test_tensorflow_two_workers_over_loopback_match_one_process(mnist_like, tmp_path):
    """MultiWorkerMirroredStrategy from $TF_CONFIG: two worker processes, one CPU each."""
    ports = [_free_port(), _free_port()]

    def tf_config(index):
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}

    outputs, multi, single = _two_processes_against_one(
        mnist_like, tmp_path, "tensorflow", {"strategy": "data_parallel"}, tf_config
    )
    assert "wrote" in outputs[0] and "writes its zoo entry" in outputs[1]  # the chief's entry only
    _close(single, multi, rel=1e-4)


@pytest.mark.once
def test_tf_config_names_the_chief():
    workers = {"worker": ["a:1", "b:2"]}
    assert backend.tf_cluster({}) is None
    assert backend.tf_cluster({"TF_CONFIG": json.dumps({"cluster": workers, "task": {"index": 0}})}) == (2, True)
    assert backend.tf_cluster({"TF_CONFIG": json.dumps({"cluster": workers, "task": {"index": 1}})}) == (2, False)
    with_chief = {"cluster": {**workers, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}
    assert backend.tf_cluster({"TF_CONFIG": json.dumps(with_chief)}) == (3, False)
    with pytest.raises(KerasaeError, match=r"\$TF_CONFIG: not a cluster description"):
        backend.tf_cluster({"TF_CONFIG": "{not json"})
