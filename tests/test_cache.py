"""Cache entries appear whole or not at all, once, whoever asks at the same time."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from harness.cache import Cache


def slow_build(root: str, counter: str) -> str:
    cache = Cache(Path(root))

    def build(tmp: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        tmp.write_text("payload")

    return str(cache.file(cache.path("entry.txt"), build))


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        paths = pool.starmap(slow_build, [(str(tmp_path / "c"), str(counter))] * 4)
    assert len(set(paths)) == 1
    assert Path(paths[0]).read_text() == "payload"
    assert counter.read_text() == "built\n"


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    entry = cache.path("sub", "file.bin")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("network died")

    with pytest.raises(RuntimeError):
        cache.file(entry, broken)
    assert not entry.exists()
    assert [p.name for p in entry.parent.iterdir()] == ["file.bin.lock"]


def test_invalid_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    entry = cache.path("d")
    cache.directory(entry, lambda tmp: (tmp / "x").write_text("1"))
    (entry / "x").write_text("tampered")

    def valid(path: Path) -> bool:
        return (path / "x").read_text() == "1"

    cache.directory(entry, lambda tmp: (tmp / "x").write_text("1"), valid)
    assert (entry / "x").read_text() == "1"
