"""The benchmark runs in its smallest setting, so it never rots (no timing is asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REQUIRE_BROWSER_ENV, ROOT, unavailable

from kerasae import backend


def _run(script, *args):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_benchmark_runs_the_real_command_end_to_end(tmp_path):
    """benchmarks/run.py: `kerasae train` on shipped recipes as a subprocess, timed from outside, next
    to the reference loops; each target is reported as met or not (no timing is asserted)."""
    output = tmp_path / "results.json"
    # One shipped recipe per suite, so that the three suites together run all three defaults.
    recipe = {"tensorflow": "vae", "jax": "dae", "torch": "ae"}[backend.NAME]
    out = _run("run.py", "--smoke", "--recipes", recipe, "--backends", backend.NAME, "--output", str(output))
    results = json.loads(output.read_text())
    runs = results["recipes"][recipe]["runs"]
    assert set(runs) == {f"kerasae {backend.NAME}", "PyTorch eager", "JAX jit"}
    assert all(run["s_per_epoch"] > 0 for run in runs.values())
    ours = runs[f"kerasae {backend.NAME}"]
    assert 0 < ours["startup_s"] < ours["total_s"] and 0 < ours["end_s"] < ours["total_s"]
    assert 0 <= ours["outside_steps_share"] < 1
    checks = results["recipes"][recipe]["checks"]
    expected = {f"{backend.NAME} speed-up over PyTorch eager", f"{backend.NAME} outside steps"}
    assert expected | ({"jax speed-up over JAX jit"} if backend.NAME == "jax" else set()) == set(checks)
    assert all(isinstance(c["met"], bool) and c["value"] > 0 for c in checks.values())
    assert results["machine"]["hardware"][backend.NAME]
    assert f"| {recipe} | 1,200 | kerasae {backend.NAME} |" in out and f"| {recipe} | 1,200 | PyTorch eager |" in out


@pytest.mark.once
def test_the_hand_conv_loops_train_the_conv_vae_shapes():
    """benchmarks/run.py's PyTorch and JAX hand loops of conv recipes (the speed references of
    conv-vae): an epoch of each on 256 images runs to its end (the full benchmark times them)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import run

    images = (np.random.default_rng(0).random((288, 28, 28, 1)) < 0.3).astype("float32")
    work = {
        "family": "vae",
        "encoder": [{"filters": 8, "kernel_size": 3, "strides": 2}, {"filters": 16, "kernel_size": 3, "strides": 2}],
        "latent": 4,
        "latent_activation": "linear",
        "bernoulli": True,
        "corruption": None,
        "batch": 128,
        "lr": 1e-3,
        "x": images[:256],
        "x_val": images[256:],
    }
    for loop in (run.torch_loop, run.jax_loop):
        ends = loop(work, epochs=2)
        assert len(ends) == 2 and 0 < ends[0] < ends[1]


@pytest.mark.slow
def test_the_draw_cost_diagnostic_runs(tmp_path):
    """benchmarks/rng.py (the cost of the random draws), in its smallest setting, on this backend."""
    rng_output = tmp_path / "rng.json"
    out = _run("rng.py", "--smoke", "--recipes", "dae", "--backends", backend.NAME, "--output", str(rng_output))
    run = json.loads(rng_output.read_text())["runs"][f"dae {backend.NAME}"]
    assert run["with draws"] > 0 and run["without draws"] > 0 and "| dae |" in out


