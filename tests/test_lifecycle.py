"""QEMU ends with its owner: Ctrl-C, SIGKILL or a failing boot leave no process."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.boot

# An interrupted run ends within this many seconds: no polite power-off.
STOP_SECONDS = 5.0

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


def stop(proc: subprocess.Popen[bytes], sig: int) -> tuple[bytes, float]:
    """Send `sig`; the output and the seconds until the process ended."""
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # pytest's faulthandler prints every thread's stack on SIGABRT: where
        # the process hangs is the evidence this failure needs.
        proc.send_signal(signal.SIGABRT)
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"still running 60 s after {sig!r}:\n{output[-6000:].decode()}")
    return output, time.monotonic() - sent


def wait_for_line(
    proc: subprocess.Popen[bytes], text: bytes, seconds: float = 120
) -> None:
    """Read the process's output until a line holds `text`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    seen = b""
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            seen += line
            if text in line:
                return
            if not line:
                break
    pytest.fail(f"no line with {text!r} in: {seen[-2000:]!r}")


def test_sigint_to_the_cli_mid_boot_leaves_no_qemu(
    tmp_path: Path, x86_kernel: str
) -> None:
    argv = boot_argv(x86_kernel, tmp_path)
    proc = subprocess.Popen(
        [*argv, "--", "sleep", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_qemu(tmp_path, proc)
    time.sleep(0.5)  # mid-boot: the guest needs seconds to get ready
    output, seconds = stop(proc, signal.SIGINT)
    assert proc.returncode == 130, output
    assert b"harness: interrupted: stopping 1 VM(s)\n" in output
    # No polite power-off: QEMU is stopped at once.
    assert seconds < STOP_SECONDS, output
    assert wait_gone(tmp_path) == []


def test_sigterm_to_the_cli_mid_command_stops_at_once(
    tmp_path: Path, x86_kernel: str
) -> None:
    argv = boot_argv(x86_kernel, tmp_path)
    argv.insert(argv.index("boot"), "-v")
    proc = subprocess.Popen(
        [*argv, "--", "sleep", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_line(proc, b"ready in")
    output, seconds = stop(proc, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert b"harness: interrupted: stopping 1 VM(s)\n" in output
    assert seconds < STOP_SECONDS, output
    assert wait_gone(tmp_path) == []


def test_sigkill_of_the_owner_takes_qemu_down(tmp_path: Path, x86_kernel: str) -> None:
    # A crashed xdist worker cannot clean up; the kernel's parent-death signal must.
    argv = boot_argv(x86_kernel, tmp_path)
    proc = subprocess.Popen(
        [*argv, "--", "sleep", "100"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    wait_for_qemu(tmp_path, proc)
    proc.kill()
    proc.wait()
    assert wait_gone(tmp_path, seconds=5) == []


def inner_pytest(tmp_path: Path, kernel: str) -> subprocess.Popen[bytes]:
    """pytest on a test that boots `kernel`, touches `booted` and runs a sleep."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            def test_boots(vm):
                Path({str(tmp_path / "booted")!r}).touch()
                assert vm.run(["sleep", "100"]).status == 0
            """
        )
    )
    artefacts = tmp_path / "artefacts"
    return subprocess.Popen(
        [
            sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider",
            f"--kernels={kernel}", "--arch=x86_64", f"--artefacts={artefacts}",
            f"--catalogue={ROOT / 'kernels.yaml'}", f"--rootdir={tmp_path}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_sigint_to_pytest_mid_boot_leaves_no_qemu(
    tmp_path: Path, x86_kernel: str
) -> None:
    proc = inner_pytest(tmp_path, x86_kernel)
    wait_for_qemu(tmp_path / "artefacts", proc)
    time.sleep(0.5)
    output, seconds = stop(proc, signal.SIGINT)
    assert b"KeyboardInterrupt" in output, output[-3000:]
    assert b"interrupted: stopping 1 VM(s)" in output, output[-3000:]
    assert seconds < STOP_SECONDS, output[-3000:]
    assert wait_gone(tmp_path / "artefacts") == []


def test_sigterm_to_pytest_mid_test_stops_at_once(
    tmp_path: Path, x86_kernel: str
) -> None:
    proc = inner_pytest(tmp_path, x86_kernel)
    deadline = time.monotonic() + 120
    while not (tmp_path / "booted").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    time.sleep(0.5)
    output, seconds = stop(proc, signal.SIGTERM)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert b"interrupted: stopping 1 VM(s)" in output, output[-3000:]
    assert seconds < STOP_SECONDS, output[-3000:]
    assert wait_gone(tmp_path / "artefacts") == []


def test_cli_prints_the_guest_output_and_exits_with_its_status(
    tmp_path: Path, x86_kernel: str
) -> None:
    argv = boot_argv(x86_kernel, tmp_path)
    done = subprocess.run(
        [*argv, "--", "sh", "-c", "uname -m; echo to-stderr >&2; exit 7"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"x86_64\n"
    assert b"to-stderr" in done.stderr
    assert (tmp_path / "qemu-cmd.txt").read_text().startswith("qemu-system-x86_64 ")
    assert (tmp_path / "console.log").stat().st_size > 0
    assert qemu_pids(tmp_path) == []
