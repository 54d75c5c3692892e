"""text.char_ngrams: character n-grams beside tfidf's words and word pairs, in training, the runtime and the export;
models without them (every model saved before) unchanged."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

import keel
import keel.data.words
from keel.config import TextConfig, load_config
from keel.data.text import TextTransform
from keel.data.words import WORD, char_grams, term_ids, terms
from keel.errors import ArtifactError, ConfigError, ExportError
from keel.export.onnx import TERMS_RULE
from keel.export.tflite import to_tflite
from keel.runtime import Predictor

CHARS = {"preset": "fast", "training.epochs": 20, "model.hidden": [16], "text.dim": 8, "text.char_ngrams": [3, 5],
         "input_features": [{"name": "note", "type": "text"}]}
STEMS = ["walk", "talk", "jump", "play", "read", "cook", "paint", "clean", "climb", "watch", "fish", "print"]


def notes(stems: list[str], n: int, seed: int) -> pd.DataFrame:
    """Notes whose label only a word's ending tells (-ing or -ed), the stems varied: words of other stems are
    words training never saw, but their endings are character n-grams it did."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    texts = [f"we {rng.choice(stems)}{'ing' if y else 'ed'} {rng.choice(['today', 'there', 'again'])}" for y in label]
    return pd.DataFrame({"note": texts, "label": np.where(label, "now", "past")})


@pytest.fixture(scope="module")
def char_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    model = keel.fit(notes(STEMS[:8], 300, 0), target="label", config=CHARS, quiet=True, importance=False)
    directory = tmp_path_factory.mktemp("chars") / "m"
    model.save(directory)
    return model, directory


def test_the_words_module_examples_hold() -> None:
    result = doctest.testmod(keel.data.words)
    assert result.failed == 0 and result.attempted >= 3
    assert terms("Big cats", (3, 4))[:3] == ["big", "cats", "big cats"]  # words and pairs first, as without
    assert char_grams("ox", 2, 3) == ["# o", "#ox", "#x ", "# ox", "#ox "]


@settings(deadline=None)  # a property, not a speed: a busy machine took 276 ms over one example
@given(st.text(alphabet="ab cé_1-!É\u00e0", max_size=30), st.integers(1, 4), st.integers(0, 3))
def test_a_character_n_gram_is_never_a_word_or_a_pair(text: str, low: int, more: int) -> None:
    plain = terms(text)
    grams = terms(text, (low, low + more))[len(plain):]
    assert terms(text, (low, low + more))[:len(plain)] == plain
    assert not set(grams) & set(plain) and all(gram.startswith("#") for gram in grams)
    assert all(WORD.fullmatch(term) or (" " in term and not term.startswith("#")) for term in plain)


def test_term_ids_count_the_grams_of_a_column_that_has_them() -> None:
    index = {"cat": 0, "#cat": 1, "# ca": 2}
    assert term_ids(["cat", "Cats", " "], index) == [[0], [], [3]]
    assert term_ids(["cat", "Cats", " "], index, (3, 3)) == [[0, 2, 1], [2, 1], [3]]


def test_char_ngrams_are_validated_like_the_other_text_settings() -> None:
    assert load_config({"target": "y", "text.char_ngrams": [3, 5]}).text.char_ngrams == (3, 5)
    assert load_config({"target": "y"}).text.char_ngrams is None
    with pytest.raises(ConfigError, match=r"text.char_ngrams: takes \[low, high\] with low at most high.*got \[5, 3\]"):
        load_config({"target": "y", "text.char_ngrams": [5, 3]})
    for bad in ([0, 3], [3, 11], [3], [True, 4], "3-5"):
        with pytest.raises(ConfigError, match="text.char_ngrams"):
            load_config({"target": "y", "text.char_ngrams": bad})


@pytest.mark.parametrize("encoder", ["bag", "pretrained"])
def test_an_encoder_that_reads_no_tfidf_refuses_char_ngrams(encoder: str) -> None:
    # At validation, before any data is read...
    with pytest.raises(ConfigError, match=f"text.char_ngrams adds character n-grams to tfidf's terms; text.encoder "
                                          f"{encoder} does not read them"):
        load_config({"target": "y", "text.encoder": encoder, "text.char_ngrams": [3, 5]})
    # ...and by the transform, for a config built without validate_config.
    transform = TextTransform("note", TextConfig(encoder=encoder, char_ngrams=(3, 5)))
    with pytest.raises(ConfigError, match=f"text.char_ngrams adds character n-grams to tfidf's terms; text.encoder "
                                          f"{encoder} does not read them"):
        transform.fit(notes(STEMS, 40, 0)["note"])


