"""Progress for long work: a rich display on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

log = logging.getLogger(__name__)


class DownloadProgress:
    """A `harness.debian.Progress` callback; use as a context manager."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.logged: dict[str, float] = {}

    def __enter__(self) -> DownloadProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            self._log(label, done, total)
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total or None)
        self.progress.update(self.tasks[label], completed=done)

    def _log(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        first = label not in self.logged
        if first or (total and done >= total) or now - self.logged[label] > 10:
            self.logged[label] = now
            size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done} B"
            log.info("downloading %s: %s", label, size)
