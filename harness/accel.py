"""Choosing the accelerator: KVM only when a bounded trial proves it runs guests.

`/dev/kvm` can exist and still be useless (nested virtualisation where guests
hang), so the device's presence proves nothing. The trial boots a few bytes of
guest code that ask QEMU to exit; if QEMU has not exited within seconds, KVM
is declared unusable and TCG is used. The verdict is cached per host boot.
$HARNESS_ACCEL=kvm or =tcg overrides the trial (and its cached verdict).

A passed trial is necessary, not sufficient: under some nested hypervisors the
trial's real-mode code runs but a kernel hangs once it leaves real mode. So a
real guest that is not ready in time under an unforced KVM is booted again
under TCG, and when that works `demote` records TCG as the verdict for the
rest of the host boot (every worker reads it before its next boot).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.arches import get_arch, host_arch
from harness.cache import Cache
from harness.errors import ConfigError, Problem

log = logging.getLogger(__name__)

TRIAL_SECONDS = 5.0
ACCEL_ENV = "HARNESS_ACCEL"
ACCEL_CHOICES = ("kvm", "tcg")


@dataclass(frozen=True)
class Accel:
    """The accelerator for one guest arch, and how much slower than KVM it runs."""

    name: str
    # Multiplier for every wait: TCG runs guests 10 to 30 times slower than KVM.
    scale: float
    reason: str
    # Chosen by $HARNESS_ACCEL rather than by the trial.
    forced: bool = False

    def hint(self) -> str:
        """What to change when a guest fails under a forced accelerator, or ""."""
        if not self.forced:
            return ""
        other = "tcg" if self.name == "kvm" else "kvm"
        return (
            f"{self.name.upper()} was forced by {ACCEL_ENV}={self.name}: unset it to "
            f"let a trial guest choose, or set {ACCEL_ENV}={other}"
        )


# x86: at the reset vector (real mode, 0xFFFFFFF0, the last 16 bytes of the
# firmware image): mov al, 0x31; out 0xf4, al; hlt. With isa-debug-exit at
# 0xf4, QEMU exits with status (0x31 << 1) | 1 = 99.
X86_FIRMWARE = bytes(65536 - 16) + b"\xb0\x31\xe6\xf4\xf4" + bytes(11)
X86_EXPECTED = 99
# arm64: a raw image entered at EL1: PSCI SYSTEM_OFF (0x84000008) via hvc #0,
# which powers the virt machine off, so QEMU exits 0.
ARM64_IMAGE = struct.pack("<III", 0x52800100, 0x72B08000, 0xD4000002)
ARM64_EXPECTED = 0


def _trial_argv(arch: str, blob: Path) -> tuple[list[str], int]:
    facts = get_arch(arch)
    base = [facts.qemu, "-accel", "kvm", "-nodefaults", "-no-user-config"]
    base += ["-display", "none", "-m", "64", "-cpu", facts.cpu_kvm]
    if arch == "x86_64":
        argv = [*base, "-M", "microvm", "-bios", str(blob)]
        argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        return argv, X86_EXPECTED
    return [*base, "-M", "virt", "-kernel", str(blob)], ARM64_EXPECTED


def kvm_trial(arch: str, seconds: float = TRIAL_SECONDS) -> tuple[bool, str]:
    """Run the trial guest under KVM; (works, why)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return (
            False,
            "/dev/kvm is missing or not accessible (add the user to group kvm)",
        )
    blob_bytes = X86_FIRMWARE if arch == "x86_64" else ARM64_IMAGE
    with tempfile.TemporaryDirectory(prefix="harness-kvm-") as tmp:
        blob = Path(tmp) / "trial.bin"
        blob.write_bytes(blob_bytes)
        argv, expected = _trial_argv(arch, blob)
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=seconds, check=False
            )
        except subprocess.TimeoutExpired:
            return False, f"a KVM trial guest did not finish within {seconds:g} s"
        except FileNotFoundError:
            return False, f"{argv[0]} not found"
    if done.returncode != expected:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        return False, f"KVM trial exited {done.returncode}: {tail}"
    return True, "KVM trial guest ran"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def forced_accel() -> str:
    """The accelerator $HARNESS_ACCEL forces (kvm or tcg), or "" for the trial."""
    value = os.environ.get(ACCEL_ENV, "").strip()
    if value and value not in ACCEL_CHOICES:
        raise ConfigError(
            [
                Problem(
                    f"{ACCEL_ENV}={value}",
                    "",
                    f"not an accelerator; accepted values: {', '.join(ACCEL_CHOICES)} "
                    "(unset: KVM when a trial guest runs under it, else TCG)",
                )
            ]
        )
    return value


def _cached_verdict(verdict_file: Path) -> Accel | None:
    try:
        verdict = json.loads(verdict_file.read_text())
        if verdict.get("boot_id") != _boot_id():
            return None
        return Accel(str(verdict["name"]), float(verdict["scale"]), verdict["reason"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Unreadable or from another version of the harness: run the trial again.
        return None


def choose(arch: str, cache: Cache | None = None) -> Accel:
    """The forced accelerator, else KVM if the arch is the host's and a trial runs."""
    forced = forced_accel()
    if forced == "tcg":
        return Accel("tcg", 10.0, f"{ACCEL_ENV}=tcg", forced=True)
    if host_arch() != arch:
        # KVM runs guests of the host's arch only, forced or not.
        return Accel("tcg", 10.0, f"guest arch {arch} is not the host's")
    if forced == "kvm":
        # The user's word over the trial's: if KVM does not work, the boot
        # error says it was forced.
        return Accel("kvm", 1.0, f"{ACCEL_ENV}=kvm", forced=True)
    if cache is None:
        return _trial(arch)
    verdict_file = cache.path("accel", f"kvm-{arch}.json")
    cached = _cached_verdict(verdict_file)
    if cached is not None:
        return cached
    accel = _trial(arch)
    _record(verdict_file, accel)
    return accel


def demote(arch: str, cache: Cache | None, reason: str) -> Accel:
    """TCG for `arch` until the host reboots: KVM failed a real guest."""
    accel = Accel("tcg", 10.0, reason)
    log.warning("accelerator for %s: tcg from now on (%s)", arch, reason)
    if cache is not None:
        _record(cache.path("accel", f"kvm-{arch}.json"), accel)
    return accel


def _record(verdict_file: Path, accel: Accel) -> None:
    verdict = {"name": accel.name, "scale": accel.scale, "reason": accel.reason}
    _write_atomic(verdict_file, json.dumps({**verdict, "boot_id": _boot_id()}))


def _write_atomic(path: Path, text: str) -> None:
    # Written beside, renamed into place: never half a verdict, even when
    # interrupted, and never a stray temporary file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _trial(arch: str) -> Accel:
    works, why = kvm_trial(arch)
    log.info("accelerator for %s: %s (%s)", arch, "kvm" if works else "tcg", why)
    return Accel("kvm", 1.0, why) if works else Accel("tcg", 10.0, why)
