"""The custom layers: behaviour, randomness, gradients and config round trips."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasae import backend
from kerasae.layers import Corruption, DynamicBinarization, Sampling


@pytest.mark.parametrize(
    "layer",
    [
        Sampling(seed=3),
        Corruption("salt_and_pepper", p=0.3, seed=1),
        Corruption("gaussian", sigma=0.5),
        DynamicBinarization(seed=2),
    ],
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_sampling_has_the_posterior_moments():
    mean = np.full((20000, 2), [1.0, -2.0], np.float32)
    log_var = np.full((20000, 2), np.log([0.25, 4.0]), np.float32)
    z = ops.convert_to_numpy(Sampling(seed=0)([mean, log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    # Standard deviations sigma = exp(log_var / 2), not sigma^2 as the seed writes.
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_sampling_gradient_reaches_mean_and_log_variance():
    layer = Sampling(seed=0)
    mean = keras.Variable(np.zeros((4, 3), np.float32))
    log_var = keras.Variable(np.zeros((4, 3), np.float32))
    model_in = [keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(model_in, layer(model_in))

    # d/d(mean) of sum(z) is 1 everywhere; d/d(log_var) is eps * sigma / 2, non-zero.
    from kerasae import backend

    if backend.NAME == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = ops.sum(model([mean.value, log_var.value]))
        g_mean, g_log_var = tape.gradient(total, [mean.value, log_var.value])
    elif backend.NAME == "jax":
        import jax

        g_mean, g_log_var = jax.grad(lambda m, v: ops.sum(model([m, v])), argnums=(0, 1))(mean.value, log_var.value)
    else:
        import torch

        m = torch.zeros((4, 3), requires_grad=True)
        v = torch.zeros((4, 3), requires_grad=True)
        ops.sum(model([m, v])).backward()
        g_mean, g_log_var = m.grad, v.grad
    np.testing.assert_allclose(ops.convert_to_numpy(g_mean), 1.0)
    assert np.all(np.abs(ops.convert_to_numpy(g_log_var)) > 0)


def test_masking_zeroes_the_asked_fraction_in_training_only():
    x = np.ones((200, 28, 28, 1), np.float32)
    layer = Corruption("masking", p=0.2, seed=0)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
    first = ops.convert_to_numpy(layer(x, training=True))
    second = ops.convert_to_numpy(layer(x, training=True))
    assert abs((first == 0).mean() - 0.2) < 0.01
    assert not np.array_equal(first, second)  # fresh noise every call


def test_salt_and_pepper_and_gaussian():
    x = np.full((100, 28, 28, 1), 0.5, np.float32)
    sp = ops.convert_to_numpy(Corruption("salt_and_pepper", p=0.3, seed=0)(x, training=True))
    assert abs((sp == 0).mean() - 0.15) < 0.01 and abs((sp == 1).mean() - 0.15) < 0.01
    g = ops.convert_to_numpy(Corruption("gaussian", sigma=0.1, seed=0)(x, training=True)) - x
    assert abs(g.std() - 0.1) < 0.005 and abs(g.mean()) < 0.005


def test_dynamic_binarization_follows_the_grey_levels():
    x = np.full((100, 28, 28, 1), 0.3, np.float32)
    layer = DynamicBinarization(seed=0)
    b = ops.convert_to_numpy(layer(x, training=True))
    assert set(np.unique(b)) == {0.0, 1.0} and abs(b.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)


def test_bad_corruption_kind_names_the_argument():
    with pytest.raises(ValueError, match="Received: kind=blur"):
        Corruption("blur")


CONV_CASES = [(3, 2, (7, 6)), (3, 1, (5, 5)), (4, 2, (6, 7)), (5, 3, (5, 4)), (1, 2, (5, 5)), (2, 3, (4, 4))]


def _one_sgd_step(model, x, target, jit_compile="auto"):
    """The model's weights after one SGD step on a squared error: a function of its gradients."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=jit_compile)
    model.train_on_batch(x, target)
    return [ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize("kernel_size,strides,size", CONV_CASES)
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_conv_layers_compute_keras_layers_function_and_gradients(kernel_size, strides, size, transposed):
    """kerasae's Conv2D / Conv2DTranspose hold Keras's weights and compute Keras's function (on JAX
    on a CPU as space-to-depth and sub-pixel convolutions): the same outputs, and the same weights
    after a training step, to 1e-5, for odd and even sizes, kernels smaller and larger than the stride,
    and more and fewer than MATMUL_GRAD_MIN_FILTERS filters."""
    from kerasae import layers

    rng = np.random.default_rng(kernel_size * 10 + strides)
    x = rng.normal(size=(3, *size, 3)).astype("float32")
    for filters in (2, 9):
        pair = [
            kind(filters, kernel_size, strides=strides, padding="same", activation="relu")
            for kind in (
                (layers.Conv2DTranspose, keras.layers.Conv2DTranspose)
                if transposed
                else (layers.Conv2D, keras.layers.Conv2D)
            )
        ]
        models = [keras.Sequential([keras.Input(x.shape[1:]), layer]) for layer in pair]
        models[0].set_weights([rng.normal(size=w.shape).astype("float32") for w in models[0].weights])
        models[1].set_weights(models[0].get_weights())
        ours, theirs = (ops.convert_to_numpy(m(x)) for m in models)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        target = rng.normal(size=ours.shape).astype("float32")
        # (TensorFlow's own CPU gradient of Keras's layer crashes for kernels smaller than their
        # strides, which kerasae's layer pads: there the reference step runs under XLA.)
        reference_jit = backend.NAME == "tensorflow" or "auto"
        steps = _one_sgd_step(models[0], x, target), _one_sgd_step(models[1], x, target, reference_jit)
        for a, b in zip(*steps):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_conv_layers_config_round_trip_and_refuse_what_they_do_not_compute():
    from kerasae import layers

    for layer in (
        layers.Conv2D(4, 3, strides=2, padding="same"),
        layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
    ):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="padding='same' only. Received: padding='valid'"):
        layers.Conv2D(4, 3, padding="valid")
    with pytest.raises(ValueError, match="dilation_rate=.* Received: dilation_rate=\\(2, 2\\)"):
        layers.Conv2DTranspose(4, 3, padding="same", dilation_rate=2)
