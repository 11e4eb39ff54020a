"""Recipes: the YAML schema and the only place user input is validated.

A recipe is read with `yaml.safe_load` semantics (it never builds Python
objects), merged over its `base:` chain, patched with `--set` overrides, then
validated once by the pydantic models below. Every problem is reported at once,
each with its dotted key path and the file and line (or override) it came from.

The model code never imports this module: the builder turns a `Recipe` into
plain constructor arguments, so the schema can change without breaking saved
zoo entries.
"""

import difflib
import os
import re
import typing
from typing import Annotated, Literal, Optional, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from kerasae import defaults, families
from kerasae.errors import RecipeError

FAMILIES = tuple(families.FAMILIES)

# Upper bounds that catch typos (a latent of 10**9) before they allocate memory.
MAX_UNITS = 65_536
MAX_EPOCHS = defaults.MAX_EPOCHS
MAX_BATCH = 1_048_576

Units = Annotated[int, Field(ge=1, le=MAX_UNITS)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ConvLayer(Section):
    """One Conv2D layer of a convolutional encoder (mirrored by Conv2DTranspose)."""

    filters: Units
    kernel_size: Annotated[int, Field(ge=1, le=31)] = 3
    strides: Annotated[int, Field(ge=1, le=8)] = 2


def _layers_kind(value):
    """Dense layers are given as sizes, conv layers as mappings."""
    if isinstance(value, list) and any(isinstance(item, (dict, ConvLayer)) for item in value):
        return "conv"
    return "dense"


Layers = Annotated[
    Union[Annotated[list[Units], Tag("dense")], Annotated[list[ConvLayer], Tag("conv")]],
    Discriminator(_layers_kind),
]


class StochasticLayer(Section):
    """One stochastic layer of a hierarchical VAE: its dense hidden layers and its latent size."""

    hidden: list[Units] = Field(default_factory=list, description="Dense hidden layers, the image's side first.")
    latent_dim: Units


Activation = Literal["linear", "sigmoid", "relu", "tanh", "elu", "selu", "gelu", "silu", "softplus", "leaky_relu"]


# The model keys a hierarchical VAE's `stochastic_layers` replace.
REPLACED_BY_LAYERS = ("encoder", "latent_dim", "decoder")


class ModelSection(Section):
    """The network: encoder, latent layer and decoder."""

    family: Literal[FAMILIES]
    encoder: Layers = Field(
        default_factory=list,
        description="Hidden layer sizes (dense) or conv layers, input side first.",
    )
    activation: Activation = "relu"
    latent_dim: Units = 32
    latent_activation: Activation = "linear"
    decoder: Optional[Layers] = Field(
        default=None, description="Hidden layers of the decoder; mirrors the encoder when omitted."
    )
    output_activation: Activation = "sigmoid"
    # The hierarchical VAE's keys (family hvae; the family table lists them and their defaults).
    stochastic_layers: Optional[Annotated[list[StochasticLayer], Field(min_length=1, max_length=16)]] = Field(
        default=None, description="hvae: its stochastic layers, the image's side first; replace encoder and latent_dim."
    )
    inference: Optional[Literal["bottom_up", "ladder"]] = None
    prior: Optional[Literal["standard", "vamp"]] = None
    pseudo_inputs: Optional[Annotated[int, Field(ge=1, le=10_000)]] = None
    posterior_flow: Optional[Annotated[int, Field(ge=0, le=32)]] = Field(
        default=None, description="hvae: inverse autoregressive flow steps per stochastic layer (0: none)."
    )

    @model_validator(mode="after")
    def _layers_replace_encoder(self):
        if self.stochastic_layers is None:
            return self
        for key in REPLACED_BY_LAYERS:
            if key in self.model_fields_set:
                raise ValueError(f"{key}: does not apply with stochastic_layers (each layer lists its hidden sizes)")
        # The code that `encode` gives, samplers fit and figures show: the top layer's.
        self.latent_dim = self.stochastic_layers[-1].latent_dim
        return self

    @property
    def conv(self):
        """Whether the networks are convolutional."""
        return any(not isinstance(layer, int) for layer in self.encoder + (self.decoder or []))


def _loss_section():
    """The recipe's `loss` section: every loss key of any family, with the type, bounds and description
    its family table entry gives (`families.LOSS_TYPES`), each optional. `Recipe` checks that the
    recipe's family takes the keys given (`_loss_problems`) and fills in the family's defaults."""
    fields = {
        key: (Optional[kind], Field(default=None, description=description))
        for key, (kind, description) in families.LOSS_TYPES.items()
    }
    return pydantic.create_model("LossSection", __base__=Section, __module__=__name__, **fields)


LossSection = _loss_section()


class CorruptionSection(Section):
    """Input corruption, applied in training only (the denoising criterion)."""

    type: Literal["none", "masking", "gaussian", "salt_and_pepper"] = "none"
    p: Optional[Probability] = None
    sigma: Optional[Annotated[float, Field(gt=0.0, le=100.0)]] = None

    @model_validator(mode="after")
    def _parameters_match_type(self):
        if self.type in ("masking", "salt_and_pepper"):
            if self.sigma is not None:
                raise ValueError(f"sigma: does not apply to {self.type} corruption; use 'p'")
            if self.p is None:
                self.p = defaults.MASKING_P
        elif self.type == "gaussian":
            if self.p is not None:
                raise ValueError("p: does not apply to gaussian corruption; use 'sigma'")
            if self.sigma is None:
                self.sigma = defaults.GAUSSIAN_SIGMA
        elif self.p is not None or self.sigma is not None:
            raise ValueError("type: 'p' and 'sigma' need a corruption type (masking, gaussian, salt_and_pepper)")
        return self


class NpzKeys(Section):
    """Array names inside a user's `.npz` file."""

    x_train: str = "x_train"
    y_train: Optional[str] = "y_train"
    x_test: Optional[str] = "x_test"
    y_test: Optional[str] = "y_test"


IMAGE_DATASETS = ("folder", "huggingface", "patches")  # decoded from image files, any colour
# The data keys that apply to some datasets only: which. Elsewhere they are errors, and resolved
# recipes leave them out.
DATASET_KEYS = {
    "test_split": (*IMAGE_DATASETS, "table", "sequence"),
    "image_size": ("folder", "huggingface"),
    "resize": ("folder", "huggingface"),
    "color_mode": IMAGE_DATASETS,
    "image_column": ("huggingface",),
    "label_column": ("huggingface", "table", "sequence"),
    "patch_size": ("patches",),
    "patches": ("patches",),
    "whiten": ("patches",),
    "whiten_epsilon": ("patches",),
    "classes": ("mnist", "digits", "npz", "table"),
    "columns": ("table", "sequence"),
    "categorical": ("table",),
    "missing": ("table", "sequence"),
    "window": ("sequence",),
}
# What a table's rows and a series' windows can be drawn as: the figures of images need images.
TABLE_FIGURES = ("loss", "latent", "scores")
SEQUENCE_FIGURES = ("loss", "latent", "scores", "series")
VECTOR_FIGURES = {"table": TABLE_FIGURES, "sequence": SEQUENCE_FIGURES}


class WindowSection(Section):
    """sequence: how windows are cut from the series."""

    length: Annotated[int, Field(ge=2, le=100_000)] = Field(description="Time steps per window.")
    stride: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1, description="Steps between the starts of training windows (scores use every window)."
    )


