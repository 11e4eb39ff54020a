"""The family table: every model family kerasae trains, in one place.

Each `Family` says which class implements it, what it can do (variational, conditional,
denoising), which recipe `loss` keys it takes and which constructor argument each becomes
(with its default), and which figures apply (the metrics that apply follow from what the model can do:
`kerasae.assess.metric_table`). The recipe schema, the builder, the model cards and the command line
read this table; no other module names a family. Adding a family is one model class in
`kerasae/models/`, one entry below, one recipe and its tests (the README's "How to add a family").

This module imports no Keras: the recipe schema reads it to validate without a backend.
"""

import dataclasses
import importlib
import math
from typing import Annotated, Any, Literal, NamedTuple, Optional

from pydantic import Field

from kerasae import defaults

# Figures every family draws; "denoising" needs a corruption, "scores" one-class data (the recipe checks that).
FIGURES = ("reconstructions", "loss", "filters", "latent", "traversals", "denoising", "scores", "series")
# Figures of models with a prior to sample from; "manifold" needs a 2-D code.
GENERATIVE_FIGURES = ("samples", "interpolation", "manifold")


class Key(NamedTuple):
    """A family's recipe key: the constructor argument it becomes, its default, and for `loss`
    keys the values it takes (a pydantic type, bounds included) and a line for the schema."""

    arg: str
    default: Any
    type: Any = None
    description: Optional[str] = None


Weight = Annotated[float, Field(ge=0.0, le=1e4)]
Epochs = Annotated[int, Field(ge=0, le=defaults.MAX_EPOCHS)]
ImportanceSamples = Annotated[int, Field(ge=1, le=5000)]

# The reconstruction term: deterministic families take `loss.type`, variational ones `loss.likelihood`.
RECONSTRUCTION = {"type": Key("reconstruction", "bce", Literal["bce", "mse"])}
LIKELIHOOD = {
    "likelihood": Key(
        "likelihood",
        "bernoulli",
        Literal["bernoulli", "gaussian", "logistic"],
        "Variational families' p(x | z): bernoulli (binary pixels), gaussian, or logistic (the discretized "
        "logistic of 8-bit images, exact probabilities; NLL also in bits per dimension).",
    ),
    "scale": Key(
        "scale",
        "unit",
        Literal["unit", "per_channel", "per_pixel"],
        "The gaussian's sigma or the logistic's scale: unit (sigma 1), or learned per channel or per pixel, "
        "shared by all images.",
    ),
}
BETA = {"beta": Key("beta", 1.0, Weight), "kl_warmup_epochs": Key("kl_warmup_epochs", 0, Epochs)}


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the recipe's `model.family`.
        class_name: its model class in `kerasae.models`, imported on first use.
        summary: one line for cards and `--help`.
        generative: trained towards a prior over codes, N(0, I), which it samples.
        variational: also has a posterior: ELBO, NLL.
        conditional: trains and generates given a class label per image.
        denoising: corrupts its inputs in training even when the recipe names no corruption
            (with `defaults.DENOISING_CORRUPTION`). Every family accepts a recipe's corruption.
        dataset_size: its loss estimates a density over the whole training set (the
            β-TCVAE's aggregate posterior), so its constructor takes the training set's size.
        loss: recipe `loss` key -> its `Key` (constructor argument, default, type and bounds):
            the recipe's loss section is built from these. Other loss keys are refused.
        model: the family's own recipe `model` keys -> `Key` (argument and default; their types
            are the recipe's model section's, as are the keys every family takes).
        figures: the figures that apply; the recipe's default `outputs.figures`.
        rules: ("key.path: message", holds(model section, loss values)) the recipe checks: a
            family's constraint between keys, reported with the message when it does not hold.
        prior: what a generative family's `generate` draws codes from, in words.
    """

    name: str
    class_name: str
    summary: str
    variational: bool = False
    generative: bool = False
    conditional: bool = False
    denoising: bool = False
    dataset_size: bool = False
    loss: dict = dataclasses.field(default_factory=lambda: dict(RECONSTRUCTION))
    model: dict = dataclasses.field(default_factory=dict)
    figures: tuple = FIGURES
    rules: tuple = ()
    prior: str = "the prior N(0, I)"

    @property
    def model_class(self):
        """The `keras.Model` subclass (imports Keras and the backend)."""
        return getattr(importlib.import_module("kerasae.models"), self.class_name)

    def loss_arguments(self, loss):
        """Constructor arguments from a recipe's `loss` section (any object with the keys as
        attributes); a key left unset (None) takes the family's default."""
        return _arguments(self.loss, loss)

    def model_arguments(self, model):
        """Constructor arguments from a recipe's `model` section's family keys (as `loss_arguments`)."""
        return _arguments(self.model, model)


