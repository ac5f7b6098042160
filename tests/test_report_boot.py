"""Reports end to end: inner pytest runs on two kernels in firing mode (boots).

Four inner runs, five boots in all: one run on 6.1 and 6.12, the same as two
shards (one per kernel, run side by side), and a run on 6.1 with one policy
deliberately broken, compared with the first as its baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import report_cli, results

pytestmark = pytest.mark.boot

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("6.1", "6.12")
CANARY_SCENARIO = """
    description: fd_install fires when cat opens a file under /etc
    policies: [canary.yaml]
    cases:
      read:
        steps: [{read: /etc/passwd}]
        expect:
          - type: process_kprobe
            function: fd_install
            args: [{}, /etc/passwd]
"""
CANARY_POLICY = """
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata: {name: canary}
    spec:
      kprobes:
        - call: fd_install
          syscall: false
          args: [{index: 0, type: int}, {index: 1, type: file}]
"""
VM_TEST = """
    def test_guest_answers(vm):
        assert vm.run(["true"]).status == 0
"""


def scratch(where: Path) -> Path:
    """A small project: the file-access scenario, a canary, one `vm` test."""
    shutil.copy(ROOT / "kernels.yaml", where / "kernels.yaml")
    files = {
        "scenarios/file-access.yaml": (
            ROOT / "tests/data/examples/scenarios/file-access.yaml"
        ).read_text(),
        "policies/file-access-etc.yaml": (
            ROOT / "tests/data/examples/policies/file-access-etc.yaml"
        ).read_text(),
        "scenarios/canary.yaml": textwrap.dedent(CANARY_SCENARIO),
        "policies/canary.yaml": textwrap.dedent(CANARY_POLICY),
        "tests/test_vm.py": textwrap.dedent(VM_TEST),
    }
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    return where


def pytest_cmd(where: Path, name: str, kernels: str, *extra: str) -> list[str]:
    """An inner pytest run writing reports/<name> and <name>.xml."""
    return [
        sys.executable, "-m", "pytest", "scenarios", "policies", "tests",
        "-p", "harness.reportplugin", "-p", "no:cacheprovider", "-rfEs",
        f"--kernels={kernels}", "--arch=x86_64", f"--report-dir=reports/{name}",
        f"--junitxml={where / name}.xml", *extra,
    ]  # fmt: skip


def run_all(where: Path, commands: Sequence[list[str]]) -> list[str]:
    """Run inner pytest commands side by side; their outputs."""
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_TETRAGON"}
    procs = [
        subprocess.Popen(
            cmd,
            cwd=where,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for cmd in commands
    ]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode in (0, 1), out[-4000:]
    return outs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The project after its four inner runs, and each run's output."""
    where = scratch(tmp_path_factory.mktemp("reports-e2e"))
    (single,) = run_all(
        where,
        [pytest_cmd(where, "single", ",".join(KERNELS), "-n", "2", "--dist=loadgroup")],
    )
    shard_a, shard_b = run_all(
        where, [pytest_cmd(where, f"shard-{k}", k) for k in KERNELS]
    )
    broken_policy = CANARY_POLICY.replace("fd_install", "harness_no_such_function")
    (where / "policies/canary.yaml").write_text(textwrap.dedent(broken_policy))
    baseline = "--baseline=reports/single/matrix.json"
    (broken,) = run_all(where, [pytest_cmd(where, "broken", "6.1", baseline)])
    outs = {"single": single, "a": shard_a, "b": shard_b, "broken": broken}
    return where, outs


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """Test case name -> its properties."""
    return {
        f"{case.get('classname')}::{case.get('name')}": {
            p.get("name", ""): p.get("value", "") for p in case.iter("property")
        }
        for case in ET.parse(path).iter("testcase")
    }


def test_junit_carries_the_target_agent_policy_and_phases(
    runs: tuple[Path, dict[str, str]],
) -> None:
    where, outs = runs
    cases = junit_properties(where / "single.xml")
    etc_read = [p for name, p in cases.items() if "etc-read[" in name]
    assert len(etc_read) == 2, outs["single"][-3000:]
    for kernel in KERNELS:
        (props,) = [p for p in etc_read if p.get("kernel") == kernel]
        assert props["kernel_version"].startswith(kernel + ".")
        assert props["arch"] == "x86_64"
        assert props["accelerator"] in ("kvm", "tcg")
        assert props["agent"] == "none (firing check)"
        assert len(props["policy_sha256"]) == 64
        assert props["mode"] == "firing"
        for phase in ("boot_seconds", "workload_seconds"):
            assert float(props[phase]) > 0
    vm_cases = [p for name, p in cases.items() if "test_guest_answers" in name]
    assert len(vm_cases) == 2
    assert all(float(p["boot_seconds"]) > 0 and p["agent"] for p in vm_cases)


def test_a_run_writes_the_matrix_in_three_formats(
    runs: tuple[Path, dict[str, str]],
) -> None:
    where, outs = runs
    out = where / "reports" / "single"
    assert sorted(p.name for p in out.iterdir()) == [
        "matrix.html", "matrix.json", "matrix.md",
    ], outs["single"][-3000:]  # fmt: skip
    m = results.load(out / "matrix.json")
    assert [c.id for c in m.columns] == ["6.1-x86_64", "6.12-x86_64"]
    assert all(c.kernel_version and c.accelerator for c in m.columns)
    assert "scenarios/file-access.yaml::etc-read" in m.rows
    assert "policies/canary.yaml::hooks" in m.rows
    cell = m.cell("scenarios/canary.yaml::read", "6.1-x86_64")
    assert cell is not None and cell.outcome == "pass", outs["single"][-3000:]
    md = (out / "matrix.md").read_text()
    assert "6.1<br>" in md and "6.12<br>" in md
    assert "reports: matrix.json, matrix.md, matrix.html" in outs["single"]


def test_merged_shards_equal_the_single_run(
    runs: tuple[Path, dict[str, str]],
) -> None:
    where, _ = runs
    single = results.load(where / "reports/single/matrix.json")
    shards = [where / f"reports/shard-{k}/matrix.json" for k in KERNELS]
    merged = results.merge(results.load(p) for p in shards)
    assert merged.columns == single.columns
    assert merged.outcomes() == single.outcomes()

    parser = argparse.ArgumentParser()
    report_cli.add_parsers(parser.add_subparsers())
    out = where / "reports" / "merged"
    argv = ["report", "merge", *map(str, reversed(shards)), "-o", str(out)]
    args = parser.parse_args([*argv, "--run-dir", str(where)])
    assert args.func(args) == 0
    again = results.load(out / "matrix.json")
    assert again == merged
    assert (out / "matrix.md").is_file() and (out / "matrix.html").is_file()


def test_baseline_diff_lists_the_broken_scenario_as_newly_failing(
    runs: tuple[Path, dict[str, str]],
) -> None:
    where, outs = runs
    out = outs["broken"]
    assert "changes from reports/single/matrix.json" in out, out[-3000:]
    assert "newly failing" in out
    assert "6.1-x86_64  scenarios/canary.yaml::read  (was pass -> fail)" in out
    diff_md = (where / "reports/broken/diff.md").read_text()
    assert "`scenarios/canary.yaml::read`" in diff_md
    baseline = results.load(where / "reports/single/matrix.json")
    current = results.load(where / "reports/broken/matrix.json")
    failing = {(c.row, c.column) for c in results.diff(baseline, current).of(
        "newly failing")}  # fmt: skip
    assert ("scenarios/canary.yaml::read", "6.1-x86_64") in failing
    assert ("scenarios/file-access.yaml::etc-read", "6.1-x86_64") not in failing
