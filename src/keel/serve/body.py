"""Request bodies in (content type, size, JSON) and JSON answers out."""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from keel.serve.errors import HugeInteger, JsonConstant, RequestError

JSON: Final = "application/json"


async def read_body(request: Request, max_body: int) -> bytes:
    """The request's JSON body, read no further than ``max_body`` bytes (decode it with :func:`decode`).

    Args:
        request: The request.
        max_body: The largest body allowed, in bytes.

    Returns:
        The body's bytes.

    Raises:
        RequestError: 415 for a content type other than JSON (none at all is read as JSON), 413 for
            a body over ``max_body`` (told by Content-Length before anything is read, or counted
            while reading).
    """
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise RequestError.one(415, f"the body must be JSON (Content-Type: {JSON}); got Content-Type "
                               f"{content_type[:80]!r}. Send it with that header (curl: -H 'Content-Type: {JSON}').",
                               "content_type", "content-type")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise _too_large(int(declared), max_body, exact=True)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise _too_large(size, max_body, exact=False)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(content: bytes) -> Any:
    """A body decoded as JSON.

    Python's reader accepts NaN and Infinity (read as :class:`JsonConstant`, so that messages can
    tell them from a number too large for a float64); the request types reject them where a value
    is read, so the error names the field. So are integers of more digits than Python converts
    (read as :class:`HugeInteger`), on a second reading that only such a body pays for.

    Raises:
        RequestError: 400 for an empty body or one that is not JSON.
    """
    if not content.strip():
        raise RequestError.one(400, "the request has no body; send the rows as JSON.", "json")
    try:
        # UTF-8 (a byte-order mark allowed), as the API says: Python's reader of bytes would also take UTF-16
        # and UTF-32 by guessing.
        text = content.decode("utf-8-sig")
        try:
            return json.loads(text, parse_constant=JsonConstant)
        except ValueError as error:
            if isinstance(error, json.JSONDecodeError):
                raise
            # Python refuses to convert integers of over 4,300 digits (sys.get_int_max_str_digits).
            return json.loads(text, parse_constant=JsonConstant, parse_int=_integer)
    except RecursionError:
        raise RequestError.one(400, "the body's JSON is nested too deeply to read; send rows as objects of feature "
                               "-> value.", "json") from None
    except json.JSONDecodeError as error:
        if "\x00" in error.doc:  # UTF-16 / UTF-32 without a byte-order mark reads as UTF-8 with NUL bytes between
            raise RequestError.one(400, "the body is not valid JSON (it holds NUL bytes: UTF-16 or UTF-32 text?); "
                                   "send a JSON object or list as UTF-8.", "json") from None
        raise RequestError.one(400, f"the body is not valid JSON ({error.msg} at line {error.lineno} column "
                               f"{error.colno}); send a JSON object or list.", "json") from None
    except UnicodeDecodeError:
        raise RequestError.one(400, "the body is not valid JSON (it is not UTF-8 text); send a JSON object or list "
                               "as UTF-8.", "json") from None
    except ValueError as error:
        raise RequestError.one(400, f"the body is not valid JSON ({error}); send a JSON object or list.",
                               "json") from None


def _integer(text: str) -> int | float:
    """A JSON integer as an int, or as a :class:`HugeInteger` when it has too many digits to convert."""
    digits = len(text) - text.startswith("-")
    limit = sys.get_int_max_str_digits()
    return HugeInteger(text) if limit and digits > limit else int(text)


def is_json(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json``, with any parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def json_response(content: Any, status: int = 200) -> Response:
    """``content`` as a JSON response; compact, and never with NaN (which JSON cannot carry)."""
    return Response(json.dumps(content, allow_nan=False, separators=(",", ":")).encode(), status, media_type=JSON)


def error_response(error: RequestError) -> Response:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return Response(error.body(), error.status, headers=headers, media_type=JSON)


def _too_large(size: int, max_body: int, exact: bool) -> RequestError:
    return RequestError.one(413, f"the body has {'' if exact else 'more than '}{size if exact else max_body} bytes; this server takes at most "
                            f"{max_body} (its --max-body). Split the rows into smaller requests.", "size")
