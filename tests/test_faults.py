"""Faults lose nothing: checkpoints, SIGINT/SIGTERM/SIGKILL, resume to the same weights, NaN stops."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml
from conftest import ROOT, small_recipe

from kerasae import cli
from kerasae.errors import TrainingStopped, ZooError
from kerasae.run import train
from kerasae.spec import recipe
from kerasae.store import zoo


class SignalAt(keras.callbacks.Callback):
    """Sends this process a signal at a given (epoch, batch): an interruption at a chosen step."""

    def __init__(self, epoch, batch, signum=signal.SIGINT):
        super().__init__()
        self.at, self.signum, self.epoch = (epoch, batch), signum, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), self.signum)


def _recipe(mnist_like, family="vae", epochs=4):
    r = small_recipe(family, mnist_like, epochs=epochs)
    r["train"]["steps_per_execution"] = 1  # so that a signal lands at an exact step on every backend
    return recipe.validate(r)


def _weights(entry):
    return zoo.load(entry).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_like):
    """family -> (entry, metrics) of the four-epoch run that interrupted runs must reach, trained once."""
    runs = {}

    def run(family):
        if family not in runs:
            runs[family] = train.run(_recipe(mnist_like, family), str(tmp_path_factory.mktemp("straight")), verbose=0)
        return runs[family]

    return run


@pytest.mark.parametrize("family", ["vae", "dae"])
def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, mnist_like, uninterrupted, family):
    r = _recipe(mnist_like, family)
    straight, straight_metrics = uninterrupted(family)
    zoo_b = str(tmp_path / "b")
    # The signal lands before step 6 of epoch 3 (batch index 5); that step finishes, then a
    # checkpoint inside the epoch is written.
    with pytest.raises(TrainingStopped, match=r"SIGINT: stopped 'test-.*' after step 6 of epoch 3; its checkpoint"):
        train.run(r, zoo_b, verbose=0, callbacks=[SignalAt(epoch=2, batch=5)])
    assert not os.path.exists(zoo.entry_path(r.name, zoo_b))
    state = json.load(open(os.path.join(zoo.run_path(r.name, zoo_b), zoo.STATE_FILE)))
    assert (state["epochs_done"], state["steps_done"], len(state["history"]["loss"])) == (2, 6, 2)
    resumed, metrics = train.run(r, zoo_b, verbose=0, resume=True)
    # Same backend, same data order per epoch, optimizer and random states restored.
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The interrupted epoch's logged means combine its two halves into the unbroken epoch's.
    for split in ("train", "validation"):
        for key, value in straight_metrics[split].items():
            assert metrics[split][key] == pytest.approx(value, rel=1e-5), (split, key)
    history = open(os.path.join(resumed, zoo.HISTORY_FILE)).read().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2", "3"]
    assert not os.path.exists(zoo.run_path(r.name, zoo_b))  # checkpoints go once the entry is in


class KillAt(keras.callbacks.Callback):
    """Stands in for `kill -9` at a given step: the process dies without unwinding."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt  # not a signal kerasae handles: nothing is saved on the way out


