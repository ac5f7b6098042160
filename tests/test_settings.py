"""The archive mirror comes from a setting or the host's apt sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import settings
from harness.errors import ConfigError, HarnessError


def test_deb822_and_one_line_sources(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# comment\ndeb [arch=amd64] http://mirror.test/debian bookworm main\n"
        "deb http://security.test/debian-security bookworm-security main\n"
    )
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://other.test/debian\nSuites: trixie\n"
        "Components: main\n\n"
        "Types: deb-src\nURIs: http://src.test/debian\nSuites: trixie\n\n"
        "Types: deb\nURIs: http://other.test/debian-security\nSuites: trixie-security\n"
    )
    (parts / "vendor.list").write_text("deb https://vendor.test/apt stable main\n")

    mirrors = settings.apt_mirrors(listing, parts)

    assert mirrors == ["http://mirror.test/debian", "http://other.test/debian"]


def test_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.MIRROR_ENV, "http://env.test/debian/")
    assert settings.debian_mirror() == "http://env.test/debian"


def test_no_mirror_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(settings.MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, "APT_SOURCES", tmp_path / "none")
    monkeypatch.setattr(settings, "APT_SOURCES_DIR", tmp_path / "none.d")
    monkeypatch.setattr(settings, "apt_mirrors", lambda: [])
    with pytest.raises(HarnessError, match=settings.MIRROR_ENV):
        settings.debian_mirror()


def test_pyproject_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(settings.MIRROR_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.harness]\ndebian_mirror = "http://project.test/debian"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert settings.debian_mirror() == "http://project.test/debian"


def test_bad_settings_are_all_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(settings.MIRROR_ENV, "mirror.test/debian")
    monkeypatch.setenv(settings.KEYRING_ENV, str(tmp_path / "absent.gpg"))
    (tmp_path / "pyproject.toml").write_text(
        "[tool.harness]\ndebian_mirorr = 'http://a.test/debian'\ndebian_mirror = 3\n"
    )

    with pytest.raises(ConfigError) as caught:
        settings.check_settings(tmp_path)

    text = str(caught.value)
    assert "HARNESS_DEBIAN_MIRROR=mirror.test/debian: not a Debian archive" in text
    assert f"HARNESS_DEBIAN_KEYRING={tmp_path / 'absent.gpg'}: no such file" in text
    assert "tool.harness.debian_mirorr" in text and "debian_mirror" in text
    assert "tool.harness.debian_mirror: 3 is not a Debian archive base URI" in text


def test_good_settings_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(settings.MIRROR_ENV, "file:///srv/debian")
    monkeypatch.delenv(settings.KEYRING_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.harness]\ndebian_mirror = 'https://mirror.test/debian'\n"
    )
    settings.check_settings(tmp_path)
