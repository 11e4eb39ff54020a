"""What each family claims: linear AE = PCA, IWAE bound, CVAE labels, sparsity, contraction; every recipe trains."""

import glob
import os

import keras
import numpy as np
import pytest
from conftest import RECIPES, small_recipe
from keras import ops
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA
from test_models import fit_small

import kerasae
from kerasae import cli, data
from kerasae.errors import DataError, LabelsError
from kerasae.spec import builder, recipe


def test_linear_autoencoder_spans_the_pca_subspace():
    """The seed: a linear AE's weights span the same subspace as PCA's top components."""
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    basis = np.linalg.qr(rng.standard_normal((64, k)))[0]
    x = (rng.standard_normal((n, k)) * [2.0, 1.5, 1.2, 1.0]) @ basis.T + 0.1 * rng.standard_normal((n, 64))
    x = (0.5 + x).reshape(n, 8, 8, 1).astype("float32")
    keras.utils.set_random_seed(0)
    model = kerasae.Autoencoder(
        image_shape=(8, 8, 1),
        latent_dim=k,
        latent_activation="linear",
        output_activation="linear",
        reconstruction="mse",
        seed=0,
    )
    epochs, batch = 10, 100
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.03, epochs * n // batch)))
    model.fit(x, batch_size=batch, epochs=epochs, verbose=0)

    components = PCA(k).fit(x.reshape(n, -1)).components_.T  # (64, k)
    decoder_weights = ops.convert_to_numpy(model.decoder.get_layer("logits").kernel).T  # (64, k)
    angles = np.degrees(subspace_angles(decoder_weights, components))
    assert angles.max() < 2.0, angles
    # A random k-dimensional subspace is nowhere near (the test can fail).
    random_angles = np.degrees(subspace_angles(rng.standard_normal((64, k)), components))
    assert random_angles.max() > 45.0


def test_iwae_bound_tightens_with_more_samples(mnist_like):
    model, _, d = fit_small(mnist_like, "iwae", epochs=3)
    x = ops.convert_to_tensor(d.x_test)
    target, z_mean, z_log_var = model.posterior(x)

    def bound(k):
        log_w, _ = model.log_weights(target, z_mean, z_log_var, k=k)
        return float(ops.mean(ops.logsumexp(log_w, axis=0) - np.log(k)))

    elbo, iw5, iw50 = bound(1), bound(5), bound(50)
    assert elbo < iw5 < iw50  # log p(x) >= L_50 >= L_5 >= L_1 (Burda et al., Theorem 1)
    # The k = 1 bound is the ELBO: -(reconstruction + KL) up to sampling noise.
    losses = model.compute_losses(x)
    np.testing.assert_allclose(-elbo, float(losses["reconstruction_loss"] + losses["kl_loss"]), rtol=0.02)


def test_cvae_generates_the_digits_asked_for(mnist_like):
    model, _, d = fit_small(mnist_like, "cvae", epochs=2)
    images = model.generate(labels=[3, 3, 7], seed=0)
    assert images.shape == (3, 28, 28, 1)
    np.testing.assert_allclose(images[0], model.generate(digits=[3], seed=0)[0], atol=1e-6)  # the older name
    # Same code, different label: a different image.
    assert np.abs(model.decode(np.zeros((1, 8)), [3]) - model.decode(np.zeros((1, 8)), [7])).max() > 0.05
    with pytest.raises(ValueError, match="needs `labels`"):
        model.reconstruct(d.x_test)
    with pytest.raises(ValueError, match=r"must be 2 integers in \[0, 10\)"):
        model.decode(np.zeros((2, 8)), [1, 12])
    assert model.interpolate(d.x_test[0], d.x_test[1], steps=4, labels=(d.y_test[0], d.y_test[1])).shape[0] == 4


