"""text.linear: a linear model's scores on a tfidf column's TF-IDF, out of fold for the rows it was fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import keel
from keel.config import TextConfig
from keel.data.text import LINEAR_C, TextTransform
from tests.unit.data.test_text import reviews

WORDS = [f"w{index}" for index in range(400)]


def _random_texts(n_texts: int, copies: int, seed: int = 0) -> tuple[pd.Series, np.ndarray]:
    """Texts of random words whose labels are random (no signal), each text on ``copies`` rows with one label."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(n_texts)]
    labels = rng.integers(0, 2, n_texts)
    return pd.Series(np.repeat(texts, copies)), np.repeat(labels, copies)


def _correlation(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.corrcoef(scores[:, 0], labels)[0, 1])


def test_the_rows_fitted_on_get_out_of_fold_scores_not_the_full_models() -> None:
    # Random labels: a model scoring the rows it was fitted on knows them (a word of a row is rare), so its
    # scores follow the labels; out of fold they carry nothing, as on new rows. Each text is on 3 rows with
    # one label: folds of rows (not of texts) would leak through the copies.
    texts, labels = _random_texts(300, 3)
    transform = TextTransform("t", TextConfig(dim=8)).fit(texts, None, labels, "binary")
    assert transform.linear == 1 and len(transform.components) == 9 and transform.width == 10
    assert transform.parts[-2:] == ["linear score 1", "empty"]
    out_of_fold = transform.out_of_fold()
    assert out_of_fold is not None and out_of_fold.shape == (900, 1)
    in_sample = transform.transform(texts)[0][:, -2:-1]  # the full model's, as a prediction computes them
    assert _correlation(in_sample, labels) > 0.5
    assert abs(_correlation(out_of_fold, labels)) < 0.15
    # Scaled as the transform scales: mean 0, spread 1 over the rows fitted on.
    assert abs(out_of_fold.mean()) < 1e-5 and abs(out_of_fold.std() - 1) < 1e-4


def test_the_transform_computes_the_full_models_scores_from_the_coefficients() -> None:
    frame = reviews(300)
    labels = frame["label"].to_numpy()
    transform = TextTransform("review", TextConfig(dim=4)).fit(frame["review"], None, labels, "binary")
    reference = LogisticRegression(C=LINEAR_C, max_iter=1000).fit(transform._tfidf(frame["review"].tolist()), labels)
    new = reviews(40, seed=3)["review"]
    logits = reference.decision_function(transform._tfidf(new.tolist()))
    column = transform.transform(new)[0][:, -2]
    # Standardized by the out-of-fold scores' mean and spread: an affine map of the logits, increasing.
    slope, intercept = np.polyfit(logits, column, 1)
    assert slope > 0 and np.allclose(column, slope * logits + intercept, atol=1e-4)


def test_multiclass_scores_a_column_per_class_and_regression_one() -> None:
    rng = np.random.default_rng(0)
    topics = {0: ["apple", "pear", "plum"], 1: ["car", "bus", "train"], 2: ["red", "blue", "green"]}
    labels = rng.integers(0, 3, 240)
    texts = pd.Series([" ".join(rng.choice(topics[label], 3)) + f" item{index}" for index, label in enumerate(labels)])
    three = TextTransform("t", TextConfig(dim=4)).fit(texts, None, labels, "multiclass")
    assert three.linear == 3
    values = rng.normal(size=240)
    one = TextTransform("t", TextConfig(dim=4)).fit(texts, None, values, "regression")
    assert one.linear == 1
    off = TextTransform("t", TextConfig(dim=4, linear=False)).fit(texts, None, labels, "multiclass")
    assert off.linear == 0 and off.out_of_fold() is None
    unsupervised = TextTransform("t", TextConfig(dim=4)).fit(texts)  # no target (a streamed run's sample)
    assert unsupervised.linear == 0


