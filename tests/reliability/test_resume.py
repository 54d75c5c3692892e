"""Training that survives a kill: checkpoints, --resume, and results bit for bit those of an uninterrupted run.

The kill tests SIGKILL real training processes at named points (the ``KEEL_TEST_KILL_AT`` hook of
``keel.train.checkpoint``: between epochs, at every step of a checkpoint write, between the networks
of a bag, during and after the final save) and at a random moment, resume them, and compare the
finished model's weights, test predictions and metrics with those of a run that was never stopped.
One driver process trains the reference and forks a process per attempt, so that each attempt costs a
fork rather than a Python start (torch runs on one thread, so forking is safe); a separate test does
the same through the ``keel train`` command.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import keel
from keel.errors import ConfigError
from keel.train.callbacks import Reporter
from keel.train.checkpoint import (
    CHECKPOINT_FILE,
    RandomState,
    TrainerState,
    checkpoint_directory,
    data_fingerprint,
    lock_path,
    read_checkpoint,
)
from tests.conftest import FAST, PENGUINS, ROOT, make_classification_frame

# ---- in one process: the checkpoint's parts and the rules around it ---------------------------

CHECKPOINTED = {**FAST, "training.epochs": 6, "training.checkpoint": True, "training.checkpoint_every": 1}


class _Interrupted(Exception):
    """Stands for a crash in the middle of training."""


class _StopAt(Reporter):
    """A reporter whose epoch callback raises after the given number of epochs (counted over all networks)."""

    def __init__(self, epochs: int) -> None:
        self.left = epochs

    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[Any]:  # type: ignore[override]
        import contextlib

        @contextlib.contextmanager
        def watch() -> Iterator[Any]:
            def callback(epoch: int, total: int, record: dict[str, Any]) -> None:
                self.left -= 1
                if self.left == 0:
                    raise _Interrupted

            yield callback

        return watch()


def _same_model(first: Path, second: Path) -> None:
    """Two saved models hold the same weights and test predictions (bytes) and the same metrics and history."""
    for name in ("weights.safetensors", "predictions.safetensors"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    documents = [json.loads((folder / "keel.json").read_text()) for folder in (first, second)]
    for key in ("metrics", "calibration", "network"):
        assert documents[0][key] == documents[1][key], key
    assert documents[0]["history"]["epochs"] == documents[1]["history"]["epochs"]


def test_random_and_trainer_states_round_trip_through_tensors_and_json() -> None:
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    saved = RandomState.capture()
    tensors: dict[str, torch.Tensor] = {}
    document = json.loads(json.dumps(saved.pack(tensors)))  # what the file holds: JSON, and tensors
    expected = (random.random(), np.random.random(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    RandomState.unpack(tensors, document).restore()
    assert (random.random(), np.random.random()) == expected[:2] and torch.equal(torch.rand(3), expected[2])

    state = TrainerState(epoch=3, network={"w": torch.ones(2)}, optimizer={"0.step": torch.tensor(7.0)},
                         optimizer_values={"first": False}, shuffle=torch.Generator().manual_seed(1).get_state(),
                         rate={"steps": 30, "value": 0.1, "best": None, "bad_epochs": 0},
                         history={"epochs": [{"loss": 0.1}]}, best_score=[0.5, float("inf")], waited=1,
                         best_weights={"w": torch.zeros(2)}, random=saved, seconds=1.5)
    tensors = {}
    packed = json.loads(json.dumps(state.pack(tensors)))
    back = TrainerState.unpack(tensors, packed, saved)
    assert back.epoch == 3 and back.best_score == [0.5, float("inf")] and back.optimizer_values == {"first": False}
    assert torch.equal(back.network["w"], torch.ones(2)) and torch.equal(back.best_weights["w"], torch.zeros(2))
    assert torch.equal(back.shuffle, state.shuffle) and back.rate == state.rate


@pytest.mark.parametrize("config, stop", [
    pytest.param({**CHECKPOINTED, "model.dropout": 0.2}, 4, id="fused-adamw"),
    pytest.param({**CHECKPOINTED, "model.norm": "batch", "model.dropout": 0.1, "training.optimizer": "sgd",
                  "training.schedule": "cosine", "training.early_stopping": 2, "training.epochs": 12,
                  "training.lr": 0.05}, 4, id="autograd-sgd-early-stopping"),
    pytest.param({**CHECKPOINTED, "training.bagging": 3, "training.epochs": 3, "model.dropout": 0.2}, 4,
                 id="bagging-between-networks"),
    pytest.param({**CHECKPOINTED, "training.bagging": 3, "training.epochs": 3, "model.dropout": 0.2}, 6,
                 id="bagging-within-a-network"),
    # Epochs of 4 steps end within passes of 6 (86 rows, batch 16): the last checkpoints before the stops are
    # 4 and 2 steps into a pass (a run stopped after epoch k resumes from epoch k - 1's checkpoint).
    pytest.param({**CHECKPOINTED, "training.steps_per_epoch": 4, "model.dropout": 0.2}, 5, id="within-a-pass"),
    pytest.param({**CHECKPOINTED, "training.steps_per_epoch": 4, "model.norm": "batch", "training.epochs": 8}, 3,
                 id="within-a-pass-autograd"),
])
def test_an_interrupted_run_resumes_to_the_same_model(tmp_path, config, stop) -> None:
    frame = make_classification_frame(120)
    whole = keel.fit(frame, target="label", config=config, output=tmp_path / "whole", quiet=True, importance=False)
    if config.get("training.early_stopping") == 2:
        assert whole.history["stopped_early"] and whole.history["best_epoch"] > stop
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(stop),
                 importance=False)
    saved = read_checkpoint(checkpoint_directory(tmp_path / "cut"))
    assert saved is not None and not (tmp_path / "cut").exists()
    assert not lock_path(tmp_path / "cut").exists()  # released by the failed run
    with pytest.raises(ConfigError, match="unfinished run"):  # a checkpoint is never silently thrown away
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", quiet=True)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    assert any(note.startswith("resumed from the checkpoint") for note in model.notes)
    _same_model(tmp_path / "whole", tmp_path / "cut")
    assert not checkpoint_directory(tmp_path / "cut").exists()  # removed once the model is saved


def test_a_time_limit_keeps_the_networks_a_resumed_checkpoint_holds_finished(tmp_path, monkeypatch) -> None:
    # Stopped in the third of three bagged networks; resumed with no time for another network: the two finished
    # ones are restored (before, the time check ran first and dropped the second, finished as it was).
    config = {**CHECKPOINTED, "training.bagging": 3, "training.epochs": 3, "training.time_limit": 600}
    frame = make_classification_frame(120)
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(7),
                 importance=False)
    monkeypatch.setattr("keel.train.pipeline._networks_that_fit", lambda *args: 0)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    assert any("allowed 2 of the 3 bagged networks" in note for note in model.notes), model.notes


def test_a_checkpoint_of_another_config_or_data_is_refused_listing_what_differs(tmp_path) -> None:
    frame = make_classification_frame(120)
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=CHECKPOINTED, output=tmp_path / "m", reporter=_StopAt(3))
    with pytest.raises(ConfigError) as caught:
        keel.fit(frame.iloc[:-1], target="label", config={**CHECKPOINTED, "training.lr": 0.02, "model.hidden": [8]},
                 output=tmp_path / "m", resume=True, quiet=True)
    message = str(caught.value)
    assert "\n" not in message and "cannot resume" in message
    assert "model.hidden [16] -> [8]" in message and "training.lr 0.01 -> 0.02" in message
    assert "the data (fingerprint " in message and "training.epochs" not in message
    # Where checkpoints go may change on resume: it does not change what is trained.
    model = keel.fit(frame, target="label", config={**CHECKPOINTED, "training.checkpoint_every": 3},
                     output=tmp_path / "m", resume=True, quiet=True, importance=False)
    assert model.path == tmp_path / "m"
    with pytest.raises(ConfigError, match="nothing to resume"):
        keel.fit(frame, target="label", config=CHECKPOINTED, output=tmp_path / "m", resume=True, quiet=True)


def test_resume_needs_an_output_and_starts_over_when_there_is_no_checkpoint(tmp_path) -> None:
    frame = make_classification_frame(80)
    with pytest.raises(ConfigError, match="output=DIR"):
        keel.fit(frame, target="label", config=FAST, resume=True, quiet=True)
    model = keel.fit(frame, target="label", config=FAST, output=tmp_path / "m", resume=True, quiet=True)
    assert any(note.startswith("nothing to resume") for note in model.notes)


def test_auto_checkpoints_skip_short_runs_and_every_n_epochs_writes_them(tmp_path) -> None:
    frame = make_classification_frame(80)
    keel.fit(frame, target="label", config=FAST, output=tmp_path / "short", quiet=True)
    assert not checkpoint_directory(tmp_path / "short").exists()
    assert sorted(os.listdir(tmp_path)) == ["short"]  # no checkpoint folder, no lock file left

    written: list[int] = []

    class Watch(_StopAt):
        def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[Any]:  # type: ignore[override]
            import contextlib

            @contextlib.contextmanager
            def watch() -> Iterator[Any]:
                def callback(epoch: int, total: int, record: dict[str, Any]) -> None:
                    # The callback runs before the epoch's checkpoint: it sees the previous one.
                    saved = read_checkpoint(checkpoint_directory(tmp_path / "every"))
                    written.append(-1 if saved is None else saved.document["current"]["epoch"])

                yield callback

            return watch()

    config = {**FAST, "training.epochs": 7, "training.checkpoint": True, "training.checkpoint_every": 3,
              "training.checkpoint_minutes": 1000}
    keel.fit(frame, target="label", config=config, output=tmp_path / "every", reporter=Watch(0), importance=False)
    assert written == [-1, -1, -1, 3, 3, 3, 6]


def test_the_data_fingerprint_sees_values_order_and_types() -> None:
    frame = make_classification_frame(50)
    same = make_classification_frame(50)
    assert data_fingerprint(frame) == data_fingerprint(same)
    changed = same.copy()
    changed.loc[7, "weight"] += 1e-9
    assert data_fingerprint(changed) != data_fingerprint(frame)
    assert data_fingerprint(frame.iloc[::-1]) != data_fingerprint(frame)
    assert data_fingerprint(frame.astype({"size": "float32"})) != data_fingerprint(frame)
    assert data_fingerprint(frame.rename(columns={"size": "Size"})) != data_fingerprint(frame)


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path) -> None:
    directory = checkpoint_directory(tmp_path / "m")
    directory.mkdir()
    save_file({"w": torch.zeros(2)}, str(directory / CHECKPOINT_FILE))  # safetensors, but not a checkpoint
    with pytest.raises(keel.ArtifactError, match="not a keel checkpoint"):
        read_checkpoint(directory)
    (directory / CHECKPOINT_FILE).write_bytes(b"garbage")
    with pytest.raises(keel.ArtifactError, match="cannot be read"):
        keel.fit(make_classification_frame(60), target="label", config=FAST, output=tmp_path / "m", resume=True)


# ---- killed processes --------------------------------------------------------------------------

CONFIGS = {
    # The fused step (AdamW), the plateau schedule halving the rate, early stopping restoring the best epoch
    # (its patience counted across kills; 9, so that the run trains all 10 epochs the kill points assume).
    "fast": {"preset": "fast", "training.epochs": 10, "training.early_stopping": 9, "training.schedule": "plateau",
             "training.lr": 0.01},
    # The autograd step: number embeddings, an 8-member ensemble, dropout, warmup and cosine decay.
    # Epochs of 5 steps, within passes of 8: kills land within passes too.
    "balanced": {"preset": "balanced", "training.epochs": 4, "training.schedule": "cosine", "training.warmup": 0.2,
                 "training.steps_per_epoch": 5},
    # Three networks, each checkpointed when it finishes; SGD with momentum on a regression target.
    "bagging": {"preset": "fast", "training.epochs": 4, "training.bagging": 3, "training.optimizer": "sgd",
                "training.lr": 0.01, "target": "body_mass_g"},
}

DRIVER = textwrap.dedent("""
    import json, os, random, shutil, signal, sys, time, traceback
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    import keel
    from keel.train.checkpoint import WRITE_STEPS, checkpoint_directory, read_checkpoint

    root, config, seeds, n_kills = Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
    config = {**config, "training.checkpoint": True, "training.checkpoint_every": 1}
    target = config.pop("target", "species")
    epochs, networks = config["training.epochs"], config.get("training.bagging", 1)
    data = os.path.join(sys.argv[1], "examples", "penguins.csv")

    def attempt(out, resume, kill_at=None, delay=None):
        pid = os.fork()
        if pid == 0:
            if kill_at:
                os.environ["KEEL_TEST_KILL_AT"] = kill_at
            if delay:
                signal.setitimer(signal.ITIMER_REAL, delay)
                signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
            try:
                keel.fit(data, target=target, config=config, quiet=True, importance=False, output=out, resume=resume)
            except BaseException:
                traceback.print_exc()
                os._exit(3)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
        return f"exit {os.WEXITSTATUS(status)}"

    def where(out):
        saved = read_checkpoint(checkpoint_directory(out))
        if saved is None:
            return 0, 0
        current = saved.document["current"]
        return saved.done, 0 if current is None else current["epoch"]

    def kill_point(rng, out, first):
        done, epoch = where(out)
        left = epochs - epoch  # epochs the next attempt trains on the current network, at least
        writes = left - 1 + (1 if done + 1 < networks else 0)  # checkpoints after epochs, and after a network
        points = [f"{step}@{k}" for step in WRITE_STEPS for k in range(1, writes + 1)]
        if not first:
            points += [f"epoch-ended@{k}" for k in range(1, left + 1)]
            points += [f"network-trained@{k}" for k in range(1, networks - done)]
            if rng.random() < 0.25:  # the end of the run: the final save and the checkpoint's removal
                points += ["weights-written", "manifest-written", "model-saved"]
        return rng.choice(points)

    started = time.perf_counter()
    report = {"reference": attempt(root / "reference", False), "chains": []}
    seconds = time.perf_counter() - started
    # A kill at a random moment, wherever it falls (the run may also end before it).
    out = root / "random-moment"
    outcome = attempt(out, False, delay=random.Random(seeds[0]).uniform(0.05, 0.95) * seconds)
    report["random_moment"] = {"kill": outcome, "final": attempt(out, True) if outcome == "killed" else outcome,
                               "out": str(out)}
    for seed in seeds:  # chains of kills at named points, each attempt resuming the one before
        rng, out = random.Random(seed), root / f"chain-{seed}"
        kills = []
        while len(kills) < n_kills and (not kills or kills[-1][1] == "killed"):
            point = kill_point(rng, out, first=not kills)  # the first falls inside a checkpoint write
            kills.append([point, attempt(out, bool(kills), kill_at=point)])
        final = attempt(out, True) if kills[-1][1] == "killed" else kills[-1][1]
        report["chains"].append({"seed": seed, "kills": kills, "final": final, "out": str(out)})
    report["left"] = sorted(os.listdir(root))
    print(json.dumps(report))
