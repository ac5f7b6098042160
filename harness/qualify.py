"""Release qualification: the policy library and the hook checks over the matrix.

`harness qualify --tetragon=<release>` runs pytest on `scenarios/` and
`policies/` with that agent (the matrix report lands beside the
qualification), checks every hook of every policy against each kernel's
inventory, and writes `qualification.json` and `qualification.md`: per
policy the kernels and arches where it works, the oldest kernel that supports
each hook type, and each column's kernel fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pytest
from debian.debian_support import Version

from harness import hooks, hooks_cli, results
from harness.agent import release_version
from harness.cache import sha256_file
from harness.catalogue import find_catalogue
from harness.catalogue import load as load_catalogue
from harness.errors import ConfigError, HarnessError, Problem
from harness.hooks import TRAMPOLINES, Finding
from harness.inventory import Inventory
from harness.matrix import Matrix as KernelMatrix
from harness.matrix import Target
from harness.policy import Policy, load_all
from harness.report import md_escape, summary, write_atomic
from harness.results import Cell, Matrix, natural_key
from harness.scenarios import load_scenarios
from harness.symbols import static_symbols

log = logging.getLogger(__name__)

Status = Literal["works", "warning", "fails", "untested"]
STATUS_ICONS = {"works": "✅", "warning": "⚠️", "fails": "❌", "untested": "·"}
HOOK_TYPES = ("kprobe", "tracepoint", "lsm", "uprobe")
# What each hook type needs of a kernel, as the hook checks read it: config
# options (all `y`), and a fact of the running kernel.
NEEDS: dict[str, tuple[str, ...]] = {
    "kprobe": ("KPROBES", "KPROBE_EVENTS", "BPF_EVENTS"),
    "tracepoint": ("TRACEPOINTS", "BPF_EVENTS"),
    # BPF LSM programs attach through BPF trampolines.
    "lsm": ("BPF_LSM", TRAMPOLINES),
    "uprobe": ("UPROBES", "UPROBE_EVENTS"),
}
FAILING = ("fail", "xpass")
FILES = ("qualification.json", "qualification.md")
# Seconds an interrupted pytest run gets to stop its VMs and write its reports.
CHILD_STOP_SECONDS = 60.0
# Test failures still make a report; only usage and internal errors stop it.
OK_EXITS = (
    pytest.ExitCode.OK,
    pytest.ExitCode.TESTS_FAILED,
    pytest.ExitCode.NO_TESTS_COLLECTED,
)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one column's kernel build and how it ran."""

    column: str
    kernel: str
    arch: str
    version: str
    release: str
    config_sha256: str
    btf: bool
    lsms: tuple[str, ...]
    accelerator: str


@dataclass(frozen=True)
class PolicyCell:
    """How one policy fares on one column, and why."""

    policy: str
    column: str
    status: Status
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookSupport:
    """The oldest kernel of an arch that supports a hook type, and where not."""

    hook_type: str
    arch: str
    oldest: str
    version: str
    # True when even the oldest kernel tested supports it: support may be older.
    oldest_tested: bool
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class Qualification:
    """The qualification report of one agent release over the matrix."""

    agent: str
    matrix_summary: str
    columns: tuple[str, ...]
    fingerprints: tuple[Fingerprint, ...]
    policies: tuple[PolicyCell, ...]
    support: tuple[HookSupport, ...]

    @property
    def qualified(self) -> bool:
        """Whether no policy fails on any column."""
        return not any(p.status == "fails" for p in self.policies)

    def policy_ids(self) -> tuple[str, ...]:
        """The policies, in report order."""
        return tuple(dict.fromkeys(p.policy for p in self.policies))

    def works_on(self, policy: str) -> tuple[str, ...]:
        """The columns where a policy works (warnings included)."""
        return tuple(
            p.column
            for p in self.policies
            if p.policy == policy and p.status in ("works", "warning")
        )


