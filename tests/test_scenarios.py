"""Scenario files: strict loading, conditions, and the busybox rendering of steps."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from goldenfile import assert_golden

from harness.catalogue import load
from harness.errors import ConfigError, Problems
from harness.events import read_export
from harness.loaderrors import LoadErrorKind
from harness.matching import check
from harness.scenarios import (
    KernelFacts,
    load_scenario,
    load_scenarios,
    unknown_kernels,
)
from harness.steps import (
    Connect,
    OpenFile,
    Run,
    Step,
    WriteFile,
    parse_step,
    render_script,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
EXAMPLES = ("file-access", "lsm", "network", "syscalls")
# A frozen copy of the first example scenarios and their policies: these tests
# pin their content, which the live library in scenarios/ is free to change.
EXAMPLES_DIR = Path(__file__).parent / "data" / "examples"


def golden(name: str, text: str) -> None:
    """Compare with tests/data/NAME; HARNESS_REGEN_GOLDEN=1 rewrites it."""
    assert_golden(DATA / name, text)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: p-open
spec:
  kprobes:
    - call: fd_install
      syscall: false
"""

# The smallest valid `cases:`, for tests about the rest of the file.
ONE_CASE = """\
cases:
  c:
    steps: [{read: /etc/passwd}]
    expect: [{type: kprobe}]
"""


def test_the_scenario_library_loads() -> None:
    library = load_scenarios([ROOT / "scenarios"])
    assert {"file-access", "lsm", "network", "syscalls"} <= {s.name for s in library}


def test_example_scenarios_load() -> None:
    scenarios = {s.name: s for s in load_scenarios([EXAMPLES_DIR / "scenarios"])}

    assert sorted(scenarios) == list(EXAMPLES)
    access = scenarios["file-access"]
    assert [p.name for p in access.policies] == ["harness-file-access-etc"]
    assert access.policies[0].path == EXAMPLES_DIR / "policies" / "file-access-etc.yaml"
    etc_read = access.cases[0]
    assert etc_read.name == "etc-read"
    (expected,) = etc_read.expect
    assert expected.name == "passwd-descriptor"
    assert (expected.count.min, expected.count.max) == (1, 1)
    assert scenarios["syscalls"].cases[2].ordered is True
    assert scenarios["lsm"].conditions[0].action == "skip"


def test_the_example_differs_from_the_recorded_run_only_where_it_should(
    shared_dir: Path,
) -> None:
    run = shared_dir / "tetragon/recorded/6.1.176-x86_64-fd-install-and-openat"
    if not run.is_dir():
        pytest.skip(f"{run} not found")
    events = read_export(run / "events.jsonl")[0]
    etc_read = load_scenario(EXAMPLES_DIR / "scenarios/file-access.yaml").cases[0]

    result = check(events, etc_read.expect)

    # The recorded run used its own policy name and ran cat by bare name, so
    # busybox re-executed itself; everything else of the example holds.
    (failure,) = result.failures
    assert failure.closest is not None and failure.closest.function == "fd_install"
    assert {d.field for d in failure.diffs} == {"policy", "process.binary"}
    assert {d.actual for d in failure.diffs} == {"'fd-install'", "'/proc/self/exe'"}


def test_rendered_workloads_golden() -> None:
    sh = shutil.which("sh")
    for scenario in load_scenarios([EXAMPLES_DIR / "scenarios"]):
        for case in scenario.cases:
            script = case.script()
            golden(f"workloads/{scenario.name}.{case.name}.sh", script)
            if sh is not None:
                # Syntax only: the host's sh parses what busybox sh will run.
                subprocess.run([sh, "-n"], input=script, text=True, check=True)


