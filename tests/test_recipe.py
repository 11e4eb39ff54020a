"""Recipe parsing, `base:` chains, `--set` overrides and every error path."""

import glob
import os

import pytest
from conftest import RECIPES, run_python

from kerasae import families
from kerasae.errors import RecipeError
from kerasae.families import FAMILIES
from kerasae.spec import recipe

# The recipe schema: no backend computes here.
pytestmark = pytest.mark.once


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(RECIPES, "*.yaml"))))
def test_shipped_recipes_validate(path):
    r = recipe.load(path)
    assert r.name and r.model.family in FAMILIES


def test_the_family_table_and_the_schema_agree():
    import kerasae.models

    assert recipe.FAMILIES == tuple(FAMILIES)
    for name, family in FAMILIES.items():  # each entry names a model class that exists
        assert family.class_name in kerasae.models.__all__ and issubclass(
            family.model_class, kerasae.models.Autoencoder
        )
        assert family.model_class.variational == family.variational, name
        assert family.model_class.generative == family.generative, name
        assert family.model_class.conditional == family.conditional, name


def test_a_model_class_takes_its_capabilities_from_its_table_entry(monkeypatch):
    """The table is the one place that says what a family can do: a class an entry names gets the
    entry's capabilities when it is defined, one no entry names keeps its parent's, and two entries
    that disagree about one class are refused."""
    import dataclasses

    import kerasae.models

    entry = dataclasses.replace(FAMILIES["ae"], name="toy_conditional", class_name="ToyConditional", conditional=True)
    monkeypatch.setitem(families.FAMILIES, "toy_conditional", entry)

    class ToyConditional(kerasae.models.Autoencoder):
        pass

    class Unnamed(kerasae.models.VAE):
        pass

    assert (ToyConditional.generative, ToyConditional.variational, ToyConditional.conditional) == (False, False, True)
    assert (Unnamed.generative, Unnamed.variational, Unnamed.conditional) == (True, True, False)
    monkeypatch.setitem(families.FAMILIES, "toy_generative", dataclasses.replace(entry, generative=True))
    with pytest.raises(ValueError, match="ToyConditional more than one set of capabilities"):
        families.capabilities("ToyConditional")


def test_seed_recipes_match_the_seed():
    ae = recipe.load(os.path.join(RECIPES, "ae.yaml"))
    assert (ae.model.encoder, ae.model.latent_dim, ae.model.latent_activation) == ([], 64, "sigmoid")
    assert (ae.loss.type, ae.data.binarize, ae.train.epochs) == ("bce", "threshold", 200)
    assert ae.outputs.epochs == [1, 100, 200]
    dae = recipe.load(os.path.join(RECIPES, "dae.yaml"))
    assert dae.model.family == "dae" and dae.model.latent_dim == 64  # inherited through base:
    assert (dae.corruption.type, dae.corruption.p) == ("masking", 0.2)
    vae = recipe.load(os.path.join(RECIPES, "vae.yaml"))
    assert (vae.model.encoder, vae.model.latent_dim, vae.loss.likelihood) == ([400], 20, "bernoulli")


def test_defaults_are_filled_and_dumped(tmp_path, write_recipe):
    path = write_recipe("name: x\nmodel: {family: vae}\n")
    r = recipe.load(path)
    assert r.loss.likelihood == "bernoulli" and r.loss.type is None
    out = tmp_path / "resolved.yaml"
    recipe.dump(r, out)
    assert recipe.load(str(out)) == r


def test_cross_field_problems_are_all_reported(write_recipe):
    path = write_recipe("name: x\nmodel:\n  family: ae\nloss:\n  beta: 2\n  likelihood: gaussian\n")
    with pytest.raises(RecipeError) as info:
        recipe.load(path)
    assert info.value.problems == [
        f"{path}:6: loss.likelihood: applies to variational families; family 'ae' uses loss.type",
        f"{path}:5: loss.beta: applies to family vae or hvae or cvae, not 'ae'",
    ]


def test_dae_defaults_to_twenty_percent_masking(write_recipe):
    r = recipe.load(write_recipe("name: x\nmodel: {family: dae}\n"))
    assert (r.corruption.type, r.corruption.p) == ("masking", 0.2)


