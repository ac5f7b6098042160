"""Where the Debian archive is: a setting, else the host's apt sources.

No archive host name is written in this project: the mirror is whatever the
user configured, either for the harness ($HARNESS_DEBIAN_MIRROR, or
`debian_mirror` under `[tool.harness]` in pyproject.toml) or for apt.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from harness.errors import ConfigError, HarnessError, Problem, Problems

MIRROR_ENV = "HARNESS_DEBIAN_MIRROR"
KEYRING_ENV = "HARNESS_DEBIAN_KEYRING"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


# The keys of `[tool.harness]`, and what each takes.
PROJECT_KEYS = {"debian_mirror": "a Debian archive base URI, http(s):// or file://"}
URI = re.compile(r"(https?|file)://\S+")


def _project_file(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_settings(start: Path | None = None) -> dict[str, object]:
    """The `[tool.harness]` table of the nearest pyproject.toml, or {}."""
    path = _project_file(start)
    if path is None:
        return {}
    with path.open("rb") as f:
        table = tomllib.load(f).get("tool", {}).get("harness", {})
    return dict(table) if isinstance(table, dict) else {}


def check_settings(start: Path | None = None) -> None:
    """Raise one ConfigError for a bad mirror, keyring or `[tool.harness]` key."""
    found: list[Problem] = []
    mirror_env = os.environ.get(MIRROR_ENV, "").strip()
    if mirror_env and not URI.fullmatch(mirror_env):
        why = f"not {PROJECT_KEYS['debian_mirror']}"
        found.append(Problem(f"{MIRROR_ENV}={mirror_env}", "", why))
    keyring = os.environ.get(KEYRING_ENV)
    if keyring and not Path(keyring).is_file():
        why = "no such file; name a keyring file, or unset it for Debian's"
        found.append(Problem(f"{KEYRING_ENV}={keyring}", "", why))
    path = _project_file(start)
    if path is not None:
        in_file = Problems(str(path))
        try:
            table = project_settings(start)
        except (tomllib.TOMLDecodeError, OSError) as e:
            in_file.add("", f"cannot be read: {e}")
            table = {}
        in_file.unknown_keys(table, "tool.harness", PROJECT_KEYS)
        mirror = table.get("debian_mirror")
        if mirror is not None and not (
            isinstance(mirror, str) and URI.fullmatch(mirror)
        ):
            why = f"{mirror!r} is not {PROJECT_KEYS['debian_mirror']}"
            in_file.add("tool.harness.debian_mirror", why)
        found += in_file.items
    if found:
        raise ConfigError(found)


def _deb822_uris(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
            for uri in fields.get("uris", "").split():
                found.append((uri, fields.get("suites", "").split()))
    return found


def _one_line_uris(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line).split()
        if len(words) >= 3 and words[0] == "deb":
            found.append((words[1], [words[2]]))
    return found


def apt_mirrors(
    sources: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR
) -> list[str]:
    """Debian archive URIs from apt's configuration, security archives left out."""
    entries: list[tuple[str, list[str]]] = []
    if sources.is_file():
        entries += _one_line_uris(sources.read_text())
    if sources_dir.is_dir():
        for path in sorted(sources_dir.iterdir()):
            if path.suffix == ".sources":
                entries += _deb822_uris(path.read_text())
            elif path.suffix == ".list":
                entries += _one_line_uris(path.read_text())
    mirrors = []
    for uri, suites in entries:
        if any(s.endswith("-security") for s in suites):
            continue
        if uri.rstrip("/").endswith("/debian") and uri not in mirrors:
            mirrors.append(uri)
    return mirrors


def debian_mirror() -> str:
    """The Debian archive base URI to use, or an error that says how to set one."""
    if env := os.environ.get(MIRROR_ENV):
        return env.rstrip("/")
    setting = project_settings().get("debian_mirror")
    if isinstance(setting, str) and setting:
        return setting.rstrip("/")
    mirrors = apt_mirrors()
    if mirrors:
        return mirrors[0].rstrip("/")
    raise HarnessError(
        "no Debian archive mirror configured: set $"
        f"{MIRROR_ENV} or `debian_mirror` under [tool.harness] in pyproject.toml "
        "to a Debian archive base URI (the one apt uses ends in /debian)"
    )


def debian_keyring() -> Path:
    """The keyring that vouches for the archive's signed indices."""
    path = Path(os.environ.get(KEYRING_ENV, DEFAULT_KEYRING))
    if not path.is_file():
        raise HarnessError(
            f"Debian archive keyring {path} not found: install the "
            f"debian-archive-keyring package or set ${KEYRING_ENV}"
        )
    return path
