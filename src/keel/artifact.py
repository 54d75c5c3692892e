"""The model directory: one typed manifest (``keel.json``), the weights, and files attached later.

    model/
      keel.json            the manifest (:class:`Manifest`): format version, config, schema, ...,
                           and the sha256 of every other file listed in it
      weights.safetensors  the network's weights; never pickle
      model.onnx, ...      files attached with :func:`attach_file`, each with its checksum and the
                           checksum of the weights it was made from

Saving is atomic: the new directory is written and fsynced beside the old one, then swapped in
with one ``renameat2(RENAME_EXCHANGE)`` on Linux. Where that call is missing the old directory is
moved aside and the new one moved in, two renames; a kill between them leaves no directory, and
loading recovers it from the complete sibling. Either way a reader finds the old model or the new
one, never neither and never half of one.

Loading upgrades an older manifest step by step (:data:`MIGRATIONS`), validates it, and checks
every listed file's checksum before the weights are read. Reading and verifying a manifest imports
no torch: a serving-only install reads ``keel.json`` without it.

A model directory may come from someone else, and loading one is safe: nothing in it is executed
(JSON and safetensors only, never pickle), nothing outside it is opened (:func:`read_model_file`
refuses names that leave it, symbolic links and anything but regular files), and what it declares
is checked before it is parsed or allocated (:func:`parse_json` caps size, nesting and the number
of values; :func:`check_safetensors` holds a header to its bytes). Checksums catch damage, not
attacks: whoever can write the files can rewrite ``keel.json`` too.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keel.data.spelling import respell_vocabulary
from keel.errors import ArtifactError, KeelWarning

if TYPE_CHECKING:
    import torch

FORMAT: Final = "keel-model"
FORMAT_VERSION: Final = 4
# Format 4 is format 3's shape; a model is written as 4 only where a keel that reads 3 would predict from it wrongly
# (text.char_ngrams: that keel drops the unknown setting and reads the text's words alone, its probabilities off by
# 0.3 in an audit, while it said predictions did not depend on it), so every other model stays readable by it.
PLAIN_FORMAT_VERSION: Final = 3
METADATA_FILE = "keel.json"
WEIGHTS_FILE = "weights.safetensors"

# Temporary files (an attachment or a manifest being written) start with this; they are never a
# model's files, so a re-save leaves them behind and nothing ever lists them.
_TEMPORARY_PREFIX = ".keel-tmp-"
_SHA256 = r"^[0-9a-f]{64}$"

# The points of a save at which the kill test (tests/unit/test_artifact.py) stops the process, in
# order. Which of them a save passes depends on how it swaps the directories: "exchanged" with
# renameat2, "moved-aside" and "moved-in" with two renames (a first save has only "moved-in").
SAVE_STEPS = ("staging-created", "weights-written", "weights-synced", "files-carried", "manifest-written",
              "staging-synced", "exchanged", "moved-aside", "moved-in", "parent-synced", "retired-unlisted",
              "cleaned")


class FileRecord(BaseModel):
    """One file of a model directory, as the manifest lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=_SHA256, description="Checksum of the file's bytes.")
    made_from: str | None = Field(
        None, pattern=_SHA256,
        description="Checksum of the weights the file was made from; a re-save with other weights drops it.")


class Manifest(BaseModel):
    """What ``keel.json`` holds: everything but the weights that a model needs, and the files' checksums.

    The stages own the inner shapes (``preprocessing`` is what ``Preprocessor.state()`` returns,
    ``network`` a ``NetworkSpec``); the manifest owns the top level and its version. A change to
    the top level bumps :data:`FORMAT_VERSION` and adds a step to :data:`MIGRATIONS`.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: Literal["keel-model"] = FORMAT
    format_version: Literal[4] = FORMAT_VERSION
    versions: dict[str, str] = Field(description="keel, torch and python versions that wrote the model.")
    created: str = Field(description="When the model was trained (ISO 8601, UTC).")
    config: dict[str, Any] = Field(description="The configuration as run, presets resolved.")
    table_schema: dict[str, Any] = Field(alias="schema", description="Features, their types, target and task.")
    preprocessing: list[dict[str, Any]] = Field(description="The fitted feature transforms, in column order.")
    target: dict[str, Any] = Field(description="The fitted target encoding.")
    network: dict[str, Any] = Field(description="The network's shape (a NetworkSpec).")
    bagging: int = Field(1, ge=1, description="How many networks are averaged.")
    metrics: dict[str, Any] | None = Field(None, description="Test metrics at training time.")
    history: dict[str, Any] = Field(default_factory=dict, description="Per-epoch training records.")
    notes: list[str] = Field(default_factory=list, description="What keel decided while training.")
    run: dict[str, Any] | None = Field(
        None, description="The training run: data shape, rows per part, column statistics, durations.")
    calibration: dict[str, Any] | None = Field(
        None, description="Temperature and decision threshold (classification); the threshold changes labels.")
    importance: dict[str, Any] | None = Field(None, description="Permutation feature importance at training time.")
    files: dict[str, FileRecord] = Field(default_factory=dict, description="Every other file, by relative path.")

    @model_validator(mode="after")
    def _files_are_inside(self) -> "Manifest":
        for name in self.files:
            problem = _name_problem(name)
            if problem and name != WEIGHTS_FILE:
                raise ValueError(f"files lists {name!r}, which {problem}")
        return self

    @property
    def attached(self) -> dict[str, FileRecord]:
        """The files attached after training, by name."""
        return {name: record for name, record in self.files.items() if name != WEIGHTS_FILE}


# ---- migrations ------------------------------------------------------------------------------
# Where each transform kind keeps the category strings it looks values up by.
_SPELLED_VALUES = {"category": "vocabulary", "binary": "values"}


def _respell_categories(document: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: files carry records instead of bare checksums; float32 categories get their own spelling.

    Format 1 spelled a float32 category through float64 (``"0.10000000149011612"``); format 2
    spells it in float32's own precision (``"0.1"``), so stored vocabularies are re-spelled to keep
    finding those values.
    """
    files = document.get("files")
    if isinstance(files, dict):
        document["files"] = {name: {"sha256": value} if isinstance(value, str) else value
                             for name, value in files.items()}
    preprocessing = document.get("preprocessing")
    for item in preprocessing if isinstance(preprocessing, list) else []:
        if not isinstance(item, dict):
            continue  # left for validation to report
        key = _SPELLED_VALUES.get(str(item.get("kind")))
        values = item.get(key) if key else None
        if key and isinstance(values, list) and all(isinstance(value, str) for value in values):
            item[key] = respell_vocabulary(values)
    # Format 1 loaders filled these in when missing; format 2 requires them to be written.
    document.setdefault("bagging", 1)
    document.setdefault("notes", [])
    document.setdefault("history", {})
    document.setdefault("metrics", None)
    return document


