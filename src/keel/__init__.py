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
import os
from typing import TYPE_CHECKING, Any

from keel.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    ExportError,
    KeelError,
    KeelWarning,
    NotFittedError,
    NumericError,
)

__version__ = "0.1.0"

# Float32 matmuls that round alike whatever the number of threads: MKL's strict conditional numerical
# reproducibility. Without it, MKL splits a matmul's inner dimension across threads when the output is
# small (a layer's weight gradient over a large batch), and 1 and 2 threads train different weights
# (measured: every preset on 6,000 rows); with it they match bit for bit, at no measured cost. MKL reads
# the variable at its first matmul, so it is set on `import keel`, before any matmul (a prediction as
# much as a training); a value set by the user wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

_LAZY = {
    "fit": "keel.train.pipeline", "load": "keel.model", "Model": "keel.model",
    "Config": "keel.config", "load_config": "keel.config",
    "KeelClassifier": "keel.sklearn", "KeelRegressor": "keel.sklearn",
    "tune": "keel.search",
}

if TYPE_CHECKING:
    from keel.config import Config, load_config
    from keel.model import Model, load
    from keel.search import tune
    from keel.sklearn import KeelClassifier, KeelRegressor
    from keel.train.pipeline import fit


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")


__all__ = [
    "fit", "load", "Model", "Config", "load_config", "KeelClassifier", "KeelRegressor", "tune",
    "KeelError", "ConfigError", "DataError", "ArtifactError", "ExportError", "NotFittedError", "NumericError", "KeelWarning",
]
