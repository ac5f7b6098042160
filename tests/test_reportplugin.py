"""The report plugin in inner pytest runs, without kernels: items that say
which target they ran on through `record_property`, as target items do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import results

ROOT = Path(__file__).resolve().parents[1]

FAKE_TESTS = """
    import pytest

    COLUMNS = [("6.1", "x86_64"), ("6.12", "x86_64"), ("6.1", "arm64")]

    @pytest.fixture(params=COLUMNS, ids=[f"{k}-{a}" for k, a in COLUMNS])
    def column(request, record_property):
        kernel, arch = request.param
        record_property("kernel", kernel)
        record_property("kernel_version", kernel + ".100-1")
        record_property("arch", arch)
        record_property("accelerator", "tcg")
        return request.param

    def test_ok(column):
        pass

    def test_arm_broken(column):
        assert column[1] != "arm64", "arm64 reads the wrong register"

    def test_lsm(column):
        if column[0] == "6.1":
            pytest.skip("bpf is not an active LSM")

    def test_warned(column, record_property):
        record_property("outcome", "warning")
        record_property("reason", "kprobe fd_install: arg 1 is a struct file")

    def test_no_target():
        pass
"""


def inner(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on the fake tests in `where` with the report plugin."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_fake.py", "-p", "harness.reportplugin",
         "-p", "no:cacheprovider", f"--junitxml={where / 'junit.xml'}", *args],
        cwd=where, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the fake target tests."""
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(FAKE_TESTS))
    return tmp_path


def test_xdist_run_writes_every_cell_from_the_workers(project: Path) -> None:
    done = inner(project, "-n", "2")
    assert done.returncode == 1, done.stdout[-3000:]
    m = results.load(project / "reports" / "matrix.json")
    assert len(m.cells) == 12 and len(m.rows) == 4
    assert [c.id for c in m.columns] == ["6.1-arm64", "6.1-x86_64", "6.12-x86_64"]
    assert m.counts() == {
        "pass": 6, "fail": 1, "xfail": 0, "xpass": 0, "skip": 2, "warning": 3,
    }  # fmt: skip
    cell = m.cell("test_fake.py::test_arm_broken", "6.1-arm64")
    assert cell is not None
    assert cell.reason.startswith("AssertionError: arm64 reads the wrong register")
    for name in ("matrix.md", "matrix.html"):
        assert (project / "reports" / name).stat().st_size > 0
    assert "4 rows by 3 kernel-arch columns" in done.stdout
    assert "reports: matrix.json, matrix.md, matrix.html in reports" in done.stdout
    leftovers = [p.name for p in (project / "reports").iterdir() if p.name[0] == "."]
    assert leftovers == []


def test_junit_keeps_the_properties(project: Path) -> None:
    inner(project)
    cases = {
        c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
        for c in ET.parse(project / "junit.xml").iter("testcase")
    }
    assert cases["test_ok[6.12-x86_64]"]["kernel_version"] == "6.12.100-1"
    assert cases["test_warned[6.1-arm64]"]["outcome"] == "warning"


