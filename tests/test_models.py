"""Every family trains (loss falls), saves and reloads: same process, fresh process, other backends."""

import json
import types

import keras
import numpy as np
import pytest
from conftest import run_python, small_recipe

from kerasae import backend, data
from kerasae.families import FAMILIES
from kerasae.models import VAE
from kerasae.run import train
from kerasae.run.callbacks import KLWarmup
from kerasae.spec import builder, recipe

OTHER_BACKENDS = [b for b in ("tensorflow", "jax", "torch") if b != backend.NAME]


def fit_small(mnist_like, family="ae", epochs=3, **sections):
    r = recipe.validate(small_recipe(family, mnist_like, epochs=epochs, **sections))
    keras.utils.set_random_seed(r.train.seed)
    d = data.load(r.data, seed=r.train.seed)
    model = builder.build(r, d.image_shape)
    model.compile(optimizer=builder.optimizer(r.train))
    train, val = model.inputs_for(d.x_train, d.y_train), model.inputs_for(d.x_val, d.y_val)
    history = model.fit(
        *train, batch_size=r.train.batch_size, epochs=r.train.epochs, validation_data=val, verbose=0
    ).history
    return model, history, d


def _extra(family):
    """Recipe sections a family needs on the small data."""
    if family == "sparse_ae":
        return {"model": {"latent_activation": "sigmoid"}}
    return {}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loss_falls_and_metrics_are_reported(fitted, family):
    history = fitted.histories[family]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    expected = {"loss", "reconstruction_loss"} | {
        "vae": {"kl_loss"},
        "iwae": {"kl_loss"},
        "hvae": {"kl_loss"},
        "cvae": {"kl_loss"},
        "sparse_ae": {"sparsity_loss", "weight_loss"},
        "contractive_ae": {"contractive_loss"},
        "wae": {"mmd_loss"},
        "rae": {"code_penalty", "decoder_penalty"},
        "betatcvae": {"kl_loss", "mutual_information", "total_correlation", "dimension_kl"},
        "vqvae": {"codebook_loss", "commitment_loss", "perplexity"},
    }.get(family, set())
    assert set(history) == expected | {f"val_{k}" for k in expected}
    for term in expected - {"loss", "reconstruction_loss"}:
        # Unbiased estimates may dip just below 0 on a batch: the MMD when codes match the prior, the
        # β-TCVAE's terms (differences of estimated log-densities).
        floor = -0.05 if term == "mmd_loss" else -1.0 if family == "betatcvae" else 0.0
        assert min(history[term] + history[f"val_{term}"]) >= floor, term


def test_parameter_counts_of_the_seed_models():
    ae = FAMILIES["ae"].model_class(
        image_shape=(28, 28, 1), encoder_layers=[], latent_dim=64, latent_activation="sigmoid"
    )
    assert ae.count_params() == (784 * 64 + 64) + (64 * 784 + 784)
    vae = VAE(image_shape=(28, 28, 1), encoder_layers=[400], latent_dim=20)
    encoder = 784 * 400 + 400 + 2 * (400 * 20 + 20)
    decoder = 20 * 400 + 400 + 400 * 784 + 784
    assert vae.encoder.count_params() == encoder and vae.decoder.count_params() == decoder


def test_conv_autoencoder_on_odd_image_sizes():
    conv = [{"filters": 8, "kernel_size": 3, "strides": 2}, {"filters": 16, "kernel_size": 3, "strides": 2}]
    model = VAE(image_shape=(13, 10, 3), encoder_layers=conv, latent_dim=4)
    x = np.random.default_rng(0).random((5, 13, 10, 3)).astype("float32")
    assert model.reconstruct(x).shape == (5, 13, 10, 3)
    assert model.encode(x).shape == (5, 4)


