"""Checkpoints that let a killed training run continue, and the lock that keeps one run per directory.

A run with an output directory keeps two things beside it while it trains (never inside it: the
model directory is written once, atomically, when the run ends, and a non-empty folder that is not
a model would be refused as a destination):

    runs/penguins-20250501-120000/              the model directory, written at the end
    runs/penguins-20250501-120000.checkpoint/   checkpoint.safetensors, while the run is unfinished
    runs/.penguins-20250501-120000.lock         flock-ed by the process writing the run

A checkpoint is one safetensors file: the tensors (weights, optimizer moments, the best epoch's
weights, random generator states) and, in its header's metadata, one JSON document with the rest
(epoch, learning-rate schedule, early-stopping counters, history, the config and a fingerprint of
the data). No pickle: every state is taken apart into tensors and JSON values by hand. It is
written to a temporary file, fsynced and renamed over the previous one, so a kill at any point
leaves the previous checkpoint or the new one, never half of one.

What a checkpoint does not hold is the fitted preprocessing: the split, the column types and every
fitted transform follow from the data and the config (each random choice there is seeded), so a
resumed run fits them again from the same data, and a sha256 of the fitted state checks that it got
the same result. Refitting costs a second on a million rows; storing a vocabulary of 10^6 values in
every checkpoint would cost more, and a model is never half-preprocessed.

A resumed run continues from the end of the epoch the checkpoint was written after, with every
random state as it was then, so it ends with the same weights, bit for bit, as a run that was never
interrupted (on the same machine and versions; see ``tests/reliability/test_resume.py``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from keel.config import Config
from keel.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from keel.data.preprocess import Preprocessor, TargetEncoder
    from keel.data.schema import Schema

try:  # POSIX only; elsewhere runs are not locked (see output_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT: Final = "keel-checkpoint"
FORMAT_VERSION: Final = 1
CHECKPOINT_FILE: Final = "checkpoint.safetensors"
CHECKPOINT_SUFFIX: Final = ".checkpoint"
_METADATA_KEY: Final = "keel.checkpoint"
_TEMPORARY_PREFIX: Final = ".tmp-"

#: Under ``training.checkpoint: auto``, checkpoints are written when the run is expected to take
#: longer than this many seconds (the first epoch's time x epochs x networks).
AUTO_SECONDS: Final = 60.0

# Settings that change where checkpoints are written but not what is trained: a resumed run may
# change them.
# Config keys added after checkpoints were first written, and the value that trains as keel did without them:
# a checkpoint without the key resumes when the config has that value (and is refused otherwise).
_ADDED_KEYS: Final = {"training.steps_per_epoch": "pass", "training.early_stopping_steps": None}
_RESUMABLE_KEYS: Final = frozenset({"training.checkpoint", "training.checkpoint_every", "training.checkpoint_minutes",
                                     "data.spill_directory"})  # where a streamed run's rows go changes nothing

# The named points at which the kill test (tests/reliability/test_resume.py) stops the process, in
# the order a checkpoint write passes them; the trainer adds "epoch-ended" and the pipeline
# "network-trained" and "model-saved".
WRITE_STEPS = ("checkpoint-temp-written", "checkpoint-synced", "checkpoint-renamed", "checkpoint-written")
_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test-only: SIGKILL this process at the point ``KEEL_TEST_KILL_AT`` names.

    ``KEEL_TEST_KILL_AT=checkpoint-synced`` kills at the first time that point is reached,
    ``checkpoint-synced@3`` at the third.
    """
    wanted = os.environ.get("KEEL_TEST_KILL_AT")
    if not wanted or not wanted.startswith(name):
        return
    _passed[name] = _passed.get(name, 0) + 1
    point, _, count = wanted.partition("@")
    if point == name and _passed[name] == (int(count) if count else 1):
        os.kill(os.getpid(), signal.SIGKILL)