def test_report_dir_from_the_ini(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\nharness_report_dir = out/matrix\n")
    inner(project)
    assert (project / "out" / "matrix" / "matrix.html").is_file()
    assert not (project / "reports").exists()


def test_no_target_items_no_report(project: Path) -> None:
    done = inner(project, "-k", "no_target")
    assert done.returncode == 0
    assert not (project / "reports").exists()
    assert "harness matrix" not in done.stdout


def test_baseline_diff_in_terminal_and_diff_md(project: Path) -> None:
    inner(project, "--report-dir=before")
    fake = project / "test_fake.py"
    fake.write_text(fake.read_text().replace('!= "arm64"', '!= "x86_64"'))
    done = inner(project, "--report-dir=after", "--baseline=before/matrix.json")
    out = done.stdout
    assert "changes from before/matrix.json" in out
    assert "newly failing (2):" in out
    assert "6.1-x86_64  test_fake.py::test_arm_broken  (was pass -> fail)" in out
    assert "newly passing (1):" in out
    diff_md = (project / "after" / "diff.md").read_text()
    assert "### Newly failing (2)" in diff_md


def test_bad_baseline_stops_before_the_run(project: Path) -> None:
    (project / "old.json").write_text(json.dumps({"kind": "something else"}))
    done = inner(project, "--baseline=old.json")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--baseline: old.json: kind: not a harness-matrix document" in done.stderr
    assert "test_ok" not in done.stdout


def test_interrupted_run_leaves_a_whole_report_marked_incomplete(
    project: Path,
) -> None:
    fake = project / "test_fake.py"
    fake.write_text(
        fake.read_text()
        + "\ndef test_zz_interrupt(column):\n    raise KeyboardInterrupt\n"
    )
    done = inner(project)
    assert done.returncode == pytest.ExitCode.INTERRUPTED
    m = results.load(project / "reports" / "matrix.json")
    assert m.incomplete and m.cells
    assert "incomplete" in (project / "reports" / "matrix.md").read_text()


BOOM = """
    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def boom():
        # Where a kernel download would be when Ctrl-C arrives.
        raise KeyboardInterrupt

    def test_on_a_target(target):
        pass
"""


SETUP_ERRORS = """
    import pytest
    from harness.errors import IntegrityError, QemuStartError

    @pytest.fixture
    def column(record_property):
        record_property("kernel", "6.1")
        record_property("arch", "x86_64")

    @pytest.fixture
    def booted(column):
        raise QemuStartError(
            "6.1-x86_64: the guest stopped (QEMU status 1) before it was ready",
            "Run /init as init process\\nreboot: Restarting system",
        )

    @pytest.fixture
    def agent(column):
        raise IntegrityError("tetragon.tar.gz: sha256 0a1b, published 2c3d")

    def test_boot(booted):
        pass

    def test_agent(agent):
        pass
"""


def test_an_interrupt_before_any_case_finished_writes_an_empty_incomplete_report(
    project: Path,
) -> None:
    shutil.copy(ROOT / "kernels.yaml", project / "kernels.yaml")
    (project / "test_fake.py").write_text(textwrap.dedent(BOOM))

    done = inner(project, "--kernels=6.1", "--arch=x86_64")

    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout[-3000:]
    m = results.load(project / "reports" / "matrix.json")
    assert m.incomplete and not m.cells
    md = (project / "reports" / "matrix.md").read_text()
    assert "The run was interrupted: this matrix is incomplete." in md
    assert "No test ran on a kernel target." in md
    assert "0 rows by 0 kernel-arch columns: no results" in done.stdout
    assert "mode: none (no test ran on a kernel target)" in done.stdout


def test_an_interrupted_run_of_no_target_leaves_the_last_report_alone(
    project: Path,
) -> None:
    inner(project)
    before = (project / "reports" / "matrix.json").read_bytes()
    (project / "test_fake.py").write_text(
        "def test_unit():\n    raise KeyboardInterrupt\n"
    )

    done = inner(project)

    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout[-3000:]
    assert (project / "reports" / "matrix.json").read_bytes() == before


def test_setup_errors_read_as_the_harness_message(tmp_path: Path) -> None:
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(SETUP_ERRORS))
    done = inner(tmp_path, "-rE")
    assert done.returncode == 1, done.stdout[-3000:]
    for name in ("QemuStartError", "IntegrityError", "HarnessError"):
        assert name not in done.stdout, done.stdout[-3000:]
    assert (
        "test_fake.py::test_boot\n6.1-x86_64: the guest stopped (QEMU status 1) "
        "before it was ready\n--- console tail ---\nRun /init" in done.stdout
    )
    assert "test_fake.py::test_agent\ntetragon.tar.gz: sha256 0a1b" in done.stdout
    m = results.load(tmp_path / "reports" / "matrix.json")
    reasons = {c.row: c.reason for c in m.cells}
    assert reasons == {
        "test_fake.py::test_boot": "setup: 6.1-x86_64: the guest stopped (QEMU "
        "status 1) before it was ready",
        "test_fake.py::test_agent": "setup: tetragon.tar.gz: sha256 0a1b, published "
        "2c3d",
    }