def test_the_words_and_the_grams_are_two_tfidfs_each_of_unit_length() -> None:
    texts = pd.Series(["The cat sat on the mat.", "the cats ATE the rat!", "a dog sat on a log", None,
                       "the dog and the cat", "Cat, cat, cat & mat"] * 3).fillna("")
    transform = TextTransform("t", TextConfig(max_features=10_000, char_ngrams=(2, 4))).fit(texts)
    split = transform.word_terms
    references = [TfidfVectorizer(analyzer=terms, sublinear_tf=True, min_df=2),
                  TfidfVectorizer(analyzer=lambda text: terms(text, (2, 4))[len(terms(text)):], sublinear_tf=True,
                                  min_df=2)]
    expected = sparse.hstack([reference.fit_transform(texts) for reference in references]).toarray()
    assert sorted(transform.vocabulary[:split]) == sorted(references[0].vocabulary_)
    assert sorted(transform.vocabulary[split:]) == sorted(references[1].vocabulary_)
    order = [references[0].vocabulary_[term] for term in transform.vocabulary[:split]] + [
        len(references[0].vocabulary_) + references[1].vocabulary_[term] for term in transform.vocabulary[split:]]
    np.testing.assert_allclose(transform._tfidf(texts.tolist()).toarray(), expected[:, order], atol=1e-6)


def test_max_features_caps_the_words_and_the_grams_each() -> None:
    transform = TextTransform("t", TextConfig(max_features=5, char_ngrams=(3, 5))).fit(notes(STEMS, 200, 0)["note"])
    assert transform.word_terms == 5 and len(transform.vocabulary) == 10
    assert all(term.startswith("#") for term in transform.vocabulary[5:])


def test_grams_tell_the_endings_of_words_training_never_saw(char_model: tuple[keel.Model, Path]) -> None:
    model, _ = char_model
    unseen = notes(STEMS[8:], 200, 1)
    assert (model.predict(unseen.drop(columns="label")) == unseen["label"]).mean() >= 0.9
    words_only = keel.fit(notes(STEMS[:8], 300, 0), target="label", quiet=True, importance=False,
                          config={**CHARS, "text.char_ngrams": None})
    assert (words_only.predict(unseen.drop(columns="label")) == unseen["label"]).mean() < 0.8


def test_a_char_gram_model_saves_loads_exports_and_the_runtime_agrees(char_model: tuple[keel.Model, Path]) -> None:
    model, directory = char_model
    rows = notes(STEMS, 60, 7).drop(columns="label")
    rows.loc[0, "note"], rows.loc[1, "note"], rows.loc[2, "note"] = None, "  ", "Walking!!! qqq zzz"
    loaded = keel.load(directory)
    np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    assert loaded.preprocessor.transforms[0].char_ngrams == (3, 5)
    report = loaded.export(data=rows)
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5
    np.testing.assert_allclose(Predictor.load(directory).predict_proba(rows), model.predict_proba(rows), atol=1e-5)
    props = {p.key: p.value for p in onnx.load(str(directory / "model.onnx")).metadata_props}
    entry = json.loads(props["keel.text"])["note"]
    assert entry["char_ngrams"] == [3, 5] and entry["terms"].startswith(TERMS_RULE)
    assert "'# ca', '#cat', '#at ', '# cat', '#cat '" in entry["terms"]
    assert entry["vocabulary"] == model.preprocessor.transforms[0].vocabulary
    with pytest.raises(ExportError, match=r"TFLite export does not take the text column\(s\) \[.note.\] \(the TF-IDF"):
        to_tflite(model)  # as without n-grams: its graph takes no variable number of terms


