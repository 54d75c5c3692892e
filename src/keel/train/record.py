"""What a training run records about itself for the report and `keel runs`: the data's shape, each
column's role and statistics, rows per part and durations. Plain JSON, stored in ``keel.json``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from keel.data.schema import Schema

# Distinct values are counted on at most this many rows: an exact count over 10M rows of text costs
# seconds, and the report shows cardinality to tell 3 from 30,000, not to the unit.
UNIQUE_SAMPLE_ROWS = 200_000


def describe_columns(frame: pd.DataFrame, schema: Schema, excluded: set[str]) -> list[dict[str, Any]]:
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
            "unique": int(sample[name].nunique(dropna=True)), "unique_sampled": len(sample) < len(frame),
            "dropped": schema.dropped.get(str(name)),
        })
    return columns


def run_record(frame: pd.DataFrame, schema: Schema, excluded: set[str], rows: dict[str, int],
               seconds: dict[str, float]) -> dict[str, Any]:
    """The run record a model keeps (``Model.run``)."""
    source = frame.attrs.get("source")
    return {
        "data": {"source": str(source) if source else "DataFrame", "rows": int(len(frame)),
                 "columns": int(frame.shape[1])},
        "rows": {key: int(value) for key, value in rows.items()},
        "columns": describe_columns(frame, schema, excluded),
        "seconds": {key: round(float(value), 3) for key, value in seconds.items()},
    }

