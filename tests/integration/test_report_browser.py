"""The report in a real browser: headless Chromium lays it out, draws it, and it looks like the sections.

How the page height is checked without a script in the report: the test writes a copy of the page
with a small measuring script appended (the report itself stays script-free), loads it with
``--dump-dom``, and reads back what Chromium laid out: the document height, each section's top and
height, and each image's decoded size. Then a full-page screenshot of the unmodified report, taken
at exactly that height plus a margin, must have ink down to the last section and only background
below the document's end. So the page is as tall as its sections, the sections come in order and do
not overlap, and every embedded PNG decoded in the browser.

Without Chromium on PATH the test skips and says why; it never passes without a browser.
``take_screenshot`` is the helper the README screenshot (docs/report.png) is taken with.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from keel.report import ReportInputs, build_report, section_ids
from tests.conftest import PENGUINS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")
TIMEOUT = 60
_MEASURE = """<pre id="keel-layout"></pre><script>
window.addEventListener("load", function () {
  function box(element) { var r = element.getBoundingClientRect(); return {top: r.top + window.scrollY, height: r.height}; }
  var sections = Array.prototype.map.call(document.querySelectorAll("section"), function (section) {
    var images = Array.prototype.map.call(section.querySelectorAll("img"), function (image) {
      return {complete: image.complete, width: image.naturalWidth, height: box(image).height}; });
    var b = box(section);
    return {id: section.id, top: b.top, height: b.height, images: images}; });
  var footer = box(document.querySelector("footer"));
  document.getElementById("keel-layout").textContent = JSON.stringify({
    height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
    footer: footer, sections: sections});
});
</script>"""


def find_chromium() -> str | None:
    """The first Chromium (or Chrome) on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def run_chromium(*arguments: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; raise when it is missing, fails or hangs.

    Args:
        arguments: What to do (``--dump-dom``, ``--screenshot=...``, ``--window-size=...``) and the URL.
        timeout: Seconds before it is killed.

    Returns:
        The finished process (stdout holds ``--dump-dom`` output).
    """
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="keel-chromium-") as profile:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *arguments], capture_output=True,
                              text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done


def page_layout(html: Path, width: int = 1280) -> dict[str, Any]:
    """How Chromium lays out ``html`` at ``width`` pixels: document height, sections, images (see module doc)."""
    measured = html.with_name(html.stem + ".measure.html")
    measured.write_text(html.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = run_chromium(f"--window-size={width},900", "--dump-dom", measured.resolve().as_uri()).stdout
    found = re.search(r'<pre id="keel-layout">([^<]+)</pre>', dom)
    assert found, f"the measuring script did not run; Chromium returned: {dom[:500]}"
    return json.loads(found.group(1))


def take_screenshot(html: str | Path, png: str | Path, *, width: int = 1280, height: int | None = None,
                    top: int = 0) -> Path:
    """A PNG of ``html`` as Chromium draws it (for the README's docs/report.png, too).

    Args:
        html: The page.
        png: Where the screenshot goes.
        width: Window width in pixels.
        height: Pixels of page to keep; None keeps the whole page (measured first).
        top: Where the kept part starts, in page pixels: ``page_layout(html)["sections"]`` has each
            section's top, e.g. to start the picture at the learning curves. (A ``#anchor`` in the URL
            does not scroll a headless screenshot: it comes out blank.)

    Returns:
        The screenshot's path.
    """
    html, png = Path(html).resolve(), Path(png).resolve()
    if height is None:
        height = int(page_layout(html, width)["height"]) - top
    run_chromium(f"--window-size={width},{top + height}", f"--screenshot={png}", html.as_uri())
    if top:
        with Image.open(png) as image:
            cropped = image.crop((0, top, width, top + height))
        cropped.save(png)
    return png


def penguin_report(directory: Path) -> tuple[ReportInputs, Path]:
    """A real model (penguins, fast preset, 3 epochs) saved and reported on the whole file, as
    ``keel report MODEL --data`` does: the inputs and the page ``report.html`` attached to the model."""
    import keel
    from keel.report.make import report_inputs

    model = keel.fit(PENGUINS, target="species", config={"preset": "fast", "training.epochs": 3}, quiet=True)
    model.save(directory)
    result = model.report(PENGUINS)
    assert result.html == directory / "report.html"
    return report_inputs(model, PENGUINS), result.html


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}): install the Debian package chromium "
                    "(.ci/run does) to check the report in a browser")
    return found


def test_the_report_lays_out_as_its_sections_and_draws_in_chromium(browser: str, tmp_path: Path) -> None:
    inputs, html = penguin_report(tmp_path / "model")
    report = build_report(inputs)
    layout = page_layout(html)

    sections = layout["sections"]
    assert [section["id"] for section in sections] == section_ids(inputs) == report.sections
    assert layout["width"] <= 1280, "something is wider than the window"
    for section, following in zip(sections, sections[1:]):
        bottom = section["top"] + section["height"]
        assert bottom <= following["top"] < bottom + 60, f"{section['id']} and {following['id']} overlap or drift apart"
    images = [image for section in sections for image in section["images"]]
    assert len(images) == len(report.plots)
    for section in sections:
        assert section["height"] > 80, f"{section['id']} is empty"
        assert all(image["complete"] and image["width"] > 100 and image["height"] > 100 for image in section["images"]), \
            f"an image of {section['id']} did not decode in the browser"
        assert section["height"] > sum(image["height"] for image in section["images"])
    last = sections[-1]["top"] + sections[-1]["height"]
    assert last < layout["footer"]["top"] <= layout["height"] < last + 200, "the page is not as tall as its sections"

    height = int(layout["height"])
    shot = take_screenshot(html, tmp_path / "report.png", height=height + 200)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    assert pixels.shape == (height + 200, 1280, 3)
    background = pixels[-1, 0]
    ink_rows = np.flatnonzero(np.abs(pixels - background).sum(axis=(1, 2)) > 0)
    assert last < ink_rows[-1] <= height, "the drawn page does not end where its last section (and footer) ends"
    top = pixels[: min(height, 4000)]
    assert top.var() > 100 and len(np.unique(top @ np.array([65536, 256, 1]))) > 200, "the screenshot looks blank"
