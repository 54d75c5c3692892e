"""How long a report takes to draw on 100k scored rows, and permutation importance on 2,000 x 50.

    .venv/bin/python bench/report.py            # about 40 s on 2 cores; prints a Markdown table
    .venv/bin/python bench/report.py --write    # also rewrites the "report" section of bench/RESULTS.md

Predictions are synthetic (drawn around the true class or value; no training), so the figures
measure the report alone: metrics, curves from sorted scores, every figure drawn with matplotlib
(Agg, 100 dpi) and the page assembled. Each case is drawn once to warm up, then timed 3 times in
the same process (median reported). The first report of a process also imports matplotlib
(measured separately). Permutation importance runs the MLP keel's balanced preset builds for 50
number features (hidden 256-128, float32) on 2,000 rows, 5 shuffles per feature, one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from keel.evaluate.predictions import Predictions  # noqa: E402
from keel.report import ReportInputs, build_report  # noqa: E402
from results import write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROWS = 100_000


def _history() -> dict[str, Any]:
    epochs = [{"epoch": e, "loss": 1 / e, "val_loss": 1 / e + 0.05, "val_accuracy": 0.9 - 0.4 / e} for e in range(1, 31)]
    return {"epochs": epochs, "best_epoch": 25, "stopped_early": True, "monitor": "accuracy", "seconds": 12.0}


def classification(n_classes: int, long_names: bool = False) -> ReportInputs:
    rng = np.random.default_rng(0)
    target = rng.integers(0, n_classes, ROWS)
    logits = rng.normal(0, 1, (ROWS, n_classes))
    logits[np.arange(ROWS), target] += 2.0
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    classes = [f"customer segment {k:02d} of the northern region" if long_names else f"class {k}"
               for k in range(n_classes)]
    task = "binary" if n_classes == 2 else "multiclass"
    return ReportInputs(title="bench", task=task, target="label", classes=classes, source="synthetic",
                        predictions=Predictions(task=task, target=target, probabilities=probabilities),
                        history=_history(), importance=_importance("accuracy"))


def regression() -> ReportInputs:
    rng = np.random.default_rng(0)
    target = rng.gamma(4.0, 1000.0, ROWS)
    values = target + rng.normal(0, 1, ROWS) * (100 + 0.1 * target)
    return ReportInputs(title="bench", task="regression", target="price", classes=[], source="synthetic",
                        predictions=Predictions(task="regression", target=target, values=values),
                        history={**_history(), "monitor": "loss"}, importance=_importance("rmse"))


def _importance(metric: str) -> dict[str, Any]:
    return {"metric": metric, "higher_is_better": metric != "rmse", "baseline": 0.8, "rows": 2000, "repeats": 5,
            "source": "validation", "seconds": 0.3,
            "features": [{"name": f"feature_{i}", "mean": 0.1 / (i + 1), "std": 0.01} for i in range(50)]}


def time_report(inputs: ReportInputs, repeats: int = 3) -> tuple[float, int, int]:
    build_report(inputs)  # warm-up: fonts, caches
    times, report = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        report = build_report(inputs)
        times.append(time.perf_counter() - started)
    assert report is not None
    return statistics.median(times), len(report.html), len(report.plots)


def time_importance() -> float:
    import torch

    from keel.evaluate.importance import permutation_importance

    torch.set_num_threads(1)
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(50, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 3))
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(10_000, 50)).astype(np.float32)

    def predict(x: np.ndarray, c: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(network(torch.from_numpy(x)), dim=1).numpy()

    target = predict(numeric, numeric[:, :0]).argmax(axis=1)
    groups = {f"f{i}": ([i], []) for i in range(50)}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        permutation_importance(predict, numeric, np.zeros((10_000, 0), dtype=np.int64), target, None, groups,
                               "multiclass")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    started = time.perf_counter()
    from keel.report.style import pyplot

    pyplot()
    import_seconds = time.perf_counter() - started
    cases = {"binary": classification(2), "10 classes": classification(10),
             "30 classes, 40-character names": classification(30, long_names=True), "regression": regression()}
    lines = ["# Report", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
             f"Produced by bench/report.py: synthetic predictions for {ROWS:,} scored rows, median of 3 builds "
             "after a warm-up, in one process; importing matplotlib (once per process) took "
             f"{import_seconds:.2f} s more.", "",
             "| test rows | task | seconds to build | page size | figures |", "|---:|---|---:|---:|---:|"]
    for name, inputs in cases.items():
        seconds, size, plots = time_report(inputs)
        lines.append(f"| {ROWS:,} | {name} | {seconds:.2f} | {size / 1e6:.2f} MB | {plots} |")
        print(lines[-1], flush=True)
    importance = time_importance()
    lines += ["", f"Permutation importance, 2,000 sampled rows x 50 features x 5 shuffles, MLP 256-128 in float32 "
                  f"(one thread): {importance:.2f} s (median of 3)."]
    text = "\n".join(lines)
    print(text)
    if "--write" in sys.argv:
        write_section("report", text)


if __name__ == "__main__":
    main()
