"""The zoo: the on-disk contract of a trained entry, and its atomic writing.

An entry is a folder `<zoo>/<name>/` with the fixed file names below. It is
built in a hidden staging folder next to it and renamed into place in one
step, so a zoo never holds a half-written entry: a crash leaves either no
entry or a complete one.
"""

import contextlib
import csv
import json
import os
import shutil
import uuid

import numpy as np

from kerasae.errors import ZooError

ZOO_ENV = "KERASAE_ZOO"
DEFAULT_ZOO = "zoo"

MODEL_FILE = "model.keras"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SAVED_MODEL_DIR = "saved_model"
ONNX_DIR = "onnx"
FIGURES_DIR = "figures"
CARD_FILE = "README.md"
REQUIRED_FILES = (MODEL_FILE, RECIPE_FILE, METRICS_FILE)
STAGING_PREFIX = ".staging-"
# A training run's checkpoints live in <zoo>/.runs/<name>/ until its entry is committed.
RUNS_DIR = ".runs"
CHECKPOINT_FILE = "checkpoint.keras"
VARIABLES_FILE = "checkpoint-variables.npz"
STATE_FILE = "state.json"
SNAPSHOTS_FILE = "snapshots.npz"
# A few test images with the codes and reconstructions the model gave them when the entry
# was written: any machine, any backend, with or without the data set, can check a load.
CHECK_FILE = "check.npz"
CHECK_IMAGES = 32
# The Gaussian mixture fitted to the training codes (kerasae.assess.samplers), as plain arrays.
SAMPLER_FILE = "sampler.npz"
# A benchmark's results on the entry's recipe, as Markdown (`benchmarks/oneclass.py --card`): the card shows it.
BENCHMARK_FILE = "benchmark.md"


def write_text(path, text):
    """The one atomic write: a reader sees the old file or the new one, never half of one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


def write_arrays(path, arrays):
    """Writes named numpy arrays as an `.npz` file atomically."""
    temporary = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def write_json(path, value):
    """Writes `value` as JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2))


def write_metrics(folder, metrics):
    """`<entry>/metrics.json`."""
    write_json(os.path.join(folder, METRICS_FILE), metrics)


def write_history(folder, history):
    """`<entry>/history.csv`: one row per finished epoch (an interrupted epoch is not one)."""
    keys = sorted(history)
    with open(os.path.join(folder, HISTORY_FILE), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history.get("loss", []))):
            writer.writerow([epoch, *(history[k][epoch] for k in keys)])


def root(zoo=None):
    """The zoo folder: the argument, else $KERASAE_ZOO, else ./zoo."""
    return zoo or os.environ.get(ZOO_ENV) or DEFAULT_ZOO


def entry_path(name, zoo=None):
    """The folder of entry `name` in the zoo."""
    return os.path.join(root(zoo), name)


def version_name(name, zoo=None, overwrite=False):
    """The entry a training of `name` writes: `name` when it is free or `overwrite` replaces it,
    else its first free version `name-v2`, `name-v3`, ... (as Lightning's `version_N`). An entry
    is never replaced silently; an interrupted run resumes into the version it was started as."""
    if overwrite or not os.path.exists(entry_path(name, zoo)):
        return name
    version = 2
    while os.path.exists(entry_path(f"{name}-v{version}", zoo)):
        version += 1
    return f"{name}-v{version}"


def run_path(name, zoo=None):
    """The folder holding a training run's checkpoints."""
    return os.path.join(root(zoo), RUNS_DIR, name)


@contextlib.contextmanager
def claim_run(name, zoo=None):
    """One training per name at a time: an OS lock (`flock`, through the filelock package) on
    `<zoo>/.runs/<name>.lock`. The kernel releases it when the holder exits, however it exits
    (kill -9 included), so there is no pid file to trust and no takeover to race; the lock file
    itself stays, unlocked, in the hidden `.runs/` folder.
    """
    import filelock

    runs = os.path.join(root(zoo), RUNS_DIR)
    os.makedirs(runs, exist_ok=True)
    path = os.path.join(runs, f"{name}.lock")
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ZooError(f"another training of '{name}' is running in this zoo (it holds {path})") from None
    try:
        yield
    finally:
        lock.release()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(zoo_root, name):
    """Staging folders left by killed processes (kill -9) are removed; live ones are not touched."""
    prefix = f"{STAGING_PREFIX}{name}-"
    for folder in os.listdir(zoo_root):
        pid = folder[len(prefix) :].split("-")[0]
        if folder.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(zoo_root, folder), ignore_errors=True)


