"""Provisioning survives a dead mirror and never uses a damaged cache entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cache import CACHE_ENV, Cache, sha256_file
from harness.catalogue import find_catalogue, load
from harness.debian import Archive
from harness.errors import UnreachableError
from harness.kernels import Provisioner, resolve
from harness.matrix import Matrix
from harness.settings import debian_keyring, debian_mirror

ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"


def offline_env() -> dict[str, str]:
    """The environment with every proxy pointing at a closed port."""
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = DEAD_PROXY
    return env


@pytest.fixture
def shared_cache(harness_matrix: Matrix) -> Cache:
    """The run's real kernel cache, with the 6.1 x86_64 kernel in it."""
    harness_matrix.kernel(harness_matrix.targets("6.1", "x86_64")[0])
    return harness_matrix.cache


@pytest.fixture
def private_cache(shared_cache: Cache, tmp_path: Path) -> Cache:
    """A copy of the shared cache's indices and 6.1 x86_64 packages, ours to damage."""
    cache = Cache(tmp_path / "cache")
    shutil.copytree(
        shared_cache.path("debian", "indices"), cache.path("debian", "indices")
    )
    pool = cache.path("debian", "pool")
    pool.mkdir(parents=True)
    for deb in shared_cache.path("debian", "pool").glob("*.deb"):
        if ("6.1.0-" in deb.name and "amd64" in deb.name) or "busybox" in deb.name:
            shutil.copy(deb, pool / deb.name)
    return cache


def archive_for(cache: Cache) -> Archive:
    return Archive(debian_mirror(), cache, debian_keyring())


@pytest.mark.boot
def test_boot_works_with_the_mirror_unreachable(
    shared_cache: Cache, tmp_path: Path
) -> None:
    env = {**offline_env(), "HARNESS_INDEX_TTL": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "--catalogue", str(ROOT / "kernels.yaml"),
         "boot", "6.1", "--arch", "x86_64", "--artefacts", str(tmp_path), "--",
         "uname", "-r"],
        capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("6.1.")
    assert b"mirror unreachable; using cached index" in done.stderr


def test_unreachable_mirror_with_an_empty_cache_says_so_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**offline_env(), CACHE_ENV: str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    mirror = debian_mirror()
    provisioner = Provisioner(Cache(), archive_for(Cache()))
    spec = load(ROOT / "kernels.yaml").get("6.1")

    with pytest.raises(UnreachableError) as kernel:
        provisioner.kernel(spec, "x86_64")
    with pytest.raises(UnreachableError) as busybox:
        provisioner.busybox("x86_64")

    assert str(kernel.value).splitlines()[0] == (
        f"kernels.6.1: cannot reach the Debian mirror {mirror} and no index of "
        "bookworm, bookworm-updates is cached: set $HARNESS_DEBIAN_MIRROR (or "
        "`debian_mirror` under [tool.harness] in pyproject.toml) to a mirror this "
        "host can reach, or fix its proxy settings"
    )
    assert "127.0.0.1" in str(kernel.value)
    assert str(busybox.value).startswith(
        f"cannot reach the Debian mirror {mirror} and no index of bookworm is cached"
    )
    assert list(tmp_path.rglob("*")) == []


def test_truncated_package_is_detected_and_fetched_again(private_cache: Cache) -> None:
    archive = archive_for(private_cache)
    spec = load(find_catalogue(ROOT)).get("6.1")
    package = resolve(spec, "x86_64", archive)[0]
    cached = private_cache.path("debian", "pool", Path(package.filename).name)
    with cached.open("r+b") as f:
        f.truncate(package.size // 2)

    path = archive.deb(package)

    assert path == cached
    assert path.stat().st_size == package.size
    assert sha256_file(path) == package.sha256


def test_truncated_kernel_image_is_rebuilt_offline(
    private_cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load(find_catalogue(ROOT)).get("6.1")
    provisioner = Provisioner(private_cache, archive_for(private_cache))
    image = provisioner.kernel(spec, "x86_64").image
    good = sha256_file(image)
    with image.open("r+b") as f:
        f.truncate(1000)
    for name, value in offline_env().items():
        monkeypatch.setenv(name, value)

    again = provisioner.kernel(spec, "x86_64").image

    assert sha256_file(again) == good


def test_damaged_initramfs_is_rebuilt(private_cache: Cache) -> None:
    matrix = Matrix(load(find_catalogue(ROOT)), private_cache)
    matrix._archive = archive_for(private_cache)
    kernel = matrix.kernel(matrix.targets("6.1", "x86_64")[0])
    initrd = matrix.initrd(kernel)
    good = sha256_file(initrd)
    with initrd.open("r+b") as f:
        f.seek(100)
        f.write(b"garbage")

    assert sha256_file(matrix.initrd(kernel)) == good
