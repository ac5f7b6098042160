"""Ctrl-C and SIGTERM: stop every VM of the process at once, and say so.

A polite power-off takes seconds under TCG (the guest has to notice, sync and
reboot); someone who pressed Ctrl-C wants the prompt back, so an interrupt
sends QEMU SIGTERM at once and the VMs' `close` skips the power-off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from harness.vm import running

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a process stopped by the signal: 130 or 143."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def stop_running_vms() -> str:
    """Send every running VM's QEMU SIGTERM; the notice to show the user."""
    # Only signals are sent here: this runs inside signal handlers.
    vms = running()
    for vm in vms:
        vm.interrupt()
    return f"interrupted: stopping {len(vms)} VM(s)" if vms else "interrupted"


@contextlib.contextmanager
def stop_on_signals(notice: Callable[[str], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM stop the VMs and raise Interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        # A second signal must not cut the (bounded) cleanup of the first short.
        if fired:
            return
        fired = True
        notice(stop_running_vms())
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def write_stderr(line: str) -> None:
    """Write a line to stderr without Python's buffers: safe in a signal handler."""
    os.write(2, f"{line}\n".encode())
