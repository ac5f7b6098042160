"""QEMU ends with its owner: Ctrl-C, SIGKILL or a failing boot leave no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.boot

HARNESS = [
    sys.executable,
    "-m",
    "harness.cli",
    "--catalogue",
    str(ROOT / "kernels.yaml"),
]


def qemu_pids(marker: Path) -> list[int]:
    """QEMU processes whose command line mentions `marker` (our artefact dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and b"qemu-system" in argv[0]
            and str(marker).encode() in b" ".join(argv)
        ):
            found.append(int(entry.name))
    return found


def wait_for_qemu(
    marker: Path, proc: subprocess.Popen[bytes], seconds: float = 120
) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = qemu_pids(marker)
        if pids:
            return pids[0]
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else b""
            pytest.fail(
                f"exited {proc.returncode} before starting QEMU: {out[-2000:]!r}"
            )
        time.sleep(0.05)
    pytest.fail("QEMU never started")


def wait_gone(marker: Path, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and qemu_pids(marker):
        time.sleep(0.1)
    return qemu_pids(marker)


def boot_argv(kernel: str, artefacts: Path) -> list[str]:
    """`harness boot KERNEL` on x86_64 with its artefacts in `artefacts`."""
    return [*HARNESS, "boot", kernel, "--arch", "x86_64", "--artefacts", str(artefacts)]


@pytest.fixture
def x86_kernel() -> str:
    """A default kernel name to boot on x86_64."""
    return "6.1"


def test_sigint_to_the_cli_mid_boot_leaves_no_qemu(
    tmp_path: Path, x86_kernel: str
) -> None:
    argv = boot_argv(x86_kernel, tmp_path)
    proc = subprocess.Popen(
        [*argv, "--", "sleep", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    wait_for_qemu(tmp_path, proc)
    time.sleep(0.5)  # mid-boot: the guest needs seconds to get ready
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert wait_gone(tmp_path) == []


def test_sigkill_of_the_owner_takes_qemu_down(tmp_path: Path, x86_kernel: str) -> None:
    # A crashed xdist worker cannot clean up; the kernel's parent-death signal must.
    argv = boot_argv(x86_kernel, tmp_path)
    proc = subprocess.Popen([*argv, "--", "sleep", "100"], stdout=subprocess.PIPE)
    wait_for_qemu(tmp_path, proc)
    proc.kill()
    proc.wait()
    assert wait_gone(tmp_path, seconds=5) == []


def test_sigint_to_pytest_mid_boot_leaves_no_qemu(
    tmp_path: Path, x86_kernel: str
) -> None:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            """
            def test_boots(vm):
                assert vm.run(["sleep", "100"]).status == 0
            """
        )
    )
    artefacts = tmp_path / "artefacts"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider",
            f"--kernels={x86_kernel}", "--arch=x86_64", f"--artefacts={artefacts}",
            f"--catalogue={ROOT / 'kernels.yaml'}", f"--rootdir={tmp_path}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    wait_for_qemu(artefacts, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in output, output[-3000:]
    assert wait_gone(artefacts) == []


def test_cli_prints_the_guest_output_and_exits_with_its_status(
    tmp_path: Path, x86_kernel: str
) -> None:
    argv = boot_argv(x86_kernel, tmp_path)
    done = subprocess.run(
        [*argv, "--", "sh", "-c", "uname -m; echo to-stderr >&2; exit 7"],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"x86_64\n"
    assert b"to-stderr" in done.stderr
    assert (tmp_path / "qemu-cmd.txt").read_text().startswith("qemu-system-x86_64 ")
    assert (tmp_path / "console.log").stat().st_size > 0
    assert qemu_pids(tmp_path) == []
