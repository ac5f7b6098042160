"""The results matrix: cells from pytest reports, JSON, merging shards, diffs."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import results
from harness.errors import ConfigError
from harness.results import Cell, Collector, Column, Matrix


def props(kernel: str = "6.1", arch: str = "x86_64", **extra: str) -> list[Any]:
    """The properties a target's item carries."""
    version = {"5.10": "5.10.223-1", "6.1": "6.1.176-1", "6.12": "6.12.117-1"}
    base = {
        "kernel": kernel,
        "kernel_version": version.get(kernel, "7.2.13-1"),
        "kernel_release": f"{kernel}.0-cloud",
        "arch": arch,
        "accelerator": "kvm",
    }
    return list((base | extra).items())


def report(
    nodeid: str,
    when: str,
    outcome: str,
    longrepr: Any = None,
    properties: Sequence[Any] = (),
    **extra: Any,
) -> pytest.TestReport:
    """A real pytest report, as a worker would send it."""
    return pytest.TestReport(
        nodeid, ("x.py", 0, nodeid), {}, outcome, longrepr, when,  # type: ignore[arg-type]
        duration=0.5, user_properties=list(properties), **extra,
    )  # fmt: skip


def run_item(
    collector: Collector,
    nodeid: str,
    setup: str = "passed",
    call: str | None = "passed",
    teardown: str = "passed",
    properties: Sequence[Any] = (),
    **kw: Any,
) -> None:
    """Feed one item's setup/call/teardown reports, as pytest would."""
    skip = ("x.py", 3, "Skipped: no bpf LSM on this kernel")
    collector.add(report(nodeid, "setup", setup, kw.get("setup_repr", skip)))
    if call is not None:
        extra = {"wasxfail": kw["wasxfail"]} if "wasxfail" in kw else {}
        collector.add(report(nodeid, "call", call, kw.get("call_repr"), **extra))
    collector.add(
        report(nodeid, "teardown", teardown, kw.get("teardown_repr"), properties)
    )


ID = "scenarios/file-access.yaml::etc-read[6.1-x86_64]"


@pytest.mark.parametrize(
    ("nodeid", "column", "row"),
    [
        (ID, "6.1-x86_64", "scenarios/file-access.yaml::etc-read"),
        ("t.py::test_x[6.12-arm64]", "6.12-arm64", "t.py::test_x"),
        ("t.py::test_x[a-6.1-arm64]", "6.1-arm64", "t.py::test_x[a]"),
        ("t.py::test_x[6.1-arm64-b]", "6.1-arm64", "t.py::test_x[b]"),
        ("t.py::test_x", "6.1-arm64", "t.py::test_x"),
        ("policies/p.yaml::hooks[7.x-x86_64]", "7.x-x86_64", "policies/p.yaml::hooks"),
    ],
)
def test_rows_drop_the_target_from_the_test_id(
    nodeid: str, column: str, row: str
) -> None:
    assert results.row_id(nodeid, column) == row


def test_columns_sort_by_kernel_version_then_arch() -> None:
    names = ["7.x", "6.12", "5.10", "6.1"]
    cols = [Column(k, a) for k in names for a in ("x86_64", "arm64")]
    got = [c.id for c in results.build(cols, ()).columns]
    assert got == [
        "5.10-arm64", "5.10-x86_64", "6.1-arm64", "6.1-x86_64",
        "6.12-arm64", "6.12-x86_64", "7.x-arm64", "7.x-x86_64",
    ]  # fmt: skip