def test_step_wrappers() -> None:
    step = Step(OpenFile("/etc/it's", "append"), user="harness", namespaces=("net",))

    line = step.render()

    assert line.startswith("/bin/unshare --net /bin/sh -c ")
    assert "/bin/ip link set lo up && /bin/su -s /bin/sh harness -c " in line
    assert "oflag=append" in line
    sh = shutil.which("sh")
    if sh is not None:
        subprocess.run([sh, "-n", "-c", line], check=True)
    write_step = Step(WriteFile("/tmp/a b", "x'y\n", append=True)).render()
    assert (
        write_step == "printf '%s' 'x'\"'\"'y\n' | /bin/tee -a '/tmp/a b' > /dev/null"
    )


def test_connect_rendering() -> None:
    tcp6 = Connect("tcp", "ipv6", 8081, "hi\n").render()
    udp6 = Connect("udp", "ipv6", 53).render()

    assert "/bin/nc -l -p 8081" in tcp6
    # /proc/net/tcp prints ports in hex; 8081 is 1F91, state 0A is LISTEN.
    assert ":1F91 [0-9A-F]*:0000 0A" in tcp6
    assert "/bin/nc ::1 8081" in tcp6
    assert udp6.endswith("/bin/nslookup -type=a harness.invalid [::1]:53")
    script = render_script([Step(Connect("udp", "ipv4", 53), exit=None)], "c")
    assert "harness_check 1 $? any" in script


BAD = """\
description: 42
policies: [p-open.yaml, missing.yaml]
colour: blue
conditions:
  - skip: ""
    if: {arch: amd64, version: {min: banana}}
cases:
  Bad_Name:
    steps:
      - read: etc/passwd
      - exec: [cat, /etc/passwd]
      - connect: {protocol: sctp, port: 70000}
      - run: /bin/true
        user: alice
        namespaces: [net, time]
      - read: /a
        write: {path: /b}
    expect:
      - type: kprobe
        function: {prefx: fd}
        policy: p-typo
        args: {random: []}
    tiemout: 5
  empty: {}
"""


def test_a_malformed_scenario_lists_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    path = write(tmp_path, "scenarios/bad.yaml", BAD)

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    problems = caught.value.problems
    assert {p.file for p in problems} == {str(path)}
    keys = {p.key for p in problems}
    assert keys == {
        "description",
        "colour",
        "policies[1]",
        "conditions[0].skip",
        "conditions[0].if.arch",
        "conditions[0].if.version.min",
        "cases.Bad_Name",
        "cases.Bad_Name.steps[0].read",
        "cases.Bad_Name.steps[1].exec",
        "cases.Bad_Name.steps[2].connect.protocol",
        "cases.Bad_Name.steps[2].connect.port",
        "cases.Bad_Name.steps[3].user",
        "cases.Bad_Name.steps[3].namespaces",
        "cases.Bad_Name.steps[4]",
        "cases.Bad_Name.expect[0].function.prefx",
        "cases.Bad_Name.expect[0].policy",
        "cases.Bad_Name.expect[0].args.random",
        "cases.Bad_Name.expect[0].args",
        "cases.Bad_Name.tiemout",
        "cases.empty.expect",
        "cases.empty.steps",
    }
    message = str(caught.value)
    assert message.startswith(f"{len(problems)} problem(s) in configuration:")
    assert f"{path}: conditions[0].if.arch: 'amd64' is not an arch (did you mean " in (
        message
    )
    assert "'p-typo' is not a policy of this scenario (p-open)" in message
    assert (
        f"{path}: cases.Bad_Name.tiemout: unknown key; did you mean 'timeout'? "
        "(allowed: conditions, description, expect, expect_not, ordered, steps, "
        "timeout)"
    ) in message


