"""Every recipe the schema accepts trains to an entry; every one it cannot honour is refused at validation.

Hypothesis draws recipes across the whole schema: family, dense or conv layers, activations,
corruption, likelihood or loss type, binarization, family loss keys, optimizer, schedule,
latent and image sizes (and channels), validation split, checkpoints, figures, NLL samples.
Each recipe is either refused by `recipe.validate` with one located line per problem, or it
goes through build, a few training steps on tiny data, evaluation, figures, the entry, and a
reload that gives the outputs the entry stored.

A draw is either kept within the schema's rules (it must validate and train: a refusal fails the
test) or drawn wild, breaking them on purpose (it must be refused, or train if it happened to keep
to them). CI runs a fixed, bounded set on every backend: two draws per family from a seed of the
backend's name (the same on every run, different across the suites). Hypothesis tries the simplest
draw first, a wild one (refused: cheap); each family must train at least one recipe per suite, which
the test asserts. `python3 tasks.py test --slow` (KERASAE_SWEEP_EXAMPLES=30) runs a longer sweep, 30
per family (and draws torch.compile on PyTorch and JAX without jit, ~30 s a model, left out of the
short one).
"""

import json
import math
import os
import re
import typing
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, seed, settings
from hypothesis import strategies as st

from kerasae import backend, families
from kerasae.assess import metric_table
from kerasae.errors import RecipeError
from kerasae.run import train
from kerasae.spec import recipe
from kerasae.store import zoo

# Examples per family: 2 in CI (the simplest, refused, and one that trains), more for a longer sweep.
EXAMPLES = int(os.environ.get("KERASAE_SWEEP_EXAMPLES", "2"))
LONG = EXAMPLES > 2


def _choices(section, key):
    """The values a Literal field allows, read from the schema itself."""
    annotation = section.model_fields[key].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) if a is not type(None) for v in typing.get_args(a)]


ACTIVATIONS = list(typing.get_args(recipe.Activation))
OPTIMIZERS = _choices(recipe.TrainSection, "optimizer")
CORRUPTIONS = _choices(recipe.CorruptionSection, "type")
BINARIZE = _choices(recipe.DataSection, "binarize")
SCALES = _choices(recipe.LossSection, "scale")