def test_every_method_takes_labels_which_only_a_conditional_family_uses(mnist_like):
    """One interface: callers pass the labels they have and never ask which kind of model they hold."""
    vae, _, d = fit_small(mnist_like, "vae", epochs=1)
    cvae, _, _ = fit_small(mnist_like, "cvae", epochs=1)
    x, y = d.x_test[:6], d.y_test[:6]
    z = np.zeros((6, vae.code_size), dtype="float32")
    assert not vae.conditional and cvae.conditional
    # An unconditional model ignores them: the same outputs with or without.
    np.testing.assert_array_equal(vae.reconstruct(x, y), vae.reconstruct(x))
    np.testing.assert_array_equal(vae.encode(x, y), vae.encode(x))
    np.testing.assert_array_equal(vae.decode(z, y), vae.decode(z))
    vae.score_kind = "reconstruction"  # deterministic (its default, the -ELBO, draws codes)
    np.testing.assert_array_equal(vae.score(x, y), vae.score(x))
    np.testing.assert_array_equal(vae.generate(labels=y, seed=1), vae.generate(6, seed=1))
    np.testing.assert_array_equal(vae.interpolate(x[0], x[1], 4, labels=y[:2]), vae.interpolate(x[0], x[1], 4))
    assert vae.inputs_for(x, y)[1] is None and cvae.inputs_for(x, y)[1].tolist() == y.tolist()
    # A conditional one uses them: another label, another image ...
    assert cvae.generate(labels=y, seed=1).shape == (6, 28, 28, 1)
    assert np.abs(cvae.reconstruct(x, y) - cvae.reconstruct(x, (y + 1) % 10)).max() > 1e-3
    assert cvae.interpolate(x[0], x[1], 4, labels=y[:2]).shape == (4, 28, 28, 1)
    # ... and requires them, with an error a user can act on (a KerasaeError: the CLI's exit code 2).
    for call in (
        lambda: cvae.reconstruct(x),
        lambda: cvae.score(x),
        lambda: cvae.interpolate(x[0], x[1], 4),
        lambda: cvae.inputs_for(x),
    ):
        with pytest.raises(LabelsError, match=r"a CVAE needs `labels`, one integer class per image"):
            call()
    with pytest.raises(LabelsError, match=r"must be 2 integers in \[0, 10\)"):
        cvae.interpolate(x[0], x[1], 4, labels=(1, 10))


def test_cvae_without_labels_is_a_clean_error(tmp_path, zoo_dir, capsys):
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x_train=np.random.default_rng(0).random((50, 8, 8)).astype("float32"))
    r = small_recipe("cvae", str(path))
    r["data"].update(dataset="npz", binarize="none")
    recipe_file = tmp_path / "cvae.yaml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(r))
    assert cli.main(["train", str(recipe_file), "--zoo", zoo_dir]) == 2
    assert "family 'cvae' needs labels, but the data has no y_train" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(zoo_dir, "test-cvae"))


def test_sparsity_penalty_lowers_mean_activation(mnist_like):
    common = {"model": {"encoder": [], "latent_dim": 64, "latent_activation": "sigmoid"}}
    plain, _, d = fit_small(mnist_like, "ae", epochs=4, **common)
    sparse, _, _ = fit_small(mnist_like, "sparse_ae", epochs=4, loss={"sparsity_weight": 3.0}, **common)
    plain_rate, sparse_rate = plain.encode(d.x_test).mean(), sparse.encode(d.x_test).mean()
    assert sparse_rate < 0.5 * plain_rate
    assert abs(sparse_rate - 0.05) < abs(plain_rate - 0.05)


def _numerical_jacobian_norm(model, x, eps=1e-3):
    """||d code / d x||_F^2 by central differences, one input pixel at a time."""
    flat = x.reshape(-1)
    total = 0.0
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        diff = model.encode(up.reshape(1, *x.shape)) - model.encode(down.reshape(1, *x.shape))
        total += float(np.sum((diff / (2 * eps)) ** 2))
    return total


@pytest.mark.parametrize("encoder_layers", [[], [16]])
def test_contractive_penalty_is_the_jacobian_norm(encoder_layers):
    keras.utils.set_random_seed(0)
    model = kerasae.ContractiveAutoencoder(
        image_shape=(4, 4, 1),
        encoder_layers=encoder_layers,
        latent_dim=3,
        activation="tanh",
        latent_activation="sigmoid",
        seed=0,
    )
    x = np.random.default_rng(0).random((1, 4, 4, 1)).astype("float32")
    numerical = _numerical_jacobian_norm(model, x[0])
    tx = ops.convert_to_tensor(x)
    if not encoder_layers:  # exact for the one-layer encoder
        analytic = float(model.jacobian_norm(tx, model.encoder(tx))[0])
        np.testing.assert_allclose(analytic, numerical, rtol=1e-3)
    else:  # an unbiased finite-difference estimate for deeper ones
        batch = ops.convert_to_tensor(np.repeat(x, 4000, axis=0))
        estimate = float(ops.mean(model.jacobian_norm(batch, model.encoder(batch))))
        np.testing.assert_allclose(estimate, numerical, rtol=0.1)


