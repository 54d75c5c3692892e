"""keel: from a table to a trained, evaluated, safely saved neural network.

    >>> import keel
    >>> model = keel.fit("examples/penguins.csv", target="species")
    >>> model.save("runs/penguins")
    >>> keel.load("runs/penguins").predict("examples/penguins.csv")

The public names load on first use, so ``import keel`` (and ``keel --help``) stays fast: torch,
pandas and scikit-learn are imported only when a model is fitted or loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    ExportError,
    KeelError,
    KeelWarning,
    NotFittedError,
)

__version__ = "0.1.0"

_LAZY = {
    "fit": "keel.train.pipeline", "load": "keel.model", "Model": "keel.model",
    "Config": "keel.config", "load_config": "keel.config",
    "KeelClassifier": "keel.sklearn", "KeelRegressor": "keel.sklearn",
}

if TYPE_CHECKING:
    from keel.config import Config, load_config
    from keel.model import Model, load
    from keel.sklearn import KeelClassifier, KeelRegressor
    from keel.train.pipeline import fit


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")


__all__ = [
    "fit", "load", "Model", "Config", "load_config", "KeelClassifier", "KeelRegressor",
    "KeelError", "ConfigError", "DataError", "ArtifactError", "ExportError", "NotFittedError", "KeelWarning",
]
