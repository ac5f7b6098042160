"""Workload steps: parsing, the busybox rendering, and the script around them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.steps import Run, Step, failed_step, render_script


def run_script(steps: list[Step]) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this host to run a rendered script")
    script = render_script(steps)
    return subprocess.run([sh], input=script, text=True, capture_output=True)


def test_the_step_that_broke_is_found_in_the_output() -> None:
    done = run_script([Step(Run("true")), Step(Run("sh -c 'exit 3'"), exit=4)])

    assert done.returncode == 97
    assert (
        failed_step("noise\n" + done.stderr)
        == "step 2 (run sh -c 'exit 3') exited 3, expected 4"
    )
    assert failed_step("harness: no listener on tcp port 8080\n") is None
