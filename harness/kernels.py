"""Provisioning: a catalogue entry and an arch become a bootable kernel on disk."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from debian.debfile import DebFile
from debian.debian_support import Version

from harness.arches import get_arch
from harness.cache import Cache, sha256_file
from harness.catalogue import KernelSpec
from harness.debian import Archive, Package, newest, unreachable
from harness.errors import FetchError, HarnessError, IntegrityError, UnreachableError

log = logging.getLogger(__name__)

BUSYBOX_SUITE = "bookworm"
# Bumped when the unpacked layout or the manifest changes: older entries are
# rebuilt from their (cached) packages.
LAYOUT = 2


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: image, modules and the exact version it came from."""

    name: str
    arch: str
    release: str
    version: str
    source: str
    image: Path
    modules: Path | None
    config: Path | None
    packages: tuple[str, ...]

    @property
    def id(self) -> str:
        """The matrix id, as in test ids: `6.1-arm64`."""
        return f"{self.name}-{self.arch}"


def in_series(version: str, series: str) -> bool:
    """Whether a Debian package version belongs to a series like `6.1` or `7.x`."""
    upstream = Version(version).upstream_version or ""
    prefix = series[:-1] if series.endswith(".x") else f"{series}."
    return upstream.startswith(prefix)


def resolve(spec: KernelSpec, arch: str, archive: Archive) -> list[Package]:
    """The packages that make up the newest cloud kernel of `spec` for `arch`."""
    debarch = get_arch(arch).debian
    image = re.compile(rf"^linux-image-(?P<abi>.+)-cloud-{debarch}$")
    found: list[tuple[Package, list[Package]]] = []
    errors: list[FetchError] = []
    for suite in spec.suites:
        try:
            index = archive.packages(suite, debarch)
        except FetchError as e:
            errors.append(e)
            continue
        for package in index:
            if image.match(package.name) and in_series(package.version, spec.series):
                found.append((package, index))
    offline = [e for e in errors if isinstance(e, UnreachableError)]
    if offline and len(offline) == len(spec.suites):
        causes = "\n".join(str(e.__cause__ or e) for e in offline)
        raise UnreachableError(
            f"kernels.{spec.name}: {unreachable(archive.mirror, spec.suites)}\n{causes}"
        )
    best = newest(p for p, _ in found)
    if best is None:
        detail = "\n".join(str(e) for e in errors)
        raise FetchError(
            f"kernels.{spec.name}: no cloud kernel of series {spec.series} for "
            f"{debarch} in suites {', '.join(spec.suites)} of {archive.mirror}"
            + (f"\n{detail}" if detail else "")
        )
    index = next(i for p, i in found if p is best)
    abi = image.match(best.name)["abi"]  # type: ignore[index]
    # Newer kernels split the image package into linux-binary (the image),
    # linux-modules and linux-base (config, System.map, modules.builtin).
    kinds = ("binary", "modules", "base")
    parts = {f"linux-{kind}-{abi}-cloud-{debarch}" for kind in kinds}
    extra = [p for p in index if p.name in parts and p.version == best.version]
    return [best, *extra]


def _extract_kernel(debs: Iterable[Path], dest: Path) -> None:
    """Unpack boot/ and the modules tree of kernel packages into `dest`."""
    for deb in debs:
        with DebFile(str(deb)).data.tgz() as tar:
            members = [
                m
                for m in tar.getmembers()
                if (m.isfile() or m.isdir())
                and re.match(r"^\.?/?(boot/|(usr/)?lib/modules/)", m.name)
            ]
            tar.extractall(dest, members=members, filter="data")
    usr = dest / "usr" / "lib" / "modules"
    if usr.is_dir():
        (dest / "lib").mkdir(exist_ok=True)
        usr.rename(dest / "lib" / "modules")
        shutil.rmtree(dest / "usr")


@dataclass(frozen=True)
class Known:
    """What is known of a kernel without fetching it, for `harness kernels list`."""

    # The exact version `kernel()` provides; "" when only a download can tell.
    version: str
    # Unpacked in the cache, ready to boot; None for an image used where it is.
    cached: bool | None


def _deb_version(deb: Path) -> str:
    """The package version in a .deb's control file."""
    return str(DebFile(str(deb)).debcontrol()["Version"])


def _manifest_valid(directory: Path) -> bool:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return False
    data = json.loads(manifest.read_text())
    if data.get("layout") != LAYOUT:
        return False
    image = directory / data["image"]
    return image.is_file() and sha256_file(image) == str(data["image_sha256"])


