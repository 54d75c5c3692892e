from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ArtifactError, ConfigError, DataError, KeelWarning
from tests.conftest import FAST, PENGUINS, make_classification_frame, settings_note


def test_classifier_learns_predicts_in_order_and_reports_metrics(classification_frame) -> None:
    model = keel.fit(classification_frame, target="label", config={**FAST, "training.epochs": 30}, quiet=True)
    assert model.task == "multiclass" and model.classes == ["alpha", "beta", "gamma"]
    assert model.metrics["n_rows"] == 30 and model.metrics["accuracy"] > 0.8
    predictions = model.predict(classification_frame)
    assert predictions.shape == (150,) and (predictions == classification_frame["label"]).mean() > 0.8
    proba = model.predict_proba(classification_frame)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.classes)[proba.argmax(1)], predictions)
    reversed_rows = classification_frame.iloc[::-1]
    np.testing.assert_array_equal(model.predict(reversed_rows), predictions[::-1])


def test_binary_labels_keep_their_type() -> None:
    frame = make_classification_frame()
    frame["label"] = (frame["label"] == "alpha").astype(int)
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    assert model.task == "binary" and model.classes == [0, 1]
    assert model.predict(frame).dtype.kind == "i" and model.predict_proba(frame).shape == (150, 2)


def test_regression_in_target_units(regression_frame) -> None:
    model = keel.fit(regression_frame, target="price", config={**FAST, "training.epochs": 60}, quiet=True)
    assert model.task == "regression" and model.metrics["r2"] > 0.8
    assert abs(model.predict(regression_frame).mean() - regression_frame["price"].mean()) < 1.0
    with pytest.raises(ConfigError, match="predict_proba needs a classification model"):
        model.predict_proba(regression_frame)


def test_save_load_gives_identical_predictions(trained_classifier, classification_frame) -> None:
    model, directory = trained_classifier
    loaded = keel.load(directory)
    np.testing.assert_array_equal(loaded.predict_proba(classification_frame), model.predict_proba(classification_frame))
    assert loaded.config == model.config and loaded.metrics == model.metrics and loaded.schema == model.schema
    assert loaded.summary()["parameters"] == model.summary()["parameters"]


def test_predict_frame_keeps_a_dataframe_s_index(trained_classifier, classification_frame) -> None:
    # The parity audit (s17): a filtered frame's predictions came back numbered 0..n-1, and df.assign / df.join
    # lined 375 of 538 rows up with another row's label or NaN, silently.
    model, directory = trained_classifier
    rows = classification_frame[classification_frame.index % 3 != 0].drop(columns="label")
    framed = model.predict_frame(rows, proba=True)
    assert framed.index.equals(rows.index)
    assert (rows.join(framed)["label"].to_numpy() == model.predict(rows)).all()
    assert np.allclose(rows.join(framed)[f"proba_{model.classes[0]}"], model.predict_proba(rows)[:, 0])
    assert framed.reset_index(drop=True).equals(model.predict_frame(rows.reset_index(drop=True), proba=True))
    twins = rows.head(4).set_axis([7, 7, 8, 8])  # repeated labels: concat pairs by position within the index
    side = pd.concat([twins, model.predict_frame(twins)], axis=1)
    assert len(side) == 4 and (side["label"].to_numpy() == model.predict(twins)).all()


def test_predict_time_columns_missing_extra_and_unseen(trained_classifier, classification_frame) -> None:
    model, _ = trained_classifier
    with pytest.raises(DataError, match=r"lacks the input column\(s\) \['color'\]"):
        model.predict(classification_frame.drop(columns="color"))
    extra = classification_frame.assign(unrelated=1.0).drop(columns="label")
    np.testing.assert_array_equal(model.predict(extra), model.predict(classification_frame))
    unseen = classification_frame.head(4).assign(color=["purple", "purple", "red", "teal"])
    with pytest.warns(KeelWarning, match=r"column 'color': 3 value\(s\) not seen in training \(or rare there\), "
                                         r"e\.g\. 'purple', 'teal', were mapped"):
        assert len(model.predict(unseen)) == 4


def test_predict_reports_bad_numbers_by_row(trained_classifier, classification_frame) -> None:
    model, _ = trained_classifier
    bad = classification_frame.head(5).astype({"size": object})
    bad.loc[3, "size"] = "big"
    with pytest.raises(DataError, match=r"column 'size' holds numbers, but row 4 has the value 'big'"):
        model.predict(bad)


