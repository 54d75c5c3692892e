"""The export's parity line speaks of labels only where the model predicts labels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from keel.export.summary import report_tables


def _report(task: str, measure: str) -> SimpleNamespace:
    parity = {"rows": 100, "source": "validation", "measure": measure, "max_difference": 1.2e-7, "tolerance": 1e-4,
              "label_mismatches": 0, "near_ties": 0}
    return SimpleNamespace(parity=parity, files=[Path("model.onnx")], format="onnx", seconds=0.5,
                           model=SimpleNamespace(task=task, path=None), quantized_parity=dict(parity),
                           pruning=None, compression=None, notes=[])


def test_a_regression_export_mentions_no_labels() -> None:
    lines = report_tables(_report("regression", "difference in standard deviations of the target"))  # type: ignore[arg-type]
    text = "\n".join(str(line) for line in lines)
    assert "label" not in text
    assert "max difference in standard deviations of the target 1.20e-07 (tolerance 0.0001)" in text


def test_a_classifier_export_counts_label_mismatches() -> None:
    lines = report_tables(_report("multiclass", "absolute difference of probabilities"))  # type: ignore[arg-type]
    text = "\n".join(str(line) for line in lines)
    assert "0 label mismatch(es)" in text and "0 label change(s) on 100 rows" in text
