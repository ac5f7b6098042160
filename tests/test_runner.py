"""Running a case: how a firing check and the agent mode judge a workload."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import runner
from harness.firing import Firing, FiringReport
from harness.scenarios import Scenario, load_scenario

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: p-read
spec:
  kprobes:
    - call: fd_install
      syscall: false
"""
SCENARIO = """\
policies: [p-read.yaml]
cases:
  read:
    steps:
      - read: /etc/passwd
      - exec: [/bin/nc, 127.0.0.1, "12346"]
        exit: 1
    expect:
      - type: kprobe
        function: fd_install
"""
FAILED = "harness: step 2 (exec /bin/nc 127.0.0.1 12346) exited 0, expected 1"


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p-read.yaml").write_text(POLICY)
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / "s.yaml"
    path.write_text(SCENARIO)
    return load_scenario(path)


def fire_returning(status: int, output: str) -> Any:
    def fire(vm: object, hooks: object, workload: str, timeout: float) -> FiringReport:
        assert "harness_check 2 $? 1" in workload
        fired = Firing("kprobe fd_install", ("fd_install",), 1, 0)
        return FiringReport((fired,), status, output, 0.1, 100)

    return fire


def fake_vm() -> Any:
    return SimpleNamespace(kernel=SimpleNamespace(arch="x86_64", id="6.1-x86_64"))


def test_firing_passes_when_the_hook_fired_and_every_step_exited_as_expected(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.firing, "fire", fire_returning(0, ""))

    outcome = runner.run_firing(fake_vm(), scenario, scenario.cases[0])

    assert outcome.passed, outcome.report
    assert outcome.report.startswith("fired  cases.read.expect[0]: kprobe fd_install")


def test_firing_fails_on_a_wrong_exit_status_naming_the_step(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.firing, "fire", fire_returning(97, f"hello\n{FAILED}"))

    outcome = runner.run_firing(fake_vm(), scenario, scenario.cases[0])

    assert not outcome.passed
    first, *rest = outcome.report.splitlines()
    assert first == (
        "step 2 (exec /bin/nc 127.0.0.1 12346) exited 0, expected 1; its output:"
    )
    # The hooks are still reported: the failure is the workload's, not theirs.
    assert rest[-1].startswith("fired  cases.read.expect[0]")


def test_a_workload_that_broke_outside_a_step_says_its_status() -> None:
    text = runner.workload_failure(2, "sh: syntax error: unexpected ')'\n")

    assert text == (
        "the workload exited 2; its output:\nsh: syntax error: unexpected ')'"
    )
