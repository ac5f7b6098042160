"""The artefact cache: verified files and directories, published atomically.

Several pytest-xdist workers may want the same kernel at once, so every entry
is produced under a file lock, written beside its final path and renamed into
place only when complete. A reader never sees a half-written entry, and an
entry that fails verification later (truncated, edited) is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import platformdirs
from filelock import FileLock

log = logging.getLogger(__name__)

CACHE_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    """The cache root: $HARNESS_CACHE_DIR, else the user's cache directory."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("kernel-policy-harness"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Cache:
    """A directory of named entries, each built once under a lock."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_dir()).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        """The final path of an entry (it may not exist yet)."""
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def lock(self, entry: Path) -> Iterator[None]:
        """Hold the lock that guards `entry` across processes."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(entry) + ".lock"):
            yield

    def file(
        self,
        entry: Path,
        build: Callable[[Path], None],
        valid: Callable[[Path], bool] = Path.exists,
    ) -> Path:
        """Return `entry`, building it with `build(tmp_path)` if missing or invalid."""
        if entry.is_file() and valid(entry):
            return entry
        with self.lock(entry):
            if entry.is_file():
                if valid(entry):
                    return entry
                log.warning("cache entry %s failed verification; rebuilding", entry)
                entry.unlink()
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.")
            os.close(fd)
            try:
                build(Path(tmp))
                if not valid(Path(tmp)):
                    raise_invalid(entry)
                os.replace(tmp, entry)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return entry

    def directory(
        self,
        entry: Path,
        build: Callable[[Path], None],
        valid: Callable[[Path], bool] = Path.exists,
    ) -> Path:
        """Like `file`, for a directory tree built by `build(tmp_dir)`."""
        if entry.is_dir() and valid(entry):
            return entry
        with self.lock(entry):
            stale = entry.is_dir()
            if stale and valid(entry):
                return entry
            if stale:
                log.warning("cache entry %s failed verification; rebuilding", entry)
            tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
            aside = entry.with_name(f".{entry.name}.stale-{os.getpid()}")
            try:
                build(tmp)
                if not valid(tmp):
                    raise_invalid(entry)
                # Build first, then swap: a reader of the old entry is never
                # left without one for longer than two renames.
                if stale:
                    os.rename(entry, aside)
                os.rename(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(aside, ignore_errors=True)
        return entry


def raise_invalid(entry: Path) -> None:
    """Fail a build whose fresh result does not verify."""
    from harness.errors import IntegrityError

    raise IntegrityError(f"{entry}: freshly built entry failed verification")
