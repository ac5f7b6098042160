"""Per-architecture facts, as data: QEMU binary, machine, console, syscall prefix."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Arch:
    """What the harness needs to know to boot and inspect one guest architecture."""

    name: str
    debian: str
    uname_machine: str
    qemu: str
    machine: str
    cpu_tcg: str
    cpu_kvm: str
    console: str
    # Kernel arguments every boot of this arch gets, beyond the console.
    cmdline: tuple[str, ...]
    # QEMU device providing the virtio-serial control channel.
    serial_device: str
    # Modules (by name) the guest loads, in order, to reach its control channel.
    guest_modules: tuple[str, ...]
    syscall_prefix: str
    # Whether the kernel must be told the TSC frequency under TCG.
    needs_tsc_khz: bool


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        name="x86_64",
        debian="amd64",
        uname_machine="x86_64",
        qemu="qemu-system-x86_64",
        # microvm: no PCI and no firmware to run; virtio over MMIO, found via ACPI.
        machine="microvm",
        cpu_tcg="max",
        cpu_kvm="host",
        console="ttyS0",
        cmdline=("reboot=t",),
        serial_device="virtio-serial-device",
        guest_modules=("virtio", "virtio_ring", "virtio_mmio", "virtio_console"),
        syscall_prefix="__x64_sys_",
        needs_tsc_khz=True,
    ),
    "arm64": Arch(
        name="arm64",
        debian="arm64",
        uname_machine="aarch64",
        qemu="qemu-system-aarch64",
        machine="virt,gic-version=3",
        cpu_tcg="max,pauth-impdef=on",
        cpu_kvm="host",
        console="ttyAMA0",
        cmdline=(),
        serial_device="virtio-serial-device",
        guest_modules=("virtio", "virtio_ring", "virtio_mmio", "virtio_console"),
        syscall_prefix="__arm64_sys_",
        needs_tsc_khz=False,
    ),
}

ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}


def get_arch(name: str) -> Arch:
    """Return the facts for `name`; an unknown arch lists the known ones."""
    try:
        return ARCHES[name]
    except KeyError:
        known = ", ".join(ARCHES)
        hint = f" (did you mean {ALIASES[name]}?)" if name in ALIASES else ""
        raise HarnessError(f"unknown arch {name!r}{hint}; known: {known}") from None


def host_arch() -> str | None:
    """The harness arch name of this host, or None if no guest arch matches it."""
    machine = platform.machine()
    for arch in ARCHES.values():
        if arch.uname_machine == machine:
            return arch.name
    return None
