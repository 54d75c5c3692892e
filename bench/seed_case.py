"""The seed case of issue 2: keel against scikit-learn's MLPClassifier on the same split and settings.

1,000 rows x 10 features, 3 classes (make_classification(..., random_state=0)), an 80/20 split,
MLP 64-32 ReLU, Adam lr 0.001, 50 epochs, batch 32, 10% validation with early stopping
(patience 10, as scikit-learn's n_iter_no_change). Both standardize the features.

Run: .venv/bin/python bench/seed_case.py [--repeats N]
Prints each tool's test accuracy and training seconds per training seed, their medians, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import keel


def seed_case_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    X, y = make_classification(n_samples=1000, n_features=10, n_informative=6, n_classes=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(10)])
    frame["label"] = y
    train, test = train_test_split(frame, test_size=0.2, random_state=0)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def run_keel(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[float, float]:
    config = {
        "preset": "fast", "model.hidden": [64, 32], "model.activation": "relu", "model.dropout": 0.0,
        "training.optimizer": "adam", "training.lr": 0.001, "training.epochs": 50, "training.batch_size": 32,
        "training.validation_split": 0.1, "training.early_stopping": 10, "training.seed": seed,
        "training.test_split": 0.0,  # the 80/20 split is made above; keel trains on all 800 rows
    }
    started = time.perf_counter()
    model = keel.fit(train, target="label", config=config, quiet=True)
    seconds = time.perf_counter() - started
    return float((model.predict(test) == test["label"].to_numpy()).mean()), seconds


def run_sklearn(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[float, float]:
    X, y = train.drop(columns="label").to_numpy(), train["label"].to_numpy()
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(64, 32), activation="relu", solver="adam", learning_rate_init=0.001,
        max_iter=50, batch_size=32, early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
        random_state=seed))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(X, y)
    seconds = time.perf_counter() - started
    return float(pipeline.score(test.drop(columns="label").to_numpy(), test["label"].to_numpy())), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="training seeds per tool (interleaved)")
    args = parser.parse_args()
    train, test = seed_case_data()
    run_keel(train, test, 0)  # warm-up: first-call costs (imports, allocator) are not training time
    results: dict[str, list[tuple[float, float]]] = {"keel": [], "sklearn": []}
    print(f"{'seed':>4}  {'keel acc':>8}  {'keel s':>7}  {'sklearn acc':>11}  {'sklearn s':>9}")
    for seed in range(args.repeats):
        results["keel"].append(run_keel(train, test, seed))
        results["sklearn"].append(run_sklearn(train, test, seed))
        (ka, ks), (sa, ss) = results["keel"][-1], results["sklearn"][-1]
        print(f"{seed:>4}  {ka:>8.4f}  {ks:>7.3f}  {sa:>11.4f}  {ss:>9.3f}")
    med = {tool: (statistics.median(a for a, _ in runs), statistics.median(s for _, s in runs))
           for tool, runs in results.items()}
    print(f"\nseed 0 split, 50 epochs max: keel accuracy {results['keel'][0][0]:.4f} vs scikit-learn "
          f"{results['sklearn'][0][0]:.4f}")
    print(f"median over {args.repeats} seeds: keel accuracy {med['keel'][0]:.4f} in {med['keel'][1]:.3f} s, "
          f"scikit-learn {med['sklearn'][0]:.4f} in {med['sklearn'][1]:.3f} s; "
          f"keel/sklearn time ratio {med['keel'][1] / med['sklearn'][1]:.2f}")


if __name__ == "__main__":
    main()
