"""Calls outside training (encode, decode, reconstruct, scores, likelihoods) give each item the
outputs the network gives it on its own, whatever the number of items; on JAX, where every new
input shape is a new XLA program, a few items are padded to a batch shape already compiled."""

import keras
import numpy as np
import pytest
from conftest import small_recipe

from kerasae import backend, likelihood
from kerasae.models.autoencoder import run
from kerasae.spec import builder, recipe


def _model(mnist_like, family="vae", **sections):
    r = recipe.validate(small_recipe(family, mnist_like, **sections))
    keras.utils.set_random_seed(0)
    return builder.build(r, (28, 28, 1))


def _compiled(fn):
    """(fn's result, how many XLA programs JAX compiled while it ran)."""
    import jax

    count = [0]

    def listener(event, duration, **kwargs):
        count[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        return fn(), count[0]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("n", [1, 5, 17, 70])
def test_any_number_of_items_gets_each_items_own_outputs(mnist_like, n):
    model = _model(mnist_like, model={"encoder": [{"filters": 4, "kernel_size": 3, "strides": 2}]})
    x = np.random.default_rng(n).random((n, 28, 28, 1), dtype="float32")
    # 70 items in batches of 32 go through `predict`: two whole batches and a part.
    got = run(model, x, batch_size=32)
    assert got.shape == (n, 28, 28, 1)
    alone = np.concatenate([keras.ops.convert_to_numpy(model(x[i : i + 1], training=False)) for i in range(n)])
    np.testing.assert_allclose(got, alone, atol=1e-5)
    codes = model.encode(x, batch_size=32)
    assert codes.shape == (n, model.latent_dim)
    np.testing.assert_allclose(model.decode(codes, batch_size=32), run(model.decoder, codes, 32), atol=0)


def test_importance_sampled_bounds_are_per_item_on_any_number_of_items(mnist_like):
    model = _model(mnist_like)
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype="float32").round()
    elbo, log_px = likelihood.bounds(model, x, len(x), k=8, chunk=4)
    assert elbo.shape == log_px.shape == (5,) and np.all(np.isfinite(log_px))
    # The importance-sampled log-likelihood is at least the ELBO (Jensen), item by item.
    assert np.all(log_px >= elbo - 1e-6)


@pytest.mark.backends("jax")
def test_on_jax_a_few_items_are_padded_to_a_power_of_two_and_whole_batches_are_not():
    rows = [backend.padded_rows(n, 1024) for n in (1, 7, 16, 17, 33, 64, 65, 1000, 1024, 1025, 5000)]
    assert rows == [16, 16, 16, 32, 64, 64, 128, 1024, 1024, 1040, 5120]
    assert backend.padded_rows(40, 32) == 48  # a whole batch of 32, and 8 items padded to 16
    assert backend.padded_rows(90, 48) == 96  # 42 items past a whole batch: padded to 64, at most 48


@pytest.mark.backends("jax")
def test_on_jax_calls_on_a_new_number_of_items_reuse_the_compiled_programs(mnist_like):
    # Layer sizes no other test here uses: JAX keeps what it compiled for the whole process.
    model = _model(mnist_like, model={"encoder": [{"filters": 3, "kernel_size": 5, "strides": 2}], "latent_dim": 3})
    x = np.random.default_rng(0).random((40, 28, 28, 1), dtype="float32")
    _, first = _compiled(lambda: (model.reconstruct(x[:3]), model.encode(x[:3])))
    assert first > 0
    for n in (1, 9, 16):  # the same padded batch of 16: nothing new to compile
        _, again = _compiled(lambda n=n: (model.reconstruct(x[:n]), model.encode(x[:n])))
        assert again == 0, n
    _, bigger = _compiled(lambda: model.reconstruct(x[:17]))
    assert bigger > 0  # 17 items: a batch of 32, compiled once
