"""The matrix as Markdown (a CI step summary), a standalone HTML page and JSON.

Renderers are pure: the same matrix gives the same bytes (no timestamps, no
host names), so reports can be compared and kept as golden files. The HTML
page carries its CSS inline and loads nothing: it opens from a downloaded CI
artifact without a network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import jinja2

from harness.results import AGENT_NONE, CHANGE_KINDS, Cell, Column, Diff, Matrix, dumps

log = logging.getLogger(__name__)

ICONS = {
    "pass": "✅",
    "fail": "❌",
    "xfail": "🔸",
    "xpass": "❗",
    "skip": "⏭️",
    "warning": "⚠️",
}
# A step summary is cut at 1 MiB; past this many detail lines the HTML has them.
MAX_DETAILS = 300
# Properties worth a glance in a cell's tooltip, in this order.
SHOWN_PROPERTIES = (
    "mode",
    "agent",
    "boot_seconds",
    "agent_ready_seconds",
    "policy_load_seconds",
    "workload_seconds",
    "collect_seconds",
    "policy_sha256",
)
FILES = ("matrix.json", "matrix.md", "matrix.html")


def link(path: str, base: str) -> str:
    """A URL for an artefact recorded relative to the run's directory."""
    if os.path.isabs(path):
        return "file://" + quote(path)
    joined = f"{base.rstrip('/')}/{path}" if base and base != "." else path
    return quote(joined, safe="/.-_~")


def md_escape(text: str) -> str:
    """Text safe inside a GitHub Markdown table cell."""
    for char in "\\`*_[]|<>":
        text = text.replace(char, "\\" + char)
    return text


def column_title(col: Column) -> list[str]:
    """Header lines of a column: name, exact version, arch, accelerator, agent."""
    return [
        col.kernel,
        col.kernel_version or "version unknown",
        f"{col.arch} · {col.accelerator or 'accel unknown'}",
        col.agent or "agent unknown",
    ]


def mode(matrix: Matrix) -> str:
    """Which mode ran: events asserted by an agent, or firing checks without one."""
    per_column = {c.id: set(c.agents) for c in matrix.columns}
    agents = set().union(*per_column.values())
    if not matrix.columns:
        return "mode: none (no test ran on a kernel target)"
    if not agents:
        return "mode: unknown (no column records its agent)"
    if agents == {AGENT_NONE}:
        kinds = {c.prop("mode") for c in matrix.cells}
        done = []
        if "firing" in kinds:
            done.append(
                "scenarios ran as firing checks (each hook probed through tracefs "
                "while the workload ran; events not asserted)"
            )
        if "hook-check" in kinds:
            done.append("policies had their hooks checked")
        return "mode: no agent" + (": " + "; ".join(done) if done else "")
    named = sorted(agents - {AGENT_NONE})
    text = f"mode: events asserted by {', '.join(named)}"
    firing = [col for col, seen in per_column.items() if AGENT_NONE in seen]
    if firing:
        text += f"; firing checks without an agent on {', '.join(firing)}"
    return text


def summary(matrix: Matrix) -> str:
    """One line: rows, columns and how many cells have each outcome."""
    counts = matrix.counts()
    shown = [f"{n} {o}" for o, n in counts.items() if n]
    return f"{len(matrix.rows)} rows by {len(matrix.columns)} kernel-arch columns: " + (
        ", ".join(shown) or "no results"
    )


def _not_passing(matrix: Matrix) -> list[Cell]:
    return [c for c in matrix.cells if c.outcome != "pass"]


def labels(cell: Cell) -> list[tuple[str, str]]:
    """(label, path) of a cell's artefacts; `vm/console.log` when a name repeats."""
    names = [Path(a).name for a in cell.artefacts]
    return [
        (f"{Path(a).parent.name}/{n}" if names.count(n) > 1 else n, a)
        for a, n in zip(cell.artefacts, names, strict=True)
    ]


def _md_links(cell: Cell, base: str) -> str:
    return " · ".join(f"[{md_escape(t)}]({link(a, base)})" for t, a in labels(cell))


