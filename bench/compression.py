"""The README's pruning and int8 table: one balanced penguins model, each compression side by side.

    .venv/bin/python bench/compression.py      # about 15 s on 2 cores

Penguins (shuffled with seed 0): 275 rows train the model (balanced preset, one network: training.bagging 1), the other 69 are
scored. Each file is measured by keel.export.measure in ONNX Runtime with one thread: parameters,
size, accuracy on the 69 rows, one-row latency p50 (2,000 calls after a warm-up) and throughput in
1,000-row batches. `--prune auto` chooses on the 69 scored rows here (a small table has no other
rows to spare), so its accuracy is not an unbiased figure; bench/export.py chooses on other rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import keel  # noqa: E402
from keel.export.measure import main_metric, measure  # noqa: E402
from keel.export.onnx import to_onnx  # noqa: E402
from keel.export.parity import onnx_feeds  # noqa: E402
from keel.export.prune import auto_prune, prune  # noqa: E402
from keel.export.quantize import quantize_int8  # noqa: E402


def main() -> None:
    frame = pd.read_csv("examples/penguins.csv").sample(frac=1.0, random_state=0)
    train, test = frame.iloc[:275], frame.iloc[275:]
    # One network (training.bagging 1), as the committed table was measured; balanced's auto bags penguins.
    model = keel.fit(train, target="species", test=test, config={"training.bagging": 1}, quiet=True)
    one = {k: v[:1] for k, v in onnx_feeds(model, test).items()}
    batch = {k: np.resize(v, 1000) for k, v in onnx_feeds(model, frame).items()}
    metric = main_metric(model, test)

    def figures(data: bytes) -> dict:
        return measure(data, one, batch, metric_fn=metric, repeats=2000, batch_repeats=30)

    def file(pruned: keel.model.Model) -> bytes:
        pruned.metrics = model.metrics  # the same metadata as the original's file, so sizes compare
        return to_onnx(pruned).SerializeToString()

    original = to_onnx(model).SerializeToString()
    chosen, amount, _ = auto_prune(model, test, max_drop=0.005)
    files = {
        "original": original,
        "--prune 0.5": file(prune(model, 0.5)),
        f"--prune auto (chose {amount:g})": file(chosen),
        "--prune 0.5 --prune-method unstructured": file(prune(model, 0.5, method="unstructured")),
        "--quantize int8": quantize_int8(original),
        "--quantize int8 --static": quantize_int8(original, calibration=onnx_feeds(model, train)),
        "--prune 0.5 --quantize int8": quantize_int8(file(prune(model, 0.5))),
    }
    print("| file | parameters | size | accuracy | latency p50 (ms) | rows/s (1,000-row batches) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, data in files.items():
        f = figures(data)
        nonzero = f" ({f['nonzero_parameters']:,} non-zero)" if "unstructured" in name else ""
        print(f"| {'`' + name + '`' if name != 'original' else name} | {f['parameters']:,}{nonzero} | "
              f"{f['size_bytes'] / 1000:.0f} kB | {f['metric_value']:.3f} | {f['latency_p50_ms']:.3f} | "
              f"{f['throughput_rows_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
