"""The results matrix: rows are scenario cases, tests or policies, columns targets.

Built from pytest reports (on the xdist controller, from what the workers
send), kept as JSON, merged from shards and compared with a baseline. Nothing
here depends on the order reports or shards arrive in: rows, columns and cells
are sorted, and when two shards hold the same cell the choice between them is
made on the cells' contents alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from harness.errors import CONSOLE_TAIL, ConfigError, Problem

Outcome = Literal["pass", "fail", "xfail", "xpass", "skip", "warning"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
# When two shards ran the same cell, the worse result stands: a rerun must not
# hide a failure, whichever shard is read first.
RANK: dict[str, int] = {
    "fail": 0,
    "xpass": 1,
    "warning": 2,
    "xfail": 3,
    "pass": 4,
    "skip": 5,
}
FORMAT = 1
KIND = "harness-matrix"
# Properties that describe the column (the target), not the cell.
COLUMN_FACTS = ("kernel_version", "kernel_release", "accelerator", "agent")
# The `agent` property of a run without --tetragon, and of a cell that ran
# before its target's agent started (a hook check needs no agent).
AGENT_NONE = "none (firing check)"
AGENT_NOT_STARTED = "tetragon (not started on this target)"
REASON_MAX = 200
# Lines of a plain-text failure that the cell shows elsewhere (its links).
SAID = ("artefacts: ",)


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts `5.10` before `6.1` before `6.12` before `7.x`."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", text)
        if part
    )


def one_line(text: str, limit: int = REASON_MAX) -> str:
    """Whitespace collapsed, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Column:
    """One target: a kernel on an arch, with the facts that identify the build."""

    kernel: str
    arch: str
    kernel_version: str = ""
    kernel_release: str = ""
    accelerator: str = ""
    agent: str = ""

    @property
    def id(self) -> str:
        """`6.1-arm64`, as in test ids."""
        return f"{self.kernel}-{self.arch}"

    @property
    def agents(self) -> tuple[str, ...]:
        """Each agent the column ran (a merged column joins its shards' with commas)."""
        return tuple(a for a in self.agent.split(", ") if a)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """Kernels in version order, then arch."""
        return (natural_key(self.kernel), self.arch)


@dataclass(frozen=True)
class Cell:
    """One row on one column: the outcome, why, and where the evidence is."""

    row: str
    column: str
    outcome: Outcome
    reason: str = ""
    nodeid: str = ""
    duration: float = 0.0
    artefacts: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str, default: str = "") -> str:
        """A property's value (the last one recorded), or `default`."""
        return dict(self.properties).get(name, default)


