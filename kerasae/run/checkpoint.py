"""A training run's state between its steps: save it, load it, and may a recipe resume it.

A run's folder (`<zoo>/.runs/<name>/`) holds the model with its optimizer (`zoo.CHECKPOINT_FILE`,
Keras's own format, written at the run's first checkpoint), the values of all their variables at
the last checkpoint (`zoo.VARIABLES_FILE`: weights, optimizer slots and step, random generators'
states), the figure snapshots taken so far, and `RunState` as JSON: how far the run got, its
history and the recipe it trains. Keras's `model.save` at every checkpoint cost ~45 ms on
TensorFlow (most of it walking the model to decide what to save), the values alone ~2 ms.
"""

import dataclasses
import json
import os

import keras
import numpy as np

from kerasae import backend
from kerasae.errors import ZooError
from kerasae.store import zoo

# What a resumed run may change: how long it trains, how often it checkpoints, and whether its
# steps compile (in sections `outputs` and `distribute`, not compared: what it writes and on how
# many devices).
RESUMABLE_CHANGES = ("epochs", "checkpoint_every_epochs", "checkpoint_every_steps", "jit_compile")


@dataclasses.dataclass
class Partial:
    """The logged means of an epoch's training segments, combined by their numbers of steps.

    Keras logs per-step means, so the weighted mean of the segments' means is the mean an
    unbroken epoch logs. Validation terms come from the last segment.
    """

    sums: dict = dataclasses.field(default_factory=dict)
    steps: int = 0
    validation: dict = dataclasses.field(default_factory=dict)

    def add(self, logs, steps):
        for key, values in logs.items():
            if key.startswith("val_"):
                self.validation[key] = float(values[-1])
            elif steps:
                self.sums[key] = self.sums.get(key, 0.0) + float(values[-1]) * steps
        self.steps += steps

    def means(self):
        return {k: v / self.steps for k, v in self.sums.items()} | self.validation


@dataclasses.dataclass
class RunState:
    """How far a run got: finished epochs, steps of the next, the history of finished epochs and
    the seconds spent training. The model file beside it holds the weights, the optimizer and
    the random generators' states; `recipe` the (resolved) recipe it trains."""

    recipe: dict
    epochs_done: int = 0
    steps_done: int = 0
    partial: Partial = dataclasses.field(default_factory=Partial)
    history: dict = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0

    def finish_epoch(self):
        """Adds the epoch's means to the history (an epoch cut short is not one) and moves on."""
        for key, value in self.partial.means().items():
            self.history.setdefault(key, []).append(value)
        self.epochs_done, self.steps_done, self.partial = self.epochs_done + 1, 0, Partial()

    def to_json(self):
        partial = {"sums": self.partial.sums, "steps": self.partial.steps} if self.steps_done else None
        return {
            "epochs_done": self.epochs_done,
            "steps_done": self.steps_done,
            "partial": partial,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "recipe": self.recipe,
        }

    @classmethod
    def from_json(cls, saved):
        partial = saved.get("partial") or {}
        return cls(
            recipe=saved["recipe"],
            epochs_done=saved["epochs_done"],
            steps_done=saved.get("steps_done", 0),
            partial=Partial(dict(partial.get("sums", {})), partial.get("steps", 0)),
            history=saved["history"],
            train_seconds=saved["train_seconds"],
        )


def save(folder, model, state, snapshots):
    """Writes the model file (the run's first checkpoint only: a fresh run starts from an empty
    folder, a resumed one from its own), the variables' values, the snapshots and the state, each
    file replaced atomically. Of several hosts, only the main process writes."""
    if not backend.is_main_process():
        return
    with backend.host_local(model):
        os.makedirs(folder, exist_ok=True)
        model_file = os.path.join(folder, zoo.CHECKPOINT_FILE)
        if not os.path.isfile(model_file):
            temporary = os.path.join(folder, f"tmp-{os.getpid()}-{zoo.CHECKPOINT_FILE}")
            model.save(temporary)
            os.replace(temporary, model_file)
        variables = _variables(model)
        values = {str(i): backend.variable_numpy(v) for i, v in enumerate(variables)}
        values["paths"] = np.array([v.path for v in variables])
        zoo.write_arrays(os.path.join(folder, zoo.VARIABLES_FILE), values)
        zoo.write_arrays(os.path.join(folder, zoo.SNAPSHOTS_FILE), snapshots.arrays())
        zoo.write_json(os.path.join(folder, zoo.STATE_FILE), state.to_json())


