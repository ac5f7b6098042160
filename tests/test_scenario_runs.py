"""Scenarios end to end: collection errors, firing checks, and a real Tetragon.

The Tetragon tests run when $HARNESS_TETRAGON names a Tetragon release
tarball (or its directory); otherwise they are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TETRAGON = os.environ.get("HARNESS_TETRAGON", "")
needs_tetragon = pytest.mark.skipif(
    not TETRAGON,
    reason="needs a real Tetragon: set HARNESS_TETRAGON to a release tarball "
    "(tetragon-<version>-amd64.tar.gz) or its unpacked directory",
)


def project(
    tmp_path: Path, scenarios: dict[str, str], policies: dict[str, str]
) -> Path:
    """A scratch project: kernels.yaml, scenarios/ and policies/."""
    shutil.copy(ROOT / "kernels.yaml", tmp_path / "kernels.yaml")
    for folder, files in (("scenarios", scenarios), ("policies", policies)):
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(textwrap.dedent(text))
    return tmp_path


def inner_pytest(
    where: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run pytest in `where`; (process, {test id: (outcome, message)})."""
    junit = where / "junit.xml"
    # The agent is passed explicitly; its extra arguments
    # ($HARNESS_TETRAGON_ARGS) are inherited.
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_TETRAGON"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider",
         f"--junitxml={junit}", f"--artefacts={where / 'artefacts'}", "-rA", *args],
        cwd=where, capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    results = {}
    if junit.is_file():
        for case in ET.parse(junit).iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = (
                        child.tag,
                        (child.get("message") or "") + (child.text or ""),
                    )
            key = f"{case.get('classname', '')}::{case.get('name', '')}"
            results[key] = (outcome, message)
    return done, results


def result(results: dict, scenario: str, test: str) -> tuple[str, str]:
    """The outcome and message of `test` (e.g. `read[6.1-x86_64]`) in a scenario."""
    for key, value in results.items():
        classname, _, name = key.rpartition("::")
        if name == test and scenario in classname:
            return value  # type: ignore[no-any-return]
    raise AssertionError(f"no {scenario}::{test} in {sorted(results)}")


EXAMPLES = Path(__file__).parent / "data" / "examples"
FILE_ACCESS = (EXAMPLES / "scenarios" / "file-access.yaml").read_text()
FILE_POLICY = (EXAMPLES / "policies" / "file-access-etc.yaml").read_text()
WRONG_PATH = FILE_ACCESS.replace(
    "          - path: /etc/passwd", "          - path: /etc/shadow"
)
MISSING_HOOK = """
    policies: [missing-hook.yaml]
    cases:
      read:
        steps: [{read: /etc/hostname}]
        expect:
          - type: process_kprobe
            function: harness_no_such_function
"""
# Only the agent reports process_exec: a firing check has no hook to probe.
EXEC_ONLY = """
    policies: [file-access-etc.yaml]
    cases:
      cat-started:
        steps: [{read: /etc/passwd}]
        expect:
          - type: process_exec
            process: /bin/cat
"""
MISSING_HOOK_POLICY = """
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata: {name: missing-hook}
    spec:
      kprobes:
        - call: harness_no_such_function
          syscall: false
"""


def test_malformed_scenario_fails_collection_listing_every_problem(
    tmp_path: Path,
) -> None:
    bad = """
        policies: [file-access-etc.yaml, absent.yaml]
        colour: red
        cases:
          Bad Name:
            steps: [{exec: cat}]
          ok:
            steps: [{read: /etc/passwd}]
            expect:
              - type: process_kprobe
                args: [{path: {prefix: /etc, sufix: d}}]
            tiemout: 3
    """
    where = project(tmp_path, {"bad.yaml": bad}, {"file-access-etc.yaml": FILE_POLICY})
    done, _ = inner_pytest(where, "--collect-only", "--kernels=6.1", "--arch=x86_64")
    assert done.returncode != 0
    out = done.stdout
    for expected in (
        "scenarios/bad.yaml: colour: unknown key",
        "absent.yaml",
        "cases.Bad Name",
        "cases.ok.tiemout: unknown key",
        "cases.ok.expect[0].args[0].path.sufix: unknown key",
    ):
        assert expected in out, f"{expected!r} not in:\n{out[-4000:]}"