@dataclass(frozen=True)
class Matrix:
    """Cells by row and column; `incomplete` when the run was interrupted."""

    columns: tuple[Column, ...] = ()
    cells: tuple[Cell, ...] = ()
    incomplete: bool = False
    _index: dict[tuple[str, str], Cell] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._index.update({(c.row, c.column): c for c in self.cells})

    @property
    def rows(self) -> tuple[str, ...]:
        """Row ids in natural order."""
        return tuple(sorted({c.row for c in self.cells}, key=natural_key))

    def column(self, column_id: str) -> Column | None:
        """The column with this id, if the matrix has it."""
        return next((c for c in self.columns if c.id == column_id), None)

    def cell(self, row: str, column_id: str) -> Cell | None:
        """The cell of a row on a column, or None if that item did not run."""
        return self._index.get((row, column_id))

    def counts(self, column_id: str | None = None) -> dict[str, int]:
        """How many cells have each outcome (on one column, or overall)."""
        found: dict[str, int] = {o: 0 for o in OUTCOMES}
        for c in self.cells:
            if column_id is None or c.column == column_id:
                found[c.outcome] += 1
        return found

    def outcomes(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(row, column) -> (outcome, reason): what two runs must agree on."""
        return {(c.row, c.column): (c.outcome, c.reason) for c in self.cells}


def build(
    columns: Iterable[Column], cells: Iterable[Cell], incomplete: bool = False
) -> Matrix:
    """A matrix in canonical order; columns are merged by id, cells by position."""
    by_id: dict[str, list[Column]] = {}
    for col in columns:
        by_id.setdefault(col.id, []).append(col)
    merged = sorted((_merge_column(cols) for cols in by_id.values()), key=_col_key)
    chosen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        key = (cell.row, cell.column)
        if key not in chosen or _cell_key(cell) < _cell_key(chosen[key]):
            chosen[key] = cell
    for col_id in {c.column for c in chosen.values()} - set(by_id):
        kernel, _, arch = col_id.rpartition("-")
        merged.append(Column(kernel, arch))
    ordered = sorted(
        chosen.values(), key=lambda c: (natural_key(c.row), natural_key(c.column))
    )
    return Matrix(tuple(sorted(merged, key=_col_key)), tuple(ordered), incomplete)


def _col_key(col: Column) -> tuple[Any, ...]:
    return col.sort_key


def _cell_key(cell: Cell) -> tuple[int, str]:
    return RANK[cell.outcome], json.dumps(_cell_json(cell), sort_keys=True)


def _merge_column(cols: Sequence[Column]) -> Column:
    # Shards that resolved different package versions (an archive update
    # between jobs) or ran on different accelerators show every value seen.
    def joined(name: str) -> str:
        values = {getattr(c, name) for c in cols} - {""}
        if name == "agent" and len(values) > 1:
            # The cells before the agent started say nothing about which one ran.
            values.discard(AGENT_NOT_STARTED)
        return ", ".join(sorted(values, key=natural_key))

    first = cols[0]
    return Column(first.kernel, first.arch, *(joined(n) for n in COLUMN_FACTS))


def merge(shards: Iterable[Matrix]) -> Matrix:
    """One matrix from shards, the same whatever their order."""
    shards = list(shards)
    return build(
        (c for m in shards for c in m.columns),
        (c for m in shards for c in m.cells),
        any(m.incomplete for m in shards),
    )


# -- from pytest reports ------------------------------------------------------


def row_id(nodeid: str, column_id: str) -> str:
    """The node id with the target's part of its parameters removed."""
    head, bracket, params = nodeid.partition("[")
    if not bracket or not params.endswith("]"):
        return nodeid
    params = params[:-1]
    if params == column_id:
        return head
    for form in (f"-{column_id}", f"{column_id}-"):
        if form in params:
            return f"{head}[{params.replace(form, '', 1)}]"
    return nodeid


def _failure_line(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).strip().splitlines()[0] if crash.message else ""
    if isinstance(longrepr, tuple):
        return str(longrepr[2])
    # Plain-text failures (scenario items, harness errors in setup) start with
    # the node id; the next two lines say what went wrong and on which
    # expectation. A boot error's console tail is the console log's, linked.
    text = str(longrepr).split(f"\n{CONSOLE_TAIL}\n", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln != report.nodeid and not ln.startswith(SAID)]
    return " — ".join(lines[:2])


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return _failure_line(report)


@dataclass
class _Pending:
    outcome: Outcome | None = None
    reason: str = ""
    duration: float = 0.0


class Collector:
    """Turns setup/call/teardown reports into cells, one per test item."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._cells: list[tuple[Cell, Column]] = []
        self.seen = 0

    def add(self, report: pytest.TestReport) -> None:
        """Take one report; a cell is made when the item's teardown arrives."""
        state = self._pending.setdefault(report.nodeid, _Pending())
        state.duration += report.duration
        outcome, reason = _phase_outcome(report)
        if outcome is not None and (
            state.outcome is None or RANK[outcome] < RANK[state.outcome]
        ):
            state.outcome, state.reason = outcome, reason
        if report.when == "teardown":
            del self._pending[report.nodeid]
            self.seen += 1
            made = _cell(report, state)
            if made is not None:
                self._cells.append(made)

    def matrix(
        self,
        links: Callable[[Mapping[str, str]], tuple[str, ...]] = lambda _: (),
        incomplete: bool = False,
    ) -> Matrix:
        """The matrix so far; `links` lists a cell's artefacts from its properties."""
        cells = [
            replace(c, artefacts=links(dict(c.properties))) for c, _ in self._cells
        ]
        # An item that started and never finished means the run was cut short.
        cut = incomplete or bool(self._pending)
        return build((col for _, col in self._cells), cells, cut)


def _phase_outcome(report: pytest.TestReport) -> tuple[Outcome | None, str]:
    xfail = getattr(report, "wasxfail", None)
    if report.when == "call":
        if report.passed:
            return ("xpass", one_line(xfail)) if xfail is not None else ("pass", "")
        if report.skipped and xfail is not None:
            return "xfail", one_line(xfail or _failure_line(report))
        if report.skipped:
            return "skip", one_line(_skip_reason(report))
        return "fail", one_line(_failure_line(report))
    if report.failed:
        return "fail", one_line(f"{report.when}: {_failure_line(report)}")
    if report.skipped:
        if xfail is not None:
            return "xfail", one_line(xfail)
        return "skip", one_line(_skip_reason(report))
    return None, ""


def _cell(report: pytest.TestReport, state: _Pending) -> tuple[Cell, Column] | None:
    props = {str(k): str(v) for k, v in report.user_properties}
    kernel, arch = props.get("kernel"), props.get("arch")
    if not kernel or not arch or state.outcome is None:
        return None
    column = Column(kernel, arch, *(props.get(n, "") for n in COLUMN_FACTS))
    outcome, reason = state.outcome, state.reason
    if outcome == "pass" and props.get("outcome") == "warning":
        outcome, reason = "warning", one_line(props.get("reason", ""))
    cell = Cell(
        row=row_id(report.nodeid, column.id),
        column=column.id,
        outcome=outcome,
        reason=reason,
        nodeid=report.nodeid,
        duration=round(state.duration, 2),
        properties=tuple(sorted(props.items())),
    )
    return cell, column


# -- JSON -------------------------------------------------------------------


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "row": cell.row,
        "column": cell.column,
        "outcome": cell.outcome,
        "reason": cell.reason,
        "nodeid": cell.nodeid,
        "duration": cell.duration,
        "artefacts": list(cell.artefacts),
        "properties": dict(cell.properties),
    }


