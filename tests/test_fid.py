"""The FID: the Fréchet distance as defined, the shipped classifier as stated, entries that report it."""

import os

import numpy as np
import pytest
from conftest import FULL_MNIST_SIZES, full_mnist
from scipy import linalg

from kerasae import data
from kerasae.assess import fid
from kerasae.spec import recipe
from kerasae.store import zoo


@pytest.mark.once
def test_frechet_distance_is_the_closed_form_between_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 5))
    b = rng.standard_normal((2000, 5)) @ rng.standard_normal((5, 5)) + 0.5
    (mu_a, cov_a), (mu_b, cov_b) = fid.statistics(a), fid.statistics(b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert fid.frechet_distance((mu_a, cov_a), (mu_b, cov_b)) == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance((mu_a, cov_a), (mu_a, cov_a)) == pytest.approx(0.0, abs=1e-6)
    singular = np.zeros((5, 5))  # features that never fire: still finite
    assert np.isfinite(fid.frechet_distance((mu_a, singular), (mu_b, cov_b)))


def test_the_shipped_classifier_tells_digits_from_noise_and_its_floor_is_small():
    ref = fid.reference()
    assert ref["classifier_accuracy"] > 0.98 and 0.0 < ref["floor"] < 5.0
    noise = np.random.default_rng(0).random((500, 28, 28, 1)).astype("float32")
    assert fid.fid(noise) > 50 * ref["floor"]


def test_the_shipped_classifier_has_its_stated_accuracy_on_real_mnist():
    import keras

    d = data.load(recipe.DataSection(dataset="mnist", path=full_mnist(), binarize="none", limit=2000))
    assert d.record["name"] == "mnist" and d.record["full_sizes"] == FULL_MNIST_SIZES
    _, classifier = fid.build_classifier()
    asset = np.load(fid.ASSET)
    classifier.set_weights([asset[f"weight_{i}"] for i in range(int(asset["weights"]))])
    predicted = np.argmax(keras.ops.convert_to_numpy(classifier.predict(d.x_test, verbose=0)), axis=1)
    assert np.mean(predicted == d.y_test) == pytest.approx(fid.reference()["classifier_accuracy"], abs=0.01)
    # Real digits against the reference: near the floor (FID grows as the sample shrinks: 2,000 here
    # against 5,000 a side for the floor, hence the factor).
    assert fid.fid(d.x_test) < 5 * fid.reference()["floor"]


def test_an_entry_reports_the_fid_of_each_sampler(shared_zoo):
    scores = zoo.read_metrics(os.path.join(shared_zoo, "test-vae"))["evaluation"]["fid"]
    assert set(scores) == {"prior", "gmm", "floor", "samples", "classifier_accuracy"} and scores["samples"] == 300
    assert all(np.isfinite(scores[s]) and scores[s] > scores["floor"] for s in ("prior", "gmm"))
    scores = zoo.read_metrics(os.path.join(shared_zoo, "test-ae"))["evaluation"]["fid"]
    assert "prior" not in scores and np.isfinite(scores["gmm"])  # an AE has no prior to sample
