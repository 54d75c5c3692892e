"""The ``keel compare`` page: runs side by side in one self-contained HTML file.

Built only from the report's own pieces (``keel.report.html`` for the page, tables and images,
``keel.report.figures.learning_curves`` for the overlaid curves), so it looks like a report and,
like one, opens offline: no script, nothing fetched.

Sections (stable ids): ``runs`` (what each run is), ``metrics`` (scalar test metrics, the best of
each marked), ``config`` (only the keys that differ), ``learning-curves`` (validation loss and the
monitored metric per epoch, every run overlaid).
"""

from __future__ import annotations

import os
from pathlib import Path

from keel.artifact import write_file_atomically
from keel.report.html import Markup, Section, image, number, page, paragraph, table
from keel.runs import Comparison, format_value, run_labels

#: The page's section ids, in order.
SECTION_IDS = ("runs", "metrics", "config", "learning-curves")


def compare_page(comparison: Comparison) -> str:
    """The comparison as one HTML document.

    Args:
        comparison: From :func:`keel.runs.compare_runs`.

    Returns:
        The page (inline CSS, the learning curves as an embedded PNG).
    """
    from keel.report.figures import learning_curves

    labels = run_labels(comparison.runs)
    columns = ["", *labels]
    sections = [
        Section("runs", "Runs", _runs_body(comparison, columns)),
        Section("metrics", "Test metrics", _metrics_body(comparison, columns)),
        Section("config", "Configuration differences", _config_body(comparison, columns)),
        Section("learning-curves", "Learning curves", image(
            learning_curves({label: run.history for label, run in zip(labels, comparison.runs)},
                            title="Learning curves, runs overlaid"),
            "Training and validation loss, and the monitored validation metric, per epoch for each run",
            caption="One colour per run: dashed lines are the training loss, solid ones the validation loss "
                    "(left) and, when a run monitors another metric than the loss, that validation metric (right); "
                    "the dot marks each run's selected epoch. "
                    "With bagging, the first network of each run.")),
    ]
    return page(f"keel compare: {len(comparison.runs)} runs", sections, subtitle=", ".join(labels))


def write_compare_page(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    """Write :func:`compare_page` to ``path`` atomically (its folder is created when missing).

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(target, compare_page(comparison).encode("utf-8"))
    return target


def _runs_body(comparison: Comparison, columns: list[str]) -> str:
    runs = comparison.runs
    rows: list[list[object]] = [
        ["path", *[str(run.path) for run in runs]],
        ["task", *[run.task for run in runs]],
        ["target", *[run.target for run in runs]],
        ["data", *[run.data for run in runs]],
        ["created", *[run.created for run in runs]],
        ["preset", *[run.preset for run in runs]],
        ["epochs trained", *[run.per_network("epochs") for run in runs]],  # each bagged network's
        ["selected epoch", *[run.per_network("best_epoch") for run in runs]],
        ["training seconds", *[run.seconds for run in runs]],
    ]
    for part in ("train", "validation", "test"):
        rows.append([f"{part} rows", *[(run.rows or {}).get(part) for run in runs]])
    warnings = "".join(paragraph(text, css_class="warning") for text in comparison.warnings)
    return warnings + table(columns, rows)


def _metrics_body(comparison: Comparison, columns: list[str]) -> str:
    if not comparison.metrics:
        return paragraph("None of these runs has test metrics (trained without held-out test rows).", css_class="note")
    rows = []
    for name, values in comparison.metrics.items():
        best = comparison.best(name)
        cells: list[object] = list(values)
        if best is not None:
            # number() escapes; a Markup cell is not right-aligned by table(), hence the style
            cells[best] = Markup(f'<strong style="display:block;text-align:right">{number(values[best])}</strong>')
        rows.append([name, *cells])
    return table(columns, rows) + paragraph("Bold: the best value of the metric among these runs.", css_class="note")


def _config_body(comparison: Comparison, columns: list[str]) -> str:
    if not comparison.config:
        return paragraph("The runs have the same configuration.", css_class="note")
    rows = [[key, *[format_value(value, width=80) for value in values]] for key, values in comparison.config.items()]
    return table(columns, rows, caption="Only the keys whose values differ; (unset): the run has no such key.")
