"""Your own images: folders of image files, Hugging Face datasets saved to disk, and patches of
photographs -- read, checked, split, streamed, and trained on through the real `train.run`."""

import csv
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import yaml
from conftest import ROOT
from PIL import Image

from kerasae import data
from kerasae.assess import evaluate, filters
from kerasae.data import images
from kerasae.errors import DataError
from kerasae.run import train
from kerasae.spec import recipe
from kerasae.store import zoo

SIZE = 16


def _shape_image(kind, rng, rgb):
    """A bright disc or square on black, at a random place and size, in a random colour."""
    a = np.zeros((SIZE, SIZE, 3), np.uint8)
    cy, cx, r = rng.integers(5, SIZE - 5), rng.integers(5, SIZE - 5), rng.integers(3, 5)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if kind == "discs" else (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    a[inside] = rng.integers(120, 256, 3) if rgb else rng.integers(120, 256)
    return Image.fromarray(a) if rgb else Image.fromarray(a[..., 0], mode="L")


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    """240 PNGs (RGB and grayscale alternating) in two class subfolders, plus one truncated file."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in ("discs", "squares"):
        (root / kind).mkdir()
        for i in range(120):
            _shape_image(kind, rng, rgb=i % 2 == 0).save(root / kind / f"{i:03d}.png")
    good = (root / "squares" / "000.png").read_bytes()
    (root / "squares" / "broken.png").write_bytes(good[: len(good) // 2])
    return str(root)


def _section(**keys):
    return recipe.validate({"name": "x", "model": {"family": "ae"}, "data": keys}).data


@pytest.mark.once
def test_a_folder_reads_its_classes_skips_the_corrupt_file_and_splits_by_the_seed(shapes_folder):
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\): .*squares/broken.png"):
        d = data.load(_section(dataset="folder", path=shapes_folder, validation_split=0.1), seed=3)
    assert d.record["classes"] == ["discs", "squares"] and d.record["skipped_files"] == 1
    assert d.record["sizes"] == {"train": 194, "validation": 22, "test": 24}
    assert d.x_test.shape == (24, SIZE, SIZE, 3) and d.x_train.shape[1:] == (SIZE, SIZE, 3)
    assert isinstance(d.x_train, data.MappedImages)  # streamed, not held in memory
    # Labels follow the files: a square's pixels fill its bounding box, a disc's do not.
    lit = (d.x_test.max(axis=-1) > 0.3).reshape(len(d.x_test), -1).sum(1)
    assert (lit[d.y_test == 1] >= 49).all() and set(d.y_test) <= {0, 1}
    with pytest.warns(UserWarning):
        again = data.load(_section(dataset="folder", path=shapes_folder, validation_split=0.1), seed=3)
        other = data.load(_section(dataset="folder", path=shapes_folder, validation_split=0.1), seed=4)
    np.testing.assert_array_equal(again.x_test, d.x_test)
    assert not np.array_equal(other.x_test, d.x_test)


@pytest.mark.once
def test_grayscale_and_resizing_by_crop_or_pad(shapes_folder):
    with pytest.warns(UserWarning):
        gray = data.load(_section(dataset="folder", path=shapes_folder, color_mode="grayscale", image_size=[8, 12]))
        padded = data.load(_section(dataset="folder", path=shapes_folder, image_size=[8, 12], resize="pad"))
    assert gray.x_test.shape[1:] == (8, 12, 1) and padded.x_test.shape[1:] == (8, 12, 3)
    # Padding keeps the whole square image in the middle 8 x 8 and blacks out the sides.
    assert padded.x_test[:, :, :2].max() == 0 and padded.x_test[:, :, -2:].max() == 0
    assert gray.x_test[:, :, :2].max() > 0  # a crop fills the frame


@pytest.mark.once
def test_mixed_sizes_unreadable_and_empty_folders_are_named(tmp_path):
    (tmp_path / "mixed").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "mixed" / "a.png")
    Image.new("RGB", (12, 10)).save(tmp_path / "mixed" / "b.jpg")
    with pytest.raises(
        DataError, match=r"images differ in size: .*a.png is 10x10, .*b.jpg is 12x10; set data.image_size"
    ):
        data.load(_section(dataset="folder", path=str(tmp_path / "mixed")))
    assert data.load(
        _section(dataset="folder", path=str(tmp_path / "mixed"), image_size=[6, 6], test_split=0.5, validation_split=0)
    )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"junk: no readable images"):
        data.load(_section(dataset="folder", path=str(tmp_path / "junk")))
    result = subprocess.run(
        [sys.executable, "-m", "kerasae.cli", "train", os.path.join(ROOT, "recipes", "ae.yaml")]
        + ["--set", "data.dataset=folder", "--set", f"data.path={tmp_path / 'junk'}", "--zoo", str(tmp_path / "zoo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "no readable images" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "zoo").exists() or os.listdir(tmp_path / "zoo") == [zoo.RUNS_DIR]  # its lock file only


@pytest.mark.once
def test_image_keys_belong_to_image_datasets():
    from kerasae.errors import RecipeError

    with pytest.raises(RecipeError, match=r"data.image_size: applies to dataset folder or huggingface, not 'mnist'"):
        _section(image_size=[8, 8])
    with pytest.raises(RecipeError, match=r"data.patch_size: applies to dataset patches, not 'folder'"):
        _section(dataset="folder", path="x", patch_size=8)
    with pytest.raises(RecipeError, match=r"data.path: dataset 'folder' needs the folder of images"):
        _section(dataset="folder")
    resolved = recipe.validate({"name": "x", "model": {"family": "ae"}}).to_dict()["data"]
    assert "image_size" not in resolved and "patch_size" not in resolved  # other datasets' keys left out


def _conv_vae(data_keys, loss, epochs=5):
    return {
        "name": "shapes-vae",
        "model": {
            "family": "vae",
            "encoder": [
                {"filters": 8, "kernel_size": 3, "strides": 2},
                {"filters": 16, "kernel_size": 3, "strides": 2},
            ],
            "latent_dim": 4,
        },
        "loss": loss,
        "data": {**data_keys, "validation_split": 0.1},
        "train": {"epochs": epochs, "batch_size": 24, "learning_rate": 0.003, "seed": 0},
        "outputs": {"figures": ["reconstructions", "samples"], "export_saved_model": False, "nll_samples": 5},
    }


def _trains_and_reloads(spec, tmp_path, reads):
    entry, metrics = train.run(recipe.validate(spec), str(tmp_path / "zoo"), verbose=0)
    with open(os.path.join(entry, zoo.HISTORY_FILE), encoding="utf-8") as f:
        history = list(csv.DictReader(f))
    for key in ("loss", "val_loss"):
        assert float(history[-1][key]) < float(history[0][key]), key
    model = zoo.load(entry)
    check = np.load(os.path.join(entry, "check.npz"))
    assert check["x"].shape[1:] == (SIZE, SIZE, 3)  # the entry's check holds colour images
    np.testing.assert_allclose(model.reconstruct(check["x"]), check["reconstructions"], rtol=1e-4, atol=1e-5)
    assert os.path.isfile(os.path.join(entry, "figures", "reconstructions.png"))
    # Training read its images a batch (24) at a time from the source, not the whole set at once.
    assert reads.count(24) >= 2 * 8
    _learned_its_scale(model, metrics, spec["loss"], entry)


def _learned_its_scale(model, metrics, loss, entry):
    """The decoder's scale moved from its start; the NLL is also in bits per dimension, on the card."""
    log_scale = keras.ops.convert_to_numpy(model.log_scale)
    assert log_scale.shape == ((3,) if loss["scale"] == "per_channel" else (SIZE, SIZE, 3))
    assert np.abs(log_scale - np.log(0.1)).max() > 0.05
    ev = metrics["evaluation"]
    assert ev["nll_bits_per_dim"] == pytest.approx(evaluate.bits_per_dim(ev["nll"], model))  # checked below
    assert ev["nll_bits_per_dim"] > 0
    if loss["likelihood"] == "logistic":  # already better than coding each 8-bit value uniformly
        assert ev["nll_bits_per_dim"] < 8
    with open(os.path.join(entry, zoo.CARD_FILE), encoding="utf-8") as f:
        card = f.read()
    assert "NLL in bits per dimension" in card
    # Its figures are captioned as images of whatever the folder holds, not as MNIST's digits.
    assert "Test images (top row) and their reconstructions" in card and "digit" not in card.split("## Figures")[1]


def test_a_conv_vae_trains_on_a_folder_of_images(shapes_folder, tmp_path, monkeypatch):
    reads = []
    read = images.ImageFiles.read
    monkeypatch.setattr(images.ImageFiles, "read", lambda self, index: reads.append(len(index)) or read(self, index))
    with pytest.warns(UserWarning, match="broken.png"):
        # The discretized logistic of 8-bit values, its scale learned per channel.
        spec = _conv_vae(
            {"dataset": "folder", "path": shapes_folder}, {"likelihood": "logistic", "scale": "per_channel"}
        )
        _trains_and_reloads(spec, tmp_path, reads)


@pytest.fixture(scope="module")
def saved_hf_dataset(tmp_path_factory, shapes_folder):
    """The shapes as a Hugging Face dataset with an image and a label column, saved to disk."""
    import datasets  # kerasae[hf], in the dev extras

    paths, labels, _ = images.list_folder(shapes_folder)
    keep = [i for i, p in enumerate(paths) if "broken" not in p]
    table = datasets.Dataset.from_dict(
        {"image": [paths[i] for i in keep], "label": [int(labels[i]) for i in keep]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["disc", "sq"])}),
    )
    path = str(tmp_path_factory.mktemp("hf") / "shapes")
    table.train_test_split(test_size=0.1, seed=0).save_to_disk(path)
    return path