def render_markdown(
    matrix: Matrix, base: str = "", title: str = "Kernel matrix"
) -> str:
    """The matrix as GitHub-flavoured Markdown; `base` prefixes artefact links."""
    out = [f"## {title}", "", f"**{summary(matrix)}**", "", md_escape(mode(matrix)), ""]
    if matrix.incomplete:
        out += ["> ⚠️ The run was interrupted: this matrix is incomplete.", ""]
    if not matrix.cells:
        return "\n".join([*out, "No test ran on a kernel target.", ""])
    head = ["", *("<br>".join(md_escape(x) for x in column_title(c))
                  for c in matrix.columns)]  # fmt: skip
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in matrix.rows:
        cells = ["`" + row.replace("`", "'") + "`"]
        for col in matrix.columns:
            cell = matrix.cell(row, col.id)
            cells.append(f"{ICONS[cell.outcome]} {cell.outcome}" if cell else "—")
        out.append("| " + " | ".join(cells) + " |")
    details = _not_passing(matrix)
    if details:
        out += ["", "### Not passing", ""]
        for cell in details[:MAX_DETAILS]:
            links = _md_links(cell, base)
            out.append(
                f"- {ICONS[cell.outcome]} **{cell.outcome}** `{cell.row}` on "
                f"{cell.column}: {md_escape(cell.reason) or '(no reason given)'}"
                + (f" — {links}" if links else "")
            )
        if len(details) > MAX_DETAILS:
            more = len(details) - MAX_DETAILS
            out.append(f"- … and {more} more: see matrix.html")
    legend = " · ".join(f"{icon} {name}" for name, icon in ICONS.items())
    return "\n".join([*out, "", legend, ""])


# -- HTML ---------------------------------------------------------------------

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f2328; }
h1 { font-size: 1.4em; }
table.matrix { border-collapse: collapse; }
.matrix th, .matrix td { border: 1px solid #d0d7de; padding: 4px 8px;
  vertical-align: top; }
