"""What a training run records about itself for the report and `keel runs`: the data's shape, each
column's role and statistics, rows per part and durations. Plain JSON, stored in ``keel.json``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keel.data.schema import Schema

# Distinct values are counted on at most this many rows: an exact count over 10M rows of text costs
# seconds, and the report shows cardinality to tell 3 from 30,000, not to the unit.
UNIQUE_SAMPLE_ROWS = 200_000


def describe_columns(frame: pd.DataFrame, schema: Schema, excluded: set[str], sampled: bool = False) -> list[dict[str, Any]]:
    """Every column of ``frame``: its role (feature type, target, dropped, excluded), missing share
    and number of distinct values (counted on a sample of :data:`UNIQUE_SAMPLE_ROWS` rows at most)."""
    types = {feature.name: feature.type for feature in schema.features}
    sample = frame if len(frame) <= UNIQUE_SAMPLE_ROWS else frame.sample(UNIQUE_SAMPLE_ROWS, random_state=0)
    missing = frame.isna().mean() if len(frame) else pd.Series(0.0, index=frame.columns)
    columns = []
    for name in frame.columns:
        if name == schema.target:
            role = "target"
        elif name in types:
            role = types[name]
        elif name in excluded:
            role = "excluded"
        else:
            role = "dropped"
        columns.append({
            "name": str(name), "role": role, "missing": float(missing[name]),
            "unique": _distinct(sample[name]), "unique_sampled": sampled or len(sample) < len(frame),
            "dropped": schema.dropped.get(str(name)),
        })
    return columns


def _distinct(series: pd.Series) -> int:
    """Distinct non-missing values; an image column's arrays (unhashable) by their bytes and shape."""
    try:
        return int(series.nunique(dropna=True))
    except TypeError:
        return int(series.map(lambda value: (value.shape, value.dtype.str, value.tobytes())
                              if isinstance(value, np.ndarray) else value).nunique(dropna=True))


def run_record(frame: pd.DataFrame, schema: Schema, excluded: set[str], rows: dict[str, int],
               seconds: dict[str, float], *, test_frame: pd.DataFrame | None = None,
               bags: list[tuple[int, int]] | None = None, trained: int | None = None, data_rows: int | None = None,
               test_source: str | None = None) -> dict[str, Any]:
    """The run record a model keeps (``Model.run``).

    Args:
        frame: The training data as read.
        schema: What became of its columns.
        excluded: The split_by / order_by / weight columns.
        rows: Rows per part (``train``, ``validation``, ``test``, ``unlabelled``).
        seconds: Durations.
        test_frame: The test data when it came from its own file (``--test``).
        bags: (training rows, validation rows) of each bagged network planned, when there are several.
        trained: How many of them were trained (the first ones; fewer where training.time_limit allowed
            no more); all when None.
        data_rows: The data's rows when ``frame`` is a sample of them (a streamed run).
        test_source: The test data's source when it is not in ``test_frame`` (a streamed run).
    """
    record: dict[str, Any] = {
        "data": {"source": _source(frame), "rows": int(len(frame) if data_rows is None else data_rows),
                 "columns": int(frame.shape[1]),
                 "test_source": _source(test_frame) if test_frame is not None else test_source},
        "rows": {key: int(value) for key, value in rows.items()},
        "columns": describe_columns(frame, schema, excluded, sampled=data_rows is not None),
        "seconds": {key: round(float(value), 3) for key, value in seconds.items()},
    }
    if bags is not None and len(bags) > 1:  # planned: a time limit may have trained one network of them
        done = bags[:trained]
        record["bagging"] = {"networks": len(done), "train_each": [int(train) for train, _ in done],
                             "validation_each": [int(validation) for _, validation in done]}
        if len(done) < len(bags):  # only then: an untimed run's record stays as it was
            record["bagging"]["planned"] = len(bags)
    return record


def _source(frame: pd.DataFrame) -> str:
    source = frame.attrs.get("source")
    return str(source) if source else "DataFrame"

