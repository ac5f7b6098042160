"""Capture a real inventory, check policies against it and fire hooks: boots kernels.

One guest per --kernels x --arch target: the inventory is captured into a
temporary cache, the test policies are checked against it, then the firing
check probes a policy's hooks while `cat /etc/passwd` runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import firing, hooks, inventory, policy
from harness.cache import Cache
from harness.inventory import Inventory
from harness.matrix import Matrix, Target
from harness.symbols import abi_prefix

pytestmark = pytest.mark.boot

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Captured:
    """What one boot of a target gave."""

    inventory: Inventory
    cached: Path
    release: str
    report: firing.FiringReport


@pytest.fixture(scope="session")
def captured(
    target: Target, harness_matrix: Matrix, tmp_path_factory: pytest.TempPathFactory
) -> Captured:
    """Boot the target once: capture its inventory, then run the firing check."""
    kernel = harness_matrix.kernel(target)
    cache = Cache(tmp_path_factory.mktemp(f"cache-{target.id}"))
    artefacts = tmp_path_factory.mktemp(f"vm-{target.id}")
    (fire_policy,) = policy.load(DATA / "firing" / "policy.yaml")
    with harness_matrix.vm(target, artefacts) as vm:
        inv = inventory.ensure(
            cache, kernel, lambda: contextlib.nullcontext(vm), ["inet_csk_accept"]
        )
        report = firing.fire(vm, fire_policy.hooks, "cat /etc/passwd > /dev/null")
        release = vm.release
    cached = inventory.inventory_path(cache, kernel.id, kernel.version)
    return Captured(inv, cached, release, report)


def test_inventory_is_cached_and_describes_the_guest(
    captured: Captured, target: Target
) -> None:
    inv = captured.inventory
    assert captured.cached.is_file()
    assert inventory.load(captured.cached) == inv
    assert inv.release == captured.release and inv.arch == target.arch
    proto = inv.prototype("fd_install")
    assert proto is not None
    assert [p.type for p in proto.params] == ["unsigned int", "struct file *"]
    fields = inv.tracepoint_fields("syscalls/sys_enter_openat")
    assert fields is not None and "const char * filename" in fields
    assert inv.probes["inet_csk_accept"] == ""
    assert inv.rules.agreed >= 0.95 * inv.rules.sampled


def test_syscall_symbols_carry_the_arch_prefix(captured: Captured) -> None:
    inv = captured.inventory
    own = abi_prefix(inv.arch)
    other = abi_prefix("arm64" if inv.arch == "x86_64" else "x86_64")
    assert f"{own}sys_openat" in inv.text_symbols
    assert f"{own}sys_openat" in inv.filter_functions
    assert f"{other}sys_openat" not in inv.text_symbols


def test_policies_check_against_the_captured_kernel(captured: Captured) -> None:
    inv = captured.inventory
    (portable,) = policy.load(DATA / "policies" / "sys-openat.yaml")
    (x64,) = policy.load(DATA / "policies" / "x64-openat.yaml")
    assert hooks.worst(hooks.check_policy(portable, inv)) is None
    x64_findings = hooks.check_policy(x64, inv)
    if inv.arch == "arm64":
        assert [f.code for f in x64_findings] == ["symbol-missing"]
    else:
        assert x64_findings == []


def test_firing_tells_fired_from_silent(captured: Captured) -> None:
    result = {f.hook: f for f in captured.report.firings}
    assert captured.report.workload_status == 0
    assert result["kprobe fd_install"].status == "fired"
    assert result["kprobe sys_openat"].status == "fired"
    assert result["kprobe sys_setuid"].status == "silent"
    assert result["tracepoint raw_syscalls/sys_enter"].workload_hits > 0