def test_step_checkpoints_resume_inside_an_epoch(tmp_path, mnist_like, uninterrupted):
    r = _recipe(mnist_like, "vae")
    straight, _ = uninterrupted("vae")
    every = recipe.validate({**r.to_dict(), "train": {**r.to_dict()["train"], "checkpoint_every_steps": 4}})
    zoo_b = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):  # 15 steps per epoch: dies at step 7 of epoch 2
        train.run(every, zoo_b, verbose=0, callbacks=[KillAt(step=22)])
    state = json.load(open(os.path.join(zoo.run_path(r.name, zoo_b), zoo.STATE_FILE)))
    # Steps are counted from the start of training: the last checkpoint is at step 20 = epoch 2, step 5.
    assert (state["epochs_done"], state["steps_done"]) == (1, 5)
    resumed, _ = train.run(every, zoo_b, verbose=0, resume=True)
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_cosine_schedule_resumes_where_it_stopped(tmp_path, mnist_like):
    r = _recipe(mnist_like, "vae", epochs=3)
    r = recipe.validate({**r.to_dict(), "train": {**r.to_dict()["train"], "learning_rate_schedule": "cosine"}})
    straight, _ = train.run(r, str(tmp_path / "a"), verbose=0)
    zoo_b = str(tmp_path / "b")
    with pytest.raises(TrainingStopped):
        train.run(r, zoo_b, verbose=0, callbacks=[SignalAt(epoch=1, batch=3)])
    longer = recipe.validate({**r.to_dict(), "train": {**r.to_dict()["train"], "epochs": 5}})
    with pytest.raises(ZooError, match=r"changed since the checkpoint \(train.epochs \(the learning-rate schedule"):
        train.run(longer, zoo_b, verbose=0, resume=True)
    resumed, _ = train.run(r, zoo_b, verbose=0, resume=True)
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_fresh_run_will_not_silently_discard_checkpoints(tmp_path, mnist_like):
    r = _recipe(mnist_like, "ae", epochs=3)
    zoo_dir = str(tmp_path / "zoo")
    with pytest.raises(TrainingStopped):
        train.run(r, zoo_dir, verbose=0, callbacks=[SignalAt(epoch=1, batch=2, signum=signal.SIGTERM)])
    with pytest.raises(ZooError, match="pass --resume to continue it or --overwrite to start over"):
        train.run(r, zoo_dir, verbose=0)
    changed = recipe.validate({**r.to_dict(), "model": {**r.to_dict()["model"], "latent_dim": 3}})
    with pytest.raises(ZooError, match=r"the recipe changed since the checkpoint \(model\)"):
        train.run(changed, zoo_dir, verbose=0, resume=True)
    # The variables' values at the last checkpoint sit beside the model file written at the first:
    # values of other shapes are refused, naming both files.
    values = os.path.join(zoo.run_path(r.name, zoo_dir), zoo.VARIABLES_FILE)
    with np.load(values) as saved:
        kept = {key: saved[key] for key in saved.files}
    np.savez(values, **{**kept, "0": kept["0"][:1]})
    with pytest.raises(ZooError, match=f"{zoo.VARIABLES_FILE} holds other variables than {zoo.CHECKPOINT_FILE}"):
        train.run(r, zoo_dir, verbose=0, resume=True)
    np.savez(values, **kept)
    longer = recipe.validate({**r.to_dict(), "train": {**r.to_dict()["train"], "epochs": 4, "jit_compile": False}})
    entry, metrics = train.run(longer, zoo_dir, verbose=0, resume=True)  # more epochs, no XLA: fine
    assert metrics["epochs"] == 4
    with pytest.raises(ZooError, match="no checkpoint"):
        train.run(r, str(tmp_path / "empty"), verbose=0, resume=True)


