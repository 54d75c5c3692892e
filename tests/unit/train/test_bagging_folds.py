"""An explicit training.bagging that cannot give every network validation rows is refused before training."""

from __future__ import annotations

import numpy as np
import pytest

import keel
from keel.errors import ConfigError
from keel.nn.network import NetworkBag
from tests.conftest import FAST, make_classification_frame


def _grouped(groups: int):
    frame = make_classification_frame(300)
    frame["site"] = np.arange(len(frame)) % groups
    return frame


def test_fewer_split_by_groups_than_bagged_networks_is_a_config_error_naming_both() -> None:
    config = {**FAST, "training.bagging": 5, "training.split_by": "site", "training.test_split": 0.0}
    with pytest.raises(ConfigError, match=r"bagging is 5, but .* only 3 groups of training.split_by 'site': 2 of "
                                          r"the 5 folds would be empty.*Set training.bagging to 3 or fewer"):
        keel.fit(_grouped(3), target="label", config=config, quiet=True)
    # As many groups as networks: every fold holds one group, and every network validates on its own.
    model = keel.fit(_grouped(5), target="label", config=config, quiet=True, importance=False)
    assert isinstance(model.network, NetworkBag) and len(model.network.networks) == 5
    assert len(model.run["bagging"]["validation_each"]) == 5 and min(model.run["bagging"]["validation_each"]) > 0


def test_more_networks_than_rows_is_refused_too() -> None:
    frame = make_classification_frame(60).head(12)
    config = {**FAST, "training.bagging": 20, "training.test_split": 0.0, "training.validation_split": 0.5}
    with pytest.raises(ConfigError, match=r"only 12 rows: 8 of the 20 folds would be empty.*bagging to 12 or fewer"):
        keel.fit(frame, target="label", config=config, quiet=True)


def test_the_error_says_when_the_preset_set_the_bagging() -> None:
    """preset best bags 5 networks: a user who never wrote training.bagging is told where the 5 came from."""
    config = {"preset": "best", "training.split_by": "site", "training.test_split": 0.0, "training.epochs": 1}
    with pytest.raises(ConfigError, match=r"training.bagging is 5 \(what preset best sets\), but .* only 3 groups"):
        keel.fit(_grouped(3), target="label", config=config, quiet=True)
    with pytest.raises(ConfigError, match=r"training.bagging is 4, but"):  # written by the user, not the preset's
        keel.fit(_grouped(3), target="label", config={**config, "training.bagging": 4}, quiet=True)
