"""Hierarchical VAEs: the NLL estimate against a closed-form likelihood, the VampPrior's density,
the flow's log-determinant, ladder inference, and the recipe's keys."""

import json
import os

import keras
import numpy as np
import pytest
import yaml
from conftest import ROOT, SMALL_HIERARCHY, small_recipe
from keras import ops
from scipy.special import logsumexp
from test_models import fit_small

import kerasae
from kerasae.assess import cards, evaluate
from kerasae.errors import RecipeError
from kerasae.layers import AutoregressiveFlowStep, made_masks
from kerasae.models.hvae import log_mixture
from kerasae.spec import recipe
from kerasae.store import zoo

# A linear-Gaussian chain, independent per coordinate: z_2 ~ N(0, 1), z_1 | z_2 ~ N(a z_2, s^2),
# x | z_1 ~ N(w z_1 + b, 1). Then x ~ N(b, w^2 (a^2 + s^2) + 1): p(x) in closed form.
A = np.array([1.5, 0.7, 1.0, 0.3])
S = np.array([0.5, 1.0, 0.8, 1.2])
W = np.array([2.0, 1.2, 0.6, 1.5])
B = np.array([0.3, -0.2, 0.5, 0.1])


def _set(net, name, kernel_diagonal, bias):
    net.get_layer(name).set_weights([np.diag(kernel_diagonal).astype("float32"), np.asarray(bias, "float32")])


def _linear_gaussian_hvae(inference="bottom_up", posterior_flow=0, exact=True):
    """The chain above as a two-layer HVAE, its encoder holding the exact posterior q(z_1 | x) q(z_2 | z_1)
    (or, with exact=False, a wrong one); and 400 images drawn from p(x) with their exact NLL."""
    model = kerasae.HVAE(
        image_shape=(2, 2, 1),
        stochastic_layers=[{"hidden": [], "latent_dim": 4}, {"hidden": [], "latent_dim": 4}],
        inference=inference,
        posterior_flow=posterior_flow,
        likelihood="gaussian",
        output_activation="linear",
        seed=0,
    )
    zeros = np.zeros(4)
    _set(model.decoder, "logits", W, B)
    _set(model.downward[0], "p_mean", A, zeros)
    _set(model.downward[0], "p_log_var", zeros, np.log(S**2))
    # p(z_1 | x): prior N(0, a^2 + s^2), one Gaussian observation of slope w.
    v1 = 1.0 / (1.0 / (A**2 + S**2) + W**2)
    # p(z_2 | z_1): prior N(0, 1), observation z_1 = a z_2 + s eps.
    v2 = 1.0 / (1.0 + A**2 / S**2)
    if inference == "ladder":
        # q(z_2 | x) is the top's own Gaussian, from the bottom mean mu_1 = (x - b) / w: the exact
        # p(z_2 | x), where x | z_2 ~ N(w a z_2 + b, w^2 s^2 + 1).
        precision = 1.0 + W**2 * A**2 / (W**2 * S**2 + 1.0)
        top_var, c = 1.0 / precision, W**2 * A / ((W**2 * S**2 + 1.0) * precision)
        _set(model.upward[0], "z_mean", c, zeros)
        _set(model.upward[0], "z_log_var", zeros, np.log(top_var))
        # The bottom Gaussian N(m, u), combined with p(z_1 | z_2) = N(a z_2, s^2) by precisions, must
        # give p(z_1 | z_2, x) = N(., 1 / (w^2 + 1 / s^2)): u = 1 / w^2, m = (x - b) / w.
        _set(model.encoder, "z_mean", 1.0 / W, -B / W)
        _set(model.encoder, "z_log_var", zeros, np.log(1.0 / W**2))
    else:
        _set(model.encoder, "z_mean", v1 * W, -v1 * W * B)
        _set(model.encoder, "z_log_var", zeros, np.log(v1))
        _set(model.upward[0], "z_mean", v2 * A / S**2, zeros)
        _set(model.upward[0], "z_log_var", zeros, np.log(v2))
    if not exact:
        layer = model.encoder.get_layer("z_log_var")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, bias + 0.7])
    rng = np.random.default_rng(0)
    variance = W**2 * (A**2 + S**2) + 1.0
    x = B + np.sqrt(variance) * rng.standard_normal((400, 4))
    exact_nll = float(np.mean(np.sum(0.5 * (x - B) ** 2 / variance + 0.5 * np.log(2 * np.pi * variance), axis=1)))
    return model, x.reshape(-1, 2, 2, 1).astype("float32"), exact_nll


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
def test_the_nll_estimate_of_a_linear_gaussian_hierarchy_is_its_closed_form(inference):
    """With the exact posterior every importance weight is p(x): the estimate is exact for any k."""
    model, x, exact = _linear_gaussian_hvae(inference)
    np.testing.assert_allclose(evaluate.importance_sampled_nll(model, x, k=3), exact, rtol=1e-4)
    # With a wrong posterior the estimate is above the truth and converges to it as k grows.
    model, x, exact = _linear_gaussian_hvae(inference, exact=False)
    few = evaluate.importance_sampled_nll(model, x, k=1)
    many = evaluate.importance_sampled_nll(model, x, k=2000, chunk=500)
    assert few > many > exact - 0.02, (few, many, exact)
    assert many - exact < 0.1 * (few - exact), (few, many, exact)