class DataSection(Section):
    """Where the images come from and how they are prepared."""

    dataset: Literal["mnist", "digits", "npz", "npy", "folder", "huggingface", "patches", "table", "sequence"] = "mnist"
    path: Optional[str] = Field(
        default=None,
        description="mnist: a local mnist.npz; npz: the file (required); npy: a folder of "
        "x_train.npy (and y_train, x_test, y_test), memory-mapped (required); folder: a folder of "
        "PNG/JPEG/BMP/GIF images, its subfolders the labels (required); huggingface: a dataset saved "
        "with `datasets.save_to_disk`, or a name for `datasets.load_dataset` (required); patches: the "
        "folder the patches are cut from (scikit-learn's sample photographs when omitted); table, sequence: a "
        "CSV or Parquet file (required), a sequence's rows in time order.",
    )
    keys: NpzKeys = Field(default_factory=NpzKeys)
    binarize: Literal["none", "threshold", "bernoulli"] = "none"
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    validation_split: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    test_split: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=0.1,
        description="folder, huggingface without a test split, patches, table: the share held out for testing; "
        "sequence: the series' last share of steps.",
    )
    limit: Optional[Annotated[int, Field(ge=2, le=100_000_000)]] = Field(
        default=None, description="Use only the first `limit` training (and test) images."
    )
    image_size: Optional[tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]]] = Field(
        default=None,
        description="folder, huggingface: [H, W] every image is resized to (as they are when omitted: then they "
        "must share one size).",
    )
    resize: Literal["crop", "pad"] = Field(
        default="crop",
        description="How image_size keeps the aspect ratio: crop scales the shorter side to fit and cuts the "
        "centre; pad scales the longer side to fit and pads with black.",
    )
    color_mode: Optional[Literal["grayscale", "rgb"]] = Field(
        default=None, description="folder, huggingface, patches: 1 or 3 channels (default rgb; patches grayscale)."
    )
    image_column: str = Field(default="image", description="huggingface: the column of images.")
    label_column: Optional[str] = Field(
        default="label",
        description="huggingface: the column of integer labels (none when absent or null); table: each row's "
        "class; sequence: 1 where a step is a known anomaly, else 0 (none unless named).",
    )
    patch_size: Annotated[int, Field(ge=2, le=256)] = Field(default=8, description="patches: their side in pixels.")
    patches: Annotated[int, Field(ge=10, le=10_000_000)] = Field(
        default=10_000, description="patches: how many are cut, at random positions of random images (seeded)."
    )
    whiten: Literal["none", "zca"] = Field(
        default="none",
        description="patches: zca whitens them (Bell & Sejnowski 1997): decorrelated pixels of unit variance, "
        "with epsilon added to the covariance's eigenvalues.",
    )
    whiten_epsilon: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    classes: Optional[Annotated[list[Union[Annotated[int, Field(ge=0, le=1_000_000)], str]], Field(min_length=1)]] = (
        Field(
            default=None,
            description="One-class training (anomaly detection): train and validate on these classes only; "
            "the test set keeps every class, the others marked anomalous.",
        )
    )
    columns: Optional[Annotated[list[str], Field(min_length=1)]] = Field(
        default=None,
        description="table, sequence: the columns to learn from (default: all but data.label_column); a "
        "sequence's are numbers, one channel each.",
    )
    categorical: list[str] = Field(
        default_factory=list, description="table: columns of categories, one-hot encoded (the others: numbers)."
    )
    missing: Literal["error", "impute", "drop"] = Field(
        default="error",
        description="table, sequence: a missing value is an error, imputed (the training mean; a category of its "
        "own), or its row dropped (tables only: a series keeps every step).",
    )
    window: Optional[WindowSection] = Field(default=None, description="sequence: the windows cut (required).")

    @field_validator("path")
    @classmethod
    def _home(cls, path):
        return None if path is None else os.path.expanduser(path)  # "~/Pictures" as a shell reads it

    @model_validator(mode="after")
    def _dataset_keys(self):
        needs_path = {"npz": "the path of the .npz file", "npy": "the folder of .npy files"}
        needs_path |= {"folder": "the folder of images", "huggingface": "a saved dataset's folder or a dataset name"}
        needs_path["table"] = needs_path["sequence"] = "the CSV or Parquet file"
        if self.dataset in needs_path and not self.path:
            raise ValueError(f"path: dataset '{self.dataset}' needs {needs_path[self.dataset]}")
        for key in sorted(self.model_fields_set & DATASET_KEYS.keys()):
            if self.dataset not in DATASET_KEYS[key]:
                raise ValueError(f"{key}: applies to dataset {' or '.join(DATASET_KEYS[key])}, not '{self.dataset}'")
        if self.dataset == "patches" and self.whiten == "zca" and self.binarize != "none":
            raise ValueError("binarize: whitened patches are not images in [0, 1]; leave binarize 'none'")
        if self.dataset in ("table", "sequence") and "label_column" not in self.model_fields_set:
            self.label_column = None  # a table's rows have a class only where the recipe names its column
        if self.dataset == "sequence" and self.window is None:
            raise ValueError("window: dataset 'sequence' needs window.length (and window.stride, default 1)")
        if self.dataset == "sequence" and self.missing == "drop":
            raise ValueError("missing: a series keeps every time step; use 'error' or 'impute'")
        if self.color_mode is None and self.dataset in IMAGE_DATASETS:
            self.color_mode = "grayscale" if self.dataset == "patches" else "rgb"
        return self


