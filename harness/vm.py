"""One QEMU microVM: start it, wait for the guest, run commands, always clean up."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.accel import Accel
from harness.arches import get_arch
from harness.channel import Channel, Result
from harness.errors import (
    BootTimeout,
    ChannelError,
    HarnessError,
    KernelPanic,
    QemuStartError,
)
from harness.kernels import Kernel

log = logging.getLogger(__name__)

# Seconds to readiness under KVM; multiplied by the accelerator's scale.
BOOT_SECONDS = 12.0
# Guest MiB: below the minimum the initramfs does not even unpack; below
# LOW_MEMORY_MB a guest that stops early is told it may be memory.
MIN_MEMORY_MB = 128
LOW_MEMORY_MB = 256
# Seconds QEMU gets to exit after SIGTERM before SIGKILL.
STOP_GRACE = 2.0
PR_SET_PDEATHSIG = 1
# The VMs this process started and has not closed: what an interrupt stops.
_RUNNING: set[VM] = set()


def running() -> list[VM]:
    """The VMs of this process whose QEMU may still run."""
    return list(_RUNNING)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the harness dies without
    # cleaning up (SIGKILL, a crashed xdist worker), the kernel kills QEMU too.
    # PDEATHSIG follows the spawning *thread*, so a VM must be started and
    # closed by the same thread.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)


def host_tsc_khz() -> int:
    """The host TSC frequency, which TCG guests on x86 hosts see as their own."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return int(float(match.group(1)) * 1000) if match else 1_000_000


