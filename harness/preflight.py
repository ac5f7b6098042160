"""Up-front checks of a run's settings: every bad option, path or variable at once.

The pytest plugin runs them at configure time (one usage error for the whole
run, not one per collected file) and the `harness` command before it does
anything. A typo costs one message naming the setting, its value and the fix,
and nothing has been booted, downloaded or created by then.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness import accel, debian
from harness.agent import release_problem, source_kind
from harness.arches import ARCHES, get_arch
from harness.cache import CACHE_ENV, default_cache_dir
from harness.catalogue import Catalogue, comma_list, load, standalone_problem
from harness.errors import ConfigError, HarnessError, Problem
from harness.settings import check_settings
from harness.vm import MIN_MEMORY_MB

T = TypeVar("T")
# What an empty --tetragon is told: no value is not the same as no option.
TETRAGON_EMPTY = (
    "empty; pass a release tarball, its unpacked directory, a URL or a version "
    "such as 1.7.0"
)


def writable_dir_problem(path: Path) -> str:
    """Why files cannot be made under directory `path` (created if missing), or ""."""
    probe = path.expanduser().absolute()
    try:
        # The nearest part of the path that exists decides.
        while not (probe.exists() or probe.is_symlink()):
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as e:
        return f"{probe} cannot be examined ({e.strerror}); pass another directory"
    if not is_dir:
        return f"{probe} is a file, not a directory; pass a directory (made if missing)"
    # Try it: os.access says yes to root everywhere, procfs and read-only
    # mounts included, where the run would fail once it had started.
    try:
        made = tempfile.mkdtemp(prefix=".harness-probe-", dir=probe)
    except OSError as e:
        return (
            f"cannot create directories in {probe} ({e.strerror}); pass a "
            "directory you can write"
        )
    os.rmdir(made)
    return ""


class Preflight:
    """Collects the problems of a run's settings; `done()` raises them together."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def attempt(self, check: Callable[[], T]) -> T | None:
        """Run one check, keeping its problems instead of stopping at them."""
        try:
            return check()
        except ConfigError as e:
            self.problems.extend(e.problems)
        return None

    def add(self, where: str, message: str) -> None:
        """Note one problem of the setting `where` (`--kernels=9.9`)."""
        self.problems.append(Problem(where, "", message))

    def environment(self) -> None:
        """The environment variables and project settings every boot reads."""
        self.attempt(debian.index_ttl)
        self.attempt(accel.forced_accel)
        self.attempt(check_settings)
        cache = default_cache_dir()
        given = os.environ.get(CACHE_ENV)
        self.directory(cache, f"{CACHE_ENV}={given}" if given else f"cache {cache}")

    def catalogue(self, path: Path) -> Catalogue | None:
        """The catalogue at `path`, or None (with its problems noted)."""
        return self.attempt(lambda: load(path))

    def kernels(self, catalogue: Catalogue | None, value: str, where: str) -> None:
        """A kernel selection: catalogue names, comma separated, `default` or `all`."""
        names = comma_list(value)
        known = [k.name for k in catalogue.kernels] if catalogue is not None else []
        if problem := standalone_problem(names, known):
            self.add(where, problem)
            return
        if not names:
            listed = f" ({', '.join(known)})" if known else ""
            self.add(
                where,
                f"empty; pass kernel names{listed}, comma separated, or default or all",
            )
            return
        if catalogue is None or names in (["all"], ["default"]):
            return
        for name in names:
            if name not in known:
                self.add(
                    where,
                    f"no kernel named {name!r} in {catalogue.path} (known: "
                    f"{', '.join(known)}; or default, all)",
                )

    def selection(
        self, catalogue: Catalogue | None, kernels: str, arches: str, where: str
    ) -> None:
        """Kernels and arches that name at least one target (once each is valid)."""
        if catalogue is None or self.problems:
            return
        if why := catalogue.why_none_on(kernels, arches):
            self.add(where, why)

    def arches(self, value: str, where: str) -> None:
        """A comma list of guest arches, at least one."""
        names = comma_list(value)
        if not names:
            self.add(where, f"empty; pass {', '.join(ARCHES)} or both, comma separated")
        for name in names:
            try:
                get_arch(name)
            except HarnessError as e:
                self.add(where, str(e))

    def directory(self, path: Path | str, where: str) -> None:
        """A directory the run writes into: named, nothing in the way, writable."""
        if not str(path).strip():
            # Path("") is the current directory: an empty option is a slip.
            self.add(where, "empty; pass a directory (made if missing)")
        elif problem := writable_dir_problem(Path(path)):
            self.add(where, problem)

    def tetragon(self, value: str, where: str, if_empty: str = "") -> None:
        """A Tetragon release: a path must exist (versions and URLs are fetched).

        Empty means no agent where the option may be left out; `if_empty` is
        the problem to note when an empty value is a mistake.
        """
        if not value.strip():
            if if_empty:
                self.add(where, if_empty)
            return
        if source_kind(value) != "path":
            return
        path = Path(value.strip()).expanduser()
        if not path.exists():
            self.add(
                where,
                "no such file or directory; pass a Tetragon release tarball, its "
                "unpacked directory, a URL or a version such as 1.3.0",
            )
        elif problem := release_problem(path):
            self.add(where, problem)

    def memory(self, value: str | int, where: str) -> int | None:
        """Guest MiB, at least MIN_MEMORY_MB, or None when it is not (noted)."""
        text = str(value).strip()
        if not text.isdigit() or int(text) < MIN_MEMORY_MB:
            self.add(
                where, f"expected guest MiB, a whole number, {MIN_MEMORY_MB} or more"
            )
            return None
        return int(text)

    def seconds(self, value: str, where: str) -> float | None:
        """A positive number of seconds, or None when it is not one (noted)."""
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number > 0:
            self.add(where, "expected a number of seconds above 0")
            return None
        return number

    def done(self) -> None:
        """Raise every problem found, in one ConfigError."""
        if self.problems:
            raise ConfigError(self.problems)