def datasets_of(key):
    """The datasets a data key applies to."""
    return DATASET_KEYS.get(key, DataSection.model_fields["dataset"].annotation.__args__)


class TrainSection(Section):
    """How `fit` runs."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 10
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 128
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "adagrad", "nadam"] = "adam"
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    learning_rate_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="cosine: decay from learning_rate to final_learning_rate along a "
        "half cosine over all training steps (Loshchilov & Hutter); constant: keep learning_rate.",
    )
    final_learning_rate: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        default=0.0, description="Where the cosine schedule ends; must not exceed learning_rate."
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    tensorboard: bool = False
    checkpoint_every_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = Field(
        default=1, description="Save a resumable checkpoint after every this many epochs (and the last)."
    )
    checkpoint_every_steps: Optional[Annotated[int, Field(ge=1, le=10**9)]] = Field(
        default=None,
        description="Also save a resumable checkpoint every this many training steps "
        "(counted from the start of training); none when omitted.",
    )
    steps_per_execution: Optional[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default=None,
        description="Training steps per compiled call; the backend's default when omitted "
        f"({defaults.STEPS_PER_EXECUTION} on TensorFlow and JAX); on PyTorch and under tf.distribute the "
        "steps run one call each (same weights).",
    )
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = Field(
        default="none",
        description="Keras's mixed-precision policy: layers compute in float16 or bfloat16 and keep "
        "float32 weights; the code heads, the output layer, the losses and the KL term stay float32 "
        "(mixed_float16 also scales the loss). For GPUs and TPUs; on a CPU it is slower.",
    )
    jit_compile: Optional[bool] = Field(
        default=None,
        description="Compile the training step (XLA on TensorFlow and JAX, torch.compile on "
        "PyTorch); when omitted: XLA on TensorFlow and JAX (except TensorFlow under distribute), off on PyTorch.",
    )

    @model_validator(mode="after")
    def _schedule_ends_below_start(self):
        if self.final_learning_rate and self.learning_rate_schedule == "constant":
            raise ValueError("final_learning_rate: applies to learning_rate_schedule 'cosine'")
        if self.final_learning_rate > self.learning_rate:
            raise ValueError(
                f"final_learning_rate: {self.final_learning_rate} exceeds learning_rate {self.learning_rate}"
            )
        return self


class DistributeSection(Section):
    """Data-parallel training on several devices or hosts, through the backends' own engines:
    `keras.distribution.DataParallel` on JAX, `tf.distribute` on TensorFlow."""

    strategy: Literal["none", "data_parallel"] = "none"
    devices: Union[Literal["auto"], Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default="auto", description="Local devices to use: all of them (auto) or the first N."
    )
    scale_learning_rate: bool = Field(
        default=False, description="Multiply train.learning_rate by the number of replicas (the linear scaling rule)."
    )
    coordinator_address: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9._\[\]:-]+:[0-9]{1,5}$")]] = Field(
        default=None,
        description="JAX multi-host: host:port of process 0; else $KERASAE_COORDINATOR_ADDRESS.",
    )
    num_processes: Optional[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default=None, description="JAX multi-host: number of processes; else $KERASAE_NUM_PROCESSES."
    )
    process_id: Optional[Annotated[int, Field(ge=0, le=65_535)]] = Field(
        default=None, description="JAX multi-host: this process's index; else $KERASAE_PROCESS_ID."
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.num_processes is not None and self.process_id is not None and self.process_id >= self.num_processes:
            raise ValueError(f"process_id: must be below num_processes ({self.num_processes}), got {self.process_id}")
        return self


# Figure name -> (what else it needs, in words; the test of a recipe). Which figures apply to
# which family is the family table's.
FIGURE_NEEDS = {
    "denoising": ("a corruption (corruption.type other than 'none')", lambda r: r.corruption.type != "none"),
    "manifold": ("model.latent_dim 2", lambda r: r.model.latent_dim == 2),
    "scores": (
        "known anomalies: one-class data (data.classes), or a sequence's data.label_column",
        lambda r: bool(r.data.classes) or (r.data.dataset == "sequence" and r.data.label_column is not None),
    ),
    "series": ("a time series (data.dataset: sequence)", lambda r: r.data.dataset == "sequence"),
}


def figures_for(recipe):
    """Every figure that applies to a recipe: the default of `outputs.figures`."""
    return [
        name
        for name in families.get(recipe.model.family).figures
        if (name not in FIGURE_NEEDS or FIGURE_NEEDS[name][1](recipe))
        and (recipe.data.dataset not in VECTOR_FIGURES or name in VECTOR_FIGURES[recipe.data.dataset])
    ]


class OutputsSection(Section):
    """What the zoo entry gets besides the model."""

    figures: Optional[list[Literal[families.ALL_FIGURES]]] = Field(
        default=None, description="Figures to draw; every figure that applies to the family when omitted."
    )
    epochs: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=list,
        description="Epochs after which snapshots are taken; epochs past the last are ignored, "
        "and the last epoch is always included.",
    )
    n_examples: Annotated[int, Field(ge=1, le=100)] = 10
    export_saved_model: bool = True
    nll_samples: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=1000, description="Importance samples per test image for the NLL of variational families (0: skip)."
    )
    fid_samples: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=10_000, description="Generated images per sampler for the FID of MNIST entries (0: skip)."
    )


class ScoreSection(Section):
    """Anomaly scores (`model.score`, `kerasae score`) and the threshold calibrated after training
    on the held-out normal items (the validation split, else the training set)."""

    method: Optional[Literal["reconstruction", "elbo", "nll"]] = Field(
        default=None,
        description="reconstruction: the reconstruction's loss; elbo / nll (variational families): the negative "
        "ELBO / the importance-sampled -log p(x). Default: elbo for variational families, else reconstruction.",
    )
    samples: Annotated[int, Field(ge=1, le=5000)] = Field(
        default=defaults.SCORE_SAMPLES, description="Importance samples per item for elbo and nll."
    )
    quantile: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default=None, description="The threshold is this quantile of the held-out normal items' scores (default 0.99)."
    )
    contamination: Optional[Annotated[float, Field(ge=0.0, lt=0.5)]] = Field(
        default=None, description="Or: the fraction of held-out items expected above it (quantile = 1 - contamination)."
    )

    @model_validator(mode="after")
    def _one_threshold_rule(self):
        if self.quantile is not None and self.contamination is not None:
            raise ValueError("contamination: give score.quantile or score.contamination, not both")
        return self

    def threshold_quantile(self):
        """The quantile of held-out normal scores that the threshold is set to."""
        if self.contamination is not None:
            return 1.0 - self.contamination
        return defaults.THRESHOLD_QUANTILE if self.quantile is None else self.quantile


class Recipe(Section):
    """A whole recipe: the one validated description of a training run."""

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    model: ModelSection
    loss: LossSection = Field(default_factory=LossSection)
    corruption: CorruptionSection = Field(default_factory=CorruptionSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    distribute: DistributeSection = Field(default_factory=DistributeSection)
    score: ScoreSection = Field(default_factory=ScoreSection)

    @model_validator(mode="after")
    def _family_rules(self):
        family = families.get(self.model.family)
        problems = [*self._model_problems(family), *self._loss_problems(family), *self._figure_problems(family)]
        if self.data.dataset in VECTOR_FIGURES:
            problems += self._vector_problems(family)
        if self.score.method in ("elbo", "nll") and not family.variational:
            takers = " or ".join(f.name for f in families.FAMILIES.values() if f.variational)
            problems.append(f"score.method: '{self.score.method}' applies to family {takers}, not '{family.name}'")
        layer_kinds = {type(layer) for layer in self.model.encoder + (self.model.decoder or [])}
        if len(layer_kinds) > 1:
            problems.append("model.decoder: must be dense sizes when the encoder is dense, conv layers when it is conv")
        if problems:
            # One error per line; _describe turns each into its own located problem.
            raise ValueError("\n".join(problems))
        for section, keys in ((self.loss, family.loss), (self.model, family.model)):
            for key, spec in keys.items():
                if getattr(section, key) is None:
                    setattr(section, key, spec.default)
        if family.denoising and self.corruption.type == "none":
            kind = defaults.DENOISING_CORRUPTION["kind"]
            self.corruption = CorruptionSection(type=kind, p=defaults.DENOISING_CORRUPTION["p"])
        if self.outputs.figures is None:
            self.outputs.figures = figures_for(self)
        if self.score.method is None:
            self.score.method = "elbo" if family.variational else "reconstruction"
        return self

    def _model_problems(self, family):
        return [
            f"model.{key}: applies to family {' or '.join(families.MODEL_KEYS[key])}, not '{family.name}'"
            for key in families.MODEL_KEYS
            if key not in family.model and getattr(self.model, key) is not None
        ]

    def _loss_problems(self, family):
        problems = []
        for key in [key for key in LossSection.model_fields if key in self.loss.model_fields_set]:
            if key in family.loss or getattr(self.loss, key) is None:
                continue
            if key == "type" and "likelihood" in family.loss:
                problems.append(f"loss.type: does not apply to family '{family.name}'; use loss.likelihood")
            elif key == "likelihood" and "type" in family.loss:
                problems.append(
                    f"loss.likelihood: applies to variational families; family '{family.name}' uses loss.type"
                )
            else:
                takers = " or ".join(families.LOSS_KEYS[key])
                problems.append(f"loss.{key}: applies to family {takers}, not '{family.name}'")
        if not problems:  # the family's own rules, on its loss values with their defaults
            values = {
                key: spec.default if getattr(self.loss, key) is None else getattr(self.loss, key)
                for key, spec in family.loss.items()
            }
            problems += [message for message, holds in family.rules if not holds(self.model, values)]
        return problems

    def _vector_problems(self, family):
        """A table's rows and a series' windows are standardized numbers, not images in [0, 1]."""
        problems = []
        what = {"table": "a table's standardized columns", "sequence": "a series' standardized columns"}
        what, items = (
            what[self.data.dataset],
            {"table": "a table's rows", "sequence": "a series' windows"}[self.data.dataset],
        )
        if self.data.dataset == "table" and any(not isinstance(layer, int) for layer in self.model.encoder):
            problems.append("model.encoder: a table's rows take dense layers (sizes), not conv layers")
        if family.variational and self.loss.likelihood not in (None, "gaussian"):
            problems.append(f"loss.likelihood: {what} need 'gaussian'")
        elif not family.variational and self.loss.type != "mse":
            problems.append(f"loss.type: {what} are not in [0, 1]; use 'mse'")
        if self.model.output_activation != "linear":
            problems.append(f"model.output_activation: {what} need 'linear'")
        if self.data.binarize != "none":
            problems.append(f"data.binarize: {items} are not images; leave it 'none'")
        allowed = VECTOR_FIGURES[self.data.dataset]
        for name in self.outputs.figures or []:
            if name not in allowed:
                problems.append(f"outputs.figures: '{name}' needs images; {items} get {', '.join(allowed)}")
        return problems

    def _figure_problems(self, family):
        problems = []
        for name in self.outputs.figures or []:
            if name not in family.figures:
                takers = " or ".join(f.name for f in families.FAMILIES.values() if name in f.figures)
                problems.append(f"outputs.figures: '{name}' applies to family {takers}, not '{family.name}'")
            if name in FIGURE_NEEDS and not FIGURE_NEEDS[name][1](self):
                problems.append(f"outputs.figures: '{name}' needs {FIGURE_NEEDS[name][0]}")
        return problems

    def to_dict(self):
        """The fully defaulted recipe as plain YAML-safe values (loss and model keys of other families, data
        keys of other datasets, left out)."""
        data = self.model_dump(mode="json")
        family = families.get(self.model.family)
        data["loss"] = {key: value for key, value in data["loss"].items() if key in family.loss}
        data["model"] = {
            key: value for key, value in data["model"].items() if key not in families.MODEL_KEYS or key in family.model
        }
        if self.model.stochastic_layers is not None:  # they replace these keys, which would not validate again
            for key in REPLACED_BY_LAYERS:
                data["model"].pop(key, None)
        dataset = self.data.dataset
        data["data"] = {k: v for k, v in data["data"].items() if dataset in datasets_of(k)}
        return data


# ---------------------------------------------------------------------------
# Reading YAML with line numbers.


class _Source:
    """Remembers where each dotted key path came from ("file:line" or "--set ...")."""

    def __init__(self):
        self.where = {}

    def record(self, node, path, origin):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = path + (str(key_node.value),)
                self.where[key_path] = f"{origin}:{key_node.start_mark.line + 1}"
                self.record(value_node, key_path, origin)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.where[path + (i,)] = f"{origin}:{item.start_mark.line + 1}"
                self.record(item, path + (i,), origin)

    def locate(self, path):
        """The origin of the longest recorded prefix of `path`."""
        path = tuple(path)
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return None


# A recipe is a few dozen keys; these bounds refuse hostile YAML before anything is built from it.
MAX_YAML_CHARS = 100_000
MAX_YAML_DEPTH = 20


def _check_plain(text, where, lines=True):
    """Refuses YAML aliases (recipes have no use for them: a self-referencing anchor or a
    "billion laughs" of nested aliases would build a recursive or exponentially large value)
    and nesting deeper than `MAX_YAML_DEPTH`, from the event stream, before any value is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = f"{where}:{event.start_mark.line + 1}" if lines else where
        if isinstance(event, yaml.AliasEvent):
            raise RecipeError(
                f"{line}: YAML aliases (*{event.anchor}) are not allowed in recipes; "
                "write the value out (or use base: to share settings)"
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise RecipeError(f"{line}: YAML nested deeper than {MAX_YAML_DEPTH} levels; recipes are flat")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _parse_yaml(path, source):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read recipe {path}: {e}") from None
    if len(text) > MAX_YAML_CHARS:
        raise RecipeError(f"{path}: a recipe must be under {MAX_YAML_CHARS // 1000} kB, got {len(text)} characters")
    try:
        _check_plain(text, str(path))
        # compose() builds nodes (with line marks) and never constructs Python
        # objects; safe_load() gives the values.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "could not determine a constructor" in str(e):
            problem = "YAML tags that build Python objects are not allowed"
        raise RecipeError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of sections, got {type(data).__name__}")
    if node is not None:
        source.record(node, (), str(path))
    return data


def _merge(base, override):
    """Deep-merge two recipe dicts; mappings merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_chain(path, source, seen):
    path = os.path.normpath(path)
    real = os.path.realpath(path)
    if real in seen:
        chain = " -> ".join(seen + [real])
        raise RecipeError(f"base: loop in recipe chain: {chain}")
    data = _parse_yaml(path, source)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{source.locate(('base',))}: base: must be a file name, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), base)
    if not os.path.exists(base_path):
        raise RecipeError(f"{source.locate(('base',))}: base: file not found: {base_path}")
    # The child's line numbers win over the base's for the keys it sets.
    child_where = dict(source.where)
    parent = _read_chain(base_path, source, seen + [real])
    source.where.update(child_where)
    return _merge(parent, data)


def parse_override(text):
    """Splits one `--set a.b=value` into a key path and a YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text}: expected KEY.PATH=VALUE")
    if len(raw) > MAX_YAML_CHARS:
        raise RecipeError(f"--set {key.strip()}=...: the value must be under {MAX_YAML_CHARS // 1000} kB")
    try:
        _check_plain(raw, f"--set {text}", lines=False)
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return tuple(key.strip().split(".")), value


