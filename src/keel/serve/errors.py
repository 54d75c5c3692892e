"""Bad requests as 4xx answers whose JSON body names the field, the row and the problem.

Every answer the server gives to a request it cannot serve has one shape::

    {"detail": "row 2: feature 'bill_length_mm' holds numbers; got the string \\"abc\\". ...",
     "errors": [{"field": "bill_length_mm", "row": 2, "message": "...", "type": "number"}]}

``detail`` is the first problem in one sentence (with how many more there are); ``errors`` lists
them all (at most :data:`MAX_ERRORS`), each with the feature (``field``) and the 1-based row
where there is one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

from keel.errors import DataError

MAX_ERRORS: Final = 20
# A value quoted in a message is cut to this many characters: a request may be megabytes.
_QUOTED: Final = 40

ERROR_SCHEMA: Final[dict[str, Any]] = {
    "title": "Error",
    "type": "object",
    "required": ["detail", "errors"],
    "properties": {
        "detail": {"type": "string", "description": "The first problem: what was wrong, where, and how to fix it."},
        "errors": {"type": "array", "description": "Every problem found (at most 20).", "items": {
            "type": "object",
            "required": ["field", "row", "message", "type"],
            "properties": {
                "field": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "The feature or key at fault."},
                "row": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "The 1-based row at fault."},
                "message": {"type": "string"},
                "type": {"type": "string", "description": "The kind of problem (missing, number, batch, ...)."},
            },
        }},
    },
}


class RequestError(Exception):
    """A request the server cannot serve, as the answer it gets: a 4xx, a 503 before the model is
    ready, or a 500 for a bug.

    Args:
        status: The HTTP status.
        errors: The problems, each ``{"field", "row", "message", "type"}``; the first one is the
            ``detail``.
    """

    def __init__(self, status: int, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.status = status
        self.errors = list(errors)

    @classmethod
    def one(cls, status: int, message: str, kind: str, field: str | None = None,
            row: int | None = None) -> "RequestError":
        """An error with a single problem."""
        return cls(status, [problem(message, kind, field, row)])

    def body(self) -> bytes:
        """The JSON answer."""
        detail = self.errors[0]["message"]
        more = len(self.errors) - 1
        if len(self.errors) > MAX_ERRORS:
            detail += f" ({more} more problem(s); 'errors' lists the first {MAX_ERRORS}.)"
        elif more:
            detail += f" ({more} more problem(s) listed in 'errors'.)"
        return json.dumps({"detail": detail, "errors": self.errors[:MAX_ERRORS]}).encode()


class JsonConstant(float):
    """``NaN``, ``Infinity`` or ``-Infinity`` spelled as such in a body: Python's JSON reader takes
    them (JSON has no such numbers). Told apart from a number too large for a float64 (``1e400``
    reads as infinity too) so that the message says which it was."""


class HugeInteger(float):
    """An integer of more digits than Python converts (over 4,300), as an infinite float that
    remembers its digits: every request type refuses it, and the message says how long it was.

    Args:
        text: The integer as the body spells it.
    """

    digits: int

    def __new__(cls, text: str) -> "HugeInteger":
        number = super().__new__(cls, -math.inf if text.startswith("-") else math.inf)
        number.digits = len(text) - text.startswith("-")
        return number


def problem(message: str, kind: str, field: str | None = None, row: int | None = None) -> dict[str, Any]:
    """One entry of an answer's ``errors``."""
    return {"field": field, "row": row, "message": message, "type": kind}


def from_data_error(error: DataError) -> RequestError:
    """The predictor's own DataError (it names the column and the row) as a 422."""
    return RequestError.one(422, str(error), "data", error.column, error.row)


def hint_for(value: Any) -> str:
    """What to send instead of a value a feature refused: a sentence, or nothing."""
    if isinstance(value, JsonConstant) or isinstance(value, float) and math.isnan(value):
        return " Send null for a missing value."
    if isinstance(value, HugeInteger) or isinstance(value, int) and abs(value) >= 2**1024:
        return (" Numbers must fit a float64 (about 1.8e308 at most, 309 digits): check the value, or send null if "
                "it is unknown.")
    if isinstance(value, float) and math.isinf(value):  # describe() gave the range
        return " Check the value, or send null if it is unknown."
    return ""


def describe(value: Any) -> str:
    """A request value as a message quotes it: its JSON kind and, for scalars, the value, cut short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, HugeInteger):
        return f"an integer of {value.digits} digits"
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value) or isinstance(value, JsonConstant):
            spelled = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
            return f"{spelled} (not a JSON number)"
        return f"a number {'below -' if value < 0 else 'above '}1.8e308, beyond float64's range"
    if isinstance(value, int) and abs(value) >= 2**1024:
        digits = int(value.bit_length() * math.log10(2)) + 1  # str() refuses ints of over 4,300 digits
        return f"an integer of about {digits} digits"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        text = json.dumps(value)
        return "the string " + (text if len(text) <= _QUOTED else text[:_QUOTED] + '..."')
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} value(s)"
    return type(value).__name__