def test_evaluate_drops_unlabelled_rows_and_rejects_unknown_classes(trained_classifier, classification_frame) -> None:
    model, _ = trained_classifier
    frame = classification_frame.copy()
    frame.loc[:4, "label"] = None
    metrics = model.evaluate(frame)
    assert metrics["n_rows"] == 145 and metrics["n_missing_target"] == 5
    frame.loc[7, "label"] = "delta"
    with pytest.raises(DataError, match=r"target column 'label' row 8 has the class 'delta', which the model never saw"):
        model.evaluate(frame)
    with pytest.raises(DataError, match="target column 'label' is not in the data"):
        model.evaluate(frame.drop(columns="label"))


def test_rows_with_missing_target_are_dropped_and_counted() -> None:
    frame = make_classification_frame()
    frame.loc[[3, 9, 27], "label"] = None
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    assert "; dropped 3 row(s) of the training data with a missing 'label'" in model.notes[0]


def test_explicit_test_data_and_config_sources(tmp_path, regression_frame) -> None:
    train_path, test_path = tmp_path / "train.parquet", tmp_path / "test.csv"
    regression_frame.iloc[:120].to_parquet(train_path)
    regression_frame.iloc[120:].to_csv(test_path, index=False)
    config = tmp_path / "config.yaml"
    config.write_text("target: price\nmodel: {hidden: [8]}\ntraining: {epochs: 3, validation_split: 0.2}\n")
    model = keel.fit(train_path, config=config, test=test_path, quiet=True)
    assert model.metrics["n_rows"] == 30 and model.network.spec.hidden == [8]
    with pytest.raises(ConfigError, match="target is 'x0' but the config says 'price'"):
        keel.fit(train_path, target="x0", config=config, quiet=True)


def test_fit_does_not_disturb_the_global_random_state(classification_frame) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    keel.fit(classification_frame, target="label", config=FAST, quiet=True)
    assert torch.equal(torch.rand(1), expected)


def test_same_seed_same_model_different_seed_different_split(classification_frame) -> None:
    first = keel.fit(classification_frame, target="label", config=FAST, quiet=True)
    second = keel.fit(classification_frame, target="label", config=FAST, quiet=True)
    np.testing.assert_array_equal(first.predict_proba(classification_frame), second.predict_proba(classification_frame))
    other = keel.fit(classification_frame, target="label", config={**FAST, "training.seed": 7}, quiet=True)
    assert not np.array_equal(other.predict_proba(classification_frame), first.predict_proba(classification_frame))


@pytest.mark.parametrize("settings", [
    {"preprocessing.categorical_encoding": "onehot", "preprocessing.missing_indicator": True},
    {"preprocessing.normalize": "minmax", "preprocessing.missing": "constant", "model.norm": "batch"},
    {"model.norm": "layer", "model.activation": "gelu", "training.class_weights": "balanced",
     "training.schedule": "cosine", "training.monitor": "roc_auc"},
    {"model.embedding_dim": 3, "training.optimizer": "sgd", "training.lr": 0.05, "training.schedule": "plateau"},
])
def test_options_train_save_and_load(tmp_path, classification_frame, settings) -> None:
    model = keel.fit(classification_frame, target="label", config={**FAST, **settings}, quiet=True)
    loaded = keel.load(model.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_proba(classification_frame), model.predict_proba(classification_frame))


def test_load_rejects_inconsistent_descriptions(tmp_path, trained_classifier) -> None:
    import json
    import shutil

    _, directory = trained_classifier
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    document = json.loads((copy / "keel.json").read_text())
    document["network"]["hidden"] = [999]
    (copy / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="does not describe its weights"):
        keel.load(copy)


def test_penguins_end_to_end() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeelWarning)
        model = keel.fit(PENGUINS, target="species", config={"training.epochs": 40}, quiet=True)
    assert model.metrics["accuracy"] > 0.9
    assert {f.name for f in model.schema.features} >= {"island", "bill_length_mm", "sex"}
    assert model.schema.dropped == {}
    sample = pd.read_csv(PENGUINS).head(3).drop(columns="species")
    assert set(model.predict(sample)) <= {"Adelie", "Chinstrap", "Gentoo"}



def _imbalanced_frame(n_rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n_rows)
    label = np.where(x + rng.normal(0, 0.5, n_rows) > 1.6, "yes", "no")  # about 6% positives
    return pd.DataFrame({"x": x, "noise": rng.normal(0, 1, n_rows), "label": label})


