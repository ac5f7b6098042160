"""Policy files as pytest items: the hook checks of one policy on one target.

`policies/file-access-etc.yaml::hooks[6.12-arm64]` passes when every hook
of the policy checks clean against the kernel's inventory, is reported as a
warning when only warnings were found, and fails on an error. The inventory
is captured once per kernel and arch (one boot, shared with the scenarios)
and cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import hooks, inventory
from harness import policy as policy_mod
from harness.errors import HarnessError
from harness.fixtures import target_properties
from harness.inventory import Inventory
from harness.matrix import Target
from harness.plugin_state import matrix_of, pool_of, targets_of
from harness.symbols import static_symbols

INVENTORIES = pytest.StashKey[dict[str, Inventory]]()
# Errors that say the kernel lacks a capability, not that the policy is
# wrong for it: the check is an expected failure there, with that reason.
KERNEL_LIMITS = frozenset(
    {
        "lsm-inactive",
        "lsm-unsupported",
        "no-trampolines",
        "override-unsupported",
        "override-multi",
        "enforcer-unsupported",
        "uprobe-unsupported",
    }
)
WARNING = "hook warning"


class HookCheckFailure(Exception):
    """A policy has a hook that will not load or will not work on a kernel."""


class PolicyFile(pytest.File):
    """A TracingPolicy file; one hook-check item per target."""

    def collect(self) -> Iterator[pytest.Item]:
        for target in targets_of(self.config):
            yield PolicyCheckItem.from_parent(
                self, name=f"hooks[{target.id}]", target=target
            )


def target_inventory(
    config: pytest.Config, target: Target, policies_dir: Path
) -> Inventory:
    """The target's kernel inventory: cached, or captured in the pool's VM."""
    cache = config.stash.setdefault(INVENTORIES, {})
    if target.id not in cache:
        matrix = matrix_of(config)
        kernel = matrix.kernel(target)
        policies = policy_mod.load_all(policy_mod.discover([policies_dir]))

        def boot() -> contextlib.AbstractContextManager[Any]:
            return contextlib.nullcontext(pool_of(config).vm(target))

        cache[target.id] = inventory.ensure(
            matrix.cache, kernel, boot, static_symbols(policies, target.arch)
        )
    return cache[target.id]


class PolicyCheckItem(pytest.Item):
    """The hook checks of one policy file on one target."""

    def __init__(self, *, target: Target, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def runtest(self) -> None:
        for name, value in target_properties(self.config, self.target):
            self.user_properties.append((name, value))
        inv = target_inventory(self.config, self.target, self.path.parent)
        findings = [
            finding
            for parsed in policy_mod.load(self.path)
            for finding in hooks.check_policy(parsed, inv)
        ]
        lines = [
            f"{f.severity:<7} {f.hook}: {f.reason}"
            + (f" [{f.where}]" if f.where else "")
            for f in findings
        ]
        worst = hooks.worst(findings)
        self.user_properties.append(("mode", "hook-check"))
        if lines:
            self.add_report_section("call", "hook checks", "\n".join(lines))
        if worst == "error":
            errors = [f for f in findings if f.severity == "error"]
            if all(f.code in KERNEL_LIMITS for f in errors):
                pytest.xfail("; ".join(f"{f.hook}: {f.reason}" for f in errors))
            raise HookCheckFailure("\n".join(lines))
        if worst == "warning":
            first = next(line for line in lines if line.startswith("warning"))
            self.user_properties += [("outcome", "warning"), ("reason", first)]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (HookCheckFailure, HarnessError)):
            return f"{self.nodeid}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


def report_status(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """Show a passed check that found warnings as a warning, not a plain pass."""
    # Collection reports have no user_properties.
    warned = ("outcome", "warning") in getattr(report, "user_properties", ())
    if report.when == "call" and report.passed and warned:
        return WARNING, "W", "WARNING"
    return None
