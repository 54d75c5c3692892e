"""text.encoder bag: a bag of learned term vectors trained with the network, its export and its corruption checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import keel
from keel.errors import ArtifactError
from keel.nn.bag import BagEncoder, BagInput
from keel.nn.network import TabularNetwork
from keel.runtime import Predictor
from tests.unit.data.test_text import reviews

BAG = {"preset": "fast", "training.epochs": 8, "model.hidden": [16], "text.encoder": "bag", "text.dim": 32}


@pytest.fixture(scope="module")
def bag_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.model.Model, Path]:
    model = keel.fit(reviews(300), target="label", quiet=True, importance=False,
                     config={**BAG, "text.max_tokens": 12})
    directory = tmp_path_factory.mktemp("bag") / "m"
    model.save(directory)
    return model, directory


def test_a_bag_column_learns_from_its_words(bag_model: tuple[keel.model.Model, Path]) -> None:
    model, _ = bag_model
    assert model.metrics["accuracy"] >= 0.9  # only the words tell the label (reviews' noise column does not)
    network = model.network
    assert isinstance(network, TabularNetwork) and isinstance(network.texts[0], BagEncoder)
    transform = model.preprocessor.token_texts[0]
    assert transform.width == 13 and network.spec.texts[0].vocabulary == len(transform.vocabulary) > 0
    assert any("up to 12 terms a text" in note for note in model.notes)
    assert any(re.fullmatch(r"text column .review.: \d+ of the 300 texts read in training cut at 12 terms\.", note)
               for note in model.notes), model.notes


def test_the_block_is_the_first_terms_in_text_order_and_an_empty_flag(bag_model: tuple[keel.model.Model, Path]) -> None:
    transform = bag_model[0].preprocessor.token_texts[0]
    known = transform.vocabulary[0]
    import pandas as pd

    values, _ = transform.transform(pd.Series([known, "", None, "qqq zzz", " ".join([known] * 40)]))
    index = transform.index
    assert values[0, 0] == index[known] and (values[0, 1:-1] == -1).all() and values[0, -1] == 0
    assert (values[1, :-1] == -1).all() and values[1, -1] == 1 and values[2, -1] == 1  # empty and missing
    assert (values[3, :-1] == -1).all() and values[3, -1] == 0  # words it never kept: no terms, not empty
    assert (values[4, :-1] >= 0).all()  # cut at 12 terms


def test_the_mean_of_term_vectors_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = BagEncoder(BagInput(vocabulary=5, max_terms=4, dim=3))
    block = torch.tensor([[1.0, 2.0, -1.0, -1.0, 0.0], [2.0, 1.0, 2.0, 1.0, 0.0], [-1.0, -1.0, -1.0, -1.0, 1.0]])
    out = encoder(block)
    np.testing.assert_allclose(out[0, :3].detach(), out[1, :3].detach(), atol=1e-6)  # same mean, any padding
    assert out[2, -1] == 1 and torch.isfinite(out).all()
    assert encoder.embedding.weight[5].abs().sum() == 0  # the padding row


def test_a_bag_column_exports_on_term_positions_and_the_runtime_agrees(
        bag_model: tuple[keel.model.Model, Path]) -> None:
    model, directory = bag_model
    frame = reviews(80, seed=9)
    frame.loc[1, "review"], frame.loc[2, "review"], frame.loc[3, "review"] = None, "  ", "qqq zzz never seen"
    report = model.export(data=frame)
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5
    np.testing.assert_allclose(Predictor.load(directory).predict_proba(frame), model.predict_proba(frame), atol=1e-5)
    props = {p.key: p.value for p in onnx.load(str(directory / "model.onnx")).metadata_props}
    assert props["keel.export_format"] == "4" and "keel.tokens" not in props
    assert json.loads(props["keel.text"])["review"]["vocabulary"] == model.preprocessor.token_texts[0].vocabulary


def test_a_vocabulary_that_does_not_fit_the_network_is_a_corrupt_model(
        bag_model: tuple[keel.model.Model, Path], tmp_path: Path) -> None:
    _, directory = bag_model
    manifest = json.loads((directory / "keel.json").read_text())
    for item in manifest["preprocessing"]:
        if item["name"] == "review":
            item["vocabulary"] = item["vocabulary"][:-1]
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "keel.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not describe its weights .* terms"):
        keel.load(broken)


def test_a_saved_bag_model_loads_and_predicts_as_before(bag_model: tuple[keel.model.Model, Path]) -> None:
    # Its state says finetune "none", which the loader refused (a user's trial): every bag model was unreadable.
    model, directory = bag_model
    loaded = keel.load(directory)
    frame = reviews(40, seed=5)
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    assert loaded.preprocessor.token_texts[0].vocabulary == model.preprocessor.token_texts[0].vocabulary
