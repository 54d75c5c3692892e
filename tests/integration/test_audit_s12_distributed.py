"""Audit s12: data-parallel runs (a8d329d, 0b2ebca): rank 0's notes reach the terminal once and a caller's own
reporter (Python API) or log file once; --json and --quiet print none; the saved config keeps checkpoint auto.

Each case runs in a subprocess: rank 0 writes to the process's own stderr (fd 2), which pytest's capture would hide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NOTE = "preset fast:"  # the settings note, rank 0's first


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    frame["label"] = np.where(x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=400) > 0, "a", "b")
    path = tmp_path_factory.mktemp("audit-ddp") / "table.csv"
    frame.to_csv(path, index=False)
    return path


SCRIPT = textwrap.dedent("""
    import json, sys
    import keel
    from keel.train.callbacks import Reporter, Reporters, TextReporter

    class Collector(Reporter):
        def __init__(self):
            self.notes, self.messages = [], []
        def note(self, text):
            self.notes.append(text)
        def message(self, text):
            self.messages.append(text)

    case, path, output = sys.argv[1], sys.argv[2], sys.argv[3]
    collector = Collector()
    reporter = {"collector": collector, "quiet collector": collector, "text": TextReporter(),
                "both": Reporters(TextReporter(), collector), "none": None}[case]
    model = keel.fit(path, target="label", config={"preset": "fast", "training.epochs": 1, "model.hidden": [8]},
                     nproc=2, reporter=reporter, quiet=case == "quiet collector", importance=False, output=output)
    print(json.dumps({"notes": collector.notes, "messages": collector.messages, "model_notes": model.notes}))
""")


def run(case: str, table: Path, output: Path) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, case, str(table), str(output)], capture_output=True,
                            text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_a_callers_reporter_hears_each_note_once_and_the_terminal_once(table: Path, tmp_path: Path) -> None:
    heard, stderr = run("both", table, tmp_path / "m")
    said = heard["notes"] + heard["messages"]
    assert sum(NOTE in line for line in said) == 1, said
    assert stderr.count(NOTE) == 1, stderr  # rank 0's own line; TextReporter (stderr) is not told again
    saved = json.loads((tmp_path / "m" / "keel.json").read_text())["config"]["training"]
    assert saved["checkpoint"] == "auto" and not list(tmp_path.glob("*.checkpoint"))


def test_a_quiet_run_still_tells_a_callers_reporter_and_prints_nothing(table: Path, tmp_path: Path) -> None:
    heard, stderr = run("quiet collector", table, tmp_path / "m")
    assert sum(NOTE in line for line in heard["notes"] + heard["messages"]) == 1
    assert NOTE not in stderr


def test_a_text_reporter_on_stderr_is_not_told_twice(table: Path, tmp_path: Path) -> None:
    _, stderr = run("text", table, tmp_path / "m")
    assert stderr.count(NOTE) == 1, stderr


def test_a_callers_reporter_gets_rank_zeros_notes_as_notes(table: Path, tmp_path: Path) -> None:
    """Bug (low, older than a8d329d which kept it): in one process a caller's Reporter receives each run note
    through note() (the Reporter API: 'something keel decided ... kept on the model'); in a data-parallel run the
    launcher replays rank 0's notes through message(), so a reporter that collects note()s, as a caller filtering
    notes from progress messages would, gets none of them."""
    heard, _ = run("collector", table, tmp_path / "m")
    assert any(NOTE in note for note in heard["notes"]), heard["messages"][:3]


@pytest.mark.parametrize("flags", [["--json"], ["--quiet"]])
def test_json_and_quiet_print_no_notes_and_the_log_file_gets_them_once(table: Path, tmp_path: Path,
                                                                     flags: list[str]) -> None:
    log = tmp_path / "run.log"
    result = subprocess.run([sys.executable, "-m", "keel.cli", "train", str(table), "--target", "label", "--nproc", "2",
                             "-p", "fast", "-s", "training.epochs=1", "--no-report", "--log-file", str(log), "-o",
                             str(tmp_path / "m"), *flags], capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr
    assert NOTE not in result.stderr and "note:" not in result.stderr, result.stderr
    if flags == ["--json"]:
        json.loads(result.stdout)
    assert log.read_text().count(NOTE) == 1


def test_checkpoint_true_is_refused_for_ray_before_any_worker_starts(table: Path) -> None:
    pytest.importorskip("ray")
    import keel
    from keel.errors import ConfigError

    with pytest.raises(ConfigError, match="training.checkpoint is true, but a data-parallel run"):
        keel.fit(table, target="label", config={"preset": "fast", "training.checkpoint": True}, nproc=2,
                 backend="ray", quiet=True)


def test_checkpoint_true_is_refused_under_torchrun(table: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("no torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "keel", "train", str(table), "--target",
                             "label", "-p", "fast", "-s", "training.epochs=1", "-s", "training.checkpoint=true",
                             "--no-report", "-o", str(tmp_path / "m")], capture_output=True, text=True, timeout=600,
                            env=ENV, cwd=tmp_path)
    assert result.returncode != 0
    assert "error: training.checkpoint is true, but a data-parallel run" in result.stdout + result.stderr
    assert not (tmp_path / "m" / "keel.json").exists()
