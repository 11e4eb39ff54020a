#!/usr/bin/env python3
"""Set-up and entry points for a fresh checkout: needs only python3 (>= 3.11) and pip.

    python3 tasks.py train [RECIPE] [kerasae train options]   # default: recipes/dae.yaml
    python3 tasks.py test [pytest options]                     # the suite on tensorflow, jax, torch
    python3 tasks.py lint                                      # ruff check and ruff format --check

Each creates `.venv/` in the checkout when it is missing and (re)install the
project with its `dev` extras whenever pyproject.toml changed. The torch
backend is pinned to torch==2.13.0, a CPU build on this team's machines.
"""

import hashlib
import os
import subprocess
import sys
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


def train(args):
    recipe = args[0] if args and not args[0].startswith("-") else os.path.join("recipes", "dae.yaml")
    rest = args[1:] if args and not args[0].startswith("-") else args
    return _run([os.path.join(VENV, "bin", "kerasae"), "train", recipe, *rest]).returncode


def _counts(junit):
    """(passed, failed, skipped) from a pytest JUnit XML report."""
    try:
        suite = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return 0, 1, 0
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return tests - failed - skipped, failed, skipped


def test(args):
    """Runs the same pytest suite once per backend -- the backends side by side, each in its own
    process with its own temporary folder and log, printed whole as each ends -- then one total line.
    KERASAE_TEST_SERIAL=1 runs them one after another instead."""
    backends = os.environ.get("KERASAE_TEST_BACKENDS", ",".join(BACKENDS)).split(",")
    serial = os.environ.get("KERASAE_TEST_SERIAL") == "1"
    running, results = {}, {}
    for backend in backends:
        running[backend] = _start_suite(backend, args)
        if serial:
            results[backend] = _finish_suite(backend, *running.pop(backend))
    heard = time.time()
    while running:
        time.sleep(POLL_S)
        for backend in [b for b, (process, *_) in running.items() if process.poll() is not None]:
            results[backend] = _finish_suite(backend, *running.pop(backend))
        if running and time.time() - heard > HEARTBEAT_S:  # CI sees the run is alive
            _say(f"still running: {', '.join(running)}")
            heard = time.time()
    totals = [sum(counts[i] for counts, _ in results.values()) for i in range(3)]
    print(f"total: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return next((rc for _, rc in results.values() if rc), 0)


POLL_S = 5
HEARTBEAT_S = 300


def _start_suite(backend, args):
    """Starts pytest on one backend; its output goes to a log file until it ends."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    junit = os.path.join(VENV, f"junit-{backend}.xml")
    if os.path.exists(junit):
        os.remove(junit)  # a suite that dies before writing its report counts as failed, not as the last run
    log = open(os.path.join(VENV, f"pytest-{backend}.log"), "w")
    basetemp = os.path.join(VENV, f"pytest-tmp-{backend}")  # per suite: pytest empties it at the start
    cmd = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", f"--basetemp={basetemp}", *args]
    _say(f"pytest on KERAS_BACKEND={backend}")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log, junit, time.time()


def _finish_suite(backend, process, log, junit, start):
    """Waits for one suite, prints its log and its counts; returns ((passed, failed, skipped), rc)."""
    rc = process.wait()
    log.close()
    with open(log.name) as f:
        sys.stdout.write(f.read())
    counts = _counts(junit)
    _say(f"{backend}: {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped in {time.time() - start:.0f} s")
    return counts, rc


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
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