def supports(inv: Inventory, hook_type: str) -> str:
    """Why a kernel cannot run hooks of a type, or "" when it can."""
    if inv.config:
        unset = [o for o in NEEDS[hook_type] if not inv.enabled(o)]
        if unset:
            return ", ".join(f"CONFIG_{o} unset" for o in unset)
    if hook_type == "kprobe" and not inv.filter_functions:
        return "no probe-able functions (available_filter_functions empty)"
    if hook_type == "tracepoint" and not inv.tracepoints:
        return "no tracepoints in tracefs"
    if hook_type == "lsm":
        if not inv.has_btf:
            return "no BTF: BPF LSM programs need it"
        if "bpf" not in inv.lsms:
            return f"bpf is not an active LSM (active: {','.join(inv.lsms) or 'none'})"
    return ""


def _version_key(version: str) -> tuple[int, Any]:
    # Local builds (`local:ab12`) have no Debian version; they sort last.
    try:
        return 0, Version(version)
    except ValueError:
        return 1, natural_key(version)


def hook_support(invs: Iterable[Inventory]) -> list[HookSupport]:
    """Per hook type and arch: the oldest kernel that supports it."""
    by_arch: dict[str, list[Inventory]] = {}
    for inv in invs:
        by_arch.setdefault(inv.arch, []).append(inv)
    found = []
    for hook_type in HOOK_TYPES:
        for arch in sorted(by_arch):
            ordered = sorted(by_arch[arch], key=lambda i: _version_key(i.version))
            verdicts = [(inv, supports(inv, hook_type)) for inv in ordered]
            good = [inv for inv, why in verdicts if not why]
            bad = tuple(f"{inv.kernel_id}: {why}" for inv, why in verdicts if why)
            first = good[0] if good else None
            found.append(
                HookSupport(
                    hook_type,
                    arch,
                    first.name if first else "",
                    first.version if first else "",
                    first is ordered[0],
                    bad,
                )
            )
    return found


def fingerprint(
    inv: Inventory, config_sha256: str, accelerator: str, release: str = ""
) -> Fingerprint:
    """A column's fingerprint from its inventory and the host's view of it."""
    return Fingerprint(
        column=inv.kernel_id,
        kernel=inv.name,
        arch=inv.arch,
        version=inv.version,
        release=release or inv.release,
        config_sha256=config_sha256,
        btf=inv.has_btf,
        lsms=tuple(inv.lsms),
        accelerator=accelerator,
    )


def related_rows(
    policy: Policy,
    matrix: Matrix,
    scenario_policies: Mapping[str, Iterable[Path]],
    root: Path = Path("."),
) -> list[str]:
    """Rows that exercise a policy: its scenarios' cases and its own checks.

    `scenario_policies` maps a row's file part (`scenarios/x.yaml`, relative
    to `root`, where pytest ran) to the policy files that scenario loads.
    """
    wanted = policy.path.resolve()
    rows = []
    for row in matrix.rows:
        file = row.split("::", 1)[0]
        uses = {p.resolve() for p in scenario_policies.get(file, ())}
        if wanted in uses or (root / file).resolve() == wanted:
            rows.append(row)
    return rows


def _policy_cell(
    policy: Policy,
    column: str,
    cells: Sequence[Cell],
    findings: Sequence[Finding],
    checked: bool,
) -> PolicyCell:
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    failing = [c for c in cells if c.outcome in FAILING]
    hooks = tuple(f"{f.hook}: {f.code}: {f.reason}" for f in [*errors, *warnings])
    runs = tuple(f"{c.row}: {c.outcome}: {c.reason}" for c in cells if c.reason)
    if errors or failing:
        return PolicyCell(policy.id, column, "fails", hooks + runs)
    if warnings or any(c.outcome == "warning" for c in cells):
        return PolicyCell(policy.id, column, "warning", hooks + runs)
    if any(c.outcome == "pass" for c in cells):
        return PolicyCell(policy.id, column, "works", runs)
    if checked and not cells:
        return PolicyCell(policy.id, column, "works", ("hook check only: no scenario",))
    why = runs or ("no scenario ran it and no inventory to check it against",)
    return PolicyCell(policy.id, column, "untested", why)


