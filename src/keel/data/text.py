"""Text columns as numbers: TF-IDF or a frozen sentence encoder, projected onto a few components.

A text column becomes ``dim`` numbers and an empty-text flag. ``tfidf`` counts the terms of
:func:`keel.data.words.terms` (lower-cased words of two or more word characters, and adjacent pairs), keeps the ``max_features`` most
frequent of those in at least two training rows, weights them ``(1 + log count) * idf`` with
scikit-learn's smoothed idf and scales each row to unit length; ``pretrained`` embeds each text with
a frozen sentence encoder (:mod:`keel.nn.sentence`). Either way the vectors are projected onto their
leading components (truncated SVD for TF-IDF, PCA for embeddings) fitted on the training rows, and
each component is scaled to unit variance there: the network then reads a text like any ``dim``
number columns. Projection matrices are arrays (kept in the model's safetensors file), not JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from keel.config import TextConfig, check_char_ngrams, text_dim
from keel.data.pretrained import DEFAULT_MODEL, PACKAGE_PREFIX, token_ids, tokenizer_from_json
from keel.data.values import category_strings
from keel.data.words import CHAR_MARK, term_ids, terms
from keel.errors import ConfigError, DataError


class Encoder(Protocol):
    """What the text transform needs of a sentence encoder (:class:`keel.nn.sentence.SentenceEncoder`)."""

    sha256: str
    max_tokens: int

    @property
    def width(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def weights(self) -> dict[str, np.ndarray]: ...

    def tokenizer_json(self) -> str: ...

    @property
    def shape(self) -> Any: ...

    pooling: str
    normalize: bool


# Components whose spread on the training rows is below this share of the largest one are noise.
_MIN_SPREAD = 1e-4
# ... or below this at all: rows of unit length project to O(0.01-1); 1e-6 is rounding (two texts alike but for
# one word project equally onto their mean direction).
_MIN_ABSOLUTE_SPREAD = 1e-6
# Terms a bag column keeps per text when text.max_tokens is unset (words first, then word pairs).
BAG_TERMS = 256
# A term must appear in this many training rows to be kept: a word of one row teaches nothing.
_MIN_ROWS = 2
# text.linear: the folds of the out-of-fold scores, and the inverse strength of the logistic / ridge regression's
# L2 penalty (scikit-learn's default C = 1, alpha = 1: bench/multimodal.py's TF-IDF + logistic regression).
LINEAR_FOLDS = 5
LINEAR_C = 1.0


def text_strings(series: pd.Series) -> list[str]:
    """A column's values as text, '' for missing ones."""
    return ["" if value is None else value for value in category_strings(series).tolist()]


# text.encoder -> how a column's texts become vectors before the projection (a sparse TF-IDF matrix or
# dense embeddings); the keys are the config's Literal values.
# bag is no projection: its terms' positions go to the network's own embedding (_fit_tokens).
TEXT_ENCODERS: dict[str, str] = {"tfidf": "_tfidf", "pretrained": "_embed", "bag": "_fit_tokens"}


