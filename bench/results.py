"""bench/RESULTS.md holds one section per benchmark script; each script rewrites only its own."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace section ``name`` of ``path`` with ``text`` (appending it when absent), keeping the others."""
    block = f"<!-- section:{name} -->\n{text.strip()}\n<!-- /section:{name} -->\n"
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- /section:{re.escape(name)} -->\n?", re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + ("\n\n" if current.strip() else "") + block
    path.write_text(updated)