""")


def _kill_and_resume(tmp_path: Path, name: str, seeds: list[int], n_kills: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(ROOT), str(tmp_path), json.dumps(CONFIGS[name]), json.dumps(seeds),
         str(n_kills)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name, seeds, n_kills", [("fast", [1, 2, 3], 4), ("balanced", [4], 3),
                                                   ("bagging", [5, 6], 4)])
def test_runs_killed_at_random_points_resume_to_the_bitwise_same_model(tmp_path, name, seeds, n_kills) -> None:
    report = _kill_and_resume(tmp_path, name, seeds, n_kills)
    assert report["reference"] == "exit 0"
    assert report["random_moment"]["final"] == "exit 0", report["random_moment"]
    _same_model(tmp_path / "reference", Path(report["random_moment"]["out"]))
    killed = 0
    for chain in report["chains"]:
        assert chain["final"] == "exit 0", chain
        points = [point for point, outcome in chain["kills"] if outcome == "killed"]
        assert points[0].startswith("checkpoint-"), chain  # killed inside a checkpoint write
        killed += len(points)
        _same_model(tmp_path / "reference", Path(chain["out"]))
    assert killed >= 2 * len(seeds)
    # Nothing left behind but the models: no checkpoint, no lock file, no half-written save.
    assert report["left"] == sorted(["reference", "random-moment", *(Path(c["out"]).name for c in report["chains"])])


@pytest.mark.slow
def test_keel_train_resume_continues_the_latest_unfinished_run_on_the_data(tmp_path) -> None:
    data = tmp_path / "penguins.csv"
    data.write_bytes(PENGUINS.read_bytes())
    options = ["-t", "species", "-p", "fast", "-s", "training.epochs=4", "-s", "training.checkpoint=true",
               "-s", "training.checkpoint_every=1", "--no-report", "--quiet"]
    keel_command = [str(Path(sys.executable).parent / "keel"), "train", "penguins.csv", *options]
    env = dict(os.environ)
    reference = subprocess.run([*keel_command, "-o", "reference"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
    assert reference.returncode == 0, reference.stderr
    killed = subprocess.run(keel_command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**env, "KEEL_TEST_KILL_AT": "checkpoint-synced@2"})
    assert killed.returncode == -signal.SIGKILL
    (run,) = [path for path in (tmp_path / "runs").iterdir() if path.suffix != ".checkpoint" and path.is_dir()]
    assert read_checkpoint(checkpoint_directory(run)).document["current"]["epoch"] == 1
    resumed = subprocess.run([*keel_command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"saved the model to runs/{run.name}" in resumed.stdout  # a folder keel chose is named
    _same_model(tmp_path / "reference", run)
    assert sorted(os.listdir(tmp_path / "runs")) == [run.name]
    again = subprocess.run([*keel_command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "no unfinished run on penguins.csv" in again.stderr
