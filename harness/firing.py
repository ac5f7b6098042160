"""Firing check: does a hook fire while a workload runs, with no agent installed?

Each kprobe hook gets a tracefs kprobe on its symbol(s), each tracepoint hook
its event, each LSM hook a kprobe on `bpf_lsm_<hook>` (what the BPF LSM
program would attach to). The workload runs under a shell whose pid is known,
`sched_process_fork` follows its children, and a hook "fired" when one of its
events came from the workload's processes. This tells a hook that never fires
on a kernel from an agent that filtered the event away.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import GuestError
from harness.policy import AnyHook, KprobeHook, LsmHook, TracepointHook
from harness.symbols import call_symbol
from harness.vm import VM

log = logging.getLogger(__name__)

TRACING = "/sys/kernel/tracing"
GROUP = "harness_fire"
FORK_EVENT = "sched/sched_process_fork"
# `comm-pid [cpu] flags timestamp: event: body`; flags are absent with some
# trace_options and `(tgid)` appears with record-tgid.
LINE_RE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[\d+\]\s+"
    r"(?:\S+\s+)?\d+\.\d+:\s+(?P<event>[^:\s]+):\s?(?P<body>.*)$"
)
FORK_RE = re.compile(r"pid=(?P<parent>\d+).*child_pid=(?P<child>\d+)")
UNSET_RE = re.compile(r"^harness-unset (?P<event>\S+) (?P<target>.*)$", re.MULTILINE)
ROOT_RE = re.compile(r"^harness-root (?P<pid>\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Probe:
    """One tracefs event standing for (part of) a hook."""

    hook: str
    event: str
    target: str
    # The kprobe_events line, or "" for a tracepoint enabled as it is.
    definition: str = ""


@dataclass(frozen=True)
class Firing:
    """Whether one hook fired in the workload's processes."""

    hook: str
    targets: tuple[str, ...]
    workload_hits: int
    other_hits: int
    unset: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """`fired`, `silent` (set but never hit by the workload) or `unset`."""
        if self.workload_hits:
            return "fired"
        return "unset" if len(self.unset) == len(self.targets) else "silent"


@dataclass(frozen=True)
class FiringReport:
    """The outcome of one workload run under probes."""

    firings: tuple[Firing, ...]
    workload_status: int
    workload_output: str
    seconds: float
    root_pid: int


def plan(hooks: Sequence[AnyHook], arch: str) -> list[Probe]:
    """The tracefs events that stand for each hook on an arch."""
    probes: list[Probe] = []
    for n, hook in enumerate(hooks):
        if isinstance(hook, KprobeHook):
            for m, call in enumerate(hook.calls):
                sym = call_symbol(call, arch, bool(hook.list_name))[0] or call.name
                event = f"h{n}_{m}"
                probes.append(Probe(hook.label, event, sym, f"p:{GROUP}/{event} {sym}"))
        elif isinstance(hook, TracepointHook) and not hook.raw:
            target = f"{hook.subsystem}/{hook.event}"
            probes.append(Probe(hook.label, hook.event, target))
        elif isinstance(hook, LsmHook):
            event, sym = f"h{n}_0", f"bpf_lsm_{hook.hook}"
            probes.append(Probe(hook.label, event, sym, f"p:{GROUP}/{event} {sym}"))
    return probes


def _script(probes: Sequence[Probe], workload: str) -> str:
    lines = [
        f"cd {TRACING} || exit 2",
        "echo 0 > tracing_on; echo > trace",
        f"echo 1 > events/{FORK_EVENT}/enable",
    ]
    for p in probes:
        target = shlex.quote(p.target)
        if p.definition:
            add = f"echo {shlex.quote(p.definition)} >> kprobe_events"
            enable = f"echo 1 > events/{GROUP}/{p.event}/enable"
        else:
            add = "true"
            enable = f"echo 1 > events/{p.target}/enable"
        unset = f"echo harness-unset {p.event} {target}"
        lines.append(f"{{ {add} && {enable}; }} 2>/dev/null || {unset}")
    lines += [
        "echo 1 > tracing_on",
        # The workload's shell prints its pid first: every process it forks
        # is then followed through sched_process_fork.
        f"sh -c 'echo harness-root $$; exec sh -c \"$1\"' sh {shlex.quote(workload)}"
        " > /tmp/harness-workload.out 2>&1",
        "status=$?",
        "echo 0 > tracing_on",
        "cat trace > /tmp/harness-trace",
        *_cleanup(probes),
        "cat /tmp/harness-workload.out; echo harness-status $status",
    ]
    return "\n".join(lines) + "\n"