@st.composite
def recipes(draw, family):
    # One recipe in six may break the schema's cross-field rules (another family's loss keys, figures
    # that do not apply): those must be refused. The others keep to the rules and must train.
    wild = draw(st.integers(0, 5)) == 0  # the simplest draw (Hypothesis's first) is wild
    variational = families.get(family).variational
    conv = draw(st.booleans()) and not families.get(family).model  # a hierarchy's layers are dense
    if conv:
        layer = st.fixed_dictionaries(
            {"filters": st.integers(1, 6), "kernel_size": st.integers(1, 5), "strides": st.integers(1, 3)}
        )
    else:
        layer = st.integers(1, 24)
    model = {
        "family": family,
        "encoder": draw(st.lists(layer, min_size=int(conv), max_size=2)),
        "latent_dim": draw(st.integers(1, 6)),
        "activation": draw(st.sampled_from(ACTIVATIONS)),
        "output_activation": draw(st.sampled_from(["sigmoid", "sigmoid", "linear", "relu", "tanh"])),
    }
    if draw(st.booleans()):
        model["decoder"] = draw(st.lists(layer, min_size=int(conv), max_size=2))
    if family == "vqvae" and conv and not wild and _stride(model.get("decoder", [])) != _stride(model["encoder"]):
        model.pop("decoder", None)  # its decoder starts from the encoder's code grid: the same stride, or mirrored
    if not variational and draw(st.booleans()):
        model["latent_activation"] = draw(st.sampled_from(ACTIVATIONS))
    hierarchy = families.get(family).model
    if hierarchy:
        model.update(_hierarchy(draw))
        if not wild:  # its stochastic layers replace these (a wild recipe keeps them: refused)
            for key in ("encoder", "latent_dim", "decoder"):
                model.pop(key, None)
    elif wild and draw(st.integers(0, 3)) == 0:  # another family's model key: refused
        model.update(draw(st.sampled_from([{"prior": "vamp"}, {"posterior_flow": 1}, {"inference": "ladder"}])))
    loss = {}
    if variational:
        loss["likelihood"] = draw(st.sampled_from([None, "bernoulli", "gaussian"]))
    else:
        loss["type"] = draw(st.sampled_from([None, "bce", "mse"]))
    for key, takers in families.LOSS_KEYS.items():
        if key in ("type", "likelihood", *LATER_KEYS):
            continue  # drawn above, or last
        if family in takers and draw(st.booleans()) or wild and draw(st.integers(0, 3)) == 0:
            loss[key] = draw(
                {
                    "beta": st.floats(0.0, 4.0),
                    "kl_warmup_epochs": st.integers(0, 3),
                    "importance_samples": st.integers(1, 4),
                    "sparsity_penalty": st.sampled_from(["kl", "l1"]),
                    "sparsity_weight": st.floats(0.0, 1.0),
                    "sparsity_target": st.floats(0.01, 0.5),
                    "contractive_weight": st.floats(0.0, 1.0),
                    "mmd_weight": st.floats(0.0, 30.0),
                    "code_weight": st.floats(0.0, 1.0),
                    "decoder_weight": st.floats(0.0, 1e-2),
                    "mi_weight": st.floats(0.0, 2.0),
                    "tc_weight": st.floats(0.0, 10.0),
                    "dimension_kl_weight": st.floats(0.0, 2.0),
                    "codebook_size": st.integers(2, 64),
                    "commitment_weight": st.floats(0.0, 1.0),
                    "codebook_ema": st.booleans(),
                    "dead_code_restarts": st.booleans(),
                    "code_positions": st.integers(1, 8),
                }[key]
            )
    corruption = {"type": draw(st.sampled_from(CORRUPTIONS))}
    if corruption["type"] in ("masking", "salt_and_pepper") and draw(st.booleans()):
        corruption["p"] = draw(st.floats(0.0, 0.6))
    if corruption["type"] == "gaussian" and draw(st.booleans()):
        corruption["sigma"] = draw(st.floats(0.01, 0.5))
    schedule = draw(st.sampled_from(["constant", "cosine"]))
    train_section = {
        "epochs": draw(st.integers(1, 2)),
        "batch_size": draw(st.integers(1, 24)),
        "optimizer": draw(st.sampled_from(OPTIMIZERS)),
        "learning_rate": draw(st.sampled_from([1e-3, 3e-3])),
        "learning_rate_schedule": schedule,
        "seed": draw(st.integers(0, 5)),
        "steps_per_execution": draw(st.sampled_from([None, 1, 3])),
        "jit_compile": draw(st.sampled_from(JIT_CHOICES if LONG else SHORT_JIT_CHOICES[backend.NAME])),
        "checkpoint_every_steps": draw(st.sampled_from([None, None, 2])),
        "tensorboard": draw(st.integers(0, 9)) == 9,
    }
    if schedule == "cosine":
        train_section["final_learning_rate"] = draw(st.sampled_from([0.0, 1e-4]))
    outputs = {
        "n_examples": draw(st.integers(1, 6)),
        "epochs": [1],
        "nll_samples": draw(st.sampled_from([0, 3, 20])),
        "export_saved_model": draw(st.integers(0, 7)) == 7,
    }
    if family == "sparse_ae" and loss.get("sparsity_penalty", "kl") == "kl" and not wild:
        model["latent_activation"] = "sigmoid"  # the KL sparsity target is a mean activation in (0, 1)
    if draw(st.booleans()):
        applies = families.get(family).figures
        figures = list(families.ALL_FIGURES) if wild else [f for f in applies if f not in recipe.FIGURE_NEEDS]
        outputs["figures"] = draw(st.lists(st.sampled_from(figures), unique=True, max_size=4))
    data = {"binarize": draw(st.sampled_from(BINARIZE)), "validation_split": draw(st.sampled_from([0.0, 0.25]))}
    shape = (draw(st.integers(4, 14)), draw(st.integers(4, 14)), draw(st.sampled_from([1, 1, 3])))
    classes = draw(st.integers(1, 4))
    _draw_later_keys(draw, family, loss, wild)
    return wild, (
        {
            "name": "sweep",
            "model": model,
            "loss": loss,
            "corruption": corruption,
            "data": data,
            "train": train_section,
            "outputs": outputs,
        },
        shape,
        classes,
    )


JIT_CHOICES = [None, False, True]
# The short sweep leaves out what costs ~30 s a model: torch.compile, and JAX without jit (every op
# compiled on its own); test_models.py checks `jit_compile` on every backend.
SHORT_JIT_CHOICES = {"tensorflow": JIT_CHOICES, "jax": [None, True], "torch": [None, False]}


# Keys added after the sweep's examples were fixed: drawn after every other key, so that the
# seeded examples drawn before them stay the recipes they were.
LATER_KEYS = ("scale", "weight_penalty")


def _draw_later_keys(draw, family, loss, wild):
    """The decoder's scale (the logistic likelihood among them) and the sparse AE's weight penalty."""
    if families.get(family).variational and draw(st.booleans()):
        loss["likelihood"] = likelihood = draw(st.sampled_from([loss["likelihood"], "logistic"]))
        scales = {"gaussian": SCALES, "logistic": SCALES[1:]}.get(likelihood, SCALES[:1])
        loss["scale"] = draw(st.sampled_from(SCALES if wild else scales))  # a wild one may not fit: refused
    if family == "sparse_ae" and draw(st.booleans()) or wild and draw(st.integers(0, 3)) == 0:
        loss["weight_penalty"] = draw(st.floats(0.0, 1e-2))


def _stride(layers):
    return math.prod(layer["strides"] for layer in layers)


