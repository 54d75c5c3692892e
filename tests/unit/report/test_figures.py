"""Figures stay readable: with 30 classes of 40-character names no two tick labels overlap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from keel.report import figures
from keel.report.style import pyplot

LONG_NAMES = [f"customer segment {index:02d} of the northern region" for index in range(30)]


def _overlaps(figure: Any) -> list[tuple[str, str]]:
    """Pairs of tick labels on the same axis whose drawn boxes intersect."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    found = []
    for axis in figure.axes:
        for ticks in (axis.get_xticklabels(), axis.get_yticklabels()):
            boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in ticks if label.get_text()]
            for (name, box), (other, other_box) in zip(boxes, boxes[1:]):
                if box.overlaps(other_box):
                    found.append((name, other))
    return found


@pytest.mark.parametrize("k", [3, 12, 30])
def test_confusion_matrix_labels_do_not_overlap(k: int) -> None:
    rng = np.random.default_rng(0)
    figure = figures.draw_confusion_matrix(rng.integers(0, 50, (k, k)), LONG_NAMES[:k])
    try:
        labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
        assert len(set(labels)) == k and all(len(label) <= 20 for label in labels)
        assert _overlaps(figure) == []
    finally:
        pyplot().close(figure)


def test_probability_boxes_for_thirty_classes_do_not_overlap() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(30), 600)
    figure = figures.draw_probability_histogram(probabilities, rng.integers(0, 30, 600), LONG_NAMES)
    try:
        assert len(figure.axes[1].get_yticklabels()) == 30
        assert _overlaps(figure) == []
    finally:
        pyplot().close(figure)


def test_a_dollar_in_a_label_prints_as_written() -> None:
    png = figures.importance([{"name": "price $5-$10", "mean": 0.1, "std": 0.01}], "accuracy")
    assert png.startswith(b"\x89PNG")
