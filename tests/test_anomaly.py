"""Anomaly scores: `model.score` per family, thresholds calibrated on held-out normal items and kept
by the saved model, one-class data (`data.classes`), the detection metrics, and `kerasae score`."""

import json
import os

import keras
import numpy as np
import pytest
import yaml
from conftest import ROOT, digit_images, small_recipe
from test_evaluate import _linear_gaussian_vae

import kerasae
from kerasae import anomaly, cli, data
from kerasae.errors import DataError, RecipeError
from kerasae.models.autoencoder import reconstruction_error
from kerasae.run import train
from kerasae.spec import recipe


def _trained(cls, x, **kwargs):
    model = cls(image_shape=x.shape[1:], encoder_layers=[32], latent_dim=4, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(0.003))
    model.fit(x, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits():
    x, y = digit_images(400, seed=3)
    return (x > 127).astype("float32")[..., None], y


def test_a_reconstruction_score_is_each_items_loss_in_the_models_units(digits):
    x, _ = digits
    model = _trained(kerasae.Autoencoder, x)
    scores = model.score(x)
    assert scores.shape == (len(x),)
    # The mean of the per-item scores is the model's own reconstruction loss (bce, nats per image).
    loss = model.evaluate(x, batch_size=400, verbose=0, return_dict=True)["reconstruction_loss"]
    np.testing.assert_allclose(scores.mean(), loss, rtol=1e-3)
    # ... and each item's score is the loss of its own reconstruction: a blank image scores
    # differently from a digit, and the scores follow the item, not its position.
    np.testing.assert_allclose(model.score(x[::-1]), scores[::-1], rtol=1e-5)
    mse = _trained(kerasae.Autoencoder, x, reconstruction="mse", output_activation="linear")
    expected = 0.5 * ((x - mse.reconstruct(x)) ** 2).reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(mse.score(x), expected, rtol=1e-4)


def test_an_item_unlike_the_training_data_scores_higher(digits):
    x, _ = digits
    model = _trained(kerasae.Autoencoder, x)
    noise = (np.random.default_rng(0).random((50, *x.shape[1:])) < 0.5).astype("float32")
    assert np.median(model.score(noise)) > model.score(x).max()


def test_variational_scores_recover_a_known_likelihood_per_item():
    from scipy.stats import multivariate_normal

    model, x, _ = _linear_gaussian_vae(exact_posterior=True)
    rng = np.random.default_rng(0)
    W = np.linalg.qr(rng.standard_normal((16, 3)))[0] * np.array([2.0, 1.5, 0.8])
    b = rng.random(16)
    exact = -multivariate_normal(b, W @ W.T + np.eye(16)).logpdf(x.reshape(len(x), -1))
    model.score_kind = "nll"
    np.testing.assert_allclose(model.score(x), exact, rtol=1e-4)
    # With an imperfect encoder the negative ELBO lies above the NLL estimate of the same draws' kind.
    model, x, _ = _linear_gaussian_vae(exact_posterior=False)
    model.score_kind, model.score_samples = "nll", 200
    nll = model.score(x)
    model.score_kind = "elbo"
    assert (model.score(x) > nll).mean() > 0.95


def test_a_calibrated_threshold_flags_the_asked_share_and_the_saved_model_keeps_it(digits, tmp_path):
    x, _ = digits
    model = _trained(kerasae.Autoencoder, x)
    with pytest.raises(ValueError, match="no threshold"):
        model.flag(x)
    scores = model.calibrate(x[:300], quantile=0.9)
    assert model.threshold == pytest.approx(np.quantile(scores, 0.9))
    assert model.flag(x[:300]).mean() == pytest.approx(0.1, abs=0.01)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.threshold, loaded.threshold_quantile, loaded.score_kind) == (model.threshold, 0.9, "reconstruction")
    np.testing.assert_allclose(loaded.score(x), model.score(x), rtol=1e-5)


