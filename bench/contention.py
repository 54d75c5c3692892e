"""Training beside other work: keel's timed thread choice (`training.threads: auto`) against a fixed count.

    .venv-bench/bin/python bench/contention.py --results            # default and loans: about 10 minutes
    .venv-bench/bin/python bench/contention.py --datasets default --repeats 3

On a machine where another process keeps a core busy, PyTorch's OpenMP threads wait at every operation's
barrier for the one the scheduler has put aside, and a multi-threaded step slows several times over; one
thread fewer does not. Each table of bench/accuracy.py named (its first 80/20 split) is fitted with the
balanced preset (the same rows, network and epochs on every side; wall seconds of keel.fit, preprocessing,
calibration and permutation importance included) three ways: `training.threads: auto` (timed steps pick
the count), all of PyTorch's threads fixed (keel's behaviour before the tuner, and PyTorch's default), and
one thread fixed; LightGBM's default fit (OpenMP on every core too) is the peer under the same load. Each
under two loads: idle, and beside `--busy` processes (default 1) that spin a core each at normal priority,
started before and stopped after each fit. Fits alternate between the ways, `--repeats` times; the table
gives medians and the ratio of each fixed count to auto. Results are not cached: the load is the point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (bench/ is a folder of scripts, not a package)
from results import machine, write_section  # noqa: E402

SPIN = "while True: pass"


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` Python processes spinning a core each, at the caller's priority, for the block's length."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(processes)]
    time.sleep(0.5)  # let them start spinning
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


Fit = tuple[float, float, str, float]  # seconds, test score, the note on threads (if any), importance's seconds


def keel_fit(train: Any, test: Any, target: str, task: str, threads: int | str) -> Fit:
    """Seconds of keel.fit, the test score, the run's note on its threads (if the tuner moved) and the seconds of
    its permutation importance (part of the fit's; its predictions run after training, tuned too)."""
    import keel

    config = {"preset": "balanced", "task": task, "training.test_split": 0.0, "training.seed": 0,
              "training.threads": threads}
    started = time.perf_counter()
    model = keel.fit(train, target=target, config=config, quiet=True)
    seconds = time.perf_counter() - started
    note = next((note for note in model.notes if "steps ran on" in note), "")
    return seconds, _score(model, test, target, task), note, float(model.importance["seconds"]) if model.importance else math.nan


MAIN = {"regression": "r2", "binary": "roc_auc", "multiclass": "accuracy"}  # bench/accuracy.py's main metrics


def _score(model: Any, test: Any, target: str, task: str) -> float:
    test_x = test.drop(columns=[target])
    warnings.simplefilter("ignore")  # unseen test categories are expected (bench/accuracy.py's tables)
    if task == "regression":
        predictions = model.predict(test_x).astype(float)
    else:
        predictions = model.predict_proba(test_x)[:, np.argsort([str(label) for label in model.classes])]
    return accuracy.score(test, target, task, predictions)[MAIN[task]]


def lightgbm_fit(train: Any, test: Any, target: str, task: str) -> Fit:
    predictions, seconds = accuracy.TOOLS["lightgbm"](train, test, target, task, 0)
    return seconds, accuracy.score(test, target, task, predictions)[MAIN[task]], "", math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="default,loans")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside the loaded fits")
    parser.add_argument("--results", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()
    import torch

    most = torch.get_num_threads()
    ways: dict[str, Any] = {"keel auto": "auto", f"keel {most} threads": most, "keel 1 thread": 1}
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        frame, target, task = accuracy.load_dataset(name)
        train, test = accuracy.split(frame, target, task, 0)
        keel_fit(train.head(2000), test, target, task, "auto")  # warm-up: imports, first allocations
        for load, spinners in (("idle", 0), (f"{args.busy} busy", args.busy)):
            times: dict[str, list[Fit]] = {way: [] for way in [*ways, "lightgbm"]}
            for _ in range(args.repeats):
                for way, threads in ways.items():
                    with busy(spinners):
                        times[way].append(keel_fit(train, test, target, task, threads))
                with busy(spinners):
                    times["lightgbm"].append(lightgbm_fit(train, test, target, task))
            auto = statistics.median(run[0] for run in times["keel auto"])
            for way, runs in times.items():
                seconds = statistics.median(run[0] for run in runs)
                rows.append({"table": name, "load": load, "way": way, "seconds": seconds,
                             "runs": [round(run[0], 2) for run in runs], "score": runs[0][1],
                             "ratio": seconds / auto, "moved": sum(bool(run[2]) for run in runs),
                             "importance": statistics.median(run[3] for run in runs)})
                print(json.dumps(rows[-1]), flush=True)
    text = _table(rows, args, most)
    print(text)
    if args.results:
        write_section("contention", text)


def _table(rows: list[dict[str, Any]], args: argparse.Namespace, most: int) -> str:
    lines = [
        "## Training beside other work (bench/contention.py)", "",
        f"{machine()}, {most} threads for PyTorch. The balanced preset on each table's first 80/20 split (wall seconds "
        "of keel.fit: preprocessing, training, calibration, importance), idle and beside "
        f"{args.busy} process(es) spinning a core each at normal priority; medians of {args.repeats} fits that "
        "alternate between the ways. auto: `training.threads: auto` (timed steps pick the count); the fixed counts "
        "are keel before it (all threads) and one thread. LightGBM's default fit (OpenMP on every core) under the "
        "same load. `moved`: fits whose steps the tuner moved to another count. `importance s`: the part of the fit "
        "spent on permutation importance (median), whose predictions start on the count training ended on.", "",
        "| table | load | way | seconds (median) | each fit | / auto | importance s | main metric | moved |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['table']} | {row['load']} | {row['way']} | {row['seconds']:.2f} | "
                     f"{', '.join(f'{value:.2f}' for value in row['runs'])} | {row['ratio']:.2f}x | "
                     f"{'' if math.isnan(row['importance']) else format(row['importance'], '.2f')} | "
                     f"{row['score']:.4f} | {row['moved']}/{len(row['runs'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
