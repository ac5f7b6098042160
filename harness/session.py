"""One VM (and one agent) per target per process, shared by every test on it.

pytest fixtures and scenario items both ask the pool for a target's VM. Tests
run grouped by target, so when a new target is asked for, the previous VM is
closed first: a worker holds at most one guest at a time, and each kernel
boots once per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from harness.errors import HarnessError
from harness.matrix import Matrix, Target
from harness.vm import VM, VMOptions

log = logging.getLogger(__name__)

A = TypeVar("A")


class Slot(Generic[A]):
    """The current target's VM and its agent, if one was started."""

    def __init__(self, target: Target, vm: VM) -> None:
        self.target = target
        self.vm = vm
        self.agent: A | None = None
        self.error: BaseException | None = None


class VMPool:
    """Boots targets on demand; at most one live VM per process."""

    def __init__(
        self,
        matrix: Matrix,
        artefacts: Path,
        options: VMOptions,
        extra_files: Callable[[Target], dict[str, bytes]] | None = None,
    ) -> None:
        self.matrix = matrix
        self.artefacts = artefacts
        self.options = options
        self.extra_files = extra_files
        self.slot: Slot[object] | None = None
        # The VM being booted: an interrupt mid-boot leaves it to `close`.
        self.starting: VM | None = None
        # The target whose kernel, initramfs or agent files are being fetched
        # or built, before it has a VM; an interrupt leaves it set, so that the
        # interrupt's notice can say what it stopped.
        self.provisioning: Target | None = None
        self.failed: dict[str, BaseException] = {}

    def vm(self, target: Target) -> VM:
        """The running VM of `target`, booting it (once) if needed."""
        if target.id in self.failed:
            raise self.failed[target.id]
        if self.slot is not None and self.slot.target == target:
            return self.slot.vm
        self.close()
        self.provisioning = target
        try:
            extra = self.extra_files(target) if self.extra_files else None
        except HarnessError as e:
            # An agent release that cannot be had fails the target's tests
            # once each, without fetching or unpacking it again for each.
            self.failed[target.id] = e
            self.provisioning = None
            raise
        try:
            machine = self.matrix.vm(
                target, self.artefacts / target.id / "vm", self.options, extra
            )
        except Exception:
            self.provisioning = None
            raise
        self.provisioning = None
        self.starting = machine
        try:
            machine.start()
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            self.starting = None
            machine.close()
            # A kernel that does not boot fails every test on it with the same
            # evidence, without booting again.
            if isinstance(e, Exception):
                self.failed[target.id] = e
            raise
        self.starting = None
        self.slot = Slot(target, machine)
        return machine

    def current(self, target: Target) -> Slot[object]:
        """The slot of `target` (booting it if needed)."""
        self.vm(target)
        assert self.slot is not None
        return self.slot

    def close(self, interrupted: bool = False) -> None:
        """Stop the current VM and its agent; at once, when `interrupted`."""
        slot, self.slot = self.slot, None
        starting, self.starting = self.starting, None
        if starting is not None:
            starting.close(interrupted)
        if slot is None:
            return
        try:
            stop = getattr(slot.agent, "stop", None)
            if stop is not None and not interrupted:
                stop()
        finally:
            slot.vm.close(interrupted)
