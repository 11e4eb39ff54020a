"""kerasae: declarative YAML recipes for autoencoders on Keras 3.

`import kerasae` is cheap: it does not import Keras, so the command line answers
`--help`, `validate` and `zoo list` without starting a backend. What it does is
register kerasae's model and layer classes with Keras's serialization as soon as
Keras is imported (at once when it already is, else right after `import keras`
finishes), so `keras.saving.load_model("zoo/<entry>/model.keras")` restores
kerasae models whichever of the two imports comes first. The public names below
(`kerasae.VAE`, `kerasae.load`, ...) import their modules on first use.
"""

import contextlib
import importlib
import importlib.abc
import os
import sys

from kerasae import families as _families
from kerasae.quiet import native_stderr as _quiet_native_stderr

# TensorFlow's C++ start-up chatter drowns the progress bar; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    # Every family's model class, from the family table (which imports no Keras).
    **dict.fromkeys((family.class_name for family in _families.FAMILIES.values()), "kerasae.models"),
    **dict.fromkeys(("Sampling", "Corruption", "DynamicBinarization"), "kerasae.layers"),
    **dict.fromkeys(("KerasaeError", "RecipeError", "DataError", "ZooError"), "kerasae.errors"),
    "FAMILIES": "kerasae.families",
    "load": "kerasae.store.zoo",
}

__all__ = [*_PUBLIC, "__version__"]

# Modules that moved into the layers' folders, by their former names: `from kerasae import recipe` still works.
_MOVED = {
    name: f"kerasae.{folder}.{name}"
    for folder, names in (
        ("spec", ("recipe", "builder")),
        ("data", ("images", "tables", "series")),
        ("store", ("zoo", "export")),
        ("assess", ("evaluate", "metric_table", "fid", "samplers", "figures", "filters", "cards")),
        ("run", ("train", "checkpoint", "callbacks", "entry")),
        ("serve", ("explore", "server")),
    )
    for name in names
}


def __getattr__(name):
    if name in _MOVED:
        value = importlib.import_module(_MOVED[name])
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        raise AttributeError(f"module 'kerasae' has no attribute '{name}'")
    globals()[name] = value
    return value


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports `kerasae.models` (whose classes register themselves with Keras) once `keras`
    is imported, quietly, and no kerasae module is half-way through its own import (one that
    imports Keras at its top would otherwise meet itself half-built). Watches the imports of
    `keras` and of kerasae's modules, and leaves `sys.meta_path` once done."""

    def __init__(self):
        self.importing = 0  # kerasae modules being executed right now

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("kerasae."):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            quiet = _quiet_native_stderr() if fullname == "keras" else contextlib.nullcontext()
            self.importing += fullname != "keras"
            try:
                with quiet:
                    exec_module(module)
            finally:
                self.importing -= fullname != "keras"
            self.register_when_ready()

        spec.loader.exec_module = exec_then_register
        return spec

    def register_when_ready(self):
        if self.importing or "keras" not in sys.modules or self not in sys.meta_path:
            return
        sys.meta_path.remove(self)
        importlib.import_module("kerasae.models")


def _register():
    registrar = _RegisterWithKeras()
    sys.meta_path.insert(0, registrar)
    registrar.register_when_ready()


_register()
