"""Tetragon as the agent under test: find the release, run it in the guest.

The release arrives as Tetragon's tarball (`tetragon-<version>-<arch>/usr/
local/bin/{tetragon,tetra}`, BPF objects in `usr/local/lib/tetragon/bpf/`),
a directory of that layout, a URL, or a version number. It is unpacked once
into the cache and put in the guest's initramfs, so nothing is copied over
the control channel. One agent runs per VM; policies are added at runtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from harness.arches import ARCHES
from harness.cache import Cache, sha256_file
from harness.debian import download
from harness.errors import FetchError, GuestError, HarnessError, IntegrityError
from harness.loaderrors import PolicyLoadError, classify, from_tetra_output
from harness.vm import VM

log = logging.getLogger(__name__)

# The public release download, overridable for a mirror or a fork.
RELEASE_URL_ENV = "HARNESS_TETRAGON_URL"
RELEASE_URL = (
    "https://github.com/cilium/tetragon/releases/download/"
    "v{version}/tetragon-v{version}-{debarch}.tar.gz"
)
GUEST_DIR = "/run/tetragon"
EXPORT = f"{GUEST_DIR}/events.jsonl"
AGENT_LOG = f"{GUEST_DIR}/agent.log"
READY_LINE = 'msg="Listening for events..."'
BINARY = "usr/local/bin/tetragon"
# A release's tarball or directory name: tetragon-v1.7.0-amd64(.tar.gz).
RELEASE_NAME = re.compile(
    r"tetragon-v?(\d+\.\d+\.\d+[\w.+-]*?)-(?:amd64|arm64|\{debarch\})(?:\.tar\.gz)?"
)
ELF_MACHINES = {62: "x86_64", 183: "arm64"}


@dataclass(frozen=True)
class AgentBundle:
    """An unpacked Tetragon release for one arch."""

    version: str
    arch: str
    root: Path
    sha256: str

    def files(self) -> dict[str, bytes]:
        """Guest path (relative to /) to content, for the initramfs."""
        base = self.root / "usr" / "local"
        wanted = [base / "bin" / "tetragon", base / "bin" / "tetra"]
        wanted += sorted((base / "lib" / "tetragon").rglob("*"))
        return {
            str(p.relative_to(self.root)): p.read_bytes() for p in wanted if p.is_file()
        }


def _elf_arch(binary: Path) -> str | None:
    with binary.open("rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF":
        return None
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"))


def _release_root(directory: Path) -> Path | None:
    """The directory holding usr/local/bin/tetragon at or right below `directory`."""
    for candidate in (directory, *sorted(p for p in directory.iterdir() if p.is_dir())):
        if (candidate / "usr" / "local" / "bin" / "tetragon").is_file():
            return candidate
    return None


def _has_binary(tarball: Path) -> bool:
    with tarfile.open(tarball) as tar:
        return any(m.isfile() and f"/{m.name}".endswith(f"/{BINARY}") for m in tar)


def release_problem(path: Path) -> str:
    """Why `path` is no Tetragon release (tarball, its directory, tarballs), or ""."""
    if path.is_dir():
        tarballs = sorted(
            t for arch in ARCHES.values() for t in path.glob(f"*-{arch.debian}.tar.gz")
        )
        if not tarballs:
            if _release_root(path) is not None:
                return ""
            return (
                f"no {BINARY} in it, nor a tetragon-*-amd64.tar.gz or "
                "-arm64.tar.gz; pass a release tarball, its unpacked directory or "
                "a directory of release tarballs"
            )
        for tarball in tarballs:
            if problem := release_problem(tarball):
                return f"{tarball.name}: {problem}"
        return ""
    fix = "pass a Tetragon release tarball such as tetragon-v1.7.0-amd64.tar.gz"
    try:
        if _has_binary(path):
            return ""
    except tarfile.ReadError:
        return f"not a tar archive (plain, gzip, bzip2 or xz); {fix}"
    except (tarfile.TarError, OSError, EOFError) as e:
        return f"cannot be read ({e}); {fix}"
    return f"a tarball without {BINARY}; pass a Tetragon release tarball"


def _version_of(root: Path) -> str:
    match = re.search(r"tetragon-(v?[\w.+-]+?)-(amd64|arm64)$", root.name)
    return match.group(1) if match else root.name


def release_version(value: str) -> str:
    """The version a `--tetragon` value names (`1.7.0`, no `v`), or "".

    "" when only the agent itself can tell: a directory or file whose name
    does not carry the release's (`tetragon-v1.7.0-amd64`).
    """
    value = value.strip()
    if source_kind(value) == "version":
        return value.removeprefix("v")
    names = [value.rstrip("/").rsplit("/", 1)[-1]]
    path = Path(value).expanduser()
    if source_kind(value) == "path" and path.is_dir():
        root = _release_root(path)
        tarballs = [t.name for t in path.glob("tetragon-*.tar.gz")]
        names = tarballs or ([root.name] if root is not None else names)
    found = {m.group(1) for n in names if (m := RELEASE_NAME.fullmatch(n))}
    return found.pop() if len(found) == 1 else ""


def source_kind(value: str) -> str:
    """What a `--tetragon` value names: "version", "url" or "path"."""
    value = value.strip()
    if re.fullmatch(r"v?\d+\.\d+\.\d+([\w.-]*)", value):
        return "version"
    if re.match(r"https?://", value):
        return "url"
    return "path"


class AgentSource:
    """Resolves a `--tetragon` value into per-arch bundles, through the cache."""

    def __init__(self, value: str, cache: Cache) -> None:
        self.value = value.strip()
        self.cache = cache

    def bundle(self, arch: str) -> AgentBundle | None:
        """The release for guests of `arch`, or None when the value has none."""
        debarch = ARCHES[arch].debian
        kind = source_kind(self.value)
        if kind == "version":
            version = self.value.lstrip("v")
            template = os.environ.get(RELEASE_URL_ENV, RELEASE_URL)
            return self._from_url(
                template.format(version=version, debarch=debarch), arch
            )
        if kind == "url":
            return self._from_url(self.value.replace("{debarch}", debarch), arch)
        path = Path(self.value).expanduser()
        if path.is_dir():
            for tarball in sorted(path.glob(f"*-{debarch}.tar.gz")):
                return self._from_tarball(tarball, arch)
            root = _release_root(path)
            if root is None:
                raise HarnessError(
                    f"--tetragon={self.value}: no usr/local/bin/tetragon in it, nor a "
                    f"tetragon-*-{debarch}.tar.gz; give a release tarball or its "
                    "directory"
                )
            return self._checked(
                root, arch, sha256_file(root / "usr/local/bin/tetragon")
            )
        if path.is_file():
            return self._from_tarball(path, arch)
        raise HarnessError(
            f"--tetragon={self.value}: not a file, directory, URL or version number"
        )

    def _checked(self, root: Path, arch: str, digest: str) -> AgentBundle | None:
        binary_arch = _elf_arch(root / "usr/local/bin/tetragon")
        if binary_arch != arch:
            log.info("agent %s is for %s, not %s", root, binary_arch, arch)
            return None
        return AgentBundle(_version_of(root), arch, root, digest)

    def _from_tarball(self, tarball: Path, arch: str) -> AgentBundle | None:
        digest = sha256_file(tarball)
        entry = self.cache.path("agents", digest[:16])

        def unpack(tmp: Path) -> None:
            try:
                with tarfile.open(tarball) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError) as e:
                raise HarnessError(
                    f"--tetragon={self.value}: {tarball} cannot be unpacked "
                    f"({' '.join(str(e).split())}); pass a Tetragon release tarball"
                ) from e
            if _release_root(tmp) is None:
                raise HarnessError(
                    f"--tetragon={self.value}: {tarball} holds no {BINARY}; pass a "
                    "Tetragon release tarball"
                )

        def valid(path: Path) -> bool:
            return _release_root(path) is not None

        self.cache.directory(entry, unpack, valid)
        root = _release_root(entry)
        assert root is not None
        return self._checked(root, arch, digest)

    def _from_url(self, url: str, arch: str) -> AgentBundle | None:
        name = url.rsplit("/", 1)[-1]
        expected = self._published_sum(url, name)
        entry = self.cache.path("downloads", expected[:16], name)

        def valid(path: Path) -> bool:
            return sha256_file(path) == expected

        self.cache.file(entry, lambda tmp: download(url, tmp, name), valid)
        return self._from_tarball(entry, arch)

    def _published_sum(self, url: str, name: str) -> str:
        sums = self.cache.path(
            "downloads", "sums", hashlib.sha256(url.encode()).hexdigest()
        )
        if not sums.is_file():
            try:
                response = requests.get(f"{url}.sha256sum", timeout=(10, 60))
                response.raise_for_status()
            except requests.RequestException as e:
                raise FetchError(
                    f"cannot fetch the published checksum {url}.sha256sum: {e}"
                ) from e
            sums.parent.mkdir(parents=True, exist_ok=True)
            sums.write_text(response.text)
        for line in sums.read_text().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].lstrip("*").endswith(name):
                return fields[0].lower()
        raise IntegrityError(f"{url}.sha256sum lists no checksum for {name}")


class Tetragon:
    """The agent running in one VM."""

    def __init__(self, vm: VM, bundle: AgentBundle, args: Sequence[str] = ()) -> None:
        self.vm = vm
        self.bundle = bundle
        self.args = tuple(args)
        self.version = bundle.version
        self.loaded: dict[str, float] = {}
        # A policy that failed once fails the same way again: say so at once
        # instead of paying for another load under TCG.
        self.refused: dict[str, PolicyLoadError] = {}
        self.ready_seconds = 0.0
        self.offset = 0

    def start(self, timeout: float = 40.0) -> float:
        """Start the agent and wait for its own readiness line; seconds taken."""
        flags = [
            "--bpf-lib", "/usr/local/lib/tetragon/bpf/",
            "--export-filename", EXPORT,
            "--log-level", "info",
            *self.args,
        ]  # fmt: skip
        script = (
            f"mkdir -p {GUEST_DIR}/policies && cd {GUEST_DIR}\n"
            f"setsid /usr/local/bin/tetragon {shlex.join(flags)} "
            f"< /dev/null > {AGENT_LOG} 2>&1 &\n"
            f"echo $! > {GUEST_DIR}/pid\n"
        )
        started = time.monotonic()
        self.vm.shell(script, timeout=10).check()
        wait = (
            f"pid=$(cat {GUEST_DIR}/pid)\n"
            f"while ! grep -qF {shlex.quote(READY_LINE)} {AGENT_LOG}; do\n"
            "  kill -0 $pid 2>/dev/null || exit 3\n"
            "  usleep 200000\n"
            "done\n"
        )
        result = self.vm.shell(wait, timeout=timeout)
        if result.status != 0:
            raise GuestError(
                f"tetragon exited before it was ready (status {result.status}); "
                f"its log ends:\n{self.log_tail()}"
            )
        self.ready_seconds = time.monotonic() - started
        match = re.search(r'msg="Starting tetragon" version=(\S+)', self.log())
        if match:
            self.version = match.group(1)
        log.info("tetragon %s ready in %.1f s", self.version, self.ready_seconds)
        return self.ready_seconds

    def log(self) -> str:
        """The agent's whole log so far."""
        return self.vm.copy_out(AGENT_LOG).decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the agent's log."""
        return "\n".join(self.log().splitlines()[-lines:])

    def add_policy(self, name: str, text: str, timeout: float = 60.0) -> float:
        """Add a policy at runtime (once per VM); seconds the load took."""
        if name in self.loaded:
            return 0.0
        if name in self.refused:
            raise self.refused[name]
        guest = f"{GUEST_DIR}/policies/{name}.yaml"
        self.vm.copy_in(text.encode(), guest)
        started = time.monotonic()
        # The CLI's own gRPC timeout (30 s) is too short for loads under TCG.
        seconds = int(timeout * self.vm.accel.scale)
        result = self.vm.run(
            ["tetra", "--timeout", f"{seconds}s", "tracingpolicy", "add", guest],
            timeout=timeout,
        )
        if result.status != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            failure = from_tetra_output(output) or classify(output)
            failure = replace(failure, policy=failure.policy or name)
            self.refused[name] = PolicyLoadError(failure, where=self.vm.kernel.id)
            raise self.refused[name]
        self.loaded[name] = time.monotonic() - started
        return self.loaded[name]

    def delete_policy(self, name: str) -> None:
        """Remove a policy added earlier (by its metadata.name)."""
        self.vm.run(["tetra", "tracingpolicy", "delete", name], timeout=60).check()
        self.loaded.pop(name, None)

    def read_new(self) -> bytes:
        """Complete export lines written since the last call."""
        result = self.vm.run(["tail", "-c", f"+{self.offset + 1}", EXPORT], timeout=30)
        if result.status != 0:
            return b""
        data = result.stdout
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end]

    def stop(self) -> None:
        """Stop the agent (SIGTERM, as a service manager would)."""
        self.vm.shell(
            f"kill $(cat {GUEST_DIR}/pid) 2>/dev/null; sleep 1; true", timeout=20
        )
