"""Each way a boot can fail gives its own error, with the evidence in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.accel import ACCEL_ENV, Accel, choose, demote, kvm_trial
from harness.arches import host_arch
from harness.cache import Cache
from harness.errors import BootTimeout, HarnessError, KernelPanic, QemuStartError
from harness.matrix import Matrix, Target
from harness.vm import VM, VMOptions, running

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


def test_a_guest_kvm_cannot_boot_comes_up_under_tcg_and_kvm_is_demoted(
    harness_matrix: Matrix, tmp_path: Path
) -> None:
    # Nested KVM can pass the trial and still hang real kernels. A KVM whose
    # every wait is scaled to 1/1000 (12 ms to readiness) fails a real guest
    # the same way on any host, with or without a working KVM.
    host = host_arch()
    if host is None:
        pytest.skip("no guest arch is the host's, so KVM is never chosen")
    target = harness_matrix.targets("6.1", host)[0]
    kernel = harness_matrix.kernel(target)
    own_cache = Cache(tmp_path / "cache")
    artefacts = tmp_path / "vm"
    hung_kvm = Accel("kvm", 0.001, "KVM trial guest ran")

    with VM(
        kernel,
        harness_matrix.initrd(kernel),
        hung_kvm,
        artefacts,
        on_kvm_failure=lambda reason: demote(host, own_cache, reason),
    ) as vm:
        assert vm.run(["uname", "-r"]).stdout.decode().strip() == kernel.release
        assert vm.accel.name == "tcg"

    assert "-accel tcg" in (artefacts / "qemu-cmd.txt").read_text()
    assert (artefacts / "qemu-stderr-kvm.log").is_file()
    verdict = json.loads(own_cache.path("accel", f"kvm-{host}.json").read_text())
    assert verdict["name"] == "tcg"
    assert "guest under KVM failed although the KVM trial ran" in verdict["reason"]
    assert choose(host, own_cache).name == "tcg"
    # This worker's pool may hold another test's VM; none of this test's is left.
    assert not [v for v in running() if v.artefacts == artefacts]