def test_a_conv_model_trains_on_batches_of_one_grey_image():
    # A batch of one image (batch_size 1, or the last batch of an epoch) through a conv layer with one
    # output channel (the decoder's last on grey images): PyTorch's CPU convolution refused the gradient
    # of the kernel view Keras hands it; kerasae.backend.torch copies that kernel.
    # The same for a transposed conv from one input channel (an encoder whose last conv has one filter):
    # "grad_weight needs to be contiguous", found by the 30-examples sweep.
    for conv in (
        [{"filters": 5, "kernel_size": 3, "strides": 3}, {"filters": 6, "kernel_size": 4, "strides": 2}],
        [{"filters": 5, "kernel_size": 3, "strides": 2}, {"filters": 1, "kernel_size": 3, "strides": 2}],
    ):
        model = FAMILIES["ae"].model_class(image_shape=(4, 8, 1), encoder_layers=conv, latent_dim=4)
        model.compile(optimizer="sgd")
        x = np.random.default_rng(0).random((3, 4, 8, 1)).astype("float32")
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
        history = model.fit(x, batch_size=2, epochs=2, shuffle=False, verbose=0).history  # batches of 2, then 1
        assert np.all(np.isfinite(history["loss"]))
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert all(not np.array_equal(a, b) for a, b in zip(before, after)), conv  # every weight got its gradient


def test_bce_loss_is_summed_per_image():
    model = FAMILIES["ae"].model_class(image_shape=(28, 28, 1), latent_dim=4)
    x = np.full((3, 28, 28, 1), 0.5, np.float32)
    logits = np.zeros((3, 28, 28, 1), np.float32)  # p = 0.5 everywhere
    loss = keras.ops.convert_to_numpy(model.reconstruction_loss(x, logits))
    np.testing.assert_allclose(loss, 784 * np.log(2.0), rtol=1e-5)


def test_vae_generate_and_interpolate(mnist_like):
    model, _, d = fit_small(mnist_like, "vae", epochs=1)
    a = model.generate(6, seed=3)
    assert a.shape == (6, 28, 28, 1) and 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, model.generate(6, seed=3))
    assert not np.array_equal(a, model.generate(6, seed=4))
    walk = model.interpolate(d.x_test[0], d.x_test[1], steps=7)
    assert walk.shape == (7, 28, 28, 1)
    np.testing.assert_allclose(walk[0], model.reconstruct(d.x_test[:1])[0], atol=1e-5)


def test_kl_warmup_ramps_the_kl_weight(mnist_like):
    r = recipe.validate(small_recipe("vae", mnist_like, loss={"beta": 2.0, "kl_warmup_epochs": 4}))
    d = data.load(r.data)
    model = builder.build(r, d.image_shape)
    model.compile(optimizer="adam")
    seen = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(
            float(model.kl_weight.numpy() if hasattr(model.kl_weight, "numpy") else model.kl_weight)
        )
    )
    model.fit(d.x_train[:64], epochs=3, batch_size=32, callbacks=[KLWarmup(2.0, 4), spy], verbose=0)
    np.testing.assert_allclose(seen, [0.0, 0.5, 1.0])


def test_cosine_schedule_decays_from_the_rate_to_the_final_rate(mnist_like):
    r = recipe.validate(
        small_recipe(
            "ae",
            mnist_like,
            epochs=4,
            train={"learning_rate": 0.01, "learning_rate_schedule": "cosine", "final_learning_rate": 0.001},
        )
    )
    d = data.load(r.data)
    model = builder.build(r, d.image_shape)
    steps = 2  # 64 images, batch 32
    model.compile(optimizer=builder.optimizer(r.train, total_steps=r.train.epochs * steps))
    rates = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    )
    model.fit(d.x_train[:64], epochs=r.train.epochs, batch_size=32, callbacks=[spy], verbose=0)
    # After 2, 4, 6, 8 of 8 steps: final + (start - final) * (1 + cos(pi * t)) / 2.
    t = np.array([2, 4, 6, 8]) / 8
    np.testing.assert_allclose(rates, 0.001 + 0.009 * (1 + np.cos(np.pi * t)) / 2, rtol=1e-5)


