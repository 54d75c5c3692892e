"""One run per output directory: a second `keel train` (or `keel.fit(output=...)`) for the same directory is
refused while the first holds the lock, and a dead holder never leaves a stale lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import keel
from keel.errors import ArtifactError
from keel.train.checkpoint import lock_path, output_lock
from tests.conftest import FAST, PENGUINS, ROOT, make_classification_frame

KEEL = Path(sys.executable).parent / "keel"

# Holds the lock of argv[1] until stdin closes, printing "held" once it has it.
HOLDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from keel.train.checkpoint import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()
""")


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_keel_train_on_the_same_output_is_refused_and_never_mixes_the_directory(tmp_path) -> None:
    out = tmp_path / "model"
    # The first run trains long enough to be caught in the act; without checkpoints, so that the
    # directory holds nothing once it is killed.
    first = subprocess.Popen(
        [str(KEEL), "train", str(PENGUINS), "-t", "species", "-p", "fast", "-s", "training.epochs=100000",
         "-s", "training.early_stopping=0", "-s", "training.checkpoint=false", "-o", str(out), "--no-report",
         "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lock_path(out), first)
        # The file exists from the holder's open(); its record is written just after the flock.
        deadline = time.monotonic() + 60
        while not lock_path(out).read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        holder = json.loads(lock_path(out).read_text() or "{}")
        second = subprocess.run([str(KEEL), "train", str(PENGUINS), "-t", "species", "-p", "fast", "-s",
                                 "training.epochs=2", "-o", str(out), "--quiet"], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        message = " ".join(second.stderr.split())
        assert f"{out} is being written by another keel run (process {first.pid} on" in message
        assert "choose another --output" in message and holder.get("pid") == first.pid
        assert not out.exists()  # the refused run wrote nothing
        assert first.poll() is None  # and the first one goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed holder leaves its lock file, but not its lock: the next run takes it.
    assert lock_path(out).exists()
    third = subprocess.run([str(KEEL), "train", str(PENGUINS), "-t", "species", "-p", "fast", "-s",
                            "training.epochs=2", "-o", str(out), "--quiet", "--no-report"], capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert sorted(os.listdir(tmp_path)) == ["model"]  # the lock file goes with the run that held it
    assert keel.load(out).predict(PENGUINS).shape == (344,)


def test_keel_fit_with_an_output_another_process_holds_is_refused(tmp_path) -> None:
    out = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ROOT / "src")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ArtifactError, match=rf"being written by another keel run \(process {holder.pid} "):
            keel.fit(make_classification_frame(60), target="label", config=FAST, output=out, quiet=True)
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and not lock_path(out).exists()
    model = keel.fit(make_classification_frame(60), target="label", config=FAST, output=out, quiet=True)
    assert model.path == out


def test_the_lock_is_reentrant_within_a_process_and_removed_on_release(tmp_path) -> None:
    out = tmp_path / "m"
    with output_lock(out):
        with output_lock(out):  # keel train holds it and calls keel.fit(output=...), which takes it again
            assert lock_path(out).exists()
        assert lock_path(out).exists()  # still held by the outer block
        keel.fit(make_classification_frame(60), target="label", config=FAST, output=out, quiet=True)
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_stale_lock_file_from_a_dead_run_does_not_block(tmp_path) -> None:
    out = tmp_path / "m"
    lock_path(out).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then", "command": "keel"}))
    with output_lock(out):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()
