"""The reporter's faces: rich on a terminal, plain lines elsewhere, a log file, and several at once."""

from __future__ import annotations

import io
import re
import time
import types

import pytest
from rich.console import Console

from keel.console import RichReporter
from keel.train.callbacks import LogReporter, Reporter, Reporters, TextReporter, epoch_line

RECORD = {"epoch": 1, "lr": 0.01, "loss": 0.41234, "val_loss": 0.39911, "val_accuracy": 0.875, "stopped": False}
ANSI = "\x1b["


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=terminal, width=120), stream


def train(reporter: Reporter, epochs: int = 3, rows: int | None = 1000) -> None:
    with reporter.progress(epochs, "accuracy", rows=rows) as callback:
        assert callback is not None
        for epoch in range(1, epochs + 1):
            callback(epoch, epochs, {**RECORD, "epoch": epoch, "stopped": epoch == epochs})


def test_off_a_terminal_each_epoch_is_one_plain_line() -> None:
    face, stream = console(terminal=False)
    train(RichReporter(face))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    pattern = r"epoch {}/3  loss 0\.4123  val_loss 0\.3991  val_accuracy 0\.8750  [\d,]+ rows/s"
    for epoch, line in enumerate(lines, start=1):
        assert re.fullmatch(pattern.format(epoch) + ("  \\(early stop\\)" if epoch == 3 else ""), line), line
    assert ANSI not in stream.getvalue()


def test_off_a_terminal_a_step_is_one_line_at_its_start() -> None:
    face, stream = console(terminal=False)
    with RichReporter(face, step_line_after=0).step("permutation importance", total=50) as advance:
        for done in range(1, 51):
            advance(done)
    assert stream.getvalue() == "permutation importance ...\n"


def test_off_a_terminal_only_a_step_that_takes_a_while_gets_its_line() -> None:
    face, stream = console(terminal=False)
    reporter = RichReporter(face, step_line_after=0.05)
    with reporter.step("reading small.csv"):
        pass
    assert stream.getvalue() == ""  # quick: no trace, and none later either
    time.sleep(0.1)
    assert stream.getvalue() == ""
    with reporter.step("reading large.csv"):
        time.sleep(0.3)
    assert stream.getvalue() == "reading large.csv ...\n"


def test_on_a_terminal_the_bar_shows_loss_metric_speed_and_eta() -> None:
    face, stream = console(terminal=True)
    train(RichReporter(face))
    text = stream.getvalue()
    assert ANSI in text  # a live display, redrawn
    assert "epoch   3/3" in text and "loss 0.4123" in text and "val_accuracy 0.8750" in text
    assert re.search(r"[\d,]+ rows/s", text) and "ETA" in text and "(early stop)" in text
    assert "epoch 1/3  loss" not in text  # no plain per-epoch lines on a terminal