def load_model(folder):
    """The model of a run's last checkpoint: its model file with the variables' last values.

    Raises:
        ZooError: the values do not belong to the model file (other variables or shapes).
    """
    model = keras.saving.load_model(os.path.join(folder, zoo.CHECKPOINT_FILE))
    values_file = os.path.join(folder, zoo.VARIABLES_FILE)
    if not os.path.isfile(values_file):  # a checkpoint of kerasae before 2026-12-07: the model file holds all
        return model
    variables = _variables(model)
    with np.load(values_file) as saved:
        # In the order they were saved in (paths are for reading: a loaded model's random
        # generators take new names).
        shapes = [saved[str(i)].shape for i in range(len(saved.files) - 1)]
        if shapes != [tuple(v.shape) for v in variables]:
            raise ZooError(f"--resume: {values_file} holds other variables than {zoo.CHECKPOINT_FILE} beside it")
        for i, variable in enumerate(variables):
            variable.assign(saved[str(i)])
    return model


def _variables(model):
    """Every variable a run's next step depends on: the model's (weights, non-trainable state,
    random generators) and its optimizer's (step count, slots, loss scale)."""
    return list(model.variables) + list(model.optimizer.variables)


def load(folder, recipe):
    """The state of an interrupted run of `recipe`, and its snapshots' arrays.

    Raises:
        ZooError: no checkpoint, or the recipe changed in more than `RESUMABLE_CHANGES`.
    """
    state_file = os.path.join(folder, zoo.STATE_FILE)
    if not os.path.isfile(state_file) or not os.path.isfile(os.path.join(folder, zoo.CHECKPOINT_FILE)):
        raise ZooError(f"--resume: no checkpoint of '{recipe.name}' in {folder}")
    with open(state_file, encoding="utf-8") as f:
        state = RunState.from_json(json.load(f))
    changed = changes(state.recipe, recipe.to_dict())
    if changed:
        raise ZooError(
            f"--resume: the recipe changed since the checkpoint ({', '.join(changed)}); "
            f"only {', '.join(f'train.{k}' for k in RESUMABLE_CHANGES)} may change"
        )
    with np.load(os.path.join(folder, zoo.SNAPSHOTS_FILE)) as saved:
        arrays = {key: saved[key] for key in saved.files}
    return state, arrays


def changes(before, now):
    """What a resumed run may not change but did: key paths of the resolved recipes."""
    changed = sorted(k for k in now if before.get(k) != now[k] and k not in ("train", "outputs", "distribute"))
    changed += [
        f"train.{k}" for k in now["train"] if k not in RESUMABLE_CHANGES and before["train"].get(k) != now["train"][k]
    ]
    schedule = before["train"].get("learning_rate_schedule", "constant")
    if schedule != "constant" and before["train"]["epochs"] != now["train"]["epochs"]:
        # The schedule's length was fixed when the optimizer was built.
        changed.append("train.epochs (the learning-rate schedule spans the original epochs)")
    return changed


def describe(folder):
    """The last checkpoint in words, for messages."""
    try:
        with open(os.path.join(folder, zoo.STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return "no checkpoint yet (nothing was finished)"
    if state.get("steps_done"):
        return f"the checkpoint after step {state['steps_done']} of epoch {state['epochs_done'] + 1}"
    return f"the checkpoint after epoch {state['epochs_done']}"