def test_a_condition_on_a_kernel_outside_the_catalogue_fails_collection(
    tmp_path: Path,
) -> None:
    text = FILE_ACCESS.replace(
        "cases:", "conditions:\n  - skip: gone\n    if: {kernel: '9.9'}\ncases:", 1
    )
    scenarios = {"s.yaml": text}
    where = project(tmp_path, scenarios, {"file-access-etc.yaml": FILE_POLICY})
    done, _ = inner_pytest(where, "--collect-only", "--kernels=6.1", "--arch=x86_64")
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout[-3000:]
    assert (
        f"scenarios/s.yaml: conditions[0].if.kernel: '9.9' is not a kernel of "
        f"{where / 'kernels.yaml'} (known: 5.10, 6.1, 6.12, 7.x)"
    ) in done.stdout, done.stdout[-3000:]


@pytest.mark.boot
def test_without_tetragon_scenarios_run_as_firing_checks(tmp_path: Path) -> None:
    scenarios = {
        "file-access.yaml": FILE_ACCESS,
        "missing-hook.yaml": MISSING_HOOK,
        "exec-only.yaml": EXEC_ONLY,
    }
    where = project(
        tmp_path,
        scenarios,
        {"file-access-etc.yaml": FILE_POLICY, "missing-hook.yaml": MISSING_HOOK_POLICY},
    )
    done, results = inner_pytest(where, "--kernels=6.1", "--arch=x86_64,arm64")
    assert "scenarios run as firing checks" in done.stdout
    for arch in ("x86_64", "arm64"):
        for case in ("etc-read", "outside-etc-not-seen"):
            outcome, _ = result(results, "file-access", f"{case}[6.1-{arch}]")
            assert outcome == "passed", done.stdout[-3000:]
        outcome, message = result(results, "exec-only", f"cat-started[6.1-{arch}]")
        assert outcome == "skipped" and "needs the agent" in message
        outcome, message = result(results, "missing-hook", f"read[6.1-{arch}]")
        assert outcome == "failure", done.stdout[-3000:]
        assert "SILENT" in message or "unset" in message
    assert "fired  passwd-descriptor: kprobe fd_install: fired" in done.stdout


@needs_tetragon
@pytest.mark.boot
def test_real_tetragon_passes_fails_and_reports_load_errors(tmp_path: Path) -> None:
    where = project(
        tmp_path,
        {
            "file-access.yaml": FILE_ACCESS,
            "wrong-path.yaml": WRONG_PATH,
            "missing-hook.yaml": MISSING_HOOK,
        },
        {"file-access-etc.yaml": FILE_POLICY, "missing-hook.yaml": MISSING_HOOK_POLICY},
    )
    done, results = inner_pytest(
        where,
        f"--tetragon={TETRAGON}",
        "--kernels=6.1,6.12",
        "--arch=x86_64",
        "-n",
        "2",
    )
    summary = done.stdout[-6000:]
    for kernel in ("6.1", "6.12"):
        cell = f"[{kernel}-x86_64]"
        for case in ("etc-read", "etc-read-as-user", "outside-etc-not-seen"):
            assert result(results, "file-access", case + cell)[0] == "passed", summary

        outcome, message = result(results, "wrong-path", "etc-read" + cell)
        assert outcome == "failure", summary
        assert "closest" in message
        assert "args[1].path: expected '/etc/shadow', got '/etc/passwd'" in message

        outcome, message = result(results, "missing-hook", "read" + cell)
        assert outcome == "failure", summary
        assert "hook-not-found" in message
        assert "harness_no_such_function" in message
