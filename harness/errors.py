"""The harness's one error hierarchy: every message says what, where and how to fix."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


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
        # The same file reached twice (one policy under two scenarios) reports
        # the same problem twice; once is enough, in the order first seen.
        self.problems = list(dict.fromkeys(problems))
        lines = [str(p) for p in self.problems]
        head = f"{len(lines)} problem(s) in configuration:" if len(lines) > 1 else ""
        super().__init__("\n".join([head, *lines]) if head else lines[0])


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`; did you mean 'timeout'?` when one of `choices` is close to `name`."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key_message(
    name: object, allowed: Collection[str], what: str = "key"
) -> str:
    """`unknown key; did you mean 'timeout'? (allowed: ...)`."""
    choices = sorted(allowed)
    hint = did_you_mean(name, choices)
    return f"unknown {what}{hint} (allowed: {', '.join(choices)})"


@dataclass
class Problems:
    """The problems found in one file so far, raised together at the end."""

    file: str
    items: list[Problem] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        """Record that `key` is wrong and why."""
        self.items.append(Problem(self.file, key, message))

    def unknown_keys(
        self, raw: Mapping[Any, Any], key: str, allowed: Collection[str]
    ) -> None:
        """Record every key of `raw` not in `allowed`, suggesting the closest."""
        for name in raw:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.add(where, unknown_key_message(name, allowed))

    def raise_if_any(self) -> None:
        """Raise one ConfigError listing every problem, if there is any."""
        if self.items:
            raise ConfigError(self.items)


class FetchError(HarnessError):
    """A download, an archive index or a cached artefact could not be obtained."""


class UnreachableError(FetchError):
    """A server could not be reached at all: refused, no route, no name, proxy."""


class IntegrityError(FetchError):
    """A file does not match the hash or signature that vouches for it."""


class GuestError(HarnessError):
    """Building or talking to the guest failed."""


# Between a boot error's message and the guest's last console lines.
CONSOLE_TAIL = "--- console tail ---"


class BootError(HarnessError):
    """The VM did not reach readiness; `console_tail` holds the evidence."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        self.console_tail = console_tail
        if console_tail:
            message = f"{message}\n{CONSOLE_TAIL}\n{console_tail}"
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
