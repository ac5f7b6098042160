"""The host end of the control channel to the guest, over virtio-serial.

Protocol (one request at a time; every payload is an exact byte count):

    host  -> guest  RUN <id> <timeout_s> <script_len> <stdin_len>\\n <script> <stdin>
    guest -> host   RES <id> <status> <stdout_len> <stderr_len>\\n <stdout> <stderr>
    host  -> guest  OFF <id> 0 0 0\\n
    guest -> host   BYE <id>\\n

The guest announces itself once with `READY <release>\\n`. The script is run
by the guest's busybox sh under `timeout -s KILL`.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.errors import ChannelError, GuestCommandTimeout

log = logging.getLogger(__name__)

KILLED = 128 + 9


@dataclass(frozen=True)
class Result:
    """What a guest command gave back."""

    argv: tuple[str, ...]
    status: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def text(self) -> str:
        """stdout decoded as text."""
        return self.stdout.decode(errors="replace")

    def check(self) -> Result:
        """Raise if the command failed, with its stderr; else return self."""
        if self.status != 0:
            raise ChannelError(
                f"guest command {shlex.join(self.argv)} exited {self.status}:\n"
                + self.stderr.decode(errors="replace").strip()
            )
        return self


def script_for(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str:
    """A busybox sh script that runs argv with env and cwd, exiting with its status."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    if cwd:
        lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    lines.append(f"exec {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


class Channel:
    """A connected control channel; not thread-safe (one request at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.next_id = 1

    def _recv_until(self, predicate_len: int | None, deadline: float) -> None:
        while True:
            if predicate_len is None and b"\n" in self.buffer:
                return
            if predicate_len is not None and len(self.buffer) >= predicate_len:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(min(remaining, 1.0))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as e:
                # QEMU went away under us (crash, bad flags, poweroff).
                raise ChannelError(f"the control channel broke: {e}") from e
            if not chunk:
                raise ChannelError(
                    "the guest closed the control channel (did it crash?)"
                )
            self.buffer += chunk

    def read_line(self, deadline: float) -> str:
        """One protocol line, without its newline."""
        self._recv_until(None, deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def read_exact(self, size: int, deadline: float) -> bytes:
        """Exactly `size` payload bytes."""
        self._recv_until(size, deadline)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def wait_ready(self, deadline: float) -> str:
        """Wait for the guest's READY line; return the release it reports."""
        line = self.read_line(deadline)
        verb, _, release = line.partition(" ")
        if verb != "READY":
            raise ChannelError(f"expected READY from the guest, got {line!r}")
        return release

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes = b"",
        timeout: float = 60.0,
        script: str | None = None,
    ) -> Result:
        """Run argv (or a raw sh `script`) in the guest and return its result."""
        body = (script if script is not None else script_for(argv, env, cwd)).encode()
        request_id = self.next_id
        self.next_id += 1
        seconds = max(1, int(timeout + 0.999))
        header = f"RUN {request_id} {seconds} {len(body)} {len(stdin)}\n".encode()
        log.debug("guest run #%d: %s", request_id, shlex.join(argv))
        start = time.monotonic()
        self.sock.sendall(header + body + stdin)

        # The guest enforces the timeout; the host allows slack for the transfer.
        deadline = start + seconds + 30 + len(stdin) / 1e6
        try:
            fields = self.read_line(deadline).split()
        except TimeoutError:
            raise ChannelError(
                f"no reply from the guest {seconds + 30} s after running "
                f"{shlex.join(argv)}: the guest is stuck"
            ) from None
        if len(fields) != 5 or fields[0] != "RES" or fields[1] != str(request_id):
            raise ChannelError(f"out-of-protocol reply from the guest: {fields!r}")
        status, out_len, err_len = (int(f) for f in fields[2:])
        stdout = self.read_exact(out_len, deadline + 30)
        stderr = self.read_exact(err_len, deadline + 30)
        duration = time.monotonic() - start
        if status == KILLED and duration >= seconds:
            raise GuestCommandTimeout(
                f"guest command {shlex.join(argv)} timed out after {seconds} s "
                f"(pass a larger timeout=)\n{stderr.decode(errors='replace')[-2000:]}"
            )
        return Result(tuple(argv), status, stdout, stderr, duration)

    def power_off(self, timeout: float = 10.0) -> None:
        """Ask the guest to reboot (QEMU runs with -no-reboot, so it exits)."""
        self.sock.sendall(f"OFF {self.next_id} 0 0 0\n".encode())
        with contextlib.suppress(TimeoutError, ChannelError):
            self.read_line(time.monotonic() + timeout)