def test_contractive_training_shrinks_the_jacobian(mnist_like):
    # A linear code: its Jacobian is the encoder's weight matrix, which a plain AE has no
    # reason to keep small (the decoder can undo any scale). Saturating codes on binary
    # images contract by themselves, penalty or not.
    common = {"model": {"encoder": [], "latent_dim": 16, "latent_activation": "linear"}}
    plain, _, d = fit_small(mnist_like, "ae", epochs=3, **common)
    contractive, history, _ = fit_small(
        mnist_like, "contractive_ae", epochs=3, loss={"contractive_weight": 1.0}, **common
    )
    # The plain AE's weights in a contractive AE, to measure its Jacobian the same way.
    config = {k: v for k, v in plain.get_config().items() if k not in ("name", "trainable", "dtype")}
    plain_measured = kerasae.ContractiveAutoencoder(**config)
    plain_measured.set_weights(plain.get_weights())
    x = ops.convert_to_tensor(d.x_test[:50])

    def mean_norm(model):
        return float(ops.mean(model.jacobian_norm(x, model.encoder(x))))

    assert mean_norm(contractive) < 0.5 * mean_norm(plain_measured)
    assert history["contractive_loss"][-1] < history["contractive_loss"][0]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(RECIPES, "*.yaml"))))
def test_every_shipped_recipe_trains_with_falling_loss(path, mnist_like):
    dataset = recipe.load(path).data.dataset
    if dataset == "patches":  # cut from the photographs scikit-learn ships
        data_keys = ["data.patches=2000"]
    elif dataset in ("table", "sequence"):  # the recipe's own file, shipped in recipes/data/
        data_keys = []
    else:
        data_keys = [f"data.path={mnist_like}"]
    r = recipe.load(path, [*data_keys, "data.limit=256", "train.batch_size=32"])
    keras.utils.set_random_seed(0)
    d = data.load(r.data)
    model = builder.build(r, d.image_shape)
    model.compile(optimizer=builder.optimizer(r.train))
    inputs = model.inputs_for(d.x_train, d.y_train)
    # The training step alone (an `evaluate` around it compiled a second program per recipe on JAX
    # and TensorFlow): the second epoch's mean training loss is below the first's.
    losses = model.fit(*inputs, batch_size=32, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0], losses


def test_labelled_data_is_required_by_name(mnist_like):
    r = recipe.validate(small_recipe("cvae", mnist_like))
    d = data.load(r.data)
    assert d.y_train is not None
    d.y_test = None
    from kerasae.run.train import _check_labels

    with pytest.raises(DataError, match="needs labels, but the data has no y_test"):
        _check_labels(d, r)


def _mmd_by_hand(a, b, scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)):
    """The unbiased MMD^2 of Tolstikhin et al. with the IMQ kernel, written out with loops."""
    n, d = a.shape
    total = 0.0
    for scale in scales:
        c = 2.0 * d * scale

        def k(u, v, c=c):
            return c / (c + np.sum((u - v) ** 2))

        same = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        across = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / (n * n)
        total += same - 2.0 * across
    return total


def test_the_wae_mmd_is_the_papers_estimator_and_tells_the_prior_from_a_shifted_one():
    from kerasae import losses

    rng = np.random.default_rng(0)
    prior = rng.standard_normal((40, 3)).astype("float32")
    same, shifted = rng.standard_normal((40, 3)).astype("float32"), prior + 2.0
    for codes in (same, shifted):
        value = float(ops.convert_to_numpy(losses.mmd_imq(codes, prior)))
        assert value == pytest.approx(_mmd_by_hand(codes.astype("float64"), prior.astype("float64")), rel=1e-4)
    big_prior, big_same = (rng.standard_normal((400, 3)).astype("float32") for _ in range(2))
    near = float(ops.convert_to_numpy(losses.mmd_imq(big_same, big_prior)))
    far = float(ops.convert_to_numpy(losses.mmd_imq(big_same + 1.0, big_prior)))
    assert far > 10 * abs(near)


