"""Broken input never crashes: a corpus of broken recipes and data files, and property-based recipes."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, small_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasae import data
from kerasae.errors import DataError, RecipeError
from kerasae.spec import recipe
from kerasae.spec.recipe import DataSection

# Recipes and data files are read and checked before any backend computes.
pytestmark = pytest.mark.once

BROKEN = os.path.join(os.path.dirname(__file__), "broken")


def _expected(path):
    first = open(path, encoding="utf-8").readline()
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <message>'"
    return first[len("# expect: ") :].strip()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(BROKEN, "*.yaml"))), ids=os.path.basename)
def test_broken_recipe_corpus(path):
    with pytest.raises(RecipeError) as info:
        recipe.load(path)
    assert _expected(path) in str(info.value)


def test_broken_recipe_through_the_cli_is_one_clean_line():
    path = os.path.join(BROKEN, "misspelled-key.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "kerasae.cli", "train", path], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {path}:3: model.famly: unknown key; did you mean 'family'?"


BROKEN_DATA = {
    "empty-file": (lambda p: p.write_bytes(b""), "not a readable .npz file"),
    "pickled-objects": (lambda p: np.savez(p, x_train=np.array([{"a": 1}] * 4, dtype=object)), "not a readable"),
    "inf-values": (lambda p: np.savez(p, x_train=np.full((4, 5, 5), np.inf)), "contains NaN or inf"),
    "one-image-axis": (lambda p: np.savez(p, x_train=np.zeros((4, 25))), "must have shape"),
    "bool-images": (lambda p: np.savez(p, x_train=np.zeros((4, 5, 5), bool)), "must be numeric"),
    "no-arrays": (lambda p: np.savez(p), "array 'x_train' not found"),
    "float-labels": (lambda p: np.savez(p, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4)), "labels 'y_train'"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_DATA))
def test_broken_data_corpus(tmp_path, name):
    write, message = BROKEN_DATA[name]
    path = tmp_path / f"{name}.npz"
    write(path)
    with pytest.raises(DataError, match=message):
        data.load(DataSection(dataset="npz", path=str(path)))


# -- property-based: thousands of recipes, valid and broken ------------------------------------

KEYS = [
    "name",
    "model",
    "family",
    "encoder",
    "latent_dim",
    "activation",
    "loss",
    "type",
    "beta",
    "likelihood",
    "corruption",
    "p",
    "sigma",
    "data",
    "limit",
    "binarize",
    "train",
    "epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "outputs",
    "figures",
    "epochs",
    "base",
    "lattent_dim",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**13), 10**13),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "ae",
            "dae",
            "vae",
            "iwae",
            "cvae",
            "sparse_ae",
            "masking",
            "bce",
            "bernoulli",
            "gaussian",
            "relu",
            "sigmoid",
            "mnist",
            "npz",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
VALID = small_recipe("vae", "/nonexistent.npz")


def _mutate(base, path, value):
    data = yaml.safe_load(yaml.safe_dump(base))  # deep copy
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), values)
def test_any_recipe_validates_or_raises_a_recipe_error(path, value):
    try:
        r = recipe.validate(_mutate(VALID, path, value))
    except RecipeError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    else:
        assert recipe.validate(r.to_dict()) == r  # a valid recipe survives its own round trip


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_yaml_text_loads_or_raises_a_recipe_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        recipe.load(str(path))
    except RecipeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=3))
def test_any_override_is_applied_or_refused_cleanly(overrides):
    path = os.path.join(ROOT, "recipes", "vae.yaml")
    try:
        recipe.load(path, overrides)
    except RecipeError:
        pass


HOSTILE = {
    "self-reference": "name: x\nmodel: &m {family: ae, encoder: *m}\n",
    "alias bomb": "name: x\nmodel: {family: ae}\na: &a ["
    + ",".join(["x"] * 10)
    + "]\n"
    + "".join(f"b{i}: &b{i} [" + ",".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 10) + "]\n" for i in range(12)),
    "deep nesting": "name: x\nmodel: {family: ae, encoder: " + "[" * 50_000 + "]" * 50_000 + "}\n",
    "huge file": "name: x\nmodel: {family: ae}\n" + "# padding\n" * 20_000,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_yaml_is_refused_at_load_by_the_cli(tmp_path, kind):
    """Each would take minutes, a recursion error or gigabytes if expanded; the guard refuses it from
    the event stream (the 60 s subprocess limit is a hang detector, not a speed target)."""
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE[kind])
    result = subprocess.run(
        [sys.executable, "-m", "kerasae.cli", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and "internal error" not in lines[0]


@pytest.mark.parametrize("value", ["&a [*a]", "[" * 100 + "]" * 100, "&x 1"])
def test_hostile_set_values_are_refused_or_taken_literally(value):
    path = os.path.join(ROOT, "recipes", "vae.yaml")
    if "*" in value or "[" in value:
        with pytest.raises(RecipeError, match=r"^--set model.encoder=.*: YAML (aliases|nested deeper)"):
            recipe.load(path, [f"model.encoder={value}"])
    else:  # an anchor without an alias is harmless YAML: the value is validated as usual
        with pytest.raises(RecipeError, match="model.encoder"):
            recipe.load(path, [f"model.encoder={value}"])
