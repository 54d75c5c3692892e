"""The HTML report: one self-contained page per model, drawn from its test predictions.

    build_report(ReportInputs) -> Report(html, plots)   the page and its figures
    section_ids(inputs)                                 which sections a report gets
    keel.report.html                                    the page shell, tables, embedded images
    keel.report.figures / keel.report.style             the figures (matplotlib, imported on first use)

Importing this package does not import matplotlib; drawing a figure does.
"""

from keel.report.build import PLOTS_DIRECTORY, REPORT_FILE, Report, build_report, section_ids
from keel.report.inputs import ReportInputs

__all__ = ["PLOTS_DIRECTORY", "REPORT_FILE", "Report", "ReportInputs", "build_report", "section_ids"]
