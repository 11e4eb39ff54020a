"""`kerasae train / validate / zoo list / denoise / sample / interpolate`, end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import RECIPES, ROOT, copy_entry, small_recipe

import kerasae
from kerasae import cli, data
from kerasae.assess import fid
from kerasae.spec import recipe
from kerasae.store import export, zoo


def _recipe_file(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _no_staging_left(zoo_dir):
    """No staging folder, and no run's checkpoints: `.runs/` keeps only its (unlocked) lock files."""
    if not os.path.isdir(zoo_dir):
        return True
    runs = os.path.join(zoo_dir, zoo.RUNS_DIR)
    leftovers = [n for n in os.listdir(zoo_dir) if n.startswith(".") and n != zoo.RUNS_DIR]
    return not leftovers and all(n.endswith(".lock") for n in (os.listdir(runs) if os.path.isdir(runs) else []))


def _entries(zoo_dir):
    return sorted(n for n in os.listdir(zoo_dir) if not n.startswith("."))


def test_train_writes_a_complete_entry(tmp_path, mnist_like, zoo_dir, capsys):
    recipe = small_recipe("dae", mnist_like, outputs={"figures": ["reconstructions", "loss"], "epochs": [1, 2]})
    path = _recipe_file(tmp_path, recipe)
    assert cli.main(["train", path, "--zoo", zoo_dir, "--quiet", "--set", "train.epochs=3"]) == 0
    entry = os.path.join(zoo_dir, "test-dae")
    assert f"wrote {entry}" in capsys.readouterr().out
    for name in (
        zoo.MODEL_FILE,
        zoo.RECIPE_FILE,
        zoo.METRICS_FILE,
        zoo.HISTORY_FILE,
        "figures/reconstructions.png",
        "figures/loss.png",
    ):
        assert os.path.isfile(os.path.join(entry, name)), name
    assert _no_staging_left(zoo_dir)

    metrics = json.load(open(os.path.join(entry, zoo.METRICS_FILE)))
    assert metrics["epochs"] == 3 and metrics["family"] == "dae"
    assert (
        set(metrics["train"]) == set(metrics["validation"]) == set(metrics["test"]) == {"loss", "reconstruction_loss"}
    )
    assert metrics["data"]["sizes"] == {"train": 480, "validation": 120, "test": 200}
    assert metrics["data"]["sha256"]["x_train"] and metrics["versions"]["keras"]
    resolved = yaml.safe_load(open(os.path.join(entry, zoo.RECIPE_FILE)))
    assert resolved["train"]["epochs"] == 3 and resolved["corruption"] == {"type": "masking", "p": 0.2, "sigma": None}
    history = open(os.path.join(entry, zoo.HISTORY_FILE)).read().splitlines()
    assert history[0].split(",")[0] == "epoch" and len(history) == 4

    model = zoo.load("test-dae", zoo_dir)
    assert type(model).__name__ == "DenoisingAutoencoder"
    _gives_its_stored_outputs(model, entry)
    # The test loss is the mean over the 200 test images (one call of the test step, shared with
    # the ELBO's evaluation), not a mean of unequal batches' means (6 of 32 and 1 of 8).
    resolved = kerasae.spec.recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    x_test = data.load(resolved.data, seed=resolved.train.seed).x_test
    loss = model.compute_losses(model.model_inputs(x_test), training=False)["loss"]
    assert metrics["test"]["loss"] == pytest.approx(float(loss), rel=1e-5)

    capsys.readouterr()
    assert cli.main(["zoo", "list", "--zoo", zoo_dir]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "family", "latent"] and table[1].split()[:3] == ["test-dae", "dae", "8"]


def _gives_its_stored_outputs(model, entry):
    """The reloaded model's reconstructions and codes of the entry's check images are those stored."""
    with np.load(os.path.join(entry, zoo.CHECK_FILE)) as check:
        np.testing.assert_allclose(model.reconstruct(check["x"]), check["reconstructions"], atol=1e-5)
        np.testing.assert_allclose(model.encode(check["x"]), check["codes"], atol=1e-5)