# XLA where it is cheap to compile here (TensorFlow, JAX); torch.compile takes ~30 s even for these models.
# Omitted (None): XLA on TensorFlow too, where Keras's own default leaves it off on a CPU; so there
# None trains as `true` does, and `true` is checked without a second run.
@pytest.mark.parametrize("jit", [None, False])
def test_train_jit_compile_sets_the_compiled_step(tmp_path, mnist_like, jit):
    assert backend.jit_compile(True) and not backend.jit_compile(False)  # a recipe's choice, as it is
    r = recipe.validate(small_recipe("vae", mnist_like, epochs=2, train={"jit_compile": jit}))
    seen, losses = [], []
    spy = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append(spy.model.jit_compile),
        on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]),
    )
    _, metrics = train.run(r, str(tmp_path / "zoo"), verbose=0, callbacks=[spy])
    assert seen == [backend.NAME != "torch" if jit is None else jit] and len(losses) == 2
    assert losses[1] < losses[0] and np.isfinite(metrics["test"]["loss"])


def test_same_seed_same_result(fitted, mnist_like):
    first, h1 = fitted.models["vae"], fitted.histories["vae"]
    second, h2, _ = fit_small(mnist_like, "vae", epochs=FITTED_EPOCHS)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The logged epoch mean may differ in the last float32 bit (XLA may compile the
    # metric update differently); the weights above are what must match exactly.
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-6)


def test_several_steps_per_call_and_the_runs_feed_train_as_single_steps(mnist_like):
    """Batches of 32 in calls of 4 steps give the weights and logs of one step per call: 300 images
    are two whole groups of 4 batches (compiled, as kerasae compiles: each one XLA loop; on PyTorch
    one Python loop), then a short group of one whole batch and a short last one (single steps).
    So does the feed `kerasae train` gives `fit` (`backend.array_feed`: the rows of a permutation;
    on TensorFlow the step gathers its batch from their positions), a conditional model's labels
    included."""
    images = 300
    assert backend.steps_per_execution(4) == 4  # on every backend
    r = recipe.validate(small_recipe("cvae", mnist_like, epochs=2))
    d = data.load(r.data, seed=r.train.seed)
    rows = np.random.default_rng(0).permutation(images)
    results = []
    for steps, fed in ((1, False), (4, False), (4, True)):
        keras.utils.set_random_seed(r.train.seed)
        model = builder.build(r, d.image_shape, num_classes=10)
        model.compile(
            optimizer=builder.optimizer(r.train),
            steps_per_execution=backend.steps_per_execution(steps),
            jit_compile=backend.jit_compile(),
        )
        x, y = model.inputs_for(d.x_train[:images], d.y_train[:images])
        if fed:
            batches, count = backend.array_feed(model, x, y, 32)(rows)
            history = model.fit(batches, steps_per_epoch=count, epochs=2, shuffle=False, verbose=0).history
        else:
            history = model.fit(x[rows], y[rows], batch_size=32, epochs=2, shuffle=False, verbose=0).history
        results.append((model.get_weights(), history))
    (single, h1), *others = results
    for weights, history in others:
        for a, b in zip(single, weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h1["loss"], history["loss"], rtol=1e-5)
        assert history["loss"][1] < history["loss"][0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_and_reload_reproduces_outputs(fitted, family):
    model = fitted.models[family]
    restored = keras.saving.load_model(str(fitted.folder / f"{family}.keras"))
    assert type(restored) is type(model) and restored.get_config() == model.get_config()
    x, y = fitted.x, fitted.y
    np.testing.assert_array_equal(restored.reconstruct(x, y), fitted.outputs[family])
    np.testing.assert_array_equal(restored.encode(x, y), fitted.codes[family])
    # Training-mode randomness (sampling, corruption) is seeded: the same losses after reload.
    after = restored.compute_losses(*_batch(fitted), training=True)
    for name, value in fitted.training_losses[family].items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(after[name]), value, rtol=1e-5)


