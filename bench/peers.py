"""keel against its peers on the same data, settings and machine, in one run.

Workloads (issue 4):
  W1  seed case: 1,000 x 10, 3 classes, MLP 64-32 ReLU, Adam lr 0.001, 50 epochs, batch 32, 10% validation
  W2  W1 with 2 classes and a sigmoid output (the classic Keras tutorial model)
  W3  throughput: 1,000,000 x 50, binary, MLP 256-256, Adam, batch 1,024, 3 epochs
  W4  per-step overhead: the first 100,000 rows of W3, batch 32, 1 epoch
  W5  reading a 1,000,000 x 50 CSV / Parquet into training tensors, against pandas.read_csv
Plus: the float32 matmul roofline at W3's shapes, peak RSS of every run, whole-process
`keel train` on the seed-case CSV, and prediction throughput and latency against scikit-learn.

Every measurement runs in a fresh child process (so imports and memory do not leak between
tools), after a warm-up fit on a few rows; tools are interleaved (A B A B) across repeats.
Peers live in .venv-bench only (bench/requirements.txt), never in keel's dependencies.

Run:  make bench            (or .venv-bench/bin/python bench/peers.py [--repeats 3] [--workloads W1,W3])
Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
WORKLOADS = {
    "W1": dict(kind="seed", classes=3, hidden=[64, 32], epochs=50, batch=32, validation=0.1),
    "W2": dict(kind="seed", classes=2, hidden=[64, 32], epochs=50, batch=32, validation=0.1),
    "W3": dict(kind="big", rows=1_000_000, hidden=[256, 256], epochs=3, batch=1024, validation=0.0),
    "W4": dict(kind="big", rows=100_000, hidden=[256, 256], epochs=1, batch=32, validation=0.0),
}
TOOLS = {
    "W1": ["keel", "sklearn", "torch_tuned", "torch_dataloader", "skorch", "keras", "lightgbm"],
    "W2": ["keel", "sklearn", "torch_tuned", "torch_dataloader", "skorch", "keras", "lightgbm"],
    "W3": ["keel", "keel_bf16", "torch_tuned", "keras", "sklearn", "torch_dataloader", "skorch", "lightgbm"],
    "W4": ["keel", "keel_bf16", "sklearn", "torch_tuned", "torch_dataloader", "keras", "skorch"],
}
LR = 0.001


# ---------------------------------------------------------------- data (made once, cached)
def seed_data(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=1000, n_features=10, n_informative=6, n_classes=classes, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.2, random_state=0)
    return X_train, y_train, X_test, y_test


def big_data(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    path = CACHE / "big.npz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((1_050_000, 50), dtype=np.float32)
        w = rng.standard_normal(50).astype(np.float32)
        signal = X @ w * 0.3 + np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
        y = (signal + rng.standard_normal(len(X)).astype(np.float32) > 0).astype(np.int64)
        np.savez(path, X=X, y=y)
    data = np.load(path)
    X, y = data["X"], data["y"]
    return X[:rows], y[:rows], X[1_000_000:], y[1_000_000:]


def workload_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    spec = WORKLOADS[name]
    return seed_data(spec["classes"]) if spec["kind"] == "seed" else big_data(spec["rows"])


# ---------------------------------------------------------------- tools (run in a child)
def run_keel_bf16(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    """keel with training.precision=bfloat16 (AMX matmuls, float32 weights and optimizer)."""
    return run_keel(spec, X, y, X_test, y_test, seed, precision="bfloat16")


def run_keel_cuda(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    """keel on the first GPU with its GPU defaults (rows moved once, bfloat16 autocast); W3 only, when there is one."""
    return run_keel(spec, X, y, X_test, y_test, seed, precision="auto", device="cuda")


def run_keel(spec, X, y, X_test, y_test, seed=0, precision="float32", device="cpu"):  # type: ignore[no-untyped-def]
    import pandas as pd

    import keel

    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    started = time.perf_counter()
    model = keel.fit(frame, target="label", config=_keel_config(spec, seed, precision, device), quiet=True)
    seconds = time.perf_counter() - started
    test = pd.DataFrame(X_test, columns=frame.columns[:-1])
    return seconds, float((model.predict(test) == y_test).mean())


def _torch_mlp(n_in: int, hidden: list[int], n_out: int):  # type: ignore[no-untyped-def]
    from torch import nn

    layers, width = [], n_in
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def _torch_outputs(y):  # type: ignore[no-untyped-def]
    """One logit for binary targets, one per class otherwise."""
    n_classes = int(y.max()) + 1
    return 1 if n_classes == 2 else n_classes


def _torch_accuracy(net, X_test, y_test, n_out):  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        logits = net(torch.from_numpy(X_test))
    predicted = (logits[:, 0] > 0).long() if n_out == 1 else logits.argmax(1)
    return float((predicted.numpy() == y_test).mean())


def _split_validation(X, y, fraction, seed=0):  # type: ignore[no-untyped-def]
    n_validation = int(round(len(X) * fraction))
    order = np.random.default_rng(seed).permutation(len(X))
    return X[order[n_validation:]], y[order[n_validation:]], X[order[:n_validation]], y[order[:n_validation]]


def run_torch_tuned(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    """A hand-tuned loop: tensors in memory, index slicing, fused Adam, no per-step host sync."""
    import torch

    torch.manual_seed(seed)
    n_out = _torch_outputs(y)
    started = time.perf_counter()
    X_train, y_train, X_val, y_val = _split_validation(X, y, spec["validation"], seed)
    Xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)
    Xv, yv = torch.from_numpy(X_val), torch.from_numpy(y_val)
    net = _torch_mlp(X.shape[1], spec["hidden"], n_out)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss() if n_out == 1 else torch.nn.CrossEntropyLoss()
    target = (lambda t: t.float()) if n_out == 1 else (lambda t: t)
    out = (lambda o: o[:, 0]) if n_out == 1 else (lambda o: o)
    for _ in range(spec["epochs"]):
        order = torch.randperm(len(Xt))
        for start in range(0, len(Xt), spec["batch"]):
            index = order[start:start + spec["batch"]]
            loss = loss_fn(out(net(Xt[index])), target(yt[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if len(Xv):
            with torch.inference_mode():
                loss_fn(out(net(Xv)), target(yv))
    return time.perf_counter() - started, _torch_accuracy(net, X_test, y_test, n_out)


def run_torch_dataloader(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    """The loop tutorials write: TensorDataset + DataLoader(shuffle=True)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    n_out = _torch_outputs(y)
    started = time.perf_counter()
    X_train, y_train, X_val, y_val = _split_validation(X, y, spec["validation"], seed)
    loader = DataLoader(TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train)),
                        batch_size=spec["batch"], shuffle=True)
    net = _torch_mlp(X.shape[1], spec["hidden"], n_out)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.BCEWithLogitsLoss() if n_out == 1 else torch.nn.CrossEntropyLoss()
    for _ in range(spec["epochs"]):
        net.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            output = net(xb)
            loss = loss_fn(output[:, 0], yb.float()) if n_out == 1 else loss_fn(output, yb)
            loss.backward()
            optimizer.step()
        if len(X_val):
            net.eval()
            with torch.no_grad():
                net(torch.from_numpy(X_val))
    return time.perf_counter() - started, _torch_accuracy(net, X_test, y_test, n_out)