@pytest.mark.slow
@pytest.mark.once
def test_the_diagnostics_run(tmp_path):
    """benchmarks/diagnostics.py in its smallest settings, every part in one run: in-epoch speed of
    the three backends (each in its own subprocess) against the loops, then memory over epochs,
    evaluation cost, scaling and quality per second on the backend the script picks for them."""
    output = tmp_path / "diagnostics.json"
    out = _run(
        "diagnostics.py",
        "--smoke",
        "--parts",
        "speed,memory,eval,scaling,quality",
        "--models",
        "vae",
        "--backends",
        "tensorflow,jax,torch",
        "--output",
        str(output),
    )
    assert out.startswith("DIAGNOSTIC")
    results = json.loads(output.read_text())
    runs = results["models"]["vae"]["runs"]
    assert {"kerasae_tensorflow", "kerasae_jax", "kerasae_torch", "torch_loop", "jax_loop", "gemm_bound"} <= set(runs)
    assert all(run["s_per_epoch"] > 0 and run["samples_per_s"] > 0 for run in runs.values())
    fastest = results["models"]["vae"]["fastest_kerasae"][len("kerasae_") :]
    memory = results["memory_over_epochs"]
    assert memory["backend"] == fastest and memory["epochs"] == [2, 4] and min(memory["peak_rss_mb"]) > 0
    ev = results["evaluation"]
    assert ev["k"] == 20 and 0 < ev["nll"] < 784 * np.log(2) + 100  # nats, of a barely trained model
    assert set(results["scaling"]["images"]) == {"256", "512"} and set(results["scaling"]["hidden"]) == {"64"}
    quality = results["quality_per_second"]
    for run in (quality[f"kerasae_{fastest}"], quality["torch_loop"]):
        assert run["epochs"] >= 1 and -800 < run["test_elbo"] < 0


@pytest.mark.once
def test_the_evaluation_memory_benchmark_runs(tmp_path):
    output = tmp_path / "eval_memory.json"
    _run("eval_memory.py", "--smoke", "--backend", backend.NAME, "--output", str(output))
    points = json.loads(output.read_text())["points"]
    assert {p["model"] for p in points} == {"dense vae", "conv vae (gaussian)"} and len(points) == 2
    assert all(p["peak_after_mb"] >= p["peak_before_mb"] > 0 and np.isfinite(p["nll"]) for p in points)


@pytest.mark.once
def test_the_cli_startup_benchmark_runs(tmp_path):
    """The commands it times start no backend."""
    output = tmp_path / "cli.json"
    _run("cli.py", "--runs", "1", "--output", str(output))
    commands = json.loads(output.read_text())["commands"]
    assert set(commands) == {"--help", "validate recipes/*.yaml", "zoo list", "zoo show vae-mnist"}
    assert all(c["median_s"] > 0 and c["backends_imported"] == [] for c in commands.values())


@pytest.mark.slow
@pytest.mark.once
def test_the_serve_latency_benchmark_runs(tmp_path):
    """benchmarks/serve.py drives `kerasae serve` in Chromium (a server process on this suite's backend)."""
    from test_serve import chromium_path

    if not chromium_path():
        unavailable("no chromium on PATH (python3 tasks.py setup installs it as root)", REQUIRE_BROWSER_ENV)
    output = tmp_path / "serve.json"
    _run("serve.py", "--smoke", "--output", str(output))
    (row,) = json.loads(output.read_text())["results"]
    assert row["entry"] == "vae-mnist" and row["backend"] == backend.NAME and row["moves"] >= 4
    assert 0 < row["median_ms"] <= row["p95_ms"] <= row["max_ms"]


@pytest.mark.slow
@pytest.mark.once
def test_the_torch_profile_diagnostic_runs(tmp_path):
    """benchmarks/torch_profile.py (where a PyTorch-backend step's milliseconds go, next to the hand
    loop), a few steps of a dense and the conv recipe: every phase timed on both sides."""
    output = tmp_path / "torch_profile.json"
    out = _run("torch_profile.py", "--recipes", "ae,conv-vae", "--steps", "4", "--output", str(output))
    for name in ("ae", "conv-vae"):
        ours, hand = (json.loads(output.read_text())["recipes"][name][side] for side in ("kerasae", "hand loop"))
        assert all(ours[p] > 0 for p in ("forward", "backward", "optimizer", "step in fit"))
        assert all(hand[p] > 0 for p in ("forward", "backward", "optimizer", "step"))
        assert f"| {name} | **step** |" in out