def _add_run_record(document: dict[str, Any]) -> dict[str, Any]:
    """2 -> 3: the run record, calibration and importance (none for models trained before them).

    A bump rather than optional fields alone: a decision threshold changes a model's labels, so a
    keel that would ignore it must refuse the model instead.
    """
    for key in ("run", "calibration", "importance"):
        document.setdefault(key, None)
    return document


# Version n -> the function that turns a format-n manifest dict into a format n+1 one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _respell_categories, 2: _add_run_record, 3: lambda document: document}  # 4 is 3's shape (FORMAT_VERSION)


def written_format_version(char_ngrams: object) -> int:
    """The format version a model is written as, from its ``text.char_ngrams``: the oldest that keel reads it
    right in (see :data:`FORMAT_VERSION`)."""
    return FORMAT_VERSION if char_ngrams else PLAIN_FORMAT_VERSION


def upgrade(document: dict[str, Any], source: Path | str = METADATA_FILE) -> dict[str, Any]:
    """Bring a manifest dict of any earlier format version to :data:`FORMAT_VERSION`, step by step.

    Args:
        document: The parsed ``keel.json``; it is modified in place.
        source: The file it came from, for messages.

    Returns:
        The upgraded dict, ready for :class:`Manifest` validation.

    Raises:
        ArtifactError: The version is missing, unknown, or newer than this keel reads.
    """
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{source} has the format version {version!r}; expected a whole number from 1 to "
                            f"{FORMAT_VERSION}. The file is damaged: retrain the model or restore it from a backup.")
    if version > FORMAT_VERSION:
        versions = document.get("versions")
        writer = versions.get("keel", "?") if isinstance(versions, dict) else "?"
        raise ArtifactError(
            f"{source} has model format version {version} (written by keel {writer}); this keel reads versions "
            f"up to {FORMAT_VERSION}. Upgrade keel (pip install -U keel) or retrain the model with this one.")
    while version < FORMAT_VERSION:
        document = MIGRATIONS[version](document)
        version += 1
        document["format_version"] = version
    return document


