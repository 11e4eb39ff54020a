"""The benchmark runs in its smallest setting, so it never rots (no timing is asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import ROOT

from kerasae import backend


def test_benchmark_smoke(tmp_path):
    output = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "run.py"),
            "--smoke",
            "--models",
            "vae",
            "--backends",
            backend.NAME,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    runs = results["models"]["vae"]["runs"]
    assert {f"kerasae_{backend.NAME}", "torch_loop", "jax_loop", "gemm_bound"} <= set(runs)
    assert all(run["s_per_epoch"] > 0 and run["samples_per_s"] > 0 for run in runs.values())
    assert runs[f"kerasae_{backend.NAME}"]["peak_rss_mb"] > 0
    ratios = results["models"]["vae"]["ratios"]
    assert f"kerasae_{backend.NAME}_speedup_vs_torch_loop" in ratios
    assert "| kerasae_" in result.stdout  # the Markdown table
    # The other parts, on this backend.
    memory = results["memory_over_epochs"]
    assert memory["epochs"] == [2, 4] and min(memory["peak_rss_mb"]) > 0
    ev = results["evaluation"]
    assert ev["k"] == 20 and 0 < ev["nll"] < 784 * np.log(2) + 100  # nats, of a barely trained model
    assert ev["nll_seconds"] > 0 and ev["decoder_seconds"] > 0 and ev["rss_after_large_k_mb"] > 0
    assert set(results["scaling"]["images"]) == {"256", "512"} and set(results["scaling"]["hidden"]) == {"64"}
    quality = results["quality_per_second"]
    for run in (quality[f"kerasae_{backend.NAME}"], quality["torch_loop"]):
        assert run["epochs"] >= 1 and -800 < run["test_elbo"] < 0
    assert "## Test ELBO after 3 s" in result.stdout


def test_cli_and_evaluation_memory_benchmarks_run(tmp_path):
    cli_out, memory_out = tmp_path / "cli.json", tmp_path / "eval_memory.json"
    for script, args in (
        ("cli.py", ["--runs", "1", "--output", str(cli_out)]),
        ("eval_memory.py", ["--smoke", "--backend", backend.NAME, "--output", str(memory_out)]),
    ):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    commands = json.loads(cli_out.read_text())["commands"]
    assert set(commands) == {"--help", "validate recipes/*.yaml", "zoo list", "zoo show vae-mnist"}
    assert all(c["median_s"] > 0 and c["backends_imported"] == [] for c in commands.values())
    points = json.loads(memory_out.read_text())["points"]
    assert {p["model"] for p in points} == {"dense vae", "conv vae (gaussian)"} and len(points) == 2
    assert all(p["peak_after_mb"] >= p["peak_before_mb"] > 0 and np.isfinite(p["nll"]) for p in points)
