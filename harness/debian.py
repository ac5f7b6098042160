"""Debian's archive: signed indices, package resolution and verified downloads.

Trust flows from the archive keyring to the suite's InRelease (checked with
gpgv), from InRelease to the Packages index (SHA-256), and from the index to
each .deb (SHA-256). Nothing downloaded is used before its link in that chain
is checked, and the cached copies are checked again on every use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
from debian.deb822 import Deb822, Release
from debian.debian_support import Version

from harness.cache import Cache, sha256_file
from harness.errors import (
    ConfigError,
    FetchError,
    IntegrityError,
    Problem,
    UnreachableError,
)
from harness.settings import MIRROR_ENV

log = logging.getLogger(__name__)

# Re-read a suite's index at most this often; older copies are refreshed when
# the mirror answers and used as they are when it does not.
INDEX_TTL = 6 * 3600
INDEX_TTL_ENV = "HARNESS_INDEX_TTL"
TIMEOUT = (10, 60)

Progress = Callable[[str, int, int], None]
"""Called as progress(label, bytes_done, bytes_total) while downloading."""


@dataclass(frozen=True)
class Package:
    """One binary package as the signed index describes it."""

    name: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int
    depends: str
    suite: str


def index_ttl() -> float:
    """Seconds a cached suite index counts as fresh: $HARNESS_INDEX_TTL or 6 hours."""
    value = os.environ.get(INDEX_TTL_ENV, "").strip()
    if not value:
        return INDEX_TTL
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:
        what = "negative" if seconds < 0 else "not a number of seconds"
        raise ConfigError(
            [
                Problem(
                    f"{INDEX_TTL_ENV}={value}",
                    "",
                    f"{what}; set it to a number of seconds, 0 or more (0 re-reads "
                    f"indices every run), or unset it for {INDEX_TTL} (6 hours)",
                )
            ]
        )
    return seconds


def _no_progress(label: str, done: int, total: int) -> None:
    return None


def download(
    url: str, dest: Path, label: str = "", progress: Progress = _no_progress
) -> None:
    """Stream `url` into `dest`; any failure is a FetchError naming the URL."""
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0))
            done = 0
            with dest.open("wb") as f:
                for chunk in response.iter_content(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    progress(label or url, done, total)
    except requests.ConnectionError as e:
        raise UnreachableError(f"cannot reach {url}: {e}") from e
    except requests.RequestException as e:
        raise FetchError(f"cannot download {url}: {e}") from e


def unreachable(mirror: str, suites: Iterable[str]) -> str:
    """The headline for a mirror that cannot be reached, with the setting to change."""
    return (
        f"cannot reach the Debian mirror {mirror} and no index of "
        f"{', '.join(suites)} is cached: set ${MIRROR_ENV} (or `debian_mirror` "
        "under [tool.harness] in pyproject.toml) to a mirror this host can reach, "
        "or fix its proxy settings"
    )


class Archive:
    """A Debian archive mirror seen through a local, verified cache."""

    def __init__(
        self,
        mirror: str,
        cache: Cache,
        keyring: Path,
        progress: Progress = _no_progress,
    ) -> None:
        self.mirror = mirror.rstrip("/")
        self.cache = cache
        self.keyring = keyring
        self.progress = progress
        key = hashlib.sha256(self.mirror.encode()).hexdigest()[:12]
        self.index_dir = cache.path("debian", "indices", key)
        self._packages: dict[tuple[str, str], list[Package]] = {}
        self.index_ttl = index_ttl()

    # -- network -------------------------------------------------------------

    def download(self, url: str, dest: Path, label: str) -> None:
        """Download `url` to `dest`, reporting progress under `label`."""
        download(url, dest, label, self.progress)

    # -- indices -------------------------------------------------------------

    def _verified_release(self, signed: Path) -> str:
        """The text gpgv vouches for; only that text is ever parsed."""
        result = subprocess.run(
            ["gpgv", "--keyring", str(self.keyring), "--output", "-", str(signed)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise IntegrityError(
                f"{signed}: signature check against {self.keyring} failed:\n"
                + result.stderr.decode(errors="replace").strip()
            )
        return result.stdout.decode()

    def release(self, suite: str) -> Release:
        """The suite's verified Release, refreshed from the mirror when stale."""
        entry = self.index_dir / suite / "InRelease"
        fresh = entry.is_file() and time.time() - entry.stat().st_mtime < self.index_ttl
        if not fresh:
            try:
                self._refresh(entry, suite)
            except UnreachableError as e:
                if not entry.is_file():
                    raise UnreachableError(
                        f"{unreachable(self.mirror, [suite])}\n{e}"
                    ) from e
                log.warning(
                    "mirror unreachable; using cached index of %s: %s", suite, e
                )
            except FetchError as e:
                if not entry.is_file():
                    raise
                log.warning("cannot refresh; using cached index of %s: %s", suite, e)
        return Release(self._verified_release(entry))

    def _refresh(self, entry: Path, suite: str) -> None:
        url = f"{self.mirror}/dists/{suite}/InRelease"
        # Fetched into the cache root and moved into place only once verified:
        # a mirror that cannot be reached leaves no directory and no lock
        # behind. Two workers refreshing at once each replace it atomically.
        fd, name = tempfile.mkstemp(dir=self.cache.root, prefix=f".InRelease-{suite}.")
        os.close(fd)
        tmp = Path(name)
        try:
            self.download(url, tmp, f"{suite} index")
            self._verified_release(tmp)
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(entry)
        finally:
            tmp.unlink(missing_ok=True)

    def packages(
        self, suite: str, debarch: str, component: str = "main"
    ) -> list[Package]:
        """Kernel and busybox packages of one suite and arch, from its signed index."""
        if (suite, debarch) in self._packages:
            return self._packages[(suite, debarch)]
        release = self.release(suite)
        name = f"{component}/binary-{debarch}/Packages.xz"
        sums = {row["name"]: row for row in release.get("SHA256", [])}
        if name not in sums:
            raise FetchError(f"suite {suite} of {self.mirror} has no {name}")
        want, size = sums[name]["sha256"], int(sums[name]["size"])
        entry = self.index_dir / suite / f"Packages-{debarch}-{want[:16]}.xz"

        def valid(path: Path) -> bool:
            return path.stat().st_size == size and sha256_file(path) == want

        url = f"{self.mirror}/dists/{suite}/{name}"
        label = f"{suite} {debarch}"
        self.cache.file(entry, lambda tmp: self.download(url, tmp, label), valid)
        found = self._selected(entry, suite)
        self._packages[(suite, debarch)] = found
        return found

    def _selected(self, index: Path, suite: str) -> list[Package]:
        # Decompressing and scanning a full index takes seconds; keep the few
        # stanzas we use beside the verified index they came from.
        entry = index.with_suffix(".json")

        def build(tmp: Path) -> None:
            rows = _parse_packages(lzma.decompress(index.read_bytes()), suite)
            tmp.write_text(json.dumps([asdict(p) for p in rows]))

        def valid(path: Path) -> bool:
            try:
                return isinstance(json.loads(path.read_text()), list)
            except ValueError:
                return False

        self.cache.file(entry, build, valid)
        return [Package(**row) for row in json.loads(entry.read_text())]

    # -- packages ------------------------------------------------------------

    def deb(self, package: Package) -> Path:
        """The package's .deb in the cache, downloaded and verified if needed."""
        entry = self.cache.path("debian", "pool", Path(package.filename).name)

        def valid(path: Path) -> bool:
            if path.stat().st_size != package.size:
                return False
            return sha256_file(path) == package.sha256

        url = f"{self.mirror}/{package.filename}"
        label = f"{package.name} {package.version}"
        return self.cache.file(entry, lambda tmp: self.download(url, tmp, label), valid)


_WANTED = re.compile(
    rb"^Package: (linux-(image|binary|modules|base)-|busybox-static\n)"
)


def _parse_packages(text: bytes, suite: str) -> Iterable[Package]:
    # A full index has ~60k stanzas; parse only the few families we use.
    for stanza in text.split(b"\n\n"):
        if not _WANTED.match(stanza):
            continue
        fields = Deb822(stanza.decode())
        yield Package(
            name=fields["Package"],
            version=fields["Version"],
            arch=fields["Architecture"],
            filename=fields["Filename"],
            sha256=fields["SHA256"],
            size=int(fields["Size"]),
            depends=fields.get("Depends", ""),
            suite=suite,
        )


def newest(packages: Iterable[Package]) -> Package | None:
    """The package with the highest Debian version, or None."""
    best: Package | None = None
    for package in packages:
        if best is None or Version(package.version) > Version(best.version):
            best = package
    return best