# ---- reading ---------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Read a model directory's manifest, upgraded to this format version; imports no torch.

    Args:
        path: The model directory.
        verify: Check the sha256 of every file the manifest lists.

    Returns:
        The validated manifest.

    Raises:
        ArtifactError: No model there, not a keel model, an unreadable, oversized, too deeply
            nested or invalid manifest, a newer format version, or a listed file that is missing,
            a symbolic link, not a regular file, or fails its checksum.
    """
    directory = Path(path)
    if not directory.exists():
        raise ArtifactError(f"no model at {directory}; pass the directory written by 'keel train --output'.")
    metadata_path = directory / METADATA_FILE
    if not directory.is_dir() or not os.path.lexists(metadata_path):
        raise ArtifactError(f"{directory} is not a keel model (no {METADATA_FILE} inside); "
                            "pass the directory written by 'keel train --output'.")
    document = upgrade(_read_document(metadata_path), metadata_path)
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as error:
        raise ArtifactError(f"{metadata_path} is not a valid keel manifest ({_describe(error)}); the model is "
                            "corrupt. Retrain it or restore the directory from a backup.") from None
    if WEIGHTS_FILE not in manifest.files:
        raise ArtifactError(f"{metadata_path} lists no checksum for {WEIGHTS_FILE}; the model is corrupt. Retrain it.")
    if verify:
        for name, record in manifest.files.items():
            _verify(directory, name, record.sha256)
    return manifest


def load_artifact(path: str | os.PathLike[str]) -> tuple[Manifest, dict[str, torch.Tensor]]:
    """Read and verify a model directory: its manifest and its weights.

    A directory that is missing because a save was killed between its two renames is first
    recovered from its complete sibling (see the module docstring). The weights are read once,
    checked against their checksum and their header (:func:`check_safetensors`), and only then
    handed to safetensors.

    Returns:
        ``(manifest, tensors)``.

    Raises:
        ArtifactError: As :func:`read_manifest`, or the weights file cannot be parsed.
    """
    directory = Path(path)
    if not directory.exists() and not directory.is_symlink():
        _recover(directory)
    manifest = read_manifest(directory, verify=False)
    verify_files(directory, manifest, list(manifest.attached))
    data = read_model_file(directory, WEIGHTS_FILE)
    if hashlib.sha256(data).hexdigest() != manifest.files[WEIGHTS_FILE].sha256:
        raise ArtifactError(f"{directory / WEIGHTS_FILE} fails its checksum: it changed or is corrupt since the "
                            "model was saved. Restore it from a backup or retrain the model.")
    return manifest, read_tensors(data, directory / WEIGHTS_FILE)


def read_tensors(data: bytes, source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes, its header checked first (:func:`check_safetensors`).

    Raises:
        ArtifactError: The header does not describe the bytes, or safetensors cannot parse them.
    """
    from safetensors.torch import load

    return _parse_safetensors(data, source, load)