@pytest.mark.once
def test_a_saved_huggingface_dataset_reads_its_splits_and_labels(saved_hf_dataset):
    d = data.load(_section(dataset="huggingface", path=saved_hf_dataset), seed=0)
    assert d.record["sizes"]["test"] == 24 and d.x_test.shape == (24, SIZE, SIZE, 3)
    assert set(np.unique(d.y_test)) == {0, 1} and len(d.y_train) == len(d.x_train)
    with pytest.raises(DataError, match=r"data.image_column 'pixels' is not a column of its train split"):
        data.load(_section(dataset="huggingface", path=saved_hf_dataset, image_column="pixels"))
    with pytest.raises(DataError, match=r"data.path: cannot load dataset"):
        data.load(_section(dataset="huggingface", path=str(os.path.join(saved_hf_dataset, "nothing-here"))))
    # A name is looked up with `datasets.load_dataset`; offline (as every test is) it fails in one clean line.
    with pytest.raises(DataError, match=r"data.path: cannot load dataset 'someone/no-such-dataset'"):
        data.load(_section(dataset="huggingface", path="someone/no-such-dataset"))


@pytest.mark.once  # the data source is what it checks; the folder test above trains on every backend
def test_a_conv_vae_trains_on_a_saved_huggingface_dataset(saved_hf_dataset, tmp_path, monkeypatch):
    reads = []
    read = images.DatasetRows.read
    monkeypatch.setattr(images.DatasetRows, "read", lambda self, index: reads.append(len(index)) or read(self, index))
    # A gaussian with its sigma learned per pixel.
    spec = _conv_vae(
        {"dataset": "huggingface", "path": saved_hf_dataset}, {"likelihood": "gaussian", "scale": "per_pixel"}
    )
    _trains_and_reloads(spec, tmp_path, reads)