# ---- random states ---------------------------------------------------------------------------
@dataclass
class RandomState:
    """Every global random generator a training step may draw from: Python's, NumPy's and PyTorch's.

    The trainer's own shuffling generator is part of :class:`TrainerState`.
    """

    python: list[Any]  # random.getstate(): [version, [625 ints], gauss_next]
    numpy: dict[str, Any]  # np.random.get_state(legacy=False), the key as a list of ints
    cpu: torch.Tensor  # torch.get_rng_state(): uint8
    cuda: list[torch.Tensor]  # one uint8 state per GPU, when training on one

    @classmethod
    def capture(cls, cuda: bool = False) -> "RandomState":
        """The generators' states now; ``cuda`` adds every GPU's (only when CUDA is in use)."""
        version, internal, gauss = random.getstate()
        state = np.random.get_state(legacy=False)
        assert isinstance(state, dict)  # legacy=False always gives the dict form
        numpy_state = {**state, "state": {**state["state"], "key": state["state"]["key"].tolist()}}
        gpus = [s.clone() for s in torch.cuda.get_rng_state_all()] if cuda and torch.cuda.is_available() else []
        return cls([version, list(internal), gauss], numpy_state, torch.get_rng_state(), gpus)

    def restore(self) -> None:
        """Put every generator back in this state."""
        version, internal, gauss = self.python
        random.setstate((version, tuple(internal), gauss))
        state = dict(self.numpy)
        state["state"] = {**state["state"], "key": np.asarray(state["state"]["key"], dtype=np.uint32)}
        np.random.set_state(state)
        torch.set_rng_state(self.cpu.clone())
        if self.cuda:
            torch.cuda.set_rng_state_all([s.clone() for s in self.cuda])

    def pack(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Add the tensors to ``tensors`` (under ``random.``); returns the JSON part."""
        tensors["random.torch"] = self.cpu
        for index, state in enumerate(self.cuda):
            tensors[f"random.cuda.{index}"] = state
        return {"python": self.python, "numpy": self.numpy, "cuda": len(self.cuda)}

    @classmethod
    def unpack(cls, tensors: Mapping[str, torch.Tensor], document: Mapping[str, Any]) -> "RandomState":
        return cls(list(document["python"]), dict(document["numpy"]), tensors["random.torch"],
                   [tensors[f"random.cuda.{index}"] for index in range(int(document["cuda"]))])


# ---- the trainer's state ---------------------------------------------------------------------
@dataclass
class TrainerState:
    """Where :meth:`keel.train.trainer.Trainer.fit` stood at the end of an epoch: all it needs to go on.

    Attributes:
        epoch: The epochs finished (1-based: 3 means epochs 1 to 3 are done).
        network: The network's ``state_dict()``.
        optimizer: The optimizer's tensors by name (moments, step counts).
        optimizer_values: The optimizer's other values (JSON: a flag, an int).
        shuffle: The state of the generator that shuffles the rows each pass (uint8), at the start of the
            current pass when an epoch ended within one (training.steps_per_epoch).
        pass_position: The batches of the current pass already trained on (0: the epoch ended a pass).
        rate: :meth:`keel.train.trainer.LearningRate.state`.
        history: :meth:`keel.train.trainer.History.to_dict` so far.
        best_score: The best (monitored metric, loss) so far, as the trainer compares them; None before any.
        waited: Epochs since the best one (the early-stopping counter).
        best_weights: The best epoch's weights, kept to restore at the end (early stopping on).
        random: The global random generators.
        seconds: Training time so far.
    """

    epoch: int
    network: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_values: dict[str, Any]
    shuffle: torch.Tensor
    rate: dict[str, Any]
    history: dict[str, Any]
    best_score: list[float] | None
    waited: int
    best_weights: dict[str, torch.Tensor] | None
    random: RandomState
    seconds: float
    pass_position: int = 0

    def pack(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Add the tensors to ``tensors`` (under ``current.``); returns the JSON part."""
        tensors.update({f"current.network.{name}": value for name, value in self.network.items()})
        tensors.update({f"current.optimizer.{name}": value for name, value in self.optimizer.items()})
        tensors.update({f"current.best.{name}": value for name, value in (self.best_weights or {}).items()})
        tensors["current.shuffle"] = self.shuffle
        return {"epoch": self.epoch, "optimizer": self.optimizer_values, "rate": self.rate, "history": self.history,
                "best_score": self.best_score, "waited": self.waited, "has_best": self.best_weights is not None,
                "seconds": self.seconds, "pass_position": self.pass_position}

    @classmethod
    def unpack(cls, tensors: Mapping[str, torch.Tensor], document: Mapping[str, Any],
               random_state: RandomState) -> "TrainerState":
        return cls(
            epoch=int(document["epoch"]), network=_prefixed(tensors, "current.network."),
            optimizer=_prefixed(tensors, "current.optimizer."), optimizer_values=dict(document["optimizer"]),
            shuffle=tensors["current.shuffle"], rate=dict(document["rate"]), history=dict(document["history"]),
            best_score=document["best_score"], waited=int(document["waited"]),
            best_weights=_prefixed(tensors, "current.best.") if document["has_best"] else None,
            random=random_state, seconds=float(document["seconds"]),
            pass_position=int(document.get("pass_position", 0)))


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


# ---- where things go -------------------------------------------------------------------------
def _real(output: str | os.PathLike[str]) -> Path:
    # Resolved as save_artifact resolves a symbolic link: the lock and the checkpoint sit beside
    # the directory that is really written.
    return Path(os.path.realpath(os.fspath(output)))


def checkpoint_directory(output: str | os.PathLike[str]) -> Path:
    """Where the checkpoints of a run writing ``output`` go: ``<output>.checkpoint/`` beside it."""
    real = _real(output)
    return real.with_name(real.name + CHECKPOINT_SUFFIX)


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of a run writing ``output``: ``.<name>.lock`` beside it."""
    real = _real(output)
    return real.with_name(f".{real.name}.lock")


# ---- the lock --------------------------------------------------------------------------------
_held: dict[str, list[int]] = {}  # lock file -> [descriptor, depth], for the locks this process holds


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of the run that writes ``output`` for the duration of the block.

    An exclusive ``flock`` on ``.<name>.lock`` beside the directory: a second run for the same
    directory (another ``keel train``, or ``keel.fit(output=...)``) is refused while the first holds
    it, and the system releases it when the holder exits or dies, SIGKILL included, so a crashed run
    never leaves a stale lock behind. Re-entrant within a process. The file names its holder and is
    removed on release. Where ``fcntl`` is missing (Windows) nothing is locked.

    Raises:
        ArtifactError: Another process holds the lock (the message names it), or the lock file
            cannot be created.
    """
    path = lock_path(output)
    key = str(path)
    if key in _held or fcntl is None:
        if key in _held:
            _held[key][1] += 1
        try:
            yield
        finally:
            if key in _held:
                _held[key][1] -= 1
        return
    descriptor = _acquire(path, output)
    _held[key] = [descriptor, 1]
    try:
        yield
    finally:
        del _held[key]
        # Unlinked before it is unlocked: a process waiting on this file finds it gone and retries.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(descriptor)


def _acquire(path: Path, output: str | os.PathLike[str]) -> int:
    assert fcntl is not None
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            raise ArtifactError(f"cannot lock {output} for this run: {path} cannot be created "
                                f"({error.strerror or error}). Choose another --output.") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise ArtifactError(
                f"{output} is being written by another keel run ({holder}); two runs writing one directory would "
                f"mix their files, so this one stops. Wait for that run to end, or choose another --output. (The "
                f"lock, {path}, is released when that process exits or dies.)") from None
        # The previous holder may have removed the file between our open and our flock: then we
        # hold a lock on a file nobody else will find, and must lock the one at the path instead.
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": " ".join(sys.argv)}
    os.ftruncate(descriptor, 0)
    os.write(descriptor, json.dumps(record).encode())
    return descriptor


def _holder(descriptor: int) -> str:
    """Who holds a lock, from what it wrote in the file, in words."""
    try:
        document = json.loads(os.pread(descriptor, 65536, 0) or b"{}")
        return (f"process {int(document['pid'])} on {document['host']}, started {document['started']}: "
                f"{str(document['command'])[:200]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting"


# ---- fingerprints ----------------------------------------------------------------------------
def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a table's column names, types and values (its index too: row numbers name rows).

    Cheap next to reading the file: 0.08 s for a 104 MB CSV of 600,000 rows (read in 0.39 s) and
    0.32 s for 173 MB of 1,000,000 rows (read in 0.76 s), measured on one core of this project's
    Xeon; a sha256 of the file's bytes took 0.16 s for the first, and would miss a DataFrame.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(name), str(dtype)] for name, dtype in frame.dtypes.items()]).encode())
    try:
        hashes = pd.util.hash_pandas_object(frame, index=True)
    except (TypeError, ValueError):  # cells pandas cannot hash (lists, dicts): hash their text
        hashes = pd.util.hash_pandas_object(frame.astype(str), index=True)
    digest.update(np.ascontiguousarray(hashes.to_numpy()).tobytes())
    return digest.hexdigest()


def preprocessing_fingerprint(schema: Schema, preprocessor: Preprocessor, target: TargetEncoder) -> str:
    """sha256 of everything fitted before training: column types, transforms and the target's encoding."""
    state = [schema.to_dict(), preprocessor.state(), target.state()]
    text = json.dumps(state, sort_keys=True, default=lambda value: value.tolist() if hasattr(value, "tolist")
                      else str(value))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _versions() -> dict[str, str]:
    from keel import __version__

    return {"keel": __version__, "torch": torch.__version__, "python": platform.python_version()}


# ---- reading and writing ---------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint as read back: its JSON document and its tensors."""

    path: Path
    document: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def done(self) -> int:
        """How many networks (of a bag) had finished."""
        return len(self.document["done"])

    @property
    def random(self) -> RandomState:
        return RandomState.unpack(self.tensors, self.document["random"])

    @property
    def current(self) -> TrainerState | None:
        """The unfinished network's trainer state, or None when the checkpoint fell between networks."""
        current = self.document.get("current")
        return None if current is None else TrainerState.unpack(self.tensors, current, self.random)

    def describe(self) -> str:
        """Where the run stood, in words: "network 2 of 5 after epoch 7" or "3 of 5 networks done"."""
        document = self.document
        n = int(document["networks"])
        if document.get("current") is None:
            where = f"{self.done} of {n} networks done"
        else:
            epoch = int(document["current"]["epoch"])
            where = (f"network {self.done + 1} of {n} after epoch {epoch}" if n > 1 else f"after epoch {epoch}")
        return f"{where}, written {document['written']}"


def read_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint in ``directory`` (None when there is none).

    Raises:
        ArtifactError: The file exists but is not a keel checkpoint this keel can read.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    from keel.artifact import parse_json, read_model_file, read_tensors

    # Read as a model file is: a checkpoint folder may come from elsewhere (a copied run), so no symlink
    # is followed, the header is checked before safetensors parses it, and its JSON is depth-limited.
    try:
        data = read_model_file(directory, CHECKPOINT_FILE)
        tensors = read_tensors(data, path)  # checks the header first
        header = parse_json(data[8:8 + int.from_bytes(data[:8], "little")], path)
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else {}
        document = parse_json(str(metadata.get(_METADATA_KEY, "null")).encode(), path)
    except ArtifactError as error:
        raise ArtifactError(f"the checkpoint {path} cannot be read ({error}); delete {Path(directory)} to start the "
                            "run over.") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a keel checkpoint; delete {Path(directory)} to start the run over.")
    if document.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"the checkpoint {path} has format version {document.get('format_version')!r} (written by keel "
            f"{(document.get('versions') or {}).get('keel', '?')}); this keel resumes version {FORMAT_VERSION} only. "
            f"Resume with that keel, or delete {Path(directory)} to start the run over.")
    return Checkpoint(path, document, tensors)


def _write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], document: dict[str, Any]) -> None:
    """Write ``directory/checkpoint.safetensors`` atomically: temporary file, fsync, rename, fsync the folder."""
    from safetensors.torch import save_file

    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        _fsync_directory(directory.parent)
    descriptor, temporary = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX, dir=directory)
    os.close(descriptor)
    try:
        text = json.dumps(document)  # NaN and infinities as JSON's NaN / Infinity: Python reads them back
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, temporary,
                  metadata={"format": FORMAT, _METADATA_KEY: text})
        kill_point("checkpoint-temp-written")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        kill_point("checkpoint-synced")
        os.replace(temporary, directory / CHECKPOINT_FILE)
        kill_point("checkpoint-renamed")
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ArtifactError(f"cannot write a checkpoint to {directory}: {error.strerror or error}. Free some "
                                "space, or set training.checkpoint: false to train without checkpoints.") from None
        raise
    _fsync_directory(directory)
    kill_point("checkpoint-written")


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open a folder; their renames are durable as they are
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---- a run's checkpoints ---------------------------------------------------------------------
class RunCheckpoints:
    """The checkpoints of one run that writes an output directory: when to write one, writing it,
    resuming from one, and removing them when the model is saved.

    The pipeline makes one with :meth:`start`, then tells it what it fitted
    (:meth:`check_preprocessing`) and how many networks it trains (:meth:`begin`). The trainer calls
    :meth:`due` and :meth:`save` at the end of each epoch (it is the trainer's ``checkpoint``); the
    pipeline calls :meth:`network_done` after each finished network of a bag.

    Args:
        output: The model directory the run writes.
        settings: The run's configuration.
        frame: The training data as read (for its fingerprint).
        test_frame: The ``test`` data, when given.
        resumed: The checkpoint the run continues from, or None.
    """

    def __init__(self, output: str | os.PathLike[str], settings: Config, frame: pd.DataFrame,
                 test_frame: pd.DataFrame | None, resumed: Checkpoint | None = None) -> None:
        self.output = Path(output)
        self.directory = checkpoint_directory(output)
        self.settings = settings
        self.training = settings.training
        self.frame, self.test_frame = frame, test_frame
        self.resumed = resumed
        self.resume = resumed is not None  # asked to resume (start() sets it also when there was nothing to resume)
        self.started = (resumed.document["started"] if resumed is not None
                        else _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        self._fingerprints: dict[str, str | None] | None = None
        self.preprocessing: str | None = None
        self.n_networks = 1
        self.done: list[tuple[nn.Module, dict[str, Any]]] = []
        # Under "auto", None until the first epoch has been timed; a resumed run had checkpoints on.
        setting = self.training.checkpoint
        self.enabled: bool | None = True if resumed is not None else (None if setting == "auto" else bool(setting))
        self.index = 0
        self.network: nn.Module | None = None  # the one in training
        self.network_started = self.last_time = time.monotonic()
        self.last_epoch = 0
        self.cuda = False
        self.written = 0
        self.precision: str | None = None  # the arithmetic the run trains in (trained_precision)

    @classmethod
    def start(cls, output: str | os.PathLike[str], settings: Config, frame: pd.DataFrame,
              test_frame: pd.DataFrame | None, resume: bool,
              fingerprints: dict[str, str | None] | None = None) -> "RunCheckpoints":
        """The checkpoints of a run about to train, checked against any checkpoint already there.

        Raises:
            ConfigError: A checkpoint is there and ``resume`` is False (it would be lost), or
                ``resume`` is True and the checkpoint was written for another config or data (the
                message lists what differs).
            ArtifactError: The checkpoint cannot be read.
        """
        saved = cls.check_resumable(output, resume)
        directory = checkpoint_directory(output)
        run = cls(output, settings, frame, test_frame, saved)
        run.resume = resume
        if fingerprints is not None:  # a streamed run hashed its data as it read it (frame is a sample)
            run._fingerprints = fingerprints
        if saved is not None:
            run._check_same_run(saved)
        _remove_temporaries(directory)
        return run

    @classmethod
    def check_continuable(cls, output: str | os.PathLike[str], settings: Config, frame: pd.DataFrame,
                          free: set[str]) -> bool:
        """Whether ``output``'s checkpoint directory holds a checkpoint to continue, refused as a resume would
        refuse it where it was written for another run than one of ``settings`` with any values of the ``free``
        keys (those a search sets): another base config, data or keel.

        Raises:
            ConfigError: The checkpoint is of another run (the message lists what differs).
        """
        from keel.config import load_config

        saved = read_checkpoint(checkpoint_directory(output))
        if saved is None:
            return False
        stored = _flatten(saved.document["config"])
        candidate = load_config(settings, overrides={key: stored[key] for key in free if key in stored})
        cls(output, candidate, frame, None, saved)._check_same_run(saved)
        return True

    @staticmethod
    def check_resumable(output: str | os.PathLike[str], resume: bool) -> Checkpoint | None:
        """The checkpoint in ``output``'s checkpoint directory, if any, after the checks that need no data.

        Raises:
            ConfigError: A checkpoint is there and ``resume`` is False (it would be lost), or
                ``resume`` is True and ``output`` holds a finished model and no checkpoint.
        """
        directory = checkpoint_directory(output)
        saved = read_checkpoint(directory)
        if saved is None and resume and (Path(output) / "keel.json").is_file():
            raise ConfigError(f"nothing to resume: {output} holds a finished model and no checkpoint (the run ended). "
                              "Train without --resume to replace it.")
        if saved is not None and not resume:
            raise ConfigError(
                f"{output} has the checkpoint of an unfinished run ({saved.describe()}) in {directory}; continue "
                f"that run with --resume (resume=True in Python), or delete {directory} to start over.")
        return saved

    @property
    def fingerprints(self) -> dict[str, str | None]:
        """The data's and the test data's fingerprints, computed on first use (a run that never
        writes a checkpoint never pays for them)."""
        if self._fingerprints is None:
            self._fingerprints = {
                "data": data_fingerprint(self.frame),
                "test": None if self.test_frame is None else data_fingerprint(self.test_frame)}
        return self._fingerprints

    def _check_same_run(self, saved: Checkpoint) -> None:
        """Refuse a checkpoint written for another config, data or keel, listing every difference."""
        document = saved.document
        before = {key: value for key, value in _flatten(document["config"]).items() if key not in _RESUMABLE_KEYS}
        for key, value in _ADDED_KEYS.items():  # a checkpoint from before the key existed trained as its value says
            before.setdefault(key, value)
        now = {key: value for key, value in _flatten(self.settings.model_dump(mode="json")).items()
               if key not in _RESUMABLE_KEYS}
        differences = [f"{key} {_shown(before.get(key, '(unset)'))} -> {_shown(now.get(key, '(unset)'))}"
                       for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
        sources = {"data": self.frame, "test": self.test_frame}
        for name, fingerprint in self.fingerprints.items():
            stored = document["data"].get(f"{name}_fingerprint")
            if stored != fingerprint:
                source = document["data"].get(f"{name}_source" if name == "test" else "source")
                now_source = None if sources[name] is None else _source(sources[name])
                moved = f"{source} -> {now_source}, " if source != now_source else ""
                what = "the data" if name == "data" else "the test data"
                differences.append(f"{what} ({moved}fingerprint {str(stored)[:12]} -> {str(fingerprint)[:12]})")
        versions = _versions()
        for name in ("keel", "torch"):
            if document["versions"].get(name) != versions[name]:
                differences.append(f"{name} version {document['versions'].get(name)} -> {versions[name]}")
        if differences:
            raise ConfigError(
                f"cannot resume {self.output}: its checkpoint ({saved.describe()}) was written for another run; "
                f"what differs: {'; '.join(differences)}. Resume with the same data, config and versions, or start "
                f"over: delete {saved.path.parent} (or choose another --output).")

    def check_preprocessing(self, schema: Schema, preprocessor: Preprocessor, target: TargetEncoder) -> None:
        """Record what was fitted before training; on a resumed run, check it is what the checkpoint saw.

        Raises:
            ConfigError: The refitted preprocessing differs from the checkpoint's run.
        """
        self.preprocessing = preprocessing_fingerprint(schema, preprocessor, target)
        if self.resumed is not None and self.resumed.document["preprocessing"] != self.preprocessing:
            raise ConfigError(
                f"cannot resume {self.output}: the preprocessing fitted again on the same data and config differs "
                "from the one the checkpoint was trained with (a library that changed how it computes quantiles or "
                f"sorts?). Start over: delete {self.directory}.")

    def begin(self, n_networks: int, device: torch.device) -> None:
        """Say how many networks the run trains (bagging) and where."""
        self.n_networks = n_networks
        self.cuda = device.type == "cuda"

    def trained_precision(self, resolved: str) -> str:
        """The arithmetic the run trains in: a resumed run's, as its checkpoint recorded it (``precision: auto``
        resolves by the machine, and a run resumed on a CPU without AMX must not switch to float32 halfway),
        else ``resolved``; the checkpoints this run writes record it."""
        saved = None if self.resumed is None else self.resumed.document.get("precision")
        self.precision = str(saved) if saved is not None else resolved
        return self.precision

    # -- resuming ------------------------------------------------------------------------------
    def finished(self, index: int) -> bool:
        """Whether the checkpoint holds network ``index`` finished (restore_network will load it)."""
        return self.resumed is not None and index < self.resumed.done

    def restore_network(self, index: int, network: nn.Module) -> dict[str, Any] | None:
        """Load network ``index`` from the checkpoint when it had finished; returns its history, else None.

        When it is the last network the checkpoint holds and none was in training, the random
        generators are put back too: as they were right after it was trained.
        """
        saved = self.resumed
        if saved is None or not self.finished(index):
            return None
        network.load_state_dict(_prefixed(saved.tensors, f"done.{index}."))
        network.eval().to("cpu")
        if index == saved.done - 1 and saved.document.get("current") is None:
            saved.random.restore()
        history = dict(saved.document["done"][index]["history"])
        self.done.append((network, history))
        return history

    def trainer_state(self, index: int) -> TrainerState | None:
        """The saved state of network ``index`` when the checkpoint fell in its training, else None."""
        saved = self.resumed
        if saved is None or index != saved.done:
            return None
        return saved.current

    # -- writing -------------------------------------------------------------------------------
    def begin_network(self, index: int, network: nn.Module, start_epoch: int = 0) -> None:
        """Network ``index`` starts training (after ``start_epoch`` epochs, when resumed)."""
        self.index = index
        self.network = network
        self.network_started = time.monotonic()
        self.last_epoch = start_epoch

    def due(self, epoch: int) -> bool:
        """Whether to write a checkpoint after ``epoch``; the first call under ``auto`` decides whether
        checkpoints are written at all, from that epoch's time."""
        now = time.monotonic()
        if self.enabled is None:
            expected = (now - self.network_started) * self.training.epochs * self.n_networks
            self.enabled = expected > AUTO_SECONDS
        if not self.enabled:
            return False
        every = self.training.checkpoint_every
        if every is not None and epoch - self.last_epoch >= every:
            return True
        return now - self.last_time >= self.training.checkpoint_minutes * 60

    def save(self, state: TrainerState) -> None:
        """Write a checkpoint of the network in training (the trainer calls this when :meth:`due`)."""
        self._write(state, state.random)
        self.last_epoch = state.epoch

    def network_done(self, network: nn.Module, history: dict[str, Any]) -> None:
        """A network of the bag finished; with more to train (and checkpoints on), checkpoint the bag."""
        self.done.append((network, history))
        kill_point("network-trained")
        if self.enabled and len(self.done) < self.n_networks:
            self._write(None, RandomState.capture(self.cuda))

    def _write(self, state: TrainerState | None, random_state: RandomState) -> None:
        from keel.train.guards import check_finite

        tensors: dict[str, torch.Tensor] = {}
        done = []
        for index, (network, history) in enumerate(self.done):
            tensors.update({f"done.{index}.{name}": value for name, value in network.state_dict().items()})
            done.append({"history": history})
        current = None if state is None else state.pack(tensors)
        # Parameters only: buffers may hold infinities by design (the outer edges of number bins).
        networks = [network for network, _ in self.done] + ([self.network] if state and self.network else [])
        check_finite((item for network in networks for item in network.named_parameters()),
                     where=f"writing a checkpoint to {self.directory}")
        fingerprints = self.fingerprints
        document = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "versions": _versions(),
            "started": self.started, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": self.settings.model_dump(mode="json"),
            "data": {"source": _source(self.frame), "data_fingerprint": fingerprints["data"],
                     "test_source": None if self.test_frame is None else _source(self.test_frame),
                     "test_fingerprint": fingerprints["test"]},
            "preprocessing": self.preprocessing, "networks": self.n_networks, "done": done, "current": current,
            "random": random_state.pack(tensors), "precision": self.precision,
        }
        _write_checkpoint(self.directory, tensors, document)
        self.last_time = time.monotonic()
        self.written += 1

    def remove(self) -> None:
        """Remove the checkpoints: the model is saved, and they only cost space."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _remove_temporaries(directory: Path) -> None:
    """Remove the temporary files of writes a kill interrupted (only the lock holder writes here)."""
    for leftover in directory.glob(_TEMPORARY_PREFIX + "*") if directory.is_dir() else []:
        leftover.unlink(missing_ok=True)


def _source(frame: pd.DataFrame) -> str:
    """Where a table came from: its file's absolute path, or "DataFrame"."""
    source = frame.attrs.get("source")
    return os.path.abspath(str(source)) if source else "DataFrame"


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value) if not isinstance(value, str) else value