def _kernel_from_dir(spec: KernelSpec, arch: str, directory: Path) -> Kernel:
    data = json.loads((directory / "manifest.json").read_text())
    modules = directory / "lib" / "modules" / data["release"]
    config = directory / data["config"] if data.get("config") else None
    return Kernel(
        name=spec.name,
        arch=arch,
        release=data["release"],
        version=data["version"],
        source=spec.source,
        image=directory / data["image"],
        modules=modules if modules.is_dir() else None,
        config=config,
        packages=tuple(data["packages"]),
    )


def _first(root: Path, *patterns: str) -> Path | None:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def _unpack_debs(
    debs: list[Path], version: str, packages: list[str], tmp: Path
) -> None:
    _extract_kernel(debs, tmp)
    image = _first(tmp, "boot/vmlinu[xz]-*", "lib/modules/*/vmlinu[xz]")
    if image is None:
        names = ", ".join(d.name for d in debs)
        raise FetchError(f"no vmlinuz in {names}: not a kernel package")
    if image.parent.name == "boot":
        release = image.name.split("-", 1)[1]
    else:
        release = image.parent.name
    config = _first(tmp, f"boot/config-{release}", f"lib/modules/{release}/config")
    system_map = _first(
        tmp, f"boot/System.map-{release}", f"lib/modules/{release}/System.map"
    )
    manifest = {
        "layout": LAYOUT,
        "release": release,
        "version": version,
        "packages": packages,
        "image": str(image.relative_to(tmp)),
        "image_sha256": sha256_file(image),
        "config": str(config.relative_to(tmp)) if config else None,
        "system_map": str(system_map.relative_to(tmp)) if system_map else None,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def wrong_sha256(spec: KernelSpec, actual: str) -> str:
    """Why a kernel fetched by URL was refused, and the two ways to fix it."""
    return (
        f"{spec.where('sha256')}: {spec.url} does not match: expected sha256 "
        f"{spec.sha256}, got {actual}; nothing was cached. Correct `sha256:` if "
        "this is the file you meant (sha256sum prints it), or `url:` if it is not"
    )


class Provisioner:
    """Turns catalogue entries into bootable kernels, through the cache."""

    def __init__(self, cache: Cache, archive: Archive) -> None:
        self.cache = cache
        self.archive = archive

    def kernel(self, spec: KernelSpec, arch: str) -> Kernel:
        """Fetch (if needed) and return the kernel of `spec` for `arch`."""
        if arch not in spec.arches:
            raise HarnessError(
                f"kernels.{spec.name}: arch {arch} is not listed for this kernel "
                f"(listed: {', '.join(spec.arches)}); add it to its `arch:`"
            )
        if spec.source == "debian":
            return self._debian(spec, arch)
        if spec.source == "url":
            return self._url(spec, arch)
        return self._local(spec, arch)

    def resolve_version(self, spec: KernelSpec, arch: str) -> str:
        """The exact version `kernel()` would provide, without fetching a kernel.

        "" for a `.deb` by URL that has not been downloaded: only its control
        file says which version it is.
        """
        return self.known(spec, arch).version

    def known(self, spec: KernelSpec, arch: str) -> Known:
        """Version and cache state of a kernel, from the catalogue, the archive's
        index and the cache; nothing is downloaded but the index."""
        if spec.source == "debian":
            version = resolve(spec, arch, self.archive)[0].version
            return Known(version, _manifest_valid(self._entry(spec, arch, version)))
        if spec.source == "url":
            return self._known_url(spec, arch)
        if spec.debs:
            deb = self._local_debs(spec)[0]
            entry = self._entry(spec, arch, sha256_file(deb)[:16])
            # Read from the package itself: a local .deb is at hand, cached or not.
            return Known(_deb_version(deb), _manifest_valid(entry))
        image = self._local_image(spec)
        return Known(f"local:{sha256_file(image)[:12]}", None)

    def _known_url(self, spec: KernelSpec, arch: str) -> Known:
        download = self._download_path(spec)
        downloaded = download.is_file() and sha256_file(download) == spec.sha256
        if not download.name.endswith(".deb"):
            # A bare image is booted from the download itself.
            return Known(f"url:{spec.sha256[:16]}", downloaded)
        entry = self._entry(spec, arch, spec.sha256[:16])
        if _manifest_valid(entry):
            manifest = json.loads((entry / "manifest.json").read_text())
            return Known(str(manifest["version"]), True)
        return Known(_deb_version(download) if downloaded else "", False)

    def _entry(self, spec: KernelSpec, arch: str, key: str) -> Path:
        """The unpacked kernel's cache directory; `key` is a version or a digest."""
        return self.cache.path("kernels", f"{spec.name}-{arch}-{key}")

    def _download_path(self, spec: KernelSpec) -> Path:
        """Where a kernel by URL is downloaded, under its expected digest."""
        name = spec.url.rstrip("/").rsplit("/", 1)[-1] or "kernel"
        return self.cache.path("downloads", spec.sha256[:16], name)

    def _debian(self, spec: KernelSpec, arch: str) -> Kernel:
        packages = resolve(spec, arch, self.archive)
        head = packages[0]
        entry = self._entry(spec, arch, head.version)
        if not entry.is_dir() or not _manifest_valid(entry):
            debs = [self.archive.deb(p) for p in packages]
            names = [f"{p.name}={p.version}" for p in packages]
            self.cache.directory(
                entry,
                lambda tmp: _unpack_debs(debs, head.version, names, tmp),
                _manifest_valid,
            )
        return _kernel_from_dir(spec, arch, entry)

    def _url(self, spec: KernelSpec, arch: str) -> Kernel:
        download = self._download_path(spec)
        name = download.name

        def fetch(tmp: Path) -> None:
            # Checked here, not only by the cache's `valid`, so that the error
            # names the catalogue key and both digests; the cache removes `tmp`.
            self.archive.download(spec.url, tmp, name)
            actual = sha256_file(tmp)
            if actual != spec.sha256:
                raise IntegrityError(wrong_sha256(spec, actual))

        self.cache.file(download, fetch, lambda p: sha256_file(p) == spec.sha256)
        return self._from_files(spec, arch, [download], spec.sha256[:16])

    def _local_debs(self, spec: KernelSpec) -> list[Path]:
        missing = [str(d) for d in spec.debs if not d.is_file()]
        if missing:
            raise FetchError(
                f"kernels.{spec.name}.debs: not found: {', '.join(missing)}"
            )
        return list(spec.debs)

    def _local_image(self, spec: KernelSpec) -> Path:
        assert spec.image is not None
        if not spec.image.is_file():
            raise FetchError(f"kernels.{spec.name}.image: {spec.image} not found")
        return spec.image

    def _local(self, spec: KernelSpec, arch: str) -> Kernel:
        if spec.debs:
            debs = self._local_debs(spec)
            return self._from_files(spec, arch, debs, sha256_file(debs[0])[:16])
        image = self._local_image(spec)
        modules = spec.modules
        if modules is not None and not modules.is_dir():
            raise FetchError(
                f"kernels.{spec.name}.modules: {modules} is not a directory; give "
                "the kernel's lib/modules/<release> directory"
            )
        release = modules.name if modules else image.name.partition("-")[2]
        return Kernel(
            name=spec.name,
            arch=arch,
            release=release,
            version=f"local:{sha256_file(image)[:12]}",
            source="local",
            image=image,
            modules=modules,
            config=None,
            packages=(),
        )

    def _from_files(
        self, spec: KernelSpec, arch: str, files: list[Path], key: str
    ) -> Kernel:
        if not files[0].name.endswith(".deb"):
            version = f"{spec.source}:{key}"
            return Kernel(
                spec.name, arch, "", version, spec.source, files[0], None, None, ()
            )
        entry = self._entry(spec, arch, key)
        version = _deb_version(files[0])
        names = [f.name for f in files]
        self.cache.directory(
            entry, lambda tmp: _unpack_debs(files, version, names, tmp), _manifest_valid
        )
        return _kernel_from_dir(spec, arch, entry)

    def busybox(self, arch: str) -> tuple[bytes, str]:
        """A static busybox for `arch` and its package version (busybox-static)."""
        debarch = get_arch(arch).debian
        index = self.archive.packages(BUSYBOX_SUITE, debarch)
        package = newest(p for p in index if p.name == "busybox-static")
        if package is None:
            raise FetchError(f"no busybox-static for {debarch} in {BUSYBOX_SUITE}")
        deb = self.archive.deb(package)
        with DebFile(str(deb)).data.tgz() as tar:
            member = tar.extractfile("./bin/busybox")
            if member is None:
                raise IntegrityError(f"{deb}: no ./bin/busybox inside")
            return member.read(), package.version
