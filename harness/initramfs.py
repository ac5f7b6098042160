"""The guest image: busybox, the harness's init and the modules the guest needs.

Built per kernel and arch in pure Python (a newc cpio writer), so nothing on
the host needs root, loop devices or a cpio binary.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import zstandard
from elftools.elf.elffile import ELFFile

from harness.errors import GuestError

GUEST_FILES = ("init", "agent.sh")


@dataclass
class Cpio:
    """An in-memory newc ("070701") archive, as the kernel's unpacker reads it."""

    buf: io.BytesIO = field(default_factory=io.BytesIO)
    ino: int = 1
    dirs: set[str] = field(default_factory=set)

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{v:08x}"
            for v in (
                self.ino,
                mode,
                0,
                0,
                1,
                0,
                len(data),
                0,
                0,
                0,
                0,
                len(encoded),
                0,
            )
        )
        self.ino += 1
        self.buf.write(header.encode() + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        """Add `name` and its parents as directories (once each)."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path and path not in self.dirs:
                self.dirs.add(path)
                self._entry(path, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file, creating its directories."""
        name = name.strip("/")
        if "/" in name:
            self.directory(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        """Close the archive with its trailer and return the bytes."""
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def decompress_module(path: Path) -> bytes:
    """A module's ELF bytes; busybox insmod cannot read compressed modules."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def modinfo(module: bytes) -> dict[str, list[str]]:
    """The key=value pairs of a module's .modinfo section."""
    section = ELFFile(io.BytesIO(module)).get_section_by_name(".modinfo")
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (dashes as underscores) to file, for one kernel's modules tree."""
    index = {}
    for path in modules_dir.rglob("*.ko*"):
        name = path.name.split(".ko", 1)[0].replace("-", "_")
        index[name] = path
    return index


def builtin_modules(modules_dir: Path) -> set[str]:
    """Modules compiled into the kernel image, per modules.builtin."""
    listing = modules_dir / "modules.builtin"
    if not listing.is_file():
        return set()
    return {
        Path(line).name.split(".ko", 1)[0].replace("-", "_")
        for line in listing.read_text().split()
    }


def module_closure(modules_dir: Path, wanted: Iterable[str]) -> list[tuple[str, bytes]]:
    """The wanted modules and their dependencies, dependencies first."""
    index = module_index(modules_dir)
    builtin = builtin_modules(modules_dir)
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name not in index:
            needed = " -> ".join((*chain, name))
            raise GuestError(
                f"module {name} not found under {modules_dir} (needed: {needed}); "
                "the kernel must build it in or ship it"
            )
        seen.add(name)
        data = decompress_module(index[name])
        for deps in modinfo(data).get("depends", []):
            for dep in filter(None, deps.split(",")):
                visit(dep, (*chain, name))
        ordered.append((name, data))

    for name in wanted:
        visit(name, ())
    return ordered


def guest_file(name: str) -> bytes:
    """A file of the guest side shipped in the package (init, agent)."""
    return (resources.files("harness") / "guest" / name).read_bytes()


ETC = {
    # Tetragon resolves localhost for its gRPC listener and exits without it.
    "etc/hosts": b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/:/bin/sh\n"
    b"harness:x:1000:1000:harness:/tmp:/bin/sh\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\nharness:x:1000:\n",
}


def build(
    busybox: bytes,
    modules: list[tuple[str, bytes]],
    release: str,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """The whole initramfs as bytes."""
    cpio = Cpio()
    for directory in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "root", "mnt"):
        cpio.directory(directory)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", guest_file("init"), 0o755)
    cpio.file("usr/lib/harness/agent.sh", guest_file("agent.sh"), 0o755)
    for name, data in ETC.items():
        cpio.file(name, data)
    order = []
    for name, data in modules:
        cpio.file(f"lib/modules/{release}/harness/{name}.ko", data)
        order.append(name)
    cpio.file("etc/harness/modules", "".join(f"{n}\n" for n in order).encode())
    for name, data in (extra or {}).items():
        cpio.file(name, data, 0o755)
    return cpio.finish()


def fingerprint(*parts: bytes | str) -> str:
    """A short hash naming a cache entry after everything that went into it."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]