# ---- finding a run to resume -----------------------------------------------------------------
def find_unfinished_run(data: str | os.PathLike[str], runs: str | os.PathLike[str]) -> Path:
    """The output directory of the latest unfinished run on ``data`` under ``runs`` (``keel train --resume``).

    A run is unfinished while its checkpoint folder exists; it is on ``data`` when the checkpoint
    names the same file (by absolute path). The latest is the one whose checkpoint was written last.

    Raises:
        ConfigError: There is no such run.
    """
    wanted = os.path.abspath(os.fspath(data))
    found = []
    folder = Path(runs)
    for directory in sorted(folder.glob("*" + CHECKPOINT_SUFFIX)) if folder.is_dir() else []:
        try:
            saved = read_checkpoint(directory)
        except (ArtifactError, ConfigError):
            continue
        if saved is not None and saved.document["data"].get("source") == wanted:
            found.append((str(saved.document["written"]), directory.name))
    if not found:
        raise ConfigError(
            f"--resume: no unfinished run on {data} under {folder}/ (a run is resumable while its <run>"
            f"{CHECKPOINT_SUFFIX}/ folder exists); pass the run's directory (--resume RUN_DIR), or train without "
            "--resume.")
    name = max(found)[1]
    return folder / name[: -len(CHECKPOINT_SUFFIX)]
