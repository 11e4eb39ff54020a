"""Metrics are right (known answers, scikit-learn), consistent, reproducible; figures are real pictures."""

import json
import os

import matplotlib.image
import numpy as np
import pytest
import yaml
from conftest import copy_entry, small_recipe
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA

import kerasae
from kerasae import cli, data
from kerasae.assess import cards, evaluate, metric_table
from kerasae.spec import recipe
from kerasae.store import zoo


def _linear_gaussian_vae(exact_posterior):
    """A VAE whose marginal p(x) = N(b, W W^T + I) is known in closed form.

    p(z) = N(0, I), p(x | z) = N(W z + b, I). With W's columns orthogonal the
    posterior covariance (I + W^T W)^-1 is diagonal, so the encoder can hold the
    exact posterior, and then every importance weight equals p(x).
    """
    rng = np.random.default_rng(0)
    d, k = 16, 3
    W = np.linalg.qr(rng.standard_normal((d, k)))[0] * np.array([2.0, 1.5, 0.8])
    b = rng.random(d)
    model = kerasae.VAE(
        image_shape=(4, 4, 1),
        encoder_layers=[],
        latent_dim=k,
        likelihood="gaussian",
        output_activation="linear",
        seed=0,
    )
    cov = np.linalg.inv(np.eye(k) + W.T @ W)  # diagonal
    post = cov @ W.T  # z_mean = post (x - b)
    model.decoder.get_layer("logits").set_weights([W.T.astype("float32"), b.astype("float32")])
    mean_kernel, mean_bias = post.T, -post @ b
    log_var_bias = np.log(np.diag(cov))
    if not exact_posterior:
        mean_kernel, log_var_bias = 0.8 * mean_kernel, log_var_bias + 0.5
    model.encoder.get_layer("z_mean").set_weights([mean_kernel.astype("float32"), mean_bias.astype("float32")])
    model.encoder.get_layer("z_log_var").set_weights([np.zeros((d, k), "float32"), log_var_bias.astype("float32")])
    x = rng.multivariate_normal(b, W @ W.T + np.eye(d), size=200)
    exact_nll = -multivariate_normal(b, W @ W.T + np.eye(d)).logpdf(x).mean()
    return model, x.reshape(-1, 4, 4, 1).astype("float32"), exact_nll


def test_nll_estimator_recovers_a_known_likelihood():
    model, x, exact = _linear_gaussian_vae(exact_posterior=True)
    np.testing.assert_allclose(evaluate.importance_sampled_nll(model, x, k=10), exact, rtol=1e-4)
    # With an imperfect encoder the estimate converges from above as k grows.
    model, x, exact = _linear_gaussian_vae(exact_posterior=False)
    few = evaluate.importance_sampled_nll(model, x, k=1)
    many = evaluate.importance_sampled_nll(model, x, k=1000, chunk=128)
    assert few > many > exact - 0.05
    assert many - exact < 0.25 * (few - exact)


def test_nll_memory_is_chunked(monkeypatch):
    model, x, _ = _linear_gaussian_vae(exact_posterior=False)
    seen = []
    original = evaluate.ImportanceLogWeights.__init__

    def spy(self, vae, k, **kwargs):
        seen.append(k)
        original(self, vae, k, **kwargs)

    monkeypatch.setattr(evaluate.ImportanceLogWeights, "__init__", spy)
    evaluate.importance_sampled_nll(model, x, k=250, chunk=100)
    assert seen == [100, 50]  # 100 + 100 + 50 samples, never more than a chunk at once


@pytest.fixture
def vae_entry(shared_zoo):
    """The shared small VAE entry (2-D code, every figure, the NLL with k = 200)."""
    return os.path.join(shared_zoo, "test-vae")


def test_variational_metrics_are_consistent(vae_entry):
    entry = vae_entry
    ev = json.load(open(os.path.join(entry, zoo.METRICS_FILE)))["evaluation"]
    values = [ev[k] for k in ("elbo", "nll", "elbo_reconstruction", "elbo_kl", "probe_accuracy")]
    assert np.all(np.isfinite(values))
    assert ev["elbo"] <= -ev["nll"] <= 0  # log p(x) >= the ELBO
    assert ev["nll"] <= ev["elbo_reconstruction"] + ev["elbo_kl"]
    assert ev["elbo_kl"] >= 0 and 0 <= ev["active_units"] <= 2
    assert 0.1 < ev["probe_accuracy"] <= 1.0


