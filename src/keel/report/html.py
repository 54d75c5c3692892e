"""The self-contained HTML page: inline CSS, images as data URIs, no script and no external reference.

Every helper escapes the user strings it is given (column names, class labels, notes), so a body
built only from these helpers is safe to put in ``Section.body``. The page opens offline, from a
mail attachment or a CI artifact, exactly as it was written.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1d2330; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
header h1 { margin: 0 0 4px; font-size: 26px; overflow-wrap: anywhere; }
.subtitle { margin: 0 0 18px; color: #555d6e; }
nav { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 10px 18px; margin-bottom: 22px; }
nav h2 { margin: 0 0 4px; font-size: 15px; }
nav ol { margin: 0; padding-left: 20px; columns: 3 220px; }
nav a, section a { color: #0b5cad; text-decoration: none; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 14px 22px 18px;
          margin-bottom: 22px; }
section h2 { margin: 0 0 10px; font-size: 20px; border-bottom: 1px solid #eceef2; padding-bottom: 6px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
figure { margin: 10px 0 16px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: #555d6e; font-size: 13px; margin-top: 6px; text-align: center; }
.table { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: #555d6e; padding-bottom: 4px; caption-side: top; }
th, td { border-bottom: 1px solid #eceef2; padding: 4px 10px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; max-width: 420px; }
th { background: #f1f3f6; font-weight: 600; }
td.number { text-align: right; white-space: nowrap; }
tr:hover td { background: #fafbfc; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #0b5cad; }
pre { background: #f6f7f9; border: 1px solid #eceef2; padding: 10px; overflow-x: auto; font-size: 12px; }
.note { color: #555d6e; font-size: 13px; }
.warning { color: #8a4b00; }
.columns { display: flex; flex-wrap: wrap; gap: 0 36px; align-items: flex-start; }
.columns > div > h3:first-child { margin-top: 8px; }
footer { color: #7a8294; font-size: 12px; text-align: center; }
@media print { body { background: #fff; } section, nav { break-inside: avoid-page; border: none; } }
"""


class Markup(str):
    """A trusted HTML fragment: helpers insert it as is instead of escaping it."""


@dataclass(frozen=True)
class Section:
    """One section of a page.

    Attributes:
        id: The stable anchor (``overview``, ``roc-pr``): lowercase letters, digits and dashes.
        title: Plain text; ``page`` escapes it.
        body: Trusted HTML, built with this module's helpers (they escape every user string).
    """

    id: str
    title: str
    body: str

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"section id {self.id!r} is not lowercase letters, digits and dashes; "
                             "pick an id like 'learning-curves'.")


def page(title: str, sections: Sequence[Section], *, subtitle: str | None = None) -> str:
    """A whole HTML document: title, table of contents, then the sections in order.

    Args:
        title: The page title (plain text).
        sections: The sections, in reading order; their ids must be distinct.
        subtitle: A line under the title (plain text), or None.

    Returns:
        The document, self-contained (inline CSS, no script, nothing fetched).

    Raises:
        ValueError: Two sections share an id.
    """
    ids = [section.id for section in sections]
    repeated = sorted({id_ for id_ in ids if ids.count(id_) > 1})
    if repeated:
        raise ValueError(f"section ids must be distinct; {repeated} appear more than once.")
    contents = "".join(f'<li><a href="#{section.id}">{escape(section.title)}</a></li>' for section in sections)
    body = "\n".join(f'<section id="{section.id}">\n<h2>{escape(section.title)}</h2>\n{section.body}\n</section>'
                     for section in sections)
    subtitle_html = f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else ""
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{escape(title)}</h1>{subtitle_html}</header>\n"
        f'<nav id="contents"><h2>Contents</h2><ol>{contents}</ol></nav>\n'
        f"{body}\n<footer>Made by keel. This page is one file: it needs no network and no script.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def escape(value: object) -> str:
    """``value`` as HTML text: markup characters escaped, None as an empty string.

    A ``//`` or ``@import`` in user text is written with character references, so that the page
    text never looks like a reference to something outside it (it reads the same in a browser).

    Args:
        value: Anything; ``str(value)`` is shown.

    Returns:
        Escaped text.
    """
    if value is None:
        return ""
    if isinstance(value, Markup):
        return str(value)
    return html.escape(str(value), quote=True).replace("//", "&#47;&#47;").replace("@import", "&#64;import")


