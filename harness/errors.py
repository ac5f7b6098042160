"""The harness's one error hierarchy: every message says what, where and how to fix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where (a file, option or variable), key, what."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(HarnessError):
    """Invalid configuration; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        head = f"{len(lines)} problem(s) in configuration:" if len(lines) > 1 else ""
        super().__init__("\n".join([head, *lines]) if head else lines[0])


class FetchError(HarnessError):
    """A download, an archive index or a cached artefact could not be obtained."""


class IntegrityError(FetchError):
    """A file does not match the hash or signature that vouches for it."""


class GuestError(HarnessError):
    """Building or talking to the guest failed."""


class BootError(HarnessError):
    """The VM did not reach readiness; `console_tail` holds the evidence."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        self.console_tail = console_tail
        if console_tail:
            message = f"{message}\n--- console tail ---\n{console_tail}"
        super().__init__(message)


class QemuStartError(BootError):
    """QEMU exited before the guest could start (bad flags, missing binary)."""


class KernelPanic(BootError):
    """The guest kernel panicked; the message carries the panic text."""


class BootTimeout(BootError):
    """No readiness signal within the boot timeout."""


class GuestCommandTimeout(GuestError):
    """A command in the guest ran past its timeout."""


class ChannelError(GuestError):
    """The control channel broke or spoke out of protocol."""
