"""Column work on threads: the same results as one thread, in the same order, with the same errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.config import load_config
from keel.data import parallel
from keel.data.preprocess import Preprocessor
from keel.data.schema import infer_schema
from keel.errors import DataError
from tests.conftest import make_classification_frame


def _frame() -> pd.DataFrame:
    frame = make_classification_frame(200_000 // 4, seed=3)  # 50k rows: several 16k-row chunks
    frame["count"] = np.arange(len(frame)) % 7
    frame["flag"] = np.where(np.arange(len(frame)) % 3 == 0, "on", "off")
    return frame


def _run(frame: pd.DataFrame, preset: str):  # type: ignore[no-untyped-def]
    config = load_config({"target": "label", "preset": preset})
    schema = infer_schema(frame, config)
    preprocessor = Preprocessor(schema, config.preprocessing).fit(frame, rows=np.arange(0, len(frame), 2))
    order = np.random.default_rng(0).permutation(len(frame))
    return schema, preprocessor.state(), preprocessor.transform(frame, order)


@pytest.mark.parametrize("preset", ["fast", "balanced"])
def test_threads_give_exactly_what_one_thread_gives(monkeypatch, preset) -> None:
    if parallel.usable_cores() < 2:
        pytest.skip("one core: nothing runs in parallel")
    frame = _frame()
    monkeypatch.setattr(parallel, "PARALLEL_CELLS", 10**12)
    serial = _run(frame, preset)
    monkeypatch.setattr(parallel, "PARALLEL_CELLS", 0)
    assert parallel.workers_for(len(frame) * 6, 6) >= 2
    threaded = _run(frame, preset)
    assert serial[0] == threaded[0] and serial[1] == threaded[1]
    np.testing.assert_array_equal(serial[2].numeric, threaded[2].numeric)
    np.testing.assert_array_equal(serial[2].categorical, threaded[2].categorical)
    assert serial[2].unseen == threaded[2].unseen


def test_the_first_failing_column_in_table_order_is_the_error(monkeypatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_CELLS", 0)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0] * 10, "b": ["1", "2", "x"] * 10, "c": ["4", "y", "6"] * 10,
                          "label": [0, 1] * 15})
    config = load_config({"target": "label", "input_features": [
        {"name": "a", "type": "number"}, {"name": "b", "type": "number"}, {"name": "c", "type": "number"}]})
    with pytest.raises(DataError, match="column 'b' holds numbers, but row 3 has the value 'x'"):
        infer_schema(frame, config)


def test_map_columns_keeps_order_and_small_work_stays_on_one_thread() -> None:
    import threading

    names = parallel.map_columns(lambda _: threading.current_thread().name, range(4), cells=10)
    assert names == [threading.current_thread().name] * 4
    assert parallel.map_columns(lambda x: x * x, range(20), cells=10**9) == [x * x for x in range(20)]