def test_a_class_with_one_distinct_text_gets_no_scores_and_a_note() -> None:
    texts = pd.Series([f"common words here {index % 40}" for index in range(200)] + ["the only one"] * 5)
    labels = np.array([index % 2 for index in range(200)] + [2] * 5)
    transform = TextTransform("t", TextConfig(dim=4)).fit(texts, None, labels, "multiclass")
    assert transform.linear == 0 and any("fewer than two distinct texts" in note for note in transform.notes)


@pytest.mark.parametrize("bagging", [1, 3])  # bagged: fitted on every fold's rows, all scored out of fold
def test_a_run_trains_on_out_of_fold_scores_and_predicts_with_the_full_model(tmp_path: Path, bagging: int) -> None:
    frame = reviews(400)
    model = keel.fit(frame, target="label", quiet=True,
                     config={"preset": "fast", "training.epochs": 20, "text.dim": 6, "training.bagging": bagging})
    text = model.preprocessor.transforms[0]
    assert text.linear == 1 and text.out_of_fold() is None  # dropped once the training rows were laid out
    # Said in the run's notes and by keel info (describe_network).
    assert any("'review': 1 linear score (logistic regression on its TF-IDF" in note and "beside 6 components" in note
               for note in model.notes)
    from keel.describe import describe_network, network_lines

    (described,) = [e for e in describe_network(model)["encoders"] if e["column"] == "review"]
    assert described["components"] == 6 and described["linear_scores"] == 1 and described["parameters"] == 0
    assert ("text review", f"TF-IDF of {len(text.vocabulary):,} terms -> 6 components + 1 linear score (text.linear) "
            "+ an empty-text flag") in network_lines(describe_network(model))
    assert model.metrics["accuracy"] >= 0.95
    # Saved and loaded: the scores are rows of the stored projection; export computes them in the graph.
    model.save(tmp_path / "m")
    loaded = keel.load(tmp_path / "m")
    assert loaded.preprocessor.transforms[0].linear == 1
    new = reviews(60, seed=1)
    np.testing.assert_array_equal(loaded.predict_proba(new), model.predict_proba(new))
    assert loaded.export(output=tmp_path / "m.onnx").parity["ok"]
    # The held-out test rows were scored with the full model's scores, as a prediction scores them (their texts
    # were never in a fold), so the stored test predictions are what predicting those rows gives.
    stored = model.test_predictions
    assert stored is not None and stored.probabilities is not None
    again = model.predict_proba(frame.iloc[stored.row - 1])
    np.testing.assert_allclose(again, stored.probabilities, atol=1e-6)


def test_the_training_rows_read_out_of_fold_scores_in_the_run() -> None:
    # Random labels on distinct texts: trained on in-sample scores the network would fit its training rows through
    # them; on out-of-fold ones the training rows' scores carry nothing, as the validation rows' do.
    from keel.config import load_config
    from keel.data.preprocess import Preprocessor
    from keel.data.schema import infer_schema

    texts, labels = _random_texts(200, 1, seed=1)
    frame = pd.DataFrame({"t": texts, "label": labels})
    schema = infer_schema(frame, load_config({"target": "label", "input_features": [{"name": "t", "type": "text"}]}))
    preprocessor = Preprocessor(schema, text=TextConfig(dim=4))
    rows = np.arange(0, 200, 2)  # fitted on the even rows
    preprocessor.fit(frame, rows=rows, target=labels[rows], task="binary")
    numeric = preprocessor.transform(frame).numeric
    full = numeric[:, -2].copy()
    positions = np.arange(200)[rows]
    preprocessor.put_out_of_fold(numeric, positions)
    text = preprocessor.transforms[0]
    assert isinstance(text, TextTransform) and text.out_of_fold() is not None
    np.testing.assert_array_equal(numeric[rows, -2], text.out_of_fold()[:, 0])
    np.testing.assert_array_equal(numeric[1::2, -2], full[1::2])  # the other rows keep the full model's
    assert not np.allclose(numeric[rows, -2], full[rows])
    np.testing.assert_array_equal(numeric[:, :-2], preprocessor.transform(frame).numeric[:, :-2])  # nothing else
