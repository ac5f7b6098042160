"""`harness` commands that boot nothing, run in-process on a fake local kernel."""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path

import pytest

from harness.cli import main
from harness.kernels import Kernel
from harness.matrix import Matrix


@pytest.fixture
def local_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness_env: None
) -> Path:
    """A catalogue of one local image, `mine`; its initramfs is a stand-in."""
    image = tmp_path / "vmlinuz-6.1.0-99-cloud-amd64"
    image.write_bytes(b"not really a kernel\n")
    catalogue = tmp_path / "kernels.yaml"
    catalogue.write_text(
        f"kernels:\n  - {{name: mine, source: local, arch: [x86_64], "
        f"image: {image.name}}}\n"
    )
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"")

    def fake_initrd(
        self: Matrix, kernel: Kernel, extra: dict[str, bytes] | None = None
    ) -> Path:
        return initrd

    # The real one needs busybox from the Debian archive.
    monkeypatch.setattr(Matrix, "initrd", fake_initrd)
    return catalogue


def test_show_command_leaves_no_directory_and_says_the_paths_are_examples(
    tmp_path: Path,
    local_kernel: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scratch, runtime = tmp_path / "tmp", tmp_path / "run"
    scratch.mkdir()
    runtime.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    argv = ["--catalogue", str(local_kernel), "boot", "mine", "--arch=x86_64"]

    for _ in range(2):
        assert main([*argv, "--show-command"]) == 0

    out, err = capsys.readouterr()
    # Nothing stays behind, however often it is asked.
    assert (list(scratch.iterdir()), list(runtime.iterdir())) == ([], [])
    command = shlex.split(out.splitlines()[0])
    image = local_kernel.parent / "vmlinuz-6.1.0-99-cloud-amd64"
    assert command[command.index("-kernel") + 1] == str(image)
    console = scratch / "harness-mine-x86_64" / "console.log"
    assert f"file,id=console,path={console}" in command
    sockets = re.escape(f"{runtime}/harness-") + r"[^/ ]+"
    note = re.escape(f"harness: the console log ({console}) and control socket (")
    note += sockets + re.escape(
        "/ctl.sock) paths are examples; before running the command, make their "
        f"directories (mkdir -p -m 700 {console.parent} "
    )
    note += sockets + re.escape(") or change them")
    assert re.fullmatch(note, err.splitlines()[0]), err