def read_arrays(data: bytes, source: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`read_tensors` as NumPy arrays (no torch needed)."""
    from safetensors.numpy import load

    return _parse_safetensors(data, source, load)


def _parse_safetensors(data: bytes, source: str | os.PathLike[str], load: Callable[[bytes], Any]) -> Any:
    check_safetensors(data, source)
    from safetensors import SafetensorError

    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError) as error:
        raise ArtifactError(f"{source} cannot be read: {error}. The model is corrupt: restore the directory from "
                            "a backup or retrain the model.") from None


def _read_document(path: Path) -> dict[str, Any]:
    data = read_model_file(path.parent, path.name, limit=MAX_MANIFEST_BYTES)
    document = parse_json(data, path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a keel model description (format is not {FORMAT!r}).")
    return document


def _verify(directory: Path, name: str, expected: str) -> None:
    digest = hashlib.sha256()
    with _open_model_file(directory, name) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ArtifactError(f"{directory / name} fails its checksum: it changed or is corrupt since the model was "
                            "saved. Restore it from a backup or retrain the model.")


# ---- reading hostile files -------------------------------------------------------------------
# Model directories come from other people. Nothing in one is executed (no pickle anywhere), and
# what it declares is checked before it is parsed or allocated: the limits below are far above
# what keel writes (a keel.json of kilobytes; 15 MB for a vocabulary of a million categories; 75 MB
# and 2.5M values for 9,000 quantile-scaled columns) and below what would exhaust memory. A save that
# would pass them is refused (save_artifact), so keel never writes a model it then will not read.
MAX_MANIFEST_BYTES: Final = 256 * 2**20
MAX_JSON_DEPTH: Final = 64
# Parsed JSON takes up to about 100 bytes a value (a small dict, a short string): this bounds a
# parse to about 1 GB whatever the file holds.
MAX_JSON_VALUES: Final = 10_000_000
MAX_HEADER_BYTES: Final = 16 * 2**20
# Bytes per element of each safetensors dtype.
_DTYPE_BYTES: Final = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                       "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# Flags that keep an open inside the directory: a symbolic link as the last part fails (ELOOP), a
# named pipe does not block. Absent on Windows, where the lstat checks before the open remain.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def read_model_file(directory: str | os.PathLike[str], name: str, *, limit: int | None = None) -> bytes:
    """The bytes of the file ``name`` inside a model directory, read so that nothing outside it is.

    ``name`` must be a plain relative path (no ``..``, no absolute path, no backslash or NUL); no
    part of it may be a symbolic link, since keel never writes one and a link can lead anywhere
    (or be repointed after a check); and the file must be a regular file (a named pipe would block
    the open forever, a device would never end).

    Args:
        directory: The model directory.
        name: The file's path inside it, ``/`` between folders.
        limit: The most bytes the file may hold; larger ones are refused before they are read.

    Returns:
        The file's bytes.

    Raises:
        ArtifactError: The name leads outside the directory, the file is missing, a link, not a
            regular file, larger than ``limit``, or cannot be read.
    """
    folder = Path(directory)
    with _open_model_file(folder, name) as handle:
        size = os.fstat(handle.fileno()).st_size
        if limit is not None and size > limit:
            raise ArtifactError(f"{folder / name} holds {size:,} bytes; keel reads at most {limit:,} there, far more "
                                "than any model it writes. The file is not a keel model's: retrain the model or "
                                "restore the directory from a backup.")
        return handle.read()


# Attached files that keel makes again from the weights (exports, their reports, the report and its figures): one
# that is missing is detached at load. Any other (an embedded encoder's files, the test predictions) is the model's.
_REMADE = ("model.onnx", "model.int8.onnx", "model.tflite", "model.tflite.json", "report.html")


def remade(name: str) -> bool:
    """Whether ``name`` is an attached file keel makes again on request (:data:`_REMADE`, reports/, plots/)."""
    return name in _REMADE or name.startswith(("reports/", "plots/"))


def remake_command(directory: str | os.PathLike[str], name: str) -> str:
    """The command that makes the attached file ``name`` again (:func:`remade`)."""
    if name.startswith("model.int8") or name == "reports/model.int8.onnx.json":
        return f"keel export {directory} --quantize int8"
    if name.startswith(("model.tflite", "reports/model.tflite")):
        return f"keel export {directory} --format tflite"
    if name == "report.html" or name.startswith("plots/"):
        return f"keel report {directory}"
    return f"keel export {directory}"


def verify_files(directory: Path, manifest: Manifest, names: list[str]) -> None:
    """Check the checksums of ``names`` in ``directory``. One that is missing but made again from the weights
    (:func:`remade`: deleted, or left out of a copy) is dropped from ``manifest`` with a warning that says how to
    make it, so that the model still loads and `keel export` / `keel report` can attach it again.

    Raises:
        ArtifactError: A file is missing (and not remade), a link, not a regular file, or fails its checksum.
    """
    gone = []
    for name in names:
        try:
            _verify(directory, name, manifest.files[name].sha256)
        except _MissingFile:
            if not remade(name):
                raise
            gone.append(name)
    for name in gone:
        del manifest.files[name]
    if gone:
        commands = sorted({remake_command(directory, name) for name in gone})
        warnings.warn(f"{directory}: {', '.join(sorted(gone))} listed in {METADATA_FILE} but missing; read without "
                      f"{'it' if len(gone) == 1 else 'them'} (to make {'it' if len(gone) == 1 else 'them'} again: "
                      f"{'; '.join(f'`{command}`' for command in commands)}).", KeelWarning, stacklevel=3)


class _MissingFile(ArtifactError):
    """A file the manifest lists is not there (a missing attachment is detached, not fatal)."""


def _open_model_file(directory: Path, name: str) -> BinaryIO:
    """Open ``directory/name`` for reading, refusing names, links and files that could lead elsewhere."""
    problem = _path_problem(name)
    if problem:
        raise ArtifactError(f"{directory}/{METADATA_FILE} lists {name!r}, which {problem}: a model's files lie "
                            "inside its directory. The directory is not a keel model's; do not load it.")
    file = directory.joinpath(*name.split("/"))
    part = directory
    for piece in name.split("/"):
        part = part / piece
        if part.is_symlink():
            raise ArtifactError(f"{part} is a symbolic link (to {os.readlink(part)}); keel never writes links into a "
                                "model directory and does not follow them. Replace the link with the file itself.")
    try:
        descriptor = os.open(file, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _MissingFile(f"{directory} is incomplete: {name} is missing. Retrain or restore the model.") from None
    except OSError as error:
        why = ("is a symbolic link, which keel does not follow" if error.errno == errno.ELOOP
               else f"cannot be read ({error.strerror or error})")
        raise ArtifactError(f"{file} {why}. Restore the model directory from a backup or retrain it.") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ArtifactError(f"{file} is not a regular file (a directory, pipe or device); a model's files are "
                            "plain files. Restore the model directory from a backup or retrain it.")
    return os.fdopen(descriptor, "rb")


def parse_json(data: bytes, source: str | os.PathLike[str]) -> Any:
    """Parse JSON from a model file, refusing nesting deeper than :data:`MAX_JSON_DEPTH`.

    Python's parser recurses once per level: 100,000 nested lists end in a RecursionError there,
    a few hundred in one later, in whatever walks the result; keel writes a few levels. A file of
    more than :data:`MAX_JSON_VALUES` values is refused before parsing (the count is of commas and
    opening brackets, so an over-count).

    Args:
        data: The JSON text, UTF-8.
        source: Where it came from, for messages.

    Returns:
        The parsed value.

    Raises:
        ArtifactError: The text is not UTF-8 JSON, holds more than :data:`MAX_JSON_VALUES` values,
            or nests deeper than :data:`MAX_JSON_DEPTH`.
    """
    values = json_values(data)
    if values > MAX_JSON_VALUES:
        raise ArtifactError(f"{source} holds about {values:,} JSON values; keel reads at most {MAX_JSON_VALUES:,} (a "
                            "vocabulary of a million categories takes a million). The file is not keel's: retrain "
                            "the model or restore the directory from a backup.")
    too_deep = (f"{source} nests more than {MAX_JSON_DEPTH} levels deep; keel writes a few. The file is not keel's: "
                "retrain the model or restore the directory from a backup.")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ArtifactError(too_deep) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{source} is not valid JSON ({error}); the model is corrupt. Retrain it.") from None
    if _nested_deeper(value, MAX_JSON_DEPTH):
        raise ArtifactError(too_deep)
    return value


def json_values(data: bytes) -> int:
    """About how many values a JSON text holds: commas and opening brackets (an over-count, since
    those inside strings count too), cheap enough to run before parsing."""
    return data.count(b",") + data.count(b"[") + data.count(b"{")


def _check_readable_size(text: str, target: Path) -> None:
    """Refuse to write a keel.json that loading would refuse (:data:`MAX_MANIFEST_BYTES`, :data:`MAX_JSON_VALUES`)."""
    data = text.encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES or json_values(data) > MAX_JSON_VALUES:
        raise ArtifactError(
            f"cannot save the model to {target}: its keel.json would hold {len(data):,} bytes and about "
            f"{json_values(data):,} values, more than keel reads back ({MAX_MANIFEST_BYTES:,} bytes, "
            f"{MAX_JSON_VALUES:,} values). Fewer columns or categories, or preprocessing.normalize other than quantile "
            "(256 knots a column), make it smaller.")


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether lists and dicts nest more than ``limit`` levels in ``value``; a level at a time, no recursion."""
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(limit):
        level = [item for container in level for item in (container.values() if isinstance(container, dict)
                                                          else container) if isinstance(item, (list, dict))]
        if not level:
            return False
    return True


def check_safetensors(data: bytes, source: str | os.PathLike[str]) -> None:
    """Check that a safetensors file's header describes its bytes, before any library parses them.

    The header length must fit the file and :data:`MAX_HEADER_BYTES`; the header must be shallow
    JSON; every tensor needs a known dtype, a shape of whole numbers, and a byte range inside the
    data that holds exactly ``dtype size x shape product`` bytes; the ranges must tile the data
    without overlap or gap (as the format requires).

    Raises:
        ArtifactError: The file is not a valid safetensors file; the message says what is wrong.
    """
    damaged = (f"{source} is not a valid safetensors file ({{}}); the model is corrupt. Restore the directory from a "
               "backup or retrain the model.")
    if len(data) < 8:
        raise ArtifactError(damaged.format(f"it holds {len(data)} bytes, fewer than the 8 of its header length"))
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ArtifactError(damaged.format(
            f"its header claims {length:,} bytes; the file holds {len(data) - 8:,} after the length, and keel reads "
            f"headers of up to {MAX_HEADER_BYTES:,}"))
    header = parse_json(data[8:8 + length], source)
    if not isinstance(header, dict):
        raise ArtifactError(damaged.format("its header is not a JSON object"))
    body = len(data) - 8 - length
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(value, str) for value in entry.values()):
                raise ArtifactError(damaged.format("its __metadata__ is not a map of strings"))
            continue
        problem = _tensor_problem(entry, body)
        if problem:
            raise ArtifactError(damaged.format(f"tensor {name!r} {problem}"))
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            how = "overlaps the one before it" if begin < position else "leaves a gap before it"
            raise ArtifactError(damaged.format(f"tensor {name!r} starts at data byte {begin:,} and {how}"))
        position = end
    if position != body:
        raise ArtifactError(damaged.format(f"its tensors cover {position:,} of its {body:,} data bytes"))