def _cleanup(probes: Sequence[Probe]) -> list[str]:
    lines = [f"echo 0 > events/{FORK_EVENT}/enable"]
    for p in probes:
        if p.definition:
            lines.append(f"echo 0 > events/{GROUP}/{p.event}/enable 2>/dev/null")
            lines.append(f"echo '-:{GROUP}/{p.event}' >> kprobe_events 2>/dev/null")
        else:
            lines.append(f"echo 0 > events/{p.target}/enable 2>/dev/null")
    return lines


def descendants(trace: str, root: int) -> set[int]:
    """The root pid and every pid forked from it (transitively) in a trace."""
    pids = {root}
    for line in trace.splitlines():
        match = LINE_RE.match(line)
        if match and match["event"] == "sched_process_fork":
            fork = FORK_RE.search(match["body"])
            if fork and int(fork["parent"]) in pids:
                pids.add(int(fork["child"]))
    return pids


def count_hits(
    trace: str, probes: Sequence[Probe], pids: set[int]
) -> dict[str, tuple[int, int]]:
    """Per event name: hits in `pids`, and hits elsewhere."""
    wanted = {p.event for p in probes}
    hits = {e: [0, 0] for e in wanted}
    for line in trace.splitlines():
        match = LINE_RE.match(line)
        if match and match["event"] in wanted:
            mine = int(match["pid"]) in pids
            hits[match["event"]][0 if mine else 1] += 1
    return {e: (h[0], h[1]) for e, h in hits.items()}


def summarise(
    probes: Sequence[Probe], hits: dict[str, tuple[int, int]], unset: set[str]
) -> list[Firing]:
    """One Firing per hook, over all of its events."""
    by_hook: dict[str, list[Probe]] = {}
    for p in probes:
        by_hook.setdefault(p.hook, []).append(p)
    return [
        Firing(
            hook,
            tuple(p.target for p in group),
            sum(hits[p.event][0] for p in group if p.event not in unset),
            sum(hits[p.event][1] for p in group if p.event not in unset),
            tuple(p.target for p in group if p.event in unset),
        )
        for hook, group in by_hook.items()
    ]


def fire(
    vm: VM, hooks: Sequence[AnyHook], workload: str, timeout: float = 120.0
) -> FiringReport:
    """Probe each hook, run `workload` (sh syntax) in the guest, report per hook."""
    probes = plan(hooks, vm.kernel.arch)
    start = time.monotonic()
    result = vm.shell(_script(probes, workload), timeout=timeout)
    if result.status == 2:
        raise GuestError(f"{vm.kernel.id}: no tracefs at {TRACING} in the guest")
    trace = vm.copy_out("/tmp/harness-trace").decode(errors="replace")
    root = ROOT_RE.search(result.text)
    status = re.search(r"harness-status (\d+)", result.text)
    if root is None or status is None:
        raise GuestError(
            f"{vm.kernel.id}: the workload did not start under the firing check:\n"
            + result.text[-2000:]
        )
    unset = {m["event"] for m in UNSET_RE.finditer(result.text)}
    pids = descendants(trace, int(root["pid"]))
    firings = summarise(probes, count_hits(trace, probes, pids), unset)
    output = ROOT_RE.sub("", UNSET_RE.sub("", result.text)).rsplit("harness-status", 1)[
        0
    ]
    for f in firings:
        log.info(
            "%s: %s %s (%d in workload, %d elsewhere)",
            vm.kernel.id,
            f.hook,
            f.status,
            f.workload_hits,
            f.other_hits,
        )
    return FiringReport(
        tuple(firings),
        int(status[1]),
        output.strip(),
        time.monotonic() - start,
        int(root["pid"]),
    )