def test_the_nll_estimate_counts_the_flows_log_determinant():
    """Flow steps move the posterior off the exact one; the estimate still converges to p(x) only if
    log q counts their log-determinants: about 4 units x log sigmoid(2) = -0.5 nats a step and a
    layer at the start, -2 nats in all here, which leaving them out would add to the estimate."""
    model, x, exact = _linear_gaussian_hvae(posterior_flow=2)
    estimate = evaluate.importance_sampled_nll(model, x, k=2000, chunk=500)
    assert abs(estimate - exact) < 0.25, (estimate, exact)
    z, context = ops.zeros((1, 4)), ops.zeros((1, 4))
    log_dets = [float(ops.convert_to_numpy(step([z, context])[1])[0]) for steps in model.flows for step in steps]
    assert sum(log_dets) < -1.5, log_dets


def test_a_flow_step_is_autoregressive_and_its_log_determinant_is_exact():
    keras.utils.set_random_seed(0)
    step = AutoregressiveFlowStep(5, 12, reverse=True)
    z = np.random.default_rng(0).standard_normal((1, 5)).astype("float32")
    h = np.random.default_rng(1).standard_normal((1, 3)).astype("float32")
    step([z, h])
    for weight in step.weights:  # away from the identity-like start
        weight.assign(np.random.default_rng(2).normal(0.0, 0.5, weight.shape).astype("float32"))
    _, log_det = step([z, h])
    eps = 1e-3
    jacobian = np.stack(
        [
            (ops.convert_to_numpy(step([z + eps * e, h])[0]) - ops.convert_to_numpy(step([z - eps * e, h])[0]))[0]
            / (2 * eps)
            for e in np.eye(5, dtype="float32")
        ],
        axis=1,
    )  # jacobian[i, j] = dz'_i / dz_j
    order = np.arange(5)[::-1]  # reverse: unit 4 first
    permuted = jacobian[np.ix_(order, order)]
    np.testing.assert_allclose(np.triu(permuted, 1), 0.0, atol=1e-3)  # output i reads units before it only
    _, log_abs_det = np.linalg.slogdet(jacobian.astype("float64"))
    np.testing.assert_allclose(float(ops.convert_to_numpy(log_det)[0]), log_abs_det, atol=2e-3)


@pytest.mark.once
def test_made_masks_connect_each_output_to_the_units_before_it():
    inputs, outputs = made_masks(4, 9)
    reach = (inputs @ outputs) > 0  # reach[j, i]: unit j feeds output i through some hidden unit
    np.testing.assert_array_equal(reach, np.triu(np.ones((4, 4), bool), 1))  # exactly when j < i
    inputs, outputs = made_masks(1, 3)  # one unit: nothing before it
    assert not inputs.any()


def test_the_vamp_prior_density_is_the_mixture_of_its_components():
    rng = np.random.default_rng(0)
    z, means, log_vars = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)), rng.normal(0.0, 0.5, size=(5, 3))
    components = -0.5 * np.sum(
        (z[:, None] - means[None]) ** 2 / np.exp(log_vars)[None] + log_vars[None] + np.log(2 * np.pi), axis=-1
    )
    expected = logsumexp(components, axis=1) - np.log(5)
    got = ops.convert_to_numpy(log_mixture(*(ops.convert_to_tensor(a.astype("float32")) for a in (z, means, log_vars))))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "model_keys",
    [
        {"prior": "vamp", "pseudo_inputs": 20},
        {"inference": "ladder", "posterior_flow": 2},
    ],
    ids=["vamp", "ladder-iaf"],
)
def test_hierarchies_train_reload_and_sample(tmp_path, mnist_like, model_keys):
    model, history, d = fit_small(mnist_like, "hvae", epochs=3, model=model_keys, loss={"importance_samples": 3})
    assert history["loss"][-1] < history["loss"][0] and history["val_loss"][-1] < history["val_loss"][0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.reconstruct(d.x_test), model.reconstruct(d.x_test))
    np.testing.assert_array_equal(
        restored.decode(restored.prior_sample(5, seed=0)), model.decode(model.prior_sample(5, seed=0))
    )
    assert model.encode(d.x_test).shape == (len(d.x_test), SMALL_HIERARCHY[-1]["latent_dim"])
    # The k-sample bound tightens with k, for the hierarchy as for the one-layer IWAE.
    x = ops.convert_to_tensor(d.x_test[:64])
    bounds = [
        float(ops.mean(ops.logsumexp(model.importance_log_weights(x, k=k)[0], axis=0) - np.log(k))) for k in (1, 50)
    ]
    assert bounds[0] < bounds[1]
    if model_keys.get("prior") == "vamp":  # prior samples are draws from the pseudo-inputs' posteriors
        means, _ = (ops.convert_to_numpy(t) for t in model.pseudo_posterior())
        codes = model.prior_sample(2000, seed=1)
        assert np.linalg.norm(codes.mean(0) - means.mean(0)) < 0.5


