"""Audit of text.linear (commit 2127688): out-of-fold linear scores of tfidf text columns.

The tests named ``test_bug_*`` demonstrate defects and fail on 2127688; the others pin behaviour that was checked
and found right.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import TextConfig, load_config
from keel.data.preprocess import Preprocessor
from keel.data.schema import infer_schema
from keel.data.text import TextTransform
from tests.unit.data.test_text import reviews

FILLER = [f"f{index}" for index in range(300)]


def _grouped(n_groups: int = 60, per_group: int = 5, seed: int = 0) -> pd.DataFrame:
    """Each group's rows share a group word and one random label; the rest of each text is random filler.
    Across groups the texts carry nothing about the label: only a groupmate's label tells a row's."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_groups)
    rows = [(f"grp{group} " + " ".join(rng.choice(FILLER, 4)) + f" n{group}x{k}", labels[group], group)
            for group in range(n_groups) for k in range(per_group)]
    return pd.DataFrame(rows, columns=["t", "label", "g"])


def _capture_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Records (target given to fit, out-of-fold scores) of each text column fitted with linear scores."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = TextTransform.fit

    def fit(self: TextTransform, series: pd.Series, source: Any = None, target: Any = None,
            task: str = "regression", *args: Any) -> TextTransform:
        result = original(self, series, source, target, task, *args)
        if self.out_of_fold() is not None:
            seen.append((np.asarray(target).copy(), self.out_of_fold().copy()))
        return result

    monkeypatch.setattr(TextTransform, "fit", fit)
    return seen


@pytest.mark.parametrize("bagging", [1, 3])
def test_bug_out_of_fold_scores_leak_groupmates_labels_under_split_by(monkeypatch: pytest.MonkeyPatch,
                                                                       bagging: int) -> None:
    # training.split_by says rows of a group must not inform each other (the split keeps a group together).
    # text.linear's folds are by distinct text only, so a row's "out-of-fold" score comes from a model fitted on
    # its groupmates' labels (through the shared group word): the training rows' scores carry the label, while
    # rows of a new group (validation, test, prediction) get nothing from it, and the network learns to trust
    # a score that is worthless on new groups. With bagging the bags' validation rows (early stopping,
    # calibration) are among the fitted rows and get the leaked scores too.
    frame = _grouped()
    seen = _capture_fits(monkeypatch)
    keel.fit(frame, target="label", quiet=True,
             config={"preset": "fast", "training.epochs": 1, "text.dim": 4, "training.split_by": "g",
                     "training.test_split": 0.0, "training.bagging": bagging,
                     "input_features": [{"name": "t", "type": "text"}]})
    assert len(seen) == 1
    target, scores = seen[0]
    correlation = abs(float(np.corrcoef(scores[:, 0], target)[0, 1]))
    # Folds by group give about 0 here, as rows of a new group get; 2127688 gives far more.
    assert correlation < 0.3, f"out-of-fold scores follow the labels through groupmates: r = {correlation:.2f}"


def test_bug_preprocessor_fit_with_every_row_permuted_misaligns_the_target() -> None:
    # Preprocessor.fit skips the row selection when len(rows) == len(frame) (harmless for unsupervised
    # transforms), but the target is "one value per row fitted", i.e. in ``rows`` order: a permutation of every
    # row pairs each text with another row's label. The pipeline passes sorted rows today, so only a caller of
    # the public method (or a future unsorted fitted_rows) hits it.
    frame = reviews(300)
    labels = frame["label"].to_numpy()
    schema = infer_schema(frame[["review", "label"]], load_config(
        {"target": "label", "input_features": [{"name": "review", "type": "text"}]}))
    rows = np.random.default_rng(1).permutation(len(frame))
    permuted = Preprocessor(schema, text=TextConfig(dim=4)).fit(frame, rows=rows, target=labels[rows], task="binary")
    plain = Preprocessor(schema, text=TextConfig(dim=4)).fit(frame, target=labels, task="binary")
    a, b = permuted.transforms[0], plain.transforms[0]
    assert isinstance(a, TextTransform) and isinstance(b, TextTransform)
    assert a.linear == b.linear == 1
    score = a.transform(frame["review"])[0][:, -2]
    # Fitted on the same (text, label) pairs, the full model's scores should separate the classes as well.
    assert float(np.corrcoef(score, labels)[0, 1]) > 0.8


