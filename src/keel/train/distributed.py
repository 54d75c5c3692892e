"""Data-parallel training over processes with torch.distributed (gloo on the CPU, nccl on CUDA).

``keel train --nproc N`` (``fit(..., nproc=N)``) starts N processes; each prepares the data as a
single run does (the same split and preprocessing: both are deterministic from the data and the
config, so every rank holds the same fitted state without sending it), trains on its shard of the
training rows (every N-th row, the same count on each rank) with 1/N of the batch, and averages the
gradients of every step over the ranks before the optimizer steps (one all-reduce of all gradients,
flattened). The weights therefore stay identical on every rank, as does each epoch's validation score
(every rank scores the whole validation set), so early stopping decides alike without a message.
Rank 0 saves the model. Shards differ from a single process's batches, so results are statistically,
not bitwise, those of one process. ``torchrun -m keel train ...`` runs the same, one process per rank.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from keel import errors
from keel.errors import KeelError

# How long a rank waits for the others at a collective before failing (a dead rank ends the job
# with an error, never a hang).
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job."""

    rank: int
    world: int


def current() -> Ranks | None:
    """The job this process belongs to, or None when it trains alone."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size())
    return None


def shard(positions: np.ndarray, ranks: Ranks) -> np.ndarray:
    """This rank's share of row positions: every ``world``-th one from ``rank``, the same count on each
    rank (the last few rows of an uneven split are left out, fewer than ``world``)."""
    usable = len(positions) - len(positions) % ranks.world
    return positions[ranks.rank:usable:ranks.world]


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """Replace each gradient by its mean over the ranks: one all-reduce of all of them, flattened."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def agree_min(value: int) -> int:
    """The smallest of every rank's ``value`` (a plan each rank made on its own clock), or ``value`` alone."""
    if current() is None:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (pickled through torch.distributed between
    the job's own processes only; [value] alone)."""
    ranks = current()
    if ranks is None:
        return [value]
    values: list[Any] = [None] * ranks.world
    dist.all_gather_object(values, value)
    return values


def gather_to(value: Any, rank: int) -> list[Any] | None:
    """Every rank's ``value``, in rank order, on ``rank`` alone (None on the others; [value] alone)."""
    ranks = current()
    if ranks is None:
        return [value]
    values: list[Any] = [None] * ranks.world
    dist.gather_object(value, values if ranks.rank == rank else None, dst=rank)
    return values if ranks.rank == rank else None


def barrier() -> None:
    """Wait for every rank (before rank 0 saves: a rank that failed means nothing is saved)."""
    if current() is not None:
        dist.barrier()


def launch(nproc: int, arguments: dict[str, Any]) -> Any:
    """Run ``fit`` in ``nproc`` processes; returns the model rank 0 saved (to ``output``, or to a
    temporary directory when there is none, loaded back from it).

    Raises:
        The KeelError a rank raised (the same class and message), or KeelError when a rank died.
    """
    import torch.multiprocessing as mp

    from keel.model import Model

    # When one rank fails, torch warns that it terminates the others: a line before keel's own one-line error.
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    with tempfile.TemporaryDirectory(prefix="keel-ranks-") as scratch, _quieter(spawn_log):
        output = arguments["output"] or Path(scratch) / "model"
        try:
            mp.spawn(_rank_main, args=(nproc, _free_port(), {**arguments, "output": str(output)}, scratch),
                     nprocs=nproc, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            raise _rank_error(scratch, nproc, error) from None
        return Model.load(output)


@contextlib.contextmanager
def _quieter(log: logging.Logger) -> Iterator[None]:
    """``log`` says only errors while inside."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# Set in the ranks launch() starts: their launcher holds the output's lock for them.
_LAUNCHED = "KEEL_RANK_OF_LAUNCH"


def launched() -> bool:
    """Whether this process is a rank that :func:`launch` started (not one of torchrun's)."""
    return os.environ.get(_LAUNCHED) == "1"


def join_torchrun() -> Ranks | None:
    """Join the job ``torchrun`` started (its RANK / WORLD_SIZE / MASTER_* variables), once; None alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
    return current()


def _rank_main(rank: int, world: int, port: int, arguments: dict[str, Any], scratch: str) -> None:
    """One rank: join the job, train, leave; a KeelError is written down for the parent to raise."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), _LAUNCHED: "1"})
    killer = os.environ.get("KEEL_TEST_KILL_RANK")  # the kill tests stop one rank only
    if killer is not None and int(killer) != rank:
        os.environ.pop("KEEL_TEST_KILL_AT", None)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    backend = "nccl" if torch.cuda.is_available() and str(arguments.get("device", "cpu")).startswith("cuda") else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
    try:
        from keel.train.pipeline import fit

        model = fit(arguments["data"], arguments["target"], arguments["config"], test=arguments["test"],
                    quiet=arguments["quiet"] or rank != 0, importance=arguments["importance"] and rank == 0,
                    output=arguments["output"] if rank == 0 else None, delimiter=arguments["delimiter"],
                    encoding=arguments["encoding"])
        digests = os.environ.get("KEEL_TEST_RANK_DIGESTS")  # test-only: every rank's final weights, compared
        if digests:
            state = model.network.state_dict()
            digest = hashlib.sha256(b"".join(state[name].numpy().tobytes() for name in sorted(state))).hexdigest()
            Path(digests, f"rank-{rank}.txt").write_text(digest)
    except KeelError as error:
        where = {key: getattr(error, key, None) for key in ("file", "column", "row")}
        Path(scratch, f"error-{rank}.json").write_text(json.dumps(
            {"type": type(error).__name__, "message": str(error), "where": {k: v for k, v in where.items() if v is not None}},
            default=str))
        raise SystemExit(2) from None
    except Exception as error:  # a collective that failed because another rank died, or a bug: say what it was
        message = f"rank {rank} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        Path(scratch, f"error-{rank}.json").write_text(json.dumps({"type": "KeelError", "message": message,
                                                                   "knock_on": True}))
        raise SystemExit(1) from None
    finally:
        dist.destroy_process_group()


def _rank_error(scratch: str, nproc: int, error: Exception) -> KeelError:
    """Which rank was killed, if one was (the others' failed collectives only follow from it); else the
    error a rank wrote down (the first rank's); else which rank failed."""
    signal_name = getattr(error, "signal_name", None)
    if signal_name:
        return KeelError(f"rank {getattr(error, 'error_index', '?')} of the {nproc}-process training was killed by "
                         f"signal {signal_name}; the other ranks were stopped and nothing was saved. Run again (with "
                         "fewer --nproc, or without, to see the error).")
    documents = [json.loads(path.read_text()) for index in range(nproc)
                 if (path := Path(scratch, f"error-{index}.json")).is_file()]
    # A rank's own KeelError (bad data in its share) before the others' failed collectives that followed it.
    for document in sorted(documents, key=lambda document: bool(document.get("knock_on"))):
        kind = getattr(errors, document["type"], KeelError)
        try:
            return kind(document["message"], **document.get("where", {}))
        except TypeError:  # an error class with other arguments
            return KeelError(document["message"])
    return KeelError(f"rank {getattr(error, 'error_index', '?')} of the {nproc}-process training failed; the other "
                     "ranks were stopped and nothing was saved. Run again (with fewer --nproc, or without, to see the "
                     "error).")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
