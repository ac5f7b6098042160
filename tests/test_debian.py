"""The archive chain of trust and kernel resolution, on real archive data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cache import Cache
from harness.catalogue import KernelSpec
from harness.debian import (
    INDEX_TTL,
    INDEX_TTL_ENV,
    Archive,
    Package,
    _parse_packages,
    index_ttl,
)
from harness.errors import ConfigError, FetchError, IntegrityError
from harness.kernels import in_series, resolve
from harness.matrix import Matrix
from harness.settings import debian_keyring

DATA = Path(__file__).parent / "data"


class RecordedArchive:
    """Archive look-ups answered from real index excerpts kept in tests/data."""

    mirror = "recorded"

    def packages(self, suite: str, debarch: str) -> list[Package]:
        path = DATA / f"Packages-{suite}-{debarch}-excerpt"
        if not path.is_file():
            raise FetchError(f"no suite {suite}")
        return list(_parse_packages(path.read_bytes(), suite))


def spec(series: str, *suites: str) -> KernelSpec:
    return KernelSpec(name=series, source="debian", arches=("x86_64",), series=series,
                      suites=suites)  # fmt: skip


def test_series_membership() -> None:
    assert in_series("6.1.176-1", "6.1")
    assert not in_series("6.12.117-1", "6.1")
    assert in_series("6.12.48-1~bpo12+1", "6.12")
    assert in_series("7.2.13-1", "7.x")
    assert not in_series("6.19.1-1", "7.x")


def test_newest_image_of_the_series_in_one_package() -> None:
    packages = resolve(spec("6.1", "bookworm"), "x86_64", RecordedArchive())  # type: ignore[arg-type]
    assert [(p.name, p.version) for p in packages] == [
        ("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1")
    ]
    assert packages[0].filename.startswith("pool/main/l/linux-signed-amd64/")


def test_split_packages_bring_binary_modules_and_base() -> None:
    packages = resolve(spec("7.x", "missing", "sid"), "x86_64", RecordedArchive())  # type: ignore[arg-type]
    assert sorted(p.name for p in packages) == [
        "linux-base-7.2.13+deb14-cloud-amd64",
        "linux-binary-7.2.13+deb14-cloud-amd64",
        "linux-image-7.2.13+deb14-cloud-amd64",
        "linux-modules-7.2.13+deb14-cloud-amd64",
    ]


def test_no_kernel_of_the_series_names_the_suites() -> None:
    with pytest.raises(
        FetchError, match=r"no cloud kernel of series 5\.4 for amd64 in suites"
    ):
        resolve(spec("5.4", "bookworm"), "x86_64", RecordedArchive())  # type: ignore[arg-type]


def test_tampered_release_fails_the_signature_check(
    harness_matrix: Matrix, tmp_path: Path
) -> None:
    archive = harness_matrix.archive
    archive.release("bookworm")
    signed = archive.index_dir / "bookworm" / "InRelease"
    copy = tmp_path / "InRelease"
    shutil.copy(signed, copy)
    assert "Codename: bookworm" in archive._verified_release(copy)
    text = copy.read_text()
    copy.write_text(text.replace("Codename: bookworm", "Codename: bookwurm", 1))
    checker = Archive(archive.mirror, harness_matrix.cache, debian_keyring())
    with pytest.raises(IntegrityError, match="signature check"):
        checker._verified_release(copy)


@pytest.mark.parametrize("value", ["abc", "-5", "nan"])
def test_a_bad_index_ttl_names_the_variable_and_what_it_takes(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(INDEX_TTL_ENV, value)
    wanted = rf"{INDEX_TTL_ENV}={value}: .*a number of seconds, 0 or more"
    with pytest.raises(ConfigError, match=wanted):
        Archive("http://mirror.test/debian", Cache(tmp_path), tmp_path / "keyring")


def test_index_ttl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INDEX_TTL_ENV, "60")
    assert index_ttl() == 60.0
    monkeypatch.delenv(INDEX_TTL_ENV)
    assert index_ttl() == INDEX_TTL