def test_bug_problem_accepts_a_linear_count_beyond_the_components() -> None:
    # A saved state whose "linear" exceeds the stored components (hand-edited or mixed files) loads without a
    # problem, and ``parts`` then names a negative number of components.
    frame = reviews(200)
    fitted = TextTransform("review", TextConfig(dim=3)).fit(frame["review"], None, frame["label"].to_numpy(), "binary")
    state = {**fitted.state(), "linear": len(fitted.components) + 2}
    loaded = TextTransform.from_state(state, fitted.arrays())
    assert loaded.problem() is not None


# ---- checked and found right -------------------------------------------------------------------------------------

def test_the_run_writes_out_of_fold_scores_at_the_fitted_rows_and_full_scores_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The pipeline wiring itself (where[fitted_rows]), which test_text_linear only checks by calling
    # put_out_of_fold by hand: after the run's put, the training rows hold the out-of-fold scores and the
    # validation / test rows the full model's (what a prediction computes).
    frame = reviews(300).assign(extra=lambda f: np.arange(len(f)) % 7 * 1.0)
    captured: dict[str, Any] = {}
    original = Preprocessor.put_out_of_fold

    def put(self: Preprocessor, numeric: np.ndarray, positions: np.ndarray) -> None:
        captured["before"] = numeric.copy()
        original(self, numeric, positions)
        captured["after"], captured["positions"] = numeric.copy(), positions.copy()
        captured["oof"] = self.transforms[[t.name for t in self.transforms].index("review")].out_of_fold().copy()
        captured["pre"] = self

    monkeypatch.setattr(Preprocessor, "put_out_of_fold", put)
    model = keel.fit(frame, target="label", quiet=True, config={"preset": "fast", "training.epochs": 1,
                                                                 "text.dim": 4, "training.test_split": 0.2})
    before, after, positions, oof = captured["before"], captured["after"], captured["positions"], captured["oof"]
    text = model.preprocessor.transforms[[t.name for t in model.preprocessor.transforms].index("review")]
    column = model.preprocessor.numeric_width - 2  # the text column is the last numeric transform here
    assert text.linear == 1
    np.testing.assert_array_equal(after[positions, column], oof[:, 0])
    others = np.setdiff1d(np.arange(len(after)), positions)
    np.testing.assert_array_equal(after[others], before[others])
    changed = np.flatnonzero((after != before).any(axis=0))
    assert changed.tolist() == [column]


def test_same_fit_twice_gives_the_same_arrays_bit_for_bit() -> None:
    frame = reviews(300)
    labels = frame["label"].to_numpy()
    one = TextTransform("r", TextConfig(dim=4)).fit(frame["review"], None, labels, "binary")
    two = TextTransform("r", TextConfig(dim=4)).fit(frame["review"], None, labels, "binary")
    for key, value in one.arrays().items():
        np.testing.assert_array_equal(value, two.arrays()[key])
    np.testing.assert_array_equal(one.out_of_fold(), two.out_of_fold())


def test_classes_missing_from_the_fitted_rows_and_string_labels_fit() -> None:
    rng = np.random.default_rng(0)
    topics = {0: ["apple", "pear", "plum"], 1: ["car", "bus", "train"], 3: ["red", "blue", "green"]}
    labels = rng.choice([0, 1, 3], 240)  # code 2 absent (only in other rows)
    texts = pd.Series([" ".join(rng.choice(topics[label], 3)) + f" item{index}" for index, label in enumerate(labels)])
    three = TextTransform("t", TextConfig(dim=4)).fit(texts, None, labels, "multiclass")
    assert three.linear == 3 and three.out_of_fold().shape == (240, 3)
    two = TextTransform("t", TextConfig(dim=4)).fit(texts[labels != 1], None, labels[labels != 1], "multiclass")
    assert two.linear == 1  # codes {0, 3}: one logit, as binary
