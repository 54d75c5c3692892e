"""An export report as terminal tables: what was written, the parity check, compression side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from keel.export.exporter import ExportReport


def report_tables(report: "ExportReport") -> list[Table | str]:
    """The parity check and files as lines, the compression (when any) as a side-by-side table."""
    parity = report.parity
    regression = report.model.task == "regression"  # values, no labels to mismatch
    lines: list[Table | str] = [
        f"wrote {', '.join(str(path) for path in report.files)} ({report.format}, {report.seconds:.1f} s)",
        f"parity with keel on {parity['rows']} {parity['source']} rows: max {parity['measure']} "
        f"{parity['max_difference']:.2e} (tolerance {parity['tolerance']:g})"
        + ("" if regression else f", {parity['label_mismatches']} label mismatch(es)")
        + (f", {parity['near_ties']} near tie(s)" if parity["near_ties"] else ""),
    ]
    if report.quantized_parity is not None:
        quantized = report.quantized_parity
        lines.append(f"int8 file against keel: max {quantized['measure']} {quantized['max_difference']:.2e}"
                     + ("" if regression else f", {quantized['label_mismatches']} label change(s)")
                     + f" on {quantized['rows']} rows (quantization changes predictions by design; its metric is in "
                     "the table below)")
    if report.pruning is not None:
        pruning = report.pruning
        chosen = f"pruned {pruning['amount']:.0%} ({pruning['method']})"
        if pruning.get("auto"):
            chosen += f", the largest share within a {pruning['max_drop']:.2%} metric drop"
        where = (f"the pruned model is {report.model.path}" if report.model.path is not None
                 else "the pruned model was not saved (--output writes only the file)")
        lines.append(f"{chosen}; {where}")
    if report.compression:
        lines.append(compression_table(report.compression))
    lines += [f"note: {note}" for note in report.notes]
    return lines


def compression_table(compression: dict[str, Any]) -> Table:
    """Rows of measures, columns original / compressed / ratio."""
    table = Table(title="compression, measured")
    for column in ("measure", "original", "compressed", "compressed / original"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in compression["rows"]:
        ratio = row.get("ratio")
        table.add_row(row["measure"], _number(row["original"]), _number(row["compressed"]),
                      "" if ratio is None else f"{ratio:.3g}x")
    return table


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
