"""kernels.yaml: strict validation that reports every problem at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.catalogue import find_catalogue, load
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kernels.yaml"
    path.write_text(text)
    return path


def test_the_project_catalogue_has_the_default_matrix() -> None:
    catalogue = load(ROOT / "kernels.yaml")
    defaults = catalogue.select("default")
    assert [k.name for k in defaults] == ["5.10", "6.1", "6.12", "7.x"]
    assert all(k.arches == ("x86_64", "arm64") for k in defaults)
    assert catalogue.select("all") == list(catalogue.kernels)
    assert [k.name for k in catalogue.select("6.1, 6.12")] == ["6.1", "6.12"]


def test_every_problem_is_listed_with_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
kernels:
  - name: "6.1"
    series: "6.1"
    suites: [bookworm]
    arch: [amd64, arm64]
    colour: blue
  - name: "6.1"
    source: debian
    series: "6.1"
    suites: [bookworm]
  - name: mine
    source: url
    url: https://example.invalid/k.deb
  - name: nowhere
    source: ftp
extra: 1
""",
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    expected = [
        f"{path}: kernels.6.1.arch: 'amd64' is not a known arch (known: x86_64, arm64)",
        f"{path}: kernels.6.1.colour: unknown key",
        f"{path}: kernels.6.1: duplicate name",
        f"{path}: kernels.mine.sha256: required for source 'url'",
        f"{path}: kernels.nowhere.source: 'ftp' is not a known source",
        f"{path}: extra: unknown top-level key",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in:\n{text}"
    assert len(caught.value.problems) == 7


def test_an_unquoted_numeric_sha256_gets_a_hint(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kernels:\n  - {name: k, source: url, url: 'http://x.test/k.deb', "
        f"sha256: {'1' * 64}}}\n",
    )
    with pytest.raises(ConfigError, match="quote it: YAML read it as a number"):
        load(path)


def test_unknown_kernel_name_lists_the_known_ones() -> None:
    catalogue = load(ROOT / "kernels.yaml")
    with pytest.raises(ConfigError, match=r"no kernel named '9.9' \(known: 5.10, 6.1"):
        catalogue.select("9.9")


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "kernels: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.yaml")


def test_local_sources_resolve_paths_against_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kernels:\n  - {name: dev, source: local, image: b/bzImage, modules: b/mod}\n",
    )
    spec = load(path).get("dev")
    assert spec.image == tmp_path / "b" / "bzImage"
    assert spec.arches == ("x86_64", "arm64")


def test_find_catalogue_walks_up(tmp_path: Path) -> None:
    write(tmp_path, "kernels: []\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_catalogue(deep) == tmp_path / "kernels.yaml"


def test_a_directory_is_not_a_catalogue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a catalogue"):
        load(tmp_path)
    write(tmp_path, "kernels: []\n")
    fix = f"pass --catalogue={tmp_path / 'kernels.yaml'}"
    with pytest.raises(ConfigError, match=re.escape(fix)):
        load(tmp_path)