def qualify(
    agent: str,
    matrix: Matrix,
    policies: Sequence[Policy],
    scenario_policies: Mapping[str, Iterable[Path]],
    findings: Sequence[Finding],
    fingerprints: Sequence[Fingerprint],
    invs: Sequence[Inventory],
    root: Path = Path("."),
) -> Qualification:
    """Put the matrix run, the hook findings and the fingerprints together."""
    columns = sorted(
        {c.id for c in matrix.columns} | {f.column for f in fingerprints},
        key=natural_key,
    )
    checked = {inv.kernel_id for inv in invs}
    cells = []
    for pol in policies:
        rows = related_rows(pol, matrix, scenario_policies, root)
        for column in columns:
            ran = [c for r in rows if (c := matrix.cell(r, column)) is not None]
            found = [f for f in findings if f.policy == pol.id and f.cell == column]
            cells.append(_policy_cell(pol, column, ran, found, column in checked))
    return Qualification(
        agent=agent,
        matrix_summary=summary(matrix),
        columns=tuple(columns),
        fingerprints=tuple(sorted(fingerprints, key=lambda f: natural_key(f.column))),
        policies=tuple(cells),
        support=tuple(hook_support(invs)),
    )


def to_json(q: Qualification) -> dict[str, Any]:
    """The JSON document of a qualification."""
    data = asdict(q)
    data["qualified"] = q.qualified
    data["works_on"] = {p: list(q.works_on(p)) for p in q.policy_ids()}
    return data


def render_markdown(q: Qualification) -> str:
    """The qualification as Markdown."""
    verdict = "qualified" if q.qualified else "NOT qualified"
    out = [
        f"# Release qualification: {md_escape(q.agent)}",
        "",
        f"**{verdict}** — matrix: {q.matrix_summary}",
        "",
        "## Policies",
        "",
        "| policy | " + " | ".join(q.columns) + " | works on |",
        "|---|" + "---|" * (len(q.columns) + 1),
    ]
    by_key = {(p.policy, p.column): p for p in q.policies}
    for pid in q.policy_ids():
        marks = [
            f"{STATUS_ICONS[c.status]} {c.status}"
            if (c := by_key.get((pid, col)))
            else "—"
            for col in q.columns
        ]
        where = ", ".join(q.works_on(pid)) or "nowhere"
        out.append(f"| `{pid}` | " + " | ".join(marks) + f" | {where} |")
    problems = [p for p in q.policies if p.status in ("fails", "warning")]
    if problems:
        out += ["", "### Why not everywhere", ""]
        for p in problems:
            out.append(f"- `{p.policy}` on {p.column} ({p.status}):")
            out += [f"  - {md_escape(r)}" for r in p.reasons]
    out += ["", "## Oldest kernel per hook type", ""]
    out += ["| hook type | arch | oldest supporting | version | not supported on |"]
    out += ["|---|---|---|---|---|"]
    for s in q.support:
        oldest = s.oldest or "none tested"
        if s.oldest and s.oldest_tested:
            oldest += " (oldest tested)"
        lacking = "; ".join(md_escape(u) for u in s.unsupported) or "—"
        out.append(f"| {s.hook_type} | {s.arch} | {oldest} | {s.version} | {lacking} |")
    out += ["", "## Kernels", ""]
    out += ["| column | version | release | config sha256 | BTF | LSMs | accelerator |"]
    out += ["|---|---|---|---|---|---|---|"]
    for f in q.fingerprints:
        out.append(
            f"| {f.column} | {f.version} | {f.release} | "
            f"`{f.config_sha256[:16] or 'no config'}` | {'yes' if f.btf else 'no'} | "
            f"{','.join(f.lsms) or '—'} | {f.accelerator or '?'} |"
        )
    return "\n".join([*out, ""])