def run_sklearn(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    validation = spec["validation"] > 0
    model = MLPClassifier(hidden_layer_sizes=tuple(spec["hidden"]), solver="adam", learning_rate_init=LR,
                          batch_size=spec["batch"], max_iter=spec["epochs"], early_stopping=validation,
                          validation_fraction=spec["validation"] if validation else 0.1,
                          n_iter_no_change=spec["epochs"] + 1, random_state=seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    seconds = time.perf_counter() - started
    return seconds, float(model.score(X_test, y_test))


def run_skorch(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    import torch
    from skorch import NeuralNetClassifier
    from skorch.dataset import ValidSplit

    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    model = NeuralNetClassifier(
        _torch_mlp(X.shape[1], spec["hidden"], n_classes), criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam, lr=LR, max_epochs=spec["epochs"], batch_size=spec["batch"],
        train_split=ValidSplit(int(round(1 / spec["validation"]))) if spec["validation"] else None,
        iterator_train__shuffle=True, verbose=0)
    started = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - started
    return seconds, float((model.predict(X_test) == y_test).mean())


def run_keras(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = int(y.max()) + 1
    binary = n_classes == 2
    layers = [keras.Input((X.shape[1],))] + [keras.layers.Dense(size, activation="relu") for size in spec["hidden"]]
    layers.append(keras.layers.Dense(1, activation="sigmoid") if binary else keras.layers.Dense(n_classes, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy")
    started = time.perf_counter()
    model.fit(X, y, batch_size=spec["batch"], epochs=spec["epochs"], validation_split=spec["validation"], verbose=0)
    seconds = time.perf_counter() - started
    probabilities = model.predict(X_test, verbose=0, batch_size=8192)
    predicted = (probabilities[:, 0] > 0.5).astype(int) if binary else probabilities.argmax(1)
    return seconds, float((predicted == y_test).mean())


def run_lightgbm(spec, X, y, X_test, y_test, seed=0):  # type: ignore[no-untyped-def]
    import lightgbm

    model = lightgbm.LGBMClassifier(verbose=-1, random_state=seed)
    started = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - started
    return seconds, float((model.predict(X_test) == y_test).mean())


def child(tool: str, workload: str, seed: int) -> dict:
    spec = WORKLOADS[workload]
    X, y, X_test, y_test = workload_data(workload)
    runner = globals()[f"run_{tool}"]
    warm = dict(spec, epochs=1)
    runner(warm, X[:512], y[:512], X_test[:64], y_test[:64])  # imports, first-call costs
    seconds, accuracy = runner(spec, X, y, X_test, y_test, seed)
    return {"seconds": seconds, "accuracy": accuracy, "rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- W5 and the other probes (children)
def files_for_w5() -> tuple[Path, Path]:
    csv, parquet = CACHE / "w5.csv", CACHE / "w5.parquet"
    if not parquet.exists():
        import pyarrow as pa
        import pyarrow.csv as pc
        import pyarrow.parquet as pq

        X, y, _, _ = big_data(1_000_000)
        table = pa.table({**{f"f{i}": X[:, i] for i in range(50)}, "label": y})
        pc.write_csv(table, csv)
        pq.write_table(table, parquet)
    return csv, parquet


def probe(name: str) -> dict:
    if name == "read_keel_csv" or name == "read_keel_parquet":
        return _read_keel(files_for_w5()[0 if name.endswith("csv") else 1])
    if name == "read_pandas_csv":
        import pandas as pd

        started = time.perf_counter()
        frame = pd.read_csv(files_for_w5()[0])
        X = frame.drop(columns="label").to_numpy(dtype=np.float32)
        return {"seconds": time.perf_counter() - started, "rows": len(X), "rss_mb": _peak_rss_mb()}
    if name == "train_keel_parquet":
        import keel

        started = time.perf_counter()
        keel.fit(str(files_for_w5()[1]), target="label", quiet=True, config=_keel_config(WORKLOADS["W3"]))
        return {"seconds": time.perf_counter() - started, "rss_mb": _peak_rss_mb()}
    if name == "train_tuned_parquet":
        import pyarrow.parquet as pq

        started = time.perf_counter()
        table = pq.read_table(files_for_w5()[1])
        X = np.stack([table.column(f"f{i}").to_numpy() for i in range(50)], axis=1)
        y = table.column("label").to_numpy()
        del table
        run_torch_tuned(WORKLOADS["W3"], X, y, X[:10], y[:10])
        return {"seconds": time.perf_counter() - started, "rss_mb": _peak_rss_mb()}
    if name == "roofline":
        return _roofline()
    if name == "predict":
        return _predict_probe()
    raise SystemExit(f"unknown probe {name}")


def _keel_config(spec: dict, seed: int = 0, precision: str = "float32", device: str = "cpu") -> dict:
    """The workload's settings as keel config keys (the test split is the caller's, so none here)."""
    return {"preset": "fast", "model.hidden": spec["hidden"], "model.dropout": 0.0, "training.optimizer": "adam", "training.lr": LR,
            "training.epochs": spec["epochs"], "training.batch_size": spec["batch"],
            "training.validation_split": spec["validation"], "training.test_split": 0.0,
            "training.early_stopping": 0, "training.precision": precision, "training.device": device,
            "training.seed": seed}


def _read_keel(path: Path) -> dict:
    import torch

    from keel.config import load_config
    from keel.data.io import read_table
    from keel.data.preprocess import Preprocessor
    from keel.data.schema import infer_schema

    started = time.perf_counter()
    frame = read_table(path)
    config = load_config({"target": "label", "preset": "fast"})
    preprocessor = Preprocessor(infer_schema(frame, config), config.preprocessing).fit(frame)
    features = preprocessor.transform(frame)
    X = torch.from_numpy(features.numeric)
    return {"seconds": time.perf_counter() - started, "rows": len(X), "rss_mb": _peak_rss_mb()}


def _roofline() -> dict:
    """Sustained float32 GFLOP/s of the matmuls one W3 training step performs, and the rows/s that allows."""
    import torch

    spec = WORKLOADS["W3"]
    batch, widths = spec["batch"], [50] + spec["hidden"] + [1]
    shapes = []
    for n_in, n_out in zip(widths, widths[1:]):
        shapes += [(batch, n_in, n_out), (batch, n_out, n_in), (n_out, batch, n_in)]  # forward, input grad, weight grad
    tensors = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops_per_step = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in tensors:
        torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(20):
            for a, b in tensors:
                torch.mm(a, b)
        best = min(best, (time.perf_counter() - started) / 20)
    gflops = flops_per_step / best / 1e9
    # A whole forward + backward + Adam step on one fixed batch (no data movement): the loop's ceiling.
    net = _torch_mlp(50, spec["hidden"], 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=True)
    x, t = torch.randn(batch, 50), torch.randint(0, 2, (batch,)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(5):
        loss_fn(net(x)[:, 0], t).backward()
    started = time.perf_counter()
    for _ in range(50):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x)[:, 0], t).backward()
        optimizer.step()
    step_rows = 50 * batch / (time.perf_counter() - started)
    return {"gflops": gflops, "roofline_rows_per_s": gflops * 1e9 / (flops_per_step / batch),
            "fixed_batch_rows_per_s": step_rows, "threads": torch.get_num_threads()}


def _predict_probe() -> dict:
    import warnings

    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    import keel

    X, y, _, _ = big_data(1_000_000)
    columns = [f"f{i}" for i in range(50)]
    frame = pd.DataFrame(X, columns=columns)
    train = frame.iloc[:20_000].assign(label=y[:20_000])
    model = keel.fit(train, target="label", quiet=True, config=_keel_config(dict(WORKLOADS["W3"], epochs=1)))
    sk = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=1, batch_size=1024, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X[:20_000], y[:20_000])
    out = {}
    for name, call in (("keel", lambda: model.predict(frame)), ("sklearn", lambda: sk.predict(X))):
        call()
        started = time.perf_counter()
        call()
        out[f"{name}_rows_per_s"] = len(X) / (time.perf_counter() - started)
    one_frame, one_array = frame.iloc[:1], X[:1]
    for name, call in (("keel", lambda: model.predict(one_frame)), ("sklearn", lambda: sk.predict(one_array))):
        times = []
        for _ in range(200):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        out[f"{name}_single_row_ms"] = statistics.median(times) * 1000
    return out


def whole_process_keel_train(repeats: int) -> list[float]:
    import pandas as pd

    X, y, _, _ = seed_data(3)
    path = CACHE / "seed.csv"
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(10)])
    frame["label"] = y
    frame.to_csv(path, index=False)
    keel_bin = Path(sys.executable).parent / "keel"
    args = ["train", str(path), "--target", "label", "--quiet", "--preset", "fast", "--set", "model.hidden=[64,32]",
            "--set", "model.dropout=0", "--set", "training.optimizer=adam", "--set", "training.epochs=50",
            "--set", "training.batch_size=32", "--set", "training.early_stopping=0", "--set", "training.test_split=0"]
    times = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([str(keel_bin), *args, "--output", f"{directory}/m"], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
    return times


# ---------------------------------------------------------------- the parent: schedule, summarise, write
def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()



def spawn(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    good = [run for run in runs if "error" not in run]
    if not good:
        return {"error": runs[0]["error"]}
    seconds = [run["seconds"] for run in good]
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "accuracy": statistics.mean(run["accuracy"] for run in good),
            "accuracy_min": min(run["accuracy"] for run in good), "accuracy_max": max(run["accuracy"] for run in good),
            "rss_mb": max(run["rss_mb"] for run in good), "n": len(good)}


def main() -> None:
    parser = argparse.ArgumentParser(description="keel against its peers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "WORKLOAD", "SEED"))
    parser.add_argument("--probe")
    args = parser.parse_args()
    if args.child:
        tool, workload, seed = args.child
        print(json.dumps(child(tool, workload, int(seed))))
        return
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    selected = args.workloads.split(",")
    results: dict = {"workloads": {}, "probes": {}}
    if _has_gpu():  # CPU rows stay on the CPU (the configs say so); this adds the GPU as one more tool
        TOOLS["W3"].insert(1, "keel_cuda")
    for workload in [w for w in selected if w in WORKLOADS]:
        workload_data(workload)  # build the cache before timing anything
        runs: dict[str, list[dict]] = {tool: [] for tool in TOOLS[workload]}
        # Small workloads get more repeats: their accuracy differs more between seeds than between tools.
        for repeat in range(args.repeats if WORKLOADS[workload]["kind"] == "big" else max(args.repeats, 7)):
            for tool in TOOLS[workload]:  # interleaved: A B C ... A B C ..., repeat r uses seed r everywhere
                runs[tool].append(spawn("--child", tool, workload, str(repeat)))
                print(f"{workload} #{repeat} {tool}: {runs[tool][-1]}", flush=True)
        results["workloads"][workload] = {tool: summarise(tool_runs) for tool, tool_runs in runs.items()}
    if "W3" in selected:
        results["probes"]["roofline"] = spawn("--probe", "roofline")
        results["probes"]["predict"] = spawn("--probe", "predict")
        print("probes:", results["probes"], flush=True)
    if "W1" in selected:
        results["probes"]["keel_train_process_s"] = whole_process_keel_train(5)
    if "W5" in selected:
        files_for_w5()
        w5: dict[str, list[dict]] = {name: [] for name in ("read_keel_csv", "read_keel_parquet", "read_pandas_csv")}
        for _ in range(args.repeats):
            for name in w5:
                w5[name].append(spawn("--probe", name))
        results["probes"]["w5"] = {name: {"median": statistics.median(r["seconds"] for r in runs),
                                          "rss_mb": max(r["rss_mb"] for r in runs)} for name, runs in w5.items()}
        results["probes"]["w3_parquet_rss"] = {name: spawn("--probe", name) for name in ("train_keel_parquet", "train_tuned_parquet")}
    (CACHE / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results, args.repeats)
    print(report)
    write_section("peers", report)


def render(results: dict, repeats: int) -> str:
    import torch

    lines = ["# keel benchmark results", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"torch {torch.__version__}. Produced by `make bench` (bench/peers.py): interleaved runs ({repeats} for "
             "W3/W4, 7 for W1/W2), each in a fresh process after a warm-up fit, run r using seed r in every tool; "
             "times are fit seconds (median), accuracy the mean over seeds.", ""]
    for workload, tools in results["workloads"].items():
        keel_time = tools.get("keel", {}).get("median")
        lines += [f"## {workload}: {_describe(workload)}", "",
                  "| tool | median s | min–max s | keel / tool | test accuracy: mean (min–max) | peak RSS MB | runs |",
                  "|---|---|---|---|---|---|---|"]
        for tool, row in tools.items():
            if "error" in row:
                lines.append(f"| {tool} | error: {row['error'][:80]} | | | | |")
                continue
            ratio = f"{keel_time / row['median']:.2f}" if keel_time else ""
            lines.append(f"| {tool} | {row['median']:.3f} | {row['min']:.3f}–{row['max']:.3f} | {ratio} | "
                         f"{row['accuracy']:.4f} ({row['accuracy_min']:.3f}–{row['accuracy_max']:.3f}) | "
                         f"{row['rss_mb']:.0f} | {row['n']} |")
        lines.append("")
    probes = results["probes"]
    if "roofline" in probes and "error" not in probes["roofline"]:
        roof = probes["roofline"]
        w3 = results["workloads"].get("W3", {})
        lines += ["## Roofline (W3 shapes, float32)", "",
                  f"Sustained matmul throughput {roof['gflops']:.0f} GFLOP/s on {roof['threads']} threads: "
                  f"{roof['roofline_rows_per_s']:,.0f} training rows/s at most. A fixed-batch forward + backward + "
                  f"Adam step reaches {roof['fixed_batch_rows_per_s']:,.0f} rows/s "
                  f"({100 * roof['fixed_batch_rows_per_s'] / roof['roofline_rows_per_s']:.0f}%)."]
        for tool in ("keel", "torch_tuned"):
            if tool in w3 and "median" in w3[tool]:
                rate = WORKLOADS["W3"]["rows"] * WORKLOADS["W3"]["epochs"] / w3[tool]["median"]
                lines.append(f"- {tool}: {rate:,.0f} rows/s over the whole fit = "
                             f"{100 * rate / roof['roofline_rows_per_s']:.0f}% of the roofline.")
        lines.append("")
    if "predict" in probes and "error" not in probes["predict"]:
        p = probes["predict"]
        lines += ["## Prediction (MLP 256-256, 1,000,000 rows of W3)", "",
                  "| | keel `Model.predict` (DataFrame in) | scikit-learn `predict` (array in) |", "|---|---|---|",
                  f"| rows/s | {p['keel_rows_per_s']:,.0f} | {p['sklearn_rows_per_s']:,.0f} |",
                  f"| single-row latency, median ms | {p['keel_single_row_ms']:.2f} | {p['sklearn_single_row_ms']:.2f} |", ""]
    if "keel_train_process_s" in probes:
        times = probes["keel_train_process_s"]
        lines += [f"Whole-process `keel train` on the seed-case CSV (W1 settings, 50 epochs, save included): "
                  f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, 5 runs).", ""]
    if "w5" in probes:
        w5 = probes["w5"]
        pandas_s = w5["read_pandas_csv"]["median"]
        lines += ["## W5: 1,000,000 x 50 file to training tensors", "",
                  "| reader | median s | pandas.read_csv / reader | peak RSS MB |", "|---|---|---|---|"]
        for name, row in w5.items():
            lines.append(f"| {name} | {row['median']:.2f} | {pandas_s / row['median']:.1f}x | {row['rss_mb']:.0f} |")
        rss = probes.get("w3_parquet_rss", {})
        if all("rss_mb" in rss.get(k, {}) for k in ("train_keel_parquet", "train_tuned_parquet")):
            k, t = rss["train_keel_parquet"], rss["train_tuned_parquet"]
            lines += ["", f"Training W3 from the Parquet file: keel peak RSS {k['rss_mb']:.0f} MB ({k['seconds']:.1f} s), "
                          f"tuned loop {t['rss_mb']:.0f} MB ({t['seconds']:.1f} s): ratio {k['rss_mb'] / t['rss_mb']:.2f}."]
        lines.append("")
    return "\n".join(lines)


def _describe(workload: str) -> str:
    spec = WORKLOADS[workload]
    if spec["kind"] == "seed":
        return (f"{1000} x 10, {spec['classes']} classes, MLP 64-32, Adam, {spec['epochs']} epochs, batch {spec['batch']}, "
                f"10% validation (accuracy on the 200 test rows)")
    return (f"{spec['rows']:,} x 50, binary, MLP 256-256, Adam, batch {spec['batch']}, {spec['epochs']} epoch(s) "
            "(accuracy on 50,000 held-out rows)")


if __name__ == "__main__":
    main()
