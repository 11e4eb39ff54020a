#!/usr/bin/env python3
"""How long a slider move takes to become a new image on `kerasae serve`'s page, as users run it.

    .venv/bin/python benchmarks/serve.py [--moves 60] [--backends tensorflow,jax,torch]
    .venv/bin/python benchmarks/serve.py --smoke      # a few moves, one entry, this backend

Per backend: starts the installed console script (`.venv/bin/kerasae serve --port 0`) with
KERAS_BACKEND set, opens each entry's page in headless Chromium (Playwright, the system's
browser), and drags the first slider with the mouse, one step at a time, waiting for each image.
The page times each move itself (`window.kerasae.decodeLatencies`: from the slider's `input`
event to the decoded image's `decode()` resolving; the fetch, the Keras model on the server and
the PNG both ways included). Reports the median, 95th percentile and maximum milliseconds, and
writes benchmarks/serve.json.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, ".venv", "bin", "kerasae")
ENTRIES = ("vae-mnist", "vae-mnist-best", "conv-vae-mnist", "wae-mnist")
TARGET_MS = 50
# Chromium off the network (this machine has none), as root.
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def start_server(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    process = subprocess.Popen(
        [SCRIPT, "serve", "--zoo", os.path.join(ROOT, "zoo"), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    if " at http" not in line:
        process.kill()
        raise SystemExit(f"kerasae serve did not start on {backend}: {line!r}")
    return process, line.split(" at ")[1].strip().rstrip("/")


def slider_moves(page, url, entry, moves):
    """Latencies (ms) of `moves` one-step drags of the entry's first slider, each waited for."""
    page.goto(f"{url}/entries/{entry}/")
    page.wait_for_function("window.kerasae.ready && window.kerasae.reconstructions > 0", timeout=120_000)
    slider = page.locator("#sliders input").first
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    # Back and forth across the slider in steps of a few pixels, each one a new value.
    sweep = np.linspace(box["x"] + 4, box["x"] + box["width"] - 4, moves // 2 + 1)
    xs = np.concatenate([sweep, sweep[-2::-1]])[: moves + 1]
    page.mouse.move(xs[0], y)
    page.mouse.down()
    warm = page.evaluate("window.kerasae.decodeLatencies.length")
    for x in xs[1:]:
        done, value = page.evaluate("window.kerasae.decodes"), slider.input_value()
        page.mouse.move(x, y)
        if slider.input_value() != value:  # a move within one step of the slider fires nothing
            page.wait_for_function(f"window.kerasae.decodes > {done}", timeout=30_000)
    page.mouse.up()
    return page.evaluate("window.kerasae.decodeLatencies")[warm:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--entries", default=",".join(ENTRIES))
    parser.add_argument("--smoke", action="store_true", help="5 moves on vae-mnist, this process's backend")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "serve.json"))
    args = parser.parse_args()
    if args.smoke:
        args.moves, args.entries = 5, "vae-mnist"
        args.backends = os.environ.get("KERAS_BACKEND", "tensorflow")
    chromium = os.environ.get("KERASAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium on PATH (python3 tasks.py setup installs Debian's as root)")
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        for backend in args.backends.split(","):
            process, url = start_server(backend)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                for entry in args.entries.split(","):
                    ms = np.asarray(slider_moves(page, url, entry, args.moves))
                    row = {
                        "backend": backend,
                        "entry": entry,
                        "moves": len(ms),
                        "median_ms": float(np.median(ms)),
                        "p95_ms": float(np.percentile(ms, 95)),
                        "max_ms": float(ms.max()),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
                page.close()
            finally:
                process.terminate()
                process.wait(timeout=60)
        browser.close()
    report = {
        "what": "slider move -> new image on the entry page of `kerasae serve`, measured in the page",
        "target_ms": TARGET_MS,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "browser": chromium,
        "results": results,
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print("| backend | entry | moves | median ms | p95 ms | max ms | under 50 ms (p95) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        met = "yes" if r["p95_ms"] < TARGET_MS else "no"
        print(
            f"| {r['backend']} | {r['entry']} | {r['moves']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {met} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