def to_json(matrix: Matrix) -> dict[str, Any]:
    """The JSON document of a matrix."""
    return {
        "kind": KIND,
        "format": FORMAT,
        "incomplete": matrix.incomplete,
        "columns": [
            {"id": c.id, "kernel": c.kernel, "arch": c.arch}
            | {n: getattr(c, n) for n in COLUMN_FACTS}
            for c in matrix.columns
        ],
        "rows": list(matrix.rows),
        "cells": [_cell_json(c) for c in matrix.cells],
    }


def dumps(matrix: Matrix) -> str:
    """The matrix as stable, diff-friendly JSON text."""
    return (
        json.dumps(to_json(matrix), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def from_json(data: Any, source: str = "matrix.json") -> Matrix:
    """A matrix from its JSON document; every problem is reported at once."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping) or data.get("kind") != KIND:
        raise ConfigError([Problem(source, "kind", f"not a {KIND} document")])
    if data.get("format") != FORMAT:
        found = data.get("format")
        msg = f"format {found!r}; this harness reads format {FORMAT}"
        raise ConfigError([Problem(source, "format", msg)])
    raw_columns = _list(data, "columns", source, problems)
    raw_cells = _list(data, "cells", source, problems)
    columns = [_column(c, f"columns[{i}]", source, problems)
               for i, c in enumerate(raw_columns)]  # fmt: skip
    cells = [_read_cell(c, f"cells[{i}]", source, problems)
             for i, c in enumerate(raw_cells)]  # fmt: skip
    if problems:
        raise ConfigError(problems)
    read = [c for c in cells if c]
    return build(
        (_with_agent(c, read) for c in columns if c), read, bool(data.get("incomplete"))
    )


def _with_agent(column: Column, cells: Sequence[Cell]) -> Column:
    # A document written before columns recorded their agent: its cells did.
    if column.agent:
        return column
    cols = [
        replace(column, agent=c.prop("agent")) for c in cells if c.column == column.id
    ]
    return _merge_column([column, *cols])


def _list(data: Mapping[str, Any], key: str, src: str, out: list[Problem]) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        out.append(Problem(src, key, "must be a list"))
        return []
    return value


def _strings(
    obj: Any, where: str, src: str, out: list[Problem], required: Sequence[str]
) -> dict[str, str] | None:
    if not isinstance(obj, Mapping):
        out.append(Problem(src, where, "must be a mapping"))
        return None
    missing = [k for k in required if not isinstance(obj.get(k), str)]
    if missing:
        out.append(Problem(src, where, f"missing or not text: {', '.join(missing)}"))
        return None
    return {str(k): v for k, v in obj.items() if isinstance(v, str)}


def _column(obj: Any, where: str, src: str, out: list[Problem]) -> Column | None:
    got = _strings(obj, where, src, out, ("kernel", "arch"))
    if got is None:
        return None
    return Column(got["kernel"], got["arch"], *(got.get(n, "") for n in COLUMN_FACTS))


def _read_cell(obj: Any, where: str, src: str, out: list[Problem]) -> Cell | None:
    got = _strings(obj, where, src, out, ("row", "column", "outcome"))
    if got is None:
        return None
    if got["outcome"] not in OUTCOMES:
        msg = f"{got['outcome']!r} is not an outcome ({', '.join(OUTCOMES)})"
        out.append(Problem(src, f"{where}.outcome", msg))
        return None
    props = obj.get("properties") or {}
    links = obj.get("artefacts") or []
    return Cell(
        row=got["row"],
        column=got["column"],
        outcome=got["outcome"],
        reason=got.get("reason", ""),
        nodeid=got.get("nodeid", ""),
        duration=float(obj.get("duration") or 0.0),
        artefacts=tuple(str(x) for x in links),
        properties=tuple(sorted((str(k), str(v)) for k, v in props.items())),
    )


def load(path: Path) -> Matrix:
    """Read a matrix.json file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([Problem(str(path), "", f"cannot read: {e.strerror}")]) from e
    except ValueError as e:
        raise ConfigError([Problem(str(path), "", f"not JSON: {e}")]) from e
    return from_json(data, str(path))


# -- baseline diff ------------------------------------------------------------

ChangeKind = Literal["newly failing", "newly passing", "newly skipped", "missing"]
CHANGE_KINDS: tuple[ChangeKind, ...] = get_args(ChangeKind)
PASSING = ("pass", "xpass")


@dataclass(frozen=True)
class Change:
    """One cell whose outcome differs from the baseline's."""

    kind: ChangeKind
    row: str
    column: str
    before: str
    after: str
    reason: str = ""


@dataclass(frozen=True)
class Diff:
    """What changed from a baseline, every list in matrix order."""

    changes: tuple[Change, ...] = ()

    def of(self, kind: ChangeKind) -> tuple[Change, ...]:
        """The changes of one kind."""
        return tuple(c for c in self.changes if c.kind == kind)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns with at least one change, in natural order."""
        return tuple(sorted({c.column for c in self.changes}, key=natural_key))

    @property
    def regressed(self) -> bool:
        """Whether anything newly fails."""
        return bool(self.of("newly failing"))


def _classify(before: str, after: str) -> ChangeKind | None:
    if after == "fail" and before != "fail":
        return "newly failing"
    if after in PASSING and before not in (*PASSING, ""):
        return "newly passing"
    if after == "skip" and before not in ("skip", ""):
        return "newly skipped"
    return None


def diff(baseline: Matrix, current: Matrix) -> Diff:
    """Newly failing, newly passing, newly skipped and missing cells.

    A cell absent from the baseline counts only when it fails: a new test that
    passes or skips is not news. A baseline cell absent now is `missing`.
    """
    found: list[Change] = []
    for cell in current.cells:
        old = baseline.cell(cell.row, cell.column)
        before = old.outcome if old else ""
        kind = _classify(before, cell.outcome)
        if kind is not None:
            found.append(
                Change(kind, cell.row, cell.column, before, cell.outcome, cell.reason)
            )
    for old in baseline.cells:
        if current.cell(old.row, old.column) is None:
            found.append(Change("missing", old.row, old.column, old.outcome, ""))
    found.sort(
        key=lambda c: (
            CHANGE_KINDS.index(c.kind),
            natural_key(c.column),
            natural_key(c.row),
        )
    )
    return Diff(tuple(found))
