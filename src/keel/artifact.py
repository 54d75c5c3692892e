"""Save and load a model directory: ``keel.json`` plus ``weights.safetensors``, never pickle.

A save writes into a temporary sibling directory and renames it into place, so a crash or a kill
leaves either the old model or the new one, never half of one. A load checks the format version and
the sha256 of every file before reading the weights, and reading them executes no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from keel.errors import ArtifactError

FORMAT = "keel-model"
FORMAT_VERSION = 1
METADATA_FILE = "keel.json"
WEIGHTS_FILE = "weights.safetensors"


def save_artifact(path: str | os.PathLike, metadata: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write a model directory atomically, replacing an earlier keel model at ``path``.

    Args:
        path: The model directory to create or replace.
        metadata: JSON-serializable description of the model; ``format``, ``format_version`` and
            ``files`` (the checksums) are added.
        tensors: The weights.

    Returns:
        The model directory.

    Raises:
        ArtifactError: ``path`` is a file or a non-empty directory that is not a keel model, or
            the directory cannot be written.
    """
    target = Path(path)
    if target.exists() and not _is_replaceable(target):
        raise ArtifactError(
            f"{target} exists and is not a keel model; refusing to overwrite it. Choose another --output."
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as error:
        raise ArtifactError(f"cannot write a model to {target}: {error.strerror or error}.") from None
    try:
        weights = staging / WEIGHTS_FILE
        save_file({name: tensor.detach().contiguous() for name, tensor in tensors.items()}, str(weights))
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
                    "files": {WEIGHTS_FILE: _sha256(weights)}}
        text = json.dumps(_finite(document), indent=2, default=_json_default, allow_nan=False)
        _write_synced(staging / METADATA_FILE, text)
        _replace(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise ArtifactError(f"cannot write a model to {target}: {error.strerror or error}.") from None
        raise
    return target


def load_artifact(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a model directory.

    Returns:
        ``(metadata, tensors)``.

    Raises:
        ArtifactError: The directory is missing, not a keel model, of an unknown format version,
            or a file fails its checksum.
    """
    directory = Path(path)
    if not directory.exists():
        raise ArtifactError(f"no model at {directory}; pass the directory written by 'keel train --output'.")
    metadata_path = directory / METADATA_FILE
    if not directory.is_dir() or not metadata_path.is_file():
        raise ArtifactError(
            f"{directory} is not a keel model (no {METADATA_FILE} inside); "
            "pass the directory written by 'keel train --output'."
        )
    metadata = _read_metadata(metadata_path)
    for name, expected in metadata.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{directory} is incomplete: {name} is missing. Retrain or restore the model.")
        if _sha256(file) != expected:
            raise ArtifactError(
                f"{file} fails its checksum: it changed or is corrupt since the model was saved. "
                "Restore it from a backup or retrain the model."
            )
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{directory / WEIGHTS_FILE} cannot be read: {error}.") from None
    return metadata, tensors


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not valid JSON ({error}); the model is corrupt. Retrain it.") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a keel model description (format is not {FORMAT!r}).")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path.parent} has model format version {version!r} (written by keel "
            f"{metadata.get('versions', {}).get('keel', '?')}); this keel reads version {FORMAT_VERSION}. "
            "Use the keel version that wrote it, or retrain the model."
        )
    if WEIGHTS_FILE not in metadata.get("files", {}):
        raise ArtifactError(f"{path} lists no checksum for {WEIGHTS_FILE}; the model is corrupt. Retrain it.")
    return metadata


def _is_replaceable(target: Path) -> bool:
    if target.is_dir():
        return (target / METADATA_FILE).is_file() or not any(target.iterdir())
    return False


def _replace(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing model is moved aside first and removed last."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
    _fsync_directory(target.parent)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no spelling for them."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