def test_a_name_the_zoo_holds_trains_into_a_new_version(tmp_path, mnist_like, shared_zoo, zoo_dir, capsys):
    entry = copy_entry(shared_zoo, "test-ae", zoo_dir)  # an entry of the recipe's name is in the zoo
    path = _recipe_file(tmp_path, small_recipe("ae", mnist_like, epochs=1))
    before = open(os.path.join(entry, zoo.MODEL_FILE), "rb").read()
    assert cli.main(["train", path, "--zoo", zoo_dir, "--quiet", "--set", "train.seed=2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (
        f"{entry} exists: training into a new version, 'test-ae-v2' (--overwrite replaces the entry instead)"
    )
    assert out[-1] == f"wrote {entry}-v2"
    assert yaml.safe_load(open(os.path.join(f"{entry}-v2", zoo.RECIPE_FILE)))["name"] == "test-ae-v2"
    assert json.load(open(os.path.join(f"{entry}-v2", zoo.METRICS_FILE)))["name"] == "test-ae-v2"
    assert open(os.path.join(entry, zoo.MODEL_FILE), "rb").read() == before  # never replaced silently
    assert zoo.version_name("test-ae", zoo_dir) == "test-ae-v3" and zoo.version_name("other", zoo_dir) == "other"
    assert cli.main(["train", path, "--zoo", zoo_dir, "--quiet", "--overwrite", "--set", "train.seed=5"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {entry}"
    assert yaml.safe_load(open(os.path.join(entry, zoo.RECIPE_FILE)))["train"]["seed"] == 5
    assert open(os.path.join(entry, zoo.MODEL_FILE), "rb").read() != before
    assert _entries(zoo_dir) == ["README.md", "test-ae", "test-ae-v2"] and _no_staging_left(zoo_dir)


@pytest.mark.once
def test_commit_refuses_a_name_taken_meanwhile(tmp_path, zoo_dir):
    with zoo.staging("race", zoo_dir) as first:
        open(os.path.join(first, "a"), "w").close()
        with zoo.staging("race", zoo_dir) as second:
            open(os.path.join(second, "b"), "w").close()
            zoo.commit(second, "race", zoo_dir)
        with pytest.raises(zoo.ZooError, match="already exists"):
            zoo.commit(first, "race", zoo_dir)
    assert os.listdir(os.path.join(zoo_dir, "race")) == ["b"]
    assert _no_staging_left(zoo_dir)


@pytest.mark.once
def test_bad_recipe_exits_2_with_one_line_per_problem_and_writes_nothing(tmp_path, mnist_like, zoo_dir, capsys):
    recipe = small_recipe("ae", mnist_like)
    recipe["model"]["latnt_dim"] = 3
    recipe["train"]["epochs"] = -1
    path = _recipe_file(tmp_path, recipe)
    assert cli.main(["train", path, "--zoo", zoo_dir]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "model.latnt_dim: unknown key; did you mean 'latent_dim'?" in err
    assert "train.epochs: Input should be greater than or equal to 1" in err
    assert not os.path.exists(zoo_dir)


@pytest.mark.once
def test_data_error_leaves_no_entry(tmp_path, zoo_dir, capsys):
    path = _recipe_file(tmp_path, small_recipe("ae", str(tmp_path / "missing.npz")))
    assert cli.main(["train", path, "--zoo", zoo_dir]) == 2
    assert "data.path: file not found" in capsys.readouterr().err
    assert _no_staging_left(zoo_dir) and not os.path.exists(os.path.join(zoo_dir, "test-ae"))


def test_a_failure_while_writing_the_entry_keeps_the_checkpoint(tmp_path, mnist_like, zoo_dir, monkeypatch, capsys):
    from kerasae.assess import figures

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(figures, "loss_curves", broken)
    path = _recipe_file(tmp_path, small_recipe("ae", mnist_like, epochs=1, outputs={"figures": ["loss"]}))
    assert cli.main(["train", path, "--zoo", zoo_dir, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: disk on fire (rerun with --debug" in err and "Traceback" not in err
    assert os.listdir(zoo_dir) == [zoo.RUNS_DIR]  # no entry, no staging: only the finished run's checkpoint
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "train", path, "--zoo", zoo_dir, "--quiet", "--resume"])
    monkeypatch.undo()
    # Once the disk is fixed, --resume writes the entry without training again.
    assert cli.main(["train", path, "--zoo", zoo_dir, "--quiet", "--resume"]) == 0
    assert _entries(zoo_dir) == ["README.md", "test-ae"] and _no_staging_left(zoo_dir)


@pytest.mark.once
def test_validate_command(tmp_path, capsys):
    good = os.path.join(RECIPES, "vae.yaml")
    bad = _recipe_file(tmp_path, {"name": "x", "model": {"family": "ae", "units": 3}})
    assert cli.main(["validate", good]) == 0
    assert f"ok: {good} (vae-mnist, family vae)" in capsys.readouterr().out
    assert cli.main(["validate", good, bad]) == 2
    assert "model.units: unknown key" in capsys.readouterr().err


@pytest.mark.once
def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {family: ae}\ntrian: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "kerasae.cli", "validate", bad], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}:3: trian: unknown key; did you mean 'train'?"


@pytest.mark.once
def test_missing_and_corrupted_entries(tmp_path, zoo_dir, capsys):
    assert cli.main(["sample", "nothing-here", "--zoo", zoo_dir, "--output", str(tmp_path / "s.png")]) == 2
    assert f"no zoo entry named 'nothing-here' in {zoo_dir}" in capsys.readouterr().err
    entry = tmp_path / "zoo" / "broken"
    entry.mkdir(parents=True)
    (entry / zoo.RECIPE_FILE).write_text("name: broken\n")
    (entry / zoo.METRICS_FILE).write_text("{}")
    assert cli.main(["sample", "broken", "--zoo", zoo_dir, "--output", str(tmp_path / "s.png")]) == 2
    assert "is incomplete: missing model.keras" in capsys.readouterr().err
    (entry / zoo.MODEL_FILE).write_bytes(b"PK\x03\x04 definitely not a keras file")
    assert cli.main(["sample", "broken", "--zoo", zoo_dir, "--output", str(tmp_path / "s.png")]) == 2
    assert "model.keras: cannot be loaded" in capsys.readouterr().err


def test_denoise_restores_noisy_digits_as_a_picture_or_as_arrays(tmp_path, mnist_like, shared_zoo, capsys):
    with np.load(mnist_like) as f:
        np.save(tmp_path / "digits.npy", f["x_test"][:64])
    denoise = ["denoise", "test-dae", "--input", str(tmp_path / "digits.npy"), "--corrupt", "--zoo", shared_zoo]
    assert cli.main([*denoise, "--output", str(tmp_path / "denoised.npz")]) == 0, capsys.readouterr().err
    got = np.load(tmp_path / "denoised.npz")
    clean, noisy, output = got["input"], got["noisy"], got["output"]
    assert clean.shape == noisy.shape == output.shape == (64, 28, 28, 1)
    np.testing.assert_allclose(clean, np.load(tmp_path / "digits.npy")[..., None] / 255.0, atol=1e-6)
    assert np.mean((output - clean) ** 2) < 0.7 * np.mean((noisy - clean) ** 2)  # closer to the clean digits
    _is_a_picture(denoise, tmp_path / "denoised.png", capsys)


def _is_a_picture(args, png, capsys):
    import matplotlib.image

    assert cli.main([*args, "--output", str(png)]) == 0, capsys.readouterr().err
    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 100
    assert image.std() > 0.05  # a real picture, not a blank canvas


def test_an_interpolation_runs_from_one_test_digits_reconstruction_to_the_others(tmp_path, shared_zoo, capsys):
    interpolate = ["interpolate", "test-vae", "--steps", "5", "--pairs", "2", "--zoo", shared_zoo]
    assert cli.main([*interpolate, "--output", str(tmp_path / "walk.npz")]) == 0, capsys.readouterr().err
    got = np.load(tmp_path / "walk.npz")
    assert got["images"].shape == (2, 5, 28, 28, 1) and got["pairs"].tolist() == [[0, 1], [2, 3]]
    entry = os.path.join(shared_zoo, "test-vae")
    x = data.load(recipe.load(os.path.join(entry, zoo.RECIPE_FILE)).data).x_test
    ends = zoo.load(entry).reconstruct(x[:4])
    np.testing.assert_allclose(got["images"][:, 0], ends[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(got["images"][:, -1], ends[[1, 3]], atol=1e-5)
    assert np.abs(got["images"][:, 2] - got["images"][:, 0]).max() > 0.01  # it moves in between
    _is_a_picture(interpolate, tmp_path / "walk.png", capsys)


def test_samples_of_the_shipped_vae_are_digits_of_every_kind_and_follow_the_seed(tmp_path, capsys):
    sample = ["sample", "vae-mnist", "--n", "64", "--sampler", "prior"]
    for seed in ("0", "0", "1"):
        assert cli.main([*sample, "--seed", seed, "--output", str(tmp_path / f"{seed}.npz")]) == 0
    first, again, other = (np.load(tmp_path / f"{s}.npz")["images"] for s in ("0", "0", "1"))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (64, 28, 28, 1) and np.abs(first - other).mean() > 0.01
    assert len(set(fid.classify(first).tolist())) >= 8  # the shipped classifier sees most of the ten digits
    _is_a_picture(sample + ["--seed", "0"], tmp_path / "samples.png", capsys)


def test_digits_asked_of_the_shipped_cvae_are_drawn(tmp_path, capsys):
    asked = [3, 8, 1, 9, 0, 7, 2, 6, 5, 4] * 3  # not the default cycle 0, 1, 2, ...
    digits = ["sample", "cvae-mnist", "--digits", ",".join(map(str, asked))]
    assert cli.main([*digits, "--output", str(tmp_path / "digits.npz")]) == 0, capsys.readouterr().err
    got = np.load(tmp_path / "digits.npz")
    assert got["labels"].tolist() == asked
    assert np.mean(fid.classify(got["images"]) == asked) >= 0.9
    _is_a_picture(digits, tmp_path / "digits.png", capsys)


def test_any_entry_samples_from_its_fitted_mixture_and_only_a_generative_one_from_its_prior(
    tmp_path, shared_zoo, capsys
):
    sample = ["sample", "test-dae", "--zoo", shared_zoo, "--output", str(tmp_path / "x.png")]
    assert cli.main([*sample, "--sampler", "prior"]) == 2
    assert "a DenoisingAutoencoder was not trained towards a prior; use --sampler gmm" in capsys.readouterr().err
    # Every family generates from the Gaussian mixture fitted to its training codes, kept with the entry.
    assert os.path.isfile(os.path.join(shared_zoo, "test-dae", zoo.SAMPLER_FILE))
    _is_a_picture(sample[:-2], tmp_path / "x.png", capsys)


def test_saved_model_export_serves_the_same_reconstruction(mnist_like, shared_zoo, zoo_dir):
    entry = copy_entry(shared_zoo, "test-vae", zoo_dir)  # exported when it was trained; ONNX is written into it
    with open(os.path.join(entry, zoo.CARD_FILE), encoding="utf-8") as f:
        assert f"shipped in `{zoo.SAVED_MODEL_DIR}/`" in f.read()  # the card, written after the export, says so
    model = zoo.load(entry)
    with np.load(mnist_like) as f:
        x = (f["x_test"][:16, ..., None] > 127).astype("float32")

    import tensorflow as tf

    exported = tf.saved_model.load(os.path.join(entry, zoo.SAVED_MODEL_DIR))
    np.testing.assert_allclose(exported.serve(x).numpy(), model.reconstruct(x), atol=1e-5)
    np.testing.assert_allclose(exported.encode(x).numpy(), model.encode(x), atol=1e-5)
    z = np.random.default_rng(0).standard_normal((4, 2)).astype("float32")
    np.testing.assert_allclose(exported.decode(z).numpy(), model.decode(z), atol=1e-5)

    # ONNX through Keras's own export, run by onnxruntime.
    assert cli.main(["export", "test-vae", "--zoo", zoo_dir, "--format", "onnx"]) == 0
    onnx = _onnx_sessions(os.path.join(entry, zoo.ONNX_DIR))
    np.testing.assert_allclose(onnx["model"](x)[0], model.reconstruct(x), atol=1e-5)
    z_mean, z_log_var = onnx["encoder"](x)
    np.testing.assert_allclose(z_mean, model.encode(x), atol=1e-5)
    # Its score, the negative ELBO, draws codes at random: not exported.
    assert model.score_kind == "elbo" and not os.path.exists(os.path.join(entry, zoo.ONNX_DIR, export.SCORE_FILE))
    assert not hasattr(exported, "score")
    assert z_log_var.shape == z_mean.shape
    np.testing.assert_allclose(onnx["decoder"](z)[0], model.decode(z), atol=1e-5)


def _onnx_sessions(folder):
    import onnxruntime

    def runner(path):
        session = onnxruntime.InferenceSession(path)
        names = [i.name for i in session.get_inputs()]
        return lambda *arrays: session.run(None, dict(zip(names, arrays)))

    return {name: runner(os.path.join(folder, f"{name}.onnx")) for name in ("model", "encoder", "decoder")}


def test_export_replaces_an_old_export_and_names_bad_requests(tmp_path, mnist_like, shared_zoo, capsys):
    zoo_dir = shared_zoo  # read only: the export goes to --output
    entry = os.path.join(zoo_dir, "test-ae")
    assert not os.path.exists(os.path.join(entry, zoo.SAVED_MODEL_DIR))  # the recipe asked for none
    with open(os.path.join(entry, zoo.CARD_FILE), encoding="utf-8") as f:
        assert f"not shipped: the command writes `{zoo.SAVED_MODEL_DIR}/`" in f.read()
    out = tmp_path / "served"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")
    assert cli.main(["export", entry, "--output", str(out)]) == 0
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").exists()
    assert os.listdir(tmp_path) == ["served"]  # nothing left beside it: no staged or retired copy

    import tensorflow as tf

    model = zoo.load(entry)
    with np.load(mnist_like) as f:
        x = (f["x_test"][:8, ..., None] > 127).astype("float32")
    served = tf.saved_model.load(str(out))  # held: TF frees the variables of an unreferenced load
    np.testing.assert_allclose(served.serve(x).numpy(), model.reconstruct(x), atol=1e-5)
    # An entry scored by reconstruction exports its anomaly score too: in the SavedModel and as score.onnx.
    assert model.score_kind == "reconstruction"
    np.testing.assert_allclose(served.score(x).numpy(), model.score(x), rtol=1e-5)
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    assert cli.main(["export", entry, "--format", "onnx", "--output", str(onnx_dir)]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_dir / export.SCORE_FILE))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model.score(x), rtol=1e-3)  # ONNX runtime's float32 sums over 784 pixels

    capsys.readouterr()
    assert cli.main(["export", "no-such-entry", "--zoo", zoo_dir]) == 2
    assert "no zoo entry named 'no-such-entry' in " + zoo_dir in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main(["export", entry, "--output", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cvae_entry_exports_with_labels_and_names_bad_digits(tmp_path, mnist_like, shared_zoo, zoo_dir, capsys):
    copy_entry(shared_zoo, "test-cvae", zoo_dir)  # exported when it was trained; ONNX is written into it
    # Its first layer also reads the one-hot label: the tiles show the pixel weights only.
    assert os.path.getsize(os.path.join(zoo_dir, "test-cvae", "figures", "filters.png")) > 1000
    png = str(tmp_path / "digits.png")
    for digits, problem in (("1,x", "expected comma-separated integers"), ("3,10", "classes must be in 0..9")):
        assert cli.main(["sample", "test-cvae", "--zoo", zoo_dir, "--digits", digits, "--output", png]) == 2
        assert f"--digits: {problem}" in capsys.readouterr().err
    assert not os.path.exists(png)

    entry = os.path.join(zoo_dir, "test-cvae")
    model = zoo.load(entry)
    with np.load(mnist_like) as f:
        x = (f["x_test"][:16, ..., None] > 127).astype("float32")
        y = f["y_test"][:16].astype("int32")

    import tensorflow as tf

    exported = tf.saved_model.load(os.path.join(entry, zoo.SAVED_MODEL_DIR))
    np.testing.assert_allclose(exported.serve(x, y).numpy(), model.reconstruct(x, y), atol=1e-5)
    z = np.random.default_rng(0).standard_normal((16, 8)).astype("float32")
    np.testing.assert_allclose(exported.decode(z, y).numpy(), model.decode(z, y), atol=1e-5)

    assert cli.main(["export", entry, "--format", "onnx"]) == 0
    onnx = _onnx_sessions(os.path.join(entry, zoo.ONNX_DIR))
    np.testing.assert_allclose(onnx["model"](x, y)[0], model.reconstruct(x, y), atol=1e-5)
    one_hot = np.eye(10, dtype="float32")[y]
    np.testing.assert_allclose(onnx["encoder"](x, one_hot)[0], model.encode(x, y), atol=1e-5)
    joined = np.concatenate([z, one_hot], axis=1)
    np.testing.assert_allclose(onnx["decoder"](joined)[0], model.decode(z, y), atol=1e-5)


def test_a_model_file_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    entry = tmp_path / "stranger"
    entry.mkdir()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(str(entry / zoo.MODEL_FILE))
    (entry / zoo.RECIPE_FILE).write_text("name: stranger\n")
    (entry / zoo.METRICS_FILE).write_text("{}")
    with pytest.raises(zoo.ZooError, match="cannot be loaded .*`Lambda` layer .*arbitrary code execution"):
        zoo.load(str(entry))


def test_load_finds_a_name_along_the_zoo_path(tmp_path, shared_zoo, monkeypatch):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    copy_entry(shared_zoo, "test-ae", second)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(zoo.ZOO_ENV, os.pathsep.join([first, second]))
    assert zoo.resolve("test-ae") == os.path.join(second, "test-ae")
    model = kerasae.load("test-ae")
    assert type(model).__name__ == "Autoencoder"
    _gives_its_stored_outputs(model, os.path.join(second, "test-ae"))
    with pytest.raises(zoo.ZooError, match=f"no zoo entry named 'test-vae' in {first}, {second}, zoo, "):
        kerasae.load("test-vae")


NO_BACKEND_PROBE = """
import sys
from kerasae import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(code, [m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules])
"""


def test_a_backend_starts_without_native_error_lines():
    # TensorFlow's CUDA plugin wrote "E0000 ... failed call to cuInit" before every run on a machine
    # without a GPU; kerasae.backend.tensorflow looks for devices quietly at import.
    code = "import kerasae, keras\nfrom kerasae import backend\nprint(float(keras.ops.sum(keras.ops.ones((2, 2)))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "4.0", result.stderr[-1500:]
    assert not [line for line in result.stderr.splitlines() if line.startswith(("E0000", "F0000"))], result.stderr


@pytest.mark.once
@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", "recipes/vae.yaml", "recipes/conv-dae.yaml"],
        ["zoo", "list"],
        ["zoo", "show", "vae-mnist"],
        ["zoo", "show", "vae-mnist", "--json"],
    ],
)
def test_commands_that_compute_nothing_import_no_backend(args):
    """They answer without Keras: `kerasae --help` took 6 s when every command imported TensorFlow first
    (benchmarks/cli.py times them)."""
    result = subprocess.run(
        [sys.executable, "-c", NO_BACKEND_PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    code, imported = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert code in ("0", "None") and imported == "[]", result.stdout[-500:] + result.stderr[-500:]


@pytest.mark.once  # the import hooks are backend-independent; loading on each backend: test_zoo_entries
def test_import_kerasae_registers_its_classes_once_keras_is_imported(tmp_path, mnist_like):
    entry = os.path.join(ROOT, "zoo", "cvae-mnist")
    model, check = os.path.join(entry, zoo.MODEL_FILE), os.path.join(entry, zoo.CHECK_FILE)
    for first, then in (
        ("import kerasae", "import keras"),
        ("import keras", "import kerasae"),
        ("from kerasae import layers", "import keras"),
    ):
        code = (
            f"import sys\n{first}\n{then}\nassert 'kerasae.models' in sys.modules\n"
            f"m = keras.saving.load_model({model!r})\nimport numpy as np\nc = np.load({check!r})\n"
            "print(type(m).__name__, np.abs(m.reconstruct(c['x'], c['y']) - c['reconstructions']).max())"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (first, result.stderr[-1500:])
        kind, error = result.stdout.split()
        assert kind == "CVAE" and float(error) < 1e-4, (first, result.stdout)
    lazy = subprocess.run(
        [sys.executable, "-c", "import sys, kerasae; print('keras' in sys.modules, kerasae.CVAE.__name__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lazy.stdout.split() == ["False", "CVAE"], lazy.stderr[-1500:]
    # The lazy table names every model class without importing them; it must not fall behind the models' list.
    import kerasae.models

    assert set(kerasae.models.__all__) <= set(kerasae.__all__)


@pytest.mark.once
def test_zoo_show_prints_the_entry(capsys):
    assert cli.main(["zoo", "show", "vae-mnist"]) == 0
    out = capsys.readouterr().out
    metrics = json.load(open(os.path.join(ROOT, "zoo", "vae-mnist", zoo.METRICS_FILE)))
    assert out.startswith("vae-mnist (") and f"{metrics['evaluation']['nll']:.2f}" in out
    assert "figures: filters, interpolation" in out
    assert cli.main(["zoo", "show", "no-such-entry"]) == 2
    assert "no zoo entry named 'no-such-entry'" in capsys.readouterr().err
