"""The kernel matrix: catalogue, cache and archive wired together, one VM at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness import accel as accel_mod
from harness import initramfs
from harness.arches import get_arch
from harness.cache import Cache, sha256_file
from harness.catalogue import Catalogue, KernelSpec, comma_list, find_catalogue, load
from harness.debian import Archive, Progress
from harness.kernels import Kernel, Provisioner
from harness.settings import debian_keyring, debian_mirror
from harness.vm import VM, VMOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One cell column of the matrix: a catalogue entry on one arch."""

    spec: KernelSpec
    arch: str

    @property
    def id(self) -> str:
        """The id used in test names and reports: `6.1-arm64`."""
        return f"{self.spec.name}-{self.arch}"


class Matrix:
    """Everything needed to turn `6.1` and `arm64` into a running VM."""

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        cache: Cache | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.catalogue = catalogue or load(find_catalogue())
        self.cache = cache or Cache()
        self._archive: Archive | None = None
        self._progress = progress
        self._accels: dict[str, accel_mod.Accel] = {}

    @property
    def archive(self) -> Archive:
        """The Debian archive client (created on first use: it needs a mirror)."""
        if self._archive is None:
            kwargs = {"progress": self._progress} if self._progress else {}
            self._archive = Archive(
                debian_mirror(), self.cache, debian_keyring(), **kwargs
            )
        return self._archive

    @property
    def provisioner(self) -> Provisioner:
        """The provisioner over this matrix's cache and archive."""
        return Provisioner(self.cache, self.archive)

    def targets(self, kernels: str, arches: str) -> list[Target]:
        """The (kernel, arch) pairs a `--kernels` / `--arch` selection names."""
        wanted = comma_list(arches)
        for arch in wanted:
            get_arch(arch)
        return [
            Target(spec, arch)
            for spec in self.catalogue.select(kernels)
            for arch in (wanted or list(spec.arches))
            if arch in spec.arches
        ]

    def kernel(self, target: Target) -> Kernel:
        """Provision the target's kernel (download and unpack on first use)."""
        return self.provisioner.kernel(target.spec, target.arch)

    def accel(self, arch: str) -> accel_mod.Accel:
        """The accelerator for guests of `arch` (trial run once per host boot)."""
        chosen = self._accels.get(arch)
        if chosen is None or (chosen.name == "kvm" and not chosen.forced):
            # Read again each time: another worker may have demoted KVM.
            chosen = accel_mod.choose(arch, self.cache)
            self._accels[arch] = chosen
        return chosen

    def demote(self, arch: str, reason: str) -> accel_mod.Accel:
        """TCG for `arch` from now on, in this process and in the cache."""
        self._accels[arch] = accel_mod.demote(arch, self.cache, reason)
        return self._accels[arch]

    def initrd(self, kernel: Kernel, extra: dict[str, bytes] | None = None) -> Path:
        """The cached initramfs for a kernel: busybox, init, modules, extras."""
        busybox, bb_version = self.provisioner.busybox(kernel.arch)
        wanted = get_arch(kernel.arch).guest_modules
        modules = (
            initramfs.module_closure(kernel.modules, wanted) if kernel.modules else []
        )
        extra = extra or {}
        key = initramfs.fingerprint(
            busybox,
            initramfs.guest_file("init"),
            initramfs.guest_file("agent.sh"),
            *(data for _, data in modules),
            *(f"{k}\0" for k in sorted(extra)),
            *(extra[k] for k in sorted(extra)),
        )
        entry = self.cache.path("initramfs", f"{kernel.id}-{kernel.version}-{key}.cpio")
        digest_file = entry.with_name(entry.name + ".sha256")

        def build(tmp: Path) -> None:
            tmp.write_bytes(initramfs.build(busybox, modules, kernel.release, extra))
            digest_file.write_text(sha256_file(tmp))

        def valid(path: Path) -> bool:
            return (
                digest_file.is_file() and sha256_file(path) == digest_file.read_text()
            )

        log.debug("initramfs for %s uses busybox %s", kernel.id, bb_version)
        return self.cache.file(entry, build, valid)

    def vm(
        self,
        target: Target,
        artefacts: Path,
        options: VMOptions | None = None,
        extra: dict[str, bytes] | None = None,
    ) -> VM:
        """A VM for the target, not yet started (use it as a context manager)."""
        kernel = self.kernel(target)
        return VM(
            kernel,
            self.initrd(kernel, extra),
            self.accel(target.arch),
            artefacts,
            options,
            on_kvm_failure=lambda reason: self.demote(target.arch, reason),
        )