def test_auto_class_weights_kick_in_for_a_rare_class_and_probabilities_keep_the_true_shares() -> None:
    frame = _imbalanced_frame()
    config = {**FAST, "training.epochs": 40, "training.class_weights": "auto"}
    model = keel.fit(frame, target="label", config=config, quiet=True)
    assert any("balanced class weights" in note for note in model.notes)
    share = (frame["label"] == "yes").mean()
    corrected = model.predict_proba(frame)[:, 1].mean()
    weighted = keel.fit(frame, target="label", config={**config, "training.class_weights": "balanced"}, quiet=True)
    uncorrected = weighted.predict_proba(frame)[:, 1].mean()
    assert abs(corrected - share) < 0.04 < abs(uncorrected - share)  # balanced alone inflates the rare class
    common = keel.fit(make_classification_frame(), target="label", config={**FAST, "training.class_weights": "auto"},
                      quiet=True)
    assert not any("class weights" in note for note in common.notes)


@pytest.mark.parametrize("options", [
    {"model.ensemble": 4, "model.numeric_embedding": "periodic", "preprocessing.normalize": "quantile"},
    {"model.numeric_embedding": "piecewise_linear", "model.architecture": "resnet", "preprocessing.normalize": "robust"},
    {"training.bagging": 3, "model.ensemble": 2, "preprocessing.categorical_encoding": "auto"},
])
def test_new_options_train_and_survive_a_save_load_round_trip(tmp_path, options, classification_frame) -> None:
    config = {**FAST, "training.epochs": 20, **options}
    model = keel.fit(classification_frame, target="label", config=config, quiet=True)
    assert model.metrics["accuracy"] > 0.8
    model.save(tmp_path / "m")
    loaded = keel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(classification_frame), model.predict_proba(classification_frame))
    if "training.bagging" in options:
        assert len(loaded.network.networks) == 3 and len(model.history["bags"]) == 3
        assert loaded.network.spec.onehot == [True]  # color has 3 values: one-hot under auto


def test_the_balanced_preset_is_reported_and_learns(classification_frame) -> None:
    model = keel.fit(classification_frame, target="label", config={"training.epochs": 30}, quiet=True)
    assert settings_note(model).startswith("preset balanced: quantile scaling, MLP 256-256 x8 ensemble")
    assert model.metrics["accuracy"] > 0.8


def test_preprocessing_in_a_given_row_order_equals_reordering_afterwards(classification_frame) -> None:
    from keel.config import load_config
    from keel.data.preprocess import Preprocessor
    from keel.data.schema import infer_schema

    config = load_config({"target": "label", "preset": "fast", "preprocessing.missing_indicator": True})
    preprocessor = Preprocessor(infer_schema(classification_frame, config), config.preprocessing).fit(classification_frame)
    order = np.random.default_rng(0).permutation(len(classification_frame))
    plain, laid_out = preprocessor.transform(classification_frame), preprocessor.transform(classification_frame, order)
    np.testing.assert_array_equal(laid_out.numeric, plain.numeric[order])
    np.testing.assert_array_equal(laid_out.categorical, plain.categorical[order])
    assert laid_out.numeric.flags.c_contiguous and laid_out.categorical.flags.c_contiguous


def test_an_integer_beyond_float64_is_an_infinity_refused_not_a_crash(trained_classifier, classification_frame) -> None:
    # The parity audit (s17): 10**400 in an object column raised pandas' bare OverflowError from Model.predict.
    model, _ = trained_classifier
    rows = classification_frame.drop(columns="label").head(3).astype(object)
    number = next(feature.name for feature in model.schema.features if feature.type == "number")
    rows.at[rows.index[1], number] = -(10**400)
    with pytest.raises(DataError, match=f"column '{number}' row 2 has the value -inf; keel needs finite numbers"):
        model.predict(rows)


@pytest.fixture(scope="module")
def one_epoch_model(tmp_path_factory):  # type: ignore[no-untyped-def]
    frame = make_classification_frame(120)
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True, importance=False)
    directory = tmp_path_factory.mktemp("one-epoch") / "model"
    model.save(directory)
    model.export()
    return model, directory, frame


@pytest.mark.parametrize("cell", [["red"], {"colour": "red"}, np.array(["red", "blue"])])
def test_a_container_in_a_category_cell_is_refused_like_the_runtime_refuses_it(one_epoch_model, cell) -> None:
    # The parity audit (s17): Model.predict read ['red'] as the text "['red']" (unseen, warned) and keel.runtime's
    # Predictor given a DataFrame as well (silently), where a record with the list was a DataError.
    from keel.runtime import Predictor

    model, directory, frame = one_epoch_model
    category = next(feature.name for feature in model.schema.features if feature.type == "category")
    rows = frame.drop(columns="label").head(3).astype(object)
    rows[category] = pd.Series(["red", "blue", cell], index=rows.index, dtype=object)
    expected = f"column '{category}' row 3 holds a value of type {type(cell).__name__}"
    with pytest.raises(DataError, match=expected):
        model.predict(rows)
    with pytest.raises(DataError, match=expected):
        Predictor.load(directory).predict(rows)
    # A tuple is hashable, and was a category of models saved before the check (zip(a, b) pairs): still read.
    rows[category] = pd.Series(["red", "blue", ("red", 2)], index=rows.index, dtype=object)
    with pytest.warns(KeelWarning, match="not seen in training"):
        assert len(model.predict(rows)) == 3