def test_wae_training_pulls_the_codes_to_the_prior(mnist_like):
    from kerasae import losses

    def mmd_to_prior(model, d):
        codes = model.encode(d.x_test)
        prior = np.random.default_rng(1).standard_normal(codes.shape).astype("float32")
        return float(ops.convert_to_numpy(losses.mmd_imq(codes, prior)))

    ae, _, d = fit_small(mnist_like, "ae", epochs=4)
    wae, history, _ = fit_small(mnist_like, "wae", epochs=4, loss={"mmd_weight": 100.0})
    assert history["mmd_loss"][-1] < history["mmd_loss"][0]
    assert mmd_to_prior(wae, d) < 0.5 * mmd_to_prior(ae, d)
    assert wae.generate(4, seed=0).shape == (4, 28, 28, 1)


def test_rae_penalties_are_the_codes_and_decoder_kernels_squared_norms(mnist_like):
    model, _, d = fit_small(mnist_like, "rae", epochs=1, loss={"code_weight": 0.5, "decoder_weight": 0.01})
    x = ops.convert_to_tensor(d.x_test[:16])
    code = model.encoder(x)
    terms = model.penalties(x, code)
    codes = ops.convert_to_numpy(code)
    kernels = [ops.convert_to_numpy(w) for w in model.decoder.trainable_weights if len(w.shape) > 1]
    assert float(terms["code_penalty"][1]) == pytest.approx(0.5 * np.mean(np.sum(codes**2, axis=1)), rel=1e-5)
    assert float(terms["decoder_penalty"][1]) == pytest.approx(sum(np.sum(k**2) for k in kernels), rel=1e-5)
    assert (terms["code_penalty"][0], terms["decoder_penalty"][0]) == (0.5, 0.01)
    with pytest.raises(ValueError, match="was not trained towards a prior"):
        model.generate(2)


def test_the_gmm_sampler_draws_codes_like_the_training_codes(mnist_like):
    from kerasae.assess import samplers

    model, _, d = fit_small(mnist_like, "ae", epochs=2)
    params = samplers.fit_to_model(model, d)
    codes = model.encode(d.x_train)
    drawn = samplers.draw(model, "gmm", 4000, seed=0, params=params)
    assert drawn.shape == (4000, codes.shape[1]) and drawn.dtype == np.float32
    np.testing.assert_allclose(drawn.mean(axis=0), codes.mean(axis=0), atol=0.15 * codes.std(axis=0).max())
    np.testing.assert_allclose(np.cov(drawn.T), np.cov(codes.T), atol=0.2 * np.cov(codes.T).max())
    again = samplers.draw(model, "gmm", 5, seed=3, params=params)
    np.testing.assert_array_equal(again, samplers.draw(model, "gmm", 5, seed=3, params=params))  # seeded
    with pytest.raises(ValueError, match="has no prior"):
        samplers.draw(model, "prior", 2)


def test_the_gmm_sampler_of_a_wide_code_is_diagonal_and_draws_without_a_factor_per_code():
    from kerasae.assess import samplers

    rng = np.random.default_rng(0)
    units = samplers.FULL_COVARIANCE_UNITS + 1  # a VQ-VAE's code on MNIST is 784 units
    scales = rng.uniform(0.5, 2.0, units)
    codes = np.concatenate([rng.normal(-3, 1, (1000, units)), rng.normal(3, 1, (1000, units))]) * scales
    params = samplers.fit_gmm(codes, components=2)
    assert params["covariances"].shape == (2, units)  # diagonal: not (2, units, units)
    drawn = samplers.sample_gmm(params, 20_000, seed=0)
    np.testing.assert_allclose(drawn.mean(axis=0), codes.mean(axis=0), atol=0.1 * scales.max())
    np.testing.assert_allclose(drawn.std(axis=0), codes.std(axis=0), rtol=0.05)
    narrow = samplers.fit_gmm(codes[:, :3], components=2)
    assert narrow["covariances"].shape == (2, 3, 3)  # full for narrow codes


def _log_normal(z, mean, log_var):
    return (-0.5 * ((z - mean) ** 2 * np.exp(-log_var) + log_var + np.log(2 * np.pi))).sum(-1)


