"""The dependency rules of DESIGN.md, checked on the source with ``ast`` (nothing is imported).

Rules are rows of data: a module or package, what it must not import (or call), whether only imports
that run when the module is imported count, and why. A module that does not exist yet (runtime,
serve) is listed under PLANNED and picked up by its rows as soon as it does. Imports are followed
through keel's own modules, so ``keel.artifact`` importing a keel module that imports torch breaks
the artifact rule too, and the message shows the chain.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import keel

PACKAGE = Path(keel.__file__).resolve().parent


@dataclass(frozen=True)
class ImportRule:
    """``modules`` (a module, or a package and everything under it) must not import ``forbidden``."""

    modules: str
    forbidden: tuple[str, ...]  # module names; each also forbids its submodules
    module_level_only: bool  # True: imports inside functions (and under TYPE_CHECKING) are allowed
    why: str
    exempt: tuple[str, ...] = ()  # modules the rule does not apply to


@dataclass(frozen=True)
class CallRule:
    """``modules`` must not call functions matching ``calls`` (resolved names, fnmatch patterns)
    nor methods named in ``methods`` on any object, anywhere in their code."""

    modules: str
    calls: tuple[str, ...]
    methods: tuple[str, ...]
    why: str


SERVING_HEAVY = ("torch", "pandas")
IMPORT_RULES = [
    ImportRule("keel.data", ("torch",), False, "data works on NumPy and pandas; only nn and train know torch"),
    ImportRule("keel", ("keel.cli",), False, "the CLI is a leaf: it calls the API, nothing calls it",
               exempt=("keel.cli", "keel.__main__")),
    ImportRule("keel.evaluate", ("keel.train",), False, "evaluate works on arrays and imports no other stage"),
    ImportRule("keel.artifact", SERVING_HEAVY, True, "a serving-only install has no torch or pandas"),
    ImportRule("keel.runtime", SERVING_HEAVY, True, "a serving-only install has no torch or pandas"),
    ImportRule("keel.runtime", ("keel.model", "keel.config", "keel.nn", "keel.train", "keel.export", "keel.data.io",
                                "keel.data.values", "keel.data.schema", "keel.data.preprocess", "keel.data.transforms"),
               True, "the predictor starts in a quarter second: the training pipeline stays out of its imports"),
    ImportRule("keel.serve", SERVING_HEAVY, True, "a serving-only install has no torch or pandas"),
    ImportRule("keel.serve", ("keel.model", "keel.config", "keel.nn", "keel.train", "keel.export", "keel.data.io",
                              "keel.data.values", "keel.data.schema", "keel.data.preprocess", "keel.data.transforms",
                              "typer", "rich"),
               True, "the server is the predictor behind HTTP: no training pipeline, and no CLI libraries (its entry "
               "point is python -m keel.serve)"),
]
CALL_RULES = [
    CallRule(
        "keel.nn",
        calls=("open", "io.open", "os.open", "pandas.read_*", "pyarrow.*.read_*", "torch.load", "torch.save",
               "numpy.load", "numpy.save*", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile",
               "safetensors.*", "pickle.load", "json.load", "json.dump", "shutil.*"),
        methods=("read_text", "read_bytes", "write_text", "write_bytes", "open", "tofile"),
        why="nn builds networks from tensors; reading and writing files belongs to data/io and artifact",
    ),
]
# Packages the rules name before they exist.
PLANNED = {"keel.runtime", "keel.serve"}


@dataclass(frozen=True)
class Import:
    """One import statement (or ``importlib.import_module("...")`` call) of a keel module."""

    line: int
    text: str
    names: tuple[str, ...]  # the modules it may import: ``from a import b`` may import a and a.b
    module_level: bool  # runs when the module is imported (not in a function, not under TYPE_CHECKING)
    type_checking: bool


@dataclass
class Module:
    name: str
    tree: ast.Module
    lines: list[str]
    is_package: bool


def read_modules(root: Path = PACKAGE) -> dict[str, Module]:
    """Every module under ``root`` (a package directory), parsed, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        source = path.read_text(encoding="utf-8")
        modules[name] = Module(name, ast.parse(source, str(path)), source.splitlines(), is_package)
    return modules


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, module_level: bool = True, type_checking: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node under ``node`` with (runs at import time, is under ``if TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child, module_level, type_checking
            yield from _walk(child, False, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield statement, False, True
                yield from _walk(statement, False, True)
            for statement in child.orelse:
                yield statement, module_level, type_checking
                yield from _walk(statement, module_level, type_checking)
        else:
            yield child, module_level, type_checking
            yield from _walk(child, module_level, type_checking)


def imports_of(module: Module) -> list[Import]:
    """The module's imports, relative ones resolved to absolute names."""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    found = []
    for node, module_level, type_checking in _walk(module.tree):
        if isinstance(node, ast.Import):
            names = tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base_parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
            names = (base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*"))
        elif (isinstance(node, ast.Call) and _dotted(node.func) in ("importlib.import_module", "import_module")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = (node.args[0].value,)
        else:
            continue
        text = module.lines[node.lineno - 1].strip()
        found.append(Import(node.lineno, text, names, module_level, type_checking))
    return found


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _parents(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name``: keel.data.io -> keel, keel.data."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_violations(rule: ImportRule, modules: dict[str, Module]) -> list[str]:
    """One line per forbidden import reached from a module of the rule, with the chain that reaches it."""
    table = {name: imports_of(module) for name, module in modules.items()}
    messages = []
    for start in sorted(name for name in modules if _in(name, rule.modules) and name not in rule.exempt):
        # (module, chain of "module line N: `statement`" links that led to it); importing a module
        # first runs the __init__ of each package above it.
        pending: list[tuple[str, list[str]]] = [(start, [])]
        pending += [(package, [f"{start} is in {package}"]) for package in _parents(start) if package in modules]
        seen = {name for name, _ in pending}
        while pending:
            current, chain = pending.pop()
            for statement in table[current]:
                # The module's own imports count at any level unless the rule says module level only;
                # a module it reaches only runs its module-level imports.
                if not statement.module_level and (rule.module_level_only or chain):
                    continue
                link = [*chain, f"{current} line {statement.line}: `{statement.text}`"]
                hits = [name for name in statement.names if any(_in(name, bad) for bad in rule.forbidden)]
                if hits:
                    messages.append(f"{' -> '.join(link)} imports {hits[0]} ({rule.why})")
                    continue
                if statement.type_checking:  # never runs, so imports nothing further
                    continue
                for name in statement.names:
                    for reached in [*_parents(name), name]:
                        if reached in modules and reached not in seen:
                            seen.add(reached)
                            pending.append((reached, link))
    return sorted(set(messages))


def call_violations(rule: CallRule, modules: dict[str, Module]) -> list[str]:
    """One line per forbidden call in a module of the rule."""
    messages = []
    for name in sorted(name for name in modules if _in(name, rule.modules)):
        module = modules[name]
        aliases = {}  # local name -> the dotted name it stands for: pd -> pandas, read_csv -> pandas.read_csv
        for node, _, _ in _walk(module.tree):
            if isinstance(node, ast.Import):
                aliases.update({alias.asname or alias.name.split(".")[0]: alias.name if alias.asname
                                else alias.name.split(".")[0] for alias in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                aliases.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
        for node, _, _ in _walk(module.tree):
            if not isinstance(node, ast.Call):
                continue
            called = _dotted(node.func)
            if called is not None:
                head, _, rest = called.partition(".")
                called = aliases.get(head, head) + (f".{rest}" if rest else "")
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if (called and any(fnmatch.fnmatchcase(called, pattern) for pattern in rule.calls)) or (
                    method in rule.methods):
                messages.append(f"{name} line {node.lineno}: `{module.lines[node.lineno - 1].strip()}` "
                                f"calls {called or method} ({rule.why})")
    return messages


MODULES = read_modules()


@pytest.mark.parametrize("rule", IMPORT_RULES, ids=lambda rule: f"{rule.modules}-not-{'+'.join(rule.forbidden)}")
def test_import_rule(rule: ImportRule) -> None:
    assert any(_in(name, rule.modules) for name in MODULES) or rule.modules in PLANNED, \
        f"rule for {rule.modules}, which does not exist: fix the rule or list it in PLANNED"
    violations = import_violations(rule, MODULES)
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("rule", CALL_RULES, ids=lambda rule: f"{rule.modules}-reads-no-files")
def test_call_rule(rule: CallRule) -> None:
    assert any(_in(name, rule.modules) for name in MODULES)
    violations = call_violations(rule, MODULES)
    assert not violations, "\n".join(violations)


def _fake(sources: dict[str, str]) -> dict[str, Module]:
    return {name: Module(name, ast.parse(source), source.splitlines(),
                         is_package=any(other.startswith(name + ".") for other in sources))
            for name, source in sources.items()}


def _rule(modules: str) -> ImportRule:
    return next(rule for rule in IMPORT_RULES if rule.modules == modules)


def test_the_checks_catch_what_they_should_and_only_that() -> None:
    modules = _fake({
        "keel": "",
        "keel.data": "",
        "keel.data.good": "import numpy\nif TYPE_CHECKING:\n    import pandas\n",
        "keel.data.lazy": "def f():\n    import torch\n",
        "keel.data.relative": "from . import helper\n",
        "keel.data.helper": "x = 1\nfrom torch import nn\n",
        "keel.data.typed": "if TYPE_CHECKING:\n    import torch\n",
        "keel.data.via": "import keel.util\n",
        "keel.util": "def f():\n    import torch\n",  # runs only if called: keel.data.via is fine
        "keel.runtime": "import pandas\n",
        "keel.runtime.predict": "x = 1\n",
        "keel.artifact": "from keel.data import good\ndef save():\n    import torch\n",
        "keel.nn.reads": "import pandas as pd\nfrom pathlib import Path\n"
                         "def f(p):\n    return pd.read_csv(p), Path(p).read_text(), open(p)\n",
    })
    data_rule, artifact_rule, runtime_rule = _rule("keel.data"), _rule("keel.artifact"), _rule("keel.runtime")
    assert import_violations(data_rule, modules) == [
        "keel.data.helper line 2: `from torch import nn` imports torch (" + data_rule.why + ")",
        "keel.data.lazy line 2: `import torch` imports torch (" + data_rule.why + ")",
        "keel.data.relative line 1: `from . import helper` -> keel.data.helper line 2: `from torch import nn` "
        "imports torch (" + data_rule.why + ")",
        "keel.data.typed line 2: `import torch` imports torch (" + data_rule.why + ")",
    ]
    # Module level only: torch inside save() and pandas under TYPE_CHECKING are allowed.
    assert import_violations(artifact_rule, modules) == []
    assert import_violations(runtime_rule, modules) == [
        "keel.runtime line 1: `import pandas` imports pandas (" + runtime_rule.why + ")",
        "keel.runtime.predict is in keel.runtime -> keel.runtime line 1: `import pandas` imports pandas ("
        + runtime_rule.why + ")",
    ]
    artifact_rule_eager = ImportRule("keel.artifact", ("numpy",), True, "why")
    assert import_violations(artifact_rule_eager, modules) == [
        "keel.artifact line 1: `from keel.data import good` -> keel.data.good line 1: `import numpy` imports numpy (why)"]
    cli_rule = next(rule for rule in IMPORT_RULES if rule.forbidden == ("keel.cli",))
    leaf = _fake({"keel": "", "keel.cli": "from keel import model\n", "keel.model": "def f():\n    from keel import cli\n"})
    assert import_violations(cli_rule, leaf) == [
        "keel.model line 2: `from keel import cli` imports keel.cli (" + cli_rule.why + ")"]
    found = call_violations(CALL_RULES[0], modules)
    assert [message.split(" (")[0].rsplit(" calls ", 1)[1] for message in found] == [
        "pandas.read_csv", "read_text", "open"]
    assert all(message.startswith("keel.nn.reads line 4: `return pd.read_csv(p)") for message in found)
