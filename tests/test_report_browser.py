"""The HTML report in a real headless browser (Debian's chromium).

The page must render offline and its cells must say what matrix.json says;
the colours are read back from the browser's computed styles.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import report, results
from harness.results import Matrix

DATA = Path(__file__).parent / "data" / "report"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium: apt-get install -y chromium (ci/install.sh "
    "installs it)",
)
# Offline and quiet: nothing in the run may reach for the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Reads each cell's computed background back into the DOM; only the test's
# copy of the page gets it: the report itself carries no script.
PROBE = """<script>
document.body.setAttribute("data-colours", JSON.stringify(
  Array.from(document.querySelectorAll("td[data-outcome]")).map(td => [
    td.dataset.row, td.dataset.column, getComputedStyle(td).backgroundColor])));
</script>
"""


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless chromium with a fresh profile; its stdout."""
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class Cells(HTMLParser):
    """The matrix cells of a dumped DOM: (row, column) -> what they show."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.current: dict[str, str] | None = None
        self.part = ""
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        if tag == "td" and found.get("data-row"):
            self.current = {"outcome_attr": found.get("data-outcome") or ""}
            key = (found["data-row"] or "", found.get("data-column") or "")
            self.cells[key] = self.current
        elif self.current is not None and tag in ("span", "a"):
            self.part = "link" if tag == "a" else (found.get("class") or "")
            if tag == "a":
                self.current["links"] = self.current.get("links", "") + "|"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.current = None
        self.part = ""

    def handle_data(self, data: str) -> None:
        if self.current is not None and self.part:
            key = "links" if self.part == "link" else self.part
            self.current[key] = self.current.get(key, "") + data


@pytest.fixture(scope="module")
def recorded() -> Matrix:
    """The recorded matrix of the golden tests."""
    return results.load(DATA / "input.json")


@pytest.fixture
def page(tmp_path: Path, recorded: Matrix) -> Path:
    """The HTML report as `harness report merge` writes it."""
    report.write_reports(recorded, tmp_path / "reports", base="..")
    return tmp_path / "reports" / "matrix.html"


def test_cells_in_the_browser_say_what_the_json_says(
    tmp_path: Path, page: Path
) -> None:
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    parsed = Cells()
    parsed.feed(dom)
    data = json.loads((page.parent / "matrix.json").read_text())
    assert data["cells"], "the recorded matrix has cells"
    for cell in data["cells"]:
        shown = parsed.cells[(cell["row"], cell["column"])]
        assert shown["outcome_attr"] == cell["outcome"]
        assert shown["outcome"] == cell["outcome"]
        assert shown.get("reason", "") == cell["reason"]
        assert shown.get("links", "").count("|") == len(cell["artefacts"])
    filled = {k for k, v in parsed.cells.items() if v["outcome_attr"]}
    assert filled == {(c["row"], c["column"]) for c in data["cells"]}
    for col in data["columns"]:
        assert col["kernel_version"] in dom and col["accelerator"] in dom


def test_outcomes_are_coloured(tmp_path: Path, page: Path, recorded: Matrix) -> None:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    parsed = Cells()
    parsed.feed(chromium(tmp_path, "--dump-dom", probe.as_uri()))
    colours = json.loads(parsed.body["data-colours"] or "[]")
    by_outcome: dict[str, set[str]] = {}
    for row, column, colour in colours:
        cell = recorded.cell(row, column)
        outcome = cell.outcome if cell else "none"
        by_outcome.setdefault(outcome, set()).add(colour)
    assert by_outcome["pass"] == {"rgb(218, 251, 225)"}
    assert by_outcome["fail"] == {"rgb(255, 193, 192)"}
    each = [next(iter(v)) for v in by_outcome.values()]
    assert all(len(v) == 1 for v in by_outcome.values())
    assert len(set(each)) == len(each), by_outcome


def test_page_renders_to_a_screenshot(tmp_path: Path, page: Path) -> None:
    shot = tmp_path / "matrix.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 900)
    # A blank page compresses to a few hundred bytes; a table does not.
    assert len(data) > 20_000
