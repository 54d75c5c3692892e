"""keel: from a table to a trained, evaluated, safely saved neural network.

    >>> import keel
    >>> model = keel.fit("examples/penguins.csv", target="species")
    >>> model.save("runs/penguins")
    >>> keel.load("runs/penguins").predict("examples/penguins.csv")
"""

__version__ = "0.1.0"

from keel.config import Config, load_config  # noqa: E402
from keel.errors import (  # noqa: E402
    ArtifactError, ConfigError, DataError, ExportError, KeelError, KeelWarning, NotFittedError,
)
from keel.model import Model, fit, load  # noqa: E402


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # The scikit-learn estimators load on first use, keeping `import keel` light.
    if name in ("KeelClassifier", "KeelRegressor"):
        from keel import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")


__all__ = [
    "fit", "load", "Model", "Config", "load_config", "KeelClassifier", "KeelRegressor",
    "KeelError", "ConfigError", "DataError", "ArtifactError", "ExportError", "NotFittedError", "KeelWarning",
]
