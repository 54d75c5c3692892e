"""Audit s12: the UTF-16 note of the body reader (beee422) and FeatureSpec.problem_type (baf166f)."""

from __future__ import annotations

import json

import pytest

from keel.serve.body import decode
from keel.serve.errors import RequestError
from keel.serve.spec import FeatureSpec

BODY = [{"x": 1.5, "group": "a"}]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_a_bom_are_named(encoding: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode(json.dumps(BODY).encode(encoding))
    assert "UTF-16 or UTF-32" in caught.value.errors[0]["message"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])  # with a byte-order mark: not UTF-8 at all
def test_utf16_with_a_bom_is_not_utf8(encoding: str) -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        decode(json.dumps(BODY).encode(encoding))


def test_utf8_bodies_still_read_and_an_escaped_nul_is_data() -> None:
    assert decode(json.dumps(BODY).encode()) == BODY
    assert decode(b'{"x": "a\\u0000b"}') == {"x": "a\x00b"}
    assert decode("\ufeff".encode() + json.dumps(BODY).encode()) == BODY


@pytest.mark.parametrize("kind, expected", [("number", "number"), ("binary", "category"), ("category", "category"),
                                            ("date", "date"), ("text", "text"), ("image", "image")])
def test_problem_type_per_feature_type(kind: str, expected: str) -> None:
    assert FeatureSpec(name="f", type=kind).problem_type == expected  # type: ignore[call-arg]
