"""The kernel catalogue (`kernels.yaml`): strict loading and selection."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import yamlfile
from harness.arches import ALIASES, ARCHES
from harness.errors import (
    ConfigError,
    Problem,
    Problems,
    did_you_mean,
    unknown_key_message,
)

SOURCES = {
    "debian": {"required": {"series", "suites"}, "optional": set()},
    "local": {"required": set(), "optional": {"image", "modules", "debs"}},
    "url": {"required": {"url", "sha256"}, "optional": set()},
}
COMMON = {"name", "source", "arch", "default", "description"}
# Kernels by URL are fetched with the same HTTP client as the archive.
HTTP = ("http", "https")
# `6.1`: every 6.1.x; `7.x`: the newest 7.* release.
SERIES = re.compile(r"\d+\.(\d+|x)")
# Words of a selection that name a set of entries each, never a kernel.
SELECTORS = ("all", "default")


@dataclass(frozen=True)
class KernelSpec:
    """One catalogue entry: where a kernel comes from and which arches boot it."""

    name: str
    source: str
    arches: tuple[str, ...]
    default: bool = False
    series: str = ""
    suites: tuple[str, ...] = ()
    image: Path | None = None
    modules: Path | None = None
    debs: tuple[Path, ...] = ()
    url: str = ""
    sha256: str = ""
    # The catalogue it came from, so that errors met while fetching it (a
    # wrong sha256) name the file to edit; "" for entries made in code.
    file: str = field(default="", compare=False)

    def where(self, key: str) -> str:
        """`kernels.yaml: kernels.6.1.sha256`: how a message names one of its keys."""
        dotted = f"kernels.{self.name}.{key}"
        return f"{self.file}: {dotted}" if self.file else dotted


@dataclass(frozen=True)
class Catalogue:
    """Every kernel the user can name, in file order."""

    path: Path
    kernels: tuple[KernelSpec, ...]

    def get(self, name: str) -> KernelSpec:
        """The entry named `name`, or an error listing the names there are."""
        for spec in self.kernels:
            if spec.name == name:
                return spec
        known = ", ".join(k.name for k in self.kernels)
        raise ConfigError(
            [
                Problem(
                    str(self.path),
                    "kernels",
                    f"no kernel named {name!r} (known: {known})",
                )
            ]
        )

    def select(self, names: str) -> list[KernelSpec]:
        """Resolve a `--kernels` value: comma list, `default` or `all`."""
        wanted = comma_list(names)
        known = [k.name for k in self.kernels]
        if problem := standalone_problem(wanted, known):
            raise ConfigError([Problem(str(self.path), "kernels", problem)])
        if wanted == ["all"]:
            return list(self.kernels)
        if wanted in ([], ["default"]):
            return [k for k in self.kernels if k.default]
        return [self.get(n) for n in wanted]

    def why_none_on(self, kernels: str, arches: str) -> str:
        """Why `kernels` names no kernel on `arches`, and what would; "" if it does."""
        wanted = set(comma_list(arches))
        specs = self.select(kernels)
        if any(not wanted or wanted & set(s.arches) for s in specs):
            return ""
        if not specs:
            return (
                f"names no kernel: no entry of {self.path} has `default: true`; "
                "name kernels, pass --kernels=all or mark an entry `default: true`"
            )
        built = "; ".join(f"{s.name} on {', '.join(s.arches)}" for s in specs)
        return (
            f"no kernel of --kernels={kernels} is listed for --arch={arches} "
            f"({self.path} has {built}); pass one of those arches or add yours to "
            "the entry's `arch:` list"
        )


def comma_list(value: str) -> list[str]:
    """The items of a comma list in order, once each, blanks dropped.

    `6.1, ,6.12,6.1` is 6.1 and 6.12: the form of `--kernels` and `--arch`.
    """
    return list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def standalone_problem(names: Sequence[str], known: Sequence[str]) -> str:
    """Why a selection mixing `all` or `default` with other names is none, or ""."""
    if len(names) < 2 or not set(names) & set(SELECTORS):
        return ""
    listed = f" (known: {', '.join(known)})" if known else ""
    return (
        "`all` and `default` stand alone and cannot be combined with kernel names; "
        f"pass one of them on its own, or kernel names only{listed}"
    )


def _str_list(value: Any, where: str, problems: Problems, empty: str) -> list[str]:
    """A string or a non-empty list of them; `empty` is the fix for `[]`."""
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.add(where, f"empty list; {empty}")
    for item in items:
        if yamlfile.is_number(item):
            problems.add(where, yamlfile.quote_hint(item))
        elif not isinstance(item, str):
            problems.add(where, f"{item!r} is not a string; give a string or a list")
    return [item for item in items if isinstance(item, str)]


def _text(value: Any, where: str, problems: Problems, what: str) -> str:
    """A name or version; a number is refused with the quoted form to write."""
    if isinstance(value, str) and value:
        return value
    if yamlfile.is_number(value):
        # YAML reads 6.10 as the number 6.1: turning it back into text would
        # silently name another kernel.
        problems.add(where, yamlfile.quote_hint(value))
    else:
        problems.add(where, f"{value!r} is not {what}; write it as a quoted string")
    return ""


def _series(value: Any, where: str, problems: Problems) -> str:
    series = _text(value, where, problems, "a series")
    if series and not SERIES.fullmatch(series):
        problems.add(
            where, f"{series!r} is not a series; write one like '6.1' or '7.x'"
        )
    return series


def _debian(raw: dict[str, Any], where: str, problems: Problems) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if "series" in raw:
        found["series"] = _series(raw["series"], f"{where}.series", problems)
    if "suites" in raw:
        found["suites"] = tuple(
            _str_list(
                raw["suites"],
                f"{where}.suites",
                problems,
                "list the suites to look in, e.g. [bookworm, bookworm-updates]",
            )
        )
    return found


def _local(
    raw: dict[str, Any], where: str, base: Path, problems: Problems
) -> dict[str, Any]:
    if not ({"image", "debs"} & raw.keys()):
        problems.add(
            where, "a local kernel needs `image:` (with `modules:`) or `debs:`"
        )
    found: dict[str, Any] = {}
    for key, kind in (("image", "file"), ("modules", "directory")):
        if key in raw:
            found[key] = _existing(raw[key], f"{where}.{key}", base, kind, problems)
    if "debs" in raw:
        debs = _str_list(raw["debs"], f"{where}.debs", problems, "list the .deb files")
        found["debs"] = tuple(
            _existing(d, f"{where}.debs", base, "file", problems) for d in debs
        )
    return found


def _existing(
    value: Any, where: str, base: Path, kind: str, problems: Problems
) -> Path:
    """A local kernel's file or directory, relative to the catalogue's directory.

    Checked now rather than at boot, where a typo would surface only after the
    rest of the matrix has been fetched.
    """
    if not isinstance(value, str) or not value:
        problems.add(where, f"{value!r} is not a path; give the {kind} as a string")
        return base
    path = (base / value).resolve()
    exists = path.is_file() if kind == "file" else path.is_dir()
    if not exists:
        relative = "" if Path(value).is_absolute() else f" ({value!r} from {base})"
        problems.add(
            where, f"{path}{relative} is not a {kind}; correct the path or build it"
        )
    return path


def _url(raw: dict[str, Any], where: str, problems: Problems) -> dict[str, Any]:
    url, sha = raw.get("url", ""), raw.get("sha256", "")
    parts = urlsplit(url) if isinstance(url, str) else None
    if "url" in raw and not (parts and parts.scheme in HTTP and parts.netloc):
        problems.add(
            f"{where}.url",
            f"{url!r} is not an http:// or https:// URL; give the address of the "
            "kernel .deb",
        )
    if "sha256" in raw and not (
        isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)
    ):
        if yamlfile.is_number(sha):
            hint = "YAML read it as a number: quote it"
        else:
            hint = "give the file's SHA-256 (sha256sum prints it)"
        problems.add(f"{where}.sha256", f"{sha!r} is not 64 hex digits; {hint}")
    return {"url": str(url), "sha256": str(sha).lower()}


def _entry(raw: Any, index: int, base: Path, problems: Problems) -> KernelSpec | None:
    where = f"kernels[{index}]"
    if not isinstance(raw, dict):
        problems.add(where, "must be a mapping with name, source, arch")
        return None
    if "name" in raw:
        name = _text(raw["name"], f"{where}.name", problems, "a name")
    else:
        problems.add(f"{where}.name", "missing; give the entry a name, quoted: '6.1'")
        name = ""
    where = f"kernels.{name}" if name else where
    source = raw.get("source", "debian")
    if source not in SOURCES:
        hint = did_you_mean(source, SOURCES)
        known = ", ".join(SOURCES)
        problems.add(
            f"{where}.source",
            f"{source!r} is not a known source{hint} (known: {known})",
        )
        return None

    allowed = COMMON | SOURCES[source]["required"] | SOURCES[source]["optional"]
    for key in raw:
        if key not in allowed:
            what = f"key for source {source!r}"
            problems.add(f"{where}.{key}", unknown_key_message(key, allowed, what))
    for key in sorted(SOURCES[source]["required"] - raw.keys()):
        problems.add(f"{where}.{key}", f"required for source {source!r}")
    known = ", ".join(ARCHES)
    arches = _str_list(
        raw.get("arch", list(ARCHES)),
        f"{where}.arch",
        problems,
        f"list the arches to boot it on ({known}), or leave `arch:` out for all",
    )
    for arch in arches:
        if arch not in ARCHES:
            hint = f"; did you mean {ALIASES[arch]!r}?" if arch in ALIASES else ""
            problems.add(
                f"{where}.arch", f"{arch!r} is not a known arch (known: {known}){hint}"
            )
    default = raw.get("default", False)
    if not isinstance(default, bool):
        problems.add(f"{where}.default", f"{default!r} is not true or false")
    if not isinstance(raw.get("description", ""), str):
        problems.add(f"{where}.description", "must be text (a string)")

    if source == "debian":
        fields = _debian(raw, where, problems)
    elif source == "local":
        fields = _local(raw, where, base, problems)
    else:
        fields = _url(raw, where, problems)
    return KernelSpec(
        name=name or f"#{index}",
        source=source,
        arches=tuple(arches),
        default=bool(default),
        file=problems.file,
        **fields,
    )


def load(path: Path) -> Catalogue:
    """Load and validate `kernels.yaml`; one error lists every problem found."""
    file = str(path)
    if path.is_dir():
        inside = path / "kernels.yaml"
        fix = inside if inside.is_file() else "PATH of a kernels.yaml"
        message = f"is a directory, not a catalogue; pass --catalogue={fix}"
        raise ConfigError([Problem(file, "", message)])
    if not path.exists():
        raise ConfigError(
            [Problem(file, "", "not found; create it, or pass --catalogue=PATH")]
        )
    problems = Problems(file)
    data = yamlfile.read(path, problems, "a top-level `kernels:` list")
    entries = data.get("kernels") if isinstance(data, dict) else None
    if isinstance(data, dict) and entries in (None, []):
        problems.add("kernels", "no kernels: add at least one entry under `kernels:`")
        entries = []
    if not isinstance(entries, list):
        if isinstance(data, dict):
            problems.add(
                "kernels", f"must be a list of entries (- name: ...), not {entries!r}"
            )
        elif data is not None:
            problems.add(
                "", "the file must be a mapping with a top-level `kernels:` list"
            )
        raise ConfigError(problems.items)
    for key in data:
        if key != "kernels":
            problems.add(key, unknown_key_message(key, ["kernels"]))
    specs: list[KernelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        spec = _entry(raw, index, path.parent.resolve(), problems)
        if spec is None:
            continue
        if spec.name in seen:
            problems.add(f"kernels.{spec.name}", "duplicate name; names must be unique")
        seen.add(spec.name)
        specs.append(spec)
    problems.raise_if_any()
    return Catalogue(path=path, kernels=tuple(specs))


def find_catalogue(start: Path | None = None) -> Path:
    """The nearest kernels.yaml from `start` upwards, else the one in the cwd."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "kernels.yaml").is_file():
            return directory / "kernels.yaml"
    return here / "kernels.yaml"
