"""The benchmark runs in its smallest setting, so it never rots (no timing is asserted)."""

import json
import os
import subprocess
import sys

from conftest import ROOT

from kerasae import backend


def test_benchmark_smoke(tmp_path):
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--models", "vae",
         "--backends", backend.NAME, "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
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
