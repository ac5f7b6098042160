"""The `harness` command itself, whatever the subcommand: a reader that goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "tests" / "data" / "report" / "input.json"


def with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `harness ARGS` writing into a pipe nobody reads (`| head` has exited)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "--catalogue",
             str(ROOT / "kernels.yaml"), *args],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "diff", str(MATRIX), str(MATRIX)],
        ["report", "diff", "--markdown", str(MATRIX), str(MATRIX)],
        ["report", "merge", str(MATRIX), "-o", "{tmp}"],
    ],
)
def test_a_closed_stdout_ends_quietly(args: list[str], tmp_path: Path) -> None:
    done = with_closed_stdout(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_help_to_a_closed_stdout_ends_quietly() -> None:
    # argparse drops what it cannot write: its own output needs no handling.
    done = with_closed_stdout("hooks", "check", "--help")
    assert (done.returncode, done.stderr) == (0, "")


def test_version_is_the_installed_package() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "--version"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"harness {version('kernel-policy-harness')}\n"


def test_install_script_reports_the_installed_version() -> None:
    last = (ROOT / "ci" / "install.sh").read_text().strip().splitlines()[-1]
    assert last == 'echo "installed: $(.venv/bin/harness --version)"'
