"""Draw a model's report and put it where it belongs: attached to its directory, or in a file.

The one place that turns a :class:`~keel.model.Model` into :class:`ReportInputs`; ``keel train``,
``keel report`` and ``Model.report`` all come here.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, KeelWarning
from keel.report.build import PLOTS_DIRECTORY, REPORT_FILE

if TYPE_CHECKING:
    from keel.data.io import TableSource
    from keel.model import Model



@dataclass
class ReportResult:
    """Where a report went and what it took."""

    html: Path
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    source: str = ""


def make_report(model: "Model", data: "TableSource | None" = None, *,
                output: str | os.PathLike[str] | None = None) -> ReportResult:
    """Draw ``model``'s report and attach it to its directory (or write it to ``output``).

    Args:
        model: A trained model. Without ``output`` it must have a directory (saved or loaded).
        data: Labelled rows to draw the report on (a path or a DataFrame); without them, the test
            rows' predictions kept from training. With them, the worst-rows table shows the rows'
            values and permutation importance is measured again on (up to 2,000 of) them.
        output: Write the HTML page here (figures embedded) instead of attaching ``report.html``
            and ``plots/*.png`` to the model directory.

    Raises:
        ConfigError: No data given and the model kept no test predictions (trained with
            ``test_split: 0`` or before keel kept them).
        DataError: ``data`` cannot be read, lacks the target or holds a class the model does not know.
        ArtifactError: The model has no directory (and no ``output``), or the files cannot be written.
    """
    started = time.perf_counter()
    if output is None:
        _require_directory(model)
    else:
        from keel.artifact import check_output_file

        check_output_file(output, "attach report.html to the model directory")
    inputs = report_inputs(model, data)
    from keel.report.build import build_report  # matplotlib comes with it: only once there is a report to draw

    report = build_report(inputs)
    result = ReportResult(html=Path(output) if output is not None else Path(str(model.path)) / REPORT_FILE,
                          source=inputs.source)
    if output is not None:
        from keel.artifact import write_file_atomically

        write_file_atomically(output, report.html.encode("utf-8"))
    else:
        drawn = {f"{PLOTS_DIRECTORY}/{name}" for name in report.plots}
        stale = [name for name in model.summary()["files"] if name.startswith(f"{PLOTS_DIRECTORY}/") and name not in drawn]
        if stale:  # figures of an earlier report that this one does not draw (importance on other data)
            model._detach(stale)
        for name, png in sorted(report.plots.items()):
            model.attach(f"{PLOTS_DIRECTORY}/{name}", png)
            result.plots.append(Path(str(model.path)) / PLOTS_DIRECTORY / name)
        model.attach(REPORT_FILE, report.html.encode("utf-8"))  # last: the page is there once its figures are
    result.seconds = time.perf_counter() - started
    return result


def report_inputs(model: "Model", data: "TableSource | None" = None) -> Any:
    """The :class:`~keel.report.inputs.ReportInputs` of ``model`` on its test rows or on ``data``."""
    rows = None
    importance = model.importance
    if data is not None:
        from keel.data.schema import labelled_rows

        frame = labelled_rows(model.read_rows(data), model.target, "to draw the report on")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KeelWarning)  # unseen values: the report is about the metrics
            predictions = model._scored(frame)
        rows = frame
        where = frame.attrs.get("source") or "the DataFrame"
        source = f"{Path(str(where)).name} ({len(frame):,} labelled rows)"
        importance = model._importance_on(frame)
    else:
        kept = model.test_predictions
        if kept is None:
            raise ConfigError(
                "this model kept no test predictions to draw the report from (trained with test_split 0, or by a "
                "keel older than the report); pass labelled data: keel report MODEL --data FILE.")
        predictions = kept
        test_source = ((model.run or {}).get("data") or {}).get("test_source")
        if test_source:
            source = f"the test data {Path(str(test_source)).name} at training time ({len(predictions):,} labelled rows)"
        else:
            source = f"held-out test rows at training time ({len(predictions):,} rows)"
    from keel.report.inputs import ReportInputs

    return ReportInputs(
        title=f"{model.target} — {model.path if model.path is not None else 'unsaved model'}",
        task=model.task, target=model.target, classes=model.summary()["classes"], predictions=predictions,
        source=source, metrics=model._metrics_of(predictions), history=model.history,
        config=model.config.model_dump(mode="json"), preset=model.config.preset, run=model.run,
        importance=importance, calibration=model.calibration, notes=list(model.notes), created=model.created,
        versions=dict(model.versions), schema=model.schema.to_dict(), rows=rows, exports=_exports(model),
        study=_study(model),
    )


def _study(model: "Model") -> dict[str, Any] | None:
    """The search that chose the model's settings (``tune.json``, from ``keel tune``), or None."""
    from keel.search.study import TUNE_FILE

    if model.path is None or TUNE_FILE not in model.summary()["files"]:
        return None
    from keel.artifact import parse_json, read_model_file
    from keel.errors import ArtifactError

    try:
        document = parse_json(read_model_file(model.path, TUNE_FILE, limit=MAX_EXPORT_REPORT), TUNE_FILE)
    except ArtifactError:
        return None  # a damaged study leaves its section out, and only it
    return document if isinstance(document, dict) else None


def _exports(model: "Model") -> list[dict[str, Any]]:
    """The export reports attached to the model directory (``reports/*.json``), oldest name first."""
    if model.path is None:
        return []
    from keel.artifact import parse_json, read_model_file
    from keel.errors import ArtifactError

    found = []
    for name in sorted(model.summary()["files"]):
        if name.startswith("reports/") and name.endswith(".json"):
            try:
                document = parse_json(read_model_file(model.path, name, limit=MAX_EXPORT_REPORT), name)
            except ArtifactError:
                continue  # a damaged or hostile export report leaves its section out, and only it
            if isinstance(document, dict):
                found.append(document)
    return found


# An export report is a few kilobytes; a larger one is not keel's and is left out.
MAX_EXPORT_REPORT = 4 << 20


def _require_directory(model: "Model") -> None:
    if model.path is None:
        from keel.errors import ArtifactError

        raise ArtifactError("this model has no directory to attach its report to; save it first "
                            "(model.save('runs/my-model')) or pass output='report.html'.")
