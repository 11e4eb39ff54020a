"""A training run's state between its steps: save it, load it, and may a recipe resume it.

A run's folder (`<zoo>/.runs/<name>/`) holds the model with its optimizer and the random
generators' states (`zoo.CHECKPOINT_FILE`, Keras's own format), the figure snapshots taken so
far, and `RunState` as JSON: how far the run got, its history and the recipe it trains.
"""

import dataclasses
import json
import os

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
    """Writes the model (with optimizer and random states), the snapshots and the state, each
    file replaced atomically. Of several hosts, only the main process writes."""
    if not backend.is_main_process():
        return
    with backend.host_local(model):
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f"tmp-{os.getpid()}-{zoo.CHECKPOINT_FILE}")
        model.save(temporary)
        os.replace(temporary, os.path.join(folder, zoo.CHECKPOINT_FILE))
        zoo.write_arrays(os.path.join(folder, zoo.SNAPSHOTS_FILE), snapshots.arrays())
        zoo.write_json(os.path.join(folder, zoo.STATE_FILE), state.to_json())


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
