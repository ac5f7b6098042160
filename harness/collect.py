"""Scenario files as pytest items: one per case, kernel and arch.

`scenarios/file-access.yaml::etc-read[6.12-arm64]` boots (once) the 6.12
arm64 guest, and then either drives Tetragon (when `--tetragon` names one)
or runs the case as a firing check through tracefs.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Tetragon
from harness.errors import ConfigError, HarnessError
from harness.fixtures import target_properties
from harness.loaderrors import LoadFailure
from harness.matrix import Target
from harness.plugin_state import (
    agent_source_of,
    matrix_of,
    options_of,
    pool_of,
    targets_of,
)
from harness.runner import (
    Outcome,
    kernel_facts,
    load_policies,
    run_firing,
    run_with_agent,
)
from harness.scenarios import Case, Scenario, load_scenario, unknown_kernels


class ScenarioFailure(Exception):
    """A case did not hold; the message is the readable report."""


def top_folder(path: Path, root: Path) -> str:
    """`scenarios` or `policies` for a YAML file under that folder of the rootdir."""
    if path.suffix not in (".yaml", ".yml"):
        return ""
    try:
        return path.relative_to(root).parts[0]
    except ValueError:
        return ""


class ScenarioFile(pytest.File):
    """A scenario YAML file; collection fails with every problem listed."""

    def collect(self) -> Iterator[pytest.Item]:
        scenario = load_scenario(self.path)
        # A condition on a kernel the catalogue lacks would never apply.
        problems = unknown_kernels(scenario, matrix_of(self.config).catalogue)
        if problems:
            raise ConfigError(problems)
        for target in targets_of(self.config):
            if scenario.expect_load_error is not None:
                yield ScenarioItem.from_parent(
                    self, name=f"load[{target.id}]", scenario=scenario, case=None,
                    target=target,
                )  # fmt: skip
            for case in scenario.cases:
                yield ScenarioItem.from_parent(
                    self, name=f"{case.name}[{target.id}]", scenario=scenario,
                    case=case, target=target,
                )  # fmt: skip

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, ConfigError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


class ScenarioItem(pytest.Item):
    """One case of a scenario on one target."""

    def __init__(
        self, *, scenario: Scenario, case: Case | None, target: Target, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.case = case
        self.target = target

    @property
    def artefacts(self) -> Path:
        """Where this item's evidence goes."""
        base = Path(options_of(self.config).artefacts) / self.target.id
        return base / self.scenario.name / (self.case.name if self.case else "load")

    def setup(self) -> None:
        pool = pool_of(self.config)
        slot = pool.current(self.target)
        for name, value in target_properties(self.config, self.target):
            self.user_properties.append((name, value))
        self.user_properties.append(("boot_seconds", f"{slot.vm.boot_seconds:.2f}"))
        digest = hashlib.sha256()
        for pol in self.scenario.policies:
            digest.update(pol.path.read_bytes())
        self.user_properties.append(("policy_sha256", digest.hexdigest()))
        if self.case is None:
            return
        mode = "none" if agent_source_of(self.config) is None else "tetragon"
        facts = kernel_facts(slot.vm, slot.vm.kernel, mode)
        verdict = self.scenario.verdict(self.case, facts)
        if verdict.action == "skip":
            pytest.skip(verdict.reason)
        if verdict.action == "xfail":
            self.add_marker(pytest.mark.xfail(reason=verdict.reason, strict=False))

    def agent(self) -> Tetragon | None:
        """The target's agent, started once per VM, or None in firing mode."""
        source = agent_source_of(self.config)
        if source is None:
            return None
        pool = pool_of(self.config)
        slot = pool.current(self.target)
        if slot.error is not None:
            raise slot.error
        if slot.agent is None:
            bundle = source.bundle(self.target.arch)
            if bundle is None:
                pytest.skip(f"--tetragon has no agent for {self.target.arch}")
            agent = Tetragon(slot.vm, bundle, options_of(self.config).tetragon_args)
            try:
                agent.start()
            except HarnessError as e:
                # Every case of the target fails with this, without another start.
                slot.error = HarnessError(
                    f"{e}\nagent log: {self._keep_start_log(agent)}"
                )
                raise slot.error from e
            slot.agent = agent
        assert isinstance(slot.agent, Tetragon)
        return slot.agent

    def runtest(self) -> None:
        # What an earlier run left here would read as this run's evidence.
        shutil.rmtree(self.artefacts, ignore_errors=True)
        agent = self.agent()
        vm = pool_of(self.config).vm(self.target)
        if agent is not None:
            self.user_properties += [
                ("agent", f"tetragon {agent.version}"),
                ("agent_ready_seconds", f"{agent.ready_seconds:.2f}"),
            ]
        if self.case is None:
            outcome = self._expect_load_error(agent)
        elif agent is None:
            outcome = run_firing(vm, self.scenario, self.case)
        else:
            outcome = run_with_agent(agent, self.scenario, self.case, self.artefacts)
        self.user_properties.append(("mode", outcome.mode))
        for phase, seconds in outcome.timings.items():
            self.user_properties.append((f"{phase}_seconds", f"{seconds:.2f}"))
        if outcome.skipped:
            pytest.skip(f"{outcome.mode} mode: {outcome.skipped}")
        if outcome.report:
            self.add_report_section("call", outcome.mode, outcome.report)
        if not outcome.passed:
            self._keep_evidence(agent)
            raise ScenarioFailure(outcome.report)

    def _expect_load_error(self, agent: Tetragon | None) -> Outcome:
        wanted = self.scenario.expect_load_error
        assert wanted is not None
        if agent is None:
            return Outcome("firing", True, "", skipped="load errors need the agent")
        seconds, failure = load_policies(agent, self.scenario)
        timings = {"policy_load": seconds}
        if failure is None:
            return Outcome("tetragon", False, f"expected a {wanted} load error; "
                           "the policies loaded", timings)  # fmt: skip
        ok = failure.kind == wanted
        text = f"expected {wanted}, got {failure.describe()}"
        return Outcome("tetragon", ok, text, timings, failure)

    def _keep_start_log(self, agent: Tetragon) -> Path:
        vm_dir = Path(options_of(self.config).artefacts) / self.target.id / "vm"
        kept = vm_dir / "agent-start.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            kept.write_text(agent.log())
        except HarnessError as e:
            kept.write_text(f"the agent's log could not be read: {e}\n")
        return kept

    def _keep_evidence(self, agent: Tetragon | None) -> None:
        self.artefacts.mkdir(parents=True, exist_ok=True)
        for pol in self.scenario.policies:
            shutil.copy(pol.path, self.artefacts / pol.path.name)
        if agent is not None:
            with contextlib.suppress(HarnessError):
                (self.artefacts / "agent.log").write_text(agent.log())
        console = pool_of(self.config).vm(self.target).console_log
        if console.exists():
            shutil.copy(console, self.artefacts / "console.log")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (ScenarioFailure, HarnessError)):
            where = f"\nartefacts: {self.artefacts}"
            return f"{self.nodeid}\n{excinfo.value}{where}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.scenario.name}::{self.name}"


__all__ = ["LoadFailure", "ScenarioFile", "ScenarioItem", "top_folder"]
