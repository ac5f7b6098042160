"""What a VM says when its guest stops early, without booting a kernel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.accel import Accel
from harness.errors import KernelPanic, QemuStartError
from harness.kernels import Kernel
from harness.vm import VM, VMOptions

STOPPED = "Initramfs unpacking failed: write error\nreboot: Restarting system\n"
PANIC = "Kernel panic - not syncing: System is deadlocked on memory\n"


def stopped_vm(tmp_path: Path, memory_mb: int, console: str) -> VM:
    """A VM whose QEMU has exited after the guest printed `console`."""
    kernel = Kernel(
        "6.1", "x86_64", "6.1.0-50-cloud-amd64", "6.1.176-1", "debian",
        tmp_path / "vmlinuz", None, None, (),
    )  # fmt: skip
    artefacts = tmp_path / "vm"
    artefacts.mkdir()
    vm = VM(
        kernel, tmp_path / "initrd", Accel("tcg", 10.0, "no KVM"), artefacts,
        VMOptions(memory_mb=memory_mb),
    )  # fmt: skip
    vm.console_log.write_text(console)
    (artefacts / "qemu-stderr.log").write_text("")
    vm.proc = subprocess.Popen(["true"])
    vm.proc.wait()
    return vm


@pytest.mark.parametrize(
    ("console", "kind"), [(STOPPED, QemuStartError), (PANIC, KernelPanic)]
)
def test_a_guest_with_little_memory_that_stops_early_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    console: str,
    kind: type[Exception],
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    vm = stopped_vm(tmp_path, 128, console)
    try:
        error = vm._exit_error()
    finally:
        vm.close()
    assert isinstance(error, kind)
    assert "only 128 MiB of guest memory" in str(error).splitlines()[0]
    assert "256 or more" in str(error).splitlines()[0]


def test_enough_memory_is_not_blamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    vm = stopped_vm(tmp_path, 1024, STOPPED)
    try:
        error = vm._exit_error()
    finally:
        vm.close()
    assert "memory" not in str(error)
