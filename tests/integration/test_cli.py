"""The keel command, run for real: as a subprocess for end-to-end flows, in-process for error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import PENGUINS

KEEL = Path(sys.executable).parent / "keel"
FAST_SET = ["--set", "training.epochs=30", "--set", "model.hidden=[16]", "--set", "training.lr=0.01"]


def keel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KEEL), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def penguin_model(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("cli") / "model"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--seed", "3", "--quiet", *FAST_SET)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    return output


def test_train_writes_a_model_that_info_describes(penguin_model) -> None:
    assert sorted(p.name for p in penguin_model.iterdir()) == [
        "keel.json", "plots", "predictions.safetensors", "report.html", "weights.safetensors"]
    document = json.loads((penguin_model / "keel.json").read_text())
    # The report and every figure are attached: listed with their checksums, made from these weights.
    plots = sorted(f"plots/{p.name}" for p in (penguin_model / "plots").iterdir())
    assert "plots/confusion_matrix.png" in plots
    assert set(document["files"]) == {"weights.safetensors", "predictions.safetensors", "report.html", *plots}
    assert document["config"]["training"]["seed"] == 3 and document["config"]["model"]["hidden"] == [16]
    result = keel("info", str(penguin_model))
    assert result.returncode == 0
    for text in ("multiclass", "species", "Adelie", "island (category)", "bill_length_mm (number)"):
        assert text in result.stdout
    summary = json.loads(keel("info", str(penguin_model), "--json").stdout)
    assert summary["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    # The run's notes (the README points at keel info for the preset's line): in both forms.
    preset = next(note for note in summary["notes"] if note.startswith("preset "))
    assert summary["notes"] == document["notes"] and preset[:40] in " ".join(result.stdout.replace("│", " ").split())


def test_predict_keeps_row_order_and_names_columns(penguin_model, tmp_path) -> None:
    rows = pd.read_csv(PENGUINS).sample(frac=1, random_state=1).drop(columns="species")
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    output = tmp_path / "out.csv"
    result = keel("predict", str(penguin_model), str(data), "--output", str(output), "--proba")
    assert result.returncode == 0, result.stderr
    predictions = pd.read_csv(output)
    assert list(predictions.columns) == ["species", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    assert len(predictions) == len(rows)
    import keel as api

    expected = api.load(penguin_model).predict(data)
    assert predictions["species"].tolist() == expected.tolist()
    parquet = tmp_path / "out.parquet"
    assert keel("predict", str(penguin_model), str(data), "-o", str(parquet), "--with-input").returncode == 0
    both = pd.read_parquet(parquet)
    assert list(both.columns) == list(rows.columns) + ["species"]
    assert both["bill_length_mm"].tolist()[:5] == pytest.approx(rows["bill_length_mm"].tolist()[:5], nan_ok=True)


def test_predict_with_input_keeps_the_input_s_own_target_column(penguin_model, tmp_path) -> None:
    """Rows that hold their answers, predicted --with-input: the true species stays as it was, the prediction
    goes beside it as species_predicted (before: the prediction silently replaced the true labels)."""
    rows = pd.read_csv(PENGUINS).assign(species_predicted="taken")  # the first new name is taken too
    data = tmp_path / "labelled.csv"
    rows.to_csv(data, index=False)
    output = tmp_path / "both.csv"
    result = keel("predict", str(penguin_model), str(data), "-o", str(output), "--with-input", "--proba")
    assert result.returncode == 0, result.stderr
    both = pd.read_csv(output)
    assert list(both.columns) == [*rows.columns, "species_predicted_predicted", "proba_Adelie", "proba_Chinstrap",
                                  "proba_Gentoo"]
    assert both["species"].tolist() == rows["species"].tolist()  # the truth, untouched
    assert both["species_predicted"].eq("taken").all()
    import keel as api

    assert both["species_predicted_predicted"].tolist() == api.load(penguin_model).predict(data).tolist()
    assert "has a column 'species' too (kept as it was): the prediction is in 'species_predicted_predicted'" in \
        " ".join(result.stderr.split())


def test_evaluate_prints_tables_or_json(penguin_model) -> None:
    tables = invoke("evaluate", str(penguin_model), str(PENGUINS))
    assert tables.exit_code == 0 and "per class" in tables.stdout and "confusion matrix" in tables.stdout
    metrics = json.loads(invoke("evaluate", str(penguin_model), str(PENGUINS), "--json").stdout)
    assert metrics["n_rows"] == 344 and 0.9 < metrics["accuracy"] <= 1.0 and len(metrics["per_class"]) == 3


def test_train_with_a_config_file_and_a_test_file(tmp_path) -> None:
    frame = pd.read_csv(PENGUINS)
    train, test = tmp_path / "train.csv", tmp_path / "test.parquet"
    frame.iloc[::2].to_csv(train, index=False)
    frame.iloc[1::2].to_parquet(test)
    config = tmp_path / "keel.yaml"
    config.write_text("target: species\nmodel: {hidden: [8], activation: tanh}\ntraining: {epochs: 5}\n")
    result = invoke("train", str(train), "--config", str(config), "--test", str(test), "-o", str(tmp_path / "m"), "--json")
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["metrics"]["n_rows"] == 172


def test_an_error_is_one_line_without_traceback_and_exit_2(tmp_path) -> None:
    result = keel("train", str(tmp_path / "missing.csv"), "--target", "y")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    debug = keel("train", str(tmp_path / "missing.csv"), "--target", "y", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "DataError" in debug.stderr  # same status


@pytest.mark.parametrize("args, message", [
    (["train", str(PENGUINS), "--target", "specie"], "target column 'specie' is not in the data.*Did you mean 'species'"),
    (["train", str(PENGUINS), "--target", "species", "--set", "training.optimizer=rmsprop"],
     "training.optimizer: Input should be 'adam', 'adamw' or 'sgd'; got 'rmsprop'"),
    (["train", str(PENGUINS), "--target", "species", "--set", "model.widths=[3]"], "unknown key 'model.widths'"),
    (["train", str(PENGUINS)], "no target column; pass --target"),
    (["train", str(PENGUINS), "--target", "species", "--set", "training.device=tpu"],
     "training.device: Input should be auto, cpu, cuda or cuda:N"),
    (["evaluate", str(PENGUINS.parent), str(PENGUINS)], r"is not a keel model \(no keel.json inside\)"),
])
def test_user_errors_read_well(args, message) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and pytest.approx(0) == result.stderr.strip().count("\n")
    import re

    assert re.search(message, result.stderr.replace("\n", " ")), result.stderr


def test_predict_errors(penguin_model, tmp_path) -> None:
    rows = pd.read_csv(PENGUINS).drop(columns=["island"])
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    missing = invoke("predict", str(penguin_model), str(data), "-o", str(tmp_path / "p.csv"))
    assert missing.exit_code == 2 and "lacks the input column(s) ['island']" in missing.stderr
    bad_ext = invoke("predict", str(penguin_model), str(PENGUINS), "-o", str(tmp_path / "p.xlsx"))
    assert bad_ext.exit_code == 2 and "unsupported extension '.xlsx'" in bad_ext.stderr
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "p.xlsx").exists()
    # Checked before the data is read and predicted: a missing data file is not reached.
    early = invoke("predict", str(penguin_model), str(tmp_path / "missing.csv"), "-o", str(tmp_path / "p.xlsx"))
    assert early.exit_code == 2 and "unsupported extension '.xlsx'" in early.stderr
    # --output naming the input file (by another spelling of its path too) would replace the rows: refused.
    before = data.read_bytes()
    for spelling in (data, tmp_path / "." / "rows.csv"):
        same = invoke("predict", str(penguin_model), str(data), "-o", str(spelling), "--with-input")
        assert same.exit_code == 2 and f"is the input file {data}" in " ".join(same.stderr.split())
    assert data.read_bytes() == before


def test_unseen_categories_are_reported_as_a_note(penguin_model, tmp_path) -> None:
    rows = pd.read_csv(PENGUINS).head(3).assign(island="Atlantis")
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    result = invoke("predict", str(penguin_model), str(data), "-o", str(tmp_path / "p.csv"))
    assert result.exit_code == 0
    assert ("note: column 'island': 3 value(s) not seen in training (or rare there), e.g. 'Atlantis', were mapped"
            in result.stderr.replace("\n", " "))


def test_demo_runs_end_to_end(tmp_path) -> None:
    # Run outside the repository (as after pip install): the next steps name a table that is there.
    result = keel("demo", "--output", str(tmp_path / "demo-model"), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for text in ("accuracy", "saved the model", "proba_Adelie", "keel predict"):
        assert text in result.stdout
    evaluate = next(line.split() for line in result.stdout.splitlines() if line.strip().startswith("keel evaluate"))
    assert evaluate[-1].endswith("penguins.csv") and Path(evaluate[-1]).is_file()  # not examples/, absent here
    assert (tmp_path / "demo-model" / "keel.json").is_file()
    # make demo ends by saying where the report is, and it is there
    assert result.stdout.strip().splitlines()[-1].startswith(f"report: {tmp_path / 'demo-model' / 'report.html'}")
    assert (tmp_path / "demo-model" / "report.html").is_file()


def test_preset_option_sets_unset_keys_and_is_reported(tmp_path) -> None:
    output = tmp_path / "fast"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--preset", "fast",
                  "--set", "training.epochs=5", "--json")
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any(note.startswith("preset fast: zscore scaling, MLP 128-64, adamw lr 0.001") for note in notes)
    config = json.loads((output / "keel.json").read_text())["config"]
    assert config["preset"] == "fast" and config["model"]["ensemble"] == 1 and config["training"]["epochs"] == 5
    bad = invoke("train", str(PENGUINS), "--target", "species", "--preset", "quick", "--output", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "unknown preset 'quick'; use one of fast, balanced, best" in bad.output


def test_commands_import_the_pipeline_with_the_collector_paused_then_frozen_and_back_on() -> None:
    # A fresh interpreter: in this one keel.model is already imported.
    script = ("import gc, sys; import keel.cli as cli; before = gc.get_freeze_count(); cli._import_pipeline(); "
              "print(gc.isenabled(), 'torch' in sys.modules, gc.get_freeze_count() - before)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    enabled, loaded, frozen = result.stdout.split()
    assert enabled == "True" and loaded == "True"
    assert int(frozen) > 100_000  # torch and pandas' objects are out of the collector's reach


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory) -> Path:
    """One-hot and embedded categories, periodic number embedding, resnet, a 3-member ensemble, 2 bagged networks."""
    import numpy as np

    import keel as api

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "color": rng.choice(["red", "green", "blue"], 120),
                          "city": rng.choice(list("abcdef"), 120)})
    frame["y"] = np.where(frame["x"] + (frame["color"] == "red") > 0.5, "yes", "no")
    # color: 3 values -> one-hot under a limit of 3; city: 6 values -> embedded.
    config = {"preset": "fast", "model.hidden": [8], "training.epochs": 2, "preprocessing.onehot_max_categories": 3,
              "preprocessing.categorical_encoding": "auto", "model.embedding_dim": 3, "model.architecture": "resnet",
              "model.numeric_embedding": "periodic", "model.numeric_embedding_size": 4,
              "model.numeric_embedding_dim": 5, "model.ensemble": 3, "training.bagging": 2, "model.init": "kaiming"}
    output = tmp_path_factory.mktemp("cli") / "mixed"
    api.fit(frame, target="y", config=config, quiet=True).save(output)
    return output


def test_info_names_the_network_that_was_trained(mixed_model) -> None:
    result = invoke("info", str(mixed_model))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())
    for expected in ("network resnet, hidden 8, relu, dropout 0.1, norm none, init kaiming",
                     "number embedding periodic, 4 frequencies, dim 5 per column",
                     "categories color one-hot (5 wide), city embedded (dim 3)",
                     "ensemble 3 members", "bagging 2 networks averaged"):
        assert expected in text, text
    network = json.loads(invoke("info", str(mixed_model), "--json").stdout)["network"]
    assert network["categories"] == [
        {"column": "color", "encoding": "onehot", "cardinality": 5, "width": 5},
        {"column": "city", "encoding": "embedding", "cardinality": 8, "width": 3}]
    assert (network["architecture"], network["ensemble"], network["bagging"]) == ("resnet", 3, 2)
    assert (network["numeric_embedding"], network["numeric_embedding_size"], network["numeric_embedding_dim"]) == (
        "periodic", 4, 5)
    assert network["onehot"] == [True, False]  # the raw shape's keys stay for scripts that read them
    import keel as api

    weights = list(api.load(mixed_model).network.parameters())
    assert network["parameters"] == sum(w.numel() for w in weights)
    # the two networks' fixed one-hot tables (5 x 5 each) are stored but not trained
    assert network["parameters"] - network["trainable_parameters"] == 2 * 5 * 5
    assert f"{network['parameters']:,} ({network['trainable_parameters']:,} trained, 50 fixed: one-hot" in text
    assert network["encoders"] == []


def test_info_of_a_single_network_without_embeddings(tmp_path) -> None:
    frame = pd.read_csv(PENGUINS)
    import keel as api

    api.fit(frame, target="species", quiet=True, config={"preset": "fast", "model.hidden": [4], "training.epochs": 1,
                                                          "model.embedding_dim": 2}).save(tmp_path / "m")
    text = " ".join(invoke("info", str(tmp_path / "m")).stdout.replace("│", " ").split())
    for expected in ("network mlp, hidden 4,", "number embedding none", "categories island embedded (dim 2)",
                     "ensemble 1 (a single network)", "bagging 1 network"):
        assert expected in text, text
    assert "one-hot" not in text and "trained," not in text
    network = json.loads(invoke("info", str(tmp_path / "m"), "--json").stdout)["network"]
    assert (network["ensemble"], network["bagging"], network["numeric_embedding_size"]) == (1, 1, None)
    assert network["parameters"] == network["trainable_parameters"]


@pytest.mark.parametrize("preset", ["fast", "balanced", "best"])
def test_config_prints_every_key_as_yaml_that_loads_back(preset, tmp_path) -> None:
    import yaml

    from keel.config import Config, load_config

    result = invoke("config", "--preset", preset)
    assert result.exit_code == 0, result.output
    expected = load_config({"preset": preset})
    printed = yaml.safe_load(result.stdout)
    assert printed == expected.model_dump(mode="json")  # every key, resolved
    assert list(printed) == list(Config.model_fields)
    assert list(printed["training"]) == list(type(expected.training).model_fields)  # field order
    path = tmp_path / "resolved.yaml"
    path.write_text(result.stdout)
    assert load_config(path) == expected
    assert load_config(path).model_dump() == expected.model_dump()


def test_config_applies_the_config_file_and_set(tmp_path) -> None:
    import yaml

    path = tmp_path / "keel.yaml"
    path.write_text("target: species\nmodel: {hidden: [8], activation: tanh}\n")
    result = invoke("config", "--config", str(path), "--set", "training.lr=0.05", "--set", "model.hidden=[32, 16]",
                    "--preset", "best")
    assert result.exit_code == 0, result.output
    assert "  hidden: [32, 16]\n" in result.stdout  # lists of values on one line, as people write them
    printed = yaml.safe_load(result.stdout)
    assert printed["target"] == "species" and printed["model"]["activation"] == "tanh"
    assert printed["training"]["lr"] == 0.05 and printed["model"]["hidden"] == [32, 16]
    assert printed["training"]["bagging"] == 5 and printed["preset"] == "best"  # the preset fills the rest
    as_json = json.loads(invoke("config", "--config", str(path), "--set", "training.lr=0.05", "--set",
                                "model.hidden=[32, 16]", "--preset", "best", "--json").stdout)
    assert as_json == printed


@pytest.mark.parametrize("args, message", [
    (["--set", "training.leraning_rate=0.1"], "unknown key 'training.leraning_rate'"),
    (["--set", "training.lr=-1"], "training.lr: Input should be greater than 0; got -1"),
    (["--preset", "quick"], "unknown preset 'quick'; use one of fast, balanced, best"),
    (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
])
def test_config_errors_are_one_line_and_exit_2(args, message) -> None:
    result = invoke("config", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr, result.stderr


def test_info_of_a_bag_lists_every_network_s_epochs(tmp_path) -> None:
    """keel info on a bagged model: each network's epochs and best epoch, not the first network's alone."""
    import keel as api

    frame = pd.read_csv(PENGUINS)
    model = api.fit(frame, target="species", config={"preset": "fast", "model.hidden": [8], "training.epochs": 6,
                                                     "training.bagging": 3}, quiet=True, importance=False)
    model.save(tmp_path / "bag")
    summary = api.load(tmp_path / "bag").summary()
    each = [len(bag["epochs"]) for bag in model.history["bags"]]
    assert [bag["epochs_trained"] for bag in summary["bagged"]] == each
    assert [bag["best_epoch"] for bag in summary["bagged"]] == [bag["best_epoch"] for bag in model.history["bags"]]
    shown = invoke("info", str(tmp_path / "bag"))
    assert shown.exit_code == 0
    assert f"{', '.join(map(str, each))} (3 bagged networks)" in " ".join(shown.stdout.split())
    single = api.fit(frame, target="species", config={"preset": "fast", "model.hidden": [8], "training.epochs": 2},
                     quiet=True, importance=False)
    assert "bagged" not in single.summary() and single.summary()["epochs_trained"] == 2


@pytest.mark.parametrize(("args", "said"), [
    (["serve", "model", "--port", "abc"], "error: keel serve: Invalid value for '--port'"),
    (["train", "data.csv", "--bogus"], "error: keel train: No such option: --bogus"),
    (["train"], "error: keel train: Missing argument 'data'"),
    (["nonsense"], "error: keel: No such command 'nonsense'"),
])
def test_a_command_line_mistake_is_one_line_with_status_2(args: list[str], said: str) -> None:
    result = keel(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(said)
    assert result.stderr.count("\n") == 1, result.stderr  # not typer's framed box
    assert f"see '{said.split(': ')[1]} --help'" in result.stderr


def test_help_and_the_bare_command_still_print_the_usage() -> None:
    helped = keel("--help")
    assert helped.returncode == 0 and "Usage: keel" in helped.stdout
    alone = keel()
    assert alone.returncode == 2 and "Usage: keel" in alone.stdout + alone.stderr
