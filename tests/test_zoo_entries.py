"""The committed zoo: every entry loads on this backend, gives the outputs it was shipped
with, reproduces its stored test metrics, and its cards say what its metrics file says.

The loading and metric tests run in every backend's suite, so together the runs prove that each
`.keras` file loads on TensorFlow, JAX and PyTorch; the cards and the table, text only, are checked
once. Each entry is checked against `check.npz`: the first 32 test digits with the codes and
reconstructions the entry gave them when it was written (the digits in the top row of its
reconstructions figure). Its stored test metrics need the data it was trained on: without the
MNIST file (a fresh offline machine) that test skips, and fails where $KERASAE_REQUIRE_DATA is set (CI).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from conftest import REQUIRE_DATA_ENV, ROOT, full_mnist, unavailable

import kerasae
from kerasae import anomaly, data
from kerasae.assess import cards, evaluate
from kerasae.data import series
from kerasae.spec import recipe
from kerasae.store import zoo

ZOO = os.path.join(ROOT, "zoo")
ENTRIES = sorted(name for name, _ in zoo.entries(ZOO))
# Stored outputs were computed on the training backend; others differ by float32 round-off.
OUTPUT_ATOL = 1e-4


def _metrics(name):
    with open(os.path.join(ZOO, name, zoo.METRICS_FILE)) as f:
        return json.load(f)


@pytest.mark.once
def test_the_zoo_holds_the_seed_entries():
    assert {
        "ae-mnist",
        "ae-linear-mnist",
        "dae-mnist",
        "vae-mnist",
        "conv-vae-mnist",
        "cvae-mnist",
        "iwae-mnist",
        "vae-mnist-best",
    } <= set(ENTRIES)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(ZOO) for f in files)
    assert total < 50 * 2**20, f"the zoo holds {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_loads_by_name_and_gives_its_stored_outputs(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./zoo here: the name is found in the checkout's zoo
    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    model = kerasae.load(name)
    with np.load(os.path.join(ZOO, name, zoo.CHECK_FILE)) as check:
        x, y = check["x"], check["y"] if "y" in check.files else None
        np.testing.assert_allclose(model.reconstruct(x, y), check["reconstructions"], atol=OUTPUT_ATOL)
        np.testing.assert_allclose(model.encode(x, y), check["codes"], atol=OUTPUT_ATOL)
    # The plain Keras call the model cards show.
    same = keras.saving.load_model(os.path.join(ZOO, name, zoo.MODEL_FILE))
    assert type(same) is type(model)
    # Shipped without optimizer state: a model for use, a third of the size for Adam.
    assert not same.compiled


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_reproduces_its_stored_test_metrics(name):
    metrics = _metrics(name)
    r = recipe.load(os.path.join(ZOO, name, zoo.RECIPE_FILE))
    dataset = data.load(r.data, seed=r.train.seed)
    if dataset.record.get("sha256") != metrics["data"]["sha256"]:
        # The same data set in other bytes is a wrong entry; another one (the offline fallback for
        # MNIST) cannot check it.
        assert dataset.record["name"] != metrics["data"]["name"], f"{name}: its test data changed since training"
        unavailable(f"needs the data {name} was trained on ({metrics['data']['source']})", REQUIRE_DATA_ENV)
    model = zoo.load(os.path.join(ZOO, name))
    labels = dataset.y_test
    stored = metrics["evaluation"]
    got = evaluate.reconstruction_metrics(dataset.x_test, model.reconstruct(dataset.x_test, labels))
    assert got.keys() == stored["reconstruction"].keys()  # bce and psnr only for images in [0, 1]
    for key in got:
        assert got[key] == pytest.approx(stored["reconstruction"][key], rel=1e-4), key
    if "elbo" in stored:
        # One Monte Carlo sample per digit: other backends draw other noise. Over 10,000
        # digits the mean moves by ~0.05 nats; 0.5 is ten times that.
        model.compile(optimizer="adam")
        inputs = model.inputs_for(dataset.x_test, labels)
        terms = model.evaluate(*inputs, batch_size=500, verbose=0, return_dict=True)
        assert -(terms["reconstruction_loss"] + terms["kl_loss"]) == pytest.approx(stored["elbo"], abs=0.5)
    if "anomaly" in stored and model.score_kind == "reconstruction":  # deterministic scores, the same flags
        found = anomaly.summary(model, model.score(dataset.x_test, labels), dataset.anomalous)
        for key in ("threshold", "flagged", "auroc", "precision", "recall"):
            if key in stored["anomaly"]:
                assert found[key] == pytest.approx(stored["anomaly"][key], rel=1e-3, abs=1e-6), key
    kept = series.load(os.path.join(ZOO, name))
    if kept is not None:  # a series: the test steps' scores against the stored step threshold
        dataset.series.threshold, dataset.series.quantile = kept["threshold"], kept["quantile"]
        found = series.summary(model, dataset.series)
        for key in ("flagged", "auroc", "precision", "recall", "events_detected"):
            assert found[key] == pytest.approx(stored["anomaly"]["steps"][key], rel=1e-3), key


def _flat(metrics, prefix=""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        elif key != "seconds":
            yield f"{prefix}{key}", value


@pytest.mark.once
@pytest.mark.mnist
def test_kerasae_eval_on_a_shipped_entry_reproduces_its_metrics_and_card(tmp_path):
    """The command as a user runs it, on a copy of the shipped linear AE (eval rewrites metrics and cards)."""
    full_mnist()
    entry = shutil.copytree(os.path.join(ZOO, "ae-linear-mnist"), tmp_path / "zoo" / "ae-linear-mnist")
    command = [os.path.join(os.path.dirname(sys.executable), "kerasae"), "eval", str(entry), "--json"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh, stored = dict(_flat(json.loads(result.stdout))), dict(_flat(_metrics("ae-linear-mnist")["evaluation"]))
    assert fresh.keys() == stored.keys()
    for key, value in stored.items():
        assert fresh[key] == (value if isinstance(value, (str, bool)) else pytest.approx(value, rel=1e-4)), key
    # The seed's claim on the real thing: the linear AE's decoder spans PCA's subspace, within 5 degrees.
    assert 0 <= max(json.loads(result.stdout)["principal_angles_deg"]) < 5.0
    assert (entry / zoo.CARD_FILE).read_text(encoding="utf-8") == shipped_text(os.path.join(ZOO, "ae-linear-mnist"))


@pytest.mark.once
@pytest.mark.parametrize("name", ENTRIES)
def test_entry_card_matches_its_metrics(name, tmp_path):
    entry = os.path.join(ZOO, name)
    r = recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    shutil.copytree(os.path.join(entry, zoo.FIGURES_DIR), tmp_path / zoo.FIGURES_DIR)
    if os.path.isdir(os.path.join(entry, zoo.SAVED_MODEL_DIR)):
        os.mkdir(tmp_path / zoo.SAVED_MODEL_DIR)  # the card says whether it ships one
    if os.path.isfile(os.path.join(entry, zoo.BENCHMARK_FILE)):  # ... and shows a benchmark's table
        shutil.copy(os.path.join(entry, zoo.BENCHMARK_FILE), tmp_path / zoo.BENCHMARK_FILE)
    cards.entry_card(str(tmp_path), r.to_dict(), _metrics(name))
    with open(os.path.join(entry, zoo.CARD_FILE), encoding="utf-8") as shipped:
        assert (tmp_path / zoo.CARD_FILE).read_text(encoding="utf-8") == shipped.read()
    for key, value in _metrics(name)["evaluation"]["reconstruction"].items():
        assert cards.fmt(value) in shipped_text(entry), key


def shipped_text(entry):
    with open(os.path.join(entry, zoo.CARD_FILE), encoding="utf-8") as f:
        return f.read()


@pytest.mark.once
def test_zoo_table_matches_the_entries(tmp_path):
    copy = tmp_path / "zoo"
    for name in ENTRIES:
        (copy / name).mkdir(parents=True)
        for f in (zoo.MODEL_FILE, zoo.RECIPE_FILE, zoo.METRICS_FILE):
            shutil.copy(os.path.join(ZOO, name, f), copy / name / f)
    cards.zoo_table(str(copy))
    with open(os.path.join(ZOO, "README.md"), encoding="utf-8") as shipped:
        assert (copy / "README.md").read_text(encoding="utf-8") == shipped.read()


# A machine's absolute path: a POSIX path under a top folder (looked for in every byte), or a
# Windows drive (looked for in text only: binary weights hold "Z:\\R" by chance).
MACHINE_PATH = re.compile(rb"(?<![\w.~-])/(?:home|root|work|tmp|Users|mnt|opt|srv|var|data|private|media)/")
WINDOWS_PATH = re.compile(rb"\b[A-Za-z]:\\{1,2}\w")


def _machine_path(blob):
    try:
        blob.decode("utf-8")
        text = True
    except UnicodeDecodeError:
        text = False
    return MACHINE_PATH.search(blob) or (WINDOWS_PATH.search(blob) if text else None)


def _committed_zoo_files():
    listed = subprocess.run(["git", "ls-files", "-z", "zoo"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        return [os.path.join(ROOT, f) for f in listed.stdout.decode().split("\0") if f]
    return [os.path.join(d, f) for d, _, files in os.walk(ZOO) for f in files]  # not a git checkout


def _contents(path):
    """The file's bytes, and those of each member when it is a zip archive (.keras, .npz)."""
    with open(path, "rb") as f:
        yield path, f.read()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}:{member}", archive.read(member)