def write(q: Qualification, directory: Path) -> list[Path]:
    """Write qualification.json and qualification.md into `directory`."""
    paths = [directory / name for name in FILES]
    text = json.dumps(to_json(q), indent=2, sort_keys=True, ensure_ascii=False)
    write_atomic(paths[0], text + "\n")
    write_atomic(paths[1], render_markdown(q))
    log.info("qualification written to %s", directory)
    return paths


# -- running it ---------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What `harness qualify` runs, and where its results go."""

    tetragon: str
    kernels: str = "all"
    arch: str = "x86_64,arm64"
    root: Path = Path(".")
    scenarios: Path = Path("scenarios")
    policies: Path = Path("policies")
    output: Path = Path("qualification")
    workers: int = 2
    offline: bool = False
    catalogue: Path | None = None
    # An earlier run's matrix.json: report on it instead of running pytest.
    matrix: Path | None = None
    pytest_args: tuple[str, ...] = ()


def pytest_argv(plan: Plan) -> list[str]:
    """The pytest command that runs the policy library over the matrix."""
    out = plan.output.resolve()
    paths = [
        str(p) for p in (plan.scenarios, plan.policies) if (plan.root / p).exists()
    ]
    argv = [
        sys.executable, "-m", "pytest", *paths,
        f"--kernels={plan.kernels}", f"--arch={plan.arch}",
        f"--tetragon={plan.tetragon}",
        f"--report-dir={out / 'matrix'}", f"--junitxml={out / 'junit.xml'}",
        f"--artefacts={out / 'artefacts'}",
        "-p", "harness.reportplugin", "-p", "no:cacheprovider", "-rfEs",
    ]  # fmt: skip
    if plan.catalogue is not None:
        argv.append(f"--catalogue={plan.catalogue.resolve()}")
    if plan.workers > 1:
        argv += ["-n", str(plan.workers)]
    return argv + list(plan.pytest_args)


def run_pytest(plan: Plan, say: Callable[[str], None] = log.warning) -> int:
    """Run the library; its output streams to the terminal as progress."""
    argv = pytest_argv(plan)
    log.info("running %s", shlex.join(argv))
    # Its own process group: a terminal's Ctrl-C reaches only this process,
    # which passes it on once (a second SIGINT would cut pytest's cleanup short).
    child = subprocess.Popen(
        argv, cwd=plan.root, stdin=subprocess.DEVNULL, process_group=0
    )
    try:
        code = child.wait()
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        say(f"passing {signal.Signals(signum).name} on to pytest (pid {child.pid})")
        stop_child(child, signum)
        raise
    if code not in OK_EXITS:
        raise HarnessError(
            f"pytest exited {code} (usage or internal error, not test "
            f"failures); run it by hand from {plan.root}: {shlex.join(argv)}"
        )
    return code


def stop_child(child: subprocess.Popen[bytes], signum: int) -> None:
    """Send `signum` to a child's process group; SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)
    try:
        child.wait(timeout=CHILD_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def scenario_policies(scenarios: Path, root: Path) -> dict[str, list[Path]]:
    """Each scenario file (as rows name it, relative to `root`) and its policies."""
    if not scenarios.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for sc in load_scenarios([scenarios]):
        rel = Path(os.path.relpath(sc.path.resolve(), root.resolve())).as_posix()
        found[rel] = [p.path for p in sc.policies]
    return found


def fingerprints(
    kmatrix: KernelMatrix,
    targets: Sequence[Target],
    invs: Sequence[Inventory],
    matrix: Matrix,
) -> list[Fingerprint]:
    """Each target's fingerprint: its inventory, its config file, its accelerator."""
    found = []
    for target, inv in zip(targets, invs, strict=True):
        kernel = kmatrix.kernel(target)
        config = kernel.config
        digest = sha256_file(config) if config is not None and config.is_file() else ""
        col = matrix.column(target.id)
        accel = col.accelerator if col and col.accelerator else ""
        found.append(
            fingerprint(
                inv, digest, accel or kmatrix.accel(target.arch).name, kernel.release
            )
        )
    return found