def test_pca_baseline_matches_scikit_learn(vae_entry, mnist_like):
    entry = vae_entry
    ev = json.load(open(os.path.join(entry, zoo.METRICS_FILE)))["evaluation"]
    r = recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    d = data.load(r.data, seed=r.train.seed)
    flat_train, flat_test = d.x_train.reshape(len(d.x_train), -1), d.x_test.reshape(len(d.x_test), -1)
    pca = PCA(2).fit(flat_train)
    error = ((flat_test - pca.inverse_transform(pca.transform(flat_test))) ** 2).sum(axis=1).mean()
    np.testing.assert_allclose(ev["pca"]["sse_unclipped"], error, rtol=1e-3)


def test_eval_on_a_reloaded_entry_reproduces_the_stored_metrics(shared_zoo, tmp_path, capsys):
    entry = copy_entry(shared_zoo, "test-vae", str(tmp_path))  # eval rewrites its metrics and cards
    stored = json.load(open(os.path.join(entry, zoo.METRICS_FILE)))["evaluation"]
    assert cli.main(["eval", entry, "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    for key in ("elbo", "nll", "elbo_reconstruction", "elbo_kl", "probe_accuracy", "active_units"):
        np.testing.assert_allclose(fresh[key], stored[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(fresh["reconstruction"]["bce"], stored["reconstruction"]["bce"], rtol=1e-5)
    assert cli.main(["eval", entry]) == 0
    table = capsys.readouterr().out
    assert "NLL, importance-sampled (k = 200)" in table and "nats / image" in table


def test_figures_are_real_pictures(vae_entry):
    entry = vae_entry
    expected = ["reconstructions", "loss", "filters", "latent", "samples", "interpolation", "manifold"]
    for name in expected:
        image = matplotlib.image.imread(os.path.join(entry, zoo.FIGURES_DIR, f"{name}.png"))
        assert image.shape[0] >= 200 and image.shape[1] >= 300, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"
    card = open(os.path.join(entry, zoo.CARD_FILE)).read()
    assert all(f"figures/{name}.png" in card for name in expected)
    assert "| test ELBO |" in card
    table = open(os.path.join(os.path.dirname(entry), zoo.CARD_FILE)).read()
    assert "[test-vae](test-vae/README.md) | vae | 2 |" in table


def test_snapshots_follow_the_chosen_epochs(mnist_like):
    from test_models import fit_small

    from kerasae.run.callbacks import Snapshots

    model, _, d = fit_small(mnist_like, "vae", epochs=1)
    snapshots = Snapshots(d.x_test[:5], None, epochs=[1, 3], steps=7)
    model.fit(d.x_train, epochs=3, batch_size=32, callbacks=[snapshots], verbose=0)
    assert sorted(snapshots.reconstructions) == sorted(snapshots.interpolations) == [1, 3]
    assert snapshots.interpolations[3].shape == (7, 28, 28, 1)
    assert np.abs(snapshots.reconstructions[1] - snapshots.reconstructions[3]).max() > 1e-3


def test_deterministic_family_metrics(tmp_path, mnist_like, zoo_dir):
    r = small_recipe("dae", mnist_like, epochs=2, outputs={"figures": ["denoising", "filters", "latent"]})
    r["corruption"] = {"type": "gaussian", "sigma": 0.3}
    r["model"]["encoder"] = [
        {"filters": 4, "kernel_size": 3, "strides": 2},
        {"filters": 8, "kernel_size": 3, "strides": 2},
    ]
    path = tmp_path / "dae.yaml"
    path.write_text(yaml.safe_dump(r))
    assert cli.main(["train", str(path), "--zoo", zoo_dir, "--quiet"]) == 0
    entry = os.path.join(zoo_dir, "test-dae")
    ev = json.load(open(os.path.join(entry, zoo.METRICS_FILE)))["evaluation"]
    assert "nll" not in ev and "elbo" not in ev
    rec = ev["reconstruction"]
    assert rec["psnr_db"] > 0 and rec["sse"] > 0 and rec["bce"] > 0
    figures = os.path.join(entry, zoo.FIGURES_DIR)
    assert sorted(os.listdir(figures)) == ["denoising.png", "filters.png", "latent.png"]
    tiles = matplotlib.image.imread(os.path.join(figures, "filters.png"))  # 4 conv kernels, 3x3 each
    assert tiles.shape[0] > 100 and tiles[..., :3].std() > 0.05

    # The denoising gain, measured here on a fresh draw of the noise: Gaussian noise of sd 0.3 adds
    # 0.09 per pixel in expectation (784 pixels: 70.6 per image, ~0.25 sd over 200 images).
    gain = ev["denoising"]
    assert gain["noisy_input_sse"] == pytest.approx(0.09 * 784, abs=1.5)
    model = zoo.load(entry)
    clean = data.load(recipe.load(os.path.join(entry, zoo.RECIPE_FILE)).data).x_test
    noisy = clean + 0.3 * np.random.default_rng(0).standard_normal(clean.shape).astype("float32")
    noisy_error = np.mean(np.sum((noisy - clean) ** 2, axis=(1, 2, 3)))
    output_error = np.mean(np.sum((model.denoise(noisy) - clean) ** 2, axis=(1, 2, 3)))
    assert gain["output_sse"] == pytest.approx(output_error, rel=0.03)
    assert gain["gain_db"] == pytest.approx(10 * np.log10(noisy_error / output_error), abs=0.15)


def _with_decoder_span(model, basis):
    """Sets a linear AE's decoder kernel (code, pixels) to mixtures of the rows of `basis`."""
    mixing = np.random.default_rng(1).standard_normal((len(basis), len(basis)))  # invertible: the span is kept
    kernel = model.decoder.get_layer("logits").kernel
    kernel.assign((mixing @ basis).astype("float32"))


def test_linear_autoencoder_reports_its_principal_angles_to_the_pca_subspace(mnist_like):
    """Decoder rows cos(t) u_i + sin(t) v_i, with u_i PCA's components and v_i orthonormal
    directions outside their span, are at exactly the angles t_i from the PCA subspace."""
    d = data.load(recipe.DataSection(path=mnist_like))
    model = kerasae.Autoencoder(
        image_shape=(28, 28, 1),
        latent_dim=3,
        latent_activation="linear",
        output_activation="linear",
        reconstruction="mse",
    )
    model.compile("adam")
    _, pca = evaluate.pca_baseline(d.x_train, d.x_test, 3)
    u = pca.components_  # (3, 784), orthonormal rows
    v = np.random.default_rng(0).standard_normal((3, 784))
    v = np.linalg.qr((v - v @ u.T @ u).T)[0].T  # orthonormal, and orthogonal to the u_i
    angles = np.array([5.0, 30.0, 80.0])
    t = np.radians(angles)[:, None]
    _with_decoder_span(model, np.cos(t) * u + np.sin(t) * v)
    ev = evaluate.evaluate(model, d, probe=False)
    np.testing.assert_allclose(sorted(ev["principal_angles_deg"]), angles, atol=1e-3)
    # PCA's own span is at 0 degrees.
    _with_decoder_span(model, u)
    np.testing.assert_allclose(evaluate.evaluate(model, d, probe=False)["principal_angles_deg"], 0.0, atol=1e-3)


def test_a_new_metric_is_one_entry_of_the_metric_table(monkeypatch, mnist_like, tmp_path):
    """The metric table drives both the evaluation and the card: one entry adds a metric to both,
    computed only where it applies."""
    d = data.load(recipe.DataSection(path=mnist_like))
    model = kerasae.Autoencoder(image_shape=(28, 28, 1), latent_dim=3)
    model.compile("adam")
    brightest = metric_table.Metric(
        "brightest_output",
        lambda e: float(e.model.reconstruct(e.x_test[:10]).max()),
        metric_table.row("brightest reconstructed pixel", "of 1"),
        "",
        lambda e: not e.model.variational,
    )
    monkeypatch.setattr(metric_table, "METRICS", metric_table.METRICS + (brightest,))
    ev = evaluate.evaluate(model, d, probe=False)
    assert ev["brightest_output"] == pytest.approx(float(model.reconstruct(d.x_test[:10]).max()))
    assert "elbo" not in ev and "denoising" not in ev  # what does not apply to a plain AE is not computed
    metrics = {"family": "ae", "test": {"loss": 1.0}, "evaluation": ev}
    rows = cards.metric_rows(metrics)
    assert rows[-1] == ("brightest reconstructed pixel", ev["brightest_output"], "of 1")
    assert [label for label, _, _ in rows[:2]] == ["test loss (training objective)", "reconstruction BCE"]
    assert {m.better for m in metric_table.METRICS} <= {"higher", "lower", ""}
