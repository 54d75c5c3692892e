"""A JavaScript client: onnxruntime-node runs the exported model.onnx and predicts what keel predicts.

onnxruntime-node is pinned in tests/node/package-lock.json and installed with ``npm ci
--ignore-scripts`` (its install script would fetch GPU libraries from a host CI cannot reach; the
CPU binaries ship in the package) into a cache folder, once per lock file: ``$KEEL_NODE_CACHE``,
else ``~/.cache/keel/node``. CI can keep that folder between runs. Without node or npm, or when
the install fails (offline, no cache), the test is skipped and says why; it never passes unrun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.data.io import read_table
from keel.export.onnx import to_onnx
from tests.conftest import FAST, PENGUINS

NODE_PACKAGE = Path(__file__).resolve().parents[1] / "node"
CACHE = Path(os.environ.get("KEEL_NODE_CACHE") or Path.home() / ".cache" / "keel" / "node")

# What a client writes: rows as JSON, NaN for a missing number, "" for a missing category, and
# the category values in keel's spelling (a bool is "True" / "False", an integer "3").
CLIENT = r"""
const fs = require("fs");
const ort = require("onnxruntime-node");

function spelled(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

async function main() {
  const [modelPath, rowsPath] = process.argv.slice(2);
  const rows = JSON.parse(fs.readFileSync(rowsPath, "utf8"));
  const session = await ort.InferenceSession.create(modelPath);
  const feeds = {};
  for (const input of session.inputMetadata) {
    const values = rows.map((row) => row[input.name]);
    feeds[input.name] = input.type === "float64"
      ? new ort.Tensor("float64", Float64Array.from(values, (v) => (v === null || v === undefined ? NaN : v)),
                       [rows.length])
      : new ort.Tensor("string", values.map(spelled), [rows.length]);
  }
  const [labelName, probabilitiesName] = session.outputNames;
  const result = await session.run(feeds);
  const probabilities = result[probabilitiesName];
  const width = probabilities.dims[1];
  console.log(JSON.stringify({
    labels: Array.from(result[labelName].data, (v) => (typeof v === "bigint" ? Number(v) : v)),
    probabilities: rows.map((_, i) => Array.from(probabilities.data.slice(i * width, (i + 1) * width))),
  }));
}

main().catch((error) => { console.error(error); process.exit(1); });
"""


def onnxruntime_node() -> Path:
    """The node_modules folder holding the pinned onnxruntime-node, installed on first use."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; install Node.js (with npm) to run the JavaScript client test.")
    files = [NODE_PACKAGE / "package.json", NODE_PACKAGE / "package-lock.json"]
    key = hashlib.sha256(b"".join(file.read_bytes() for file in files)).hexdigest()[:16]
    target = CACHE / key
    if (target / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        return target / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=CACHE))  # renamed into place when complete
    for file in files:
        shutil.copy(file, staging)
    command = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline",
               "--cache", str(CACHE / "npm")]
    try:
        result = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip("npm ci of onnxruntime-node took over 10 minutes; check the network or the npm cache.")
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = " ".join((result.stderr or result.stdout).split())[-300:]
        pytest.skip(f"npm ci of onnxruntime-node failed (offline, and not in {CACHE}?): {tail}")
    try:
        staging.rename(target)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


def test_onnxruntime_node_predicts_what_keel_predicts(tmp_path: Path) -> None:
    modules = onnxruntime_node()
    model = keel.fit(PENGUINS, target="species", config=FAST, quiet=True)
    model.save(tmp_path / "penguins")
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    frame = read_table(PENGUINS)  # every row, those with missing values included
    (tmp_path / "rows.json").write_text(frame.drop(columns=["species"]).to_json(orient="records"))
    (tmp_path / "predict.cjs").write_text(CLIENT)

    result = subprocess.run(
        ["node", str(tmp_path / "predict.cjs"), str(tmp_path / "penguins" / "model.onnx"), str(tmp_path / "rows.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": str(modules)})
    assert result.returncode == 0, result.stderr
    node = json.loads(result.stdout)

    assert node["labels"] == model.predict(frame).tolist()
    np.testing.assert_allclose(np.array(node["probabilities"]), model.predict_proba(frame), atol=1e-5)
    assert frame.isna().any().any()  # the rows did test missing values


def test_the_readme_feeds_javascript_as_this_test_does() -> None:
    # The README's snippet must spell values and build tensors exactly as the tested script does.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    spelled = CLIENT[CLIENT.index("function spelled"):CLIENT.index("async function main")].strip()
    loop = CLIENT[CLIENT.index("  for (const input of session.inputMetadata)"):CLIENT.index("  const [labelName")].rstrip()
    assert spelled in readme
    assert loop in readme