@pytest.mark.once
def test_patches_of_the_sample_photographs_and_their_zca_whitening():
    raw = data.load(_section(dataset="patches", patches=4000, patch_size=6), seed=0)
    assert raw.x_train.shape[1:] == (6, 6, 1) and 0 <= raw.x_train.min() and raw.x_train.max() <= 1
    again = data.load(_section(dataset="patches", patches=4000, patch_size=6), seed=0)
    np.testing.assert_array_equal(again.x_test, raw.x_test)  # cut at seeded places
    white = data.load(_section(dataset="patches", patches=4000, patch_size=6, whiten="zca", whiten_epsilon=1e-5))
    flat = white.x_train.reshape(len(white.x_train), -1)
    covariance = np.cov(flat, rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(36), atol=0.02)
    # ZCA is the whitening closest to the patches themselves: each keeps its correlation with its whitened self.
    raw_flat = raw.x_train.reshape(len(raw.x_train), -1)
    assert np.corrcoef(raw_flat[:, 14], flat[:, 14])[0, 1] > 0.2
    rgb = data.load(_section(dataset="patches", patches=100, patch_size=5, color_mode="rgb"))
    assert rgb.x_train.shape[1:] == (5, 5, 3)


@pytest.mark.once  # the data source is what it checks; the folder test above trains on every backend
def test_the_readmes_own_images_recipe_trains_as_written(shapes_folder, tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme.split("# recipes/my-photos.yaml")[1].split("```")[0].partition("\n")[2]
    spec = yaml.safe_load(block)
    assert spec["data"]["path"] == "~/Pictures/products"
    monkeypatch.setenv("HOME", str(tmp_path))
    os.makedirs(tmp_path / "Pictures")
    os.symlink(shapes_folder, tmp_path / "Pictures" / "products")
    # The rest as written; the SavedModel export and a long NLL are tested elsewhere.
    spec["train"]["epochs"] = 1
    spec["outputs"].update(nll_samples=10, export_saved_model=False)
    with pytest.warns(UserWarning, match="broken.png"):
        entry, metrics = train.run(recipe.validate(spec), str(tmp_path / "zoo"), verbose=0)
    assert metrics["data"]["image_shape"] == [64, 64, 3] and metrics["data"]["classes"] == ["discs", "squares"]
    assert np.isfinite(metrics["evaluation"]["nll"])


@pytest.mark.once
def test_bits_per_dimension_are_those_of_the_8_bit_values():
    """Against first principles: the probability a Gaussian density gives each value's bin of width
    1/255 (scipy's normal CDF at its edges); a fair coin per value; 256 equally likely values."""
    from scipy.stats import norm

    shape = (5, 5, 3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape) / 255.0
    mean, sd = np.clip(x + rng.normal(0.0, 0.05, shape), 0.0, 1.0), 0.1
    density_nll = -norm.logpdf(x, mean, sd).sum()  # nats per image, as the evaluation reports it
    bins = norm.cdf(x + 0.5 / 255, mean, sd) - norm.cdf(x - 0.5 / 255, mean, sd)
    expected = -np.log2(bins).sum() / x.size
    gaussian = types.SimpleNamespace(image_shape=shape, likelihood="gaussian")
    assert evaluate.bits_per_dim(density_nll, gaussian) == pytest.approx(expected, rel=1e-4)
    coin = types.SimpleNamespace(image_shape=shape, likelihood="bernoulli")
    assert evaluate.bits_per_dim(x.size * np.log(2.0), coin) == pytest.approx(1.0)
    uniform = types.SimpleNamespace(image_shape=shape, likelihood="logistic")
    assert evaluate.bits_per_dim(x.size * np.log(256.0), uniform) == pytest.approx(8.0)


@pytest.mark.once
def test_the_edge_measure_tells_gabor_filters_from_noise():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:8, :8].astype(float)

    def gabor():
        theta, cy, cx = rng.uniform(0, np.pi), *rng.uniform(2, 5, 2)
        along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        envelope = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(1.2, 2.0) ** 2))
        return envelope * np.cos(2 * np.pi * rng.uniform(0.15, 0.3) * along + rng.uniform(0, 2 * np.pi))

    edges = filters.edge_like(np.stack([gabor() for _ in range(200)]))
    noise = filters.edge_like(rng.standard_normal((200, 8, 8)))
    assert edges["edge_like"] >= 180 and noise["edge_like"] <= 2, (edges["edge_like"], noise["edge_like"])
    # Tiles come from a dense kernel (pixels, units) as the filters figure draws them.
    kernel = np.stack([gabor() for _ in range(5)]).reshape(5, 64).T
    np.testing.assert_allclose(filters.tiles(kernel, (8, 8))[2].ravel(), kernel[:, 2])