def _apply_override(data, keys, value, text, source):
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            dotted = ".".join(keys[: i + 1])
            raise RecipeError(f"--set {text}: '{dotted}' is not a section")
        node = child
    node[keys[-1]] = value
    # Keys below the replaced value came from it now, not from the file.
    for path in [path for path in source.where if path[: len(keys)] == keys]:
        del source.where[path]
    source.where[keys] = f"--set {text}"


def _fields_at(loc):
    """The field names that the schema allows at a location, for did-you-mean."""
    fields, pending = [], _annotations_at(loc)
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields += [name for name in annotation.model_fields if name not in fields]
        elif typing.get_origin(annotation) in (Union, Annotated):
            pending += typing.get_args(annotation)
    return fields


def _located(loc, message, source):
    where = source.locate(loc)
    dotted = ".".join(str(p) for p in loc) or "(recipe)"
    return f"{where + ': ' if where else ''}{dotted}: {message}"


def _describe(error, source):
    """One or more "file:line: key.path: message" lines for a pydantic error."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
        return [_located(loc, f"unknown key{hint}", source)]
    if error["type"] == "missing":
        return [_located(loc, "required key is missing", source)]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":
        # Cross-field validators name their keys: "key.path: message", one per line.
        lines = []
        for line in message.splitlines():
            named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", line)
            key = tuple(named.group(1).split(".")) if named else ()
            lines.append(_located(loc + key, named.group(2) if named else line, source))
        return lines
    shown = error.get("input")
    received = "" if isinstance(shown, (dict, list)) else f" (got {shown!r})"
    if error["type"] in _BOUND_TYPES:
        allowed = _allowed_range(loc)
        received += f"; allowed: {allowed}" if allowed else ""
    return [_located(loc, f"{message}{received}", source)]


def _annotations_at(loc):
    """The annotations the schema allows at a key path: through sections, list items,
    Optional, Union and Annotated (whose metadata carries the bounds)."""
    found = [Recipe]
    for part in loc:
        candidates, pending = [], list(found)
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                field = annotation.model_fields.get(part) if isinstance(part, str) else None
                if field is not None:
                    candidates.append(
                        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
                    )
            elif typing.get_origin(annotation) is list:
                if isinstance(part, int):
                    candidates += typing.get_args(annotation)
            elif typing.get_origin(annotation) in (Union, Annotated) or typing.get_args(annotation):
                pending += [a for a in typing.get_args(annotation) if a is not type(None)]
        found = candidates
    return found


_BOUND_TYPES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _allowed_range(loc):
    """ "1 <= x <= 65536"-style text for a bounded field, from the schema itself."""
    bounds, pending = {}, _annotations_at(loc)
    while pending:  # Optional[Annotated[int, Field(ge=..)]], unions of both
        annotation = pending.pop()
        if typing.get_origin(annotation) is list:
            continue  # the bounds of a list's items are not the list's
        for item in getattr(annotation, "__metadata__", ()):
            for constraint in getattr(item, "metadata", [item]):
                for name in ("ge", "gt", "le", "lt"):
                    if getattr(constraint, name, None) is not None:
                        bounds.setdefault(name, getattr(constraint, name))
        if typing.get_origin(annotation) in (Union, Annotated):
            pending += [a for a in typing.get_args(annotation) if a is not type(None)]
    low = f"{bounds['ge']} <= " if "ge" in bounds else f"{bounds['gt']} < " if "gt" in bounds else ""
    high = f" <= {bounds['le']}" if "le" in bounds else f" < {bounds['lt']}" if "lt" in bounds else ""
    return f"{low}{loc[-1] if isinstance(loc[-1], str) else 'value'}{high}" if bounds else None


def validate(data, source=None, origin="<recipe>"):
    """Validates a recipe dict, raising one `RecipeError` that lists every problem."""
    source = source or _Source()
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        # Pydantic puts union branch tags in locations ("dense", "literal['auto']", "constrained-int"):
        # they are not keys, and the branches' errors about one key become one problem.
        grouped = {}
        for error in e.errors():
            loc = tuple(
                part
                for i, part in enumerate(error["loc"])
                if not _is_branch_tag(part)
                # The last part of an unknown key's location is the user's key, whatever it looks like.
                or (error["type"] == "extra_forbidden" and i == len(error["loc"]) - 1)
            )
            grouped.setdefault(loc, []).append({**error, "loc": loc})
        problems = []
        for errors in grouped.values():
            for line in _describe(_either(errors), source):
                if line not in problems:
                    problems.append(line)
        raise RecipeError(problems, source=origin) from None


def _is_branch_tag(part):
    return isinstance(part, str) and (
        part in ("dense", "conv", "int", "float", "str", "bool") or not re.fullmatch(r"[a-z_][a-z0-9_]*", part)
    )


def _either(errors):
    """One error for the union branches' errors about one key: "should be 'auto', or greater than ..."."""
    if len(errors) == 1:
        return errors[0]
    message = errors[0]["msg"] + "".join(", or " + e["msg"].removeprefix("Input should be ") for e in errors[1:])
    bounded = [e for e in errors if e["type"] in _BOUND_TYPES]
    return {**(bounded[0] if bounded else errors[-1]), "msg": message}


def load(path, overrides=()):
    """Reads, merges, overrides and validates a recipe file.

    Args:
        path: the YAML file.
        overrides: strings `a.b=value`, applied in order after the `base:` chain.

    Returns:
        A fully defaulted `Recipe`.

    Raises:
        RecipeError: listing every problem, each with key path and file:line.
    """
    source = _Source()
    data = _read_chain(str(path), source, [])
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, text, source)
    return validate(data, source, origin=str(path))


def dump(recipe, path):
    """Writes the resolved recipe as YAML."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(recipe.to_dict(), f, sort_keys=False)