def test_columns_missing_because_of_spaces_in_a_csv_header_are_named(trained_classifier, classification_frame,
                                                                     tmp_path) -> None:
    # The parity audit (s17): a header written "size, weight, color" said only "lacks ['weight', 'color', ...]".
    model, _ = trained_classifier
    path = tmp_path / "spaced.csv"
    frame = classification_frame.head(5)
    path.write_text(", ".join(frame.columns) + "\n" + "\n".join(", ".join(map(str, row)) for row in frame.values))
    with pytest.raises(DataError, match=r"The data has ' weight', ' color'.*remove the spaces \(in a DataFrame: df.columns = df.columns.str.strip\(\)\)"):
        model.predict(path)
    spaced = classification_frame.rename(columns={"weight": " weight"})
    with pytest.raises(DataError, match=r"test data lacks the input column\(s\) \['weight'\].*The data has ' weight'"):
        keel.fit(classification_frame, target="label", config=FAST, test=spaced, quiet=True)


def test_blank_text_in_a_number_column_is_told_how_a_missing_number_is_written(trained_classifier,
                                                                              classification_frame) -> None:
    # The parity audit (s17): '' got "Fix or blank out the value", though it is blank already.
    model, _ = trained_classifier
    rows = classification_frame.drop(columns="label").head(3).astype({"weight": object})
    rows.at[rows.index[0], "weight"] = ""
    with pytest.raises(DataError, match="row 1 has the value ''.*None or NaN in a DataFrame, not blank text"):
        model.predict(rows)


def test_an_infinite_weight_is_not_told_to_be_left_empty() -> None:
    # The parity audit (s17): the advice "leave the cells empty to have them filled" led to a second error, as
    # empty weights are refused.
    from keel.data.values import row_weights

    with pytest.raises(DataError, match=r"row 2 has the value inf; .*Replace them with finite numbers\.$"):
        row_weights(pd.Series([1.0, np.inf]), column="w")


def test_the_rows_note_counts_the_test_rows_scored_not_the_unlabelled_ones(classification_frame) -> None:
    # A new user's trial (s17): with --test, storms' note said "3908 for test" where 963 were scored.
    test = make_classification_frame(60, seed=4)
    test.loc[:24, "label"] = None
    model = keel.fit(classification_frame, target="label", config={**FAST, "training.epochs": 1}, test=test,
                     quiet=True, importance=False)
    assert ", 35 for test (" in model.notes[0] and model.metrics["n_rows"] == 35
    assert "dropped 25 row(s) of the test data with a missing 'label'" in model.notes


def test_an_unseen_numeric_class_is_spelled_as_a_class_not_as_numpy_shows_it() -> None:
    # A new user's trial (s17): "has the class np.float64(5.0), which the model never saw; it knows [1, 2, 3, 4]".
    frame = make_classification_frame(150)
    frame["label"] = frame["label"].map({"alpha": 1, "beta": 2, "gamma": 3})
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True, importance=False)
    rows = frame.head(10).astype({"label": float})
    rows.loc[3, "label"], rows.loc[4, "label"] = 5.0, np.nan  # blanks make pandas read the labels as floats
    with pytest.raises(DataError, match=r"row 4 has the class 5, which the model never saw; it knows 1, 2, 3\. "
                                        r"Evaluating, keep to rows of those classes"):
        model.evaluate(rows)


def test_messages_for_blank_weights_and_text_labels_fit_the_case() -> None:
    # The audit of the repairs (s17): blank text in a weight column was told to be written as None (then refused
    # as a missing weight); labels ' 1' and 'Austin, TX' lost the quotes that show their spaces and commas.
    from keel.data.preprocess import TargetEncoder
    from keel.data.values import row_weights

    with pytest.raises(DataError, match=r"has the value ''.*Give it a number \(0 to leave a row out\), or name"):
        row_weights(pd.Series([1.0, ""], dtype=object), column="w")
    encoder = TargetEncoder("city", "multiclass")
    encoder.fit(pd.Series([" 1", "Austin, TX", " 1"]))
    with pytest.raises(DataError, match=r"has the class '1', which the model never saw; it knows ' 1', 'Austin, TX'\."):
        encoder.encode(pd.Series(["1"]))
