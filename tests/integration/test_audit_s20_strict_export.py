"""Audit s20: a model trained with image.strict could not be exported without --data: the parity check's synthetic
rows held images of another size, which the strict column refuses in Model.predict, so `keel export MODEL` ended in
"DataFrame: image column 'photo' row 1 is a 21x19 colour image ... (image.strict is on)", rows the user never gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel

CONFIG = {"preset": "fast", "training.epochs": 1, "model.hidden": [8], "image.dim": 4, "image.strict": True}


@pytest.mark.parametrize("channels", [1, 3])
def test_a_strict_image_model_exports_on_synthetic_rows(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(0)
    shape = (8, 6) if channels == 1 else (8, 6, 3)
    frame = pd.DataFrame({"photo": [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(40)],
                          "x": rng.normal(size=40), "y": np.arange(40) % 2})
    model = keel.fit(frame, target="y", config=CONFIG, quiet=True)
    model.save(tmp_path / "model")
    report = model.export()  # audited: DataError naming a synthetic row's 11x11 image
    assert report.parity["source"] == "synthetic" and report.parity["max_difference"] <= 1e-5