def _arguments(keys, section):
    values = {key: getattr(section, key, None) for key in keys}
    return {key.arg: key.default if values[name] is None else values[name] for name, key in keys.items()}


# The decoder's scale: learned for the logistic, unit or learned for the gaussian, none for the bernoulli.
SCALE_RULES = (
    (
        "loss.scale: the logistic likelihood learns its scale: per_channel or per_pixel",
        lambda model, loss: loss["likelihood"] != "logistic" or loss["scale"] != "unit",
    ),
    (
        "loss.scale: the bernoulli likelihood has no scale; leave it 'unit'",
        lambda model, loss: loss["likelihood"] != "bernoulli" or loss["scale"] == "unit",
    ),
)


def _stride(layers):
    """The factor by which a list of layers scales an image's height and width (1 for dense sizes)."""
    return math.prod(layer.strides for layer in layers if not isinstance(layer, int))


def _variational(name, class_name, summary, loss, rules=(), **kwargs):
    return Family(
        name,
        class_name,
        summary,
        generative=True,
        variational=True,
        loss={**LIKELIHOOD, **loss},
        figures=FIGURES + GENERATIVE_FIGURES,
        rules=SCALE_RULES + tuple(rules),
        **kwargs,
    )


# The β-TCVAE's three KL terms (Chen et al. 2018): alpha, beta, gamma.
TC_WEIGHTS = {
    "mi_weight": Key("mi_weight", 1.0, Weight),
    "tc_weight": Key("tc_weight", 6.0, Weight),
    "dimension_kl_weight": Key("dimension_kl_weight", 1.0, Weight),
    "kl_warmup_epochs": BETA["kl_warmup_epochs"],
}

# The hierarchical VAE's `model` keys; its stochastic layers replace `encoder` and `latent_dim`.
HIERARCHY = {
    "stochastic_layers": Key("stochastic_layers", None),
    "inference": Key("inference", "bottom_up"),
    "prior": Key("prior", "standard"),
    "pseudo_inputs": Key("pseudo_inputs", 500),
    "posterior_flow": Key("posterior_flow", 0),
}

