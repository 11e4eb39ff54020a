"""Every private Keras / JAX / PyTorch name kerasae uses: still there, and a public path without it."""

import dataclasses
import os
import warnings

import keras
import numpy as np
import pytest

from kerasae import backend
from kerasae.backend import private

USED = [p for p in private.NAMES if private.applies(p)]


@pytest.mark.parametrize("name", [p.name for p in USED])
def test_each_private_name_is_in_the_installed_versions(name):
    entry = private.BY_NAME[name]
    assert entry.exists(), (
        f"{name} moved in the installed versions (keras {keras.__version__}, backend {backend.NAME}); "
        f"used by {entry.used_by}; kerasae now falls back: {entry.fallback}"
    )


@pytest.mark.once
def test_the_list_names_every_private_name_in_the_code():
    """A private attribute of Keras, JAX or PyTorch written anywhere in kerasae is declared."""
    import re

    root = os.path.join(os.path.dirname(__file__), "..", "kerasae")
    declared = " ".join(p.name for p in private.NAMES)
    pattern = re.compile(r"(?:keras\.src\.|jax\._src|torch\._\w+|\b(?:optimizer|archive\.\w*|v|variable|layer)\._\w+)")
    found = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "private.py":
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    found |= set(pattern.findall(f.read()))
    own = {"optimizer._keras_update_step"}  # kerasae's own attribute: Keras's update, kept aside
    undeclared = sorted(use for use in found - own if use.split(".")[-1] not in declared)
    assert not undeclared, f"private names used but not in kerasae/backend/private.py: {undeclared}"


@pytest.fixture
def missing(monkeypatch):
    """Makes a private name read as gone, as after a Keras release that moved it."""

    def remove(name):
        entry = private.BY_NAME[name]
        monkeypatch.setitem(private.BY_NAME, name, dataclasses.replace(entry, exists=lambda: False))
        private.available.cache_clear()

    yield remove
    private.available.cache_clear()


def test_a_missing_name_warns_once_naming_it_and_its_fallback(missing):
    missing("keras.Layer._build_at_init")
    from kerasae.layers import Sampling

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = [Sampling(seed=1), Sampling(seed=2)]
    said = [str(w.message) for w in caught if "kerasae:" in str(w.message)]
    assert len(said) == 1 and "keras.Layer._build_at_init" in said[0] and "built = True" in said[0]
    assert all(layer.built for layer in layers)


def test_without_the_should_eval_hook_a_signal_stops_at_the_epochs_end(missing):
    from kerasae.run.callbacks import Guard

    missing("keras.Model._should_eval")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = Guard()
    model.stop_training = False
    guard.set_model(model)
    guard.set_params({"steps": 10})
    guard.signal = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard.on_train_batch_end(3)
        assert not model.stop_training  # no validation may run in a fit cut short: go on
        guard.on_train_batch_end(9)
    assert not model.stop_training  # the last step: the epoch ends (and validates) normally


def test_without_the_compiled_flag_an_entry_keeps_the_optimizer_and_still_loads(tmp_path, missing):
    from kerasae.models import Autoencoder
    from kerasae.store import zoo

    model = Autoencoder(image_shape=(4, 4, 1), latent_dim=2)
    model.compile(optimizer="adam")
    x = np.random.default_rng(0).random((8, 4, 4, 1)).astype("float32")
    model.fit(x, epochs=1, verbose=0)
    lean, full = str(tmp_path / "lean.keras"), str(tmp_path / "full.keras")
    zoo.save_model(model, lean)
    missing("keras.Model.compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zoo.save_model(model, full)
    assert os.path.getsize(full) > os.path.getsize(lean)  # the optimizer's slots came along
    np.testing.assert_allclose(keras.saving.load_model(full).reconstruct(x), model.reconstruct(x), rtol=1e-6)


@pytest.mark.backends("torch")
def test_without_the_fused_adam_hooks_torch_trains_the_same_weights(missing):
    from kerasae.models import Autoencoder

    x = np.random.default_rng(0).random((64, 4, 4, 1)).astype("float32")

    def trained():
        keras.utils.set_random_seed(0)
        model = Autoencoder(image_shape=(4, 4, 1), latent_dim=3, seed=0)
        model.compile(optimizer="adam")
        model.fit(x, epochs=2, batch_size=16, shuffle=False, verbose=0)
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    fused = trained()
    missing("torch._fused_adam_")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = trained()
    assert any("torch._fused_adam_" in str(w.message) for w in caught)
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
