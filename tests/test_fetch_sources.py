"""Kernels by URL and local .debs, fetched and unpacked without booting them.

The packages are small fakes (tests/fakedeb.py) served from loopback, so
these tests need neither the Debian mirror nor QEMU.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakedeb import kernel_deb

from harness.cache import Cache, sha256_file
from harness.catalogue import load
from harness.debian import Archive
from harness.errors import IntegrityError
from harness.matrix import Matrix


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory served over HTTP on loopback at http://127.0.0.1:PORT/."""
    root = tmp_path / "www"
    root.mkdir()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (root / ".port").write_text(str(server.server_address[1]))
    yield root
    server.shutdown()
    server.server_close()


def url_of(root: Path, name: str) -> str:
    return f"http://127.0.0.1:{(root / '.port').read_text()}/{name}"


def matrix_for(tmp_path: Path, entry: str) -> Matrix:
    """A matrix of one catalogue entry named `mine`, with its own cache."""
    catalogue = tmp_path / "kernels.yaml"
    catalogue.write_text(f"kernels:\n  - {entry}\n")
    cache = Cache(tmp_path / "cache")
    matrix = Matrix(load(catalogue), cache)
    # Only its download() is used: nothing here reads the Debian archive.
    matrix._archive = Archive("http://127.0.0.1:9", cache, tmp_path / "no-keyring")
    return matrix


def url_entry(url: str, digest: str) -> str:
    fields = f"url: '{url}', sha256: '{digest}'"
    return f"{{name: mine, source: url, arch: [x86_64], {fields}}}"


def test_a_wrong_sha256_names_the_key_both_digests_and_the_fix(
    tmp_path: Path, served: Path
) -> None:
    deb = kernel_deb(served / "k.deb")
    url, wrong = url_of(served, "k.deb"), "0" * 64
    matrix = matrix_for(tmp_path, url_entry(url, wrong))

    with pytest.raises(IntegrityError) as caught:
        matrix.kernel(matrix.targets("mine", "x86_64")[0])

    assert str(caught.value) == (
        f"{tmp_path / 'kernels.yaml'}: kernels.mine.sha256: {url} does not match: "
        f"expected sha256 {wrong}, got {sha256_file(deb)}; nothing was cached. "
        "Correct `sha256:` if this is the file you meant (sha256sum prints it), "
        "or `url:` if it is not"
    )
    # Only the entry's lock remains: no download, whole or partial, no temp file.
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [p.name for p in left] == ["k.deb.lock"]


def test_the_right_sha256_fetches_and_unpacks_the_kernel(
    tmp_path: Path, served: Path
) -> None:
    deb = kernel_deb(served / "k.deb", version="6.1.999-1")
    matrix = matrix_for(tmp_path, url_entry(url_of(served, "k.deb"), sha256_file(deb)))

    kernel = matrix.kernel(matrix.targets("mine", "x86_64")[0])

    assert (kernel.version, kernel.release) == ("6.1.999-1", "6.1.0-99-cloud-amd64")
    assert kernel.image.read_bytes().startswith(b"not really a kernel")
