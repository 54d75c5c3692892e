"""Data-parallel training on this machine, and an estimate for more: W3 with 1 and 2 processes (issue 16).

W3 is bench/peers.py's throughput workload: 1,000,000 x 50 numbers, binary, MLP 256-256, Adam lr 0.001,
batch 1,024, 3 epochs, no dropout, no validation (the same rows as its Parquet file). keel trains it in
one process (the fused step) and with --nproc 2 (two processes, gloo on the CPU: each trains on half the
rows with half the batch on the autograd path and all-reduces every step's gradients), each in a fresh
process, timed whole and for training alone.

Then the estimate for 4 and 8 machines, from measured parts: the autograd step time of one process at the
per-machine batch (1024 / N rows) on this CPU, and the all-reduce of all gradients (float32, every step)
over a network of stated bandwidth and latency (ring all-reduce: each machine sends and receives
2 (N - 1) / N of the gradient bytes, in 2 (N - 1) messages). It assumes one such CPU per machine, no overlap
of communication with computation (keel all-reduces after the backward pass), and the same number of epochs.

Run:  .venv/bin/python bench/scale.py [--bandwidth-gbit 10] [--latency-us 50] [--results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import LR, WORKLOADS, files_for_w5  # noqa: E402  (bench/ is a folder of scripts, not a package)
from results import write_section  # noqa: E402

SPEC = WORKLOADS["W3"]


def config() -> dict:
    """W3's settings as keel config keys (as bench/peers.py gives keel)."""
    return {"preset": "fast", "model.hidden": SPEC["hidden"], "model.dropout": 0.0, "training.optimizer": "adam",
            "training.lr": LR, "training.epochs": SPEC["epochs"], "training.batch_size": SPEC["batch"],
            "training.validation_split": 0.0, "training.test_split": 0.01, "training.early_stopping": 0,
            "training.seed": 0}


def run(nproc: int, path: Path) -> dict:
    """One keel training of W3 in a fresh process: wall time, training time, accuracy."""
    code = (
        "import json, sys, time, keel\n"
        "started = time.perf_counter()\n"
        f"model = keel.fit({str(path)!r}, target='label', config=json.loads(sys.argv[1]), quiet=True, "
        f"importance=False, nproc={nproc})\n"
        "print(json.dumps({'wall': time.perf_counter() - started, 'training': model.history['seconds'], "
        "'accuracy': model.metrics['accuracy']}))\n")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(config())], capture_output=True, text=True,
                            check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]), nproc=nproc)


def step_seconds(batch: int, steps: int = 30) -> float:
    """The median autograd step of W3's network at this batch size, one process, this CPU."""
    import torch

    from keel.config import load_config
    from keel.nn.network import NetworkSpec, TabularNetwork
    from keel.train.trainer import Batch, Trainer, build_optimizer

    torch.manual_seed(0)
    settings = load_config(config()).training
    network = TabularNetwork(NetworkSpec(numeric_width=50, cardinalities=[], n_outputs=1, hidden=SPEC["hidden"],
                                         dropout=0.0, init="xavier_uniform"))
    trainer = Trainer(network, settings, "binary", "bce", fused=False)
    optimizer = build_optimizer(network, settings)
    rows = Batch(torch.randn(batch, 50), torch.zeros(batch, 0, dtype=torch.long),
                 torch.randint(0, 2, (batch,)).float())
    times = []
    for index in range(steps + 5):
        started = time.perf_counter()
        trainer._autograd_step(rows, optimizer, check="none")
        if index >= 5:  # warm-up
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def estimate(nodes: int, parameters: int, bandwidth: float, latency: float, steps: dict[int, float]) -> dict:
    """One machine's step time on ``nodes`` machines, and its parts."""
    batch = SPEC["batch"] // nodes
    compute = steps[batch]
    payload = parameters * 4
    communicate = 0.0 if nodes == 1 else 2 * (nodes - 1) / nodes * payload / bandwidth + 2 * (nodes - 1) * latency
    return {"nodes": nodes, "batch_per_node": batch, "compute_ms": compute * 1e3, "all_reduce_ms": communicate * 1e3,
            "step_ms": (compute + communicate) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="Network bandwidth per machine (Gbit/s).")
    parser.add_argument("--latency-us", type=float, default=50.0, help="One message's latency (microseconds).")
    parser.add_argument("--results", action="store_true", help="Write the section of bench/RESULTS.md.")
    arguments = parser.parse_args()
    _, parquet = files_for_w5()
    runs = [run(nproc, parquet) for nproc in (1, 2, 1, 2)]
    from keel.nn.network import NetworkSpec, TabularNetwork

    network = TabularNetwork(NetworkSpec(numeric_width=50, cardinalities=[], n_outputs=1, hidden=SPEC["hidden"]))
    parameters = sum(parameter.numel() for parameter in network.parameters())
    steps = {SPEC["batch"] // nodes: step_seconds(SPEC["batch"] // nodes) for nodes in (1, 2, 4, 8)}
    bandwidth, latency = arguments.bandwidth_gbit * 1e9 / 8, arguments.latency_us * 1e-6
    estimates = [estimate(nodes, parameters, bandwidth, latency, steps) for nodes in (1, 2, 4, 8)]
    single_fused = min(run["training"] for run in runs if run["nproc"] == 1)
    steps_per_epoch = int(np.ceil(SPEC["rows"] * 0.99 / SPEC["batch"]))
    lines = [
        "## Data-parallel training (bench/scale.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. W3: 1,000,000 x 50, "
        "binary, MLP 256-256, Adam lr 0.001, batch 1,024 (global), 3 epochs, no dropout, 1% test rows; each run a "
        "fresh process. Two processes each train on half the rows with 512-row batches on the autograd path and "
        "all-reduce every step's gradients (gloo over loopback).",
        "",
        "| processes | wall s | training s | test accuracy |",
        "|---:|---:|---:|---:|",
        *[f"| {run['nproc']} | {run['wall']:.1f} | {run['training']:.1f} | {run['accuracy']:.4f} |" for run in runs],
        "",
        f"Gradients all-reduced every step: {parameters:,} float32 = {parameters * 4 / 1e6:.2f} MB; "
        f"{steps_per_epoch:,} steps an epoch, so {steps_per_epoch * parameters * 4 / 1e9:.2f} GB an epoch through "
        "each machine's reduce (ring: 2 (N-1)/N of it sent and as much received).",
        "",
        f"Estimate for more machines (one such CPU each; {arguments.bandwidth_gbit:g} Gbit/s, "
        f"{arguments.latency_us:g} us a message; measured autograd step times; no overlap):",
        "",
        "| machines | batch per machine | compute ms | all-reduce ms | step ms | speed-up vs 1 (autograd) |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {row['nodes']} | {row['batch_per_node']} | {row['compute_ms']:.2f} | {row['all_reduce_ms']:.2f} | "
          f"{row['step_ms']:.2f} | {estimates[0]['step_ms'] / row['step_ms']:.2f}x |" for row in estimates],
        "",
        f"One process's fused step (keel's default on the CPU) trained W3 in {single_fused:.1f} s, "
        f"{single_fused / (3 * steps_per_epoch) * 1e3:.2f} ms a step: the estimate's speed-ups are against the "
        "autograd step the ranks use; against the fused single process, multiply them by "
        f"{single_fused / (3 * steps_per_epoch) / (estimates[0]['step_ms'] / 1e3):.2f}.",
    ]
    text = "\n".join(lines)
    print(text)
    if arguments.results:
        write_section("scale", text)


if __name__ == "__main__":
    main()
