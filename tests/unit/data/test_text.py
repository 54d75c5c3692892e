"""Text columns: schema, TF-IDF and pretrained transforms, the safe model loader, the cache, and whole runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from sklearn.feature_extraction.text import TfidfVectorizer

import keel
from keel.config import TextConfig, load_config
from keel.data.pretrained import DEFAULT_MODEL, ModelFiles
from keel.data.schema import infer_schema
from keel.data.text import TextTransform, _cached, terms
from keel.errors import ArtifactError, ConfigError, DataError
from keel.nn.sentence import BertEncoder, SentenceEncoder
from keel.sklearn import KeelClassifier

FIXTURES = Path(__file__).parents[2] / "fixtures"
GOOD = ["great product works well", "love it excellent quality", "fantastic value highly recommend"]
BAD = ["terrible broke after a day", "awful quality do not buy", "waste of money very disappointed"]


def reviews(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Reviews whose label only the text tells (a number column of noise beside it)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(GOOD if y else BAD, 2)) + f" order {i} arrived on tuesday" for i, y in enumerate(label)]
    return pd.DataFrame({"review": texts, "noise": rng.normal(size=n), "label": label})


def test_free_text_is_inferred_as_text_and_can_be_declared() -> None:
    frame = reviews(120)
    schema = infer_schema(frame, load_config({"target": "label"}))
    assert {f.name: f.type for f in schema.features} == {"review": "text", "noise": "number"}
    declared = infer_schema(frame.assign(city=["oslo", "rome"] * 60), load_config(
        {"target": "label", "input_features": [{"name": "city", "type": "text"}]}))
    assert [(f.name, f.type) for f in declared.features] == [("city", "text")]


def test_tfidf_matches_scikit_learns_sublinear_tfidf_on_word_pairs() -> None:
    texts = pd.Series(["The cat sat on the mat.", "the cat ATE the rat!", "a dog sat on a log", None,
                       "the dog and the cat", "Cat, cat, cat & mat"] * 3)
    transform = TextTransform("t", TextConfig(max_features=10_000)).fit(texts)
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit(texts.fillna(""))
    assert sorted(transform.vocabulary) == sorted(reference.vocabulary_)
    ours = transform._tfidf(texts.fillna("").tolist()).toarray()
    order = [reference.vocabulary_[term] for term in transform.vocabulary]
    np.testing.assert_allclose(ours, reference.transform(texts.fillna("")).toarray()[:, order], atol=1e-6)


def test_tfidf_keeps_the_most_frequent_terms_and_scales_components_on_training_rows() -> None:
    frame = reviews(200)
    transform = TextTransform("review", TextConfig(dim=8, max_features=12)).fit(frame["review"])
    assert len(transform.vocabulary) == 12 and terms("An order, arrived") == ["an", "order", "arrived", "an order",
                                                                              "order arrived"]
    values, unseen = transform.transform(frame["review"])
    # 8 components asked for; those the templated texts do not span (rounding-noise spread) are dropped
    assert values.shape == (200, transform.width) and 3 <= transform.width <= 9 and unseen == 0
    np.testing.assert_allclose(values[:, :-1].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(values[:, :-1].std(axis=0), 1, atol=1e-3)
    empty = transform.transform(pd.Series(["", None, "   ", "great product"]))[0]
    assert empty[:, -1].tolist() == [1, 1, 1, 0]


def test_a_text_column_empty_in_every_training_row_is_an_error_naming_it() -> None:
    with pytest.raises(DataError, match="text column 'note' is empty in every training row"):
        TextTransform("note").fit(pd.Series(["", None, "  "]))


def test_pretrained_embeddings_match_sentence_transformers() -> None:
    reference = json.loads((FIXTURES / "minilm_reference.json").read_text())
    encoder = SentenceEncoder(ModelFiles(DEFAULT_MODEL))
    vectors, truncated = encoder.encode(reference["texts"])
    np.testing.assert_allclose(vectors, np.array(reference["embeddings"]), atol=1e-5)
    assert truncated.tolist() == [False] * 4 + [True, False] and encoder.max_tokens == 256  # the 400-word text


def test_embeddings_are_cached_per_text_and_a_damaged_shard_is_recomputed(tiny_model: Path, tmp_path: Path) -> None:
    encoder = SentenceEncoder(ModelFiles(str(tiny_model)))
    first, hit = _cached(encoder, ["one text", "another"], str(tmp_path))
    shards = list(tmp_path.glob("*/*.safetensors"))
    assert not hit and first.hits == 0 and len(shards) == 1
    again, hit = _cached(encoder, ["another", "one text"], str(tmp_path))  # any order, any company
    assert hit and again.hits == 2 and np.array_equal(again.vectors, first.vectors[::-1])
    other, hit = _cached(encoder, ["one text", "changed"], str(tmp_path))
    assert not hit and other.hits == 1 and np.array_equal(other.vectors[0], first.vectors[0])
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 2  # a shard of the one new text
    read_only, _ = _cached(encoder, ["never written"], str(tmp_path), write=False)
    assert read_only.hits == 0 and len(list(tmp_path.glob("*/*.safetensors"))) == 2
    for shard in tmp_path.glob("*/*.safetensors"):
        shard.write_bytes(b"not safetensors")
    damaged, hit = _cached(encoder, ["one text", "another"], str(tmp_path))
    assert not hit and damaged.hits == 0 and np.allclose(damaged.vectors, first.vectors)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"), "only pytorch_model.bin, a pickle"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}})), "code of its own"),
    (lambda d: (d / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Transformer"},
                                                           {"type": "evil.Module"}])), "evil.Module"),
    (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
])
def test_a_model_directory_keel_will_not_run_is_refused_with_the_reason(
        tiny_model: Path, tmp_path: Path, change, message: str) -> None:
    directory = tmp_path / "model"
    shutil.copytree(tiny_model, directory)
    change(directory)
    with pytest.raises(ConfigError, match=message):
        SentenceEncoder(ModelFiles(str(directory))).encode(["text"])


def test_a_missing_model_path_says_keel_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never downloads"):
        SentenceEncoder(ModelFiles(str(tmp_path / "nowhere")))


def test_tfidf_run_learns_from_the_text_and_round_trips_through_save(tmp_path: Path) -> None:
    frame = reviews(400)
    model = keel.fit(frame, target="label", config={"preset": "fast", "training.epochs": 30, "text.dim": 8},
                     quiet=True)
    assert model.metrics["accuracy"] >= 0.95  # only the words tell the classes apart
    model.save(tmp_path / "m")
    loaded = keel.load(tmp_path / "m")
    new = reviews(50, seed=1)
    np.testing.assert_array_equal(loaded.predict_proba(new), model.predict_proba(new))
    assert loaded.export(output=tmp_path / "m.onnx").parity["ok"]  # a tfidf text column exports


def test_pretrained_run_notes_the_embedding_and_refuses_a_swapped_model(tiny_model: Path, tmp_path: Path) -> None:
    directory = tmp_path / "encoder"
    shutil.copytree(tiny_model, directory)
    frame = reviews(200)
    config = {"preset": "fast", "training.epochs": 2, "text.encoder": "pretrained", "text.model_path": str(directory),
              "text.cache_dir": str(tmp_path / "cache"), "text.dim": 4}
    model = keel.fit(frame, target="label", config=config, quiet=True)
    assert any("distinct training texts embedded by encoder" in note for note in model.notes)
    model.save(tmp_path / "m")
    again = keel.fit(frame, target="label", config=config, quiet=True)
    assert any("(read from the cache)" in note for note in again.notes)
    other_split = keel.fit(frame, target="label", config={**config, "training.seed": 7}, quiet=True)
    assert any("(read from the cache)" in note for note in other_split.notes)  # every row's text was cached
    added = keel.fit(pd.concat([frame, reviews(20, seed=9)], ignore_index=True), target="label", config=config,
                     quiet=True)
    assert any(" read from the cache)" in note and "(read" not in note for note in added.notes)  # some new
    np.testing.assert_array_equal(keel.load(tmp_path / "m").predict_proba(frame), model.predict_proba(frame))
    torch.manual_seed(1)
    shape = SentenceEncoder(ModelFiles(str(directory))).shape
    save_file(BertEncoder(shape).state_dict(), str(directory / "model.safetensors"))
    with pytest.raises(DataError, match="now holds another model"):
        keel.load(tmp_path / "m").predict(frame)


def test_text_projections_that_do_not_match_the_description_are_a_corrupt_model(tmp_path: Path) -> None:
    model = keel.fit(reviews(120), target="label", config={"preset": "fast", "training.epochs": 1, "text.dim": 4},
                     quiet=True)
    model.preprocessor.transforms[0].center = np.zeros(3, dtype=np.float32)  # 4 components, 3 centers
    model.save(tmp_path / "m")
    with pytest.raises(ArtifactError, match="disagree on a text or image column"):
        keel.load(tmp_path / "m")


def test_the_estimators_take_text_parameters_with_a_prefix() -> None:
    frame = reviews(150)
    classifier = KeelClassifier(preset="fast", epochs=3, text_dim=5, text_max_features=50)
    assert classifier.config()["text.dim"] == 5
    classifier.fit(frame[["review", "noise"]], frame["label"])
    assert classifier.model_.preprocessor.transforms[0].width == 7  # 5 components, a linear score, the empty flag
    assert len(classifier.model_.preprocessor.transforms[0].vocabulary) == 50
    plain = KeelClassifier(preset="fast", epochs=3, text_dim=5, text_max_features=50, text_linear=False)
    assert plain.fit(frame[["review", "noise"]], frame["label"]).model_.preprocessor.transforms[0].width == 6


def test_text_components_enter_the_network_without_number_embeddings(tmp_path: Path) -> None:
    frame = reviews(160).assign(age=np.arange(160) % 50)
    config = {"preset": "balanced", "training.epochs": 2, "model.hidden": [16], "model.ensemble": 2,
              "text.dim": 4, "training.early_stopping": 0, "training.bagging": 1}  # one network to look into
    model = keel.fit(frame, target="label", config=config, quiet=True)
    text = model.preprocessor.transforms[0]
    assert [t.name for t in model.preprocessor.numeric] == ["noise", "age", "review"]  # text columns last
    assert model.network.spec.plain_width == text.width == model.preprocessor.text_width
    assert model.network.numbers.left.shape[0] == 2  # bins for noise and age only
    first = model.network.mlp[0]
    assert first.in_features == 2 * model.network.spec.numeric_embedding_dim + text.width
    model.save(tmp_path / "m")
    document = json.loads((tmp_path / "m" / "keel.json").read_text())
    document["network"]["plain_width"] = 4  # of 5: the 4 components and the empty flag
    (tmp_path / "m" / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="reads 4 text component"):
        keel.load(tmp_path / "m")


def test_a_streamed_run_caches_every_text_it_embeds(tiny_model: Path, tmp_path: Path) -> None:
    frame = reviews(6000)
    frame["review"] = [f"{text} number {i}" for i, text in enumerate(frame["review"])]  # every text distinct
    frame.to_csv(tmp_path / "rows.csv", index=False)
    config = {"preset": "fast", "training.epochs": 1, "text.encoder": "pretrained", "text.model_path": str(tiny_model),
              "text.cache_dir": str(tmp_path / "cache"), "text.dim": 4, "data.memory_budget": "1MiB"}
    model = keel.fit(tmp_path / "rows.csv", target="label", config=config, quiet=True)
    assert any("streamed" in note or "chunk" in note for note in model.notes)
    from safetensors.numpy import load_file

    cached = sum(len(load_file(str(shard))["digests"]) for shard in (tmp_path / "cache").glob("*/*.safetensors"))
    assert cached == len(frame)  # audited: 3,248 of 40,000 (only the sample and the first chunk were written)
    before = len(list((tmp_path / "cache").glob("*/*.safetensors")))
    model.predict(reviews(30, seed=4))
    assert len(list((tmp_path / "cache").glob("*/*.safetensors"))) == before  # predicting writes nothing


@pytest.mark.parametrize(("key", "value", "said"), [("center", np.nan, "center holds a value that is not a finite"),
                                                     ("components", np.inf, "components holds a value that is not"),
                                                     ("scale", 0.0, "a component's scale is 0, not positive"),
                                                     ("scale", -2.0, "a component's scale is -2, not positive")])
def test_a_loaded_text_columns_arrays_must_be_finite_and_its_scales_positive(key: str, value: float,
                                                                               said: str) -> None:
    """Arrays that no fit makes (a weights file edited by hand: its checksum relisted) are refused at load; a NaN
    centre made every prediction NaN, a zero scale divided by zero."""
    frame = reviews(120)
    transform = TextTransform("review").fit(frame["review"])
    assert transform.problem() is None
    loaded = TextTransform.from_state(transform.state(), {name: array.copy() for name, array in transform.arrays().items()})
    assert loaded.problem() is None
    getattr(loaded, key).flat[0] = value
    assert said in (loaded.problem() or "")
