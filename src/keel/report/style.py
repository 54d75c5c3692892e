"""matplotlib, imported on first use, with keel's defaults: the Agg backend, readable fonts, one colour cycle.

Nothing here imports matplotlib at module level: ``import keel`` and predicting must not pay for it
(tests/unit/report/test_lazy_import.py checks).
"""

from __future__ import annotations

import io
import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The colour cycle: Okabe-Ito's colour-blind safe palette first, then two greys.
COLORS: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                           "#000000", "#999999", "#666666")

_RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.frameon": False,
    # Class names and column names are user strings: "$5-$10" must print as written, not as mathtext.
    "text.parse_math": False,
    "image.cmap": "Blues",
}
_pyplot: ModuleType | None = None


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (no display is needed), with keel's rc defaults applied.

    Returns:
        The ``matplotlib.pyplot`` module.

    Raises:
        ImportError: matplotlib is not installed (it is a dependency of keel: ``pip install matplotlib``).
    """
    global _pyplot
    if _pyplot is None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        _pyplot = plt
    _pyplot.rcParams.update(_RC)
    _pyplot.rcParams["axes.prop_cycle"] = _pyplot.cycler(color=list(COLORS))
    return _pyplot


def to_png(figure: "Figure", *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, cropped to its content; the figure is closed.

    Args:
        figure: A matplotlib figure.
        dpi: Dots per inch (100 keeps a 100k-row report fast and its images small).

    Returns:
        The PNG file's bytes.
    """
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # A class name in a script the default font lacks prints as boxes; the warning says nothing more.
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(figure)
    return buffer.getvalue()


def truncate(label: object, width: int = 20) -> str:
    """``str(label)`` cut to ``width`` characters by an ellipsis in the middle when longer.

    The middle goes because long class names often share a prefix ("customer segment north",
    "customer segment south"): keeping both ends keeps them apart.

    Args:
        label: A class label, column name or any value.
        width: The most characters kept.

    Returns:
        The label as shown on an axis.
    """
    text = str(label).replace("\n", " ")
    if len(text) <= width:
        return text
    head = max(width - 1, 0) // 2 + max(width - 1, 0) % 2
    tail = max(width - 1, 0) - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def truncate_labels(labels: Sequence[object], width: int = 20) -> list[str]:
    """Labels cut to ``width`` characters so that distinct labels stay distinct where possible.

    Each label is cut in the middle (``truncate``); when that makes two labels look the same
    ("customer segment 01 of the north", "customer segment 02 of the north"), each is shown as the
    window of ``width`` characters around the part where the labels differ instead.

    Args:
        labels: Class labels, column names, any values.
        width: The most characters per label.

    Returns:
        One text per label, in order.
    """
    texts = [str(label).replace("\n", " ") for label in labels]
    short = [truncate(text, width) for text in texts]
    if len(set(short)) == len(set(texts)) or width < 5:
        return short
    prefix = len(os.path.commonprefix(texts))
    suffix = len(os.path.commonprefix([text[::-1] for text in texts]))
    out = []
    for text in texts:
        core = max(len(text) - suffix - prefix, 0)
        start = max(0, min(prefix - (width - core) // 2, len(text) - width))
        window = text[start:start + width]
        if start > 0:
            window = "…" + window[1:]
        if start + width < len(text):
            window = window[:-1] + "…"
        out.append(window if len(text) > width else text)
    return out