# Several steps per call: the loss is checked a call late, off the training thread.
@pytest.mark.parametrize("steps", [1, 4])
def test_a_diverging_loss_stops_with_epoch_and_step(tmp_path, mnist_like, capsys, steps):
    r = small_recipe("ae", mnist_like, epochs=3)
    r["model"].update(latent_activation="linear", output_activation="linear")
    r["loss"] = {"type": "mse"}
    r["train"].update(optimizer="sgd", learning_rate=10.0, steps_per_execution=steps)
    path = tmp_path / "diverge.yaml"
    path.write_text(yaml.safe_dump(r))
    zoo_dir = str(tmp_path / "zoo")
    assert cli.main(["train", str(path), "--zoo", zoo_dir, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is no longer finite in epoch 1, step" in err and "Traceback" not in err
    assert not os.path.exists(zoo.entry_path("test-ae", zoo_dir))


class StopAt(keras.callbacks.Callback):
    """Sets `model.stop_training` after a given (epoch, batch): a callback ending the run mid-epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch, self.begun = (epoch, batch), 0, 0

    def on_train_begin(self, logs=None):
        self.begun += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.model.stop_training = True


def test_a_callback_that_stops_training_ends_the_run_with_an_entry(tmp_path, mnist_like):
    r = _recipe(mnist_like, "ae", epochs=6)
    # Keras's EarlyStopping keeps its count over kerasae's per-epoch `fit` calls: the loss falls every
    # epoch, so in mode "max" no epoch after the first improves; with patience 2 it stops after the
    # third and puts back the first epoch's weights.
    early = keras.callbacks.EarlyStopping(monitor="loss", mode="max", patience=2, restore_best_weights=True)
    entry, metrics = train.run(r, str(tmp_path / "a"), verbose=0, callbacks=[early])
    assert metrics["epochs"] == 3 and metrics["stopped_early"].startswith("after epoch 3: a callback")
    assert (early.stopped_epoch, early.best_epoch) == (2, 0)
    assert len(open(os.path.join(entry, zoo.HISTORY_FILE)).read().splitlines()) == 1 + 3
    one_epoch, _ = train.run(_recipe(mnist_like, "ae", epochs=1), str(tmp_path / "one"), verbose=0)
    for a, b in zip(_weights(entry), _weights(one_epoch)):
        np.testing.assert_array_equal(a, b)
    zoo.check_entry(entry)
    # Mid-epoch: the cut epoch is not one in the history; on_train_begin reached the callback once.
    stop = StopAt(epoch=1, batch=3)
    entry, metrics = train.run(r, str(tmp_path / "b"), verbose=0, callbacks=[stop])
    assert metrics["epochs"] == 1 and metrics["stopped_early"].startswith("after step 4 of epoch 2")
    assert stop.begun == 1
    assert not os.path.exists(zoo.run_path(r.name, str(tmp_path / "b")))  # no checkpoints left


SLOW_RECIPE = dict(epochs=400)


def _start(tmp_path, mnist_like, zoo_dir):
    r = small_recipe("ae", mnist_like, **SLOW_RECIPE)
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(r))
    cmd = [sys.executable, "-m", "kerasae.cli", "train", str(path), "--zoo", zoo_dir, "--quiet"]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = os.path.join(zoo.run_path("test-ae", zoo_dir), zoo.STATE_FILE)
    deadline = time.time() + 120
    while not os.path.exists(state):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))  # a random step of a later epoch
    return cmd, process, path


# SIGTERM takes SIGINT's path (one handler; test_a_fresh_run_will_not_silently_discard_checkpoints sends it
# in-process on every backend): as a subprocess it runs in one suite.
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.once), signal.SIGKILL]
)
def test_signals_in_a_subprocess_then_resume(tmp_path, mnist_like, signum):
    zoo_dir = str(tmp_path / "zoo")
    cmd, process, path = _start(tmp_path, mnist_like, zoo_dir)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    entries = [n for n in os.listdir(zoo_dir) if not n.startswith(".")]
    assert entries == []  # no entry, never a partial one
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 128 + signum
        assert f"Resume with: kerasae train {path} --resume" in err and "Traceback" not in err
    done = json.load(open(os.path.join(zoo.run_path("test-ae", zoo_dir), zoo.STATE_FILE)))["epochs_done"]
    assert done >= 1
    # Resume to the end, fewer epochs so the test stays short.
    result = subprocess.run(
        cmd + ["--resume", "--set", f"train.epochs={done + 2}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    entry = zoo.entry_path("test-ae", zoo_dir)
    zoo.check_entry(entry)
    assert json.load(open(os.path.join(entry, zoo.METRICS_FILE)))["epochs"] == done + 2


def test_two_trainings_of_one_name_cannot_run_at_once(tmp_path, mnist_like):
    zoo_dir = str(tmp_path / "zoo")
    with zoo.claim_run("test-ae", zoo_dir):
        with pytest.raises(ZooError, match="another training of 'test-ae' is running in this zoo"):
            train.run(_recipe(mnist_like, "ae", epochs=1), zoo_dir, verbose=0)
    entry, _ = train.run(_recipe(mnist_like, "ae", epochs=1), zoo_dir, verbose=0)  # released on exit
    assert sorted(n for n in os.listdir(zoo_dir) if not n.startswith(".")) == ["README.md", "test-ae"]


def test_a_killed_trainer_frees_its_lock_at_once(tmp_path):
    """The lock is the kernel's (flock): kill -9 of its holder releases it, with no pid file to go stale."""
    zoo_dir = str(tmp_path / "zoo")
    code = (
        "import sys, time; from kerasae import zoo\n"
        "with zoo.claim_run('test-ae', sys.argv[1]):\n    print('holding', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, zoo_dir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ZooError, match="another training of 'test-ae' is running"):
            with zoo.claim_run("test-ae", zoo_dir):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with zoo.claim_run("test-ae", zoo_dir):  # at once, no takeover of a stale file
        pass
