"""The pytest plugin: options, the kernel x arch parametrisation, reporting hooks."""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from harness.collect import ScenarioFile, top_folder
from harness.collect_policies import PolicyFile, report_status
from harness.errors import HarnessError
from harness.fixtures import _harness_properties, harness_matrix, target, vm
from harness.interrupts import Interrupted, stop_running_vms, write_stderr
from harness.matrix import Target
from harness.plugin_state import (
    INI_DEFAULTS,
    POOL,
    check_run,
    is_harness_run,
    options_of,
    targets_of,
)
from harness.scheduling import TargetScheduling
from harness.session import VMPool
from harness.vm import running

__all__ = ["_harness_properties", "harness_matrix", "target", "vm"]

# The matrix report, baseline diff and junit properties.
pytest_plugins = ["harness.reportplugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the harness options and their ini equivalents."""
    group = parser.getgroup("harness", "kernel-matrix policy harness")
    group.addoption(
        "--kernels",
        dest="harness_kernels",
        help="kernels to test: catalogue names, comma separated; `default` or `all` "
        "(ini: harness_kernels)",
    )
    group.addoption(
        "--arch",
        dest="harness_arch",
        help="guest arches, comma separated: x86_64,arm64 (ini: harness_arch)",
    )
    group.addoption(
        "--catalogue",
        dest="harness_catalogue",
        type=Path,
        help="kernel catalogue (default: the nearest kernels.yaml)",
    )
    group.addoption(
        "--artefacts",
        dest="harness_artefacts",
        help="directory for consoles, logs and reports (ini: harness_artefacts)",
    )
    group.addoption(
        "--boot-timeout",
        dest="harness_boot_timeout",
        help="seconds to readiness (default: scaled to the accelerator)",
    )
    group.addoption(
        "--tetragon",
        dest="harness_tetragon",
        help="Tetragon release: tarball, directory, URL or version "
        "(env HARNESS_TETRAGON, ini harness_tetragon); without it, "
        "scenarios run as firing checks",
    )
    group.addoption(
        "--tetragon-arg",
        dest="harness_tetragon_args",
        action="append",
        help="extra argument for the agent, repeatable, e.g. "
        "--tetragon-arg=--disable-kprobe-multi (ini: harness_tetragon_args)",
    )
    for name, help_text in (
        ("harness_tetragon_args", "extra agent arguments"),
        ("harness_kernels", "default --kernels"),
        ("harness_tetragon", "default --tetragon"),
        ("harness_arch", "default --arch"),
        ("harness_artefacts", "default --artefacts"),
        ("harness_memory", "guest memory in MiB"),
    ):
        parser.addini(name, help_text, default=INI_DEFAULTS[name])


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers; check every harness setting once, before collection."""
    config.addinivalue_line(
        "markers", "boot: boots real kernels in QEMU (deselect with -m 'not boot')"
    )
    if config.option.help or not is_harness_run(config):
        return
    try:
        check_run(config)
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from None
    config.pluginmanager.register(InterruptStop(config), "harness-interrupts")


class InterruptStop:
    """On Ctrl-C or SIGTERM the run's VMs stop at once, and the run says so."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.previous: Any = None
        # SIGTERM (a CI timeout, `harness qualify` stopping) ends the run like
        # Ctrl-C: reports written, VMs stopped, instead of a silent death.
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._sigterm)

    def _sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self) -> None:
        """Stop every VM of this process without a polite power-off, and say so."""
        pool = self.config.stash.get(POOL, None)
        notice = stop_running_vms()
        # An xdist controller runs no test: its workers know their own VMs.
        controller = self.config.pluginmanager.has_plugin("dsession")
        if notice == "interrupted" and not controller:
            # Without a line of its own, an interrupt while a kernel downloads
            # reads as pytest's banner and a frame of pathlib or socket code.
            notice = idle_notice(pool)
        if notice != "interrupted":
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(notice)
            else:
                write_stderr(notice)
        if pool is not None:
            pool.close(interrupted=True)
        for machine in running():
            machine.close(interrupted=True)

    def pytest_unconfigure(self) -> None:
        """Give SIGTERM back its previous handler."""
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def idle_notice(pool: VMPool | None) -> str:
    """What an interrupt stopped when no VM was running: a target's provisioning
    (kernel download, initramfs, agent files) or nothing of the harness's."""
    target = pool.provisioning if pool is not None else None
    if target is not None:
        return (
            f"interrupted: stopped while provisioning {target.id}, before its VM "
            "started; no VM to stop"
        )
    return "interrupted: no VM was running"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `target` (and so `vm`) over the selected kernel x arch matrix."""
    if "target" not in metafunc.fixturenames:
        return
    targets = targets_of(metafunc.config)
    metafunc.parametrize(
        "target", targets, ids=[t.id for t in targets], scope="session", indirect=True
    )


def item_target(item: pytest.Item) -> Target | None:
    """The target an item runs on: its `target` parameter or attribute."""
    callspec = getattr(item, "callspec", None)
    chosen = callspec.params.get("target") if callspec else None
    if chosen is None:
        chosen = getattr(item, "target", None)
    return chosen if isinstance(chosen, Target) else None


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `-n`, keep each target's tests on one worker (one VM, one agent)."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None  # an explicit other mode (loadscope, worksteal...) is kept
    if not is_harness_run(config):
        return None
    return TargetScheduling(config, log, [t.id for t in targets_of(config)])


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Order items by target: one boot each (`-n` keeps a target on one worker)."""
    order: dict[str, int] = {}
    for item in items:
        chosen = item_target(item)
        if chosen is not None:
            order.setdefault(chosen.id, len(order))
            item.add_marker(pytest.mark.boot)

    def key(item: pytest.Item) -> int:
        chosen = item_target(item)
        return -1 if chosen is None else order[chosen.id]

    # Stable: tests without a target first, then each target's items together.
    items.sort(key=key)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A harness error in setup or teardown reads as its message, not a traceback."""
    rep = yield
    # Setup errors (a download, a boot, the agent's files) are the harness's own
    # words with the fix; the call phase has each item's repr_failure for that.
    # The class name is the harness's business, not the reader's (a
    # QemuStartError says nothing the message does not).
    error = call.excinfo.value if call.excinfo is not None else None
    if rep.when != "call" and isinstance(error, HarnessError):
        notes = getattr(error, "__notes__", [])
        rep.longrepr = "\n".join([item.nodeid, str(error), *notes])
    return rep


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Power off this process's last VM."""
    pool = session.config.stash.get(POOL, None)
    if pool is not None:
        pool.close()


def pytest_collect_file(
    file_path: Path, parent: pytest.Collector
) -> pytest.File | None:
    """Collect `scenarios/*.yaml` as scenarios and `policies/*.yaml` as hook checks."""
    folder = top_folder(file_path, parent.config.rootpath)
    if folder == "scenarios":
        return ScenarioFile.from_parent(parent, path=file_path)
    if folder == "policies":
        return PolicyFile.from_parent(parent, path=file_path)
    return None


def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, str] | None:
    """A hook check that found only warnings reads as a warning."""
    return report_status(report)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which matrix this run covers and in which mode scenarios run."""
    opts = options_of(config)
    mode = (
        f"scenarios assert Tetragon events ({opts.tetragon})"
        if opts.tetragon
        else "no --tetragon: scenarios run as firing checks (tracefs probes on each "
        "hook; events are not asserted)"
    )
    return [
        f"harness: kernels={opts.kernels} arch={opts.arches} "
        f"artefacts={opts.artefacts}",
        f"harness: {mode}",
    ]
