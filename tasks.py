#!/usr/bin/env python3
"""Set-up and entry points for a fresh checkout: needs only python3 (>= 3.11) and pip.

    python3 tasks.py train [RECIPE] [kerasae train options]   # default: recipes/dae.yaml
    python3 tasks.py test [pytest options]                     # the suite on tensorflow, jax, torch
    python3 tasks.py test --slow                               # ... with the slow tier (before a release)
    python3 tasks.py lint                                      # ruff check and ruff format --check

Each creates `.venv/` in the checkout when it is missing and (re)install the
project with its `dev` extras whenever pyproject.toml changed. The torch
backend is pinned to torch==2.13.0, a CPU build on this team's machines.
`setup` and `test` also install Debian's chromium for the browser tests when
it is missing and they run as root (CI does).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
STAMP = os.path.join(VENV, ".kerasae-installed")
BACKENDS = ("tensorflow", "jax", "torch")


def _say(message):
    print(f"[tasks] {message}", flush=True)


def _run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=ROOT, **kwargs)


def setup():
    """Creates .venv and installs kerasae[dev] into it when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- tasks.py runs on whatever python3 a machine has
        sys.exit(f"kerasae needs Python >= 3.11; this is {sys.version.split()[0]}")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        wanted = hashlib.sha256(f.read()).hexdigest()
    if os.path.exists(STAMP) and open(STAMP).read().strip() == wanted:
        return
    if not os.path.exists(PYTHON):
        _say("creating .venv")
        _run([sys.executable, "-m", "venv", VENV], check=True)
    _say("installing kerasae[dev] (keras, tensorflow, jax, torch==2.13.0, test tools) into .venv")
    pip = [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # torch first and pinned, so no other requirement can pull a CUDA build.
    _run(pip + ["torch==2.13.0"], check=True)
    _run(pip + ["-e", ".[dev]"], check=True)
    with open(STAMP, "w") as f:
        f.write(wanted)


def browser():
    """Debian's Chromium for the browser tests of `kerasae serve` (Playwright drives it), installed
    with apt-get when missing and this runs as root (as CI does); otherwise those tests skip."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        _say("no chromium on PATH: the browser tests will skip (as root: apt-get install chromium)")
        return
    _say("installing Debian's chromium for the browser tests (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], check=True, env=env)
    _run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)


def train(args):
    recipe = args[0] if args and not args[0].startswith("-") else os.path.join("recipes", "dae.yaml")
    rest = args[1:] if args and not args[0].startswith("-") else args
    return _run([os.path.join(VENV, "bin", "kerasae"), "train", recipe, *rest]).returncode


def _report(junit):
    """(passed, failed, skipped, skip lines) from a pytest JUnit XML report."""
    try:
        suite = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return 0, 1, 0, []
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skips = [
        f"{case.get('classname')}::{case.get('name')}: {skip.get('message')}"
        for case in suite.iter("testcase")
        for skip in case.findall("skipped")
    ]
    return tests - failed - skipped, failed, skipped, skips


def test(args):
    """Runs the suite once per backend (backend-independent tests in one of them), then one total line."""
    totals = [0, 0, 0]
    status = 0
    backends = os.environ.get("KERASAE_TEST_BACKENDS", ",".join(BACKENDS)).split(",")
    # Tests marked `once` run in one suite: torch's, the shortest, unless it is not among them.
    once = os.environ.get("KERASAE_ONCE_BACKEND", "torch" if "torch" in backends else backends[0])
    # Two pytest workers (pytest-xdist), a test file each at a time, so a module's fixtures are built
    # once: on 2 cores the jax suite took 656 s instead of 934 s (tests wait on subprocesses, the
    # browser and Python as much as on arithmetic). KERASAE_TEST_WORKERS=1 runs one process.
    workers = int(os.environ.get("KERASAE_TEST_WORKERS", "2"))
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    # CI (.ci/run) allows no skip: every test it has must run.
    no_skips = bool(os.environ.get("KERASAE_NO_SKIPS"))
    # JAX's compiled programs are cached on disk (kerasae's default, ~/.cache/kerasae/jax): the
    # suite's processes share one cache, empty at the start of each run so that runs time alike.
    jax_cache = tempfile.mkdtemp(prefix="kerasae-tests-jax-")
    # XLA (JAX's and TensorFlow's) compiles the suites' many small programs with LLVM's optimizations
    # off: the programs compute the same numbers, compile ~35% faster and run slower, and the tests
    # time nothing (the benchmarks, which do, run with XLA's defaults). JAX's every_recipe and
    # families tests took 242 s instead of 319 s here; TensorFlow's every_recipe and faults 160 s
    # instead of 183 s. A level set in $XLA_FLAGS is kept.
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in xla_flags:
        xla_flags = f"{xla_flags} --xla_backend_optimization_level=0".strip()
    for backend in backends:
        junit = os.path.join(VENV, f"junit-{backend}.xml")
        env = {**os.environ, "KERAS_BACKEND": backend, "KERASAE_ONCE_BACKEND": once, "KERASAE_JAX_CACHE": jax_cache}
        env["XLA_FLAGS"] = xla_flags
        _say(f"pytest on KERAS_BACKEND={backend}" + (" (and the backend-independent tests)" if backend == once else ""))
        start = time.time()
        pytest = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", *parallel, "--durations=25"]
        rc = _run([*pytest, f"--junitxml={junit}", *args], env=env).returncode
        rc = 0 if rc == 5 else rc  # pytest's "no tests ran": this suite had none of those asked for
        passed, failed, skipped, skips = _report(junit)
        _say(f"{backend}: {passed} passed, {failed} failed, {skipped} skipped in {time.time() - start:.0f} s")
        if skips and no_skips:
            _say(f"{backend}: {skipped} skipped, and $KERASAE_NO_SKIPS allows none:")
            print("\n".join(f"  {line}" for line in skips), flush=True)
            rc = rc or 1
        totals = [t + c for t, c in zip(totals, (passed, failed, skipped))]
        status = status or rc
    shutil.rmtree(jax_cache, ignore_errors=True)
    print(f"total: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return status or (5 if not any(totals) else 0)


def lint():
    """ruff's lint rules and formatting (configured in pyproject.toml) over the whole checkout."""
    ruff = os.path.join(VENV, "bin", "ruff")
    checked = _run([ruff, "check", "."]).returncode
    formatted = _run([ruff, "format", "--check", "."]).returncode
    return checked or formatted


def main():
    commands = {"train": train, "test": test, "lint": lambda args: lint(), "setup": lambda args: 0}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    setup()
    if sys.argv[1] in ("setup", "test"):
        browser()
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
