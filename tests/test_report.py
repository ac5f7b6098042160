"""Rendering the matrix: golden Markdown, HTML and JSON, escaping, atomic writes.

The input, tests/data/report/input.json, merges two recorded runs: the
file-access scenarios, a canary scenario whose policy names a missing
function, their hook checks and a `vm` test on 6.1 and 6.12 x86_64 (firing
mode, TCG); and target tests of every outcome but xpass on 6.1 and 6.12, both
arches. HARNESS_REGEN_GOLDEN=1 rewrites the golden files."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import pytest
from goldenfile import assert_golden

from harness import report, report_cli, results
from harness.errors import HarnessError
from harness.results import Cell, Column, Matrix

DATA = Path(__file__).parent / "data" / "report"


def golden(name: str, text: str) -> None:
    """Compare with tests/data/report/NAME; HARNESS_REGEN_GOLDEN=1 rewrites it."""
    assert_golden(DATA / name, text)


@pytest.fixture(scope="module")
def recorded() -> Matrix:
    """The recorded matrix."""
    return results.load(DATA / "input.json")


def changed(m: Matrix) -> Matrix:
    """The recorded matrix with etc-read failing on 6.12 and xfails passing."""
    cells = []
    for c in m.cells:
        if c.row.endswith("::etc-read") and c.column == "6.12-x86_64":
            c = replace(c, outcome="fail", reason="SILENT kprobe fd_install")
        if c.outcome == "xfail":
            c = replace(c, outcome="xpass", reason="known bug")
        cells.append(c)
    return results.build(m.columns, cells)


def test_recorded_input_covers_every_outcome(recorded: Matrix) -> None:
    seen = {c.outcome for c in recorded.cells}
    assert seen >= {"pass", "fail", "xfail", "skip", "warning"}
    assert any(c.artefacts for c in recorded.cells)


def test_markdown_golden(recorded: Matrix) -> None:
    golden("matrix.md", report.render_markdown(recorded, base=".."))


def test_html_golden(recorded: Matrix) -> None:
    golden("matrix.html", report.render_html(recorded, base=".."))


def test_json_golden(recorded: Matrix) -> None:
    golden("matrix.json", results.dumps(recorded))


def test_diff_golden(recorded: Matrix) -> None:
    d = results.diff(recorded, changed(recorded))
    golden("diff.md", report.render_diff_markdown(d))
    golden("diff.txt", "\n".join(report.diff_lines(d)) + "\n")


def test_column_headers_name_kernel_version_arch_accelerator_and_agent(
    recorded: Matrix,
) -> None:
    md = report.render_markdown(recorded)
    col = recorded.columns[0]
    head = next(line for line in md.splitlines() if line.startswith("|  |"))
    assert col.kernel in head and col.kernel_version in head and col.accelerator in head
    assert "none (firing check)" in head
    html = report.render_html(recorded)
    assert f'<div class="meta version">{col.kernel_version}</div>' in html
    assert col.kernel_release in html
    assert '<div class="meta agent">none (firing check)</div>' in html


def with_agents(m: Matrix, agents: dict[str, str]) -> Matrix:
    """The matrix with each named column's agent replaced."""
    cols = [replace(c, agent=agents.get(c.id, c.agent)) for c in m.columns]
    return results.build(cols, m.cells)


def test_every_report_says_which_mode_ran(recorded: Matrix) -> None:
    firing = report.mode(recorded)
    assert firing.startswith("mode: no agent: scenarios ran as firing checks")
    assert report.md_escape(firing) in report.render_markdown(recorded)
    assert f'<p class="mode">{firing}</p>' in report.render_html(recorded)
    assert firing.endswith("; policies had their hooks checked")
    # Plain `vm` tests (the harness's own) are neither scenarios nor hook checks.
    plain = [replace(c, properties=()) for c in recorded.cells]
    assert report.mode(results.build(recorded.columns, plain)) == "mode: no agent"

    agent = with_agents(recorded, {c.id: "tetragon v1.7.0" for c in recorded.columns})
    assert report.mode(agent) == "mode: events asserted by tetragon v1.7.0"

    mixed = with_agents(recorded, {"6.1-arm64": "tetragon v1.7.0"})
    assert report.mode(mixed) == (
        "mode: events asserted by tetragon v1.7.0; firing checks without an agent "
        "on 6.1-x86_64, 6.12-arm64, 6.12-x86_64"
    )
    both = results.merge([recorded, agent])
    assert report.mode(both) == (
        "mode: events asserted by tetragon v1.7.0; firing checks without an agent "
        "on 6.1-arm64, 6.1-x86_64, 6.12-arm64, 6.12-x86_64"
    )


