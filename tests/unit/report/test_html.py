"""The page shell and its helpers: escaping, numbers, tables, images, and the self-containment check."""

from __future__ import annotations

import base64

import pytest

from keel.report.html import (
    Markup,
    Section,
    details,
    escape,
    external_references,
    image,
    key_values,
    number,
    page,
    table,
)


def test_escape_neutralises_markup_and_anything_that_looks_like_a_reference() -> None:
    assert escape("<b>&\"'</b>") == "&lt;b&gt;&amp;&quot;&#x27;&lt;/b&gt;"
    assert escape(None) == ""
    assert "//" not in escape("see http://example.com") and "http:&#47;&#47;example.com" in escape("http://example.com")
    assert "@import" not in escape("@import x")
    assert escape(Markup("<strong>1</strong>")) == "<strong>1</strong>"


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"), (1234567, "1,234,567"), (0.97123, "0.9712"), (1234.5678, "1,235"), (12.3456, "12.35"),
    (1e-7, "1.000e-07"), (None, "–"), (float("nan"), "–"), (True, "yes"), ("<a>", "&lt;a&gt;"),
])
def test_number_formats_for_reading(value: object, text: str) -> None:
    assert number(value) == text


def test_table_escapes_cells_and_right_aligns_numbers() -> None:
    html = table(["name", "<value>"], [["<i>x</i>", 0.5], [Markup("<em>y</em>"), None]], caption="a & b")
    assert "<th>&lt;value&gt;</th>" in html and "<td>&lt;i&gt;x&lt;/i&gt;</td>" in html
    assert '<td class="number">0.5</td>' in html and '<td class="number">–</td>' in html
    assert "<td><em>y</em></td>" in html and "<caption>a &amp; b</caption>" in html
    assert "<th>k</th><td>v</td>" in key_values({"k": "v"})


def test_page_has_contents_and_sections_in_order_and_references_nothing() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\xff" * 300  # base64 of this has '//' runs: they must not count
    assert "//" in base64.b64encode(png).decode()
    document = page("A <title>", [Section("one", "First & best", image(png, "alt <x>", caption="c")),
                                  Section("two-b", "Second", details("more", "<p>hidden</p>"))], subtitle="sub")
    assert document.startswith("<!doctype html>") and "<title>A &lt;title&gt;</title>" in document
    assert document.index('href="#one"') < document.index('href="#two-b"') < document.index('<section id="one">')
    assert '<h2>First &amp; best</h2>' in document and 'alt="alt &lt;x&gt;"' in document
    assert external_references(document) == []


@pytest.mark.parametrize("snippet", [
    '<img src="http://x/a.png">', '<img src="//cdn.example/a.png">', '<script src="a.js"></script>',
    '<link rel="stylesheet" href="a.css">', "<style>@import 'a.css';</style>", "<div style=\"background: url(a.png)\">",
    '<a href="https://example.com">x</a>', '<img src="plots/a.png">', "<iframe></iframe>",
])
def test_external_references_finds_each_kind(snippet: str) -> None:
    assert external_references(f"<p>ok</p>{snippet}<p>ok</p>"), snippet


def test_section_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        Section("Bad Id", "t", "")
    with pytest.raises(ValueError, match=r"\['a'\] appear more than once"):
        page("t", [Section("a", "1", ""), Section("a", "2", "")])