def test_the_evaluation_counts_active_units_per_layer(mnist_like):
    model, _, d = fit_small(mnist_like, "hvae", epochs=2)
    metrics = model.code_metrics(d.x_test)
    assert metrics["layer_units"] == [layer["latent_dim"] for layer in SMALL_HIERARCHY]
    assert all(0 <= a <= n for a, n in zip(metrics["active_units_per_layer"], metrics["layer_units"]))
    means = model.encode_layers(d.x_test)
    assert metrics["active_units_per_layer"] == [int((m.var(0) > evaluate.ACTIVE_UNIT_THRESHOLD).sum()) for m in means]


@pytest.mark.once
@pytest.mark.parametrize(
    "model_keys, problem",
    [
        ({"stochastic_layers": None}, "model.stochastic_layers: family 'hvae' needs its stochastic layers"),
        ({"encoder": [32]}, "model.encoder: does not apply with stochastic_layers"),
        ({"latent_dim": 4}, "model.latent_dim: does not apply with stochastic_layers"),
        ({"stochastic_layers": [{"hidden": [8]}]}, "model.stochastic_layers.0.latent_dim"),
        ({"prior": "gaussian"}, "model.prior"),
        ({"posterior_flow": -1}, "model.posterior_flow"),
    ],
)
def test_hierarchy_keys_are_validated(mnist_like, model_keys, problem):
    spec = small_recipe("hvae", mnist_like)
    spec["model"].update(model_keys)
    if model_keys.get("stochastic_layers", 0) is None:
        spec["model"].pop("stochastic_layers")
    with pytest.raises(RecipeError) as e:
        recipe.validate(spec)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


@pytest.mark.once
def test_hierarchy_keys_belong_to_their_family(mnist_like):
    spec = small_recipe("vae", mnist_like)
    spec["model"]["prior"] = "vamp"
    with pytest.raises(RecipeError) as e:
        recipe.validate(spec)
    assert "model.prior: applies to family hvae, not 'vae'" in e.value.problems
    # Left out of another family's resolved recipe, filled with defaults in the hierarchy's.
    assert "prior" not in recipe.validate(small_recipe("vae", mnist_like)).to_dict()["model"]
    resolved = recipe.validate(small_recipe("hvae", mnist_like))
    assert resolved.model.prior == "standard" and resolved.model.latent_dim == SMALL_HIERARCHY[-1]["latent_dim"]


@pytest.mark.once
def test_an_hvae_entrys_resolved_recipe_loads_again(tmp_path):
    """The recipe.yaml an entry stores (`to_dict`) is what `kerasae eval`, `interpolate` and `serve` read back."""
    for name in ("hvae.yaml", "hvae-best.yaml"):
        resolved = recipe.load(os.path.join(ROOT, "recipes", name)).to_dict()
        stored = tmp_path / name
        stored.write_text(yaml.safe_dump(resolved, sort_keys=False))
        assert recipe.load(str(stored)).to_dict() == resolved, name


@pytest.mark.once
def test_the_card_lists_the_stochastic_layers_and_the_published_two_layer_numbers(mnist_like, tmp_path):
    spec = small_recipe("hvae", mnist_like)
    spec["model"].update({"inference": "ladder", "prior": "vamp", "pseudo_inputs": 7})
    resolved = recipe.validate(spec).to_dict()
    with open(os.path.join(ROOT, "zoo", "vae-mnist-best", zoo.METRICS_FILE), encoding="utf-8") as f:
        metrics = json.load(f)
    metrics["family"] = "hvae"
    cards.entry_card(str(tmp_path), resolved, metrics)
    card = (tmp_path / zoo.CARD_FILE).read_text()
    layers = " / ".join(f"{s['hidden']} -> z{i + 1} ({s['latent_dim']})" for i, s in enumerate(SMALL_HIERARCHY))
    assert f"| stochastic layers | {layers}, " in card
    assert "| inference, prior | ladder, vamp (7 pseudo-inputs), 0 IAF steps a layer" in card
    assert "| encoder |" not in card
    # The zoo's table of published numbers states each one's setting and binarization, the two-layer
    # IWAE's among them; the statically binarized VampPrior row is not counted among the comparable ones.
    with open(os.path.join(ROOT, "zoo", "README.md"), encoding="utf-8") as f:
        table = f.read()
    assert "| 2 stochastic layers, as above, k = 50 bound | by sampling | 82.90 |" in table
    assert "| VAE + VampPrior (Tomczak & Welling 2018) | 1 stochastic layer, 500 pseudo-inputs, warm-up |" in table
    assert "500 pseudo-inputs, warm-up | fixed (static) | 85.57 |" in table
    assert f"lists {len(cards.PUBLISHED_NLL) - 1} of them with their settings" in card
