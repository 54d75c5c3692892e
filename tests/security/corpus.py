"""Hostile model directories, and the audited subprocess that loads them through every reader.

:data:`CASES` lists more than 25 ways a model directory received from someone else can attack the
process that loads it: pickle payloads under every file name keel reads, safetensors headers that
lie, a ``keel.json`` that declares absurd sizes or nests 100,000 deep, names and symbolic links
that lead out of the directory, ONNX external data, a flipped byte in each file. Each case copies
one tiny real model (:func:`build_corpus`) and damages the copy; where an attacker would, it
rewrites the checksums in ``keel.json`` too, so that the damage gets past them.

Layout: ``ROOT/<case>/model`` is the model directory; ``ROOT/<case>`` itself holds the case's
"secrets" (files outside the directory that a careless loader would read) and ``PWNED``, which a
pickle payload creates if it ever runs.

Run as ``python -m tests.security.corpus ROOT RESULTS.json``, this module loads every case through
the Python API (``keel.load`` and ``test_predictions``), the CLI (``keel info``, in this process),
the torch-free :class:`keel.runtime.Predictor`, the server's start-up (``check_export``, then
``create_app`` over ``load_predictor``) and ``keel runs``' reader, with a ``sys.addaudithook`` hook
installed after every module is imported and every reader has loaded the pristine model once (so
that no import's ``exec`` event is mistaken for an attack). It writes one record per case and
reader: the outcome, the error's type and message, the seconds taken, the growth of the peak RSS over the RSS before it, and
every audit event that is a finding (an ``open`` outside the model directory, any process start,
``exec``, ``pickle.find_class``, a file created outside the directory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOADERS = ("api", "cli", "predictor", "server", "runs")
# Readers of the model's weights and test predictions: the Python API and the CLI over it. The
# predictor and the server read keel.json and model.onnx only ("runs" reads keel.json and never refuses:
# it lists a damaged run with its problem).
FULL = frozenset({"api", "cli"})
SERVING = frozenset({"predictor", "server"})
EVERY = FULL | SERVING
NONE: frozenset[str] = frozenset()

MANIFEST = "keel.json"
WEIGHTS = "weights.safetensors"
PREDICTIONS = "predictions.safetensors"
ONNX = "model.onnx"
REPORT = "reports/model.onnx.json"


@dataclass(frozen=True)
class Case:
    """One hostile model directory.

    Attributes:
        name: Folder name, also the test id.
        attack: What the directory does, in a few words.
        build: Damages a copy of the pristine model: ``build(model_dir, case_dir)``.
        refused_by: The readers that must refuse it with an ArtifactError; the others must load it
            (they never read the damaged part) without any audit finding.
    """

    name: str
    attack: str
    build: Callable[[Path, Path], None]
    refused_by: frozenset[str] = field(default=EVERY)


# ---- damage helpers --------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs ``touch PWNED`` through os.system: proof that a loader executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def pickle_payload(case_dir: Path) -> bytes:
    return pickle.dumps({"weights": _Payload(case_dir / "PWNED")}, protocol=2)


def torch_payload(case_dir: Path) -> bytes:
    """A ``.pt`` file (torch.save's zip of pickles) whose unpickling runs the payload."""
    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": _Payload(case_dir / "PWNED")}, buffer)
    return buffer.getvalue()


def read_manifest_dict(model: Path) -> dict[str, Any]:
    return json.loads((model / MANIFEST).read_text(encoding="utf-8"))


def write_manifest_dict(model: Path, document: dict[str, Any]) -> None:
    (model / MANIFEST).write_text(json.dumps(document), encoding="utf-8")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relist(model: Path, **extra: Path) -> None:
    """Rewrite keel.json's checksums to match the files as they are now, as an attacker would.

    Files reached through a symbolic link get their target's checksum, and every ``made_from``
    follows the weights: a loader that only compares checksums accepts the directory. ``extra``
    adds entries (name -> the file whose checksum to list).
    """
    document = read_manifest_dict(model)
    files = document["files"]
    weights = model / WEIGHTS
    weights_sha = sha256_of(weights) if weights.is_file() else files[WEIGHTS]["sha256"]
    for name, record in files.items():
        file = model / name
        if file.is_file():
            record["sha256"] = sha256_of(file)
        if record.get("made_from"):
            record["made_from"] = weights_sha
    for name, source in extra.items():
        files[name] = {"sha256": sha256_of(source), "made_from": weights_sha}
    write_manifest_dict(model, document)


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def build(model: Path, case_dir: Path) -> None:
        document = read_manifest_dict(model)
        change(document)
        write_manifest_dict(model, document)
    return build


def replace_file(name: str, content: Callable[[Path], bytes], *, listed: bool = True) -> Callable[[Path, Path], None]:
    """Put ``content(case_dir)`` under ``name``, relisted (or added to the list) when ``listed``."""
    def build(model: Path, case_dir: Path) -> None:
        file = model / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content(case_dir))
        if listed:
            document = read_manifest_dict(model)
            if name not in document["files"]:
                document["files"][name] = {"sha256": "0" * 64, "made_from": None}
                write_manifest_dict(model, document)
            relist(model)
    return build


