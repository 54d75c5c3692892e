"""bench/accuracy.py compares a reference's timing with today's only where both ran on the same CPU.

A reference timed on an AMX machine (bfloat16 matmuls) set beside a run on an AVX2 machine (float32) once
nearly made the speed table; every cached result now carries its CPU's label, and the table skips (and
counts as not met) a pair whose labels differ.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import accuracy  # noqa: E402
from results import machine  # noqa: E402


def test_machine_names_the_cpu_and_its_cores() -> None:
    label = machine()
    assert label and " cores" in label


@pytest.fixture
def ten_thousand_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every table 10,000 rows (the speed check's threshold), without loading the real ones."""
    frame = pd.DataFrame({"x": np.zeros(10_000), "y": np.zeros(10_000)})
    monkeypatch.setattr(accuracy, "load_dataset", lambda name: (frame, "y", "regression"))


def _run(seconds: float, r2: float, cpu: str | None) -> dict[str, object]:
    return {"r2": r2, "seconds": seconds, **({"cpu": cpu} if cpu else {})}


def test_speed_compares_runs_on_one_cpu(ten_thousand_rows: None) -> None:
    here, there = "CPU A, 2 cores, AVX2", "CPU B, 2 cores, AMX"
    cache = {f"{accuracy.REFERENCE}/loans/0": _run(50.0, 0.48, here), "keel-balanced/loans/0": _run(5.0, 0.49, here),
             "lightgbm/loans/0": _run(0.25, 0.49, here)}
    lines = accuracy.speed(cache, ["loans"])
    row = next(line for line in lines if line.startswith("| loans"))
    assert "| 10.0x |" in row and "| 0.25 | 20x |" in row
    assert "5x faster than the reference on the tables of 10,000 rows or more: 1/1 (loans)" in "\n".join(lines)

    cache[f"{accuracy.REFERENCE}/loans/0"]["cpu"] = there  # the same figures, from another machine
    lines = accuracy.speed(cache, ["loans"])
    text = "\n".join(lines)
    assert not any(line.startswith("| loans") for line in lines)
    assert "5x faster than the reference on the tables of 10,000 rows or more: 0/1 (none)" in text
    assert f"loans (reference on {there}, balanced on {here})" in text


def test_speed_leaves_out_a_reference_without_a_cpu_and_lightgbm_from_another(ten_thousand_rows: None) -> None:
    here = "CPU A, 2 cores, AVX2"
    cache = {f"{accuracy.REFERENCE}/loans/0": _run(50.0, 0.48, None), "keel-balanced/loans/0": _run(5.0, 0.49, here)}
    assert "an unrecorded CPU" in "\n".join(accuracy.speed(cache, ["loans"]))
    cache[f"{accuracy.REFERENCE}/loans/0"]["cpu"] = here
    cache["lightgbm/loans/0"] = _run(0.25, 0.49, "CPU B, 2 cores, AMX")
    row = next(line for line in accuracy.speed(cache, ["loans"]) if line.startswith("| loans"))
    assert "| - | - |" in row and "10.0x" in row
