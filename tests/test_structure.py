"""The code's shape, checked: short functions, one place that names families, no probing of models,
and a README module table that matches the package."""

import ast
import os
import re

import pytest

from kerasae import families

# The code's text, read as text.
pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "kerasae")
MAX_FUNCTION_LINES = 60


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read())


MODULES = dict(_modules())


def _docstrings(tree):
    """The string constants that are docstrings (of the module, classes and functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


@pytest.mark.parametrize("path", sorted(MODULES))
def test_no_function_is_longer_than_a_screen(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(MODULES[path])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path}: over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_only_the_family_table_names_a_family():
    names = set(families.FAMILIES)
    found = []
    for path, tree in MODULES.items():
        if path == os.path.join("kerasae", "families.py"):
            continue
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                words = set(re.findall(r"[a-z_]+", node.value))
                if node.value in names or (words & names and re.search(r"\b(family|entry)\b", node.value)):
                    found.append(f"{path}:{node.lineno}: {node.value!r}")
    assert not found, "family names outside kerasae/families.py:\n" + "\n".join(found)


def test_no_caller_probes_a_model_with_hasattr():
    found = []
    for path, tree in MODULES.items():
        for node in ast.walk(tree):
            name = getattr(node.func, "id", None) if isinstance(node, ast.Call) else None
            if name == "hasattr" or (name == "getattr" and len(node.args) == 3):  # a probe, with a default
                if "model" in ast.unparse(node.args[0]):
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "ask the model (a method or attribute of the base class) instead:\n" + "\n".join(found)


def test_the_readme_module_table_lists_every_module():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## How it is built", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([a-z_/]+(?:\.py|/))`", row)}
    present = {os.path.relpath(path, ROOT).replace(os.sep, "/") for path in MODULES if not _only_a_docstring(path)}
    present = {p.removeprefix("kerasae/") for p in present}
    present = {p for p in present if p != "__init__.py" and not p.startswith("models/")} | {"models/"}
    assert not present - listed, f"modules missing from the README's table: {sorted(present - listed)}"
    assert not listed - present, f"the README's table names modules that do not exist: {sorted(listed - present)}"


def _only_a_docstring(path):
    body = MODULES[path].body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


# The package's layers, bottom up (the README's "How it is built"): a module imports only from its own
# layer and the layers below it.
LAYERS = (
    ("errors", "quiet", "defaults", "families"),
    ("backend",),
    ("layers", "networks", "losses", "likelihood", "anomaly"),
    ("models",),
    ("spec",),
    ("data",),
    ("store",),
    ("assess",),
    ("run",),
    ("serve",),
    ("cli",),
)


def _layer(module):
    """The layer of "kerasae.<name>[.<module>]": its index in LAYERS."""
    name = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if name in names)


def _imported(node):
    """The kerasae modules an import statement names ("kerasae" itself left out)."""
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kerasae":
        if node.module == "kerasae":
            return [f"kerasae.{alias.name}" for alias in node.names]
        return [node.module]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("kerasae.")]
    return []


def test_no_module_imports_from_a_layer_above_its_own():
    """Every import, at a module's top or inside a function; `import kerasae` (which registers the
    classes with Keras) may come from anywhere."""
    upward = []
    for path, tree in MODULES.items():
        module = path[:-3].replace(os.sep, ".").removesuffix(".__init__")
        if module == "kerasae":
            continue
        for node in ast.walk(tree):
            for target in _imported(node):
                if _layer(target) > _layer(module):
                    upward.append(f"{path}:{node.lineno}: {target} ({LAYERS[_layer(target)][0]} is above)")
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)
    modules = {path[:-3].replace(os.sep, ".").removesuffix(".__init__") for path in MODULES} - {"kerasae"}
    assert {_layer(module) for module in modules} == set(range(len(LAYERS))), "a layer with no module"
