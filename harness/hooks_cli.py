"""`harness hooks check` and `harness hooks diff`: policy hooks against kernels.

Inventories come from the cache; a missing one is captured by booting its
kernel (at most two guests at a time: each TCG guest takes a host core).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness import hookdiff, hooks, inventory
from harness.catalogue import comma_list, find_catalogue, load
from harness.errors import FetchError, HarnessError
from harness.inventory import Inventory
from harness.matrix import Matrix, Target
from harness.policy import Policy, load_all
from harness.policyschema import SEVERITIES
from harness.symbols import static_symbols

log = logging.getLogger(__name__)

MAX_BOOTS = 2
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def add_parsers(subparsers: Any) -> None:
    """Add `hooks check` and `hooks diff` to the `harness` command."""
    parser = subparsers.add_parser(
        "hooks", help="check policy hooks against kernel inventories, no agent"
    )
    sub = parser.add_subparsers(dest="hooks_command", required=True)

    check = sub.add_parser("check", help="every hook of every policy on every kernel")
    check.add_argument("paths", nargs="+", type=Path, help="policy files or dirs")
    _matrix_options(check)
    check.add_argument(
        "--severity",
        choices=SEVERITIES,
        default="info",
        help="show findings of at least this severity in the table",
    )
    check.set_defaults(func=cmd_check)

    diff = sub.add_parser("diff", help="what changes between two kernels")
    diff.add_argument("kernel_a", help="catalogue name, e.g. 6.1")
    diff.add_argument("kernel_b", help="catalogue name, e.g. 6.12")
    diff.add_argument("paths", nargs="+", type=Path, help="policy files or dirs")
    _matrix_options(diff, kernels=False)
    diff.set_defaults(func=cmd_diff)


def _matrix_options(parser: argparse.ArgumentParser, kernels: bool = True) -> None:
    if kernels:
        parser.add_argument(
            "--kernels", default="default", help="comma list, `default` or `all`"
        )
    parser.add_argument("--arch", default="x86_64,arm64", help="comma list of arches")
    parser.add_argument("--json", action="store_true", help="print JSON, no table")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use cached inventories only: no archive lookup, no boot",
    )
    parser.add_argument(
        "--artefacts",
        type=Path,
        default=Path("artefacts/inventory"),
        help="where capture boots leave console logs",
    )


def _console() -> Console:
    # Piped output keeps whole rows: a table is only useful unwrapped.
    return Console(stderr=False, width=None if sys.stdout.isatty() else 200)


def _progress() -> Callable[[str], None]:
    err = Console(stderr=True)
    return lambda message: err.print(f"[dim]hooks:[/dim] {message}")


def inventories(
    matrix: Matrix,
    targets: Sequence[Target],
    symbols: Callable[[str], list[str]],
    offline: bool,
    artefacts: Path,
    say: Callable[[str], None],
) -> list[Inventory]:
    """The inventory of each target: cached, or captured by booting it."""
    found: dict[str, Inventory] = {}
    missing: list[Target] = []
    for target in targets:
        cached = _cached(matrix, target)
        if offline:
            if cached is None:
                raise HarnessError(
                    f"no cached inventory of {target.id}; run without --offline to "
                    "capture it (one boot)"
                )
            found[target.id] = cached
            continue
        try:
            # The exact version names the inventory: no kernel download needed.
            version = matrix.provisioner.resolve_version(target.spec, target.arch)
        except FetchError as e:
            if cached is None:
                raise
            say(f"{target.id}: archive unreachable, using cached {cached.version}: {e}")
            found[target.id] = cached
            continue
        # No version yet (a .deb by URL not downloaded): capturing fetches it.
        path = inventory.inventory_path(matrix.cache, target.id, version)
        if version and path.is_file():
            found[target.id] = inventory.load(path)
        else:
            missing.append(target)
    found |= _capture(matrix, missing, symbols, artefacts, say)
    return [found[t.id] for t in targets]


def _cached(matrix: Matrix, target: Target) -> Inventory | None:
    paths = inventory.cached_paths(matrix.cache, target.id)
    return inventory.load(paths[-1]) if paths else None


def _capture(
    matrix: Matrix,
    targets: Sequence[Target],
    symbols: Callable[[str], list[str]],
    artefacts: Path,
    say: Callable[[str], None],
) -> dict[str, Inventory]:
    if not targets:
        return {}
    # Kernels and initramfs are provisioned here, one at a time; only the
    # boots run in parallel (a VM is started and stopped by the same thread).
    kernels = {t.id: matrix.kernel(t) for t in targets}
    vms = {t.id: matrix.vm(t, artefacts / t.id) for t in targets}

    def one(target: Target) -> Inventory:
        start = time.monotonic()
        kernel = kernels[target.id]
        say(f"{target.id}: no inventory of {kernel.version}, booting to capture it")
        inv = inventory.ensure(
            matrix.cache, kernel, lambda: vms[target.id], symbols(target.arch)
        )
        say(f"{target.id}: inventory captured in {time.monotonic() - start:.1f} s")
        return inv

    with ThreadPoolExecutor(max_workers=MAX_BOOTS) as pool:
        captured = pool.map(one, targets)
        return {t.id: inv for t, inv in zip(targets, captured, strict=True)}


def _setup(args: argparse.Namespace) -> tuple[Matrix, list[Policy]]:
    catalogue = load(getattr(args, "catalogue", None) or find_catalogue())
    absent = [str(p) for p in args.paths if not p.exists()]
    if absent:
        raise HarnessError(f"no such policy file or directory: {', '.join(absent)}")
    policies = load_all(args.paths)
    if not policies:
        raise HarnessError(f"no policy files under {', '.join(map(str, args.paths))}")
    return Matrix(catalogue), policies


def cmd_check(args: argparse.Namespace) -> int:
    """Check every hook of every policy on every kernel and arch; 1 if any error."""
    matrix, policies = _setup(args)
    targets = matrix.targets(args.kernels, args.arch)
    say = _progress()
    invs = inventories(
        matrix,
        targets,
        lambda arch: static_symbols(policies, arch),
        args.offline,
        args.artefacts,
        say,
    )
    findings = hooks.check(policies, invs)
    if args.json:
        print(json.dumps(check_json(invs, policies, findings), indent=2))
    else:
        print_check(_console(), invs, findings, args.severity)
    return 1 if any(f.severity == "error" for f in findings) else 0


def check_json(
    invs: Sequence[Inventory], policies: Sequence[Policy], findings: list[hooks.Finding]
) -> dict[str, Any]:
    """The JSON document of `hooks check`."""
    return {
        "kernels": [
            {
                "cell": i.kernel_id,
                "kernel": i.name,
                "arch": i.arch,
                "version": i.version,
                "release": i.release,
            }
            for i in invs
        ],
        "policies": [p.id for p in policies],
        "summary": hooks.summary(findings),
        "findings": [f.to_json() for f in findings],
    }


def print_check(
    console: Console,
    invs: Sequence[Inventory],
    findings: list[hooks.Finding],
    least: str,
) -> None:
    """The findings table (identical findings on several cells share a row)."""
    order = SEVERITIES
    shown = [f for f in findings if order.index(f.severity) <= order.index(least)]
    rows: dict[tuple[str, str, str, str, str], list[str]] = {}
    for f in shown:
        rows.setdefault((f.severity, f.policy, f.hook, f.code, f.reason), []).append(
            f.cell
        )
    everywhere = len(invs)
    table = Table("severity", "policy", "hook", "kernels", "reason", show_lines=False)
    key = sorted(rows, key=lambda r: (order.index(r[0]), r[1], r[2], r[3]))
    for severity, policy, hook, code, reason in key:
        cells = rows[(severity, policy, hook, code, reason)]
        where = "all" if len(cells) == everywhere else ", ".join(cells)
        style = SEVERITY_STYLE[severity]
        table.add_row(
            f"[{style}]{severity}[/]",
            Path(policy).name,
            hook,
            where,
            f"{code}: {reason}",
        )
    console.print(table)
    summary = Table("kernel", "version", "error", "warning", "info")
    counts = hooks.summary(findings)
    for inv in invs:
        c = counts.get(inv.kernel_id, {"error": 0, "warning": 0, "info": 0})
        summary.add_row(
            inv.kernel_id,
            inv.version,
            str(c["error"]),
            str(c["warning"]),
            str(c["info"]),
        )
    console.print(summary)


def cmd_diff(args: argparse.Namespace) -> int:
    """Print what changes for the policies' hooks from kernel A to kernel B."""
    matrix, policies = _setup(args)
    pairs = []
    for arch in comma_list(args.arch):
        a = matrix.targets(args.kernel_a, arch)
        b = matrix.targets(args.kernel_b, arch)
        if a and b:
            pairs.append((a[0], b[0]))
    if not pairs:
        raise HarnessError(
            f"{args.kernel_a} and {args.kernel_b} share no arch of --arch {args.arch}"
        )
    targets = [t for pair in pairs for t in pair]
    invs = inventories(
        matrix,
        targets,
        lambda arch: static_symbols(policies, arch),
        args.offline,
        args.artefacts,
        _progress(),
    )
    changes = [
        c
        for a, b in zip(invs[::2], invs[1::2], strict=True)
        for c in hookdiff.diff(a, b, policies)
    ]
    if args.json:
        print(json.dumps([c.to_json() for c in changes], indent=2))
        return 0
    table = Table("arch", "policy", "hook", "change", "before", "after")
    for c in changes:
        style = SEVERITY_STYLE.get(c.severity or "", "")
        change = (
            f"[{style}]{c.kind}[/] {c.subject}" if style else f"{c.kind} {c.subject}"
        )
        table.add_row(c.arch, Path(c.policy).name, c.hook, change, c.before, c.after)
    console = _console()
    console.print(table)
    console.print(
        f"{len(changes)} change(s) from {args.kernel_a} to {args.kernel_b} "
        f"for {len(policies)} policies"
    )
    return 0
