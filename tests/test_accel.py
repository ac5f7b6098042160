"""The accelerator: a trial decides unless $HARNESS_ACCEL does; bad values say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import accel
from harness.arches import host_arch
from harness.cache import Cache
from harness.errors import ConfigError

HOST = host_arch()
needs_host_arch = pytest.mark.skipif(HOST is None, reason="no guest arch is the host's")


def test_an_unknown_value_lists_the_accepted_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(accel.ACCEL_ENV, "bogus")
    wanted = r"HARNESS_ACCEL=bogus: not an accelerator; accepted values: kvm, tcg"
    with pytest.raises(ConfigError, match=wanted):
        accel.choose("x86_64", Cache(tmp_path))


@needs_host_arch
def test_forced_kvm_wins_over_a_cached_tcg_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert HOST is not None
    cache = Cache(tmp_path)
    verdict = cache.path("accel", f"kvm-{HOST}.json")
    verdict.parent.mkdir()
    verdict.write_text(
        json.dumps({"name": "tcg", "scale": 10.0, "reason": "trial hung",
                    "boot_id": accel._boot_id()})
    )  # fmt: skip
    monkeypatch.setenv(accel.ACCEL_ENV, "kvm")

    chosen = accel.choose(HOST, cache)

    assert (chosen.name, chosen.scale, chosen.forced) == ("kvm", 1.0, True)
    assert "HARNESS_ACCEL=kvm" in chosen.hint()


def test_forced_kvm_leaves_foreign_arches_on_tcg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    foreign = "arm64" if HOST == "x86_64" else "x86_64"
    monkeypatch.setenv(accel.ACCEL_ENV, "kvm")
    assert accel.choose(foreign, Cache(tmp_path)).name == "tcg"


@needs_host_arch
def test_a_damaged_verdict_runs_the_trial_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert HOST is not None
    cache = Cache(tmp_path)
    verdict = cache.path("accel", f"kvm-{HOST}.json")
    verdict.parent.mkdir()
    verdict.write_text('{"name": "kvm", "sca')
    monkeypatch.delenv(accel.ACCEL_ENV, raising=False)
    monkeypatch.setattr(accel, "kvm_trial", lambda arch: (False, "trial says no"))

    chosen = accel.choose(HOST, cache)

    assert (chosen.name, chosen.reason, chosen.forced) == (
        "tcg",
        "trial says no",
        False,
    )
    assert json.loads(verdict.read_text())["name"] == "tcg"
    assert list(verdict.parent.iterdir()) == [verdict]
