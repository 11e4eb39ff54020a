#!/usr/bin/env python3
"""How fast the command line answers when it computes nothing, as users run it.

    .venv/bin/python benchmarks/cli.py [--runs 7]

Times the installed console script (`.venv/bin/kerasae`), a fresh process each run, for
`--help`, `validate recipes/*.yaml`, `zoo list` and `zoo show vae-mnist`, and reports the median,
minimum and maximum wall-clock seconds. Also checks, in one more process per command, that no
backend (keras, tensorflow, jax, torch) was imported. Results go to benchmarks/cli.json.
"""

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, ".venv", "bin", "kerasae")
COMMANDS = {
    "--help": ["--help"],
    "validate recipes/*.yaml": ["validate", *sorted(glob.glob(os.path.join("recipes", "*.yaml"), root_dir=ROOT))],
    "zoo list": ["zoo", "list"],
    "zoo show vae-mnist": ["zoo", "show", "vae-mnist"],
}
BACKENDS = ("keras", "tensorflow", "jax", "torch")
# Runs the CLI in-process and reports which backends it imported.
PROBE = (
    "import sys; from kerasae import cli\n"
    "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    f"print('IMPORTED', ','.join(m for m in {BACKENDS!r} if m in sys.modules), file=sys.stderr)\n"
)


def time_command(args, runs):
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([SCRIPT, *args], cwd=ROOT, capture_output=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"kerasae {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return seconds


def imported_backends(args):
    python = os.path.join(ROOT, ".venv", "bin", "python")
    done = subprocess.run([python, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True)
    line = [text for text in done.stderr.splitlines() if text.startswith("IMPORTED")][-1]
    return [m for m in line.split(" ", 1)[1].split(",") if m] if " " in line else []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "cli.json"))
    args = parser.parse_args()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": args.runs, "commands": {}}
    print("| command | median s | min s | max s | backends imported |\n| --- | ---: | ---: | ---: | --- |")
    for name, command in COMMANDS.items():
        seconds = time_command(command, args.runs)
        imported = imported_backends(command)
        results["commands"][name] = {
            "median_s": round(statistics.median(seconds), 3),
            "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3),
            "backends_imported": imported,
        }
        print(
            f"| `kerasae {name}` | {statistics.median(seconds):.3f} | {min(seconds):.3f} | {max(seconds):.3f} | "
            f"{', '.join(imported) or 'none'} |"
        )
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
