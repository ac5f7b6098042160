"""Running a case: how a firing check and the agent mode judge a workload."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import runner
from harness.errors import ConfigError, GuestError
from harness.firing import Firing, FiringReport
from harness.scenarios import Scenario, load_scenario
from harness.vm import VM

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


def test_firing_fails_a_policy_the_agent_would_refuse_without_probing(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    (policy,) = scenario.policies
    policy.path.write_text(
        POLICY + "      selectors:\n        - matchBinaries:\n"
        "            - operator: Equal\n              values: [/bin/cat]\n"
    )

    def fire(*args: object) -> FiringReport:
        raise AssertionError("a refused policy must not be probed")

    monkeypatch.setattr(runner.firing, "fire", fire)

    outcome = runner.run_firing(fake_vm(), scenario, scenario.cases[0])

    assert not outcome.passed
    first, second = outcome.report.splitlines()
    assert first == "the agent refuses the policy as written:"
    assert "matchBinaries[0].operator" in second
    assert "'Equal' is no operator of matchBinaries" in second


def test_a_workload_that_broke_outside_a_step_says_its_status() -> None:
    text = runner.workload_failure(2, "sh: syntax error: unexpected ')'\n")

    assert text == (
        "the workload exited 2; its output:\nsh: syntax error: unexpected ')'"
    )


class CopyingVM:
    """Records what is copied in; its kernel's modules tree is `modules`."""

    def __init__(self, modules: Path | None) -> None:
        self.kernel = SimpleNamespace(id="6.1-x86_64", modules=modules)
        self.copied: list[tuple[str, bytes]] = []

    def copy_in(self, data: bytes, guest_path: str, mode: int = 0o644) -> None:
        self.copied.append((guest_path, data))


def test_modules_and_their_dependencies_are_copied_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closure = [("dummy_dep", b"\x7fELF dep"), ("dummy", b"\x7fELF dummy")]
    monkeypatch.setattr(runner.initramfs, "module_closure", lambda d, n: closure)
    vm = CopyingVM(tmp_path)

    runner.install_modules(vm, ["dummy"])  # type: ignore[arg-type]

    assert vm.copied == [
        ("/lib/modules/extra/dummy_dep.ko", b"\x7fELF dep"),
        ("/lib/modules/extra/dummy.ko", b"\x7fELF dummy"),
    ]


def test_a_builtin_or_missing_module_is_an_error_naming_the_kernel(
    tmp_path: Path,
) -> None:
    (tmp_path / "modules.builtin").write_text("kernel/drivers/net/dummy.ko\n")

    with pytest.raises(GuestError, match=r"6.1-x86_64: dummy is built into"):
        runner.install_modules(CopyingVM(tmp_path), ["dummy"])  # type: ignore[arg-type]
    with pytest.raises(GuestError, match="module no_such_mod not found"):
        runner.install_modules(CopyingVM(tmp_path), ["no_such_mod"])  # type: ignore[arg-type]
    with pytest.raises(GuestError, match="came without them"):
        runner.install_modules(CopyingVM(None), ["dummy"])  # type: ignore[arg-type]


def test_a_scenario_names_modules_to_copy(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p-read.yaml").write_text(POLICY)
    path = tmp_path / "s.yaml"
    path.write_text(f"modules: [dummy, nf-tables]\n{SCENARIO}")
    assert load_scenario(path, tmp_path / "policies").modules == ("dummy", "nf_tables")

    path.write_text(f"modules: [dummy.ko, 3]\n{SCENARIO}")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path, tmp_path / "policies")
    assert [(p.key, p.message) for p in caught.value.problems] == [
        ("modules[0]", "'dummy.ko' is not a module name, e.g. dummy"),
        ("modules[1]", "3 is not a module name, e.g. dummy"),
    ]


def test_a_copied_module_loads_in_the_guest(vm: VM) -> None:
    runner.install_modules(vm, ["dummy"])

    loaded = vm.run(["insmod", "/lib/modules/extra/dummy.ko", "numdummies=0"])
    assert loaded.status == 0, loaded.stderr
    assert "dummy " in vm.run(["lsmod"]).text
    vm.run(["rmmod", "dummy"], check=True)
