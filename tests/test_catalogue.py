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
        f"{path}: extra: unknown key (allowed: kernels)",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in:\n{text}"
    assert len(caught.value.problems) == 6


def test_a_repeated_key_is_an_error_with_its_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kernels:
  - name: "6.1"
    series: "6.1"
    suites: [bookworm]
    arch: [amd64]
    series: "6.12"
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels[0].series: duplicate key on line 6 (first on line 3): "
        "YAML would keep only the last; remove or rename one",
        f"{path}: kernels.6.1.arch: 'amd64' is not a known arch (known: x86_64, "
        "arm64); did you mean 'x86_64'?",
    ]


def test_unquoted_versions_are_refused_with_the_text_to_write(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kernels:
  - {name: 6.10, series: 6.10, suites: [trixie]}
  - {name: "6.1", series: 6.1, suites: [bookworm]}
  - {name: "7", series: "7", suites: [sid]}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels[0].name: 6.10 is a number to YAML (read as 6.1); "
        "write it quoted: '6.10'",
        f"{path}: kernels[0].series: 6.10 is a number to YAML (read as 6.1); "
        "write it quoted: '6.10'",
        f"{path}: kernels.6.1.series: 6.1 is a number to YAML; write it quoted: '6.1'",
        f"{path}: kernels.7.series: '7' is not a series; write one like '6.1' or '7.x'",
    ]


def test_empty_lists_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kernels:
  - {name: "6.1", series: "6.1", suites: [], arch: []}
  - {name: mine, source: local, debs: []}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels.6.1.arch: empty list; list the arches to boot it on "
        "(x86_64, arm64), or leave `arch:` out for all",
        f"{path}: kernels.6.1.suites: empty list; list the suites to look in, "
        "e.g. [bookworm, bookworm-updates]",
        f"{path}: kernels.mine.debs: empty list; list the .deb files",
    ]


@pytest.mark.parametrize("text", ["kernels: []\n", "kernels: []\nextra: 1\n"])
def test_a_catalogue_without_kernels_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert str(caught.value.problems[0]) == (
        f"{path}: kernels: no kernels: add at least one entry under `kernels:`"
    )


@pytest.mark.parametrize("text", ["", "# to do\n", "kernels:\n", "[]\n"])
def test_an_empty_catalogue_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError, match="kernels") as caught:
        load(path)

    assert len(caught.value.problems) == 1


def test_misspelt_keys_and_sources_get_the_closest_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kernels:
  - {name: "6.1", serie: "6.1", suites: [bookworm]}
  - {name: "6.12", source: debain}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels.6.1.serie: unknown key for source 'debian'; did you mean "
        "'series'? (allowed: arch, default, description, name, series, source, "
        "suites)",
        f"{path}: kernels.6.1.series: required for source 'debian'",
        f"{path}: kernels.6.12.source: 'debain' is not a known source; did you mean "
        "'debian'? (known: debian, local, url)",
    ]


def test_an_unquoted_numeric_sha256_gets_a_hint(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kernels:\n  - {name: k, source: url, url: 'http://x.test/k.deb', "
        f"sha256: {'1' * 64}}}\n",
    )
    with pytest.raises(ConfigError, match="YAML read it as a number: quote it"):
        load(path)


def test_url_sources_need_http_and_a_sha256(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
kernels:
  - {{name: a, source: url, url: 'ftp://host.test/k.deb', sha256: '{"ab" * 32}'}}
  - {{name: b, source: url, url: /srv/k.deb, sha256: 'abc'}}
  - {{name: c, source: url, url: 'https://x.test/k.deb', sha256: '{"g" * 64}'}}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels.a.url: 'ftp://host.test/k.deb' is not an http:// or "
        "https:// URL; give the address of the kernel .deb",
        f"{path}: kernels.b.url: '/srv/k.deb' is not an http:// or https:// URL; "
        "give the address of the kernel .deb",
        f"{path}: kernels.b.sha256: 'abc' is not 64 hex digits; give the file's "
        "SHA-256 (sha256sum prints it)",
        f"{path}: kernels.c.sha256: '{'g' * 64}' is not 64 hex digits; give the "
        "file's SHA-256 (sha256sum prints it)",
    ]


def test_unknown_kernel_name_lists_the_known_ones() -> None:
    catalogue = load(ROOT / "kernels.yaml")
    with pytest.raises(ConfigError, match=r"no kernel named '9.9' \(known: 5.10, 6.1"):
        catalogue.select("9.9")


@pytest.mark.parametrize("names", ["all,6.1", "6.1, default", "default,all"])
def test_all_and_default_stand_alone(names: str) -> None:
    catalogue = load(ROOT / "kernels.yaml")
    with pytest.raises(ConfigError) as caught:
        catalogue.select(names)
    (problem,) = caught.value.problems
    assert problem.message == (
        "`all` and `default` stand alone and cannot be combined with kernel names; "
        "pass one of them on its own, or kernel names only (known: 5.10, 6.1, 6.12, "
        "7.x)"
    )
    assert catalogue.select("all, all") == list(catalogue.kernels)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "kernels: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.yaml")


def test_local_sources_resolve_paths_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "b" / "mod").mkdir(parents=True)
    (tmp_path / "b" / "bzImage").write_bytes(b"kernel")
    path = write(
        tmp_path,
        "kernels:\n  - {name: dev, source: local, image: b/bzImage, modules: b/mod}\n",
    )
    spec = load(path).get("dev")
    assert spec.image == tmp_path / "b" / "bzImage"
    assert spec.arches == ("x86_64", "arm64")


def test_missing_local_files_are_reported_when_the_catalogue_loads(
    tmp_path: Path,
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bzImage").mkdir()
    path = write(
        tmp_path,
        f"""\
kernels:
  - {{name: dev, source: local, image: b/bzImage, modules: b/mod}}
  - {{name: debs, source: local, debs: [{tmp_path}/k.deb, b/m.deb]}}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: kernels.dev.image: {tmp_path}/b/bzImage ('b/bzImage' from "
        f"{tmp_path}) is not a file; correct the path or build it",
        f"{path}: kernels.dev.modules: {tmp_path}/b/mod ('b/mod' from {tmp_path}) "
        "is not a directory; correct the path or build it",
        f"{path}: kernels.debs.debs: {tmp_path}/k.deb is not a file; correct the "
        "path or build it",
        f"{path}: kernels.debs.debs: {tmp_path}/b/m.deb ('b/m.deb' from "
        f"{tmp_path}) is not a file; correct the path or build it",
    ]


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
