"""Test isolation: HOME is a temporary directory; the kernel cache is kept.

Kernels are tens of MB each, so the tests share the user's kernel cache (or
$HARNESS_CACHE_DIR) across runs; tests about caching use their own tmp cache.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.accel import ACCEL_ENV
from harness.cache import CACHE_ENV, default_cache_dir
from harness.settings import KEYRING_ENV, MIRROR_ENV

# A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored,
# and so would every pytest and harness the tests start and then interrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    # Resolve the shared kernel cache before HOME moves.
    os.environ.setdefault(CACHE_ENV, str(default_cache_dir()))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ material (recorded Tetragon runs, upstream policies)."""
    if not SHARED.is_dir():
        pytest.skip(
            f"{SHARED} not found: the shared/ directory must sit beside the repo"
        )
    return SHARED


@pytest.fixture(scope="session")
def recorded(shared_dir: Path) -> Path:
    """shared/tetragon/recorded: real Tetragon output."""
    path = shared_dir / "tetragon" / "recorded"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the recorded Tetragon runs are missing")
    return path


@pytest.fixture
def harness_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`harness` commands run in-process with the test's own cache, an archive
    they never reach, TCG without a KVM trial and a wide terminal."""
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    monkeypatch.setenv(KEYRING_ENV, str(keyring))
    monkeypatch.setenv(ACCEL_ENV, "tcg")
    monkeypatch.setenv("COLUMNS", "200")
