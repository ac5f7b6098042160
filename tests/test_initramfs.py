"""The guest image: a newc archive the kernel can unpack, with the right modules."""

from __future__ import annotations

import stat

import pytest

from harness import initramfs
from harness.errors import GuestError
from harness.matrix import Matrix


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content), parsed independently of the writer."""
    entries = {}
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701", f"bad magic at {offset}"
        fields = [
            int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)
        ]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body : body + size])
        offset = body + size + (-size % 4)


def test_archive_round_trip() -> None:
    data = initramfs.build(b"\x7fELF-busybox", [("virtio", b"mod")], "6.1.0-test")
    entries = read_newc(data)
    assert entries["bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELF-busybox")
    assert stat.S_ISDIR(entries["lib/modules/6.1.0-test/harness"][0])
    assert entries["lib/modules/6.1.0-test/harness/virtio.ko"][1] == b"mod"
    assert entries["etc/harness/modules"][1] == b"virtio\n"
    assert entries["init"][1].startswith(b"#!/bin/busybox sh")
    assert b"localhost" in entries["etc/hosts"][1]


@pytest.mark.boot
def test_module_closure_puts_dependencies_first(harness_matrix: Matrix) -> None:
    kernel = harness_matrix.kernel(harness_matrix.targets("6.1", "x86_64")[0])
    assert kernel.modules is not None
    names = [n for n, _ in initramfs.module_closure(kernel.modules, ["virtio_console"])]
    assert names[-1] == "virtio_console"
    assert (
        names.index("virtio")
        < names.index("virtio_ring")
        < names.index("virtio_console")
    )
    with pytest.raises(GuestError, match="module no_such_mod not found"):
        initramfs.module_closure(kernel.modules, ["no_such_mod"])


@pytest.mark.boot
def test_builtin_modules_are_skipped(harness_matrix: Matrix) -> None:
    kernel = harness_matrix.kernel(harness_matrix.targets("7.x", "x86_64")[0])
    assert kernel.modules is not None
    builtin = initramfs.builtin_modules(kernel.modules)
    assert builtin, "modules.builtin is missing from the split 7.x packages"
    name = sorted(builtin)[0]
    assert initramfs.module_closure(kernel.modules, [name]) == []