@pytest.mark.once
def test_the_committed_zoo_names_no_machine_path():
    files = _committed_zoo_files()
    assert len(files) > 8 * 5
    found = [
        f"{where}: {match.group().decode(errors='replace')!r}"
        for path in files
        for where, blob in _contents(path)
        for match in [_machine_path(blob)]
        if match
    ]
    assert not found, "\n".join(found)
    for name in ENTRIES:
        assert not os.path.isabs(_metrics(name)["data"]["source"]), name


@pytest.mark.once
def test_the_machine_path_check_sees_a_path():
    assert _machine_path(b'"source": "/work/shared/data/mnist.npz"')
    assert _machine_path(b"from `C:\\Users\\me\\mnist.npz`") and _machine_path(b'"D:\\\\data"')
    assert not _machine_path(b"mnist.npz of keras.datasets.mnist via $KERASAE_DATA_DIR; figures/loss.png")
    assert not _machine_path(b"\xff\xfeZ:\\R")  # binary


@pytest.mark.once
def test_a_card_names_the_corruption_by_its_settings():
    assert "| corruption | masking, p 0.2 |" in shipped_text(os.path.join(ZOO, "dae-mnist"))
    assert "| corruption | none |" in shipped_text(os.path.join(ZOO, "vae-mnist"))


@pytest.mark.once
def test_the_zoo_table_says_why_a_conditional_probe_is_low():
    with open(os.path.join(ZOO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert "a conditional family is given the digit, so its code is meant to leave it out" in text
