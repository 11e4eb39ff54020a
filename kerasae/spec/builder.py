"""The only module that knows both recipes and models: Recipe -> keras.Model."""

import keras

from kerasae import families


def model_arguments(recipe, image_shape, num_classes=10, train_size=60_000):
    """The constructor arguments of the recipe's model family, as plain values."""
    m = recipe.model
    layers = [layer if isinstance(layer, int) else layer.model_dump() for layer in m.encoder]
    decoder = (
        None if m.decoder is None else [layer if isinstance(layer, int) else layer.model_dump() for layer in m.decoder]
    )
    args = {
        "image_shape": list(image_shape),
        "encoder_layers": layers,
        "activation": m.activation,
        "latent_dim": m.latent_dim,
        "decoder_layers": decoder,
        "output_activation": m.output_activation,
        "dynamic_binarization": recipe.data.binarize == "bernoulli",
        "seed": recipe.train.seed,
        "anomaly": {"score": recipe.score.method, "samples": recipe.score.samples},
    }
    c = recipe.corruption
    if c.type != "none":
        args["corruption"] = {"kind": c.type, "p": c.p, "sigma": c.sigma}
    family = families.get(m.family)
    args.update(family.loss_arguments(recipe.loss))
    args.update(family.model_arguments(recipe.model))
    if args.get("stochastic_layers"):  # plain dicts; they replace the encoder and the code size
        args["stochastic_layers"] = [layer.model_dump() for layer in m.stochastic_layers]
        for key in ("encoder_layers", "latent_dim", "decoder_layers"):
            args.pop(key)
    if not family.variational:  # a variational code is a Gaussian's mean and log-variance
        args["latent_activation"] = m.latent_activation
    if family.conditional:
        args["num_classes"] = num_classes
    if family.dataset_size:
        args["dataset_size"] = train_size
    return args


def build(recipe, image_shape, num_classes=10, train_size=60_000):
    """A fresh model of the recipe's family for images of `image_shape` (H, W, C), under the recipe's
    dtype policy (`train.mixed_precision`), which the model's config keeps. `train_size`: the
    number of training images, for a family whose loss needs it (`Family.dataset_size`)."""
    args = model_arguments(recipe, image_shape, num_classes, train_size)
    if recipe.train.mixed_precision != "none":
        args["dtype"] = recipe.train.mixed_precision
    return families.get(recipe.model.family).model_class(**args, name=recipe.model.family)


def optimizer(train, scale=1, total_steps=1):
    """The recipe's optimizer with its learning rate (times `scale`: the replica count when
    `distribute.scale_learning_rate` asks for the linear scaling rule) and its schedule over
    `total_steps` training steps."""
    rate = train.learning_rate * scale
    if train.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=max(1, total_steps), alpha=train.final_learning_rate / train.learning_rate
        )
    return keras.optimizers.get({"class_name": train.optimizer, "config": {"learning_rate": rate}})
