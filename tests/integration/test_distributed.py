"""Data-parallel training (keel train --nproc): two real processes on the CPU (gloo), their averaged
gradients, rank 0's model, and a rank killed mid-run ending the job with an error rather than a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError, DataError, KeelError
from keel.train.distributed import Ranks, shard

CONFIG = {"preset": "fast", "training.epochs": 8, "model.dropout": 0.0}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """20,000 rows whose label needs an interaction and has noise: about 0.78 accuracy is reachable."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 6))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(6)})
    frame["label"] = np.where(x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.7 * rng.logistic(size=len(x)) > 0,
                              "a", "b")
    path = tmp_path_factory.mktemp("distributed") / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder() -> None:
    positions = np.arange(11)
    parts = [shard(positions, Ranks(rank, 3)) for rank in range(3)]
    assert [len(part) for part in parts] == [3, 3, 3]
    assert sorted(np.concatenate(parts).tolist()) == list(range(9))  # the last 2 of 11 rows are left out


def test_two_processes_train_a_model_as_good_as_one(table, tmp_path) -> None:
    single = keel.fit(table, target="label", config=CONFIG, quiet=True, importance=False)
    double = keel.fit(table, target="label", config=CONFIG, quiet=True, importance=False, nproc=2,
                      output=tmp_path / "model")
    assert abs(double.metrics["accuracy"] - single.metrics["accuracy"]) <= 0.01  # the bound
    assert double.metrics["accuracy"] > 0.7
    assert keel.load(tmp_path / "model").metrics == double.metrics  # rank 0 saved it


def test_a_rank_killed_mid_run_ends_the_job_with_an_error_not_a_hang(table, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KEEL_TEST_KILL_AT", "epoch-ended@2")
    monkeypatch.setenv("KEEL_TEST_KILL_RANK", "1")
    started = time.perf_counter()
    with pytest.raises(KeelError, match=r"rank 1 of the 2-process training was killed by signal SIGKILL; .*nothing "
                                        r"was saved"):
        keel.fit(table, target="label", config=CONFIG, quiet=True, nproc=2, output=tmp_path / "model")
    assert time.perf_counter() - started < 120  # not a collective's 60 s timeout twice over, and no hang
    assert not (tmp_path / "model").exists()


def test_a_data_error_in_the_ranks_is_raised_as_itself(table) -> None:
    with pytest.raises(DataError, match="'nothing'"):
        keel.fit(table, target="nothing", config=CONFIG, quiet=True, nproc=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"resume": True, "output": "x"}, "--resume with --nproc"),
    ({"nproc": 0}, "nproc must be at least 1"),
    # It was dropped without a word, and the saved config said false (a user's trial).
    ({"config": {**CONFIG, "training.checkpoint": True}}, "training.checkpoint is true, but a data-parallel run"),
])
def test_what_data_parallel_runs_do_not_do_is_a_config_error(table, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        keel.fit(table, target="label", quiet=True, **{"nproc": 2, "config": CONFIG, **kwargs})


def test_a_dataframe_cannot_be_sent_to_processes() -> None:
    with pytest.raises(ConfigError, match="pass a file path"):
        keel.fit(pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]}), target="label", nproc=2)


def test_keel_train_nproc_saves_one_model(table, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "keel.cli", "train", str(table), "--target", "label", "--nproc", "2",
                             "--set", "training.epochs=2", "--preset", "fast", "--output", str(tmp_path / "model"),
                             "--no-report", "--json"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["accuracy"] > 0.6
    assert (tmp_path / "model" / "keel.json").is_file()
    # No checkpoints in a data-parallel run, and the saved config keeps checkpoint auto as given (it said false:
    # keel runs listed a change the user never made).
    saved = json.loads((tmp_path / "model" / "keel.json").read_text())["config"]["training"]
    assert saved["checkpoint"] == "auto"
    assert not list(tmp_path.glob("*.checkpoint"))


def test_torchrun_runs_keel_train_as_ranks(table, tmp_path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "keel", "train", str(table), "--target",
                             "label", "--preset", "fast", "--set", "training.epochs=2", "--output",
                             str(tmp_path / "model"), "--no-report", "--quiet"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    model = keel.load(tmp_path / "model")  # rank 0 wrote it; rank 1 wrote nothing
    assert model.metrics["accuracy"] > 0.6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_a_config_error_under_torchrun_is_printed_once_not_by_every_rank(table, tmp_path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "keel", "train", str(table), "--target",
                             "label", "--preset", "fast", "--set", "training.checkpoint=true", "--output",
                             str(tmp_path / "model"), "--no-report"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert result.stderr.count("training.checkpoint is true") == 1, result.stderr[-2000:]
    assert "(--nproc, --backend ray, torchrun)" in result.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("preset", ["fast", "balanced"])
def test_every_rank_ends_with_the_same_weights(table, tmp_path, monkeypatch, preset) -> None:
    # Averaged gradients keep the ranks' weights equal; number-embedding bins (balanced) are fitted on
    # all training rows, not each rank's shard, so that the networks themselves are the same.
    monkeypatch.setenv("KEEL_TEST_RANK_DIGESTS", str(tmp_path))
    keel.fit(table, target="label", config={**CONFIG, "preset": preset, "training.epochs": 2, "model.ensemble": 2},
             quiet=True, importance=False, nproc=2)
    digests = [(tmp_path / f"rank-{rank}.txt").read_text() for rank in range(2)]
    assert digests[0] == digests[1]


def test_a_data_error_in_a_rank_is_keels_one_line_only(table, tmp_path) -> None:
    # torch warned "Terminating process ... via signal SIGTERM" before keel's line (a user's trial).
    frame = pd.read_csv(table)
    frame["x0"] = frame["x0"].astype(object)
    frame.loc[15_000, "x0"] = "12,3kg"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    result = subprocess.run([sys.executable, "-m", "keel.cli", "train", str(bad), "--target", "label", "--nproc", "2",
                             "--set", "training.epochs=1", "--preset", "fast", "--no-report", "--quiet"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert "row 15001" in result.stderr and "'12,3kg'" in result.stderr


def test_rank_zeros_notes_reach_the_terminal_once_and_the_log_file(table, tmp_path) -> None:
    # Rank 0 prints its notes to the terminal it shares with the launcher, which printed them again (a user's
    # trial); the log file still gets them, from the launcher.
    log = tmp_path / "run.log"
    result = subprocess.run([sys.executable, "-m", "keel.cli", "train", str(table), "--target", "label", "--nproc", "2",
                             "--set", "training.epochs=1", "--preset", "fast", "--no-report", "--log-file", str(log),
                             "--output", str(tmp_path / "model")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert said.count("preset fast:") == 1 and log.read_text().count("preset fast:") == 1
    assert "rows (this rank's share; 2 ranks)" in said