def number(value: object, digits: int = 4) -> str:
    """A readable number: thousands separators for integers, ``digits`` significant digits otherwise.

    Args:
        value: A number, a bool, None or anything else.
        digits: Significant digits of a float.

    Returns:
        Escaped text: ``–`` for None and NaN, ``yes``/``no`` for bools, the escaped ``str`` otherwise.
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value != 0 and (abs(value) >= 1e15 or abs(value) < 1e-4):
            return f"{value:.{max(digits - 1, 0)}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:,.{digits}g}"
    return escape(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _cell(value: object, digits: int) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if _is_number(value) or value is None:
        return f'<td class="number">{number(value, digits)}</td>'
    return f"<td>{number(value, digits)}</td>"


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, caption: str | None = None,
          numbers: int = 4) -> str:
    """An HTML table with escaped header and cells; numbers formatted and right-aligned.

    Args:
        columns: Header texts.
        rows: One sequence of cells per row; a ``Markup`` cell is inserted as is.
        caption: A caption above the table (plain text), or None.
        numbers: Significant digits of float cells.

    Returns:
        The table, in a horizontally scrolling box for wide tables.
    """
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "\n".join("<tr>" + "".join(_cell(value, numbers) for value in row) + "</tr>" for row in rows)
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="table"><table>{caption_html}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def key_values(items: Mapping[str, object] | Iterable[tuple[str, object]], *, caption: str | None = None) -> str:
    """A two-column table of names and values.

    Args:
        items: A mapping or (name, value) pairs, shown in order.
        caption: A caption above the table, or None.

    Returns:
        The table.
    """
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    rows = "\n".join(f"<tr><th>{escape(name)}</th>{_cell(value, 4)}</tr>" for name, value in pairs)
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="table"><table>{caption_html}<tbody>\n{rows}\n</tbody></table></div>'


def image(png: bytes, alt: str, *, caption: str | None = None) -> str:
    """A figure with the PNG embedded as a data URI.

    Args:
        png: PNG file bytes.
        alt: Text for screen readers and for when the image cannot be shown.
        caption: A caption under the image (plain text), or None.

    Returns:
        The ``<figure>`` element.
    """
    data = base64.b64encode(png).decode("ascii")
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">{caption_html}</figure>'


def paragraph(text: str, *, css_class: str | None = None) -> str:
    """Escaped text in a ``<p>``; ``css_class`` may be ``note`` (small, grey) or ``warning``."""
    attribute = f' class="{escape(css_class)}"' if css_class else ""
    return f"<p{attribute}>{escape(text)}</p>"


def bullet_list(items: Iterable[str]) -> str:
    """An unordered list of escaped texts."""
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def details(summary: str, body: str) -> str:
    """A collapsed block: ``summary`` (plain text) opens ``body`` (trusted HTML)."""
    return f"<details><summary>{escape(summary)}</summary>\n{body}\n</details>"


def preformatted(text: str) -> str:
    """Escaped text in a ``<pre>`` block."""
    return f"<pre>{escape(text)}</pre>"


def heading(text: str) -> str:
    """A sub-heading inside a section (plain text)."""
    return f"<h3>{escape(text)}</h3>"


_DATA_URI = re.compile(r"data:[a-zA-Z0-9/+.-]+(;[a-zA-Z0-9=.-]+)*,[^\"')\s>]*")
_EXTERNAL = [
    re.compile(r"https?:", re.IGNORECASE),
    re.compile(r"(?:src|href|action|poster|srcset)\s*=\s*[\"']?(?![\"']?(?:#|data:))[^\s>]*", re.IGNORECASE),
    re.compile(r"<script\b[^>]*\bsrc", re.IGNORECASE),
    re.compile(r"<link\b", re.IGNORECASE),
    re.compile(r"@import", re.IGNORECASE),
    re.compile(r"url\(\s*[\"']?(?!data:)", re.IGNORECASE),
    re.compile(r"(?<![:\w])//[\w.-]+", re.IGNORECASE),  # protocol-relative //host
    re.compile(r"<(?:iframe|object|embed)\b", re.IGNORECASE),
]


def external_references(document: str) -> list[str]:
    """What in ``document`` could make a browser fetch something: empty for a self-contained page.

    Data URIs are allowed; an ``http(s)`` or protocol-relative URL anywhere, a ``src``/``href`` that
    is not ``#anchor`` or ``data:``, ``<script src``, ``<link``, ``@import``, a ``url(`` that is not
    a data URI, and ``<iframe>``/``<object>``/``<embed>`` are not.

    Args:
        document: An HTML document.

    Returns:
        Each offending snippet, in document order.
    """
    text = _DATA_URI.sub("data:,", document)
    found = []
    for pattern in _EXTERNAL:
        found += [(match.start(), text[match.start(): match.end() + 30]) for match in pattern.finditer(text)]
    return [snippet for _, snippet in sorted(found)]
