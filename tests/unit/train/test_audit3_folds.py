"""Audit of ce1c420: an explicit training.bagging that would leave a fold empty is refused before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.data.split import fold_rows
from keel.errors import ConfigError
from keel.train import pipeline


@pytest.mark.parametrize("stratified", [False, True])
def test_the_suggested_bagging_leaves_no_fold_empty(stratified: bool) -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n_rows = int(rng.integers(2, 40))
        rows = np.sort(rng.choice(200, n_rows, replace=False))
        classes = rng.integers(0, 3, 200) if stratified else None
        groups = rng.integers(0, int(rng.integers(2, 12)), 200) if trial % 2 else None
        if groups is not None and len(np.unique(groups[rows])) < 2:
            continue
        networks = int(rng.integers(2, 30))
        folds = fold_rows(rows, networks, seed=trial, classes=classes, groups=groups)
        empty = sum(not len(fold) for fold in folds)
        units = len(np.unique(groups[rows])) if groups is not None else n_rows
        assert empty == max(0, networks - units)  # the check fires exactly when there are fewer units than folds
        if empty:
            suggested = networks - empty
            assert suggested >= 2  # pool holds >= 2 groups/rows whenever there are validation rows
            assert all(len(fold) for fold in fold_rows(rows, suggested, seed=trial, classes=classes, groups=groups))


def _frame(n: int, groups: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=n), "site": np.arange(n) % groups})
    frame["label"] = np.where(frame.x > 0, "a", "b")
    return frame


def test_refused_before_anything_is_written_and_the_suggestion_trains(tmp_path) -> None:
    config = {"preset": "fast", "training.epochs": 1, "training.bagging": 5, "training.split_by": "site",
              "training.test_split": 0.0}
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"Set training.bagging to 3 or fewer") as error:
        keel.fit(_frame(60, 3), target="label", config=config, quiet=True, output=out)
    assert "\n" not in str(error.value)
    assert not out.exists() or not any(out.rglob("*"))
    model = keel.fit(_frame(60, 3), target="label", config={**config, "training.bagging": 3}, quiet=True,
                     importance=False)
    assert min(model.run["bagging"]["validation_each"]) > 0


def test_bagging_auto_never_hits_it_with_few_groups() -> None:
    for groups in (2, 4, 5):
        model = keel.fit(_frame(80, groups), target="label", quiet=True, importance=False,
                         config={"preset": "balanced", "training.epochs": 1, "training.split_by": "site",
                                 "training.test_split": 0.0})
        assert model.run is not None


def test_a_streamed_run_refuses_an_empty_fold_too(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    frame = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "site": np.arange(n) % 3})
    frame["label"] = np.where(frame.x + frame.y > 0, "a", "b")
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)

    class Reached(Exception):
        pass

    def stop(data, *args, **kwargs):  # training would start here: record the folds and stop
        raise Reached([0 if validation is None else len(validation) for _, validation in data.bags])

    monkeypatch.setattr(pipeline, "train_networks", stop)
    with pytest.raises(ConfigError, match=r"training.bagging is 5, but [1-4] of its folds hold no rows of .*big.csv "
                                          r"\(each training.split_by 'site' group goes to the fold"):
        keel.fit(str(path), target="label", quiet=True, importance=False,
                 config={"preset": "fast", "training.bagging": 5, "training.split_by": "site",
                         "data.memory_budget": "1MiB", "training.epochs": 1})
