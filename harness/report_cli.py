"""`harness report merge|diff` and `harness qualify`: reports from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import qualify, report, results
from harness.errors import HarnessError

log = logging.getLogger(__name__)


def add_parsers(subparsers: Any) -> None:
    """Add `report merge`, `report diff` and `qualify` to the `harness` command."""
    parser = subparsers.add_parser("report", help="merge and compare matrix reports")
    sub = parser.add_subparsers(dest="report_command", required=True)

    merge = sub.add_parser(
        "merge", help="join shards' matrix.json into one matrix, in all three formats"
    )
    merge.add_argument("shards", nargs="+", type=Path, help="matrix.json files")
    merge.add_argument(
        "-o", "--output", type=Path, required=True, help="directory for the reports"
    )
    merge.add_argument(
        "--run-dir",
        type=Path,
        default=Path("."),
        help="where the shards' artefact trees were gathered (artefact links are "
        "relative to it; default: the current directory)",
    )
    merge.add_argument("--title", default="Kernel matrix", help="report title")
    merge.set_defaults(func=cmd_merge)

    diff = sub.add_parser("diff", help="what newly fails, passes or skips")
    diff.add_argument("baseline", type=Path, help="the earlier matrix.json")
    diff.add_argument("current", type=Path, help="the newer matrix.json")
    diff.add_argument("--markdown", action="store_true", help="print Markdown")
    diff.set_defaults(func=cmd_diff)

    _qualify_parser(subparsers)


def _qualify_parser(subparsers: Any) -> None:
    q = subparsers.add_parser(
        "qualify",
        help="run the policy library and hook checks over the matrix for a release",
    )
    q.add_argument(
        "--tetragon", required=True, help="Tetragon release: version, tarball or URL"
    )
    q.add_argument("--kernels", default="all", help="comma list, `default` or `all`")
    q.add_argument("--arch", default="x86_64,arm64", help="comma list of arches")
    q.add_argument("--scenarios", type=Path, default=Path("scenarios"))
    q.add_argument("--policies", type=Path, default=Path("policies"))
    q.add_argument(
        "-o", "--output", type=Path, default=Path("qualification"),
        help="directory for the qualification, the matrix report and artefacts",
    )  # fmt: skip
    q.add_argument(
        "-n", "--workers", type=int, default=2,
        help="pytest-xdist workers (each runs one guest at a time)",
    )  # fmt: skip
    q.add_argument(
        "--offline", action="store_true",
        help="hook checks from cached inventories only: no archive lookup, no boot",
    )  # fmt: skip
    q.add_argument(
        "--matrix", type=Path,
        help="report on this matrix.json instead of running pytest",
    )  # fmt: skip
    q.add_argument(
        "--pytest-arg", action="append", default=[],
        help="extra pytest argument, repeatable, e.g. --pytest-arg=-x",
    )  # fmt: skip
    q.set_defaults(func=cmd_qualify)


def _load_all(paths: list[Path]) -> list[results.Matrix]:
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise HarnessError(
            f"no such matrix file: {', '.join(absent)}; each shard's pytest run "
            "writes one in its --report-dir"
        )
    return [results.load(p) for p in paths]


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge shards and write matrix.json, matrix.md and matrix.html."""
    merged = results.merge(_load_all(args.shards))
    base = report.link_base(args.run_dir, args.output)
    paths = report.write_reports(merged, args.output, base, args.title)
    print(report.summary(merged))
    print(report.mode(merged))
    print(f"merged {len(args.shards)} shard(s): {report.describe(paths)}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Print what changed from a baseline; 1 if anything newly fails."""
    baseline, current = _load_all([args.baseline, args.current])
    change = results.diff(baseline, current)
    if args.markdown:
        print(report.render_diff_markdown(change), end="")
    else:
        print("\n".join(report.diff_lines(change)))
    return 1 if change.regressed else 0


def cmd_qualify(args: argparse.Namespace) -> int:
    """Qualify a release over the matrix; 1 if any policy fails somewhere."""
    plan = qualify.Plan(
        tetragon=args.tetragon,
        kernels=args.kernels,
        arch=args.arch,
        scenarios=args.scenarios,
        policies=args.policies,
        output=args.output,
        workers=args.workers,
        offline=args.offline,
        catalogue=getattr(args, "catalogue", None),
        matrix=args.matrix,
        pytest_args=tuple(args.pytest_arg),
    )
    err = Console(stderr=True)
    q, paths = qualify.run(plan, lambda m: err.print(f"[dim]qualify:[/dim] {m}"))
    verdict = "qualified" if q.qualified else "NOT qualified"
    print(f"{q.agent}: {verdict}; {q.matrix_summary}")
    for pid in q.policy_ids():
        print(f"  {pid}: works on {', '.join(q.works_on(pid)) or 'nowhere'}")
    here = Path.cwd()
    print(f"report: {', '.join(str(report.shown(p, here)) for p in paths)}")
    return 0 if q.qualified else 1