def test_every_outcome_from_real_reports() -> None:
    c = Collector()
    base = "scenarios/s.yaml::"
    scenario_text = (
        f"{base}bad[6.1-x86_64]\n1 expectation(s) not met\netc-shadow: process_kprobe"
        "\n  not seen\nartefacts: artefacts/6.1-x86_64/s/bad"
    )
    run_item(c, base + "ok[6.1-x86_64]", properties=props())
    run_item(c, base + "bad[6.1-x86_64]", call="failed", call_repr=scenario_text,
             properties=props())  # fmt: skip
    run_item(
        c, base + "lsm[6.1-x86_64]", setup="skipped", call=None, properties=props()
    )
    run_item(c, base + "known[6.1-x86_64]", call="skipped", wasxfail="bug 12",
             properties=props())  # fmt: skip
    run_item(c, base + "fixed[6.1-x86_64]", wasxfail="bug 13", properties=props())
    # Harness errors in setup and teardown, as the plugin words them.
    boot = (
        f"{base}boot[6.1-x86_64]\n6.1-x86_64: no readiness within 300 s (tcg)\n"
        "--- console tail ---\n[    0.000000] Linux version 6.1.0-50-cloud-amd64"
    )
    run_item(c, base + "boot[6.1-x86_64]", setup="failed", call=None,
             setup_repr=boot, properties=props())  # fmt: skip
    run_item(c, base + "td[6.1-x86_64]", teardown="failed",
             teardown_repr=f"{base}td[6.1-x86_64]\nthe VM is not running",
             properties=props())  # fmt: skip
    warn = props(outcome="warning", reason="kprobe x: reads the wrong arg")
    run_item(c, base + "warn[6.1-x86_64]", properties=warn)
    run_item(c, "tests/test_plain.py::test_no_target")
    m = c.matrix()

    got = {row.split("::")[1]: m.cell(row, "6.1-x86_64") for row in m.rows}
    outcome = {k: v.outcome for k, v in got.items() if v}
    assert outcome == {
        "ok": "pass", "bad": "fail", "lsm": "skip", "known": "xfail", "fixed": "xpass",
        "boot": "fail", "td": "fail", "warn": "warning",
    }  # fmt: skip
    reason = {k: v.reason for k, v in got.items() if v}
    assert reason["bad"] == "1 expectation(s) not met — etc-shadow: process_kprobe"
    assert reason["lsm"] == "no bpf LSM on this kernel"
    assert reason["known"] == "bug 12"
    assert reason["boot"] == "setup: 6.1-x86_64: no readiness within 300 s (tcg)"
    assert reason["td"] == "teardown: the VM is not running"
    assert reason["warn"] == "kprobe x: reads the wrong arg"
    assert c.seen == 9 and len(m.cells) == 8
    assert m.columns == (Column("6.1", "x86_64", "6.1.176-1", "6.1.0-cloud", "kvm"),)
    assert got["ok"] is not None and got["ok"].prop("accelerator") == "kvm"


def test_an_item_without_teardown_makes_no_cell() -> None:
    c = Collector()
    c.add(report(ID, "setup", "passed"))
    c.add(report(ID, "call", "passed"))
    assert c.matrix().cells == ()
    assert c.matrix().incomplete


def test_reasons_are_one_short_line() -> None:
    c = Collector()
    long = "x" * 500 + "\nsecond line"
    run_item(c, ID, call="failed", call_repr=f"{ID}\n{long}", properties=props())
    (cell,) = c.matrix().cells
    assert "\n" not in cell.reason
    assert len(cell.reason) == results.REASON_MAX and cell.reason.endswith("…")


def sample() -> Matrix:
    """Three kernels, two arches, a row per outcome, and a dropped cell."""
    cells = []
    outcomes = ["pass", "fail", "xfail", "xpass", "skip", "warning"]
    for kernel, arch in itertools.product(("5.10", "6.1", "6.12"), ("x86_64", "arm64")):
        for i, outcome in enumerate(outcomes):
            row = f"scenarios/s.yaml::case-{i}"
            if (kernel, arch, i) == ("6.12", "arm64", 0):
                continue
            p = tuple(sorted(dict(props(kernel, arch, mode="firing")).items()))
            cells.append(
                Cell(row, f"{kernel}-{arch}", outcome,  # type: ignore[arg-type]
                     f"because {i}", f"{row}[{kernel}-{arch}]", 1.25,
                     (f"artefacts/{kernel}-{arch}/vm/console.log",), p)
            )  # fmt: skip
    columns = [
        Column(k, a, dict(props(k))["kernel_version"], f"{k}.0-cloud", "kvm")
        for k, a in itertools.product(("5.10", "6.1", "6.12"), ("x86_64", "arm64"))
    ]
    return results.build(columns, cells)


def shard(m: Matrix, keep: str) -> Matrix:
    """The part of a matrix one CI job (one column) would have produced."""
    return results.build(
        [c for c in m.columns if c.id == keep], [c for c in m.cells if c.column == keep]
    )