def test_betatcvae_terms_sum_to_the_kl_and_estimate_the_aggregate_posterior_without_bias():
    from scipy.special import logsumexp

    from kerasae.models.betatcvae import kl_decomposition

    rng = np.random.default_rng(0)
    n, m, d = 50, 10, 3
    means = rng.standard_normal((n, d)).astype("float32")
    log_vars = np.full((n, d), -1.0, "float32")
    z = (means + 0.3 * rng.standard_normal((n, d))).astype("float32")
    mi, tc, dim_kl = (float(t) for t in kl_decomposition(z[:m], means[:m], log_vars[:m], n))
    kl = np.mean(_log_normal(z[:m], means[:m], log_vars[:m]) - _log_normal(z[:m], 0.0, 0.0))
    assert mi + tc + dim_kl == pytest.approx(kl, abs=1e-3)  # the three terms are the KL, split
    # q(z_0) = 1/N sum_n q(z_0 | x_n): the estimator's weights (1/N for the image itself, (N-1)/(N(M-1))
    # for each other image of the batch) average to it over random batches.
    exact = np.mean(np.exp(_log_normal(z[0], means, log_vars)))
    estimates = []
    for _ in range(3000):
        batch = np.r_[0, rng.choice(np.arange(1, n), m - 1, replace=False)]
        weights = np.where(batch == 0, -np.log(n), np.log((n - 1) / (n * (m - 1))))
        estimates.append(np.exp(logsumexp(_log_normal(z[0], means[batch], log_vars[batch]) + weights)))
    assert np.mean(estimates) == pytest.approx(exact, rel=0.05)
    # Codes whose units are independent have no total correlation; correlated ones have some.
    wide = rng.standard_normal((400, 2)).astype("float32")
    narrow = np.full((400, 2), -4.0, "float32")
    independent = float(kl_decomposition(wide, wide, narrow, 400)[1])
    correlated = float(kl_decomposition(wide[:, :1].repeat(2, 1), wide[:, :1].repeat(2, 1), narrow, 400)[1])
    assert correlated > independent + 1.0


def test_betatcvae_kl_warmup_ramps_its_regularizer_up_to_one(mnist_like, tmp_path):
    """The β-TCVAE has no beta: a warm-up scales its three weighted terms from 0 to 1."""
    from kerasae.run import train

    seen = []

    class Weights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(ops.convert_to_numpy(self.model.kl_weight)))

    r = recipe.validate(small_recipe("betatcvae", mnist_like, epochs=3, loss={"kl_warmup_epochs": 2}))
    train.run(r, str(tmp_path / "zoo"), verbose=0, callbacks=[Weights()])
    assert seen == pytest.approx([0.0, 0.5, 1.0])


def test_betatcvae_total_correlation_weight_lowers_the_total_correlation(mnist_like):
    _, low, _ = fit_small(mnist_like, "betatcvae", epochs=4, loss={"tc_weight": 0.0})
    _, high, _ = fit_small(mnist_like, "betatcvae", epochs=4, loss={"tc_weight": 20.0})
    assert high["val_total_correlation"][-1] < low["val_total_correlation"][-1]
    for history in (low, high):  # every term is logged, and the KL is their sum
        total = [sum(history[k][-1] for k in ("mutual_information", "total_correlation", "dimension_kl"))]
        assert total == pytest.approx([history["kl_loss"][-1]], rel=1e-4)