class TextTransform:
    """A text column -> ``dim`` projected components (unit variance on the training rows) and an empty flag.

    Args:
        name: The column.
        settings: The config's ``text`` section.
    """

    kind: ClassVar[str] = "text"
    # Builds the sentence encoder of a model reference and token limit. Data knows no torch: keel.model,
    # which every training and prediction path imports, plugs in the torch encoder of keel.nn.sentence.
    loader: ClassVar[Callable[[str, int | None], Encoder] | None] = None

    def __init__(self, name: str, settings: TextConfig | None = None) -> None:
        settings = settings or TextConfig()
        self.name = name
        self.encoder = settings.encoder
        self.dim_setting = settings.dim  # empty: the dim is chosen in fit, by whether linear scores are fitted
        self.dim = text_dim(settings.dim, False)
        self.max_features = settings.max_features
        self.char_ngrams = settings.char_ngrams
        path = settings.model_path
        # A directory is kept absolute: a model predicting from another working directory finds it.
        self.model = DEFAULT_MODEL if not path else path if path.startswith(PACKAGE_PREFIX) else str(
            Path(path).expanduser().absolute())
        self.max_tokens = settings.max_tokens
        # Where the encoder is read from when not at ``model``: a copy in the model directory (Model.embed_encoders).
        # The state keeps ``model``, the reference trained with, so a re-save elsewhere does not point into this copy.
        self.location: str | None = None
        self._saved = self.model  # a loaded model: the encoder reference its keel.json holds, before any resolving
        self.cache_dir = settings.cache_dir
        # Fine-tuned (finetune full / lora): the column is its token ids, which the network's encoder reads.
        self.finetune = settings.finetune
        self.lora_rank = settings.lora_rank
        self.lr = settings.lr
        self.backbone: dict[str, np.ndarray] | None = None  # the checkpoint's weights, read in fit, for the network
        self.tokenizer = np.zeros(0, dtype=np.uint8)  # a fine-tuned column's tokenizer.json (UTF-8), kept in the model
        self._tokenizer: Any = None
        self._id_limit = 1 << 62  # a loaded fine-tuned column: the rows of its encoder's token embedding table
        self.vocabulary: list[str] = []
        self.idf = np.zeros(0, dtype=np.float32)
        self.components = np.zeros((0, 0), dtype=np.float32)  # (n_components, vocabulary or embedding width)
        self.use_linear = settings.linear and settings.encoder == "tfidf"
        self.linear = 0  # the last rows of ``components``: a linear model's coefficients (text.linear)
        # The linear scores of the rows fit saw, out of fold and scaled as transform scales them, for the pipeline to
        # put in place of the full model's (``out_of_fold``); dropped by finish_training.
        self._out_of_fold: np.ndarray | None = None
        self.center = np.zeros(0, dtype=np.float32)
        self.scale = np.zeros(0, dtype=np.float32)
        self.model_sha256 = ""
        self.notes: list[str] = []  # what fitting did that the run note should say (truncations, cache)
        self._sentence: Encoder | None = None
        # Embeddings of the training texts, kept from fit for the transforms of the table that training runs
        # next (which would otherwise embed every training text again), then dropped (finish_training).
        self._fitted: dict[str, np.ndarray] = {}
        self._training = False  # embeddings made now go into the cache: from fit until finish_training
        self._cut = [0, 0]  # a bag column's texts cut at its limit, and texts read, while training

    @property
    def tokens(self) -> bool:
        """True for a fine-tuned or bag column: its numbers are token ids (term positions) for an encoder in the
        network."""
        return self.finetune != "none" or self.encoder == "bag"

    @property
    def width(self) -> int:
        """Number of float columns this transform emits."""
        return (self.max_tokens or 0) + 1 if self.tokens else len(self.components) + 1

    @property
    def parts(self) -> list[str]:
        """The name of each column this transform emits, in order (for messages)."""
        if self.tokens:
            return [*(f"token {index + 1}" for index in range(self.width - 1)), "empty"]
        projected = len(self.components) - self.linear
        return [*(f"component {index + 1}" for index in range(projected)),
                *(f"linear score {index + 1}" for index in range(self.linear)), "empty"]

    def fit(self, series: pd.Series, source: str | None = None, target: np.ndarray | None = None,
            task: str = "regression", groups: np.ndarray | None = None,
            weights: np.ndarray | None = None) -> "TextTransform":
        """Learn the vocabulary (tfidf), the projection and each component's scale from the training rows; with
        ``target`` (class indices, or standardized values for ``task`` regression; one per row) and text.linear,
        a linear model's scores too (:meth:`_fit_linear`; ``groups``: training.split_by's group of each row,
        ``weights``: training.weight_column's).

        Raises:
            DataError: Every training text is empty.
            ConfigError: The pretrained model cannot be loaded (see :class:`keel.nn.sentence.SentenceEncoder`).
        """
        texts = text_strings(series)
        if not any(text.strip() for text in texts):
            raise DataError(f"text column {self.name!r} is empty in every training row; fill it, or leave the "
                            "column out of input_features.", file=source, column=self.name)
        self.notes = []
        check_char_ngrams(self.encoder, self.char_ngrams)
        if self.tokens:
            return self._fit_tokens(texts)
        if self.encoder == "tfidf":
            self._fit_vocabulary(texts)
        vectors: Any = getattr(self, TEXT_ENCODERS[self.encoder])(texts, fitting=True)
        self.linear, self._out_of_fold = 0, None
        folds = self._linear_folds(texts, target, task, groups) if self.use_linear else None
        self.dim = text_dim(self.dim_setting, folds is not None)
        # TF-IDF stays sparse and uncentered (truncated SVD); embeddings are centered (PCA).
        centered = vectors if self.encoder == "tfidf" else vectors - vectors.mean(axis=0)
        components = _leading_components(centered, min(self.dim, len(set(texts)) - 1))
        projected = np.asarray(vectors @ components.T, dtype=np.float64)
        spread = projected.std(axis=0)
        # A component beyond the texts' own directions has a spread of float rounding (1e-8): scaled to
        # unit variance it would turn a new text into values of 1e7. Such components are dropped.
        kept = spread > max(_MIN_SPREAD * (spread.max() if len(spread) else 0.0), _MIN_ABSOLUTE_SPREAD)
        self.components = components[kept]
        self.center = projected[:, kept].mean(axis=0).astype(np.float32)
        self.scale = spread[kept].astype(np.float32)
        if folds is not None and target is not None and len(self.components):
            self._fit_linear(vectors, np.asarray(target), task, folds, weights)
        if not len(self.components):
            terms = "word or character n-gram" if self.char_ngrams is not None else "word"
            self.notes.append(f"text column {self.name!r}: no {terms} appears in two training rows (or every text is "
                              "the same), so only its empty-text flag is used.")
        return self

    def _linear_folds(self, texts: list[str], target: np.ndarray | None, task: str,
                      groups: np.ndarray | None) -> np.ndarray | None:
        """The out-of-fold fold of each row for text.linear (rows of one text share a fold; with training.split_by,
        rows of one group, as validation holds groups out; each class's units dealt in turn across the folds), or
        None, with a note, where the scores cannot be fitted: no target (a streamed or sharded run), fewer than two
        units a fold, a class in fewer than two units (a fold's model would not know it)."""
        if target is None:
            self.notes.append(f"text column {self.name!r}: no linear scores (text.linear): they are fitted on the "
                              "training rows' target in memory, which a streamed or sharded run does not hold.")
            return None
        target = np.asarray(target)
        what = "groups (training.split_by)" if groups is not None else "distinct texts"
        if groups is not None:
            units = np.unique(groups, return_inverse=True)[1].ravel()
        else:
            units = np.unique(np.array(texts, dtype=object), return_inverse=True)[1].ravel()
        count = int(units.max()) + 1 if len(units) else 0
        if count < 2 * LINEAR_FOLDS:
            self.notes.append(f"text column {self.name!r}: no linear scores (text.linear): {count} {what} are too "
                              f"few to score each out of fold ({2 * LINEAR_FOLDS} at least).")
            return None
        rng = np.random.default_rng(0)
        fold_of = np.empty(count, dtype=np.int64)
        if task == "regression":
            fold_of[:] = rng.permutation(count) % LINEAR_FOLDS
        else:  # a unit's class: that of its first row (rows of one text rarely disagree)
            first = target[np.unique(units, return_index=True)[1]]
            counts = np.bincount(first, minlength=int(target.max()) + 1)
            present = counts[np.unique(target)]
            if len(present) < 2 or present.min() < 2:
                self.notes.append(f"text column {self.name!r}: no linear scores (text.linear): a class has fewer "
                                  f"than two {what}, so an out-of-fold model would not know it.")
                return None
            dealt = 0  # each class goes on where the last one stopped: many small classes still fill every fold
            for label in np.unique(first):
                members = np.flatnonzero(first == label)
                fold_of[rng.permutation(members)] = (dealt + np.arange(len(members))) % LINEAR_FOLDS
                dealt += len(members)
        return fold_of[units]

    def _fit_linear(self, vectors: sparse.csr_matrix, target: np.ndarray, task: str, fold: np.ndarray,
                    weights: np.ndarray | None = None) -> None:
        """text.linear: a logistic (classes) or ridge (numbers) regression on the TF-IDF rows, whose scores (a logit
        per class; one for binary and regression) join the components: its coefficients are more rows of
        ``components``, its intercept is folded into ``center``, so a transform (and the exported graph) computes
        them as it computes the components.

        A model scoring the rows it was fitted on would hand the network scores far surer than on new rows, so
        the rows seen here are scored out of fold (``LINEAR_FOLDS`` models, each fitted without the rows of a
        fold: ``fold``, from :meth:`_linear_folds`), and the scale is those scores'."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression, Ridge

        # Every fold's model knows every class of these rows (dealt above), so their scores line up column by column.
        width = 1 if task == "regression" or len(np.unique(target)) == 2 else len(np.unique(target))

        def fitted(rows: np.ndarray) -> Any:
            model = Ridge(alpha=1 / LINEAR_C) if task == "regression" else LogisticRegression(C=LINEAR_C, max_iter=1000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return model.fit(vectors[rows], target[rows], sample_weight=None if weights is None else weights[rows])

        def scores(model: Any, rows: Any) -> np.ndarray:
            values = model.predict(rows) if task == "regression" else model.decision_function(rows)
            return np.asarray(values, dtype=np.float64).reshape(rows.shape[0], -1)

        out = np.zeros((vectors.shape[0], width))
        for index in range(LINEAR_FOLDS):
            held = fold == index
            if held.any():
                out[held] = scores(fitted(np.flatnonzero(~held)), vectors[held])
        full = fitted(np.arange(vectors.shape[0]))
        coefficients = np.asarray(full.coef_, dtype=np.float64).reshape(out.shape[1], -1)
        intercepts = np.asarray(full.intercept_, dtype=np.float64).reshape(-1)
        spread = out.std(axis=0)
        kept = spread > _MIN_ABSOLUTE_SPREAD  # a class the model never scores apart teaches nothing
        if not kept.any():
            self.notes.append(f"text column {self.name!r}: no linear scores (text.linear): the linear model scores "
                              "every training row alike.")
            return
        center = out[:, kept].mean(axis=0) - intercepts[kept] if len(intercepts) > 1 else (
            out[:, kept].mean(axis=0) - intercepts[0])
        self.components = np.concatenate([self.components, coefficients[kept].astype(np.float32)])
        self.center = np.concatenate([self.center, center.astype(np.float32)])
        self.scale = np.concatenate([self.scale, spread[kept].astype(np.float32)])
        self.linear = int(kept.sum())
        kind = "ridge" if task == "regression" else "logistic"
        self.notes.append(f"text column {self.name!r}: {self.linear} linear score{'s' if self.linear > 1 else ''} "
                          f"({kind} regression on its TF-IDF; training rows scored out of fold, {LINEAR_FOLDS} folds) "
                          f"beside {len(self.components) - self.linear} components (text.linear).")
        self._out_of_fold = ((out[:, kept] - out[:, kept].mean(axis=0)) / spread[kept]).astype(np.float32)

    def out_of_fold(self) -> np.ndarray | None:
        """(rows fit saw, in its order, ``linear``) scaled linear scores of those rows, out of fold, for their
        place in the transformed training rows (the last ``linear`` columns before the empty flag); None without
        linear scores or after finish_training."""
        return self._out_of_fold

    def _fit_tokens(self, texts: list[str]) -> "TextTransform":
        """A fine-tuned column: the encoder's tokenizer, token limit, shape and weights (for the network); a bag
        column: its vocabulary (as tfidf's) and the most terms a text keeps."""
        if self.encoder == "bag":
            if self.finetune != "none":
                raise ConfigError(f"text.finetune {self.finetune} trains a pretrained encoder; a bag column trains "
                                  "from scratch already. Set text.encoder: pretrained, or text.finetune: none.")
            self._fit_vocabulary(texts)
            self.max_tokens = self.max_tokens or BAG_TERMS
            self.notes = [f"text column {self.name!r}: a bag of {len(self.vocabulary):,} words and word pairs, "
                          f"embedded by the network, up to {self.max_tokens} terms a text."]
            self._cut = [0, 0]  # texts cut at the limit, texts read: counted while training transforms its rows
            self._training = True
            if not self.vocabulary:
                self.notes.append(f"text column {self.name!r}: no word appears in two training rows, so only its "
                                  "empty-text flag is used.")
            return self
        if self.encoder != "pretrained":
            raise ConfigError(f"text.finetune {self.finetune} trains a pretrained encoder; set text.encoder: "
                              "pretrained, or text.finetune: none for tfidf.")
        sentence = self._encoder(fitting=True)
        self.max_tokens = sentence.max_tokens
        self.backbone = sentence.weights()
        # The tokenizer is kept in the model (its weights file): with the encoder's weights in the network, a
        # fine-tuned model predicts and exports without the checkpoint it started from.
        self.tokenizer = np.frombuffer(sentence.tokenizer_json().encode("utf-8"), dtype=np.uint8).copy()
        _, truncated = self._token_ids(sorted(set(texts)))
        self.notes = [f"text column {self.name!r}: read as up to {self.max_tokens} tokens by a fine-tuned "
                      f"({self.finetune}) {self.model_name()}"
                      + (f"; {int(truncated.sum()):,} distinct training text(s) cut at {self.max_tokens} tokens"
                         if truncated.any() else "") + "."]
        return self

    @property
    def index(self) -> dict[str, int]:
        """term -> position in the vocabulary."""
        return {term: position for position, term in enumerate(self.vocabulary)}

    def _term_positions(self, texts: list[str]) -> np.ndarray:
        """A bag column's texts as (n, max_tokens) term positions, the first ``max_tokens`` in text order (words,
        then word pairs), -1 padding; an empty text has none."""
        out = np.full((len(texts), self.width - 1), -1, dtype=np.int64)
        size = len(self.vocabulary)
        for row, ids in enumerate(term_ids(texts, self.index)):
            kept = [term for term in ids[:self.width - 1] if term != size]  # [size] marks an empty text
            out[row, :len(kept)] = kept
            if self._training:
                self._cut[0] += len(ids) > self.width - 1
        if self._training:
            self._cut[1] += len(texts)
        return out

    def encoder_shape(self) -> tuple[Any, str, bool]:
        """A fine-tuned column's BERT shape, pooling and normalisation (the network's text encoder is built of them)."""
        sentence = self._encoder(fitting=False)
        return sentence.shape, sentence.pooling, sentence.normalize

    def _token_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """A fine-tuned column's token ids (n, max_tokens), -1 padding, and which texts were cut, by its kept
        tokenizer."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_json(self.tokenizer_json(), self.width - 1)
        ids, truncated = token_ids(self._tokenizer, texts, self.width - 1)
        if ids.size and ids.max() >= self._id_limit:  # special tokens a tokenizer adds lie outside its vocabulary
            raise DataError(f"text column {self.name!r}: the model's tokenizer made token id {int(ids.max()):,}, "
                            f"beyond the {self._id_limit:,} its encoder embeds; the model is damaged: retrain it or "
                            "restore it from a backup.", column=self.name)
        return ids, truncated

    def tokenizer_json(self) -> str:
        """The pretrained encoder's tokenizer.json, for an export's callers (keel.runtime tokenises with it): a
        fine-tuned column's own copy, a frozen one's from its checkpoint."""
        if self.tokens:
            return self.tokenizer.tobytes().decode("utf-8")
        return self._encoder(fitting=False).tokenizer_json()

    def tokenizer_problem(self, rows: int) -> str | None:
        """What keeps a loaded fine-tuned column's kept tokenizer from feeding its encoder of ``rows`` token
        embeddings (bytes that are no tokenizer, or ids beyond the table), or None. A saved model may come from
        anyone: this is found at load, not as a crash in the first prediction."""
        try:
            self._tokenizer = tokenizer_from_json(self.tokenizer.tobytes().decode("utf-8"), self.width - 1)
        except ConfigError:  # the tokenizers library is missing: the prediction says so
            return None
        except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad tokenizer.json
            return f"text column {self.name!r}: its tokenizer cannot be read ({str(error)[:200]})"
        size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        if size > rows:
            return (f"text column {self.name!r}: its tokenizer has {size:,} tokens, its encoder embeds {rows:,}")
        self._id_limit = rows
        return None

    def width_tokens(self) -> int:
        """Tokens per text at most: the token limit the column was trained with."""
        return self.width - 1 if self.tokens else int(self._encoder(fitting=False).max_tokens)

    def encoder_weights(self) -> dict[str, np.ndarray]:
        """The checkpoint's weights (its content hash checked against the one trained with), for an export."""
        return self._encoder(fitting=False).weights()

    def _encoder(self, *, fitting: bool) -> Encoder:
        """The sentence encoder of the column's model, its content hash recorded (fit) or checked (later)."""
        if self._sentence is None:
            if TextTransform.loader is None:
                raise ConfigError("text.encoder pretrained needs keel.model imported (it plugs in the torch encoder); "
                                  "use keel.fit / keel.load, or import keel.model first.")
            try:
                self._sentence = TextTransform.loader(self.location or self.model, self.max_tokens)
            except ConfigError as error:
                if fitting:  # a setting the user gave now: say which column it failed for
                    raise ConfigError(f"text column {self.name!r}: {error}") from None
                # A saved model's setting, not one the user gave now: say where it comes from.
                raise ConfigError(f"text column {self.name!r} is read by the encoder the model was trained with, at "
                                f"{self.location or self.model}, which cannot be used here: {error} Put that encoder "
                                "back at its path, or retrain (keel train --embed-encoders keeps a copy in the model "
                                "directory).") from None
            if fitting:
                self.model_sha256 = self._sentence.sha256
            elif self._sentence.sha256 != self.model_sha256:
                raise DataError(
                    f"text column {self.name!r} was read in training by the model at {self.model} with content "
                    f"hash {self.model_sha256[:12]}, and that path now holds another model ({self._sentence.sha256[:12]}); "
                    "restore the model it was trained with, or retrain.", column=self.name)
        return self._sentence

    def model_name(self) -> str:
        """The encoder as messages name it: its package, or its folder's name."""
        return self.model.removeprefix(PACKAGE_PREFIX) if self.model.startswith(PACKAGE_PREFIX) else Path(self.model).name

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(values (n, width) float32, 0)``."""
        texts = text_strings(series)
        if self.tokens:  # token ids (exact in float32: vocabularies are far below 2^24), -1 padding; empty flag
            ids = self._term_positions(texts) if self.encoder == "bag" else self._token_ids(texts)[0]
            out = np.empty((len(texts), self.width), dtype=np.float32)
            out[:, :-1] = ids
            out[:, -1] = [not text.strip() for text in texts]
            return out, 0
        vectors = getattr(self, TEXT_ENCODERS[self.encoder])(texts, fitting=False)
        out = np.empty((len(texts), self.width), dtype=np.float32)
        out[:, :-1] = (np.asarray(vectors @ self.components.T, dtype=np.float32) - self.center) / self.scale
        out[:, -1] = [not text.strip() for text in texts]
        return out, 0

    def _fit_vocabulary(self, texts: list[str]) -> None:
        """The terms in at least ``_MIN_ROWS`` training rows, the ``max_features`` most frequent first; with
        text.char_ngrams, as many character n-grams after them (a block of their own: :meth:`_tfidf`)."""
        rows = Counter(term for text in texts for term in set(terms(text, self.char_ngrams)))
        kept = sorted((term for term, count in rows.items() if count >= _MIN_ROWS), key=lambda term: (-rows[term], term))
        words = [term for term in kept if not term.startswith(CHAR_MARK)]
        grams = [term for term in kept if term.startswith(CHAR_MARK)]
        self.vocabulary = words[:self.max_features] + grams[:self.max_features]
        counts = np.array([rows[term] for term in self.vocabulary], dtype=np.float64)
        self.idf = (np.log((1 + len(texts)) / (1 + counts)) + 1).astype(np.float32)

    def _tfidf(self, texts: list[str], *, fitting: bool = False) -> sparse.csr_matrix:
        """(n, vocabulary) sublinear TF-IDF rows of unit length (empty rows stay zero); with text.char_ngrams, the
        words and pairs and the character n-grams each of unit length (as a union of two TF-IDFs: one length for
        both let the many n-grams drown the words, README). Fitting changes nothing (the vocabulary is fitted
        first), it is the argument every TEXT_ENCODERS method takes."""
        index = self.index
        columns: list[int] = []
        values: list[float] = []
        pointers = [0]
        for text in texts:
            counts = Counter(index[term] for term in terms(text, self.char_ngrams) if term in index)
            columns += counts.keys()
            values += [1 + math.log(count) for count in counts.values()]
            pointers.append(len(columns))
        matrix = sparse.csr_matrix((np.array(values, dtype=np.float32), np.array(columns, dtype=np.int64),
                                    np.array(pointers, dtype=np.int64)), shape=(len(texts), len(self.vocabulary)))
        matrix = matrix.multiply(self.idf[None, :]).tocsr()
        if self.char_ngrams is not None:
            return _unit_blocks(matrix, self.word_terms)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sparse.diags(1 / np.where(norms > 0, norms, 1)).astype(np.float32) @ matrix

    @property
    def word_terms(self) -> int:
        """How many of the vocabulary's terms are words and word pairs: those before its character n-grams."""
        return sum(not term.startswith(CHAR_MARK) for term in self.vocabulary)

    def _embed(self, texts: list[str], *, fitting: bool) -> np.ndarray:
        """Sentence embeddings (n, encoder width), each distinct text encoded once, cached on disk."""
        sentence = self._encoder(fitting=fitting)
        distinct, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        new = [text for text in distinct.tolist() if text not in self._fitted]
        # Training writes the cache (its texts come back in the next run); predictions only read it.
        embeddings, hit = _cached(sentence, new, self.cache_dir, write=fitting or self._training)
        known = dict(zip(new, embeddings.vectors))
        vectors = np.stack([known[text] if text in known else self._fitted[text] for text in distinct.tolist()])
        if fitting:
            self._fitted, self._training = known, True
            truncated = embeddings.truncated
            name = self.model_name()
            cached = (" (read from the cache)" if hit else
                      f" ({embeddings.hits:,} read from the cache)" if embeddings.hits else "")
            self.notes += [f"text column {self.name!r}: {len(distinct):,} distinct training texts embedded by {name}"
                           f"{cached}"
                          + (f"; {truncated:,} cut at {sentence.max_tokens} tokens" if truncated else "") + "."]
        return vectors[inverse.ravel()]

    def finish_training(self) -> None:
        """Stop writing the embedding cache and drop the kept training embeddings (training has transformed its rows);
        a bag column notes how many of the texts read were cut at its limit."""
        if self._training and self.encoder == "bag" and self._cut[0]:
            self.notes.append(f"text column {self.name!r}: {self._cut[0]:,} of the {self._cut[1]:,} texts read in "
                              f"training cut at {self.max_tokens} terms.")
        self._fitted, self._training, self._out_of_fold = {}, False, None

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "encoder": self.encoder, "dim": self.dim,
                "max_features": self.max_features, "model": self.model, "max_tokens": self.max_tokens,
                "model_sha256": self.model_sha256, "vocabulary": self.vocabulary, "cache_dir": self.cache_dir,
                **({"linear": self.linear} if self.linear else {}),  # older keels read the scores as components
                **({"char_ngrams": list(self.char_ngrams)} if self.char_ngrams else {}),  # absent before it existed
                **({"finetune": self.finetune, "lora_rank": self.lora_rank, "lr": self.lr} if self.tokens else {})}

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays, kept in the model's safetensors file beside the weights (none when fine-tuned: the
        encoder's weights are the network's)."""
        if self.tokens:
            return {"tokenizer": self.tokenizer} if self.encoder == "pretrained" else {}
        return {"idf": self.idf, "components": self.components, "center": self.center, "scale": self.scale}

    def problem(self) -> str | None:
        """What is inconsistent between the state and the arrays of a loaded transform, or None."""
        if self.tokens:
            if not self.max_tokens or self.encoder not in ("pretrained", "bag"):
                return f"column {self.name!r}: a fine-tuned or bag column needs its encoder and its token limit"
            return None if self.encoder == "bag" or len(self.tokenizer) else (
                f"column {self.name!r}: a fine-tuned column's tokenizer is missing")
        if self.encoder == "pretrained" and not (self.model.startswith(PACKAGE_PREFIX) or Path(self._saved).is_absolute()):
            return (f"column {self.name!r}: its encoder's path {self._saved!r} is relative (keel saves an absolute path "
                    "or a package), so it would be looked for wherever the model is used")
        grams = len(self.vocabulary) - self.word_terms
        if any(term.startswith(CHAR_MARK) for term in self.vocabulary[:self.word_terms]) or (
                grams and self.char_ngrams is None):
            return (f"column {self.name!r}: its vocabulary holds character n-grams ({CHAR_MARK}...) "
                    + ("before its words" if self.char_ngrams else "but no text.char_ngrams"))
        if not 0 <= self.linear <= len(self.components):
            return f"column {self.name!r}: {self.linear} linear scores but {len(self.components)} projection rows"
        width = len(self.vocabulary) if self.encoder == "tfidf" else self.components.shape[1]
        shapes = {"idf": (len(self.vocabulary),), "components": (len(self.center), width),
                  "center": (len(self.center),), "scale": (len(self.center),)}
        for key, shape in shapes.items():
            if getattr(self, key).shape != shape:
                return f"column {self.name!r}: {key} has shape {getattr(self, key).shape}, expected {shape}"
            if not np.isfinite(getattr(self, key)).all():
                return f"column {self.name!r}: {key} holds a value that is not a finite number"
        if (self.scale <= 0).any():  # fitting keeps only components of a positive spread
            return f"column {self.name!r}: a component's scale is {float(self.scale.min()):g}, not positive"
        return None

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> "TextTransform":
        transform = cls(state["name"], TextConfig(
            encoder=state["encoder"], dim=state["dim"], max_features=state["max_features"],
            model_path=state["model"], max_tokens=state["max_tokens"], cache_dir=state.get("cache_dir"),
            finetune=state.get("finetune", "none"), lora_rank=state.get("lora_rank", 8), lr=state.get("lr"),
            char_ngrams=state.get("char_ngrams")))
        transform._saved = str(state["model"])
        transform.model_sha256, transform.vocabulary = state["model_sha256"], list(state["vocabulary"])
        transform.linear = int(state.get("linear", 0))
        for key, value in (arrays or {}).items():  # the tokenizer stays bytes
            setattr(transform, key, np.asarray(value, dtype=np.uint8 if key == "tokenizer" else np.float32))
        return transform


def _unit_blocks(matrix: sparse.csr_matrix, split: int) -> sparse.csr_matrix:
    """``matrix`` with the columns before ``split`` and those from it each scaled to unit length in every row
    (a block with nothing in a row stays zero)."""
    matrix = matrix.tocsr().astype(np.float32)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    block = (matrix.indices >= split).astype(np.int64)
    squares = np.zeros((matrix.shape[0], 2))
    np.add.at(squares, (rows, block), matrix.data.astype(np.float64) ** 2)
    norms = np.sqrt(squares)
    matrix.data *= (1 / np.where(norms > 0, norms, 1))[rows, block].astype(np.float32)
    return matrix


def _leading_components(matrix: Any, dim: int) -> np.ndarray:
    """The top ``dim`` right singular vectors of ``matrix`` (n, width), (k, width) float32 with
    k = min(dim, n - 1, width); signs fixed so the largest loading of each is positive (deterministic)."""
    from sklearn.utils.extmath import randomized_svd

    count = min(dim, matrix.shape[0] - 1, matrix.shape[1])
    if count < 1:
        return np.zeros((0, matrix.shape[1]), dtype=np.float32)
    if count >= min(matrix.shape) // 2 and not sparse.issparse(matrix):
        _, _, rows = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
        rows = rows[:count]
    else:
        _, _, rows = randomized_svd(matrix, count, n_iter=5, random_state=0)
    signs = np.sign(rows[np.arange(count), np.abs(rows).argmax(axis=1)])
    return (rows * signs[:, None]).astype(np.float32)


class _Embeddings:
    def __init__(self, vectors: np.ndarray, truncated: int, hits: int = 0) -> None:
        self.vectors, self.truncated, self.hits = vectors, truncated, hits


def _cache_directory(setting: str | None) -> Path | None:
    if setting == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keel" / "embeddings"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _cached(encoder: Encoder, texts: list[str], cache_dir: str | None,
            write: bool = True) -> tuple[_Embeddings, bool]:
    """The embeddings of ``texts`` (distinct), each read from the cache when this model embedded it before.

    The cache keeps one folder per model (its content hash and token limit) of safetensors shards,
    each holding the sha256 of its texts, their vectors and whether each was cut at the token limit:
    a text is embedded once whatever table, split or row order it comes in. A fit writes one shard
    of the texts it embedded (atomically); a shard that cannot be read is ignored, and an unwritable
    cache loses nothing but the time to embed again.

    Returns:
        The embeddings (``hits``: how many came from the cache) and whether all of them did.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    if not texts:
        return _Embeddings(np.zeros((0, encoder.width), dtype=np.float32), 0), True
    root = _cache_directory(cache_dir)
    folder = root / f"{encoder.sha256[:32]}-{encoder.max_tokens}" if root else None
    digests = [_digest(text) for text in texts]
    vectors = np.zeros((len(texts), encoder.width), dtype=np.float32)
    cut = np.zeros(len(texts), dtype=bool)
    found = _read_cache(folder, digests, vectors, cut, encoder.width) if folder else np.zeros(len(texts), dtype=bool)
    missing = np.flatnonzero(~found)
    if len(missing):
        new, new_cut = encoder.encode([texts[index] for index in missing])
        vectors[missing], cut[missing] = new, new_cut
        if folder is not None and write:
            keys = np.frombuffer(b"".join(digests[index] for index in missing), dtype=np.uint8).reshape(-1, 32)
            path = folder / f"{hashlib.sha256(keys.tobytes()).hexdigest()}.safetensors"
            partial = path.with_suffix(f".tmp-{os.getpid()}")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                save_file({"digests": keys, "vectors": new, "cut": new_cut.astype(np.uint8)}, str(partial))
                os.replace(partial, path)
            except (OSError, SafetensorError):  # a read-only cache: embedded again next time, nothing is lost
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
    return _Embeddings(vectors, int(cut.sum()), int(found.sum())), not len(missing)