@contextlib.contextmanager
def staging(name, zoo=None):
    """A private folder to build an entry in; removed if anything fails before `commit`."""
    zoo_root = root(zoo)
    os.makedirs(zoo_root, exist_ok=True)
    _remove_stale_staging(zoo_root, name)
    path = os.path.join(zoo_root, f"{STAGING_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        if os.path.exists(path):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def replacing(path):
    """A path beside `path` (not yet created) to write its new contents to: when the block ends
    well they take `path`'s place, the old contents removed after; when it fails they are removed
    and `path` is left whole. For what is written into an entry after it was made (an export)."""
    staged = f"{path}{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield staged
        retired = f"{staged}-old"
        if os.path.exists(path):
            os.rename(path, retired)
        os.rename(staged, path)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def commit(staged, name, zoo=None, overwrite=False):
    """Moves a staged entry into place atomically.

    `os.rename` onto an existing, non-empty folder fails, so two trainings
    aimed at the same name cannot both win: the loser gets a `ZooError`.
    """
    final = entry_path(name, zoo)
    retired = None
    if os.path.exists(final):
        if not overwrite:
            raise ZooError(f"zoo entry {final} already exists; pass --overwrite to replace it")
        retired = os.path.join(root(zoo), f"{STAGING_PREFIX}{name}-{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
        os.rename(final, retired)
    try:
        os.rename(staged, final)
    except OSError as e:
        raise ZooError(f"zoo entry {final} was written by another run meanwhile ({e.strerror})") from None
    if retired:
        shutil.rmtree(retired, ignore_errors=True)
    return final


def check_entry(path):
    """Raises a `ZooError` naming what is missing from an entry folder."""
    if not os.path.isdir(path):
        raise ZooError(f"zoo entry not found: {path}")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ZooError(f"zoo entry {path} is incomplete: missing {', '.join(missing)}")


def search_path(zoo=None):
    """Where entry names are looked up: the given zoo; else each folder in $KERASAE_ZOO
    (os.pathsep-separated), ./zoo, and the zoo shipped beside the package in a checkout."""
    if zoo:
        return [zoo]
    folders = [f for f in os.environ.get(ZOO_ENV, "").split(os.pathsep) if f]
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), DEFAULT_ZOO)
    for folder in (DEFAULT_ZOO, shipped):
        if os.path.abspath(folder) not in map(os.path.abspath, folders):
            folders.append(folder)
    return folders


def resolve(name_or_path, zoo=None):
    """An entry folder from a path, or from a name looked up along `search_path`."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.isfile(name_or_path) and name_or_path.endswith(".keras"):
        return os.path.dirname(name_or_path) or "."
    folders = search_path(zoo)
    for folder in folders:
        path = os.path.join(folder, name_or_path)
        if os.path.isdir(path):
            return path
    if os.sep in name_or_path or name_or_path.endswith(".keras"):
        raise ZooError(f"zoo entry not found: {name_or_path}")
    raise ZooError(f"no zoo entry named '{name_or_path}' in {', '.join(folders)}")


def read_metrics(path):
    """An entry's metrics.json as a dict."""
    try:
        with open(os.path.join(path, METRICS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ZooError(f"{os.path.join(path, METRICS_FILE)}: unreadable ({e})") from None


def names(zoo=None):
    """The names of every complete entry, sorted (nothing read but the folder listings)."""
    zoo_root = root(zoo)
    if not os.path.isdir(zoo_root):
        return []
    return [
        name
        for name in sorted(os.listdir(zoo_root))
        if not name.startswith(".") and all(os.path.isfile(os.path.join(zoo_root, name, f)) for f in REQUIRED_FILES)
    ]


def entries(zoo=None):
    """(name, metrics) of every complete entry, sorted by name."""
    return [(name, read_metrics(os.path.join(root(zoo), name))) for name in names(zoo)]


def save_model(model, path):
    """Saves the weights and architecture an entry needs, without the optimizer.

    A zoo model is for use, not for resuming (the run's checkpoints keep the
    optimizer): like Keras 2's `include_optimizer=False`, the file stores no
    optimizer slots and no compile settings, which makes it a third of the
    size for Adam. `keras.saving.load_model` gives an uncompiled model; compile
    it to fine-tune.
    """
    from kerasae.backend import private

    if not model.compiled or not private.available("keras.Model.compiled"):
        model.save(path)
        return
    optimizer = model.optimizer
    model.optimizer, model.compiled = None, False
    try:
        model.save(path)
    finally:
        model.optimizer, model.compiled = optimizer, True


def write_check(folder, model, x, y=None):
    """Stores the first `CHECK_IMAGES` test images and the model's outputs for them."""
    x = x[:CHECK_IMAGES]
    y = None if y is None else y[:CHECK_IMAGES]
    arrays = {"x": x, "codes": model.encode(x, y), "reconstructions": model.reconstruct(x, y)}
    if y is not None:
        arrays["y"] = y
    np.savez_compressed(os.path.join(folder, CHECK_FILE), **arrays)


def load(name_or_path, zoo=None, safe_mode=True):
    """Loads a zoo entry's model by entry name, entry folder or `.keras` path.

    Args:
        name_or_path: "vae-mnist", "zoo/vae-mnist" or "zoo/vae-mnist/model.keras".
        zoo: the zoo to look names up in (default: $KERASAE_ZOO, else ./zoo).
        safe_mode: passed to `keras.saving.load_model`; keep it on for files
            from others (it refuses Lambda layers, which can run code).
    """
    import keras

    path = resolve(name_or_path, zoo)
    check_entry(path)
    model_file = os.path.join(path, MODEL_FILE)
    try:
        return keras.saving.load_model(model_file, safe_mode=safe_mode)
    except Exception as e:  # noqa: BLE001 -- a corrupt or foreign file raises many kinds
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ZooError(f"{model_file}: cannot be loaded ({type(e).__name__}: {reason})") from None