def runtime_dir() -> Path:
    """A private (0700) directory for control sockets."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    parent = base if base and os.access(base, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="harness-", dir=parent))


@dataclass(frozen=True)
class VMOptions:
    """How to size and wait for a VM."""

    memory_mb: int = 1024
    smp: int = 1
    boot_timeout: float | None = None
    cmdline: tuple[str, ...] = ()


def qemu_argv(
    kernel: Kernel,
    initrd: Path,
    accel: Accel,
    console: Path,
    sock: Path,
    opts: VMOptions,
) -> list[str]:
    """The exact QEMU command for a VM, as a list (never a shell string)."""
    arch = get_arch(kernel.arch)
    append = [f"console={arch.console}", "panic=-1", "loglevel=4", *arch.cmdline]
    if arch.needs_tsc_khz and accel.name == "tcg":
        # Under TCG the microvm guest can hang calibrating its clock.
        append += [f"tsc_early_khz={host_tsc_khz()}", "tsc=reliable"]
    append += opts.cmdline
    cpu = arch.cpu_kvm if accel.name == "kvm" else arch.cpu_tcg
    return [
        arch.qemu,
        "-M", arch.machine,
        "-accel", accel.name,
        "-cpu", cpu,
        "-m", str(opts.memory_mb),
        "-smp", str(opts.smp),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(kernel.image),
        "-initrd", str(initrd),
        "-append", " ".join(append),
        "-chardev", f"file,id=console,path={console}",
        "-serial", "chardev:console",
        "-device", arch.serial_device,
        "-chardev", f"socket,id=ctl,path={sock},server=on,wait=off",
        "-device", "virtserialport,chardev=ctl,name=harness.ctl",
    ]  # fmt: skip


def panic_text(console: str) -> str | None:
    """The panic report in a console log, or None if the kernel did not panic."""
    index = console.find("Kernel panic")
    if index < 0:
        return None
    start = console.rfind("\n", 0, max(0, index - 2000)) + 1
    return console[start : index + 600].strip()


class VM:
    """A running guest; use as a context manager so QEMU never outlives it."""

    def __init__(
        self,
        kernel: Kernel,
        initrd: Path,
        accel: Accel,
        artefacts: Path,
        options: VMOptions | None = None,
        on_kvm_failure: Callable[[str], Accel] | None = None,
    ) -> None:
        self.kernel = kernel
        self.initrd = initrd
        self.accel = accel
        # Called when this guest hung under a KVM the trial chose but booted
        # under TCG; returns the accelerator to record (see harness.accel).
        self.on_kvm_failure = on_kvm_failure
        self.options = options or VMOptions()
        self.artefacts = artefacts
        self.console_log = artefacts / "console.log"
        self.private = runtime_dir()
        self.sock_path = self.private / "ctl.sock"
        self.argv = qemu_argv(
            kernel, initrd, accel, self.console_log, self.sock_path, self.options
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.release = ""
        self.boot_seconds = 0.0
        self.interrupted = False

    @property
    def boot_timeout(self) -> float:
        """Seconds allowed from QEMU start to a ready guest."""
        return self.options.boot_timeout or BOOT_SECONDS * self.accel.scale

    def console_tail(self, lines: int = 40) -> str:
        """The last lines the guest printed on its console."""
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VM:
        try:
            self.start()
        except BaseException as e:
            self.close(interrupted=isinstance(e, KeyboardInterrupt))
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(interrupted=isinstance(exc, KeyboardInterrupt))

    def start(self) -> None:
        """Start QEMU and wait until the guest's control channel is ready.

        A guest that is not ready in time (or whose QEMU exits) under a KVM the
        trial chose, not forced, is booted again under TCG; if that works, KVM
        is demoted.
        """
        try:
            self._boot()
            return
        except (BootTimeout, QemuStartError) as e:
            if self.accel.name != "kvm" or self.accel.forced:
                raise
            kvm_error = e
        reason = (
            f"a {self.kernel.id} guest under KVM failed although the KVM trial "
            f"ran ({str(kvm_error).splitlines()[0]})"
        )
        log.warning("%s; booting it again under TCG", reason)
        self._halt()
        for name in ("console.log", "qemu-stderr.log"):
            # The KVM attempt's evidence stays beside the TCG boot's.
            with contextlib.suppress(OSError):
                kept = name.replace(".log", "-kvm.log")
                (self.artefacts / name).replace(self.artefacts / kept)
        self.accel = Accel("tcg", 10.0, reason)
        self.argv = qemu_argv(
            self.kernel, self.initrd, self.accel, self.console_log,
            self.sock_path, self.options,
        )  # fmt: skip
        try:
            self._boot()
        except HarnessError as e:
            e.add_note(f"booted under TCG after it failed under KVM: {reason}")
            raise
        if self.on_kvm_failure is not None:
            self.accel = self.on_kvm_failure(reason)

    def _halt(self) -> None:
        """Stop QEMU at once and forget the channel, so `_boot` can run again."""
        if self.channel is not None:
            self.channel.sock.close()
            self.channel = None
        if self.proc is not None:
            _stop(self.proc, first_wait=0.0)
            self.proc = None
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()

    def _boot(self) -> None:
        try:
            self.artefacts.mkdir(parents=True, exist_ok=True)
            (self.artefacts / "qemu-cmd.txt").write_text(shlex.join(self.argv) + "\n")
            stderr = (self.artefacts / "qemu-stderr.log").open("wb")
        except OSError as e:
            where = "" if e.filename == str(self.artefacts) else f" ({e.filename})"
            raise HarnessError(
                f"artefact directory {self.artefacts}: {e.strerror}{where}; "
                "pass --artefacts a directory you can write"
            ) from None
        log.debug("starting %s", shlex.join(self.argv))
        started = time.monotonic()
        deadline = started + self.boot_timeout
        _RUNNING.add(self)
        with stderr:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.channel = Channel(self._connect(deadline))
        try:
            self.release = self.channel.wait_ready(deadline)
        except TimeoutError:
            raise BootTimeout(
                f"{self.kernel.id}: no readiness within {self.boot_timeout:.0f} s "
                f"({self.accel.name}){self._accel_hint()}{self._memory_hint()}; "
                "console in "
                f"{self.console_log}",
                self.console_tail(),
            ) from None
        except ChannelError:
            raise self._exit_error() from None
        self.boot_seconds = time.monotonic() - started
        log.info(
            "kernel %s (%s) ready in %.1f s [%s]",
            self.release, self.kernel.arch, self.boot_seconds, self.accel.name,
        )  # fmt: skip

    def _connect(self, deadline: float) -> socket.socket:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._exit_error()
            if self.sock_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.sock_path))
                    return sock
                except OSError:
                    sock.close()
            time.sleep(0.02)
        raise BootTimeout(f"{self.kernel.id}: QEMU never opened its control socket")

    def _exit_error(self) -> Exception:
        assert self.proc is not None
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        console = (
            self.console_log.read_text(errors="replace")
            if self.console_log.exists()
            else ""
        )
        panic = panic_text(console)
        if panic:
            return KernelPanic(
                f"{self.kernel.id}: the kernel panicked{self._memory_hint()}:\n{panic}"
            )
        stderr = (self.artefacts / "qemu-stderr.log").read_text(errors="replace")
        if not console.strip():
            return QemuStartError(
                f"{self.kernel.id}: QEMU exited with status {status} before the guest "
                f"started{self._accel_hint()}; command in "
                f"{self.artefacts / 'qemu-cmd.txt'}:\n"
                + "\n".join(stderr.strip().splitlines()[-15:])
            )
        return QemuStartError(
            f"{self.kernel.id}: the guest stopped (QEMU status {status}) before it "
            f"was ready{self._accel_hint()}{self._memory_hint()}",
            self.console_tail(),
        )

    def _accel_hint(self) -> str:
        hint = self.accel.hint()
        return f" ({hint})" if hint else ""

    def _memory_hint(self) -> str:
        # A small guest fails in many ways (the initramfs half unpacked, no
        # init, an OOM panic); none of them says memory.
        memory = self.options.memory_mb
        if memory >= LOW_MEMORY_MB:
            return ""
        return (
            f" (only {memory} MiB of guest memory: give it {LOW_MEMORY_MB} or more, "
            "--memory or the ini's harness_memory)"
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes = b"",
        timeout: float = 60.0,
        check: bool = False,
    ) -> Result:
        """Run a command in the guest; `timeout` is in KVM seconds, scaled for TCG."""
        result = self.channel_or_fail().run(
            argv, env=env, cwd=cwd, stdin=stdin, timeout=timeout * self.accel.scale
        )
        return result.check() if check else result

    def shell(self, script: str, timeout: float = 60.0) -> Result:
        """Run a busybox sh script in the guest."""
        return self.channel_or_fail().run(
            ["sh", "-c", script], script=script, timeout=timeout * self.accel.scale
        )

    def copy_in(self, data: bytes, guest_path: str, mode: int = 0o644) -> None:
        """Write bytes to a file in the guest."""
        path = shlex.quote(guest_path)
        script = (
            f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode:o} {path}\n'
        )
        self.channel_or_fail().run(
            ["copy-in", guest_path],
            script=script,
            stdin=data,
            timeout=60 * self.accel.scale,
        ).check()

    def copy_out(self, guest_path: str) -> bytes:
        """Read a file from the guest."""
        script = f"cat {shlex.quote(guest_path)}\n"
        result = self.channel_or_fail().run(
            ["copy-out", guest_path], script=script, timeout=60 * self.accel.scale
        )
        return result.check().stdout

    def channel_or_fail(self) -> Channel:
        """The control channel, or an error if the VM is not running."""
        if self.channel is None:
            raise ChannelError("the VM is not running")
        return self.channel

    def interrupt(self) -> None:
        """Send QEMU SIGTERM now, and have `close` skip the power-off."""
        # Only a flag and a signal: this runs inside signal handlers.
        self.interrupted = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)

    def close(self, interrupted: bool = False) -> None:
        """Power the guest off (or stop it at once), and make sure QEMU is gone."""
        if interrupted:
            self.interrupt()
        try:
            # Only a guest that said READY can answer a power-off.
            polite = (
                not self.interrupted
                and bool(self.release)
                and self.channel is not None
                and self.proc is not None
                and self.proc.poll() is None
            )
            if polite and self.channel is not None:
                with contextlib.suppress(OSError):
                    self.channel.power_off(timeout=2 * self.accel.scale)
            if self.channel is not None:
                self.channel.sock.close()
                self.channel = None
            if self.proc is not None:
                _stop(self.proc, first_wait=3.0 if polite else 0.0)
        finally:
            _RUNNING.discard(self)
            shutil.rmtree(self.private, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes], first_wait: float) -> None:
    """Wait `first_wait` s for QEMU to exit, then SIGTERM, then SIGKILL."""
    steps = ((None, first_wait), (signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 3.0))
    for sig, seconds in steps:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=seconds)
            return
        except subprocess.TimeoutExpired:
            continue
