"""The only module that knows both recipes and models: Recipe -> keras.Model."""

import keras

from kerasae.models import FAMILIES


def model_arguments(recipe, image_shape):
    """The constructor arguments of the recipe's model family, as plain values."""
    m = recipe.model
    layers = [layer if isinstance(layer, int) else layer.model_dump() for layer in m.encoder]
    decoder = None if m.decoder is None else [l if isinstance(l, int) else l.model_dump() for l in m.decoder]
    args = {
        "image_shape": list(image_shape),
        "encoder_layers": layers,
        "activation": m.activation,
        "latent_dim": m.latent_dim,
        "decoder_layers": decoder,
        "output_activation": m.output_activation,
        "dynamic_binarization": recipe.data.binarize == "bernoulli",
        "seed": recipe.train.seed,
    }
    c = recipe.corruption
    if c.type != "none":
        args["corruption"] = {"kind": c.type, "p": c.p, "sigma": c.sigma}
    if m.family == "vae":
        args.update(likelihood=recipe.loss.likelihood, beta=recipe.loss.beta,
                    kl_warmup_epochs=recipe.loss.kl_warmup_epochs)
    else:
        args.update(latent_activation=m.latent_activation, reconstruction=recipe.loss.type)
    return args


def build(recipe, image_shape):
    """A fresh model of the recipe's family for images of `image_shape` (H, W, C)."""
    return FAMILIES[recipe.model.family](**model_arguments(recipe, image_shape), name=recipe.model.family)


def optimizer(train):
    """The recipe's optimizer with its learning rate."""
    return keras.optimizers.get({"class_name": train.optimizer, "config": {"learning_rate": train.learning_rate}})
