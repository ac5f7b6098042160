"""Kernels from elsewhere than the archive: local images, local .debs, URLs."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cache import Cache, sha256_file
from harness.catalogue import load
from harness.errors import FetchError
from harness.kernels import Kernel
from harness.matrix import Matrix

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def debian_kernel(harness_matrix: Matrix) -> Kernel:
    """The 6.1 x86_64 kernel of the catalogue, provisioned from the archive."""
    return harness_matrix.kernel(harness_matrix.targets("6.1", "x86_64")[0])


@pytest.fixture(scope="module")
def kernel_deb(harness_matrix: Matrix, debian_kernel: Kernel) -> Path:
    name = debian_kernel.packages[0].split("=")[0]
    (deb,) = harness_matrix.cache.path("debian", "pool").glob(f"{name}_*.deb")
    return deb


def matrix_for(tmp_path: Path, entry: str, shared: Matrix) -> Matrix:
    catalogue = tmp_path / "kernels.yaml"
    catalogue.write_text(f"kernels:\n  - {entry}\n")
    matrix = Matrix(load(catalogue), Cache(tmp_path / "cache"))
    matrix._archive = shared.archive  # busybox comes from the archive
    return matrix


def boot_release(matrix: Matrix, tmp_path: Path) -> str:
    target = matrix.targets("mine", "x86_64")[0]
    with matrix.vm(target, tmp_path / "art") as vm:
        return vm.run(["uname", "-r"], check=True).text.strip()


def test_local_image_with_its_modules_directory(
    tmp_path: Path, harness_matrix: Matrix, debian_kernel: Kernel
) -> None:
    entry = (
        f"{{name: mine, source: local, arch: [x86_64], image: {debian_kernel.image}, "
        f"modules: {debian_kernel.modules}}}"
    )
    matrix = matrix_for(tmp_path, entry, harness_matrix)
    kernel = matrix.kernel(matrix.targets("mine", "x86_64")[0])
    assert kernel.version.startswith("local:")
    assert boot_release(matrix, tmp_path) == debian_kernel.release


def test_local_debs(tmp_path: Path, harness_matrix: Matrix, kernel_deb: Path) -> None:
    entry = f"{{name: mine, source: local, arch: [x86_64], debs: [{kernel_deb}]}}"
    matrix = matrix_for(tmp_path, entry, harness_matrix)
    kernel = matrix.kernel(matrix.targets("mine", "x86_64")[0])
    assert kernel.version == "6.1.176-1" or kernel.version.startswith("6.1.")
    assert boot_release(matrix, tmp_path).startswith("6.1.")


@pytest.fixture
def served(kernel_deb: Path) -> Iterator[str]:
    """The kernel .deb served over HTTP on loopback; yields its URL."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(kernel_deb.parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{kernel_deb.name}"
    server.shutdown()


def test_url_with_its_sha256(
    tmp_path: Path, harness_matrix: Matrix, kernel_deb: Path, served: str
) -> None:
    digest = sha256_file(kernel_deb)
    entry = (
        f"{{name: mine, source: url, arch: [x86_64], url: '{served}', "
        f"sha256: '{digest}'}}"
    )
    matrix = matrix_for(tmp_path, entry, harness_matrix)
    assert boot_release(matrix, tmp_path).startswith("6.1.")


def test_url_with_a_wrong_sha256_is_refused(
    tmp_path: Path, harness_matrix: Matrix, served: str
) -> None:
    entry = (
        f"{{name: mine, source: url, arch: [x86_64], url: '{served}', "
        f"sha256: '{'0' * 64}'}}"
    )
    matrix = matrix_for(tmp_path, entry, harness_matrix)
    with pytest.raises(FetchError, match=r"kernels\.mine\.sha256: .* does not match"):
        matrix.kernel(matrix.targets("mine", "x86_64")[0])
    assert not list((tmp_path / "cache").rglob("*.deb"))
