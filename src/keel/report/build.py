"""Build the report: the sections for the task, drawn into one self-contained HTML page and PNG files."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from keel.report.html import Section, page
from keel.report.inputs import ReportInputs
from keel.report.sections import make_context, sections_for

#: The page's file name in a model directory, and the folder of its figures.
REPORT_FILE = "report.html"
PLOTS_DIRECTORY = "plots"


@dataclass
class Report:
    """A drawn report.

    Attributes:
        html: The whole page (figures embedded as data URIs).
        plots: File name under ``plots/`` (``confusion_matrix.png``) -> the same figures as PNG bytes.
        sections: The section ids, in page order.
        seconds: How long drawing took.
    """

    html: str
    plots: dict[str, bytes] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    seconds: float = 0.0



def section_ids(inputs: ReportInputs) -> list[str]:
    """The ids of the sections ``build_report(inputs)`` draws, in page order.

    Args:
        inputs: What the report is drawn from.

    Returns:
        Ids such as ``overview``, ``learning-curves``, ``roc-pr`` (see ``keel.report.sections.SECTIONS``).
    """
    return [spec.id for spec in sections_for(inputs)]


def build_report(inputs: ReportInputs) -> Report:
    """Draw the report for ``inputs``: the sections of its task, as one HTML page and PNG figures.

    Args:
        inputs: The predictions and what the training run recorded.

    Returns:
        The page and its figures.

    Example:
        >>> report = build_report(inputs)          # doctest: +SKIP
        >>> report.write("runs/penguins-model")    # doctest: +SKIP
    """
    started = time.perf_counter()
    context = make_context(inputs)
    specs = sections_for(inputs)
    sections = [Section(spec.id, spec.title, spec.draw(inputs, context)) for spec in specs]
    subtitle = f"{inputs.task} model of {inputs.target}" + (f", trained {inputs.created}" if inputs.created else "")
    document = page(inputs.title, sections, subtitle=subtitle)
    return Report(html=document, plots=context.plots, sections=[spec.id for spec in specs],
                  seconds=time.perf_counter() - started)
