"""Running one scenario case on one target: with the agent, or as a firing check.

With Tetragon, the case's policies are loaded (once per VM), the workload
runs, and the events it caused are held against the expectations. Without
an agent, each hook the expectations name is probed through tracefs while the
workload runs: that says whether the hook fires on this kernel at all.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from debian.debian_support import Version

from harness import firing, initramfs
from harness import policy as policy_mod
from harness.agent import Tetragon
from harness.arches import get_arch
from harness.errors import GuestError
from harness.events import Event, Window, attribute, parse_lines
from harness.kernels import Kernel
from harness.loaderrors import LoadFailure, PolicyLoadError
from harness.matching import Expectation, check
from harness.scenarios import Case, KernelFacts, Scenario
from harness.steps import failed_step
from harness.vm import VM

MARK = "HARNESS-WORKLOAD"
# Where a scenario's `modules:` land in the guest, as NAME.ko, not loaded.
EXTRA_MODULES = "/lib/modules/extra"


@dataclass
class Outcome:
    """How a case went: pass or not, the readable report, phase timings."""

    mode: str
    passed: bool
    report: str
    timings: dict[str, float] = field(default_factory=dict)
    load_failure: LoadFailure | None = None
    skipped: str = ""


def kernel_facts(vm: VM, kernel: Kernel, agent: str | None = None) -> KernelFacts:
    """The facts scenario conditions test: the guest's, the kernel's, the mode's."""
    lsm = vm.run(["cat", "/sys/kernel/security/lsm"]).text.strip()
    config: dict[str, str] = {}
    if kernel.config is not None:
        for line in kernel.config.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("CONFIG_"):
                config[key] = value
    upstream = Version(kernel.version).upstream_version or kernel.version
    return KernelFacts(
        kernel=kernel.name,
        arch=kernel.arch,
        version=upstream,
        lsms=frozenset(filter(None, lsm.split(","))),
        config=config or None,
        agent=agent,
    )


def install_modules(vm: VM, names: Sequence[str]) -> float:
    """Copy modules of the guest's kernel (and their dependencies) to EXTRA_MODULES.

    They are copied over the control channel when a case runs, so the guest
    image, cached per kernel, stays the same for every scenario.
    """
    started = time.monotonic()
    kernel = vm.kernel
    if kernel.modules is None:
        raise GuestError(
            f"{kernel.id}: `modules:` needs the kernel's modules, and this kernel "
            "came without them (see kernels.yaml)"
        )
    builtin = initramfs.builtin_modules(kernel.modules) & set(names)
    if builtin:
        raise GuestError(
            f"{kernel.id}: {', '.join(sorted(builtin))} is built into the kernel, "
            "so there is no module file to copy; add a `skip` condition for it"
        )
    for name, data in initramfs.module_closure(kernel.modules, names):
        vm.copy_in(data, f"{EXTRA_MODULES}/{name}.ko")
    return time.monotonic() - started


def _wrapped(case: Case) -> str:
    # The first line names the workload's shell and the guest's clock, so its
    # events can be told from the agent's own and the harness's commands.
    return f'echo "{MARK} $$ $(date +%s)"\n{case.script()}'


def _workload_identity(stdout: str) -> tuple[int, int]:
    match = re.search(rf"^{MARK} (\d+) (\d+)$", stdout, re.MULTILINE)
    if match is None:
        raise GuestError(f"the workload did not start as expected:\n{stdout[-2000:]}")
    return int(match.group(1)), int(match.group(2))


def load_policies(
    agent: Tetragon, scenario: Scenario
) -> tuple[float, LoadFailure | None]:
    """Add the scenario's policies; (seconds, the first failure or None)."""
    total = 0.0
    for pol in scenario.policies:
        try:
            total += agent.add_policy(pol.name, pol.path.read_text())
        except PolicyLoadError as e:
            return total, replace(e.failure, source=str(pol.path))
    return total, None


