"""What changes for a set of policies' hooks from one kernel to another.

Two kinds of change: findings that appear, disappear or change severity, and
what the kernel says about each hook's target (a function's prototype, a
tracepoint's fields), so that a signature change shows even when the policy
still loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import HarnessError
from harness.hooks import Checker, Finding, check_policy
from harness.inventory import Inventory
from harness.policy import (
    AnyHook,
    KprobeHook,
    LsmHook,
    Policy,
    TracepointHook,
)
from harness.policyschema import Severity


def facts(policy: Policy, hook: AnyHook, inv: Inventory) -> Mapping[str, str]:
    """What the kernel says about a hook's targets (prototypes, fields): for diffs."""
    cell = Checker(policy, inv)
    if isinstance(hook, KprobeHook):
        out = {}
        for sym, syscall in cell.symbols(hook):
            if syscall:
                params = cell.syscall_params(sym)
                shown = ", ".join(map(str, params)) if params is not None else "absent"
            else:
                proto = inv.prototype(sym)
                shown = str(proto) if proto else "absent"
            out[sym.removeprefix(cell.prefix)] = shown
        return out
    if isinstance(hook, TracepointHook):
        fields = inv.tracepoint_fields(f"{hook.subsystem}/{hook.event}")
        raw = inv.raw_tracepoint(hook.event) if hook.raw else None
        shown = str(raw) if hook.raw else "; ".join(fields) if fields else "absent"
        return {hook.label: shown if shown != "None" else "absent"}
    if isinstance(hook, LsmHook):
        proto = inv.prototype(f"bpf_lsm_{hook.hook}")
        return {hook.hook: str(proto) if proto else "absent"}
    return {}


@dataclass(frozen=True)
class Change:
    """One difference between two kernels for one hook of one policy."""

    arch: str
    policy: str
    hook: str
    # new: a finding only on the second kernel; gone: only on the first;
    # target: what the kernel says about the hook's target differs.
    kind: str
    subject: str
    before: str
    after: str
    severity: Severity | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def diff(a: Inventory, b: Inventory, policies: Iterable[Policy]) -> list[Change]:
    """What changes for these policies' hooks from kernel `a` to kernel `b`."""
    if a.arch != b.arch:
        raise HarnessError(
            f"diff compares one arch: {a.kernel_id} and {b.kernel_id} differ; "
            "pass one --arch"
        )
    changes: list[Change] = []
    for policy in policies:
        changes += _finding_changes(policy, a, b)
        for hook in policy.hooks:
            before, after = facts(policy, hook, a), facts(policy, hook, b)
            changes += [
                Change(
                    a.arch,
                    policy.id,
                    hook.label,
                    "target",
                    subject,
                    before.get(subject, "absent"),
                    after.get(subject, "absent"),
                )
                for subject in dict.fromkeys([*before, *after])
                if before.get(subject, "absent") != after.get(subject, "absent")
            ]
    return changes


def _finding_changes(policy: Policy, a: Inventory, b: Inventory) -> list[Change]:
    def keyed(inv: Inventory) -> dict[tuple[str, str, str], Finding]:
        return {(f.hook, f.code, f.where): f for f in check_policy(policy, inv)}

    before, after = keyed(a), keyed(b)
    changes = []
    for key in dict.fromkeys([*before, *after]):
        old, new = before.get(key), after.get(key)
        if old is not None and new is not None and old.severity == new.severity:
            continue
        hook, code, _ = key
        kind = "new" if old is None else "gone" if new is None else "severity"
        changes.append(
            Change(
                a.arch,
                policy.id,
                hook,
                kind,
                code,
                f"{old.severity}: {old.reason}" if old else "",
                f"{new.severity}: {new.reason}" if new else "",
                new.severity if new else None,
            )
        )
    return changes
