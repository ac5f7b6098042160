"""Under pytest-xdist, all of a target's tests run on one worker: one VM each."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from harness.scheduling import target_of_nodeid

ROOT = Path(__file__).resolve().parents[1]
FAKE = """
    import os
    from pathlib import Path

    import pytest

    @pytest.mark.parametrize("n", range(6))
    def test_on_a_target(target, n):
        ran = Path("ran") / f"{target.id}-{n}"
        ran.write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


# `load` is what a bare `-n 2` gets outside this repository's pyproject.toml.
@pytest.mark.parametrize("dist", ["loadgroup", "load"])
def test_each_targets_tests_run_on_one_worker(tmp_path: Path, dist: str) -> None:
    shutil.copy(ROOT / "kernels.yaml", tmp_path / "kernels.yaml")
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(FAKE))
    (tmp_path / "ran").mkdir()

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "test_fake.py", "-p", "no:cacheprovider",
         "-n", "2", f"--dist={dist}", "--kernels=6.1,6.12", "--arch=x86_64",
         "--artefacts=artefacts", "--report-dir=reports"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers: dict[str, set[str]] = defaultdict(set)
    for ran in (tmp_path / "ran").iterdir():
        workers[ran.name.rsplit("-", 1)[0]].add(ran.read_text())
    assert sorted(workers) == ["6.1-x86_64", "6.12-x86_64"]
    assert all(len(w) == 1 for w in workers.values()), dict(workers)


def test_the_target_is_read_from_whole_parameters() -> None:
    ids = ["6.1-x86_64", "6.12-x86_64", "6.1-arm64"]
    assert target_of_nodeid("t.py::test_a[6.12-x86_64]", ids) == "6.12-x86_64"
    assert target_of_nodeid("t.py::test_a[6.1-x86_64-3]", ids) == "6.1-x86_64"
    assert target_of_nodeid("t.py::test_a[x-6.1-arm64]", ids) == "6.1-arm64"
    assert target_of_nodeid("s.yaml::case[6.1-arm64]", ids) == "6.1-arm64"
    assert target_of_nodeid("t.py::test_a[6.1-x86_640]", ids) is None
    assert target_of_nodeid("t.py::test_unit", ids) is None