def test_a_variational_model_scores_with_the_negative_elbo_by_default_and_keeps_its_settings(digits, tmp_path):
    x, _ = digits
    model = kerasae.VAE(image_shape=x.shape[1:], encoder_layers=[32], latent_dim=4, seed=0, anomaly={"samples": 8})
    assert (model.score_kind, model.score_samples) == ("elbo", 8)
    with pytest.raises(ValueError, match="must be one of"):
        kerasae.Autoencoder(image_shape=x.shape[1:], anomaly={"score": "elbo"})
    model.save(str(tmp_path / "v.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "v.keras"))
    assert (loaded.score_kind, loaded.score_samples) == ("elbo", 8)


@pytest.mark.once
def test_detection_metrics_on_a_worked_example():
    found = anomaly.detection_metrics([1, 1, 0, 0], [0.9, 0.2, 0.8, 0.1], threshold=0.5)
    # 3 of the 4 (anomaly, normal) pairs are ordered right; one flag of each kind is right.
    assert found["auroc"] == pytest.approx(0.75)
    counts = [found[k] for k in ("true_positives", "false_positives", "false_negatives", "true_negatives")]
    assert counts == [1, 1, 1, 1]
    assert (found["precision"], found["recall"]) == (0.5, 0.5)
    assert "auroc" not in anomaly.detection_metrics([0, 0], [0.1, 0.2])


@pytest.mark.once
def test_reconstruction_error_in_both_units():
    x = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(reconstruction_error(x, np.array([[0.5, 0.5]]), "bce"), [2 * np.log(2)])
    np.testing.assert_allclose(reconstruction_error(x, np.array([[0.0, 1.0]]), "mse"), [1.0])


@pytest.mark.once
def test_the_score_section_is_validated_at_the_recipe(mnist_like):
    spec = recipe.validate(small_recipe("vae", mnist_like))
    assert (spec.score.method, spec.score.threshold_quantile()) == ("elbo", 0.99)
    assert (
        recipe.validate(small_recipe("ae", mnist_like, score={"contamination": 0.05})).score.threshold_quantile()
        == 0.95
    )
    with pytest.raises(RecipeError, match=r"score\.method: 'nll' applies to family .*vae.*not 'ae'"):
        recipe.validate(small_recipe("ae", mnist_like, score={"method": "nll"}))
    with pytest.raises(RecipeError, match=r"score\.contamination: give score\.quantile or score\.contamination"):
        recipe.validate(small_recipe("ae", mnist_like, score={"quantile": 0.9, "contamination": 0.1}))
    needs = r"outputs\.figures: 'scores' needs known anomalies: one-class data \(data\.classes\)"
    with pytest.raises(RecipeError, match=needs):
        recipe.validate(small_recipe("ae", mnist_like, outputs={"figures": ["scores"]}))
    assert (
        "scores"
        in recipe.validate(
            small_recipe("ae", mnist_like, data={"classes": [1]}, outputs={"figures": None})
        ).outputs.figures
    )
    with pytest.raises(
        RecipeError, match=r"data\.classes: applies to dataset mnist or digits or npz or table, not 'folder'"
    ):
        recipe.validate(small_recipe("ae", data={"dataset": "folder", "path": "/x", "classes": [1]}))


@pytest.mark.once
def test_one_class_data_trains_on_its_classes_and_marks_the_others_in_the_test_set(mnist_like):
    spec = recipe.validate(small_recipe("ae", mnist_like, data={"classes": [0, 7]}))
    dataset = data.load(spec.data)
    assert set(np.unique(dataset.y_train)) == {0, 7} and set(np.unique(dataset.y_val)) <= {0, 7}
    np.testing.assert_array_equal(dataset.anomalous, ~np.isin(dataset.y_test, [0, 7]))
    assert dataset.record["classes"] == [0, 7] and dataset.record["sizes"]["test"] == 200
    with pytest.raises(DataError, match="data.classes: no training image of class 12"):
        data.load(recipe.validate(small_recipe("ae", mnist_like, data={"classes": [12]})).data)


@pytest.fixture(scope="module")
def oneclass_entry(tmp_path_factory, mnist_like):
    """A one-class AE (digit 0 normal) trained through the training command's own path."""
    zoo_dir = str(tmp_path_factory.mktemp("oneclass-zoo"))
    spec = small_recipe("ae", mnist_like, epochs=8, data={"classes": [0], "binarize": "none"}, score={"quantile": 0.95})
    spec["outputs"]["figures"] = ["scores"]
    spec["name"] = "test-oneclass"
    path, metrics = train.run(recipe.validate(spec), zoo_dir, verbose=0)
    return path, metrics


def test_a_one_class_entry_stores_its_threshold_and_test_auroc(oneclass_entry):
    path, metrics = oneclass_entry
    found = metrics["evaluation"]["anomaly"]
    assert found["auroc"] > 0.8 and found["anomalies"] == int((np.load(_test_labels_file(path)) != 0).sum())
    model = kerasae.load(path)
    assert model.threshold == found["threshold"] and model.threshold_quantile == 0.95
    card = open(os.path.join(path, "README.md")).read()
    assert "AUROC, classes 0 against the others" in card
    assert (
        "![scores](figures/scores.png)" in card
        and os.path.getsize(os.path.join(path, "figures", "scores.png")) > 10_000
    )


def _test_labels_file(entry):
    spec = yaml.safe_load(open(os.path.join(entry, "recipe.yaml")))
    out = os.path.join(os.path.dirname(entry), "y_test.npy")
    with np.load(spec["data"]["path"]) as f:
        np.save(out, f["y_test"])
        np.save(os.path.join(os.path.dirname(entry), "x_test.npy"), f["x_test"])
    return out


def test_kerasae_score_reproduces_the_entrys_auroc_and_writes_a_csv(oneclass_entry, tmp_path, capsys):
    path, metrics = oneclass_entry
    y = np.load(_test_labels_file(path))
    x_file = os.path.join(os.path.dirname(path), "x_test.npy")
    labels = tmp_path / "anomalous.csv"
    labels.write_text("anomalous\n" + "\n".join(str(int(v != 0)) for v in y) + "\n")
    out = tmp_path / "scores.csv"
    args = ["score", path, "--input", x_file, "--labels", str(labels), "--output", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"AUROC {metrics['evaluation']['anomaly']['auroc']:.4f}" in printed
    assert f"threshold {metrics['evaluation']['anomaly']['threshold']:.3f}" in printed
    rows = out.read_text().splitlines()
    assert rows[0] == "item,score,flagged,label" and len(rows) == len(y) + 1
    flagged = sum(int(row.split(",")[2]) for row in rows[1:])
    assert f"{flagged} flagged" in printed
    # Without labels: scores and flags only.
    assert cli.main(["score", path, "--input", x_file]) == 0
    assert "AUROC" not in capsys.readouterr().out


@pytest.mark.once
def test_kerasae_score_refuses_bad_input_with_one_line_and_writes_nothing(oneclass_entry, tmp_path, capsys):
    path, _ = oneclass_entry
    x_file = os.path.join(os.path.dirname(path), "x_test.npy")
    n = len(np.load(x_file))
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((3, 8, 8), "uint8"))
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(3, "int64"))
    bad = tmp_path / "bad.csv"
    bad.write_text("label\n" + "0\n" * 5 + "yes\n" + "1\n" * (n - 6))
    out = tmp_path / "scores.csv"
    cases = {
        (str(small), None): f"{small}: images of shape (8, 8, 1), but {path} takes (28, 28, 1)",
        (x_file, str(short)): f"{short}: 3 labels for {n} items of --input",
        (x_file, str(bad)): f"{bad}: line 7 is 'yes'; labels are 1 (anomalous) or 0 (normal)",
        (str(tmp_path / "none.npy"), None): "none.npy: cannot read",
    }
    for (x, labels), message in cases.items():
        args = ["score", path, "--input", x, "--output", str(out)] + ([] if labels is None else ["--labels", labels])
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    # A conditional entry scores an image given its class, which the command has no way to take.
    cvae = os.path.join(ROOT, "zoo", "cvae-mnist")
    assert cli.main(["score", cvae, "--input", x_file, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a CVAE needs `labels`, one integer class per image" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_metrics_json_of_every_entry_has_an_anomaly_summary(shared_zoo):
    for name in ("test-ae", "test-vae"):
        with open(os.path.join(shared_zoo, name, "metrics.json")) as f:
            found = json.load(f)["evaluation"]["anomaly"]
        assert found["threshold"] is not None and 0.0 <= found["flagged"] <= 0.2
        assert found["score"] == ("elbo" if name == "test-vae" else "reconstruction")
