"""Small kernel .deb files made on the spot, for provisioning tests that boot nothing.

A .deb is an ar archive of `debian-binary`, `control.tar.gz` and
`data.tar.gz`; written here in Python so that the tests need no dpkg-deb.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

RELEASE = "6.1.0-99-cloud-amd64"


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        header = (
            f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        )
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def kernel_deb(path: Path, version: str = "6.1.999-1", release: str = RELEASE) -> Path:
    """Write a kernel package holding a (fake) image and config; return `path`."""
    control = (
        f"Package: linux-image-{release}\nVersion: {version}\n"
        "Architecture: amd64\nMaintainer: test <test@example.org>\n"
        "Description: a fake kernel\n"
    ).encode()
    data = {
        f"boot/vmlinuz-{release}": b"not really a kernel\n" * 64,
        f"boot/config-{release}": b"CONFIG_BPF=y\n",
        f"lib/modules/{release}/modules.order": b"",
    }
    path.write_bytes(
        _ar(
            {
                "debian-binary": b"2.0\n",
                "control.tar.gz": _tar({"control": control}),
                "data.tar.gz": _tar(data),
            }
        )
    )
    return path
