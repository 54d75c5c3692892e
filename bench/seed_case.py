"""The seed case of issue 2: keel against scikit-learn's MLPClassifier, paired by training seed.

make_classification(n_samples=1000, n_features=10, n_informative=6, n_classes=3, random_state=0),
a stratified 80/20 split (random_state=42); both tools train on the same 800 rows and are scored on
the same 200: an MLP 64-32 ReLU without dropout, Adam lr 0.001, batch 32, 50 epochs, no early
stopping and no validation rows. keel standardizes the features itself (``preset: fast``, which
leaves the initialization and the penalties to keel's defaults); scikit-learn's MLP sits behind a
StandardScaler with its own defaults (alpha=1e-4, Glorot-uniform initialization). Seed ``s`` is
keel's ``training.seed`` and scikit-learn's ``random_state``; the paired difference of the test
accuracies over the seeds is what the comparison rests on.

Run: .venv/bin/python bench/seed_case.py [--seeds N]
Prints each seed's accuracies and training seconds, both mean accuracies, the mean paired
difference (keel - scikit-learn) with its standard error, wins/ties/losses, and the median
training seconds of each tool with their ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import keel

TARGET = "label"


def seed_case_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 800 training and 200 test rows of the case (ten number columns ``f0``..``f9`` and ``label``)."""
    X, y = make_classification(n_samples=1000, n_features=10, n_informative=6, n_classes=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(10)])
    frame[TARGET] = y
    train, test = train_test_split(frame, test_size=0.2, random_state=42, stratify=frame[TARGET])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def keel_config(seed: int) -> dict[str, Any]:
    """keel's side of the case as a user writes it: what it leaves unset comes from keel's defaults."""
    return {
        "preset": "fast", "model.hidden": [64, 32], "model.activation": "relu", "model.dropout": 0.0,
        "training.optimizer": "adam", "training.lr": 0.001, "training.epochs": 50, "training.batch_size": 32,
        "training.early_stopping": 0, "training.validation_split": 0.0, "training.seed": seed,
        "training.test_split": 0.0,  # the 80/20 split is made above; keel trains on all 800 rows
    }


def run_keel(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[float, float]:
    """keel's test accuracy and training seconds for one seed."""
    started = time.perf_counter()
    model = keel.fit(train, target=TARGET, config=keel_config(seed), quiet=True)
    seconds = time.perf_counter() - started
    return float((model.predict(test) == test[TARGET].to_numpy()).mean()), seconds


def run_sklearn(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[float, float]:
    """scikit-learn's test accuracy and training seconds for one seed (all 50 epochs: tol=0)."""
    X, y = train.drop(columns=TARGET).to_numpy(), train[TARGET].to_numpy()
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(64, 32), batch_size=32, max_iter=50, learning_rate_init=1e-3, tol=0,
        n_iter_no_change=10**9, random_state=seed))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(X, y)
    seconds = time.perf_counter() - started
    return float(pipeline.score(test.drop(columns=TARGET).to_numpy(), test[TARGET].to_numpy())), seconds


@dataclass
class PairedComparison:
    """keel against scikit-learn over paired seeds: means, the mean paired difference and its SE."""

    keel_mean: float
    sklearn_mean: float
    difference: float
    standard_error: float
    wins: int
    ties: int
    losses: int


def compare(keel_accuracies: list[float], sklearn_accuracies: list[float]) -> PairedComparison:
    """Summarize paired accuracies (same seed, same position); the SE is sd(differences) / sqrt(n)."""
    differences = [k - s for k, s in zip(keel_accuracies, sklearn_accuracies, strict=True)]
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return PairedComparison(
        keel_mean=statistics.mean(keel_accuracies), sklearn_mean=statistics.mean(sklearn_accuracies),
        difference=statistics.mean(differences), standard_error=spread / math.sqrt(len(differences)),
        wins=sum(d > 0 for d in differences), ties=sum(d == 0 for d in differences),
        losses=sum(d < 0 for d in differences))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30, help="paired training seeds 0..N-1 (interleaved)")
    args = parser.parse_args()
    train, test = seed_case_data()
    run_keel(train, test, 0)  # warm-up: first-call costs (imports, allocator) are not training time
    results: dict[str, list[tuple[float, float]]] = {"keel": [], "sklearn": []}
    print(f"{'seed':>4}  {'keel acc':>8}  {'keel s':>7}  {'sklearn acc':>11}  {'sklearn s':>9}")
    for seed in range(args.seeds):
        results["keel"].append(run_keel(train, test, seed))
        results["sklearn"].append(run_sklearn(train, test, seed))
        (ka, ks), (sa, ss) = results["keel"][-1], results["sklearn"][-1]
        print(f"{seed:>4}  {ka:>8.4f}  {ks:>7.3f}  {sa:>11.4f}  {ss:>9.3f}")
    paired = compare([a for a, _ in results["keel"]], [a for a, _ in results["sklearn"]])
    seconds = {tool: statistics.median(s for _, s in runs) for tool, runs in results.items()}
    print(f"\nmean test accuracy over {args.seeds} paired seeds: keel {paired.keel_mean:.4f}, "
          f"scikit-learn {paired.sklearn_mean:.4f}")
    print(f"paired difference keel - scikit-learn {paired.difference:+.4f} (standard error {paired.standard_error:.4f}); "
          f"keel wins/ties/losses {paired.wins}/{paired.ties}/{paired.losses}")
    print(f"median training seconds: keel {seconds['keel']:.3f}, scikit-learn {seconds['sklearn']:.3f}; "
          f"keel/sklearn time ratio {seconds['keel'] / seconds['sklearn']:.2f}")


if __name__ == "__main__":
    main()
