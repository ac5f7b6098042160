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
from harness.cli import NOT_FETCHED, main
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


def listed(catalogue: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """`harness kernels list`: each row's cells by arch, from name to default."""
    assert main(["--catalogue", str(catalogue), "kernels", "list"]) == 0
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines()]
    cells = [[c.strip() for c in row[1:-1]] for row in rows if len(row) == 9]
    return {row[2]: row for row in cells if row[0] == "mine"}


@pytest.mark.usefixtures("harness_env")
def test_list_shows_a_url_kernels_version_and_cache_state_once_fetched(
    tmp_path: Path, served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deb = kernel_deb(served / "k.deb", version="6.1.999-1")
    matrix = matrix_for(tmp_path, url_entry(url_of(served, "k.deb"), sha256_file(deb)))
    before = listed(matrix.catalogue.path, capsys)["x86_64"]

    matrix.kernel(matrix.targets("mine", "x86_64")[0])

    after = listed(matrix.catalogue.path, capsys)["x86_64"]
    assert (before[3], before[4], before[5]) == ("url", NOT_FETCHED, "no")
    assert (after[3], after[4], after[5]) == ("url", "6.1.999-1", "yes")


@pytest.mark.usefixtures("harness_env")
def test_list_reads_a_local_debs_version_and_finds_it_unpacked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel_deb(tmp_path / "k.deb", version="6.1.998-2")
    entry = "{name: mine, source: local, arch: [x86_64, arm64], debs: [k.deb]}"
    matrix = matrix_for(tmp_path, entry)

    matrix.kernel(matrix.targets("mine", "x86_64")[0])

    rows = listed(matrix.catalogue.path, capsys)
    assert rows["x86_64"][4:6] == ["6.1.998-2", "yes"]
    assert rows["arm64"][4:6] == ["6.1.998-2", "no"]


@pytest.mark.usefixtures("harness_env")
def test_list_shows_a_local_image_as_used_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "vmlinuz-6.1.0-99-cloud-amd64"
    image.write_bytes(b"not really a kernel\n")
    entry = f"{{name: mine, source: local, arch: [x86_64], image: {image.name}}}"
    matrix = matrix_for(tmp_path, entry)

    row = listed(matrix.catalogue.path, capsys)["x86_64"]

    assert row[4:6] == [f"local:{sha256_file(image)[:12]}", "-"]
    assert row[4] == matrix.kernel(matrix.targets("mine", "x86_64")[0]).version
