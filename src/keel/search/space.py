"""The search space of ``keel tune``: keel's default ranges, or ``tune.space`` from the config.

Each entry is a config key with a range (``low``/``high``, optionally ``log`` or ``step``) or a list
of ``choices``; ``model.width`` and ``model.depth`` make ``model.hidden`` (``depth`` layers of
``width`` units), since a search draws numbers, not lists.
"""

from __future__ import annotations

from typing import Any

from keel.config import Config, SearchRange, load_config, searchable_kinds
from keel.errors import ConfigError

#: keel's default search space (the README's table): what matters most for the MLPs and ensembles keel trains.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "training.lr": {"low": 3e-4, "high": 1e-2, "log": True},
    "training.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "model.width": {"choices": [64, 128, 256, 512]},
    "model.depth": {"choices": [1, 2, 3]},
    "model.dropout": {"low": 0.0, "high": 0.4},
    "model.ensemble": {"choices": [1, 4, 8]},
    "model.numeric_embedding": {"choices": ["none", "periodic", "piecewise_linear"]},
    "training.batch_size": {"choices": [64, 128, 256, 512]},
    "training.label_smoothing": {"low": 0.0, "high": 0.2},
}
# Keys that only mean something for classification.
_CLASSIFICATION_ONLY = {"training.label_smoothing"}


def search_space(settings: Config, task: str) -> dict[str, SearchRange]:
    """The space a study searches: ``tune.space`` when the config has one, else :data:`DEFAULT_SPACE`
    (without the classification-only keys for a regression target).

    Raises:
        ConfigError: A range's ends or a choice are not valid values of their key.
    """
    if settings.tune.space is not None:
        space = {key: _typed_choices(key, entry) for key, entry in settings.tune.space.items()}
        useless = sorted(set(space) & _CLASSIFICATION_ONLY) if task == "regression" else []
        if useless:
            raise ConfigError(f"tune.space searches {useless}, which a regression target does not use; remove it.")
    else:
        space = {key: SearchRange(**value) for key, value in DEFAULT_SPACE.items()
                 if task != "regression" or key not in _CLASSIFICATION_ONLY}
    for key, entry in space.items():  # every end and choice must make a valid config: fail now, not at trial 7
        values = entry.choices if entry.choices is not None else [entry.low, entry.high]
        for value in values:
            try:
                load_config(settings, overrides=overrides({key: _typed(key, value)}, settings))
            except ConfigError as error:
                raise ConfigError(f"tune.space {key}: the value {value!r} is not a valid setting ({error})") from None
    return space


def _is_integer(key: str) -> bool:
    """Whether a config key takes whole numbers (drawn with suggest_int)."""
    return searchable_kinds().get(key) == "int"


def _typed_choices(key: str, entry: SearchRange) -> SearchRange:
    """Choices of a number key as numbers: YAML reads ``1e-3`` as text, which Optuna would draw as a word."""
    if entry.choices is None or searchable_kinds().get(key) not in ("int", "float"):
        return entry
    typed = []
    for value in entry.choices:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass  # not a number: load_config names it when the space is checked
        typed.append(_typed(key, value))
    return entry.model_copy(update={"choices": typed})


def _typed(key: str, value: Any) -> Any:
    return int(value) if _is_integer(key) and isinstance(value, float) and value.is_integer() else value


def suggest(trial: Any, space: dict[str, SearchRange]) -> dict[str, Any]:
    """One trial's values (optuna's ``trial.suggest_*``), by key as the space names them."""
    values: dict[str, Any] = {}
    for key, entry in space.items():
        if entry.choices is not None:
            values[key] = trial.suggest_categorical(key, entry.choices)
        elif _is_integer(key):
            assert entry.low is not None and entry.high is not None
            values[key] = trial.suggest_int(key, int(entry.low), int(entry.high), log=entry.log,
                                            step=int(entry.step or 1))
        else:
            assert entry.low is not None and entry.high is not None
            values[key] = trial.suggest_float(key, entry.low, entry.high, log=entry.log, step=entry.step)
    return values


def overrides(values: dict[str, Any], settings: Config) -> dict[str, Any]:
    """Config overrides (dotted keys) from a trial's values: ``model.width`` and ``model.depth`` become
    ``model.hidden`` (the one not searched comes from the config's hidden layers)."""
    out = {key: value for key, value in values.items() if key not in ("model.width", "model.depth")}
    if "model.width" in values or "model.depth" in values:
        hidden = settings.model.hidden or [128]
        width = int(values.get("model.width", hidden[0]))
        depth = int(values.get("model.depth", len(hidden)))
        out["model.hidden"] = [width] * depth
    return out
