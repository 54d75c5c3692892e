"""matplotlib is loaded only when a figure is drawn: not by ``import keel``, not by predicting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, make_classification_frame


def _modules_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which heavy modules it ended up importing."""
    probe = code + "\nimport json, sys\nprint(json.dumps({name: name in sys.modules for name in ('matplotlib', 'PIL')}))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_keel_and_predicting_do_not_import_matplotlib(trained_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, directory = trained_classifier
    data = tmp_path / "rows.csv"
    make_classification_frame(20, seed=3).drop(columns=["label"]).to_csv(data, index=False)
    code = (f"import keel\nmodel = keel.load({str(directory)!r})\nassert len(model.predict({str(data)!r})) == 20\n"
            f"model.predict_proba({str(data)!r})")
    assert _modules_after(code) == {"matplotlib": False, "PIL": False}


def test_the_report_package_imports_matplotlib_only_to_draw() -> None:
    assert _modules_after("import keel.report, keel.report.html, keel.report.figures, keel.report.sections") == {
        "matplotlib": False, "PIL": False}
    drawn = _modules_after("from keel.report import figures\nfigures.importance([{'name': 'a', 'mean': 1, 'std': 0}], 'x')")
    assert drawn["matplotlib"] is True  # the probe itself can see matplotlib when it is there