def test_json_round_trip_is_exact_and_stable(tmp_path: Path) -> None:
    m = sample()
    text = results.dumps(m)
    path = tmp_path / "matrix.json"
    path.write_text(text)
    again = results.load(path)
    assert again == m
    assert results.dumps(again) == text
    data = json.loads(text)
    assert data["kind"] == "harness-matrix" and data["format"] == 1
    assert data["rows"] == list(m.rows)


def test_merging_shards_in_any_order_gives_the_whole() -> None:
    whole = sample()
    shards = [shard(whole, c.id) for c in whole.columns]
    for order in itertools.permutations(shards[:4]):
        rest = results.merge(shards[4:])
        assert results.merge([*order, rest]) == whole
    merged = results.merge(reversed(shards))
    assert results.dumps(merged) == results.dumps(whole)


def test_the_same_cell_in_two_shards_keeps_the_worse_either_way() -> None:
    whole = sample()
    cell = whole.cells[0]
    rerun = Matrix(whole.columns, (replace(cell, outcome="fail", reason="flaky"),))
    for order in ([whole, rerun], [rerun, whole]):
        got = results.merge(order).cell(cell.row, cell.column)
        assert got is not None and got.outcome == "fail" and got.reason == "flaky"


def test_shards_that_resolved_different_versions_show_both() -> None:
    a = Matrix((Column("6.1", "x86_64", "6.1.176-1", "r", "kvm"),))
    b = Matrix((Column("6.1", "x86_64", "6.1.170-1", "r", "tcg"),))
    for order in ([a, b], [b, a]):
        (col,) = results.merge(order).columns
        assert col.kernel_version == "6.1.170-1, 6.1.176-1"
        assert col.accelerator == "kvm, tcg"


def test_interrupted_shard_marks_the_merge_incomplete() -> None:
    whole = sample()
    assert results.merge([whole, replace(Matrix(), incomplete=True)]).incomplete


def test_malformed_matrix_lists_every_problem(tmp_path: Path) -> None:
    data = results.to_json(sample())
    data["cells"][0]["outcome"] = "passed"
    del data["cells"][2]["row"]
    data["columns"][1] = "6.1"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        results.load(path)
    text = str(info.value)
    assert "3 problem(s)" in text
    assert f"{path}: cells[0].outcome: 'passed' is not an outcome" in text
    assert "cells[2]: missing or not text: row" in text
    assert "columns[1]: must be a mapping" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"kind": "junit"}', "not a harness-matrix document"),
        ('{"kind": "harness-matrix", "format": 9}', "format 9; this harness reads"),
    ],
)
def test_not_a_matrix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        results.load(path)


def test_diff_lists_changes_per_kernel_and_arch() -> None:
    base = sample()
    cells = {(c.row, c.column): c for c in base.cells}
    row0, row1, row4 = (f"scenarios/s.yaml::case-{i}" for i in (0, 1, 4))
    cells[(row0, "6.1-arm64")] = replace(
        cells[(row0, "6.1-arm64")], outcome="fail", reason="SILENT"
    )
    cells[(row1, "5.10-x86_64")] = replace(cells[(row1, "5.10-x86_64")], outcome="pass")
    cells[(row0, "6.12-x86_64")] = replace(cells[(row0, "6.12-x86_64")], outcome="skip")
    del cells[(row4, "5.10-arm64")]
    new_fail = Cell("scenarios/new.yaml::x", "6.1-x86_64", "fail", "new and broken")
    new_pass = Cell("scenarios/new.yaml::y", "6.1-x86_64", "pass")
    current = results.build(base.columns, [*cells.values(), new_fail, new_pass])

    d = results.diff(base, current)
    failing = [(c.column, c.row, c.before) for c in d.of("newly failing")]
    assert failing == [
        ("6.1-arm64", row0, "pass"),
        ("6.1-x86_64", "scenarios/new.yaml::x", ""),
    ]
    assert [(c.column, c.row) for c in d.of("newly passing")] == [("5.10-x86_64", row1)]
    assert [(c.column, c.row) for c in d.of("newly skipped")] == [("6.12-x86_64", row0)]
    assert [(c.column, c.row) for c in d.of("missing")] == [("5.10-arm64", row4)]
    assert d.regressed and d.columns[0] == "5.10-arm64"
    assert results.diff(base, base).changes == ()
