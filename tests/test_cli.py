"""`harness boot`: stdin in, the command's own status out, artefacts only on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.boot


def boot(
    tmp: Path, *args: str, stdin: bytes = b"", timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """`harness boot 6.1 --arch x86_64 ARGS` with its temporary files under `tmp`."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "--catalogue", str(ROOT / "kernels.yaml"),
         "boot", "6.1", "--arch", "x86_64", *args],
        input=stdin, capture_output=True, timeout=timeout,
        env={**os.environ, "TMPDIR": str(tmp), "XDG_RUNTIME_DIR": str(tmp)},
    )  # fmt: skip


def kept(done: subprocess.CompletedProcess[bytes]) -> Path:
    """The artefact directory a failed run says it kept."""
    lines = done.stderr.decode().splitlines()
    prefix = "harness: console log and QEMU command kept in "
    where = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    assert len(where) == 1, done.stderr
    return Path(where[0])


def test_stdin_reaches_the_command_and_a_success_leaves_nothing(tmp_path: Path) -> None:
    done = boot(tmp_path, "--", "cat", stdin=b"hi\n")
    assert (done.returncode, done.stdout) == (0, b"hi\n"), done.stderr
    assert done.stderr == b""
    assert list(tmp_path.iterdir()) == []


def test_a_failing_command_gives_its_status_and_keeps_the_evidence(
    tmp_path: Path,
) -> None:
    done = boot(tmp_path, "--", "sh", "-c", "exit 2")
    assert done.returncode == 2, done.stderr
    artefacts = kept(done)
    assert artefacts.parent == tmp_path
    assert (artefacts / "console.log").stat().st_size > 0
    assert (artefacts / "qemu-cmd.txt").is_file()


def test_a_harness_failure_exits_125_and_says_where_the_console_is(
    tmp_path: Path,
) -> None:
    done = boot(tmp_path, "--boot-timeout=0.5", "--", "true")
    assert done.returncode == 125, done.stderr
    assert b"harness: error: 6.1-x86_64: no readiness within" in done.stderr
    assert (kept(done) / "qemu-cmd.txt").is_file()


def test_a_timeout_names_the_option_and_the_tcg_scaling(tmp_path: Path) -> None:
    done = boot(tmp_path, "--timeout=0.2", "--", "sleep", "100")
    assert done.returncode == 124, done.stderr
    error = done.stderr.decode().splitlines()[0]
    assert error.startswith("harness: error: `sleep 100` timed out after "), error
    assert error.endswith("; pass a larger --timeout"), error
    if "scaled" in error:
        assert "(--timeout=0.2, scaled x10 for TCG)" in error
    else:
        assert "(--timeout=0.2)" in error