def _collect(agent: Tetragon, pid: int, window: Window, wait: float) -> list[Event]:
    """Events until the workload's own exit is reported (the agent's signal)."""
    events: list[Event] = []
    deadline = time.monotonic() + wait
    while True:
        data = agent.read_new()
        if data:
            events += parse_lines(data.decode(errors="replace").splitlines())
        done = any(
            e.type == "process_exit" and e.process.pid == pid and e.time_ns in window
            for e in events
        )
        if done or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def run_with_agent(
    agent: Tetragon, scenario: Scenario, case: Case, artefacts: Path
) -> Outcome:
    """Load the policies, run the workload, match the events it caused."""
    timings: dict[str, float] = {}
    timings["policy_load"], failure = load_policies(agent, scenario)
    if failure is not None:
        return Outcome("tetragon", False, failure.describe(), timings, failure)
    if scenario.modules:
        timings["modules"] = install_modules(agent.vm, scenario.modules)
    agent.read_new()

    started = time.monotonic()
    result = agent.vm.shell(_wrapped(case), timeout=case.timeout)
    timings["workload"] = time.monotonic() - started
    pid, guest_start = _workload_identity(result.text)
    window = Window.from_seconds(guest_start - 1, guest_start + timings["workload"] + 2)
    started = time.monotonic()
    events = _collect(agent, pid, window, wait=2 * agent.vm.accel.scale)
    timings["collect"] = time.monotonic() - started

    mine = attribute(events, window=window, pids=[pid])
    prefix = get_arch(agent.vm.kernel.arch).syscall_prefix
    matched = check(mine, case.expect, case.expect_not, ordered=case.ordered,
                    syscall_prefix=prefix)  # fmt: skip
    _save(artefacts, events, mine, result.text + result.stderr.decode(errors="replace"))
    report = matched.render()
    if result.status != 0:
        output = result.text + result.stderr.decode(errors="replace")
        report = f"{workload_failure(result.status, output)}\n{report}"
    return Outcome("tetragon", matched.ok and result.status == 0, report, timings)


def workload_failure(status: int, output: str) -> str:
    """Why a workload's exit status fails its case, naming the step that broke."""
    step = failed_step(output)
    head = step if step else f"the workload exited {status}"
    return f"{head}; its output:\n{output.strip()[-2000:]}"


def _save(
    artefacts: Path, events: Sequence[Event], mine: Sequence[Event], out: str
) -> None:
    artefacts.mkdir(parents=True, exist_ok=True)
    with (artefacts / "events.jsonl").open("w") as f:
        for event in events:
            f.write(json.dumps(event.raw) + "\n")
    with (artefacts / "workload-events.jsonl").open("w") as f:
        for event in mine:
            f.write(json.dumps(event.raw) + "\n")
    (artefacts / "workload.out").write_text(out)


def _targets_for(expectation: Expectation, prefix: str) -> list[str] | None:
    """What a fired probe's target must look like to stand for an expectation."""
    event = expectation.event
    if event.syscall:
        return [f"{prefix}{event.syscall}", f"sys_{event.syscall}"]
    if event.function is not None and event.function.full:
        name = event.function.full
        return [name, f"bpf_lsm_{name}", f"bpf_lsm_{name.removeprefix('security_')}"]
    if event.tracepoint is not None and event.tracepoint.full:
        return [event.tracepoint.full]
    return None


def run_firing(vm: VM, scenario: Scenario, case: Case) -> Outcome:
    """Probe the scenario's hooks through tracefs while the workload runs."""
    parsed = [p for pol in scenario.policies for p in policy_mod.load(pol.path)]
    refused = [str(f) for p in parsed for f in p.findings if f.severity == "error"]
    if refused:
        # The agent would reject the policy whatever the kernel: a firing check
        # of its hooks would pass a policy that can never report anything.
        return Outcome(
            "firing", False, "the agent refuses the policy as written:\n"
            + "\n".join(refused),
        )  # fmt: skip
    hooks = [hook for p in parsed for hook in p.hooks]
    prefix = get_arch(vm.kernel.arch).syscall_prefix
    wanted = [(e, _targets_for(e, prefix)) for e in case.expect]
    checkable = [(e, t) for e, t in wanted if t]
    if not checkable:
        return Outcome(
            "firing", True, "", skipped="no expected event names a hook to probe: "
            "what it asserts needs the agent (pass --tetragon)",
        )  # fmt: skip
    timings = {}
    if scenario.modules:
        timings["modules"] = install_modules(vm, scenario.modules)
    started = time.monotonic()
    report = firing.fire(vm, hooks, case.script(), timeout=case.timeout)
    timings["workload"] = time.monotonic() - started
    lines, ok = [], True
    for expectation, names in checkable:
        hits = [f for f in report.firings if set(f.targets) & set(names)]
        fired = any(f.status == "fired" for f in hits)
        ok = ok and fired
        state = (
            ", ".join(
                f"{f.hook}: {f.status} ({f.workload_hits} in workload, "
                f"{f.other_hits} elsewhere)"
                for f in hits
            )
            or "no probe set"
        )
        lines.append(f"{'fired ' if fired else 'SILENT'} {expectation.name}: {state}")
    if report.workload_status != 0:
        # The steps' `exit:` hold in firing mode too: a workload that broke
        # early may have fired the hook without doing what the case says.
        ok = False
        lines.insert(
            0, workload_failure(report.workload_status, report.workload_output)
        )
    return Outcome("firing", ok, "\n".join(lines), timings)