def flip_byte(name: str, position: float = 0.5) -> Callable[[Path, Path], None]:
    """Flip one bit of the byte at ``position`` (a share of the file's length); checksums unchanged."""
    def build(model: Path, case_dir: Path) -> None:
        data = bytearray((model / name).read_bytes())
        data[int(len(data) * position)] ^= 0x01
        (model / name).write_bytes(bytes(data))
    return build


# ---- safetensors -----------------------------------------------------------------------------
def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_safetensors(header: dict[str, Any] | bytes, body: bytes, declared: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + body


def edit_weights(change: Callable[[dict[str, Any], bytes], bytes], name: str = WEIGHTS) -> Callable[[Path, Path], None]:
    """Rewrite the safetensors file ``name`` through ``change(header, body) -> file bytes``; relisted."""
    def build(model: Path, case_dir: Path) -> None:
        header, body = split_safetensors((model / name).read_bytes())
        (model / name).write_bytes(change(header, body))
        relist(model)
    return build


def tensors(header: dict[str, Any]) -> list[str]:
    """The tensor names, by offset."""
    return sorted((key for key in header if key != "__metadata__"), key=lambda key: header[key]["data_offsets"][0])


def _huge_header(header: dict[str, Any], body: bytes) -> bytes:
    return join_safetensors(header, body, declared=10**12)


def _header_beyond_file(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return join_safetensors(text, body, declared=len(text) + len(body) + 1)


def _nested_header(header: dict[str, Any], body: bytes) -> bytes:
    return join_safetensors(b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", body)


def _overlapping(header: dict[str, Any], body: bytes) -> bytes:
    first, second = tensors(header)[:2]
    begin, end = header[second]["data_offsets"]
    start = header[first]["data_offsets"][0] + 4
    header[second]["data_offsets"] = [start, start + end - begin]
    return join_safetensors(header, body)


def _out_of_range(header: dict[str, Any], body: bytes) -> bytes:
    last = tensors(header)[-1]
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + 4096, end + 4096]
    return join_safetensors(header, body)


def _truncated(header: dict[str, Any], body: bytes) -> bytes:
    return join_safetensors(header, body[:len(body) // 2])


def _byte_count(header: dict[str, Any], body: bytes) -> bytes:
    name = next(key for key in tensors(header) if len(header[key]["shape"]) == 2)
    rows, columns = header[name]["shape"]
    header[name]["shape"] = [rows, columns + 1]
    return join_safetensors(header, body)


def _dtype(header: dict[str, Any], body: bytes) -> bytes:
    name = next(key for key in tensors(header) if header[key]["dtype"] == "F32")
    header[name]["dtype"] = "I32"
    return join_safetensors(header, body)


def _shape(header: dict[str, Any], body: bytes) -> bytes:
    name = next(key for key in tensors(header) if len(header[key]["shape"]) == 2)
    header[name]["shape"] = header[name]["shape"][::-1]
    return join_safetensors(header, body)


# ---- keel.json -------------------------------------------------------------------------------
def _wrong_top_level_types(document: dict[str, Any]) -> None:
    document.update(bagging="two", network="mlp", preprocessing={"size": 1}, files=[WEIGHTS])


def _wrong_inner_types(document: dict[str, Any]) -> None:
    document["preprocessing"] = [{"kind": "number"}, {"kind": "category", "name": 5, "vocabulary": 7}]
    document["schema"]["features"] = "size"


def _set_network(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["network"].update(values)


def _set_transform(kind: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``values`` in the first preprocessing transform of ``kind``."""
    return lambda document: next(item for item in document["preprocessing"] if item["kind"] == kind).update(values)


def _deep_config(model: Path, case_dir: Path) -> None:
    text = (model / MANIFEST).read_text(encoding="utf-8")
    nested = "[" * 100_000 + "]" * 100_000
    (model / MANIFEST).write_text(text.replace('"config": {', f'"config": {{"deep": {nested}, ', 1), encoding="utf-8")


def _many_settings(document: dict[str, Any]) -> None:
    document["config"].update({f"unknown_{index}": index for index in range(100_000)})


def _many_values(document: dict[str, Any]) -> None:
    document["history"]["loss"] = [0.5] * 11_000_000  # 44 MB of JSON, about 400 MB once parsed


def _oversize(model: Path, case_dir: Path) -> None:
    with open(model / MANIFEST, "r+b") as handle:  # sparse: 257 MB long, no disk used
        handle.seek(257 * 2**20)
        handle.write(b" ")


def _not_utf8(model: Path, case_dir: Path) -> None:
    (model / MANIFEST).write_bytes((model / MANIFEST).read_bytes().replace(b'"keel-model"', b'"keel-\xff\xfe"', 1))


# ---- names and links -------------------------------------------------------------------------
def _listed_secret(name: Callable[[Path], str]) -> Callable[[Path, Path], None]:
    """List a secret outside the directory under ``name(case_dir)``, with the secret's real checksum."""
    def build(model: Path, case_dir: Path) -> None:
        secret = case_dir / "secret.bin"
        secret.write_bytes(b"the secret outside the model directory\n")
        document = read_manifest_dict(model)
        document["files"][name(case_dir)] = {"sha256": sha256_of(secret), "made_from": None}
        write_manifest_dict(model, document)
    return build


def _link(name: str, target: Callable[[Path, Path], Path]) -> Callable[[Path, Path], None]:
    """Replace ``name`` with a symbolic link to ``target(model, case_dir)``; relisted to the target's checksum."""
    def build(model: Path, case_dir: Path) -> None:
        pointee = target(model, case_dir)
        os.unlink(model / name) if (model / name).is_file() else shutil.rmtree(model / name)
        os.symlink(pointee, model / name)
        if name != MANIFEST:
            relist(model)
    return build


def _outside_copy(name: str) -> Callable[[Path, Path], Path]:
    """A copy of the model's own ``name`` outside the directory: the link's checksum matches."""
    def target(model: Path, case_dir: Path) -> Path:
        copy = case_dir / "outside" / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model / name, copy)
        return copy
    return target


def _linked_folder(model: Path, case_dir: Path) -> None:
    outside = case_dir / "outside-reports"
    shutil.copytree(model / "reports", outside)
    shutil.rmtree(model / "reports")
    os.symlink(outside, model / "reports")


def _fifo(model: Path, case_dir: Path) -> None:
    (model / WEIGHTS).unlink()
    os.mkfifo(model / WEIGHTS)


def _directory(model: Path, case_dir: Path) -> None:
    (model / WEIGHTS).unlink()
    (model / WEIGHTS).mkdir()


# ---- ONNX ------------------------------------------------------------------------------------
def edit_onnx(change: Callable[[Any, Path], None]) -> Callable[[Path, Path], None]:
    def build(model: Path, case_dir: Path) -> None:
        import onnx

        proto = onnx.load_from_string((model / ONNX).read_bytes())
        change(proto, case_dir)
        (model / ONNX).write_bytes(proto.SerializeToString())
        relist(model)
    return build


def _externalize(tensor: Any, location: str, case_dir: Path) -> None:
    """Move ``tensor``'s bytes to an external file at ``location`` (relative to the model directory)."""
    from onnx import TensorProto

    (case_dir / "secret.bin").write_bytes(tensor.raw_data or b"\0" * 64)
    length = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _external_initializer(location: Callable[[Path], str]) -> Callable[[Any, Path], None]:
    def change(proto: Any, case_dir: Path) -> None:
        tensor = next(item for item in proto.graph.initializer if item.raw_data)
        _externalize(tensor, location(case_dir), case_dir)
    return change


def _external_attribute(proto: Any, case_dir: Path) -> None:
    """External data hidden in a Constant node's tensor inside an If node's branch."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    value = numpy_helper.from_array(np.arange(4, dtype=np.float32), "hidden")
    _externalize(value, "../secret.bin", case_dir)
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=value)], "branch", [],
                               [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    condition = helper.make_tensor("keel_condition", TensorProto.BOOL, [], [True])
    proto.graph.initializer.append(condition)
    proto.graph.node.append(helper.make_node("If", ["keel_condition"], ["keel_hidden"], then_branch=branch,
                                             else_branch=branch))


def _metadata(key: str, value: str) -> Callable[[Any, Path], None]:
    def change(proto: Any, case_dir: Path) -> None:
        entry = next(item for item in proto.metadata_props if item.key == key)
        entry.value = value
    return change


# ---- the corpus ------------------------------------------------------------------------------
CASES: tuple[Case, ...] = (
    Case("pristine", "the model as saved: every reader loads it (the control)", lambda model, case_dir: None, NONE),
    # pickle payloads under every file name keel reads
    Case("pickle-keel-json", "keel.json is a pickle whose unpickling runs a shell command",
         replace_file(MANIFEST, pickle_payload, listed=False)),
    Case("pickle-weights", "weights.safetensors is a pickle payload (checksum relisted)",
         replace_file(WEIGHTS, pickle_payload), FULL),
    Case("pickle-predictions", "predictions.safetensors is a pickle payload (checksum relisted)",
         replace_file(PREDICTIONS, pickle_payload), FULL),
    Case("pickle-onnx", "model.onnx is a pickle payload (checksum relisted)", replace_file(ONNX, pickle_payload),
         SERVING),
    Case("pickle-report-json", "reports/model.onnx.json is a pickle payload (checksum relisted)",
         replace_file(REPORT, pickle_payload), NONE),
    Case("pickle-tflite-json", "model.tflite.json, listed, is a pickle payload", replace_file(
        "model.tflite.json", pickle_payload), NONE),
    Case("torch-pt-as-weights", "weights.safetensors is a torch.save .pt file with a __reduce__ payload",
         replace_file(WEIGHTS, torch_payload), FULL),
    Case("torch-pt-extra", "an extra model.pt (listed) and weights.pt (unlisted) a careless loader might read",
         lambda model, case_dir: (replace_file("model.pt", torch_payload)(model, case_dir),
                                  (model / "weights.pt").write_bytes(torch_payload(case_dir))), NONE),
    # safetensors headers that lie
    Case("safetensors-huge-header", "the header length claims 10^12 bytes", edit_weights(_huge_header), FULL),
    Case("safetensors-header-beyond-file", "the header length runs past the end of the file",
         edit_weights(_header_beyond_file), FULL),
    Case("safetensors-nested-header", "the header JSON nests 100,000 lists", edit_weights(_nested_header), FULL),
    Case("safetensors-overlapping", "two tensors' byte ranges overlap", edit_weights(_overlapping), FULL),
    Case("safetensors-out-of-range", "a tensor's byte range lies past the end of the data",
         edit_weights(_out_of_range), FULL),
    Case("safetensors-truncated", "the file ends halfway through the data", edit_weights(_truncated), FULL),
    Case("safetensors-byte-count", "a tensor's shape needs more bytes than its byte range holds",
         edit_weights(_byte_count), FULL),
    Case("safetensors-dtype", "a float32 weight is declared int32 (same bytes)", edit_weights(_dtype), FULL),
    Case("safetensors-shape", "a weight matrix is declared transposed (same bytes)", edit_weights(_shape), FULL),
    Case("predictions-huge-header", "predictions.safetensors' header length claims 10^12 bytes",
         edit_weights(_huge_header, PREDICTIONS), FULL),
    # keel.json
    Case("manifest-wrong-types", "keel.json's top level has strings for numbers and lists for dicts",
         edit_manifest(_wrong_top_level_types)),
    Case("manifest-wrong-inner-types", "preprocessing and schema entries lack keys or have the wrong types",
         edit_manifest(_wrong_inner_types), FULL | {"server"}),
    Case("manifest-nan-constant", "a number column's center is NaN (every prediction was silently empty)",
         edit_manifest(_set_transform("number", center=float("nan"))), FULL),
    Case("manifest-zero-scale", "a number column's scale is 0 (a division by zero crashed predict)",
         edit_manifest(_set_transform("number", scale=0.0)), FULL),
    Case("absurd-cardinality", "the network declares a category embedding of 10^9 rows",
         edit_manifest(_set_network(cardinalities=[10**9])), FULL),
    Case("absurd-hidden", "the network declares a hidden layer 10^9 wide",
         edit_manifest(_set_network(hidden=[10**9])), FULL),
    Case("absurd-embedding", "the network declares an embedding 10^9 wide",
         edit_manifest(_set_network(embedding_dims=[10**9])), FULL),
    Case("absurd-ensemble", "the network declares 10^9 ensemble members", edit_manifest(_set_network(ensemble=10**9)),
         FULL),
    Case("absurd-bagging", "keel.json declares 10^9 bagged networks",
         edit_manifest(lambda document: document.update(bagging=10**9)), FULL),
    Case("absurd-layers", "the network declares 100,000 hidden layers",
         edit_manifest(_set_network(hidden=[4] * 100_000)), FULL),
    Case("manifest-deep-nesting", "keel.json's config nests 100,000 lists", _deep_config),
    Case("manifest-many-settings", "keel.json's config holds 100,000 unknown settings", edit_manifest(_many_settings),
         FULL),
    Case("manifest-many-values", "keel.json's history holds 3,000,000 numbers", edit_manifest(_many_values)),
    Case("manifest-oversize", "keel.json is 257 MB (sparse)", _oversize),
    Case("manifest-not-utf8", "keel.json holds bytes that are not UTF-8", _not_utf8),
    # names that leave the directory
    Case("files-parent", "files lists ../secret.bin (with the secret's checksum)",
         _listed_secret(lambda case_dir: "../secret.bin")),
    Case("files-absolute", "files lists the secret's absolute path",
         _listed_secret(lambda case_dir: str(case_dir / "secret.bin"))),
    Case("files-dotdot-inside", "files lists reports/../../secret.bin",
         _listed_secret(lambda case_dir: "reports/../../secret.bin")),
    Case("files-backslash", "files lists ..\\secret.bin", _listed_secret(lambda case_dir: "..\\secret.bin")),
    Case("files-nul", "files lists a name with a NUL byte", _listed_secret(lambda case_dir: "secret\0.bin")),
    Case("files-weights-parent", "files lists ../weights.safetensors beside weights.safetensors",
         _listed_secret(lambda case_dir: "../" + WEIGHTS)),
    # symbolic links
    Case("symlink-weights-outside", "weights.safetensors links to a copy outside (checksum matches)",
         _link(WEIGHTS, _outside_copy(WEIGHTS)), FULL),
    Case("symlink-weights-passwd", "weights.safetensors links to /etc/passwd (checksum relisted)",
         _link(WEIGHTS, lambda model, case_dir: Path("/etc/passwd")), FULL),
    Case("symlink-onnx", "model.onnx links to a copy outside (checksum matches)", _link(ONNX, _outside_copy(ONNX))),
    Case("symlink-keel-json", "keel.json links to a copy outside", _link(MANIFEST, _outside_copy(MANIFEST))),
    Case("symlink-folder", "the reports folder links to a copy outside (checksums match)", _linked_folder, FULL),
    Case("fifo-weights", "weights.safetensors is a named pipe (an open would block forever)", _fifo, FULL),
    Case("directory-weights", "weights.safetensors is a directory", _directory, FULL),
    # ONNX
    Case("onnx-external-parent", "an initializer's data is external, at ../secret.bin",
         edit_onnx(_external_initializer(lambda case_dir: "../secret.bin")), SERVING),
    Case("onnx-external-absolute", "an initializer's data is external, at the secret's absolute path",
         edit_onnx(_external_initializer(lambda case_dir: str(case_dir / "secret.bin"))), SERVING),
    Case("onnx-external-inside", "an initializer's data is external, in the directory itself",
         edit_onnx(_external_initializer(lambda case_dir: "weights.safetensors")), SERVING),
    Case("onnx-external-subgraph", "a Constant inside an If branch holds external data at ../secret.bin",
         edit_onnx(_external_attribute), SERVING),
    Case("onnx-metadata-nested", "the ONNX metadata keel.schema nests 100,000 lists",
         edit_onnx(_metadata("keel.schema", "[" * 100_000 + "]" * 100_000)), SERVING),
    Case("onnx-metadata-wrong-types", "the ONNX metadata keel.outputs is a number",
         edit_onnx(_metadata("keel.outputs", "5")), SERVING),
    # a flipped byte in each file (checksums left as they were)
    Case("flip-keel-json", "keel.json's first byte is damaged", flip_byte(MANIFEST, 0.0)),
    Case("flip-weights", "one byte of weights.safetensors is flipped", flip_byte(WEIGHTS), FULL),
    Case("flip-predictions", "one byte of predictions.safetensors is flipped", flip_byte(PREDICTIONS), FULL),
    Case("flip-onnx", "one byte of model.onnx is flipped", flip_byte(ONNX)),
    Case("flip-report-json", "one byte of reports/model.onnx.json is flipped", flip_byte(REPORT), FULL),
)


def make_pristine(directory: Path) -> Path:
    """Train, save and export the tiny real model every case starts from (about 2 s)."""
    import keel
    from tests.conftest import FAST, make_classification_frame

    model = keel.fit(make_classification_frame(60), target="label", config={**FAST, "training.epochs": 2}, quiet=True)
    model.save(directory)
    model.export("onnx")
    return directory


def build_corpus(pristine: Path, root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Copy the pristine model directory once per case under ``root`` and damage each copy.

    Returns:
        Case name -> its model directory (``root/<case>/model``).
    """
    built = {}
    for case in CASES:
        if names is not None and case.name not in names:
            continue
        model = root / case.name / "model"
        shutil.copytree(pristine, model, symlinks=True)
        case.build(model, model.parent)
        built[case.name] = model
    return built


# ---- the audited loading -------------------------------------------------------------------
# Events that are findings wherever they happen: a process started, code compiled from data run,
# something unpickled.
_FORBIDDEN = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
              "exec", "pickle.find_class", "marshal.loads", "ctypes.dlopen", "os.startfile"}
# Events that create or change files: findings outside the model directory.
_WRITES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
           "os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move", "tempfile.mkstemp",
           "tempfile.mkdtemp"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Auditor:
    """Collects the audit events that are findings while :attr:`allowed` is set."""

    def __init__(self) -> None:
        self.allowed: list[str] | None = None
        self.findings: list[str] = []
        self.annotations = 0
        self._inside = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.allowed is None or self._inside:
            return
        self._inside = True  # realpath below raises no events today, but a future one must not recurse
        try:
            self._check(event, args)
        finally:
            self._inside = False

    def _check(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "exec" and _evaluates_annotation(sys._getframe(2)):
            self.annotations += 1
        elif event in _FORBIDDEN or event.startswith("subprocess."):
            self.findings.append(f"{event} {_short(args)}")
        elif event == "open":
            path, mode, flags = args
            if isinstance(path, (str, bytes, os.PathLike)):
                writing = any(letter in str(mode or "") for letter in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
                self._place(f"open{'(write)' if writing else ''}", path)
        elif event in _WRITES:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)):
                    self._place(event, path)

    def _place(self, event: str, path: Any) -> None:
        resolved = os.path.realpath(os.fsdecode(path))  # a link inside that points outside counts as outside
        if not any(resolved == allowed or resolved.startswith(allowed + os.sep) for allowed in self.allowed or []):
            self.findings.append(f"{event} {resolved}")


def _evaluates_annotation(frame: Any) -> bool:
    """Whether the ``exec`` event comes from evaluating a type annotation written in source code.

    FastAPI (``inspect.signature(eval_str=True)``) and pydantic (``typing.ForwardRef._evaluate``)
    evaluate the string annotations of the functions and classes they are given, keel's own routes
    included, each time an app or a type adapter is built. Those strings come from Python source,
    never from a model file; any other ``exec`` is a finding.
    """
    code = frame.f_code if frame is not None else None
    if code is None:
        return False
    source = os.path.basename(code.co_filename)
    return (source == "typing.py" and code.co_name == "_evaluate") or (
        source == "inspect.py" and code.co_name in ("get_annotations", "<dictcomp>"))


def _short(args: tuple[Any, ...]) -> str:
    return repr(args)[:200]


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux).

    Not ``getrusage``: its peak is inherited from the parent across fork and exec, so under a
    large pytest process it would hide any growth here.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> float:
    """Restart the peak (``VmHWM``) from the current RSS; returns the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # Linux >= 4.0: reset the peak resident set size
    except OSError:
        pass  # the peak then runs from the start: growth is measured against an earlier baseline
    return _memory_mb("VmRSS")


def _load_api(model: Path) -> str:
    import keel

    loaded = keel.load(model)
    loaded.test_predictions  # noqa: B018 - reading the kept predictions is part of what is audited
    return "loaded"


def _load_cli(model: Path) -> str:
    import contextlib

    from keel.cli import app

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            app(["info", str(model)], prog_name="keel")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    lines = stderr.getvalue().strip().splitlines()
    if code == 0:
        return "loaded"
    raise _CliFailure(code, lines)


class _CliFailure(Exception):
    def __init__(self, code: int, lines: list[str]) -> None:
        super().__init__(" | ".join(lines))
        self.code, self.lines = code, lines


def _load_predictor(model: Path) -> str:
    from keel.runtime import Predictor

    Predictor.load(model)
    return "loaded"


def _load_server(model: Path) -> str:
    from keel.serve.__main__ import check_export
    from keel.serve.app import create_app, load_predictor
    from keel.serve.settings import ServeSettings

    check_export(model)  # what `python -m keel.serve MODEL` runs first, then the app over the predictor
    create_app(ServeSettings(model=str(model)), load_predictor(model))
    return "loaded"


def _load_runs(model: Path) -> str:
    from keel.runs import read_run

    run = read_run(model)  # what `keel runs` does for each folder it lists
    return "listed with a problem" if run.problem else "loaded"


READERS: dict[str, Callable[[Path], str]] = {
    "api": _load_api, "cli": _load_cli, "predictor": _load_predictor, "server": _load_server, "runs": _load_runs}


def audit(models: dict[str, Path], scratch: Path) -> list[dict[str, Any]]:
    """Load every model through every reader under the audit hook; one record per (case, reader)."""
    import time
    import warnings

    from keel.errors import KeelError

    auditor = Auditor()
    sys.addaudithook(auditor.hook)
    records = []
    for case, model in models.items():
        for loader, read in READERS.items():
            baseline = _reset_peak()
            auditor.findings, auditor.annotations = [], 0
            auditor.allowed = [os.path.realpath(model), os.path.realpath(scratch)]
            start, cpu = time.perf_counter(), time.process_time()
            record: dict[str, Any] = {"case": case, "loader": loader}
            try:
                with warnings.catch_warnings(record=True):  # a recorded warning reads no source line
                    record["outcome"] = read(model)
            except KeelError as error:
                record.update(outcome="refused", error=type(error).__name__, message=str(error))
            except _CliFailure as failure:
                record.update(outcome=f"exit {failure.code}", error="SystemExit", message=str(failure),
                              lines=len(failure.lines))
            except BaseException as error:  # noqa: BLE001 - any other exception is the finding
                record.update(outcome="crashed", error=type(error).__name__, message=str(error)[:500])
            finally:
                record["seconds"] = round(time.perf_counter() - start, 3)
                record["cpu_seconds"] = round(time.process_time() - cpu, 3)  # what a busy neighbour does not inflate
                auditor.allowed = None
            record.update(rss_growth_mb=round(_memory_mb("VmHWM") - baseline, 1), findings=auditor.findings,
                          annotation_evals=auditor.annotations, pwned=(model.parent / "PWNED").exists())
            records.append(record)
    return records


def warm_up(model: Path) -> None:
    """Import every module the readers use, and run each once on the pristine model: an import's
    ``exec`` events must happen before the hook is installed."""
    import contextlib
    import warnings

    import onnx  # noqa: F401 - imported by nothing keel loads, but keeps its protobuf setup out of the audit

    with warnings.catch_warnings(record=True), contextlib.redirect_stdout(io.StringIO()):
        for read in READERS.values():
            read(model)


def canary(scratch: Path) -> dict[str, Any]:
    """Do, under the same hook, each thing the audit must catch: proof that it would.

    Unpickles a harmless object, opens a file outside the allowed folder, runs ``exec``, starts a
    process and grows the heap by 64 MB; returns the findings and the measured RSS growth.
    """
    import collections

    auditor = Auditor()
    sys.addaudithook(auditor.hook)
    baseline = _reset_peak()
    auditor.allowed = [os.path.realpath(scratch)]
    pickle.loads(pickle.dumps(collections.OrderedDict(a=1)))
    with open(os.__file__, "rb"):
        pass
    exec("1 + 1")  # noqa: S102 - the event the audit must see
    os.system("true")  # noqa: S605 - the event the audit must see
    (scratch / "inside.txt").write_text("allowed")
    ballast = bytearray(64 * 2**20)
    for index in range(0, len(ballast), 4096):  # touch every page, so that it counts as resident
        ballast[index] = 1
    auditor.allowed = None
    return {"findings": auditor.findings, "rss_growth_mb": _memory_mb("VmHWM") - baseline}


def main(argv: list[str]) -> None:
    """``python -m tests.security.corpus ROOT RESULTS.json [CASE ...]``: audit the corpus under ROOT.

    ``--canary`` in place of the case names runs :func:`canary` instead.
    """
    root, output = Path(argv[0]), Path(argv[1])
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)
    if argv[2:] == ["--canary"]:
        output.write_text(json.dumps(canary(scratch)), encoding="utf-8")
        return
    names = argv[2:] or [case.name for case in CASES]
    models = {name: root / name / "model" for name in names if (root / name / "model").exists()}
    warm_up(root / "pristine" / "model")
    records = audit(models, scratch)
    output.write_text(json.dumps(records, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
