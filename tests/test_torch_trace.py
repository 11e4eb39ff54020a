"""The PyTorch backend's traced training losses (`kerasae/backend/torch_trace.py`): the same
draws and the same weights as Keras's eager pass, and the eager pass wherever a trace would not
be faithful."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kerasae.models import VAE, Autoencoder
from kerasae.run.callbacks import KLWarmup

pytestmark = pytest.mark.backends("torch")

IMAGES = np.random.default_rng(0).random((80, 8, 8, 1)).astype("float32")


@pytest.fixture
def tracing(monkeypatch):
    """Sets whether models trace their training losses (a fresh model reads it when it first trains)."""
    from kerasae.backend import torch_trace

    def switch(on):
        monkeypatch.setattr(torch_trace, "ENABLED", on)

    return switch


def trained(make, epochs=3, callbacks=()):
    """(weights by path, history, the model's traced losses) of a model trained from seed 0 on IMAGES in
    batches of 32 (and a short last one of 16)."""
    keras.backend.clear_session()  # the same layer names, so the same weights' paths
    keras.utils.set_random_seed(0)
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=2)
    history = model.fit(IMAGES, batch_size=32, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    return weights, history.history, model.__dict__.get("_traced_losses")


def assert_same_training(a, b):
    assert a[0].keys() == b[0].keys()
    for path in a[0]:
        np.testing.assert_array_equal(a[0][path], b[0][path], err_msg=path)
    assert a[1] == b[1]


def test_a_traced_vae_draws_and_trains_exactly_as_the_eager_pass(tracing):
    """Binarization and the reparametrization draw per step, the KL weight raised by a callback
    (a variable the graph reads by reference), Adam's updates seen by the next replay."""

    def make():
        return VAE(
            image_shape=(8, 8, 1),
            encoder_layers=[16],
            latent_dim=2,
            seed=0,
            dynamic_binarization=True,
            kl_warmup_epochs=2,
        )

    tracing(False)
    eager = trained(make, callbacks=[KLWarmup(1.0, 2)])
    tracing(True)
    traced = trained(make, callbacks=[KLWarmup(1.0, 2)])
    assert eager[2].eager and not traced[2].eager, traced[2].reason
    assert len(traced[2].graphs) == 2  # batches of 32, and the epoch's last batch of 16
    assert_same_training(eager, traced)
    assert traced[1]["reconstruction_loss"][-1] < traced[1]["reconstruction_loss"][0]
    # Both per-step draws (binarization, the code) were drawn directly, not by Keras, with Keras's bits.
    assert all(replays(draws) == ["_uniform01", "_normal"] for _, draws in traced[2].graphs.values())


def denoising():
    return Autoencoder(
        image_shape=(8, 8, 1), encoder_layers=[16], latent_dim=3, seed=0, corruption={"kind": "masking", "p": 0.2}
    )


def eager_and_traced(tracing, make):
    """`trained(make)` with the tracing off, then on."""
    tracing(False)
    eager = trained(make)
    tracing(True)
    return eager, trained(make)


def test_a_traced_denoising_autoencoder_trains_exactly_as_the_eager_pass(tracing):
    eager, traced = eager_and_traced(tracing, denoising)
    assert not traced[2].eager, traced[2].reason
    assert_same_training(eager, traced)
    assert all(replays(draws) == ["_uniform01"] for _, draws in traced[2].graphs.values())


def replays(draws):
    """The names of the functions a traced graph's draws are replayed with."""
    return [draw.func.__name__ for draw in draws]


@pytest.fixture
def keras_draws_otherwise(monkeypatch):
    """Keras's PyTorch `uniform` drawing other bits than the direct draw, as a Keras version might."""
    import keras.src.backend.torch.random as keras_random

    from kerasae.backend import torch_trace

    original = keras_random.uniform

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return original(shape, minval, maxval, dtype, seed) * 0.5

    monkeypatch.setattr(keras_random, "uniform", uniform)
    torch_trace._direct_draws_match.cache_clear()
    yield
    torch_trace._direct_draws_match.cache_clear()


def test_where_keras_draws_other_bits_keras_draws_every_replay(tracing, keras_draws_otherwise):
    from kerasae.backend import torch_trace

    eager, traced = eager_and_traced(tracing, denoising)
    assert not torch_trace._direct_draws_match()
    assert all(replays(draws) == ["uniform"] for _, draws in traced[2].graphs.values())
    assert_same_training(eager, traced)


class ReadsALoss(Autoencoder):
    """Python that reads a tensor's value in the pass: a trace would freeze the branch taken."""

    def compute_losses(self, x, y=None, training=False):
        losses = super().compute_losses(x, y, training)
        if float(ops.convert_to_numpy(losses["loss"])) > 5.0:
            losses["loss"] = losses["loss"] * 2.0
        return losses


class CountsSteps(Autoencoder):
    """A variable assigned in the pass."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps_seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="steps_seen")

    def compute_losses(self, x, y=None, training=False):
        if training:
            self.steps_seen.assign(self.steps_seen + 1.0)
        return super().compute_losses(x, y, training)


@pytest.mark.parametrize(
    "cls, reason", [(ReadsALoss, "numpy()"), (CountsSteps, "assigns a variable")], ids=["reads", "assigns"]
)
def test_a_pass_a_trace_would_change_trains_eagerly_as_before(tracing, cls, reason):
    def make():
        return cls(image_shape=(8, 8, 1), encoder_layers=[16], latent_dim=3, seed=0)

    tracing(False)
    eager = trained(make)
    tracing(True)
    traced = trained(make)
    assert traced[2].eager and reason in traced[2].reason
    assert_same_training(eager, traced)
    if cls is CountsSteps:
        (seen,) = [value for path, value in traced[0].items() if path.endswith("steps_seen")]
        assert seen == 9.0  # three epochs of three steps, every one counted


def test_without_make_fx_torch_trains_eagerly_and_says_so(tracing, monkeypatch):
    import dataclasses

    from kerasae.backend import private

    name = "torch.fx.experimental.proxy_tensor.make_fx, keras.src.backend.torch.random"
    monkeypatch.setitem(private.BY_NAME, name, dataclasses.replace(private.BY_NAME[name], exists=lambda: False))
    private.available.cache_clear()
    try:
        tracing(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            weights, history, traced = trained(
                lambda: Autoencoder(image_shape=(8, 8, 1), encoder_layers=[16], latent_dim=3, seed=0), epochs=2
            )
        assert traced.eager and not traced.graphs
        assert any("make_fx" in str(w.message) and "eager pass" in str(w.message) for w in caught)
        assert history["loss"][-1] < history["loss"][0]
    finally:
        private.available.cache_clear()
