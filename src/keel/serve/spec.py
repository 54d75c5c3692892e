"""What the served model takes and gives, read once at start-up from the ONNX file and ``keel.json``.

The exported file's metadata holds the task, target, classes, features, category vocabularies,
metrics and parity; the two values of each binary column are read from the manifest's
preprocessing state (the ONNX metadata does not list them). The request models, the OpenAPI
document, the unseen-value counts and ``/metadata`` are all built from this one description.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.data.spelling import lookup_spellings
from keel.errors import ArtifactError
from keel.runtime import Predictor


@dataclass(frozen=True)
class FeatureSpec:
    """One input column.

    Attributes:
        name: The column's name, as requests spell it.
        type: ``number``, ``binary``, ``category``, ``date``, ``text`` or ``image``.
        values: The values the model knows, in keel's canonical spelling (a category's vocabulary,
            a binary column's two values); empty for numbers and dates. Any other value goes to the
            unknown bucket and is counted as unseen.
    """

    name: str
    type: str
    values: tuple[str, ...] = ()

    @property
    def is_number(self) -> bool:
        return self.type == "number"

    @property
    def is_image(self) -> bool:
        """An image: the base64 of an image file's bytes, decoded by the server, read by the predictor."""
        return self.type == "image"

    @property
    def problem_type(self) -> str:
        """The ``type`` of an error about one of this feature's values: its own type, a binary's "category"
        (its values are labels as a category's are)."""
        return "category" if self.type == "binary" else self.type

    @property
    def is_date(self) -> bool:
        """A date: ISO 8601 text or seconds since 1970-01-01 UTC, converted by the predictor."""
        return self.type == "date"


@dataclass
class ModelSpec:
    """The served model as the server describes it.

    Attributes:
        name: The model's name in URLs (``/v2/models/{name}``): the directory's name.
        task: ``binary``, ``multiclass`` or ``regression``.
        target: The target column.
        classes: Class labels in their JSON types, in probability-column order (empty for regression).
        features: The input columns, in the order the model lists them.
        outputs: The ONNX graph's output names (``label``, ``probabilities`` or ``value``).
        metadata: Everything else ``/metadata`` reports (metrics, versions, parity, dropped columns).
    """

    name: str
    task: str
    target: str
    classes: list[Any]
    features: list[FeatureSpec]
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def known(self) -> dict[str, frozenset[str]]:
        """Known spellings by binary or category column, for counting unseen ones (a text is no value to count):
        the graph's lookup keys (keel.data.spelling.lookup_spellings: ``true`` for a learnt ``TRUE``, ``3`` for
        ``3.0``), so a value the graph matches is not counted."""
        return {feature.name: frozenset(lookup_spellings(list(feature.values))) for feature in self.features
                if not (feature.is_number or feature.is_date or feature.type in ("text", "image"))}


def read_spec(predictor: Predictor, directory: Path) -> ModelSpec:
    """The description of the model ``predictor`` was loaded from ``directory``.

    Args:
        predictor: The loaded predictor.
        directory: Its model directory (``keel.json`` is read for the binary columns' values).

    Returns:
        The model's description.

    Raises:
        ArtifactError: The metadata lacks the features, or a binary column's values.
    """
    from keel.artifact import read_manifest

    onnx = onnx_metadata(predictor)
    manifest = read_manifest(directory, verify=False)  # the predictor checked the ONNX file's checksum
    binaries = {item["name"]: item.get("values", []) for item in manifest.preprocessing if item.get("kind") == "binary"}
    vocabularies = json.loads(onnx.get("keel.vocabularies", "{}"))
    features = []
    for item in json.loads(onnx.get("keel.features", "[]")):
        name, kind = item["name"], item["type"]
        if kind == "binary" and name not in binaries:
            raise ArtifactError(f"{directory}/keel.json has no values for the binary column {name!r}; the model is "
                                f"corrupt. Export it again with `keel export {directory}`.")
        known = binaries[name] if kind == "binary" else vocabularies.get(name, []) if kind == "category" else []
        features.append(FeatureSpec(name, kind, tuple(known)))
    if {feature.name for feature in features} != set(predictor.feature_names):
        raise ArtifactError(f"{directory}/model.onnx lists features that are not its inputs; export it again with "
                            f"`keel export {directory}`.")
    schema = json.loads(onnx.get("keel.schema", "{}"))
    metadata = {
        "metrics": json.loads(onnx.get("keel.metrics", "null")),
        "parity": json.loads(onnx["keel.parity"]) if "keel.parity" in onnx else None,
        "dropped": schema.get("dropped", {}),
        "versions": _versions(onnx, manifest.versions),
        "created": manifest.created,
    }
    return ModelSpec(name=directory.resolve().name, task=predictor.task, target=predictor.target,
                     classes=list(predictor.classes), features=features,
                     outputs=json.loads(onnx["keel.outputs"]), metadata=metadata)


def onnx_metadata(predictor: Predictor) -> dict[str, str]:
    """The keel metadata of the predictor's ONNX file.

    The predictor reads it at load time but keeps it to itself; asking its session again costs
    nothing and avoids a second session (a second copy of the weights) just for the metadata.
    """
    return dict(predictor._session.get_modelmeta().custom_metadata_map)  # noqa: SLF001


def _versions(onnx: dict[str, str], trained: dict[str, str]) -> dict[str, Any]:
    import fastapi
    import onnxruntime

    import keel

    return {
        "trained_with": trained,
        "exported_with": {"keel": onnx.get("keel.version"), "model_format": onnx.get("keel.model_format"),
                          "export_format": onnx.get("keel.export_format")},
        "served_with": {"keel": keel.__version__, "onnxruntime": onnxruntime.__version__,
                        "fastapi": fastapi.__version__, "python": platform.python_version()},
    }