def test_the_sparse_ae_patches_entry_learned_edge_detectors():
    with open(os.path.join(ROOT, "zoo", "sparse-ae-patches", zoo.METRICS_FILE), encoding="utf-8") as f:
        stored = json.load(f)["evaluation"]["filters"]
    model = zoo.load(os.path.join(ROOT, "zoo", "sparse-ae-patches"))
    _, kernel, tile = filters.first_layer_kernel(model, model.image_shape)
    measured = filters.edge_like(filters.tiles(kernel, tile))
    assert measured["edge_like"] == stored["edge_like"] and measured["edge_like"] >= stored["filters"] // 2


def test_the_discretized_logistic_gives_the_256_values_probabilities_that_sum_to_one():
    from keras import ops
    from scipy.special import expit

    from kerasae import losses

    values = np.arange(256, dtype="float32") / 255.0
    for mean, log_scale in ((0.3, np.log(0.05)), (0.0, np.log(0.01)), (0.97, np.log(0.2)), (0.5, np.log(1e-4))):
        nll = losses.discretized_logistic_nll(
            ops.convert_to_tensor(values[:, None]),
            ops.convert_to_tensor(np.full((256, 1), mean, "float32")),
            ops.convert_to_tensor(np.array([log_scale], "float32")),
        )
        p = np.exp(-ops.convert_to_numpy(nll))
        assert abs(p.sum() - 1.0) < 1e-4, (mean, p.sum())
        inner = expit((values[1:-1] + 0.5 / 255 - mean) / np.exp(log_scale))
        inner -= expit((values[1:-1] - 0.5 / 255 - mean) / np.exp(log_scale))
        big = inner > 1e-4
        np.testing.assert_allclose(p[1:-1][big], inner[big], rtol=2e-3)


def test_the_learned_gaussian_is_the_normal_density():
    from keras import ops
    from scipy.stats import norm

    from kerasae import losses

    rng = np.random.default_rng(0)
    x, mean, log_sigma = rng.random((4, 6)), rng.random((4, 6)), rng.normal(-1, 0.5, 6)
    got = losses.gaussian_nll_scaled(*(ops.convert_to_tensor(a.astype("float32")) for a in (x, mean, log_sigma)))
    expected = -norm.logpdf(x, mean, np.exp(log_sigma)).sum(axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-4)


@pytest.mark.once
def test_scales_belong_to_their_likelihoods():
    from kerasae.errors import RecipeError

    base = {"name": "x", "model": {"family": "vae"}}
    with pytest.raises(RecipeError, match="loss.scale: the logistic likelihood learns its scale"):
        recipe.validate({**base, "loss": {"likelihood": "logistic"}})
    with pytest.raises(RecipeError, match="loss.scale: the bernoulli likelihood has no scale"):
        recipe.validate({**base, "loss": {"scale": "per_channel"}})
    assert recipe.validate({**base, "loss": {"likelihood": "gaussian", "scale": "per_pixel"}}).loss.scale == "per_pixel"