LOAD_AND_PREDICT = """
    import json, sys, numpy as np, keras, kerasae
    folder = sys.argv[1]
    x, y = np.load(folder + "/x.npy"), np.load(folder + "/y.npy")
    names = {}
    for family in json.load(open(folder + "/families.json")):
        model = keras.saving.load_model(f"{folder}/{family}.keras")
        np.save(f"{folder}/{family}-out.npy", model.reconstruct(x, y))
        np.save(f"{folder}/{family}-codes.npy", model.encode(x, y))
        names[family] = type(model).__name__
    print(json.dumps({"backend": keras.backend.backend(), "classes": names}))
"""

FITTED_EPOCHS = 2


def _batch(fitted):
    return keras.ops.convert_to_tensor(fitted.x[:32]), keras.ops.convert_to_tensor(fitted.y[:32])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, mnist_like):
    """Every family fitted once, for two epochs, and saved as <family>.keras beside 64 test images,
    and a conv VAE (kerasae's conv layers) as conv-vae.keras: the loss, reload and other-backend tests
    share these fits."""
    folder = tmp_path_factory.mktemp("families")
    fits = types.SimpleNamespace(folder=folder, models={}, histories={}, outputs={}, codes={}, training_losses={})
    runs = {family: (family, _extra(family)) for family in FAMILIES}
    runs["conv-vae"] = ("vae", {"model": {"encoder": [{"filters": 8, "kernel_size": 3, "strides": 2}] * 2}})
    for family, (family_name, sections) in sorted(runs.items()):
        model, history, d = fit_small(mnist_like, family_name, epochs=FITTED_EPOCHS, **sections)
        model.save(str(folder / f"{family}.keras"))
        fits.models[family], fits.histories[family] = model, history
        fits.x, fits.y = d.x_test[:64], d.y_test[:64]
        fits.outputs[family], fits.codes[family] = model.reconstruct(fits.x, fits.y), model.encode(fits.x, fits.y)
        # The losses of a training-mode call on the model as saved: a reload must draw the same noise.
        # (The call moves the model's state on: a VQ-VAE's codebook, the seed; the outputs come first.)
        losses = model.compute_losses(*_batch(fits), training=True)
        fits.training_losses[family] = {k: keras.ops.convert_to_numpy(v) for k, v in losses.items()}
    np.save(folder / "x.npy", fits.x)
    np.save(folder / "y.npy", fits.y)
    (folder / "families.json").write_text(json.dumps(sorted(runs)))
    return fits


def _load_elsewhere(fitted, target_backend):
    folder, models, x, y = fitted.folder, fitted.models, fitted.x, fitted.y
    printed = json.loads(run_python(LOAD_AND_PREDICT, backend=target_backend, args=[str(folder)]).splitlines()[-1])
    assert printed["backend"] == target_backend
    assert printed["classes"] == {family: type(model).__name__ for family, model in models.items()}
    return folder, models, x, y


def test_fresh_process_loads_with_import_kerasae_only(fitted):
    folder, models, x, y = _load_elsewhere(fitted, backend.NAME)
    for family in models:
        np.testing.assert_array_equal(np.load(folder / f"{family}-out.npy"), fitted.outputs[family], err_msg=family)


@pytest.mark.parametrize("other", OTHER_BACKENDS)
def test_every_family_saved_here_loads_on_the_other_backends(fitted, other):
    folder, models, x, y = _load_elsewhere(fitted, other)
    for family in models:
        for name, stored in (("out", fitted.outputs), ("codes", fitted.codes)):
            got = np.load(folder / f"{family}-{name}.npy")
            np.testing.assert_allclose(got, stored[family], atol=1e-5, err_msg=family)


