"""pytest hooks for reports: the matrix after every run, junit properties, a diff.

Workers (pytest-xdist) only complete each report's properties, where the
items are; the controller receives every report through
`pytest_runtest_logreport` and writes `matrix.json`, `matrix.md` and
`matrix.html` at the end of the session, each published by a rename so that
an interrupted run never leaves a truncated file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Generator, Mapping
from pathlib import Path

import pytest

from harness import report as render
from harness import results
from harness.errors import ConfigError
from harness.matrix import Target
from harness.plugin_state import INI_DEFAULTS, POOL, is_harness_run, options_of

log = logging.getLogger(__name__)

RECORDER = "harness-matrix-recorder"
# Enough to reach a failing case's evidence; a VM directory holds few files.
MAX_LINKS = 12
VM_FILES = ("console.log", "qemu-cmd.txt")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --report-dir and --baseline with the harness options."""
    group = parser.getgroup("harness", "kernel-matrix policy harness")
    group.addoption(
        "--report-dir",
        dest="harness_report_dir",
        help="where matrix.json, matrix.md and matrix.html go after the run "
        "(ini: harness_report_dir, default `reports`)",
    )
    group.addoption(
        "--baseline",
        dest="harness_baseline",
        type=Path,
        help="an earlier run's matrix.json: list what newly fails, passes or "
        "skips, in the terminal and in diff.md",
    )
    parser.addini(
        "harness_report_dir",
        "default --report-dir",
        default=INI_DEFAULTS["harness_report_dir"],
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """On the controller: read the baseline up front (a bad one fails now, not
    after the run) and start recording."""
    if _is_worker(config):
        return
    path = config.getoption("harness_baseline", None)
    try:
        baseline = results.load(path) if path else None
    except ConfigError as e:
        raise pytest.UsageError(f"--baseline: {e}") from e
    config.pluginmanager.register(MatrixRecorder(config, baseline), RECORDER)


def target_of(item: pytest.Item) -> Target | None:
    """The kernel and arch an item runs on: scenario items or `target` tests."""
    found = getattr(item, "target", None)
    if isinstance(found, Target):
        return found
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("target") if callspec is not None else None
    return param if isinstance(param, Target) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Complete the teardown report's properties (junit reads them from it)."""
    rep = yield
    target = target_of(item)
    if rep.when == "teardown" and target is not None:
        have = {name for name, _ in rep.user_properties}
        rep.user_properties += [
            (k, v) for k, v in _missing(item, target).items() if k not in have
        ]
    return rep


def _missing(item: pytest.Item, target: Target) -> dict[str, str]:
    # Whatever setup recorded wins; this fills what a boot failure or a plain
    # `vm` test leaves out, so every case on a target reads the same way.
    config = item.config
    opts = options_of(config)
    found = {"kernel": target.spec.name, "arch": target.arch}
    pool = config.stash.get(POOL, None)
    slot = pool.slot if pool is not None else None
    if slot is not None and slot.target == target:
        found["boot_seconds"] = f"{slot.vm.boot_seconds:.2f}"
        agent = slot.agent
        if agent is not None:
            found["agent"] = f"tetragon {getattr(agent, 'version', '?')}"
            ready = getattr(agent, "ready_seconds", None)
            if ready is not None:
                found["agent_ready_seconds"] = f"{ready:.2f}"
    if not opts.tetragon:
        found["agent"] = results.AGENT_NONE
    found.setdefault("agent", results.AGENT_NOT_STARTED)
    digest = _policy_digest(item)
    if digest:
        found["policy_sha256"] = digest
    evidence = getattr(item, "artefacts", None)
    if isinstance(evidence, Path):
        found["artefacts"] = _relative(evidence, config)
    vm_dir = Path(opts.artefacts) / target.id / "vm"
    found["console_log"] = _relative(vm_dir / "console.log", config)
    return found


def _policy_digest(item: pytest.Item) -> str:
    # A scenario hashes its policies in order (as collect.py does); a hook
    # check item is collected from the policy file itself.
    scenario = getattr(item, "scenario", None)
    if scenario is not None:
        files = [Path(pol.path) for pol in scenario.policies]
    elif item.path.suffix in (".yaml", ".yml"):
        files = [item.path]
    else:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _relative(path: Path, config: pytest.Config) -> str:
    run_dir = config.invocation_params.dir
    absolute = path if path.is_absolute() else run_dir / path
    try:
        return absolute.relative_to(run_dir).as_posix()
    except ValueError:
        return absolute.as_posix()


def artefact_links(props: Mapping[str, str], run_dir: Path) -> tuple[str, ...]:
    """The files a cell's properties point at that exist, as run-relative paths."""
    found: list[str] = []
    evidence = props.get("artefacts")
    if evidence:
        directory = run_dir / evidence
        if directory.is_dir():
            files = sorted(p for p in directory.rglob("*") if p.is_file())
            found += [
                f"{evidence}/{p.relative_to(directory).as_posix()}" for p in files
            ]
    console = props.get("console_log")
    if console:
        parent = Path(console).parent
        found += [
            (parent / name).as_posix()
            for name in VM_FILES
            if (run_dir / parent / name).is_file()
        ]
    return tuple(found[:MAX_LINKS])


def report_dir(config: pytest.Config) -> Path:
    """Where this run's reports go (relative paths from the invocation dir)."""
    value = config.getoption("harness_report_dir", None) or config.getini(
        "harness_report_dir"
    )
    return config.invocation_params.dir / str(value)


class MatrixRecorder:
    """The controller's side: every report in, the matrix files out."""

    def __init__(self, config: pytest.Config, baseline: results.Matrix | None) -> None:
        self.config = config
        self.baseline = baseline
        self.collector = results.Collector()
        self.written: list[Path] = []
        self.matrix: results.Matrix | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect every report (with xdist, from every worker)."""
        self.collector.add(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the matrix report, and diff.md with --baseline."""
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(
            session.shouldstop or session.shouldfail
        )
        run_dir = self.config.invocation_params.dir
        matrix = self.collector.matrix(
            lambda p: artefact_links(p, run_dir), interrupted
        )
        # Interrupted before any case finished (a kernel still downloading),
        # the report still says the run was cut short, rather than leaving an
        # earlier run's report to be read as this one's.
        if not matrix.cells and not (matrix.incomplete and self.on_targets(session)):
            return
        where = report_dir(self.config)
        base = render.link_base(run_dir, where)
        self.written = render.write_reports(matrix, where, base)
        diff_md = where / "diff.md"
        if self.baseline is not None:
            change = results.diff(self.baseline, matrix)
            render.write_atomic(diff_md, render.render_diff_markdown(change))
            self.written.append(diff_md)
        else:
            # A diff.md left by an earlier run would read as this run's changes.
            diff_md.unlink(missing_ok=True)
        self.matrix = matrix

    def on_targets(self, session: pytest.Session) -> bool:
        """Whether the run set out to test kernel targets: a run of unit tests
        that is interrupted must not replace the last matrix report."""
        if any(target_of(item) is not None for item in session.items):
            return True
        # An xdist controller collects nothing; its workers run the targets.
        controller = self.config.pluginmanager.has_plugin("dsession")
        return controller and is_harness_run(self.config)

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> None:
        """Say where the reports went and, with --baseline, what changed."""
        if self.matrix is None:
            return
        tr = terminalreporter
        tr.write_sep("-", "harness matrix")
        tr.write_line(render.summary(self.matrix))
        tr.write_line(render.mode(self.matrix))
        run_dir = self.config.invocation_params.dir
        rel = [render.shown(p, run_dir) for p in self.written]
        tr.write_line(f"reports: {render.describe(rel)}")
        if self.baseline is not None:
            name = self.config.getoption("harness_baseline")
            tr.write_sep("-", f"changes from {name}")
            for line in render.diff_lines(results.diff(self.baseline, self.matrix)):
                tr.write_line(line)
