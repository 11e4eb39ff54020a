"""Encoder and decoder networks built from plain values (sizes, conv specs).

A layer list is either dense sizes (`[400, 200]`) or conv specs
(`[{"filters": 32, "kernel_size": 3, "strides": 2}, ...]`). The decoder mirrors
the encoder when no decoder list is given. The decoder ends with a separate
`Activation` layer named "output" so losses can use the logits before it. On a series' windows
(1 x length "images") conv layers run along time only. Conv layers are
kerasae's `Conv2D` / `Conv2DTranspose`: Keras's, computed in the form each backend runs fastest.
"""

import math

import keras

from kerasae import layers as kerasae_layers


def is_conv(layers):
    """Whether layer specs are conv layers (dicts) rather than dense sizes."""
    return bool(layers) and isinstance(layers[0], dict)


def code_grid(image_shape, layers):
    """(h, w) of the feature map that strided conv layers ("same" padding) reach from an image."""
    h, w = image_shape[0], image_shape[1]
    for spec in layers:
        sh, sw = along(image_shape, spec)[1]
        h, w = math.ceil(h / sh), math.ceil(w / sw)
    return h, w


def along(image_shape, spec):
    """(kernel_size, strides) of a conv spec: square on images; on a series' windows (1 x length),
    along time only: a Conv1D."""
    k, s = spec["kernel_size"], spec["strides"]
    return ((1, k), (1, s)) if image_shape[0] == 1 else ((k, k), (s, s))


def build_encoder(image_shape, layers, activation, heads, condition_dim=0, grid_heads=False, name="encoder"):
    """Image (and optionally a condition vector) -> one tensor per head.

    Args:
        image_shape: (H, W, C).
        layers: dense sizes or conv specs, input side first.
        activation: hidden activation.
        heads: list of (name, size, activation) for the output layers, e.g.
            [("z", 64, "sigmoid")] or [("z_mean", 20, None), ("z_log_var", 20, None)].
        condition_dim: size of a second input (e.g. a one-hot label) joined to the
            flattened image features; 0 for none.
        grid_heads: conv layers end in 1x1 conv heads, one `size`-vector per position of the
            last feature map, flattened (the VQ-VAE's code), instead of dense heads.
    """
    image = keras.Input(shape=tuple(image_shape), name="image")
    inputs = [image, keras.Input(shape=(condition_dim,), name="condition")] if condition_dim else image
    h = image
    if is_conv(layers):
        for i, spec in enumerate(layers):
            kernel, strides = along(image_shape, spec)
            h = kerasae_layers.Conv2D(
                spec["filters"],
                kernel,
                strides=strides,
                padding="same",
                activation=activation,
                name=f"conv_{i}",
            )(h)
    if grid_heads and is_conv(layers):
        outputs = [
            keras.layers.Flatten(name=f"{head}_flat")(
                keras.layers.Conv2D(size, 1, activation=act, dtype="float32", name=head)(h)
            )
            for head, size, act in heads
        ]
        return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=name)
    h = keras.layers.Flatten(name="flatten")(h)
    if condition_dim:
        h = keras.layers.Concatenate(name="join_condition")([h, inputs[1]])
    if not is_conv(layers):
        for i, units in enumerate(layers):
            h = keras.layers.Dense(units, activation=activation, name=f"dense_{i}")(h)
    # The code heads compute in float32 under a mixed-precision policy, as Keras advises for a
    # model's outputs: the code, and the KL term computed from it, keep their precision.
    outputs = [keras.layers.Dense(size, activation=act, dtype="float32", name=head)(h) for head, size, act in heads]
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=name)


def mirror(layers):
    """The decoder's layer list for an encoder's: the same layers in reverse order."""
    return list(reversed(layers))


def build_decoder(latent_dim, layers, activation, image_shape, output_activation, grid_code=0, name="decoder"):
    """Latent code -> image, as a `Sequential` whose last layer is the output activation.

    A conditional decoder takes the code and the condition joined into one
    vector: pass their total size as `latent_dim`. With conv layers and `grid_code` = D, the
    code is a flattened grid of D-vectors (`build_encoder(grid_heads=True)`), reshaped to the
    grid instead of projected by a dense layer.
    """
    height, width, channels = image_shape
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(latent_dim,), name="z"))
    if is_conv(layers):
        # Start from the spatial size the encoder's strided convs reach ("same" padding).
        h, w = code_grid(image_shape, list(reversed(layers)))
        if grid_code:
            model.add(keras.layers.Reshape((h, w, grid_code), name="unflatten"))
        else:
            model.add(keras.layers.Dense(h * w * layers[0]["filters"], activation=activation, name="project"))
            model.add(keras.layers.Reshape((h, w, layers[0]["filters"]), name="unflatten"))
        for i, spec in enumerate(layers):
            kernel, (sh, sw) = along(image_shape, spec)
            model.add(
                kerasae_layers.Conv2DTranspose(
                    spec["filters"], kernel, strides=(sh, sw), padding="same", activation=activation, name=f"deconv_{i}"
                )
            )
            h, w = h * sh, w * sw
        kernel = along(image_shape, layers[-1])[0]
        model.add(kerasae_layers.Conv2D(channels, kernel, padding="same", name="logits"))
        if (h, w) != (height, width):
            dh, dw = h - height, w - width
            model.add(keras.layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), name="crop"))
    else:
        for i, units in enumerate(layers):
            model.add(keras.layers.Dense(units, activation=activation, name=f"dense_{i}"))
        model.add(keras.layers.Dense(height * width * channels, name="logits"))
        model.add(keras.layers.Reshape(tuple(image_shape), name="unflatten"))
    model.add(keras.layers.Activation(output_activation, dtype="float32", name="output"))
    return model
