"""Audit s12: keel's console entry point now runs typer with standalone_mode=False (commit 58830c1 / ba82a86).

Checked here: --help of every command, exit statuses of typer.Exit / KeyboardInterrupt / Abort raised in a command,
Ctrl-C during a real training, a broken pipe, and the one-line usage errors. Each runs `main()` in a fresh process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import PENGUINS

COMMANDS = ["train", "tune", "evaluate", "report", "predict", "info", "runs", "compare", "export", "config", "demo",
            "serve"]


def keel(*args: str, **options) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'keel'; from keel.cli import main; main()",
                           *args], capture_output=True, text=True, timeout=300, **options)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_of_every_command_exits_0_with_the_usage_on_stdout_only(command: str) -> None:
    result = keel(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: keel" in result.stdout and result.stderr == ""


def test_keel_alone_prints_the_help_and_no_stray_blank_line_on_stderr() -> None:
    """Bug (minor): `keel` alone prints typer's help on stdout, then main()'s NoArgsIsHelpError branch calls
    error.show(), which echoes the error's message, typer's (empty) get_help() text, as an empty line on stderr.
    Before 58830c1 stderr was empty."""
    result = keel()
    assert result.returncode == 2
    assert "Usage: keel" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("args, command", [
    (["train", "data.csv", "--target"], "keel train"),
    (["train", "data.csv", "--set"], "keel train"),
    (["predict", "model", "data.csv", "--output"], "keel predict"),
])
def test_an_option_missing_its_value_names_the_command_it_belongs_to(args: list[str], command: str) -> None:
    """Bug (minor): click raises "Option '--target' requires an argument" with no context (error.ctx is None), so
    main() names the command 'keel' and sends the user to 'keel --help', the top-level help, which does not list
    --target. Expected: 'error: keel train: ...; see 'keel train --help'.'"""
    result = keel(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {command}: Option "), result.stderr
    assert f"see '{command} --help'" in result.stderr


RAISING = textwrap.dedent("""
    import sys
    import typer
    from keel import cli

    what, friendly = sys.argv[1], sys.argv[2] == "friendly"

    def audit_raise(debug: bool = False) -> None:
        if what == "keyboard":
            raise KeyboardInterrupt
        if what == "abort":
            raise typer.Abort()
        if what == "eof":
            raise EOFError
        raise typer.Exit(int(what))

    cli.app.command("audit-raise")(cli._friendly(audit_raise) if friendly else audit_raise)
    sys.argv = ["keel", "audit-raise"]
    cli.main()
""")


@pytest.mark.parametrize("what, status", [("0", 0), ("1", 1), ("2", 2), ("130", 130), ("keyboard", 130)])
@pytest.mark.parametrize("friendly", ["plain", "friendly"])
def test_exit_statuses_of_a_command_are_kept(what: str, status: int, friendly: str) -> None:
    # _friendly's catch-all once took a typer.Exit raised inside a command for an internal error: a torchrun rank
    # exiting 2 after rank 0 printed a refused setting said "internal error: Exit: 2 ... please report it".
    result = subprocess.run([sys.executable, "-c", RAISING, what, friendly], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if what == "keyboard" and friendly == "friendly":
        assert result.stderr.startswith("interrupted; no model was saved.")
        assert result.stderr.count("interrupted") == 1


@pytest.mark.parametrize("what", ["abort", "eof"])
def test_abort_and_eof_in_a_command_are_one_line_not_a_traceback(what: str) -> None:
    # _friendly turns both into an "internal error" line with status 1 (as before 58830c1).
    result = subprocess.run([sys.executable, "-c", RAISING, what, "friendly"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_ctrl_c_during_a_training_exits_130_with_one_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.argv[0] = 'keel'; from keel.cli import main; main()", "train",
         str(PENGUINS), "--target", "species", "--preset", "fast", "--set", "training.epochs=100000",
         "--set", "training.early_stopping=0", "--output", str(tmp_path / "model"), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("epoch 3/"):
            break
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(lines) + rest
    assert rest.count("interrupted; no model was saved.") == 1
    assert "Traceback" not in rest and "Aborted" not in rest
    assert not (tmp_path / "model" / "keel.json").exists()


@pytest.mark.parametrize("args", [["config"], ["config", "--json"]])
def test_a_closed_pipe_is_no_internal_error(args: list[str]) -> None:
    """Bug (older than 58830c1, unchanged by it): `keel config | head -1` (the reader gone) prints 'internal error:
    BrokenPipeError: [Errno 32] Broken pipe (rerun with --debug ..., and please report it)'. _friendly's catch-all
    takes the BrokenPipeError raised while printing for a bug; typer's EPIPE branch (exit 1, quietly) never sees
    it. `keel info MODEL | head` and `keel config --json | head` exit 1 quietly."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before keel writes
    try:
        result = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'keel'; from keel.cli import main; "
                                 "main()", *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode != 0
    assert "internal error" not in result.stderr, result.stderr


def test_a_usage_error_is_printed_once() -> None:
    result = keel("train", "data.csv", "--bogus")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("No such option") == 1


def test_a_keel_error_is_printed_once_with_status_2(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = keel("info", str(tmp_path / "nothing"))
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr
    assert time.perf_counter() - started < 120
