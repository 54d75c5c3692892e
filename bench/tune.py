"""keel tune against the balanced and best presets on the tables of bench/accuracy.py.

    .venv/bin/python bench/tune.py --results                 # 13 tables x 3 splits: about 5 hours on 2 cores
    .venv/bin/python bench/tune.py --seeds 0 --results       # one split: about 80 minutes
    .venv/bin/python bench/tune.py --datasets wine,concrete --seeds 0

The same 80/20 splits, test rows and metrics as bench/accuracy.py (its functions are used). On each
split: keel with the balanced preset, keel with the best preset, and ``keel.tune`` from the balanced
preset (20 trials, TPE, median pruning, a 5-minute budget: no trial starts after 300 s, then the best
settings are trained again) -- each scored on the test rows, which the search never sees (trials are
scored on validation rows cut from the training part). Runs in keel's own environment (.venv: Optuna
is the keel[tune] extra; the peers of bench/accuracy.py are not needed).

Results are cached per (tool, dataset, seed) in bench/.cache/tune.json; --results writes the table
into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (bench/ is a folder of scripts, not a package)
from results import write_section  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "tune.json"
TRIALS, BUDGET = 20, 300.0
TOOLS = ("keel-balanced", "keel-best", "keel-tuned")
# A win is a mean main metric higher by more than this; a smaller difference is a tie (one split's
# test rows cannot tell such differences apart).
MARGIN = 0.002


def tuned(train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """keel tune from the balanced preset: test predictions and what the search did."""
    import keel

    config = {"preset": "balanced", "task": task, "training.test_split": 0.0, "training.seed": seed}
    started = time.perf_counter()
    model, result = keel.tune(train, target=target, config=config, trials=TRIALS, time_limit=BUDGET, quiet=True)
    seconds = time.perf_counter() - started
    summary = result.summary
    details = {"seconds": seconds, "trials": summary["states"], "best_params": summary["best"]["params"],
               "best_validation": summary["best"]["value"], "metric": summary["metric"]}
    return _predictions(model, test, target, task), details


def _predictions(model: Any, test: pd.DataFrame, target: str, task: str) -> np.ndarray:
    """As bench/accuracy.py's keel tool: values, or probabilities in sorted-label order."""
    test_x = test.drop(columns=[target])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unseen test categories are expected
        if task == "regression":
            return model.predict(test_x).astype(float)
        proba = model.predict_proba(test_x)
    return proba[:, np.argsort([str(label) for label in model.classes])]


def run(tool: str, train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, seed: int) -> dict[str, Any]:
    if tool == "keel-tuned":
        predictions, details = tuned(train, test, target, task, seed)
    else:
        predictions, seconds = accuracy.TOOLS[tool](train, test, target, task, seed)
        details = {"seconds": seconds}
    return {**accuracy.score(test, target, task, predictions), **details}


def report(cache: dict[str, Any], datasets: list[str]) -> str:
    """The table (mean over the splits run) and the issue's target, as markdown."""
    rows = ["| dataset | metric | splits | balanced | best | tuned | tuned - balanced | tuned - best | balanced s | best s "
            "| tune s | trials (complete/pruned/failed) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    tally = {tool: {"win": 0, "tie": 0, "loss": 0} for tool in ("keel-balanced", "keel-best")}
    compared, fewer = 0, []
    for name in datasets:
        task = accuracy.DATASETS[name][2]
        main = accuracy.METRICS[task][0]
        seeds = [seed for seed in (0, 1, 2) if all(f"{tool}/{name}/{seed}" in cache for tool in TOOLS)]
        if not seeds:
            continue
        compared += 1
        if len(seeds) < 3:
            fewer.append(name)
        mean = {tool: statistics.mean(cache[f"{tool}/{name}/{seed}"][main] for seed in seeds) for tool in TOOLS}
        secs = {tool: statistics.mean(cache[f"{tool}/{name}/{seed}"]["seconds"] for seed in seeds) for tool in TOOLS}
        states: dict[str, int] = {}
        for seed in seeds:
            for state, count in cache[f"keel-tuned/{name}/{seed}"]["trials"].items():
                states[state] = states.get(state, 0) + count
        for tool, counts in tally.items():
            gap = mean["keel-tuned"] - mean[tool]
            counts["win" if gap > MARGIN else "loss" if gap < -MARGIN else "tie"] += 1
        rows.append(f"| {name} | {main} | {len(seeds)} | {mean['keel-balanced']:.4f} | {mean['keel-best']:.4f} | "
                    f"{mean['keel-tuned']:.4f} | {mean['keel-tuned'] - mean['keel-balanced']:+.4f} | "
                    f"{mean['keel-tuned'] - mean['keel-best']:+.4f} | {secs['keel-balanced']:.1f} | "
                    f"{secs['keel-best']:.1f} | {secs['keel-tuned']:.1f} | {states.get('complete', 0)}/"
                    f"{states.get('pruned', 0)}/{states.get('fail', 0)} |")
    if not compared:
        return "(no table has all three tools yet)"
    def verdict(tool: str) -> str:
        counts = tally[tool]
        return (f"{counts['win']}/{compared} ({100 * counts['win'] / compared:.0f}%) of the tables by more than "
                f"{MARGIN} (ties {counts['tie']}, losses {counts['loss']})")

    return "\n".join([
        *rows, "",
        f"- keel tune beats the balanced preset on {verdict('keel-balanced')} (target >= 60%)",
        f"- keel tune beats the best preset on {verdict('keel-best')}",
        *([f"- on fewer than 3 splits: {', '.join(fewer)} (a difference there is one split's)"] if fewer else []),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(accuracy.DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tools", default=",".join(TOOLS), help="tools to run (a result already cached is kept, not run again)")
    parser.add_argument("--results", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="write the table from the cache, train nothing")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    cache: dict[str, Any] = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if not args.report_only:
        for name in datasets:
            frame, target, task = accuracy.load_dataset(name)
            for seed in map(int, args.seeds.split(",")):
                train, test = accuracy.split(frame, target, task, seed)
                for tool in args.tools.split(","):
                    key = f"{tool}/{name}/{seed}"
                    if key in cache:
                        continue
                    cache[key] = run(tool, train, test, target, task, seed)
                    print(f"{key}: {json.dumps(cache[key])}", flush=True)
                    CACHE.parent.mkdir(exist_ok=True)
                    CACHE.write_text(json.dumps(cache, indent=1))
    table = report(cache, datasets)
    print(table)
    if args.results:
        import torch

        import keel

        write_section("tune", "\n".join([
            "## keel tune against the presets (bench/tune.py)", "",
            f"keel {keel.__version__}, torch {torch.__version__}, 2-core CPU. The splits, test rows and main metrics of "
            f"bench/accuracy.py; keel tune from the balanced preset: {TRIALS} trials, TPE, median pruning, no trial "
            f"started after {BUDGET:.0f} s, then the best settings trained again (tune s includes the refit). "
            "Main metric on the test rows, mean over the splits run; seconds are wall time.", "", table]))


if __name__ == "__main__":
    main()
