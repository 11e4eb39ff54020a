"""The custom layers: behaviour, randomness, gradients and config round trips."""

import keras
import numpy as np
import pytest
from keras import ops

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
