"""Data-parallel training on a Ray cluster (``keel train --backend ray --workers N``) through Ray Train's
``TorchTrainer``.

Ray starts N workers (one CPU each, or one GPU each when ``training.device`` is CUDA) and joins them in
a torch.distributed process group; each worker then runs :func:`keel.train.pipeline.fit` exactly as a
rank of ``--nproc`` does (:mod:`keel.train.distributed`: the same split and preprocessing on every
rank, its shard of the training rows, gradients averaged every step). Rank 0 saves the model into a
Ray checkpoint; this process copies it from Ray's storage and saves it as a normal keel model. The
data must be readable by every worker: a path on a file system they share, or a DataFrame (sent
through Ray's object store).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from keel.cluster import ray_session
from keel.errors import ConfigError, KeelError


def launch(workers: int, arguments: dict[str, Any], address: str | None, storage: str | None) -> Any:
    """Train with ``workers`` Ray workers; returns the model rank 0 trained (saved to ``output`` when given).

    Args:
        workers: Ray Train workers (each a data-parallel rank).
        arguments: ``fit``'s arguments (data, target, config, test, quiet, importance, output,
            delimiter, encoding).
        address: The Ray cluster to use (None: the Ray this process joined, or a local one).
        storage: Where rank 0's model passes to this process: a directory or URI every node can write
            (Ray's ``storage_path``); None uses a temporary directory here, which serves one machine.

    Raises:
        The KeelError a worker raised, a KeelError naming a worker that died, or ConfigError when Ray
        cannot run the workers.
    """
    from ray.train import RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from keel.model import Model

    gpu = str(arguments["config"].get("training", {}).get("device", "cpu")).startswith("cuda")
    with ray_session(address) as ray, \
            tempfile.TemporaryDirectory(prefix="keel-ray-") as scratch:
        if address is None:  # a local instance cannot grow: Ray would wait for workers it can never place
            have = int(ray.cluster_resources().get("GPU" if gpu else "CPU", 0))
            if have < workers:
                raise ConfigError(f"--workers {workers} needs {workers} {'GPUs' if gpu else 'CPUs'} and the local Ray "
                                  f"instance has {have}; ask for at most {have}, or join a cluster with --ray-address.")
        config = dict(arguments)
        for key in ("data", "test"):  # DataFrames travel through the object store, paths as they are
            if isinstance(config[key], pd.DataFrame):
                config[key] = {"frame": ray.put(config[key])}
        trainer = TorchTrainer(
            _worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker={"GPU" if gpu else "CPU": 1}),
            run_config=RunConfig(storage_path=storage or scratch, name=f"keel-train-{uuid.uuid4().hex[:12]}"))
        try:
            result = trainer.fit()
        except TrainingFailedError as error:
            raise _worker_error(error, workers) from None
        if result.checkpoint is None:
            raise KeelError("the Ray training ended without rank 0's model; nothing was saved. Run again with --debug.")
        with result.checkpoint.as_directory() as directory:
            model = Model.load(directory)
            if arguments["output"] is not None:
                model.save(arguments["output"])
        return model


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: keel's fit as a data-parallel rank; rank 0 reports its model as a checkpoint."""
    import ray
    import ray.train
    import torch

    from keel.train.pipeline import fit

    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    data, test = (ray.get(value["frame"]) if isinstance(value, dict) else value for value in (config["data"], config["test"]))
    scratch = Path(tempfile.mkdtemp(prefix="keel-rank-"))
    try:
        output = scratch / "model" if rank == 0 else None
        fit(data, config["target"], config["config"], test=test, quiet=config["quiet"] or rank != 0,
            importance=config["importance"] and rank == 0, output=output, delimiter=config["delimiter"],
            encoding=config["encoding"])
        if output is not None:
            ray.train.report({"rank": rank}, checkpoint=ray.train.Checkpoint.from_directory(str(output)))
        else:
            ray.train.report({"rank": rank})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _worker_error(error: Exception, workers: int) -> KeelError:
    """The KeelError a worker raised (the lowest rank's), else which worker failed and how."""
    failures: dict[int, BaseException] = dict(getattr(error, "worker_failures", None) or {})
    for rank in sorted(failures):
        if isinstance(failures[rank], KeelError):
            return failures[rank]  # type: ignore[return-value]
    if failures:
        rank = min(failures)
        reason = f"{type(failures[rank]).__name__}: {str(failures[rank]).splitlines()[0] if str(failures[rank]) else ''}"
        return KeelError(f"rank {rank} of the {workers}-worker Ray training failed ({reason}); the other workers were "
                         "stopped and nothing was saved. Run again (with fewer --workers, or without --backend ray, to "
                         "see the error).")
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "resource" in first.lower():
        return ConfigError(f"Ray could not start {workers} workers: {first}. Ask for fewer --workers, or add machines.")
    return KeelError(f"the {workers}-worker Ray training failed: {first}; nothing was saved.")