.matrix thead th { background: #f6f8fa; position: sticky; top: 0; }
.matrix th.row { text-align: left; font: 12px ui-monospace, monospace;
  background: #fff; }
.col .name { font-weight: bold; font-size: 1.1em; }
.col .meta, .cell .reason, .cell .time { font-size: 11px; color: #59636e; }
.cell { min-width: 7em; }
.cell .outcome { font-weight: bold; }
.cell .reason { display: block; max-width: 22em; color: #1f2328; }
.cell a { font-size: 11px; margin-right: 4px; }
td.pass { background: #dafbe1; }
td.fail { background: #ffc1c0; }
td.xfail { background: #e8dcff; }
td.xpass { background: #ffc58f; }
td.skip { background: #eaeef2; }
td.warning { background: #ffe49a; }
td.none { background: #fff; color: #8c959f; }
.banner { background: #fff8c5; border: 1px solid #d4a72c; padding: 6px 10px; }
.counts td { font-size: 11px; background: #f6f8fa; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="summary">{{ summary }}</p>
<p class="mode">{{ mode }}</p>
{% if matrix.incomplete %}<p class="banner">The run was interrupted: this matrix
is incomplete.</p>{% endif %}
{% if not matrix.cells %}<p>No test ran on a kernel target.</p>{% else %}
<table class="matrix">
<thead><tr><th></th>
{% for col in matrix.columns %}<th class="col" data-column="{{ col.id }}">
<div class="name">{{ col.kernel }}</div>
<div class="meta version">{{ col.kernel_version or "version unknown" }}</div>
<div class="meta release">{{ col.kernel_release }}</div>
<div class="meta">{{ col.arch }} · {{ col.accelerator or "accel unknown" }}</div>
<div class="meta agent">{{ col.agent or "agent unknown" }}</div>
</th>{% endfor %}</tr></thead>
<tbody>
{% for row in matrix.rows %}<tr><th class="row" scope="row">{{ row }}</th>
{% for col in matrix.columns %}{% set cell = matrix.cell(row, col.id) %}
{% if cell %}<td class="cell {{ cell.outcome }}" data-row="{{ row }}"
 data-column="{{ col.id }}" data-outcome="{{ cell.outcome }}"
 title="{{ tooltip(cell) }}"><span class="outcome">{{ cell.outcome }}</span>
{% if cell.duration %}<span class="time">{{ "%.1f"|format(cell.duration) }} s</span>
{% endif %}{% if cell.reason %}<span class="reason">{{ cell.reason }}</span>{% endif %}
{% for text, a in labels(cell) %}<a href="{{ href(a) }}">{{ text }}</a>{% endfor %}
</td>{% else %}<td class="none" data-row="{{ row }}" data-column="{{ col.id }}"
 data-outcome="">—</td>{% endif %}
{% endfor %}</tr>
{% endfor %}</tbody>
<tfoot><tr class="counts"><th class="row">totals</th>
{% for col in matrix.columns %}<td>{{ counts(col.id) }}</td>{% endfor %}</tr></tfoot>
</table>{% endif %}
</body>
</html>
"""


def _tooltip(cell: Cell) -> str:
    props = dict(cell.properties)
    return "\n".join(f"{k}: {props[k]}" for k in SHOWN_PROPERTIES if k in props)


def render_html(matrix: Matrix, base: str = "", title: str = "Kernel matrix") -> str:
    """The matrix as a standalone HTML page with coloured cells."""
    env = jinja2.Environment(
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    template = env.from_string(TEMPLATE)

    def counts(column_id: str) -> str:
        found = matrix.counts(column_id)
        return ", ".join(f"{n} {o}" for o, n in found.items() if n)

    return template.render(
        matrix=matrix,
        title=title,
        summary=summary(matrix),
        mode=mode(matrix),
        tooltip=_tooltip,
        counts=counts,
        href=lambda a: link(a, base),
        labels=labels,
    )


# -- diff ---------------------------------------------------------------------


def diff_lines(d: Diff) -> list[str]:
    """The diff as plain lines for a terminal, grouped by kind and column."""
    if not d.changes:
        return ["no change from the baseline"]
    lines = []
    for kind in CHANGE_KINDS:
        changes = d.of(kind)
        if not changes:
            continue
        lines.append(f"{kind} ({len(changes)}):")
        for c in changes:
            was = f"was {c.before}" if c.before else "new"
            why = f": {c.reason}" if c.reason else ""
            now = f" -> {c.after}" if c.after else ""
            lines.append(f"  {c.column}  {c.row}  ({was}{now}){why}")
    return lines


def render_diff_markdown(d: Diff, title: str = "Changes from the baseline") -> str:
    """The diff as Markdown: one section per kind, one table per kernel and arch."""
    out = [f"## {title}", ""]
    if not d.changes:
        return "\n".join([*out, "No change from the baseline.", ""])
    for kind in CHANGE_KINDS:
        changes = d.of(kind)
        if not changes:
            continue
        out += [f"### {kind.capitalize()} ({len(changes)})", ""]
        out += [
            "| kernel-arch | row | before | now | reason |",
            "|---|---|---|---|---|",
        ]
        for c in changes:
            out.append(
                f"| {c.column} | `{c.row}` | {c.before or 'new'} | "
                f"{c.after or 'absent'} | {md_escape(c.reason)} |"
            )
        out.append("")
    return "\n".join(out)


# -- files --------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write `text` beside `path`, then rename: readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp makes the file private; a report is as readable as any file.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_reports(
    matrix: Matrix, directory: Path, base: str = "", title: str = "Kernel matrix"
) -> list[Path]:
    """Write matrix.json, matrix.md and matrix.html into `directory`."""
    texts = (
        dumps(matrix),
        render_markdown(matrix, base, title),
        render_html(matrix, base, title),
    )
    paths = [directory / name for name in FILES]
    for path, text in zip(paths, texts, strict=True):
        write_atomic(path, text)
    log.info("matrix report written to %s", directory)
    return paths


def link_base(run_dir: Path, report_dir: Path) -> str:
    """How a report in `report_dir` reaches paths relative to `run_dir`."""
    return Path(os.path.relpath(run_dir.resolve(), report_dir.resolve())).as_posix()


def shown(path: Path, start: Path) -> Path:
    """`path` relative to `start` when it is under it, else absolute: for messages."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(start.resolve())
    except ValueError:
        return absolute


def describe(paths: Iterable[Path]) -> str:
    """`matrix.json, matrix.md, matrix.html in reports/` for messages."""
    paths = list(paths)
    where = paths[0].parent if paths else Path(".")
    return f"{', '.join(p.name for p in paths)} in {where}"
