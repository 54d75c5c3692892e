"""``POST /predict`` bodies: validated against the model's own features, turned into columns.

Three forms, told apart by their shape:

- one record: ``{"island": "Biscoe", "bill_length_mm": 39.1, ...}``
- a list of records: ``[{...}, {...}]``
- columns: ``{"columns": {"island": ["Biscoe", "Dream"], "bill_length_mm": [39.1, null], ...}}``
  (also for a model with a feature named "columns": a record's value is never an object)

The pydantic types are built at start-up from the model's features, so validation and the
OpenAPI document come from one source: a number feature takes a JSON number or null, a binary or
category feature takes a string, number, boolean or null (unseen values are allowed: they go to
the unknown bucket and are counted), a date feature ISO 8601 text, a number of seconds since
1970-01-01 UTC or null (the predictor parses the text, naming the row of a bad one, and refuses a
request's numbers that are all years or all YYYYMMDD dates unless the model's training dates began
in 1970). NaN and Infinity (which Python's JSON reader accepts) are
rejected. Keys that are no feature (an id, the target) are allowed, ignored and listed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Final, Optional, Union

from pydantic import (
    AllowInfNan,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

from keel.data.spelling import canonical_category
from keel.serve.errors import RequestError, describe, hint_for, problem
from keel.serve.spec import FeatureSpec, ModelSpec

# A category's known values listed as examples in the OpenAPI document; a column of thousands of
# IDs would otherwise make /docs unreadable (the description says how many there are).
EXAMPLES_SHOWN: Final = 50
# An 8 x 8 gray PNG, the example value of an image feature in the OpenAPI document (and Schemathesis' request).
EXAMPLE_PNG: Final = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAF0lEQVR4nGNkYIEARgUog4UUBuMDKAMAR1gCmJsliJIAAAAASUVORK5CYII="
# The key of the columnar form.
COLUMNS_KEY: Final = "columns"
# pydantic's errors for a list of rows (or a column) that is empty or longer than --max-batch.
_BATCH_ERRORS: Final = frozenset({"too_short", "too_long"})

FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
NumberValue = Optional[FiniteFloat]
CategoryValue = Union[StrictStr, StrictBool, StrictInt, FiniteFloat, None]
DateValue = Union[StrictStr, StrictInt, FiniteFloat, None]


@dataclass
class Batch:
    """A validated request, ready for the predictor.

    Attributes:
        columns: One list per feature: numbers as floats (None when missing), binary and category
            values in keel's canonical spelling ("" when missing), dates as sent (text or seconds).
        n_rows: The rows in the request.
        unseen: By binary or category feature, how many values the model does not know (they go
            to its unknown bucket); features without any are left out.
        ignored: The request's keys that are no feature, in the order first seen.
    """

    columns: dict[str, list[Any]]
    n_rows: int
    unseen: dict[str, int]
    ignored: list[str]


class Payload:
    """The request types of one model, and the parser of ``/predict`` bodies.

    Args:
        spec: The served model.
        max_batch: The most rows a request may hold.
    """

    def __init__(self, spec: ModelSpec, max_batch: int) -> None:
        self.spec = spec
        self.max_batch = max_batch
        self._features = {feature.name: feature for feature in spec.features}
        self._known = spec.known
        record = _record_type(spec.features)
        batch = Field(min_length=1, max_length=max_batch)
        self._record: TypeAdapter[Any] = TypeAdapter(record)
        self._rows: TypeAdapter[Any] = TypeAdapter(Annotated[list[record], batch])  # type: ignore[valid-type,arg-type]
        self._columns: TypeAdapter[Any] = TypeAdapter(_columns_type(spec.features, max_batch))

    # ---- parsing ---------------------------------------------------------------------------
    def parse(self, body: Any) -> Batch:
        """Validate a decoded JSON body and convert it to columns.

        Args:
            body: The decoded JSON.

        Returns:
            The batch.

        Raises:
            RequestError: 422 for a body of no known form, a missing or mistyped feature, NaN or
                Infinity, an empty batch, a batch over ``max_batch`` or columns of different lengths.
        """
        if isinstance(body, list):
            rows = self._validate(self._rows, body, "rows")
            return self.batch({name: [row[name] for row in rows] for name in self._features}, len(rows),
                               _keys(rows))
        if isinstance(body, dict):
            if self._is_columnar(body):
                columns = self._validate(self._columns, body, "columns")[COLUMNS_KEY]
                n_rows = _common_length(columns, list(self._features))
                return self.batch({name: columns[name] for name in self._features}, n_rows, list(columns))
            if body and not any(name in body for name in self._features):  # {"rows": [...]}, {"instances": ...}
                keys = ", ".join(repr(key) for key in list(body)[:5]) + (", ..." if len(body) > 5 else "")
                raise RequestError.one(
                    422, f"the body is an object whose keys ({keys}) name no feature of this model; send one record "
                    f"(an object of feature -> value), a list of records (a list of rows wrapped in an object: send "
                    f'the list itself), or {{"{COLUMNS_KEY}": {{feature: [values]}}}}.', "body")
            record = self._validate(self._record, body, "record")
            return self.batch({name: [record[name]] for name in self._features}, 1, list(record))
        raise RequestError.one(
            422, f"the body must be one record (an object of feature -> value), a list of records, or "
            f'{{"{COLUMNS_KEY}": {{feature: [values]}}}}; got {describe(body)}.', "body")

    def _is_columnar(self, body: dict[str, Any]) -> bool:
        """The columnar form: "columns" beside no feature, or holding an object where a feature is
        named "columns" (a record's value is never an object). A malformed columnar body is
        columnar too, so that its 422 speaks of the columnar form."""
        if COLUMNS_KEY not in body:
            return False
        if COLUMNS_KEY in self._features and isinstance(body[COLUMNS_KEY], dict):
            return True
        return not any(name in body for name in self._features)

    def _validate(self, adapter: TypeAdapter[Any], body: Any, form: str) -> Any:
        try:
            return adapter.validate_python(body)
        except ValidationError as error:
            raise self._request_error(error, form) from None

    def batch(self, columns: dict[str, list[Any]], n_rows: int, keys: list[str]) -> Batch:
        """A batch of validated columns: category values spelled, unseen ones counted, images decoded.

        Args:
            columns: One list of validated values per feature (replaced in place by the spelled ones).
            n_rows: The rows.
            keys: Every key of the request, features or not.

        Returns:
            The batch.

        Raises:
            RequestError: 422 for an image value that is not base64.
        """
        for name, feature in self._features.items():
            if feature.is_image:  # bytes, never a path: a request must not make the server read its own files
                columns[name] = [image_bytes(value, name, row) for row, value in enumerate(columns[name], 1)]
        unseen = {}
        for name, known in self._known.items():
            spelled = [_spell(value) for value in columns[name]]
            count = sum(1 for value in spelled if value and value not in known)
            if count:
                unseen[name] = count
            columns[name] = spelled
        return Batch(columns, n_rows, unseen, [key for key in keys if key not in self._features])

    # ---- errors ----------------------------------------------------------------------------
    def _request_error(self, error: ValidationError, form: str) -> RequestError:
        """One problem per feature and row (pydantic reports one per member of a union value)."""
        locate = _LOCATIONS[form]
        problems: dict[tuple[Any, ...], dict[str, Any]] = {}
        for item in error.errors(include_url=False):
            place, field, row = locate(item["loc"])
            key = ("batch",) if item["type"] in _BATCH_ERRORS else (place, field, row)  # once, not per column
            if key not in problems:
                problems[key] = self._problem(item, form, place, field, row)
        return RequestError(422, list(problems.values()))

    def _problem(self, item: Any, form: str, place: str, field: str | None,
                 row: int | None) -> dict[str, Any]:
        kind, value = item["type"], item.get("input")
        where = f"row {row}: " if row is not None else ""
        if kind == "string_unicode" and place != "value":  # a key: pydantic reads every key as text
            holder = ("the body" if form == "columns" and field is None else
                      {"record": "the record", "rows": f"row {row}", "columns": f"'{COLUMNS_KEY}'"}[form])
            key = describe(value).removeprefix("the string ")
            return problem(f"{holder} has the key {key}, which is not valid Unicode text (it holds a lone UTF-16 "
                           "surrogate); send UTF-8 text (in JSON, an escape such as \\ud83d must be followed by "
                           "its low half, such as \\ude00).", "text", None, row)
        if kind in _BATCH_ERRORS:
            rows = item.get("ctx", {}).get("actual_length")
            counted = f"column {field!r} has {rows} value(s)" if field is not None else f"the batch has {rows} rows"
            if kind == "too_short":
                return problem(f"{counted}; send at least one row.", "batch", field)
            return problem(f"{counted}; this server takes at most {self.max_batch} rows per request (its "
                           "--max-batch). Split them into smaller requests.", "batch", field)
        if kind == "missing" and field is not None:
            holder = {"record": "the record", "rows": f"row {row}", "columns": f"'{COLUMNS_KEY}'"}[form]
            how = "as a list with one value per row" if form == "columns" else ""
            return problem(f"{holder} lacks the feature {field!r}; add it{' ' + how if how else ''} (null stands for a "
                           "missing value, which the model fills).", "missing", field, row)
        if place == "value" and field is not None:
            feature = self._features[field]
            expected = ("a number, or null when missing" if feature.is_number else
                        _DATE_TEXT if feature.is_date else IMAGE_TEXT if feature.is_image else
                        "one value (a string, number or boolean), or null when missing")
            hint = hint_for(value)
            return problem(f"{where}feature {field!r} takes {expected}; got {describe(value)}.{hint}",
                           feature.problem_type,
                           field, row)
        if place == "column":
            return problem(f"column {field!r} of '{COLUMNS_KEY}' takes a list with one value per row; got "
                           f"{describe(value)}.", "column", field)
        if place == "row":
            return problem(f"row {row} is {describe(value)}; each row must be an object of feature -> value.",
                           "row", None, row)
        if kind == "extra_forbidden":
            return problem(f"the columnar form takes only the key '{COLUMNS_KEY}'; got {field!r} too. Put every "
                           f"column inside '{COLUMNS_KEY}'.", "body", field)
        return problem(f"'{COLUMNS_KEY}' must be an object of feature -> list of values; got {describe(value)}.",
                       "body", COLUMNS_KEY)

    # ---- OpenAPI ---------------------------------------------------------------------------
    def schemas(self) -> dict[str, Any]:
        """The request's JSON schemas, for the OpenAPI document's components.

        Returns:
            ``Record``, ``Columns``, ``ColumnsRequest`` and ``PredictRequest`` (the three forms).
        """
        template = "#/components/schemas/{model}"
        schemas: dict[str, Any] = {}
        for adapter in (self._record, self._columns):
            schema = adapter.json_schema(ref_template=template)
            schemas.update(schema.pop("$defs", {}))
            schemas[schema["title"]] = schema
        schemas["PredictRequest"] = {
            "title": "PredictRequest",
            "description": "One record, a list of records, or columns. Keys that are no feature are ignored.",
            "anyOf": [
                {"$ref": template.format(model="Record")},
                {"type": "array", "items": {"$ref": template.format(model="Record")}, "minItems": 1,
                 "maxItems": self.max_batch},
                {"$ref": template.format(model="ColumnsRequest")},
            ],
        }
        return schemas


# ---- the types, built from the features ---------------------------------------------------
_DATE_TEXT = ("a date: ISO 8601 text (2024-02-29, or 2024-02-29T13:45:00 with Z or +01:00 for a time zone) or "
              "seconds since 1970-01-01 UTC, or null when missing")


IMAGE_TEXT = ("an image: the base64 of an image file's bytes (PNG, JPEG, GIF, BMP, WebP, TIFF; a data URL such as "
               "data:image/png;base64,... is fine too), or null when missing")
# A data URL's prefix before the base64: data:image/png;base64,
_DATA_URL = re.compile(r"data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.ASCII)


def image_bytes(value: str | None, feature: str, row: int) -> bytes | None:
    """An image feature's JSON value (base64, or a data URL of it) as the file's bytes; None when missing.

    Raises:
        RequestError: 422 when the text is not base64, naming the feature and the row.
    """
    if value is None or not value.strip():
        return None
    text = "".join(value.split())  # base64 wrapped at 76 columns (base64 img.png, base64.encodebytes) is base64
    match = _DATA_URL.match(text)
    try:
        return base64.b64decode(text[match.end():] if match else text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError.one(422, f"row {row}: feature {feature!r} takes {IMAGE_TEXT}; got text that is not "
                               f"base64 ({describe(value)}). A file path is not read: send the file's bytes.",
                               "image", feature, row) from None


def _value_type(feature: FeatureSpec) -> Any:
    if feature.is_image:
        return Optional[StrictStr]
    return NumberValue if feature.is_number else DateValue if feature.is_date else CategoryValue


def _described(feature: FeatureSpec, kind: Any, **constraints: Any) -> Any:
    examples: list[Any] | None = None
    if feature.is_number:
        text = "A number; null when missing (the model fills it)."
    elif feature.is_date:
        text = (f"{_DATE_TEXT[0].upper()}{_DATE_TEXT[1:]} (the model fills it). A time without an offset is "
                "taken as UTC.")
        examples = ["2024-02-29T13:45:00Z"]
    elif feature.is_image:
        text = f"{IMAGE_TEXT[0].upper()}{IMAGE_TEXT[1:]}. It is converted and resized as in training."
        examples = [EXAMPLE_PNG]
    elif feature.type == "text":
        text = ("Free text (a string); null or \"\" when missing. It is read as in training (split into words and "
                "word pairs, or into a pretrained encoder's tokens); nothing in it counts as unseen.")
        examples = ["arrived quickly and works well"]
    else:
        shown = list(feature.values[:EXAMPLES_SHOWN])
        more = f" (the first {EXAMPLES_SHOWN} are listed as examples)" if len(feature.values) > EXAMPLES_SHOWN else ""
        text = (f"A {feature.type} value: one of the {len(feature.values)} values the model knows{more}, or null "
                "when missing. Any other value is allowed: it goes to the model's unknown bucket and is counted "
                "in the answer's 'unseen'. Numbers and booleans are spelled as keel spells them (3, 3.0 and \"3\" "
                "are one value).")
        examples = shown or None
    if constraints:  # a column: the examples are of its items
        text, examples = f"One value per row. {text}", [examples[:3]] if examples else None
    return Annotated[kind, Field(title=feature.name, description=text, examples=examples, **constraints)]


def _record_type(features: list[FeatureSpec]) -> Any:
    record = TypedDict("Record", {  # type: ignore[misc]
        feature.name: _described(feature, _value_type(feature)) for feature in features})
    record.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="allow", title="Record", json_schema_extra={"description": (
            "One row: every feature of the model (null when missing); other keys are ignored.")})
    return record


def _columns_type(features: list[FeatureSpec], max_batch: int) -> Any:
    columns = TypedDict("Columns", {  # type: ignore[misc]
        feature.name: _described(feature, list[_value_type(feature)],  # type: ignore[misc]
                                 min_length=1, max_length=max_batch) for feature in features})
    columns.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="allow", title="Columns", json_schema_extra={"description": (
            "One list per feature, all of one length (one value per row); other keys are ignored.")})
    request = TypedDict("ColumnsRequest", {COLUMNS_KEY: columns})  # type: ignore[misc]
    request.__pydantic_config__ = ConfigDict(extra="forbid", title="ColumnsRequest")  # type: ignore[attr-defined]
    return request


# ---- locations: (place, feature, row) of a pydantic error location per form ---------------
# Segments after the feature (and row) name the member of a union value; they are not read.
def _record_location(loc: tuple[Any, ...]) -> tuple[str, str | None, int | None]:
    return ("value" if loc else "body"), (str(loc[0]) if loc else None), None


def _rows_location(loc: tuple[Any, ...]) -> tuple[str, str | None, int | None]:
    if not loc:
        return "batch", None, None
    if len(loc) == 1:
        return "row", None, int(loc[0]) + 1
    return "value", str(loc[1]), int(loc[0]) + 1


def _columns_location(loc: tuple[Any, ...]) -> tuple[str, str | None, int | None]:
    if not loc or loc[0] != COLUMNS_KEY:  # a key beside "columns"
        return "body", (str(loc[0]) if loc else None), None
    if len(loc) == 1:
        return "body", COLUMNS_KEY, None
    if len(loc) == 2:
        return "column", str(loc[1]), None
    return "value", str(loc[1]), int(loc[2]) + 1


_LOCATIONS: Final[dict[str, Callable[[tuple[Any, ...]], tuple[str, str | None, int | None]]]] = {
    "record": _record_location, "rows": _rows_location, "columns": _columns_location}


# ---- helpers -------------------------------------------------------------------------------
def _spell(value: Any) -> str:
    """keel's canonical spelling of a category value ("" when missing), as the ONNX file takes it."""
    if type(value) is str:
        return value
    spelled = canonical_category(value)
    return "" if spelled is None else spelled


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def _common_length(columns: dict[str, list[Any]], names: list[str]) -> int:
    """The rows of the columnar form; columns of different lengths are a 422 naming the odd one."""
    length = len(columns[names[0]])
    for name in names[1:]:
        if len(columns[name]) != length:
            raise RequestError.one(
                422, f"column {name!r} has {len(columns[name])} value(s) where column {names[0]!r} has {length}; "
                "every column needs one value per row (null for a missing one).", "column", name)
    return length