def test_problems_of_every_file_come_together(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    first = write(tmp_path, "scenarios/a.yaml", "policies: [p-open.yaml]\ncases: 3\n")
    second = write(tmp_path, "scenarios/b.yaml", "policies: [p-open.yaml]\n  bad: [\n")
    dup = write(
        tmp_path,
        "scenarios/c.yaml",
        "policies: [p-open.yaml]\npolicies: [p-open.yaml]\ncases: {}\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_scenarios([tmp_path / "scenarios"])

    found = {(p.file, p.key) for p in caught.value.problems}
    assert (str(first), "cases") in found
    assert (str(second), "") in found
    assert [
        p.message
        for p in caught.value.problems
        if (p.file, p.key) == (str(dup), "policies")
    ] == [
        "duplicate key on line 2 (first on line 1): YAML would keep only the last; "
        "remove or rename one"
    ]


def test_a_problem_reached_twice_is_reported_once(tmp_path: Path) -> None:
    nameless = write(tmp_path, "policies/nameless.yaml", "kind: TracingPolicy\n")
    write(tmp_path, "scenarios/a.yaml", f"policies: [nameless.yaml]\n{ONE_CASE}")
    write(tmp_path, "scenarios/b.yaml", f"policies: [nameless.yaml]\n{ONE_CASE}")

    with pytest.raises(ConfigError) as caught:
        load_scenarios([tmp_path / "scenarios"])

    (problem,) = caught.value.problems
    assert (problem.file, problem.key) == (str(nameless), "metadata.name")
    assert str(caught.value).count("metadata.name") == 1


@pytest.mark.parametrize("cases", ["cases: {}\n", "cases:\n", ""])
def test_a_scenario_without_cases_says_to_add_one(tmp_path: Path, cases: str) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    path = write(tmp_path, "scenarios/s.yaml", f"policies: [p-open.yaml]\n{cases}")

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    assert str(caught.value) == (
        f"{path}: cases: no cases: add at least one case under `cases:`"
    )


def test_a_case_named_by_a_number_must_be_quoted(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    case = "steps: [{read: /etc/passwd}]\n    expect: [{type: kprobe}]"
    text = f"policies: [p-open.yaml]\ncases:\n  6.10:\n    {case}\n"
    path = write(tmp_path, "scenarios/s.yaml", text)

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    assert str(caught.value) == (
        f"{path}: cases.6.10: 6.10 is a number to YAML (read as 6.1); write it "
        "quoted: '6.10'"
    )


def test_a_case_must_expect_something_and_a_negative_case_a_control(
    tmp_path: Path,
) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = """\
policies: [p-open.yaml]
cases:
  nothing:
    steps: [{read: /etc/passwd}]
    expect: []
  only-negative:
    steps: [{read: /tmp/x}]
    expect_not: [{type: kprobe, function: fd_install}]
  empty-negative:
    steps: [{read: /etc/passwd}]
    expect: [{type: kprobe, function: fd_install}]
    expect_not: []
"""
    path = write(tmp_path, "scenarios/s.yaml", text)

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    assert [f"{p.key}: {p.message}" for p in caught.value.problems] == [
        "cases.nothing.expect: empty list; list the events the workload must cause",
        "cases.only-negative.expect: required with `expect_not:`: add a control "
        "step the policy reports and expect its event here with an exact count "
        "(docs/scenarios.md, the starter library: a negative case carries a "
        "control)",
        "cases.empty-negative.expect_not: empty list; list the events that must "
        "not appear, or leave it out",
    ]


def test_policies_must_load_on_every_arch(tmp_path: Path) -> None:
    arch_bound = POLICY.replace("fd_install", "__x64_sys_openat").replace(
        "false", "true"
    )
    policy = write(tmp_path, "policies/p-open.yaml", arch_bound)
    scenario = write(
        tmp_path,
        "scenarios/s.yaml",
        "policies: [p-open.yaml]\ncases:\n  c:\n    steps: [{read: /etc/passwd}]\n"
        "    expect: [{type: kprobe}]\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_scenario(scenario)

    (problem,) = caught.value.problems
    assert (problem.file, problem.key) == (str(policy), "spec.kprobes[0].call")
    assert "write `call: sys_openat` with `syscall: true`" in problem.message


def test_a_scenario_can_expect_its_policy_not_to_load(tmp_path: Path) -> None:
    write(tmp_path, "policies/broken.yaml", "spec:\n  kprobes: [\n")
    path = write(
        tmp_path,
        "scenarios/s.yaml",
        "policies: [broken.yaml]\nexpect_load_error: invalid-policy\n",
    )

    scenario = load_scenario(path)

    assert scenario.expect_load_error is LoadErrorKind.INVALID_POLICY
    assert scenario.cases == ()
    assert scenario.policies[0].name == "broken"


def recorded_facts(shared_dir: Path, kernel: str, arch: str = "x86_64") -> KernelFacts:
    boot = shared_dir / "tetragon/recorded/corpus" / kernel / "boot-positive"
    if not boot.is_dir():
        pytest.skip(f"{boot} not found")
    lsms = frozenset((boot / "lsm.txt").read_text().strip().split(","))
    # `... #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)`
    found = re.search(
        r"Debian ([\d.]+-\d+) \(", (boot / "proc-version.txt").read_text()
    )
    assert found is not None
    return KernelFacts(kernel.split("-")[0], arch, found[1], lsms)


def test_lsm_scenario_conditions_on_recorded_kernels(shared_dir: Path) -> None:
    lsm = load_scenario(EXAMPLES_DIR / "scenarios/lsm.yaml")
    case = lsm.cases[0]

    old = lsm.verdict(case, recorded_facts(shared_dir, "5.10-amd64"))
    assert old.action == "skip" and "BPF LSM" in old.reason
    assert lsm.verdict(case, recorded_facts(shared_dir, "6.1-amd64")).action == "run"
    assert lsm.verdict(case, recorded_facts(shared_dir, "6.12-amd64")).action == "run"
    arm = lsm.verdict(case, recorded_facts(shared_dir, "6.1-amd64", "arm64"))
    assert arm.action == "xfail"
    unknown = lsm.verdict(case, KernelFacts("6.12", "x86_64", "6.12.117"))
    assert unknown.action == "skip" and "unknown" in unknown.reason
    newer_arm = recorded_facts(shared_dir, "6.12-amd64", "arm64")
    assert lsm.verdict(case, newer_arm).action == "run"


def test_condition_facts(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = """\
policies: p-open.yaml
cases:
  c:
    steps: [{read: /etc/passwd}]
    expect: [{type: kprobe}]
    conditions:
      - xfail: no fprobe
        unless: {config: CONFIG_FPROBE}
      - skip: old series
        if: {kernel: ["5.10", "5.15"]}
      - skip: exactly 6.1
        if: {version: "6.1", arch: [arm64]}
"""
    scenario = load_scenario(write(tmp_path, "scenarios/s.yaml", text))
    case = scenario.cases[0]

    def verdict(**facts: object) -> tuple[str, str]:
        found = scenario.verdict(case, KernelFacts(**facts))  # type: ignore[arg-type]
        return found.action, found.reason

    fprobe = {"CONFIG_FPROBE": "y"}
    assert verdict(kernel="6.12", arch="x86_64", config=fprobe) == ("run", "")
    assert verdict(kernel="6.1", arch="x86_64", config={}) == ("xfail", "no fprobe")
    assert verdict(kernel="5.10", arch="x86_64", config=fprobe)[0] == "skip"
    assert verdict(kernel="6.1", arch="arm64", version="6.1.176-1", config=fprobe) == (
        "skip",
        "exactly 6.1",
    )
    assert (
        verdict(kernel="x", arch="arm64", version="6.10.2", config=fprobe)[0] == "run"
    )


@pytest.mark.parametrize("code", [256, -1, "one", 1.5, True])
def test_exit_statuses_outside_0_to_255_are_refused(code: object) -> None:
    problems = Problems("s.yaml")

    step = parse_step({"run": "true", "exit": code}, "steps[0]", problems)

    assert step is not None
    assert [str(p) for p in problems.items] == [
        f"s.yaml: steps[0].exit: {code!r} is not an exit status; give 0-255 or `any`"
    ]
    assert parse_step({"run": "true", "exit": 255}, "steps[0]", problems)
    assert len(problems.items) == 1


def test_condition_facts_of_the_wrong_type_name_the_type_expected(
    tmp_path: Path,
) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = f"""\
policies: p-open.yaml
conditions:
  - skip: wrong types
    if: {{lsm: 5, config: yes, version: [1], kernel: [6.10, "6.1"]}}
  - skip: empty
    unless: {{arch: [], version: {{min: 6}}}}
{ONE_CASE}"""
    path = write(tmp_path, "scenarios/s.yaml", text)

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    assert [f"{p.key}: {p.message}" for p in caught.value.problems] == [
        "conditions[0].if.kernel: 6.10 is a number to YAML (read as 6.1); write "
        "it quoted: '6.10'",
        "conditions[0].if.lsm: 5 (a number) is not a string; expected an LSM "
        "name such as bpf",
        "conditions[0].if.config: true (a boolean to YAML, as are yes, no, on and "
        "off) is not a string; expected a kernel option such as CONFIG_FPROBE",
        "conditions[0].if.version: [1] (a list) is not a version; give one such "
        "as '6.1', or a range {min: '5.15', max: '6.1'}",
        "conditions[1].unless.arch: empty list; give at least one: an arch "
        "(x86_64, arm64)",
        "conditions[1].unless.version.min: 6 is a number to YAML; write it quoted: '6'",
    ]


def test_a_step_with_the_wrong_exit_status_stops_the_script() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this host to run a rendered script")
    steps = [Step(Run("true")), Step(Run("false")), Step(Run("echo never"))]

    done = subprocess.run(
        [sh], input=render_script(steps), text=True, capture_output=True
    )

    assert done.returncode == 97
    assert done.stderr == "harness: step 2 (run false) exited 1, expected 0\n"
    assert "never" not in done.stdout
    lenient = [Step(Run("false"), exit=None), Step(Run("sh -c 'exit 3'"), exit=3)]
    assert subprocess.run([sh], input=render_script(lenient), text=True).returncode == 0


def test_the_agent_mode_is_a_condition_fact(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = """\
policies: p-open.yaml
cases:
  c:
    steps: [{read: /etc/passwd}]
    expect: [{type: kprobe}]
    conditions:
      - xfail: the agent refuses the policy here
        if: {agent: tetragon, arch: arm64}
      - skip: a firing check says nothing here
        if: {agent: none, arch: arm64}
"""
    scenario = load_scenario(write(tmp_path, "scenarios/s.yaml", text))
    case = scenario.cases[0]

    def verdict(arch: str, agent: str | None) -> tuple[str, str]:
        found = scenario.verdict(case, KernelFacts("6.1", arch, agent=agent))
        return found.action, found.reason

    assert verdict("arm64", "tetragon") == (
        "xfail",
        "the agent refuses the policy here",
    )
    assert verdict("arm64", "none") == ("skip", "a firing check says nothing here")
    assert verdict("x86_64", "tetragon") == ("run", "")
    action, reason = verdict("arm64", None)
    assert action == "skip" and reason.endswith("is unknown for this kernel)")


def test_an_unknown_agent_mode_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = """\
policies: p-open.yaml
conditions: [{skip: not here, if: {agent: [tetragon, falco]}}]
cases: {c: {steps: [{read: /etc/passwd}], expect: [{type: kprobe}]}}
"""
    with pytest.raises(ConfigError) as caught:
        load_scenario(write(tmp_path, "scenarios/s.yaml", text))

    (problem,) = caught.value.problems
    assert problem.key == "conditions[0].if.agent"
    assert problem.message == "'falco' is not an agent mode (tetragon, none)"


def test_the_lsm_library_case_xfails_with_the_agent_and_skips_without(
    shared_dir: Path,
) -> None:
    lsm = load_scenario(ROOT / "scenarios/lsm.yaml")
    case = lsm.cases[0]
    config = {"CONFIG_BPF_LSM": "y"}
    arm = KernelFacts("6.1", "arm64", "6.1.176", frozenset({"bpf"}), config)
    old = recorded_facts(shared_dir, "5.10-amd64")

    with_agent = lsm.verdict(case, replace(arm, agent="tetragon"))
    assert with_agent.action == "xfail"
    assert "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS" in with_agent.reason
    assert lsm.verdict(case, replace(arm, agent="none")).action == "skip"
    assert lsm.verdict(case, replace(old, agent="tetragon")).action == "xfail"
    assert lsm.verdict(case, replace(old, agent="none")).action == "skip"
    x86 = recorded_facts(shared_dir, "6.12-amd64")
    with_trampolines = {"CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS": "y"}
    for agent in ("tetragon", "none"):
        facts = replace(x86, config=with_trampolines, agent=agent)
        assert lsm.verdict(case, facts).action == "run"


def test_conditions_that_can_never_hold_are_problems(tmp_path: Path) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = """\
policies: p-open.yaml
conditions:
  - skip: a typo of bpf
    unless: {lsm: [yama, bfp]}
  - xfail: an empty range
    if: {version: {min: "6.12", max: "6.1"}}
  - xfail: fine, 6.1.5 up to every 6.1.x
    if: {version: {min: "6.1.5", max: "6.1"}, lsm: [landlock, ipe, evm]}
cases:
  c:
    steps: [{read: /etc/passwd}]
    expect: [{type: kprobe}]
    conditions:
      - skip: also empty
        if: {version: {min: "6.2", max: "6.1.100"}}
"""
    path = write(tmp_path, "scenarios/s.yaml", text)

    with pytest.raises(ConfigError) as caught:
        load_scenario(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: cases.c.conditions[0].if.version: min '6.2' is above max "
        "'6.1.100': no kernel is in this range, so the condition never holds; "
        "swap them or correct one",
        f"{path}: conditions[0].unless.lsm: 'bfp' is not an LSM; did you mean "
        "'bpf'? (known: apparmor, bpf, capability, evm, ima, integrity, ipe, "
        "landlock, loadpin, lockdown, safesetid, selinux, smack, tomoyo, yama)",
        f"{path}: conditions[1].if.version: min '6.12' is above max '6.1': no "
        "kernel is in this range, so the condition never holds; swap them or "
        "correct one",
    ]


def test_a_condition_on_a_kernel_outside_the_catalogue_is_a_problem(
    tmp_path: Path,
) -> None:
    write(tmp_path, "policies/p-open.yaml", POLICY)
    text = f"""\
policies: p-open.yaml
conditions:
  - skip: no such kernel
    if: {{kernel: ["6.1", "9.9"]}}
  - skip: a typo
    unless: {{kernel: "6.13"}}
{ONE_CASE}"""
    path = write(tmp_path, "scenarios/s.yaml", text)
    catalogue = load(ROOT / "kernels.yaml")

    problems = unknown_kernels(load_scenario(path), catalogue)

    known = "(known: 5.10, 6.1, 6.12, 7.x)"
    assert [str(p) for p in problems] == [
        f"{path}: conditions[0].if.kernel: '9.9' is not a kernel of "
        f"{catalogue.path} {known}; name one of those, or add it to the catalogue",
        f"{path}: conditions[1].unless.kernel: '6.13' is not a kernel of "
        f"{catalogue.path}; did you mean '6.1'? {known}; name one of those, or "
        "add it to the catalogue",
    ]
    assert unknown_kernels(load_scenario(ROOT / "scenarios/lsm.yaml"), catalogue) == []