@pytest.mark.parametrize("epoch_seconds", [5.0, 40.0, 300.0])
def test_the_bars_eta_is_the_pace_of_the_last_epochs_however_long_they_are(epoch_seconds: float,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # rich's ETA needs two updates within its 30 s window: epochs of 40 s (a large pass, a fine-tuned text column)
    # once showed no ETA for the whole run. One clock for rich and keel's epoch timing, moved by the test.
    import keel.train.callbacks as callbacks
    from keel.console import ProgressBar

    now = [1000.0]
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    bar = ProgressBar(100, "accuracy", console(terminal=True)[0], rows=10)
    bar.progress.get_time = lambda: now[0]  # type: ignore[method-assign]
    with bar:
        for epoch in range(1, 7):
            now[0] += epoch_seconds * (3 if epoch == 1 else 1)  # the first epoch carries one-time costs
            bar(epoch, 100, {"epoch": epoch, "loss": 0.5})
            remaining = bar.progress.tasks[0].time_remaining
            if epoch > 1:
                assert remaining == pytest.approx((100 - epoch) * epoch_seconds), (epoch, remaining)


def test_on_a_terminal_a_step_is_a_live_bar_and_a_nested_one_is_a_line() -> None:
    face, stream = console(terminal=True)
    reporter = RichReporter(face, step_line_after=0)
    with reporter.step("computing importance", total=5) as advance:
        with reporter.step("inner step") as inner:  # rich allows one live display: no LiveError
            inner(1)
        for done in range(1, 6):
            advance(done)
    text = stream.getvalue()
    assert ANSI in text and "computing importance" in text and "5/5" in text
    assert "inner step ...\n" in text
    with reporter.step("again"):  # the live flag was released
        pass
    assert reporter._live is False


def test_quiet_shows_nothing_at_all() -> None:
    face, stream = console(terminal=True)
    reporter = RichReporter(face, quiet=True)
    reporter.note("n")
    reporter.message("m")
    with reporter.progress(3, "loss") as callback:
        assert callback is None
    with reporter.step("s") as advance:
        advance(1)
    assert stream.getvalue() == ""


def test_epoch_line_names_the_loss_once_and_leaves_out_what_is_unknown() -> None:
    record = {"loss": 0.5, "val_loss": 0.25, "stopped": False}
    assert epoch_line(2, 10, record, "loss") == "epoch 2/10  loss 0.5000  val_loss 0.2500"
    assert epoch_line(2, 10, {"loss": 0.5}, "accuracy", 12345.6) == "epoch 2/10  loss 0.5000  12,346 rows/s"
    assert epoch_line(3, 3, {"loss": 0.5, "stopped": True}, "loss").endswith("(early stop)")
    assert epoch_line(3, 3, {"loss": 0.5, "stopped": True, "stopped_by": "time limit"}, "loss").endswith("(time limit)")


def test_text_reporter_prints_a_line_when_a_step_starts() -> None:
    stream = io.StringIO()
    reporter = TextReporter(stream)
    with reporter.step("reading data.csv") as advance:
        advance(3)
    assert stream.getvalue() == "reading data.csv ...\n"


def test_log_reporter_writes_every_event_with_time_and_duration(tmp_path) -> None:
    path = tmp_path / "logs" / "run.log"  # the folder is created
    log = LogReporter(path)
    log.note("dropped column 'id'")
    with log.step("reading data.csv"):
        pass
    train(log)
    with pytest.raises(ValueError, match="boom"):
        with log.step("importance", total=4):
            raise ValueError("boom")
    log.line("saved the model to runs/x")
    log.close()
    log.line("after close: dropped")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line) for line in lines)
    bodies = [line[21:] for line in lines]
    assert bodies[0] == "note: dropped column 'id'"
    assert bodies[1] == "start: reading data.csv"
    assert re.fullmatch(r"done: reading data\.csv in \d+\.\d\d s", bodies[2])
    assert [body.split("  ")[0] for body in bodies[3:6]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert re.fullmatch(r"trained 3 epoch\(s\) in \d+\.\d\d s", bodies[6])
    assert bodies[7] == "start: importance (of 4)"
    assert re.fullmatch(r"failed: importance after \d+\.\d\d s \(ValueError: boom\)", bodies[8])
    assert bodies[9:] == ["saved the model to runs/x"]
    assert ANSI not in path.read_text(encoding="utf-8")
    again = LogReporter(path)  # appends, never truncates
    again.message("second run")
    again.close()
    assert path.read_text(encoding="utf-8").splitlines()[:len(lines)] == lines


def test_reporters_fan_out_to_every_face(tmp_path) -> None:
    face, stream = console(terminal=False)
    log = LogReporter(tmp_path / "run.log")
    both = Reporters(RichReporter(face, step_line_after=0), log, Reporter())
    both.note("a note")
    with both.step("reading") as advance:
        advance(1)
    train(both, epochs=2)
    log.close()
    screen = stream.getvalue()
    written = (tmp_path / "run.log").read_text(encoding="utf-8")
    for text in ("note: a note", "reading", "epoch 1/2  loss 0.4123", "epoch 2/2  loss 0.4123"):
        assert text in screen and text in written
    assert "done: reading in" in written


def test_reporters_of_silent_faces_yield_no_callback() -> None:
    with Reporters(Reporter(), RichReporter(quiet=True)).progress(3, "loss") as callback:
        assert callback is None


def test_notes_and_messages_are_text_not_markup() -> None:
    face, stream = console(terminal=False)
    reporter = RichReporter(face)
    reporter.note("column 'price[usd]' has 3 missing values")
    reporter.message("pip install 'keel[track]'")
    assert stream.getvalue() == "note: column 'price[usd]' has 3 missing values\npip install 'keel[track]'\n"