def test_the_vector_quantizer_picks_the_nearest_code_and_passes_gradients_straight_through():
    from kerasae.layers import VectorQuantizer

    quantizer = VectorQuantizer(codebook_size=6, code_dim=3, ema=False)
    codebook = ops.convert_to_numpy(quantizer.embeddings)
    z = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    straight, quantized, indices = (ops.convert_to_numpy(t) for t in quantizer(z))
    expected = np.argmin(((z[:, :, None, :] - codebook[None, None]) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(quantized, codebook[expected], atol=1e-6)
    np.testing.assert_allclose(straight, codebook[expected], atol=1e-5)  # values of the codes, gradients of z


@pytest.mark.parametrize("ema", [True, False])
def test_vqvae_trains_its_encoder_through_the_quantizer_and_uses_its_codebook(mnist_like, ema):
    conv = [{"filters": 8, "kernel_size": 3, "strides": 2}, {"filters": 16, "kernel_size": 3, "strides": 2}]
    sections = {"model": {"encoder": conv, "latent_dim": 4}, "loss": {"codebook_size": 32, "codebook_ema": ema}}
    r = recipe.validate(small_recipe("vqvae", mnist_like, epochs=1, **sections))
    d = data.load(r.data, seed=r.train.seed)
    keras.utils.set_random_seed(0)
    model = builder.build(r, d.image_shape)
    model.compile(optimizer=builder.optimizer(r.train))
    before = [ops.convert_to_numpy(w).copy() for w in (model.encoder.weights[0], model.quantizer.embeddings)]
    history = model.fit(d.x_train, batch_size=32, epochs=4, verbose=0).history
    after = [ops.convert_to_numpy(w) for w in (model.encoder.weights[0], model.quantizer.embeddings)]
    assert not np.allclose(before[0], after[0])  # the reconstruction's gradient reached the encoder
    assert not np.allclose(before[1], after[1])  # the codebook learned (moving averages or gradient)
    assert model.quantizer.embeddings.trainable is not ema
    assert history["loss"][-1] < history["loss"][0]
    assert model.positions == 49 and model.encode(d.x_test[:3]).shape == (3, 49 * 4)
    used = model.code_metrics(d.x_test)
    assert used["codes_in_use"] > 0.25 and 1.0 < used["perplexity"] <= 32.0
    # The code is made of codebook vectors: decoding a code, or a code nudged off the codebook, is the same.
    codes = model.encode(d.x_test[:4])
    np.testing.assert_allclose(model.decode(codes + 1e-3), model.decode(codes), atol=1e-5)


def test_a_conv_vqvae_decoder_of_other_layers_decodes_the_code_grid_to_the_image():
    """Its own decoder layers (not the mirror), as long as their strides multiply to the encoder's."""
    spec = {
        "name": "x",
        "model": {
            "family": "vqvae",
            "encoder": [{"filters": 4, "kernel_size": 3, "strides": 2}, {"filters": 4, "kernel_size": 3, "strides": 3}],
            "decoder": [{"filters": 3, "kernel_size": 3, "strides": 6}],
            "latent_dim": 3,
        },
    }
    model = builder.build(recipe.validate(spec), (13, 11, 1))
    assert model.positions == 3 * 2  # ceil(13 / 6) x ceil(11 / 6)
    x = np.random.default_rng(0).random((2, 13, 11, 1)).astype("float32")
    assert model.reconstruct(x).shape == x.shape and model.encode(x).shape == (2, model.code_size)


def test_vqvae_dead_codes_restart_at_the_batchs_worst_served_vectors():
    from kerasae.layers import VectorQuantizer

    quantizer = VectorQuantizer(codebook_size=4, code_dim=2, ema=True, restart_share=0.5)
    quantizer.usage.assign(np.array([1e-6, 100.0, 100.0, 100.0], "float32"))  # code 0 is dead
    z = np.array([[0.0, 0.0], [9.0, 9.0], [0.1, 0.0], [0.0, 0.1]], "float32")
    quantizer(z, training=True)
    codebook = ops.convert_to_numpy(quantizer.embeddings)
    np.testing.assert_allclose(codebook[0], [9.0, 9.0], atol=1e-5)  # the vector farthest from its code
    assert ops.convert_to_numpy(quantizer.usage)[0] > 1e-6


def test_vqvae_prior_is_fitted_to_the_training_codes_and_saved_with_the_model(mnist_like, tmp_path):
    model, _, d = fit_small(mnist_like, "vqvae", epochs=2, loss={"codebook_size": 16, "code_positions": 4})
    assert model.code_size == 4 * 8  # a dense encoder: code_positions vectors of latent_dim
    model.fit_prior(d.x_train)
    counts = np.stack([np.bincount(c, minlength=16) for c in model.encode_indices(d.x_train).T])
    drawn = model.nearest_codes(model.prior_sample(3000, seed=0))
    frequencies = np.stack([np.bincount(c, minlength=16) for c in drawn.T]) / 3000
    np.testing.assert_allclose(frequencies, counts / counts.sum(1, keepdims=True), atol=0.04)
    path = str(tmp_path / "vq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded.code_log_prior), ops.convert_to_numpy(model.code_log_prior), atol=0
    )
    np.testing.assert_allclose(loaded.generate(3, seed=1), model.generate(3, seed=1), atol=1e-5)