_TABLE = (
    Family("ae", "Autoencoder", "the seed's autoencoder: reconstruct the input through a code"),
    Family(
        "dae",
        "DenoisingAutoencoder",
        "the seed's denoising autoencoder: restore inputs with 20% of the pixels zeroed",
        denoising=True,
    ),
    Family(
        "sparse_ae",
        "SparseAutoencoder",
        "an autoencoder whose code units are mostly inactive (KL or L1 penalty)",
        loss={
            **RECONSTRUCTION,
            "sparsity_penalty": Key("sparsity_penalty", "kl", Literal["kl", "l1"]),
            "sparsity_weight": Key("sparsity_weight", 0.1, Weight),
            "sparsity_target": Key("sparsity_target", 0.05, Annotated[float, Field(gt=0.0, lt=1.0)]),
            "weight_penalty": Key("weight_penalty", 0.0, Weight),
        },
        rules=(
            (
                "model.latent_activation: the kl sparsity penalty needs 'sigmoid' codes",
                lambda model, loss: loss["sparsity_penalty"] != "kl" or model.latent_activation == "sigmoid",
            ),
        ),
    ),
    Family(
        "contractive_ae",
        "ContractiveAutoencoder",
        "an autoencoder penalised by its encoder's Jacobian norm (Rifai et al. 2011)",
        loss={**RECONSTRUCTION, "contractive_weight": Key("contractive_weight", 0.1, Weight)},
    ),
    Family(
        "wae",
        "WAE",
        "the Wasserstein autoencoder: an MMD term pulls the codes to the prior N(0, I) (Tolstikhin et al. 2018)",
        generative=True,
        loss={**RECONSTRUCTION, "mmd_weight": Key("mmd_weight", 10.0, Weight)},
        figures=FIGURES + GENERATIVE_FIGURES,
    ),
    Family(
        "vqvae",
        "VQVAE",
        "the VQ-VAE: a code of discrete symbols from a learned codebook (van den Oord et al. 2017)",
        generative=True,
        loss={
            **RECONSTRUCTION,
            "codebook_size": Key("codebook_size", 512, Annotated[int, Field(ge=2, le=65_536)]),
            "commitment_weight": Key("commitment_weight", 0.25, Weight),
            "codebook_ema": Key("codebook_ema", True, bool),
            "dead_code_restarts": Key("dead_code_restarts", True, bool),
            "code_positions": Key(
                "code_positions",
                16,
                Annotated[int, Field(ge=1, le=4096)],
                "vqvae with dense layers: code vectors per image (conv: the last feature map's grid).",
            ),
        },
        # Its code is discrete: no traversals, no 2-D manifold.
        figures=tuple(f for f in FIGURES if f != "traversals") + ("samples", "interpolation"),
        rules=(
            (
                "model.decoder: a conv VQ-VAE's decoder starts from the code grid the encoder's strides "
                "reach, so its strides must multiply to the same factor (or leave the decoder out: it mirrors)",
                lambda model, loss: model.decoder is None or _stride(model.encoder) == _stride(model.decoder),
            ),
        ),
        prior="the code frequencies per position, fitted to the training codes",
    ),
    Family(
        "rae",
        "RAE",
        "the regularized autoencoder: L2 penalties on the codes and the decoder (Ghosh et al. 2020)",
        loss={
            **RECONSTRUCTION,
            "code_weight": Key("code_weight", 0.1, Weight),
            "decoder_weight": Key("decoder_weight", 1e-4, Weight),
        },
    ),
    _variational("vae", "VAE", "the seed's variational autoencoder (Kingma & Welling 2014)", BETA),
    _variational(
        "iwae",
        "IWAE",
        "the importance-weighted autoencoder (Burda et al. 2016)",
        {"importance_samples": Key("k", 5, ImportanceSamples)},
    ),
    _variational(
        "hvae",
        "HVAE",
        "the hierarchical VAE: stochastic layers (Burda et al. 2016), ladder inference (Sønderby et al. 2016), "
        "the VampPrior (Tomczak & Welling 2018), IAF posteriors (Kingma et al. 2016)",
        {"importance_samples": Key("k", 1, ImportanceSamples), **BETA},
        model=HIERARCHY,
        rules=(
            (
                "model.stochastic_layers: family 'hvae' needs its stochastic layers, e.g. "
                "[{hidden: [200, 200], latent_dim: 100}, {hidden: [100, 100], latent_dim: 50}]",
                lambda model, loss: model.stochastic_layers is not None,
            ),
        ),
        prior="the prior p(z_L): N(0, I) or the VampPrior's mixture, decoded through the lower layers' means",
    ),
    _variational(
        "betatcvae",
        "BetaTCVAE",
        "the β-TCVAE: the KL split into mutual information, total correlation and per-unit KL (Chen et al. 2018)",
        TC_WEIGHTS,
        dataset_size=True,
    ),
    _variational(
        "cvae",
        "CVAE",
        "the conditional VAE: generation steered by a class label (Sohn et al. 2015)",
        BETA,
        conditional=True,
    ),
)

# The table: family name -> `Family`, in the order the README lists them.
FAMILIES = {family.name: family for family in _TABLE}
# Every figure a recipe may ask for.
ALL_FIGURES = FIGURES + GENERATIVE_FIGURES
# Every recipe loss key of any family, with the families that take it.
LOSS_KEYS = {key: tuple(f.name for f in _TABLE if key in f.loss) for f in _TABLE for key in f.loss}
# Every recipe loss key's type and description (the recipe's loss section is made of these): one per
# key, whichever families share it (tests/test_recipe.py checks that they agree).
LOSS_TYPES = {key: (spec.type, spec.description) for f in _TABLE for key, spec in f.loss.items()}
# Every family-specific recipe model key, with the families that take it.
MODEL_KEYS = {key: tuple(f.name for f in _TABLE if key in f.model) for f in _TABLE for key in f.model}


def get(name):
    """The `Family` of a recipe's `model.family` (validated by the recipe schema)."""
    return FAMILIES[name]


def capabilities(class_name):
    """(generative, variational, conditional) of a model class, as the entries that name it say; None
    for a class no entry names. The model classes take theirs from here (`Autoencoder.__init_subclass__`):
    the table is the one place that says what a family can do."""
    said = {(f.generative, f.variational, f.conditional) for f in FAMILIES.values() if f.class_name == class_name}
    if len(said) > 1:
        raise ValueError(f"the family table gives {class_name} more than one set of capabilities: {sorted(said)}")
    return said.pop() if said else None
