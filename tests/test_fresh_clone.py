"""The README's main command, `python3 tasks.py train`, on a fresh clone that holds the shipped zoo.

The clone is a `git clone` of this checkout (committed files only, shipped zoo included). Its
`.venv` is this test run's interpreter, marked as set up for the clone's pyproject.toml, so that
`tasks.py` goes straight to training (its install step would need the network); `PYTHONPATH`
makes the clone's own `kerasae` the one that runs. The command is shortened through `--set` only.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REQUIRE_BROWSER_ENV, ROOT, unavailable

SHORTER = ["--set", "train.epochs=1", "--set", "data.limit=600", "--set", "outputs.epochs=[1]"]


def _clone(tmp_path):
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.fail("this test clones the checkout: it needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", ROOT, str(clone)], check=True, timeout=120)
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    os.symlink(sys.executable, bin_dir / "python")
    script = bin_dir / "kerasae"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kerasae.cli "$@"\n')
    script.chmod(0o755)
    stamp = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()
    (clone / ".venv" / ".kerasae-installed").write_text(stamp)
    return clone


def _tree(folder):
    return {
        os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(folder)
        for f in files
    }


# The README's commands as a user types them, without KERAS_BACKEND (Keras's default, TensorFlow):
# the same in every suite, so they run in one.
pytestmark = pytest.mark.once


def test_the_readme_main_command_trains_a_new_version_beside_the_shipped_entry(tmp_path):
    clone = _clone(tmp_path)
    shipped = _tree(clone / "zoo" / "dae-mnist")
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("KERASAE_ZOO", None)
    env.pop("KERAS_BACKEND", None)  # as on a user's machine
    result = subprocess.run(
        [sys.executable, "tasks.py", "train", *SHORTER], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert "zoo/dae-mnist exists: training into a new version, 'dae-mnist-v2'" in result.stdout
    assert lines[-1] == f"wrote {os.path.join('zoo', 'dae-mnist-v2')}", lines[-5:]
    entry = clone / "zoo" / "dae-mnist-v2"
    for name in ("model.keras", "recipe.yaml", "metrics.json", "README.md", "check.npz", "figures/denoising.png"):
        assert (entry / name).is_file(), name
    assert _tree(clone / "zoo" / "dae-mnist") == shipped  # the shipped entry is untouched
    assert "name: dae-mnist-v2" in (entry / "recipe.yaml").read_text()
    assert "[dae-mnist-v2](dae-mnist-v2/README.md)" in (clone / "zoo" / "README.md").read_text()

    # The new entry loads by its name from the clone and gives the outputs it stored.
    code = (
        "import kerasae, numpy as np; m = kerasae.load('dae-mnist-v2'); c = np.load('zoo/dae-mnist-v2/check.npz');"
        "print(float(np.abs(m.reconstruct(c['x']) - c['reconstructions']).max()), type(m).__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    error, kind = loaded.stdout.split()
    assert kind == "DenoisingAutoencoder" and float(error) < 1e-4
    assert np.isfinite(float(error))


def _port_free(port):
    from kerasae.serve import server

    try:
        server.bind("127.0.0.1", port).close()
    except OSError:
        return False
    return True


def test_the_readme_serve_command_opens_the_shipped_zoo_at_port_8000(tmp_path):
    """`.venv/bin/kerasae serve` as the README has it: no options, so ./zoo at http://127.0.0.1:8000/."""
    import signal

    import httpx

    if not _port_free(8000):  # in CI nothing else listens there
        unavailable("port 8000 is taken on this machine (another `kerasae serve`?)", REQUIRE_BROWSER_ENV)
    clone = _clone(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("KERASAE_ZOO", None)
    env.pop("KERAS_BACKEND", None)  # as on a user's machine
    process = subprocess.Popen(
        [str(clone / ".venv" / "bin" / "kerasae"), "serve"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from kerasae.store import zoo

        names = zoo.names(str(clone / "zoo"))
        first = process.stdout.readline()
        assert first == f"serving {clone / 'zoo'} ({len(names)} entries) at http://127.0.0.1:8000/\n", first
        index = httpx.get("http://127.0.0.1:8000/", timeout=60)
        assert index.status_code == 200
        for name in names:
            assert f'href="/entries/{name}/"' in index.text, name
        page = httpx.get("http://127.0.0.1:8000/entries/dae-mnist/", timeout=60)
        assert page.status_code == 200 and "<h1>dae-mnist</h1>" in page.text
        answer = httpx.post(
            "http://127.0.0.1:8000/api/entries/dae-mnist/reconstruct", json={"source": {"test": 0}}, timeout=300
        )
        assert answer.status_code == 200 and answer.json()["output"].startswith("data:image/png;base64,")
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _, errors = process.communicate(timeout=60)
    # Ctrl-C ends it as it ends every kerasae command: one line, exit code 130 (128 + SIGINT).
    assert process.returncode == 130 and errors.strip().splitlines()[-1] == "interrupted", errors[-2000:]
    assert "Traceback" not in errors
