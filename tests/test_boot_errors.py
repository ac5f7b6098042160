"""Each way a boot can fail gives its own error, with the evidence in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.accel import ACCEL_ENV, kvm_trial
from harness.arches import host_arch
from harness.errors import BootTimeout, HarnessError, KernelPanic, QemuStartError
from harness.matrix import Matrix, Target
from harness.vm import VMOptions

pytestmark = pytest.mark.boot


@pytest.fixture
def x86(harness_matrix: Matrix) -> Target:
    """One x86_64 kernel of the catalogue."""
    return harness_matrix.targets("6.1", "x86_64")[0]


def test_kernel_panic_carries_the_panic_text(
    harness_matrix: Matrix, x86: Target, tmp_path: Path
) -> None:
    # No init in the initramfs under that name and no root= to fall back on.
    options = VMOptions(cmdline=("rdinit=/no-such-init",))
    with (
        pytest.raises(KernelPanic, match="Kernel panic") as caught,
        harness_matrix.vm(x86, tmp_path, options),
    ):
        pass
    assert "Unable to mount root fs" in str(caught.value)


def test_qemu_that_cannot_start_shows_its_stderr(
    harness_matrix: Matrix, x86: Target, tmp_path: Path
) -> None:
    options = VMOptions(memory_mb=-5)
    with (
        pytest.raises(QemuStartError, match="before the guest started") as caught,
        harness_matrix.vm(x86, tmp_path, options),
    ):
        pass
    assert "qemu-system-x86_64:" in str(caught.value)


def test_no_readiness_within_the_timeout(
    harness_matrix: Matrix, x86: Target, tmp_path: Path
) -> None:
    options = VMOptions(boot_timeout=1.0)
    with (
        pytest.raises(BootTimeout, match="no readiness within 1 s"),
        harness_matrix.vm(x86, tmp_path, options),
    ):
        pass
    assert (tmp_path / "qemu-cmd.txt").is_file()


def test_forced_kvm_that_fails_says_it_was_forced(
    harness_matrix: Matrix,
    x86: Target,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if host_arch() != "x86_64":
        pytest.skip("KVM runs x86_64 guests on an x86_64 host only")
    works, why = kvm_trial("x86_64")
    if works:
        pytest.skip(f"KVM works on this host ({why}): forcing it cannot fail")
    monkeypatch.setenv(ACCEL_ENV, "kvm")
    # A fresh matrix: the session's has its accelerator chosen already.
    matrix = Matrix(harness_matrix.catalogue, harness_matrix.cache)
    # Nested KVM may hang rather than fail: bound the wait.
    options = VMOptions(boot_timeout=15.0)
    with (
        pytest.raises((QemuStartError, BootTimeout), match="forced by HARNESS_ACCEL"),
        matrix.vm(x86, tmp_path, options),
    ):
        pass
    assert "-accel kvm" in (tmp_path / "qemu-cmd.txt").read_text()


def test_an_artefact_path_that_is_a_file_says_so(
    harness_matrix: Matrix, x86: Target, tmp_path: Path
) -> None:
    in_the_way = tmp_path / "artefacts"
    in_the_way.write_text("")
    with (
        pytest.raises(HarnessError, match="vm: Not a directory; pass --artefacts"),
        harness_matrix.vm(x86, in_the_way / "vm"),
    ):
        pass