def agent_of(matrix: Matrix, fallback: str) -> str:
    """The agent the cells report (`tetragon v1.3.0`), else what was asked for."""
    seen = {c.prop("agent") for c in matrix.cells}
    seen -= {"", results.AGENT_NONE, results.AGENT_NOT_STARTED}
    return ", ".join(sorted(seen)) or fallback


def column_agents(matrix: Matrix, column: results.Column) -> tuple[str, ...]:
    """The agents a column ran; its cells' for a matrix whose columns say none."""
    if column.agents:
        return column.agents
    seen = {c.prop("agent") for c in matrix.cells if c.column == column.id} - {""}
    return tuple(sorted(seen))


def agent_problem(matrix: Matrix, tetragon: str) -> str:
    """Why `matrix` is no run of the `--tetragon` release on every column, or "".

    Firing checks (no agent) or another version of the agent say nothing of
    this release. A target its agent never started on is fine: its cells fail
    or skip, and say why.
    """
    version = release_version(tetragon)
    wanted = f"tetragon v{version}" if version else "an agent of that --tetragon"
    if not matrix.columns:
        # Hook checks alone say a policy could load, not that it reports.
        return (
            f"no kernel column ran, so no event was asserted by {wanted}; run the "
            f"matrix with --tetragon={tetragon} (or leave out --matrix and "
            "`harness qualify` runs it)"
        )

    def is_wanted(agent: str) -> bool:
        name, _, ran = agent.partition(" ")
        return agent == results.AGENT_NOT_STARTED or (
            name == "tetragon" and (not version or ran.removeprefix("v") == version)
        )

    wrong: dict[str, list[str]] = {}
    for column in matrix.columns:
        agents = column_agents(matrix, column)
        others = [a for a in agents if not is_wanted(a)]
        what = f"ran {', '.join(others)}" if others else "recorded no agent"
        if others or not agents:
            wrong.setdefault(what, []).append(column.id)
    if not wrong:
        return ""
    found = "; ".join(f"{', '.join(cols)} {what}" for what, cols in wrong.items())
    return (
        f"{found}, not {wanted}: a release is qualified by its own agent on every "
        f"column; run the matrix with --tetragon={tetragon} (or leave out --matrix "
        "and `harness qualify` runs it)"
    )


def run(plan: Plan, say: Callable[[str], None]) -> tuple[Qualification, list[Path]]:
    """Run the library (unless given a matrix), check hooks, write the report."""
    root = plan.root
    if plan.matrix is None:
        code = run_pytest(plan, say)
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            say("pytest collected nothing: no scenario ran")
        source = plan.output / "matrix" / "matrix.json"
        matrix = results.load(source) if source.is_file() else Matrix()
    else:
        source = plan.matrix
        matrix = results.load(source)
    if problem := agent_problem(matrix, plan.tetragon):
        raise ConfigError([Problem(str(source), "", problem)])
    kmatrix = KernelMatrix(load_catalogue(plan.catalogue or find_catalogue(root)))
    targets = kmatrix.targets(plan.kernels, plan.arch)
    library = root / plan.policies
    policies = load_all([library]) if library.exists() else []
    symbols = partial(static_symbols, policies)
    artefacts = plan.output / "artefacts" / "inventory"
    invs = hooks_cli.inventories(
        kmatrix, targets, symbols, plan.offline, artefacts, say
    )
    findings = hooks.check(policies, invs)
    q = qualify(
        agent_of(matrix, plan.tetragon),
        matrix,
        policies,
        scenario_policies(root / plan.scenarios, root),
        findings,
        fingerprints(kmatrix, targets, invs, matrix),
        invs,
        root,
    )
    return q, write(q, plan.output)