def _hierarchy(draw):
    """A hierarchical VAE's model keys: 1-3 stochastic layers, inference, prior, flow."""
    layer = st.fixed_dictionaries({"hidden": st.lists(st.integers(1, 16), max_size=2), "latent_dim": st.integers(1, 5)})
    keys = {"stochastic_layers": draw(st.lists(layer, min_size=1, max_size=3))}
    if draw(st.booleans()):
        keys["inference"] = draw(st.sampled_from(["bottom_up", "ladder"]))
    if draw(st.booleans()):
        keys["prior"] = draw(st.sampled_from(["standard", "vamp"]))
        keys["pseudo_inputs"] = draw(st.integers(1, 6))
    if draw(st.booleans()):
        keys["posterior_flow"] = draw(st.integers(0, 2))
    return keys


def _tiny_npz(folder, shape, classes, seed):
    """Smooth blobs (something to learn) of the drawn shape, labelled by which corner is brightest."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    n = 48
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    centres = rng.random((n, 2))
    images = np.exp(-((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2) * 8)
    images = np.repeat(images[..., None], c, axis=-1) * rng.uniform(0.5, 1.0, (n, 1, 1, c))
    labels = (np.floor(centres[:, 0] * 2) * 2 + np.floor(centres[:, 1] * 2)).astype(np.uint8) % classes
    path = os.path.join(folder, "tiny.npz")
    cut = 36
    np.savez(
        path,
        x_train=(images[:cut] * 255).astype(np.uint8),
        y_train=labels[:cut],
        x_test=(images[cut:] * 255).astype(np.uint8),
        y_test=labels[cut:],
    )
    return path


def _applies(name, r):
    needs = recipe.FIGURE_NEEDS.get(name)
    return name in families.get(r.model.family).figures and (needs is None or needs[1](r))


@pytest.mark.parametrize("family", recipe.FAMILIES)
def test_every_valid_recipe_trains_evaluates_writes_and_reloads(tmp_path_factory, family):
    # Seeded by backend and family: a failure reproduces on its backend, and families do not all
    # draw the same choices from one stream. No shrinking: each example trains a model, and a
    # failure's drawn recipe is printed whole.
    @seed(zlib.crc32(f"{backend.NAME} {family}".encode()))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(data=st.data())
    def sweep(data):
        trained.append(_trains_evaluates_writes_and_reloads(tmp_path_factory, family, data))

    trained = []
    sweep()
    assert any(trained), f"no {family} recipe of the {len(trained)} drawn on {backend.NAME} trained: draw more"


def _trains_evaluates_writes_and_reloads(tmp_path_factory, family, data):
    """True when the drawn recipe trained, False when validation refused it (as it must a wild one)."""
    wild, (spec, shape, classes) = data.draw(recipes(family))
    folder = str(tmp_path_factory.mktemp("sweep"))
    spec["data"].update(dataset="npz", path=_tiny_npz(folder, shape, classes, spec["train"]["seed"]))
    try:
        r = recipe.validate(spec)
    except RecipeError as e:
        assert wild, f"a recipe drawn within the rules was refused:\n{e}"
        # Refused: every problem on its own line, naming the key path it is about.
        for problem in e.problems:
            assert "\n" not in problem and re.match(r"^[a-z_]+(\.[\w]+)*: ", problem), problem
        event("refused at validation")
        return False
    conv = r.model.encoder and isinstance(r.model.encoder[0], recipe.ConvLayer)
    event(f"trained: {r.model.family}, {'conv' if conv else 'dense'}")
    zoo_dir = os.path.join(folder, "zoo")
    entry, metrics = train.run(r, zoo_dir, verbose=0)
    zoo.check_entry(entry)
    ev = metrics["evaluation"]
    assert metrics["epochs"] == r.train.epochs and np.isfinite(metrics["test"]["loss"])
    assert np.isfinite(ev["reconstruction"]["sse"]) and ev["pca"]["components"] >= 1
    assert ("denoising" in ev) == (r.corruption.type != "none")
    variational = families.get(r.model.family).variational
    assert ("elbo" in ev) == variational and ("nll" in ev) == (variational and r.outputs.nll_samples > 0)
    assert 0.0 <= ev.get("probe_accuracy", 0.0) <= 1.0
    assert set(ev) - {"units", "seconds"} <= set(metric_table.KEYS)
    for name in r.outputs.figures:  # validation let through only figures that apply
        assert _applies(name, r) and os.path.isfile(os.path.join(entry, zoo.FIGURES_DIR, f"{name}.png")), name
    assert os.path.isdir(os.path.join(entry, zoo.SAVED_MODEL_DIR)) == r.outputs.export_saved_model
    with open(os.path.join(entry, zoo.METRICS_FILE)) as f:
        assert json.load(f)["name"] == r.name
    model = zoo.load(entry)
    with np.load(os.path.join(entry, zoo.CHECK_FILE)) as check:
        labels = check["y"] if "y" in check.files else None
        np.testing.assert_allclose(model.reconstruct(check["x"], labels), check["reconstructions"], atol=1e-4)
    return True