def test_a_column_reports_the_agent_its_cells_ran_with(recorded: Matrix) -> None:
    # Hook checks run before the agent starts; the column names the agent anyway.
    cells = [
        replace(c, properties=(("agent", results.AGENT_NOT_STARTED),))
        if c.row.endswith("::hooks")
        else replace(c, properties=(("agent", "tetragon v1.7.0"),))
        for c in recorded.cells
    ]
    columns = [replace(c, agent="") for c in recorded.columns]
    reread = results.from_json(results.to_json(results.build(columns, cells)))
    assert {c.agent for c in reread.columns} == {"tetragon v1.7.0"}


def test_html_needs_no_network(recorded: Matrix) -> None:
    html = report.render_html(recorded)
    for needle in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert needle not in html
    assert "<style>" in html


def test_text_from_the_run_is_escaped() -> None:
    cell = Cell("t.py::x", "6.1-x86_64", "fail", "got <script>a|b</script> *x*")
    m = results.build([Column("6.1", "x86_64", "6.1.1-1", "6.1.0", "kvm")], [cell])
    md = report.render_markdown(m)
    assert "got \\<script\\>a\\|b\\</script\\> \\*x\\*" in md
    html = report.render_html(m)
    assert "&lt;script&gt;a|b&lt;/script&gt;" in html and "<script>" not in html


def test_artefact_links_are_relative_to_the_report() -> None:
    assert report.link("artefacts/6.1-x86_64/vm/console.log", "..") == (
        "../artefacts/6.1-x86_64/vm/console.log"
    )
    assert report.link("a b/c.log", ".") == "a%20b/c.log"
    assert report.link("/abs/x.log", "..") == "file:///abs/x.log"
    assert report.link_base(Path("/w"), Path("/w/reports/merged")) == "../.."


def test_a_large_matrix_fits_a_step_summary() -> None:
    columns = [Column(k, a, "1.0-1", "r", "tcg") for k in "abcd" for a in ("x", "y")]
    cells = [
        Cell(
            f"scenarios/s{i}.yaml::case", c.id, "fail", "x" * 200, artefacts=("a",) * 5
        )
        for i in range(400)
        for c in columns
    ]
    md = report.render_markdown(results.build(columns, cells))
    assert len(md.encode()) < 1024 * 1024
    assert f"… and {400 * 8 - report.MAX_DETAILS} more: see matrix.html" in md


def test_an_empty_run_says_so() -> None:
    assert "No test ran on a kernel target." in report.render_markdown(Matrix())
    assert "No test ran on a kernel target." in report.render_html(Matrix())


def test_reports_are_replaced_whole(
    tmp_path: Path, recorded: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = report.write_reports(recorded, tmp_path)
    assert [p.name for p in paths] == ["matrix.json", "matrix.md", "matrix.html"]
    before = {p.name: p.read_bytes() for p in paths}

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_reports(Matrix(), tmp_path)
    assert {p.name: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def cli(*argv: str) -> int:
    """Run a `harness report` subcommand through its parser."""
    parser = argparse.ArgumentParser()
    report_cli.add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_report_diff_command_exits_1_on_a_regression(
    tmp_path: Path, recorded: Matrix, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(results.dumps(recorded))
    after.write_text(results.dumps(changed(recorded)))
    assert cli("report", "diff", str(before), str(after)) == 1
    assert "newly failing (1):" in capsys.readouterr().out
    assert cli("report", "diff", str(before), str(before)) == 0
    assert capsys.readouterr().out == "no change from the baseline\n"


def test_report_merge_names_missing_shards(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"no such matrix file: .*absent\.json"):
        cli("report", "merge", str(tmp_path / "absent.json"), "-o", str(tmp_path))