def _read_cache(folder: Path, digests: list[bytes], vectors: np.ndarray, cut: np.ndarray, width: int) -> np.ndarray:
    """Fill ``vectors`` and ``cut`` of the texts the cache holds; returns which it held."""
    from safetensors import safe_open

    wanted = {digest: position for position, digest in enumerate(digests)}
    found = np.zeros(len(digests), dtype=bool)
    try:  # a folder that cannot be listed (another user's, a name too long) is an empty cache
        shards = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    except OSError:
        shards = []
    for shard in shards:
        try:  # a shard's vectors are read only when it holds a wanted text
            if not stat.S_ISREG(shard.stat().st_mode):  # a named pipe would block the open, a device never end
                continue
            with safe_open(str(shard), framework="numpy") as handle:
                keys = handle.get_tensor("digests")
                hits = [(row, position) for row, key in enumerate(keys)
                        if (position := wanted.get(key.tobytes())) is not None and not found[position]]
                if not hits:
                    continue
                stored_vectors, stored_cut = handle.get_tensor("vectors"), handle.get_tensor("cut")
            if keys.ndim != 2 or keys.shape[1] != 32 or stored_vectors.shape != (len(keys), width) \
                    or stored_cut.shape != (len(keys),) or not np.isfinite(stored_vectors).all():
                continue
        except Exception:  # noqa: BLE001 - a damaged shard is ignored, never trusted
            continue
        for row, position in hits:
            vectors[position], cut[position], found[position] = stored_vectors[row], bool(stored_cut[row]), True
        if found.all():
            break
    return found