def test_a_model_without_char_ngrams_saves_and_exports_as_before(tmp_path: Path) -> None:
    frame = notes(STEMS, 200, 0)
    model = keel.fit(frame, target="label", config={**CHARS, "text.char_ngrams": None}, quiet=True, importance=False)
    model.save(tmp_path / "m")
    state = next(item for item in json.loads((tmp_path / "m" / "keel.json").read_text())["preprocessing"]
                 if item["name"] == "note")
    assert "char_ngrams" not in state  # the state every model before text.char_ngrams has
    assert json.loads((tmp_path / "m" / "keel.json").read_text())["format_version"] == 3  # what older keel reads
    assert not any(term.startswith("#") for term in state["vocabulary"])
    loaded = keel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    assert loaded.export().parity["ok"]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m" / "model.onnx")).metadata_props}
    assert json.loads(props["keel.text"])["note"] == {"vocabulary": state["vocabulary"], "terms": TERMS_RULE}


def test_grams_in_a_vocabulary_without_char_ngrams_are_a_corrupt_model(char_model: tuple[keel.Model, Path],
                                                                       tmp_path: Path) -> None:
    _, directory = char_model
    for name, change in {"dropped": lambda item: item.pop("char_ngrams"),
                         "reordered": lambda item: item["vocabulary"].reverse()}.items():
        broken = tmp_path / name
        shutil.copytree(directory, broken)
        manifest = json.loads((broken / "keel.json").read_text())
        change(next(item for item in manifest["preprocessing"] if item["name"] == "note"))
        (broken / "keel.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="its vocabulary holds character n-grams"):
            keel.load(broken)


def test_the_runtime_refuses_char_ngrams_that_are_no_lengths(char_model: tuple[keel.Model, Path],
                                                            tmp_path: Path) -> None:
    model, directory = char_model
    model.export(output=tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    entry = next(json.loads(prop.value) for prop in graph.metadata_props if prop.key == "keel.text")
    # [1, 1000000] (1 << 31 passed) made a request of 2,000 one-letter words take 520 s, grams of every length tried.
    for lengths in ([5, 3], [1, 11], [1, 1_000_000]):
        for prop in graph.metadata_props:
            if prop.key == "keel.text":
                entry["note"]["char_ngrams"] = lengths
                prop.value = json.dumps(entry)
        onnx.save(graph, str(tmp_path / "bad.onnx"))
        with pytest.raises(ArtifactError, match=r"char_ngrams: \[low, high\] \(optional; 1 <= low <= high <= 10\)"):
            Predictor.load(tmp_path / "bad.onnx")


def test_a_runtime_that_predates_char_ngrams_refuses_their_export(char_model: tuple[keel.Model, Path],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A format 4 or 5 reader knows no char_ngrams: it would feed the words alone (predictions off by 0.3 in a
    check) instead of refusing, so a char-gram file is format 6."""
    from keel.runtime import predictor

    model, _ = char_model
    model.export(output=tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["keel.export_format"] == "6"
    monkeypatch.setattr(predictor, "EXPORT_FORMAT", 5)
    with pytest.raises(ArtifactError, match=r"export format 6 .*reads formats up to 5\. Upgrade keel"):
        Predictor.load(tmp_path / "m.onnx")


def test_a_keel_that_predates_char_ngrams_refuses_their_model_folder(char_model: tuple[keel.Model, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A keel reading format 3 dropped text.char_ngrams as a setting predictions do not depend on and predicted from
    the words alone (audit s19b): a char-gram model is written as format 4, every other model as 3 (above)."""
    from keel import artifact

    _, directory = char_model
    document = json.loads((directory / "keel.json").read_text())
    assert document["format_version"] == artifact.FORMAT_VERSION == 4
    assert keel.load(directory).preprocessor.transforms[0].char_ngrams == (3, 5)
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 3)  # the reader of every keel before it
    with pytest.raises(ArtifactError, match=r"model format version 4 .*reads versions up to 3\. Upgrade keel"):
        artifact.upgrade(document)


@pytest.mark.parametrize(("grams", "said"), [((3, 5), "no word or character n-gram appears"), (None, "no word appears")])
def test_the_note_for_a_column_without_components_names_the_terms_it_counts(grams: tuple[int, int] | None,
                                                                          said: str) -> None:
    transform = TextTransform("note", TextConfig(char_ngrams=grams)).fit(pd.Series(["same text"] * 12))
    assert not len(transform.components)
    assert any(said in note for note in transform.notes), transform.notes