def test_every_problem_is_reported_with_key_path_and_line(write_recipe):
    path = write_recipe(
        """\
        name: x
        model:
          family: ae
          latnt_dim: 5
          encoder: [0, 3]
        train:
          epochs: 1000000000000
          batch_sise: 3
        """
    )
    with pytest.raises(RecipeError) as info:
        recipe.load(path)
    problems = info.value.problems
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert f"{path}:4: model.latnt_dim: unknown key; did you mean 'latent_dim'?" in text
    assert f"{path}:5: model.encoder.0:" in text
    assert f"{path}:7: train.epochs: Input should be less than or equal to 100000" in text
    assert "(got 1000000000000); allowed: 1 <= epochs <= 100000" in text  # absurd sizes name the range
    assert f"{path}:8: train.batch_sise: unknown key; did you mean 'batch_size'?" in text


def test_unknown_section_suggests_the_right_one(write_recipe):
    with pytest.raises(RecipeError, match=r":2: modle: unknown key; did you mean 'model'\?"):
        recipe.load(write_recipe("name: x\nmodle: {family: ae}\nmodel: {family: ae}\n"))


def test_missing_required_keys(write_recipe):
    with pytest.raises(RecipeError) as info:
        recipe.load(write_recipe("model: {encoder: [3]}\n"))
    text = str(info.value)
    assert "name: required key is missing" in text
    assert "model.family: required key is missing" in text


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: x\nmodel: {family: ae, latent_dim: 1000000000}\n",
            "model.latent_dim: Input should be less than or equal to 65536",
        ),
        (
            "name: x\nmodel: {family: ae, latent_dim: 0}\n",
            "model.latent_dim: Input should be greater than or equal to 1",
        ),
        ("name: x\nmodel: {family: ae, latent_dim: many}\n", "model.latent_dim: Input should be a valid integer"),
        (
            "name: x\nmodel: {family: ae}\ntrain: {learning_rate: -1}\n",
            "train.learning_rate: Input should be greater than 0",
        ),
        (
            "name: x\nmodel: {family: ae}\ntrain: {epochs: 0}\n",
            "train.epochs: Input should be greater than or equal to 1",
        ),
        ("name: x\nmodel: {family: gan}\n", "model.family: Input should be 'ae', 'dae', 'sparse_ae'"),
        (
            "name: x\nmodel: {family: ae}\nloss: {beta: 2, importance_samples: 3}\n",
            "loss.beta: applies to family vae or hvae or cvae, not 'ae'",
        ),
        (
            "name: x\nmodel: {family: vae}\nloss: {contractive_weight: 1}\n",
            "loss.contractive_weight: applies to family contractive_ae",
        ),
        (
            "name: x\nmodel: {family: sparse_ae}\n",
            "model.latent_activation: the kl sparsity penalty needs 'sigmoid' codes",
        ),
        (
            "name: x\nmodel: {family: vqvae, encoder: [{filters: 4, strides: 2}, {filters: 4, strides: 2}], "
            "decoder: [{filters: 4, strides: 2}]}\n",
            "model.decoder: a conv VQ-VAE's decoder starts from the code grid",
        ),
        (
            "name: x\nmodel: {family: ae}\ncorruption: {type: gaussian, p: 0.1}\n",
            "corruption.p: does not apply to gaussian corruption",
        ),
        (
            "name: x\nmodel: {family: ae}\nloss: {likelihood: gaussian}\n",
            "loss.likelihood: applies to variational families",
        ),
        ("name: x\nmodel: {family: vae}\nloss: {type: mse}\n", "loss.type: does not apply to family 'vae'"),
        ("name: x\nmodel: {family: ae}\ndata: {dataset: npz}\n", "data.path: dataset 'npz' needs the path"),
        ("name: ../evil\nmodel: {family: ae}\n", "name: String should match pattern"),
        ("name: x\nmodel: {family: ae, encoder: [{filters: 8}], decoder: [8]}\n", "model.decoder: must be dense sizes"),
        (
            "name: x\nmodel: {family: ae}\ntrain: {final_learning_rate: 0.0001}\n",
            "train.final_learning_rate: applies to learning_rate_schedule 'cosine'",
        ),
        (
            "name: x\nmodel: {family: ae}\ntrain: {learning_rate_schedule: cosine, final_learning_rate: 0.1}\n",
            "train.final_learning_rate: 0.1 exceeds learning_rate 0.001",
        ),
        (
            "name: x\nmodel: {family: ae}\ntrain: {learning_rate_schedule: step}\n",
            "train.learning_rate_schedule: Input should be 'constant' or 'cosine'",
        ),
        (
            "name: x\nmodel: {family: ae}\ntrain: {jit_compile: sometimes}\n",
            "train.jit_compile: Input should be a valid boolean",
        ),
    ],
)
def test_bad_values_name_the_key(write_recipe, text, expected):
    with pytest.raises(RecipeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        recipe.load(write_recipe(text))


def test_malformed_yaml_names_file_and_line(write_recipe):
    path = write_recipe("name: x\nmodel:\n  family: [ae\n")
    with pytest.raises(RecipeError, match=rf"{path}:\d+: invalid YAML"):
        recipe.load(path)


def test_python_tags_are_refused(write_recipe, tmp_path):
    marker = tmp_path / "pwned"
    path = write_recipe(f"name: !!python/object/apply:os.system ['touch {marker}']\nmodel: {{family: ae}}\n")
    with pytest.raises(RecipeError, match="YAML tags that build Python objects are not allowed"):
        recipe.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_a_recipe_must_be_a_mapping(write_recipe, text):
    with pytest.raises(RecipeError):
        recipe.load(write_recipe(text))


def test_missing_file():
    with pytest.raises(RecipeError, match="recipe file not found: nowhere.yaml"):
        recipe.load("nowhere.yaml")


def test_base_chain_merges_and_child_wins(write_recipe):
    write_recipe("name: parent\nmodel: {family: ae, latent_dim: 7, encoder: [5]}\ntrain: {epochs: 3}\n", "parent.yaml")
    child = write_recipe("base: parent.yaml\nname: child\nmodel: {latent_dim: 9}\n", "child.yaml")
    r = recipe.load(child)
    assert (r.name, r.model.latent_dim, r.model.encoder, r.train.epochs) == ("child", 9, [5], 3)


def test_base_errors_point_into_the_right_file(write_recipe):
    parent = write_recipe("name: parent\nmodel:\n  family: ae\n  latent_dimm: 7\n", "parent.yaml")
    child = write_recipe("base: parent.yaml\nname: child\n", "child.yaml")
    with pytest.raises(RecipeError, match=rf"{parent}:4: model.latent_dimm: unknown key"):
        recipe.load(child)


def test_base_loop_is_refused(write_recipe):
    write_recipe("base: b.yaml\nname: a\n", "a.yaml")
    b = write_recipe("base: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(RecipeError, match="base: loop in recipe chain"):
        recipe.load(b)


def test_base_pointing_nowhere(write_recipe):
    path = write_recipe("base: missing.yaml\nname: a\nmodel: {family: ae}\n")
    with pytest.raises(RecipeError, match=rf"{path}:1: base: file not found"):
        recipe.load(path)


def test_overrides_are_typed_and_revalidated(write_recipe):
    path = write_recipe("name: x\nmodel: {family: ae}\n")
    r = recipe.load(path, ["train.epochs=5", "model.encoder=[16, 8]", "corruption.type=masking", "data.limit=100"])
    assert (r.train.epochs, r.model.encoder, r.corruption.p, r.data.limit) == (5, [16, 8], 0.2, 100)
    with pytest.raises(RecipeError, match=r"--set train.epochs=-3: train.epochs: Input should be greater"):
        recipe.load(path, ["train.epochs=-3"])


def test_override_that_names_no_key(write_recipe):
    path = write_recipe("name: x\nmodel: {family: ae}\n")
    with pytest.raises(RecipeError, match=r"--set train.epohcs=5: train.epohcs: unknown key; did you mean 'epochs'\?"):
        recipe.load(path, ["train.epohcs=5"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        recipe.load(path, ["train.epochs"])
    with pytest.raises(RecipeError, match="'name' is not a section"):
        recipe.load(path, ["name.first=3"])


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model.encoder=[{filters: 8, strides: 99}]",
            "model.encoder.0.strides: Input should be less than or equal to 8 (got 99); allowed: 1 <= strides <= 8",
        ),
        (
            "model.encoder=[0]",
            "model.encoder.0: Input should be greater than or equal to 1 (got 0); allowed: 1 <= value <= 65536",
        ),
        (
            "distribute.devices=0",
            "distribute.devices: Input should be 'auto', or greater than or equal to 1 (got 0); "
            "allowed: 1 <= devices <= 65536",
        ),
        ("model.encoder=[{filterz: 3, filters: 2}]", "model.encoder.0.filterz: unknown key; did you mean 'filters'?"),
    ],
)
def test_errors_agree_with_themselves_inside_lists_and_unions(override, expected):
    """The allowed range is that of the key the message names (a conv layer's strides, not a dense size), and a
    union's branches make one problem, without pydantic's branch tags in the key path."""
    with pytest.raises(RecipeError) as info:
        recipe.load(os.path.join(RECIPES, "vae.yaml"), [override])
    assert info.value.problems == [f"--set {override}: {expected}"]


def test_the_loss_section_is_made_of_the_family_tables_typed_keys():
    """Each family's loss keys carry their types and bounds in the family table; the recipe's loss
    section is built from them, and a key that several families share has one type."""
    for family in FAMILIES.values():
        for key, spec in family.loss.items():
            assert families.LOSS_TYPES[key] == (spec.type, spec.description), (family.name, key)
    assert list(recipe.LossSection.model_fields) == list(families.LOSS_TYPES)
    with pytest.raises(RecipeError, match=r"loss.sparsity_target: .*less than 1"):
        recipe.validate(
            {
                "name": "sparse",
                "model": {"family": "sparse_ae", "encoder": [32], "latent_dim": 8},
                "data": {"dataset": "digits"},
                "loss": {"sparsity_target": 1.5},
            }
        )


TOY_FAMILY = """
    import dataclasses, json
    from typing import Annotated
    from pydantic import Field
    from kerasae import families
    # A new family: one table entry (its model class would be one file in kerasae/models/).
    capacity = families.Key("capacity", 25.0, Annotated[float, Field(ge=0.0, le=100.0)])
    vae = families.FAMILIES["vae"]
    toy = dataclasses.replace(vae, name="capacity_vae", loss={**vae.loss, "capacity": capacity})
    table = [*families.FAMILIES.values(), toy]
    families.FAMILIES = {f.name: f for f in table}
    families.LOSS_KEYS = {k: tuple(f.name for f in table if k in f.loss) for f in table for k in f.loss}
    families.LOSS_TYPES = {k: (v.type, v.description) for f in table for k, v in f.loss.items()}
    from kerasae.spec import recipe
    from kerasae.errors import RecipeError
    model = {"family": "capacity_vae", "encoder": [32], "latent_dim": 8}
    base = {"name": "toy", "model": model, "data": {"dataset": "digits"}}
    out = {"default": recipe.validate(base).loss.capacity}
    out["given"] = recipe.validate({**base, "loss": {"capacity": 50}}).loss.capacity
    bad = {"bound": {**base, "loss": {"capacity": -1}}}
    bad["other family"] = {**base, "model": {**model, "family": "vae"}, "loss": {"capacity": 5}}
    for name, data in bad.items():
        try:
            recipe.validate(data)
        except RecipeError as e:
            out[name] = str(e)
    # ... and its model class, the one model file (here defined inline, exported as kerasae.models exports).
    import keras
    import numpy as np
    from keras import ops
    import kerasae.models
    from kerasae.spec import builder

    class CapacityVAE(kerasae.models.VAE):
        def __init__(self, capacity=25.0, **kwargs):
            super().__init__(**kwargs)
            self.capacity = capacity

        def get_config(self):
            return {**super().get_config(), "capacity": self.capacity}

        def compute_losses(self, x, y=None, training=False):
            losses = super().compute_losses(x, y, training)
            kl_term = ops.cast(self.kl_weight, "float32") * ops.abs(losses["kl_loss"] - self.capacity)
            return {**losses, "loss": losses["reconstruction_loss"] + kl_term}

    kerasae.models.CapacityVAE = CapacityVAE
    families.FAMILIES["capacity_vae"] = dataclasses.replace(toy, class_name="CapacityVAE")
    r = recipe.validate({**base, "loss": {"capacity": 3, "beta": 2.0}})
    model = builder.build(r, (8, 8, 1))
    model.compile(optimizer=builder.optimizer(r.train))
    x = (np.random.default_rng(0).random((256, 8, 8, 1)) > 0.5).astype("float32")
    out["losses"] = model.fit(x, epochs=4, batch_size=64, verbose=0).history["loss"]
    out["model"] = [type(model).__name__, model.capacity]
    print(json.dumps(out))
"""


def test_a_new_family_is_one_model_class_and_one_table_entry():
    """A toy family, one table entry and one model class: its loss key is validated with its bounds,
    defaulted, and refused, with the family named, on another family; the builder makes its model,
    which trains."""
    import json

    out = json.loads(run_python(TOY_FAMILY).strip().splitlines()[-1])
    assert out["default"] == 25.0 and out["given"] == 50.0
    assert "loss.capacity" in out["bound"] and "greater than or equal to 0" in out["bound"]
    assert "loss.capacity: applies to family capacity_vae, not 'vae'" in out["other family"]
    # The builder makes the family's class with its key, and it trains.
    assert out["model"] == ["CapacityVAE", 3.0]
    assert out["losses"][-1] < out["losses"][0]
