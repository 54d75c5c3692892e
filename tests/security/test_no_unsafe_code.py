"""No code in src/ can execute what a file holds: a walk over the syntax tree, not the text.

Fails on any import of pickle, joblib, dill or cloudpickle (and their C twins), a call of the
builtins ``eval`` / ``exec``, ``torch.load`` without ``weights_only=True``, NumPy's ``load`` with
``allow_pickle=True``, pandas' ``read_pickle``, and YAML's unsafe loaders. Being a syntax walk,
``model.eval()`` and a docstring that says "never pickle" pass.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

SOURCE = ROOT / "src"
BANNED_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
BANNED_BUILTINS = {"eval", "exec"}
# yaml.load with one of these loaders builds only plain data; any other loader can construct objects.
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def unsafe_code(source: str, filename: str = "<source>") -> list[str]:
    """Every construct in ``source`` that could execute a file's content, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases = _module_aliases(tree)
    problems = []
    for node in ast.walk(tree):
        for what in _node_problems(node, aliases):
            problems.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")
    return problems


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted module or function it was imported as (``t`` -> ``torch``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[name.asname or name.name.split(".")[0]] = name.name if name.asname else name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``torch.load`` for ``t.load`` after ``import torch as t``; None for anything not a dotted name."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _node_problems(node: ast.AST, aliases: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"imports {name.name}" for name in node.names if name.name.split(".")[0] in BANNED_MODULES]
    if isinstance(node, ast.ImportFrom):
        banned = (node.module or "").split(".")[0] in BANNED_MODULES
        return [f"imports from {node.module}"] if banned else []
    if not isinstance(node, ast.Call):
        return []
    keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg}
    if isinstance(node.func, ast.Name) and node.func.id in BANNED_BUILTINS and node.func.id not in aliases:
        return [f"calls the builtin {node.func.id}"]
    name = _dotted(node.func, aliases) or ""
    if name in ("builtins.eval", "builtins.exec"):
        return [f"calls {name}"]
    if name in ("importlib.import_module", "__import__") and node.args and _constant(node.args[0]) in BANNED_MODULES:
        return [f"imports {_constant(node.args[0])} through {name}"]
    if name in ("torch.load", "torch.serialization.load") and _constant(keywords.get("weights_only")) is not True:
        return [f"calls {name} without weights_only=True"]
    if name in ("numpy.load", "np.load") and _constant(keywords.get("allow_pickle")) is True:
        return [f"calls {name} with allow_pickle=True"]
    if name.endswith(".read_pickle") or name.endswith(".unsafe_load") or name in ("yaml.full_load", "yaml.full_load_all"):
        return [f"calls {name}"]
    if name in ("yaml.load", "yaml.load_all"):
        loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
        if (_dotted(loader, aliases) or "").split(".")[-1] not in SAFE_YAML_LOADERS:
            return [f"calls {name} without a safe Loader"]
    return []


def _constant(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def test_src_holds_no_code_that_could_execute_a_file() -> None:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40  # the walk found keel's sources
    problems = [problem for file in files
                for problem in unsafe_code(file.read_text(encoding="utf-8"), str(file.relative_to(ROOT)))]
    assert problems == []


@pytest.mark.parametrize("source", [
    "import pickle",
    "import pickle as p",
    "import os, cloudpickle",
    "import joblib.numpy_pickle",
    "from dill import loads",
    "from _pickle import Unpickler",
    "__import__('pickle')",
    "import importlib\nimportlib.import_module('joblib')",
    "eval(text)",
    "exec(code, {})",
    "import builtins\nbuiltins.exec(code)",
    "import torch\ntorch.load(path)",
    "import torch as t\nt.load(path, weights_only=False)",
    "from torch import load\nload(path)",
    "import torch\ntorch.load(path, map_location='cpu')",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import pandas as pd\npd.read_pickle(path)",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.unsafe_load(text)",
])
def test_the_checker_catches_each_violation(source: str) -> None:
    assert len(unsafe_code(source)) == 1, source


@pytest.mark.parametrize("source", [
    'model.eval()',
    'network.eval().to("cpu")',
    '"""Weights are never pickled: pickle.loads runs code."""',
    "# eval(this) is only a comment",
    "import torch\ntorch.load(path, weights_only=True)",
    "import numpy as np\nnp.load(path, allow_pickle=False)",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "from safetensors.torch import load\nload(data)",
    "evaluate(model)",
    "text = 'exec'",
])
def test_the_checker_passes_safe_code(source: str) -> None:
    assert unsafe_code(source) == []


def test_the_checker_names_file_and_line() -> None:
    assert unsafe_code("x = 1\nimport pickle\n", "src/keel/bad.py") == ["src/keel/bad.py:2: imports pickle"]