# On PyTorch kerasae swaps Keras's Adam update for torch's fused kernel (backend/torch.py); elsewhere the
# update is Keras's own. Either way it must be Keras's Adam: same weights, moments and saved config.
@pytest.mark.parametrize(
    "name,config",
    [
        ("adam", {"learning_rate": 0.01}),
        ("adamw", {"learning_rate": 0.01, "weight_decay": 0.05}),
        ("adam", {"learning_rate": 0.01, "amsgrad": True}),
    ],
)
def test_adam_updates_as_keras_adam(mnist_like, name, config):
    r = recipe.validate(small_recipe("vae", mnist_like))
    model = builder.build(r, (28, 28, 1))
    model.compile(optimizer=keras.optimizers.get({"class_name": name, "config": config}))
    model.fit(np.zeros((4, 28, 28, 1), "float32"), batch_size=4, verbose=0)  # one step: kerasae's update in place
    weights = model.trainable_weights
    initial = [keras.ops.convert_to_numpy(w) for w in weights]
    reference = [keras.Variable(value) for value in initial]
    plain = keras.optimizers.get({"class_name": name, "config": config})
    plain.build(reference)
    for copy, slot in zip(plain.variables, model.optimizer.variables):  # the state after that first step
        copy.assign(slot)
    rng = np.random.default_rng(0)
    for _ in range(30):
        grads = [rng.normal(size=w.shape, scale=rng.uniform(1e-4, 1.0)).astype("float32") for w in weights]
        model.optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], weights)
        plain.apply([keras.ops.convert_to_tensor(g) for g in grads], reference)
    numpy = keras.ops.convert_to_numpy
    assert min(np.abs(numpy(w) - start).max() for w, start in zip(weights, initial)) > 0.05  # 30 steps of ~lr
    for got, want in zip([*weights, *model.optimizer.variables], [*reference, *plain.variables]):
        np.testing.assert_allclose(numpy(got), numpy(want), rtol=1e-5, atol=1e-5)  # 1e-3 of a step: rounding
    saved, expected = (keras.saving.serialize_keras_object(o) for o in (model.optimizer, plain))
    assert saved["class_name"] == expected["class_name"]
    assert {**saved["config"], "name": None} == {**expected["config"], "name": None}


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_weights_codes_and_losses(tmp_path, mnist_like, policy):
    """`train.mixed_precision`: hidden layers compute in the half type, weights stay float32, the code
    heads, output and losses are float32; mixed_float16 scales the loss. The loss falls, the entry
    reloads with the policy and reproduces its outputs."""
    r = recipe.validate(small_recipe("vae", mnist_like, epochs=3, train={"mixed_precision": policy}))
    losses = []
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
    entry, metrics = train.run(r, str(tmp_path / "zoo"), verbose=0, callbacks=[spy])
    assert losses[-1] < losses[0] and np.isfinite(metrics["test"]["loss"]) and np.isfinite(metrics["evaluation"]["nll"])
    model = keras.saving.load_model(f"{entry}/model.keras")
    half = policy.removeprefix("mixed_")
    hidden = model.encoder.get_layer("dense_0")
    assert hidden.compute_dtype == half and hidden.kernel.dtype == "float32"
    assert model.encoder.get_layer("z_mean").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    x = data.load(r.data, seed=r.train.seed).x_test[:16]
    codes, images = model.encode(x), model.reconstruct(x)
    assert codes.dtype == np.float32 and images.dtype == np.float32 and np.isfinite(images).all()
    with np.load(f"{entry}/check.npz") as check:  # the outputs it was shipped with, in the half type too
        np.testing.assert_allclose(model.reconstruct(check["x"]), check["reconstructions"], atol=1e-4)
    terms = model.compute_losses(keras.ops.convert_to_tensor(x), training=False)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in terms.values())
    fresh = builder.build(r, model.image_shape)
    fresh.compile(optimizer=builder.optimizer(r.train))
    assert type(fresh.optimizer).__name__ == ("LossScaleOptimizer" if policy == "mixed_float16" else "Adam")
