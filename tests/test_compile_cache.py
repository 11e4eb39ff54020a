"""On JAX, compiled XLA programs are kept on disk ($KERASAE_JAX_CACHE): a second process that
trains the same model compiles nothing, reads every program back and trains the same weights; past
its size the oldest programs go first."""

import json
import os

import numpy as np
import pytest
from conftest import run_python

pytestmark = pytest.mark.backends("jax")

# A small model fitted for two epochs in a fresh process; prints the compilation cache's hits and
# misses (JAX's own counters), the folder JAX was given and the trained weights' sum.
FIT = """
    import json, jax, keras, numpy as np
    import kerasae
    from kerasae import backend
    counts = {"hits": 0, "misses": 0}
    def count(event, **kwargs):
        for name in counts:
            if event == f"/jax/compilation_cache/cache_{name}":
                counts[name] += 1
    jax.monitoring.register_event_listener(count)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((96, 12), dtype="float32")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(12)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x, batch_size=32, epochs=2, verbose=0)
    model.predict(x[:7], verbose=0)
    weights = float(sum(np.sum(w) for w in model.get_weights()))
    print(json.dumps({**counts, "folder": jax.config.jax_compilation_cache_dir, "weights": weights}))
"""


def _fit(monkeypatch, cache, **env):
    monkeypatch.setenv("KERASAE_JAX_CACHE", str(cache))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return json.loads(run_python(FIT).splitlines()[-1])


def test_a_second_process_reads_every_program_from_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "jax"
    first = _fit(monkeypatch, cache)
    assert first["folder"] == str(cache) and first["misses"] > 0 and first["hits"] == 0
    programs = len(os.listdir(cache))
    assert programs >= first["misses"]  # every program compiled was written (and a lock file)
    second = _fit(monkeypatch, cache)
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert len(os.listdir(cache)) == programs
    np.testing.assert_allclose(second["weights"], first["weights"], rtol=1e-6)


def test_off_and_jax_own_setting_and_an_unwritable_folder_leave_the_cache_alone(tmp_path, monkeypatch):
    from kerasae.backend import jax as jax_backend

    monkeypatch.delenv("KERASAE_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    default = tmp_path / "home" / "kerasae" / "jax"
    assert jax_backend._cache_folder(None) == str(default) and default.is_dir()
    monkeypatch.setenv("KERASAE_JAX_CACHE", str(tmp_path / "chosen"))
    assert jax_backend._cache_folder(None) == str(tmp_path / "chosen")
    # A folder JAX was given (JAX_COMPILATION_CACHE_DIR) is kept, with JAX's own settings.
    assert jax_backend._cache_folder("/somewhere/of/jax") is None
    monkeypatch.setenv("KERASAE_JAX_CACHE", "off")
    assert jax_backend._cache_folder(None) is None
    # A folder that cannot be made (a file's path here; read-only homes are the case met): no cache.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("KERASAE_JAX_CACHE", str(blocked / "jax"))
    assert jax_backend._cache_folder(None) is None


def test_a_cache_past_its_size_loses_its_oldest_programs_first(tmp_path):
    from kerasae.backend import jax as jax_backend

    for age, name in enumerate(["newest", "newer", "older", "oldest"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1e9 - age * 60, 1e9 - age * 60))
    jax_backend._prune(tmp_path, 400)  # within the size: all kept
    assert len(os.listdir(tmp_path)) == 4
    jax_backend._prune(tmp_path, 300)  # past it: down to 3/4 of it, the oldest first
    assert sorted(os.listdir(tmp_path)) == ["newer", "newest"]