def _tensor_problem(entry: Any, body: int) -> str | None:
    """What is wrong with one tensor's header entry, or None."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return "is not described by exactly a dtype, a shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        return f"has the unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_whole(size) for size in shape):
        return f"has the shape {shape!r}, not a list of whole numbers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(offset) for offset in offsets)
            and offsets[0] <= offsets[1] <= body):
        return f"has the byte range {offsets!r}, not inside the {body:,} data bytes"
    needed = _DTYPE_BYTES[dtype] * math.prod(shape)
    if offsets[1] - offsets[0] != needed:
        return f"is {dtype} {shape}, which takes {needed:,} bytes, but its byte range holds {offsets[1] - offsets[0]:,}"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe(error: ValidationError) -> str:
    problems = [f"{'.'.join(str(part) for part in item['loc']) or 'the top level'}: {item['msg']}"
                for item in error.errors()[:3]]
    more = f" and {error.error_count() - 3} more" if error.error_count() > 3 else ""
    return "; ".join(problems) + more


# ---- saving ----------------------------------------------------------------------------------
def save_artifact(path: str | os.PathLike[str], manifest: Manifest, tensors: Mapping[str, torch.Tensor],
                  extra: Mapping[str, bytes] | None = None) -> Manifest:
    """Write a model directory atomically, replacing an earlier keel model at ``path``.

    Files attached to the earlier model are carried over when they were made from the same weights
    (re-saving a loaded model keeps its ONNX export); those made from other weights are dropped
    with a :class:`KeelWarning`. Files the manifest does not list (a user's own) are carried over
    untouched.

    Args:
        path: The model directory to create or replace.
        manifest: The model's description; its ``files`` are replaced by what is written.
        tensors: The weights.
        extra: Other files written with the model, in the same atomic step (name -> bytes; the
            test rows' predictions), recorded as made from these weights.

    Returns:
        The manifest as written, with the checksums of the files the directory now lists.

    Raises:
        ArtifactError: ``path`` is a file or a non-empty directory that is not a keel model, or
            the directory cannot be written.
    """
    target = Path(path)
    if target.is_symlink() and target.exists():
        target = target.resolve()  # replace what the link points at, not the link
    previous = _previous_files(target, json.loads(_manifest_text(manifest)).get("calibration"))
    try:
        _make_directories(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as error:
        raise ArtifactError(f"cannot write a model to {target}: {error.strerror or error}.") from None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the model from the group
        _step("staging-created")
        files = {WEIGHTS_FILE: FileRecord(sha256=_write_weights(staging / WEIGHTS_FILE, tensors))}
        if previous is not None:
            files.update(_carry_over(target, staging, previous, files[WEIGHTS_FILE].sha256, replaced=extra or {}))
        _step("files-carried")
        for name, data in (extra or {}).items():
            files[name] = FileRecord(sha256=_write_file(staging, name, data), made_from=files[WEIGHTS_FILE].sha256)
        written = manifest.model_copy(update={"files": files})
        text = _manifest_text(written)
        _check_readable_size(text, target)
        _write_synced(staging / METADATA_FILE, text)
        _step("manifest-written")
        _fsync_directories(staging)
        _step("staging-synced")
        _swap(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap this holds the retired model
        if isinstance(error, OSError):
            raise ArtifactError(f"cannot write a model to {target}: {error.strerror or error}.") from None
        raise
    _clean_leftovers(target)
    _step("cleaned")
    return written


def attach_file(model_dir: str | os.PathLike[str], name: str, source: bytes | str | os.PathLike[str], *,
                weights: str | None = None) -> str:
    """Add a file (an ONNX export, a report, a plot) to a saved model directory, with its checksum.

    The file is written atomically (a temporary file beside it, fsynced, renamed), then recorded in
    the manifest with its sha256 and the sha256 of the weights it was made from, and the manifest
    is rewritten atomically. Loading checks the file's checksum from then on; a re-save with other
    weights drops it as stale.

    Args:
        model_dir: A saved model directory.
        name: Where the file goes, relative to the directory, with ``/`` between folders
            (``"model.onnx"``, ``"plots/roc.png"``). An attached file of that name is replaced.
        source: The file's bytes, or the path of a file to copy.
        weights: The sha256 of the weights the file was made from, when the caller knows it: the
            directory must still hold those weights.

    Returns:
        The sha256 of the attached file.

    Raises:
        ArtifactError: The directory is not a valid model, its weights fail their checksum or are
            not ``weights``, the name is not a plain relative path, or the file cannot be read or
            written.

    Example:
        >>> attach_file("runs/penguins", "notes/README.txt", b"trained on the 2024 export")
        '5c1e...'
    """
    directory = Path(model_dir)
    problem = _name_problem(name)
    if problem:
        raise ArtifactError(f"cannot attach {name!r} to {directory}: the name {problem}. Use a relative path "
                            "inside the model directory, like 'model.onnx' or 'plots/roc.png'.")
    manifest = read_manifest(directory, verify=False)  # a damaged earlier attachment may be what is replaced
    saved = manifest.files[WEIGHTS_FILE].sha256
    _verify(directory, WEIGHTS_FILE, saved)
    if weights is not None and weights != saved:
        raise ArtifactError(f"cannot attach {name!r} to {directory}: the directory holds other weights than the model "
                            "the file was made from (it was saved over since). Save the model there again first.")
    try:
        digest = _write_file(directory, name, source)
        files = {**{listed: record for listed, record in manifest.files.items()  # (what a load detached stays so)
                    if not (remade(listed) and not os.path.lexists(directory.joinpath(*listed.split("/"))))},
                 name: FileRecord(sha256=digest, made_from=saved)}
        _write_file(directory, METADATA_FILE, _manifest_text(manifest.model_copy(update={"files": files})).encode())
    except OSError as error:
        raise ArtifactError(f"cannot attach {name!r} to {directory}: {error.strerror or error}.") from None
    return digest


def detach_files(model_dir: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Remove attached files from a saved model directory (figures a new report no longer draws).

    The manifest stops listing them first (rewritten atomically), then the files go: a crash in
    between leaves a file nothing lists, never a listed file that is missing.

    Raises:
        ArtifactError: The directory is not a valid model, a name is the weights or not attached,
            or the directory cannot be written.
    """
    directory = Path(model_dir)
    manifest = read_manifest(directory, verify=False)
    gone = set(names)
    unknown = sorted(name for name in gone if name not in manifest.attached)
    if unknown:
        raise ArtifactError(f"cannot detach {', '.join(unknown)} from {directory}: not attached files of the model.")
    files = {name: record for name, record in manifest.files.items() if name not in gone}
    try:
        _write_file(directory, METADATA_FILE, _manifest_text(manifest.model_copy(update={"files": files})).encode())
        for name in gone:
            directory.joinpath(*name.split("/")).unlink(missing_ok=True)
    except OSError as error:
        raise ArtifactError(f"cannot detach files from {directory}: {error.strerror or error}.") from None


def check_output_file(path: str | os.PathLike[str], instead: str) -> Path:
    """A file path a command may write to: not a directory, and not inside a model directory.

    Inside one, the file would replace (or sit among) files whose checksums ``keel.json`` holds, and
    the model would fail to load.

    Args:
        path: The ``--output`` given.
        instead: What leaving ``--output`` out does, for the message (``"attach the export there"``).

    Raises:
        ConfigError: ``path`` is a directory or lies inside a model directory.
    """
    from keel.errors import ConfigError

    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--output {file} is a directory; pass a file path inside it, or leave --output out to "
                          f"{instead}.")
    for folder in file.absolute().parents:
        if (folder / METADATA_FILE).is_file():
            raise ConfigError(f"--output {file} is inside the model directory {folder}, whose files {METADATA_FILE} "
                              f"checks; leave --output out to {instead}, or write it elsewhere.")
    return file


def check_destination(path: str | os.PathLike) -> Path:
    """Check that a model can be saved at ``path`` before any work is spent on it.

    Raises:
        ArtifactError: ``path`` is a file, a non-empty directory that is not a keel model, or
            somewhere this process cannot create or write a directory.
    """
    target = Path(path)
    if target.exists() and not _is_replaceable(target):
        raise ArtifactError(
            f"{target} exists and is not a keel model; refusing to overwrite it. Choose another --output."
        )
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ArtifactError(f"cannot write a model to {target}: {parent} is a file, not a directory. "
                            "Choose another --output.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write a model to {target}: {parent} is not writable (permission denied). "
                            "Choose another --output or fix the permissions.")
    return target


def _is_replaceable(target: Path) -> bool:
    """An empty directory, or one whose keel.json is a keel manifest (of any format version)."""
    return _replaceable_document(target) is not None


def _replaceable_document(target: Path) -> dict[str, Any] | None:
    """The parsed keel.json of a directory a save may replace ({} for an empty one); None otherwise."""
    if not target.is_dir():
        return None
    if not any(target.iterdir()):
        return {}
    try:
        return _read_document(target / METADATA_FILE)
    except ArtifactError:
        return None


def _previous_files(target: Path, calibration: Any = None) -> dict[str, FileRecord] | None:
    """The files listed by the model at ``target`` (None when there is none); refuses anything else.

    Only the ``files`` and ``calibration`` sections are read, and leniently: a model of a newer
    format version or with a damaged manifest is still replaced, its listed files then count as
    stale. So do they when the new model decides differently (``calibration``, as JSON, differs):
    an ONNX export or a report carries the old decision threshold even for the same weights.
    """
    if not target.exists() and not target.is_symlink():
        return None
    document = _replaceable_document(target)
    if document is None:
        raise ArtifactError(f"{target} exists and is not a keel model; refusing to overwrite it. "
                            "Choose another --output.")
    files = document.get("files")
    records: dict[str, FileRecord] = {}
    for name, value in (files.items() if isinstance(files, dict) else []):
        try:
            records[name] = FileRecord.model_validate({"sha256": value} if isinstance(value, str) else value)
        except ValidationError:
            records[name] = FileRecord(sha256="0" * 64)  # unreadable: listed, so never a user's file; stale
    if document.get("calibration") != calibration:
        records = {name: record.model_copy(update={"made_from": None}) for name, record in records.items()}
    return records


def _carry_over(target: Path, staging: Path, previous: dict[str, FileRecord], weights: str,
                replaced: Iterable[str] = ()) -> dict[str, FileRecord]:
    """Bring the earlier model's files into ``staging`` (but those ``replaced`` by new ones); returns
    the records of those still valid."""
    kept: dict[str, FileRecord] = {}
    stale: list[str] = []
    skip = {WEIGHTS_FILE, METADATA_FILE, *replaced}
    for name, record in previous.items():
        if name in skip or _name_problem(name):
            continue
        if record.made_from == weights and (target / name).is_file() and _sha256(target / name) == record.sha256:
            _link_or_copy(target / name, staging / name)
            kept[name] = record
        elif (target / name).exists():
            stale.append(name)
    for source in sorted(target.rglob("*")):
        name = source.relative_to(target).as_posix()
        if name in previous or name in skip or _TEMPORARY_PREFIX in name:
            continue
        if source.is_dir() and not source.is_symlink():
            (staging / name).mkdir(parents=True, exist_ok=True)
        else:  # a user's own file: carried over as it is
            _link_or_copy(source, staging / name)
    if stale:
        warnings.warn(f"{target}: {', '.join(sorted(stale))} were made from the previous weights and were not "
                      "carried over to the new model; export or attach them again.", KeelWarning, stacklevel=3)
    return kept


def _link_or_copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
        return
    try:
        os.link(source, destination)  # same file system: the bytes are shared, and untouched
    except OSError:
        shutil.copy2(source, destination)
        _fsync_file(destination)


def _write_weights(path: Path, tensors: Mapping[str, torch.Tensor]) -> str:
    from safetensors.torch import save_file

    save_file({name: tensor.detach().contiguous() for name, tensor in tensors.items()}, str(path))
    os.chmod(path, 0o666 & ~_umask())
    _step("weights-written")
    _fsync_file(path)
    _step("weights-synced")
    return _sha256(path)


def _manifest_text(manifest: Manifest) -> str:
    document = manifest.model_dump(by_alias=True)
    text = manifest.config.get("text")
    document["format_version"] = written_format_version(text.get("char_ngrams") if isinstance(text, Mapping) else None)
    return json.dumps(_plain(document), indent=2, allow_nan=False)


def write_file_atomically(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` (a temporary file beside it, fsynced, renamed): a crash leaves the old
    file or the new one, never half of one. Returns the sha256 of ``data``.

    Raises:
        ArtifactError: The file cannot be written; the message names it and says why.
    """
    destination = Path(path)
    try:
        return _write_file(destination.parent, destination.name, data)
    except OSError as error:
        raise ArtifactError(f"cannot write {destination}: {error.strerror or error}.") from None


def _write_file(directory: Path, name: str, source: bytes | str | os.PathLike[str]) -> str:
    """Write ``directory/name`` atomically from bytes or a file's path; returns its sha256."""
    destination = directory.joinpath(*name.split("/"))
    _make_directories(destination.parent)
    descriptor, temporary = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX, dir=destination.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if isinstance(source, bytes):
                handle.write(source)
                digest.update(source)
            else:
                with open(source, "rb") as reader:
                    for chunk in iter(lambda: reader.read(1 << 20), b""):
                        handle.write(chunk)
                        digest.update(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(destination.parent)
    return digest.hexdigest()


# ---- swapping directories --------------------------------------------------------------------
def _swap(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an earlier directory there ends up at ``staging``'s path or is removed."""
    if not target.exists():
        os.rename(staging, target)
        _step("moved-in")
        _fsync_directory(target.parent)
        _step("parent-synced")
        return
    if _exchange(staging, target):
        _step("exchanged")
        retired = staging
    else:
        retired = target.with_name(f".{target.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(target, retired)
        _step("moved-aside")
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(retired, target)
            raise
        _step("moved-in")
    _fsync_directory(target.parent)
    _step("parent-synced")
    # The manifest goes first: a half-removed directory is then never taken for a model.
    (retired / METADATA_FILE).unlink(missing_ok=True)
    _step("retired-unlisted")
    shutil.rmtree(retired, ignore_errors=True)


_RENAME_EXCHANGE = 2  # from <linux/fs.h>
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any | None:
    """libc's renameat2, or None where there is none (not Linux, or older than glibc 2.28)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the system cannot (then nothing happened)."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(second))


def _recover(target: Path) -> None:
    """Put back a model whose save was killed between two renames: the newest complete sibling wins."""
    complete = []
    parent = target.parent if target.parent.is_dir() else None
    for sibling in parent.iterdir() if parent else []:
        if re.fullmatch(re.escape(f".{target.name}.") + r"(tmp|old)-\d+-.+", sibling.name) and sibling.is_dir():
            try:
                read_manifest(sibling)
            except ArtifactError:
                continue
            complete.append(((sibling / METADATA_FILE).stat().st_mtime_ns, sibling))
    if not complete:
        return  # read_manifest says there is no model
    source = max(complete)[1]
    try:
        os.rename(source, target)
        _fsync_directory(target.parent)
    except OSError as error:
        raise ArtifactError(f"{target} is missing, and {source} holds the model an interrupted save left; it could "
                            f"not be moved back ({error.strerror or error}). Rename it to {target}.") from None
    warnings.warn(f"{target} was missing after an interrupted save; recovered it from {source.name}.",
                  KeelWarning, stacklevel=3)


def _clean_leftovers(target: Path) -> None:
    """Remove siblings that killed saves left behind (their process is gone); they only cost space."""
    for sibling in target.parent.iterdir():
        match = re.fullmatch(re.escape(f".{target.name}.") + r"(?:tmp|old)-(\d+)-.+", sibling.name)
        if match and not _alive(int(match.group(1))):
            (sibling / METADATA_FILE).unlink(missing_ok=True)
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


# ---- small helpers ---------------------------------------------------------------------------
def _step(name: str) -> None:
    """Test-only: SIGKILL this process at the save step named by ``KEEL_TEST_KILL_AT``."""
    if os.environ.get("KEEL_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an attached file's name, or None when it can."""
    problem = _path_problem(name)
    if problem:
        return problem
    parts = name.split("/")
    if name in (METADATA_FILE, WEIGHTS_FILE):
        return "is one of the files keel writes itself"
    if any(part.startswith(_TEMPORARY_PREFIX) for part in parts):
        return f"starts with {_TEMPORARY_PREFIX!r}, which keel uses for temporary files"
    return None


def _path_problem(name: str) -> str | None:
    """Why ``name`` is not a plain path inside a directory (so could lead out of it), or None."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name):
        return "is not a relative path with '/' between folders"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' part"
    return None


def _make_directories(directory: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every folder it creates."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        _fsync_directory(folder.parent)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    _fsync(path, directory=False)


def _fsync_directories(root: Path) -> None:
    """fsync every folder under ``root``, deepest first, and ``root`` itself."""
    folders = [Path(folder) for folder, _, _ in os.walk(root)]
    for folder in reversed(folders):
        _fsync_directory(folder)


def _fsync_directory(path: Path) -> None:
    _fsync(path, directory=True)


def _fsync(path: Path, *, directory: bool) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:
            return  # some systems (Windows) cannot open a directory; their renames are durable as they are
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask alone sets it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready values: NumPy scalars and arrays as Python ones, NaN and infinities as null
    (strict JSON has no spelling for them)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # NumPy (and torch) scalars, arrays
        return _plain(value.tolist())
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return None
    return value
