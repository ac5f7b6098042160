"""The kernel catalogue (`kernels.yaml`): strict loading and selection."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.arches import ARCHES
from harness.errors import ConfigError, Problem

SOURCES = {
    "debian": {"required": {"series", "suites"}, "optional": set()},
    "local": {"required": set(), "optional": {"image", "modules", "debs"}},
    "url": {"required": {"url", "sha256"}, "optional": set()},
}
COMMON = {"name", "source", "arch", "default", "description"}


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
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if wanted == ["all"]:
            return list(self.kernels)
        if wanted in ([], ["default"]):
            return [k for k in self.kernels if k.default]
        return [self.get(n) for n in wanted]


def _str_list(value: Any, where: str, problems: list[Problem], file: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    problems.append(Problem(file, where, "must be a string or a list of strings"))
    return []


def _entry(
    raw: Any, index: int, file: str, base: Path, problems: list[Problem]
) -> KernelSpec | None:
    where = f"kernels[{index}]"
    if not isinstance(raw, dict):
        problems.append(
            Problem(file, where, "must be a mapping with name, source, arch")
        )
        return None
    name = raw.get("name")
    if isinstance(name, (int, float)):
        name = str(name)
    if not isinstance(name, str) or not name:
        problems.append(
            Problem(file, f"{where}.name", "missing; give the entry a name")
        )
        name = f"#{index}"
    else:
        where = f"kernels.{name}"
    source = raw.get("source", "debian")
    if source not in SOURCES:
        known = ", ".join(SOURCES)
        problems.append(
            Problem(
                file,
                f"{where}.source",
                f"{source!r} is not a known source (known: {known})",
            )
        )
        return None
    allowed = COMMON | SOURCES[source]["required"] | SOURCES[source]["optional"]
    listed = ", ".join(sorted(allowed))
    for key in raw:
        if key not in allowed:
            problems.append(
                Problem(
                    file,
                    f"{where}.{key}",
                    f"unknown key for source {source!r} (allowed: {listed})",
                )
            )
    for key in sorted(SOURCES[source]["required"] - raw.keys()):
        problems.append(
            Problem(file, f"{where}.{key}", f"required for source {source!r}")
        )
    arches = _str_list(raw.get("arch", list(ARCHES)), f"{where}.arch", problems, file)
    for arch in arches:
        if arch not in ARCHES:
            problems.append(
                Problem(
                    file,
                    f"{where}.arch",
                    f"{arch!r} is not a known arch (known: {', '.join(ARCHES)})",
                )
            )
    if source == "local" and not ({"image", "debs"} & raw.keys()):
        problems.append(
            Problem(
                file,
                where,
                "a local kernel needs `image:` (with `modules:`) or `debs:`",
            )
        )
    sha = raw.get("sha256", "")
    if source == "url" and not (
        isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)
    ):
        hint = " (quote it: YAML read it as a number)" if isinstance(sha, int) else ""
        problems.append(
            Problem(
                file,
                f"{where}.sha256",
                f"must be the 64 hex digits of the file's SHA-256{hint}",
            )
        )
    sha = str(sha)
    default = raw.get("default", False)
    if not isinstance(default, bool):
        problems.append(Problem(file, f"{where}.default", "must be true or false"))

    def path(key: str) -> Path | None:
        value = raw.get(key)
        return (base / str(value)).resolve() if value else None

    return KernelSpec(
        name=name,
        source=source,
        arches=tuple(arches),
        default=bool(default),
        series=str(raw.get("series", "")),
        suites=tuple(
            _str_list(raw.get("suites", []), f"{where}.suites", problems, file)
        ),
        image=path("image"),
        modules=path("modules"),
        debs=tuple(
            (base / d).resolve()
            for d in _str_list(raw.get("debs", []), f"{where}.debs", problems, file)
        ),
        url=str(raw.get("url", "")),
        sha256=sha.lower(),
    )


def load(path: Path) -> Catalogue:
    """Load and validate `kernels.yaml`; one error lists every problem found."""
    file = str(path)
    if path.is_dir():
        inside = path / "kernels.yaml"
        fix = inside if inside.is_file() else "PATH of a kernels.yaml"
        raise ConfigError(
            [
                Problem(
                    file, "", f"is a directory, not a catalogue; pass --catalogue={fix}"
                )
            ]
        )
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            [Problem(file, "", "not found; create it, or pass --catalogue=PATH")]
        ) from None
    except OSError as e:
        raise ConfigError(
            [Problem(file, "", f"cannot be read ({e.strerror}); pass a readable file")]
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(file, "", f"not valid YAML: {e}")]) from e
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), list):
        raise ConfigError(
            [Problem(file, "kernels", "the file must have a top-level `kernels:` list")]
        )
    problems = [
        Problem(file, key, "unknown top-level key (allowed: kernels)")
        for key in data
        if key != "kernels"
    ]
    specs: list[KernelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["kernels"]):
        spec = _entry(raw, index, file, path.parent, problems)
        if spec is None:
            continue
        if spec.name in seen:
            problems.append(
                Problem(
                    file, f"kernels.{spec.name}", "duplicate name; names must be unique"
                )
            )
        seen.add(spec.name)
        specs.append(spec)
    if problems:
        raise ConfigError(problems)
    return Catalogue(path=path, kernels=tuple(specs))


def find_catalogue(start: Path | None = None) -> Path:
    """The nearest kernels.yaml from `start` upwards, else the one in the cwd."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "kernels.yaml").is_file():
            return directory / "kernels.yaml"
    return here / "kernels.yaml"
