"""The study as rich tables: the best trials, the best settings and each setting's importance."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

# Trials shown (the best ones); tune.json keeps them all.
SHOWN_TRIALS = 10


def study_tables(summary: dict[str, Any]) -> Group:
    """The trials table (best first), then the best trial's settings with their importance."""
    metric, maximize = summary["metric"], summary["direction"] == "maximize"
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary["states"].items()))
    trials = Table(title=f"study {summary['study']}: {len(summary['trials'])} trials ({states}), {metric}",
                   title_justify="left")
    for column in ("trial", "state", metric, "epochs", "seconds"):
        trials.add_column(column, justify="right" if column != "state" else "left")
    # Complete trials ranked by their score; pruned ones (their last partial value) and failed ones after.
    finished = [row for row in summary["trials"] if row["state"] == "complete" and row["value"] is not None]
    finished.sort(key=lambda row: -row["value"] if maximize else row["value"])
    others = [row for row in summary["trials"] if row not in finished]
    for row in (finished + others)[:SHOWN_TRIALS]:
        trials.add_row(str(row["number"]), row["state"], "" if row["value"] is None else f"{row['value']:.4f}",
                       "" if row["epochs"] is None else str(row["epochs"]),
                       "" if row["seconds"] is None else f"{row['seconds']:.1f}")
    best = summary["best"]
    settings = Table(title=f"best trial {best['number']}: {metric} {best['value']:.4f}", title_justify="left")
    settings.add_column("setting")
    settings.add_column("value", justify="right")
    settings.add_column("importance", justify="right")
    importances = summary["importances"]
    for key in sorted(best["params"], key=lambda name: -importances.get(name, 0.0)):
        value = best["params"][key]
        settings.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value),
                         f"{importances[key]:.2f}" if key in importances else "")
    return Group(trials, settings)
