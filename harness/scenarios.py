"""Scenario files: the policies under test, named cases, workloads, conditions.

A scenario in `scenarios/` names its policies (files in `policies/`) and one
or more cases; each case has workload steps, the events it expects and those
it must not cause, and may be skipped or expected to fail on some kernels.
Loading is strict: unknown keys are errors, and one ConfigError lists every
problem of every file with its dotted key. The schema is docs/scenarios.md;
steps and their busybox rendering live in `harness.steps`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import yamlfile
from harness.arches import ALIASES, ARCHES
from harness.catalogue import Catalogue
from harness.errors import ConfigError, Problem, Problems, did_you_mean
from harness.expectations import parse_expectation, parse_optional
from harness.loaderrors import LoadErrorKind
from harness.matching import Expectation
from harness.steps import Step, parse_steps, render_script

SCENARIO_KEYS = (
    "description",
    "policies",
    "conditions",
    "cases",
    "expect_load_error",
    "modules",
)
CASE_KEYS = (
    "description",
    "conditions",
    "steps",
    "expect",
    "expect_not",
    "ordered",
    "timeout",
)
FACT_KEYS = ("kernel", "arch", "version", "lsm", "config", "agent")
# The names /sys/kernel/security/lsm can list (Linux 5.10 to 7.x; `ima` and
# `evm` replaced `integrity` in 6.9): an `lsm:` fact outside them never holds.
LSMS = (
    "capability", "lockdown", "yama", "loadpin", "safesetid", "landlock",
    "selinux", "smack", "tomoyo", "apparmor", "bpf", "ipe", "integrity", "ima",
    "evm",
)  # fmt: skip
# How a case runs: with Tetragon (`--tetragon`), or as a firing check without it.
AGENT_MODES = ("tetragon", "none")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
MODULE_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_TIMEOUT = 30.0
NO_EXPECT = "required: the events the workload must cause"
# A case that only forbids events passes while its policy is silent (not
# loaded, hook gone on this kernel): the control proves it is live.
NO_CONTROL = (
    "required with `expect_not:`: add a control step the policy reports and "
    "expect its event here with an exact count (docs/scenarios.md, the starter "
    "library: a negative case carries a control)"
)
POLICY_KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
SYSCALL_PREFIXES = tuple(a.syscall_prefix for a in ARCHES.values())


# -- conditions ----------------------------------------------------------------


@dataclass(frozen=True)
class KernelFacts:
    """What conditions are evaluated against; None means the fact is unknown.

    `version` is the upstream version (`6.1.176`; a Debian package version
    such as `6.1.176-1` also works). The runner fills lsms and config from
    the guest and the kernel's config, and `agent` from the run's mode (one
    of AGENT_MODES).
    """

    kernel: str
    arch: str
    version: str = ""
    lsms: frozenset[str] | None = None
    config: Mapping[str, str] | None = None
    agent: str | None = None


def version_tuple(text: str) -> tuple[int, ...]:
    """`6.1.176-1` -> (6, 1, 176); () when it starts with no number."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(p) for p in match[0].split(".")) if match else ()


@dataclass(frozen=True)
class Facts:
    """Facts a condition tests; every fact given must hold."""

    kernels: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_version: tuple[int, ...] = ()
    max_version: tuple[int, ...] = ()
    lsms: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    # The dotted key it was read from (`cases.c.conditions[0].if`), for the
    # checks that need the catalogue and so run at collection.
    key: str = field(default="", compare=False)

    def holds(self, facts: KernelFacts) -> bool | None:
        """True, False, or None when it depends on a fact that is unknown."""
        if self.kernels and facts.kernel not in self.kernels:
            return False
        if self.arches and facts.arch not in self.arches:
            return False
        version = version_tuple(facts.version)
        if self.min_version or self.max_version:
            if not version:
                return None
            # A bound compares only as many parts as it has: max 6.1 admits 6.1.176.
            if self.min_version and version[: len(self.min_version)] < self.min_version:
                return False
            if self.max_version and version[: len(self.max_version)] > self.max_version:
                return False
        unknown = False
        if self.agents:
            if facts.agent is None:
                unknown = True
            elif facts.agent not in self.agents:
                return False
        if self.lsms:
            if facts.lsms is None:
                unknown = True
            elif not set(self.lsms) <= facts.lsms:
                return False
        if self.configs:
            if facts.config is None:
                unknown = True
            elif any(facts.config.get(c) not in ("y", "m") for c in self.configs):
                return False
        return None if unknown else True


Action = Literal["run", "skip", "xfail"]


@dataclass(frozen=True)
class Condition:
    """Skip or xfail, with a reason, `if` some facts hold `unless` others do."""

    action: Literal["skip", "xfail"]
    reason: str
    when: Facts | None = None
    unless: Facts | None = None

    def applies(self, facts: KernelFacts) -> tuple[bool, bool]:
        """Whether it applies, and whether that rests on an unknown fact."""
        when = self.when.holds(facts) if self.when else True
        unless = self.unless.holds(facts) if self.unless else False
        # Unknown facts apply the condition: a case that cannot be judged on a
        # kernel is not run there as if it could.
        applies = when is not False and unless is not True
        return applies, applies and (when is None or unless is None)


@dataclass(frozen=True)
class Verdict:
    """What to do with a case on one kernel: run it, skip it or expect failure."""

    action: Action
    reason: str = ""


def evaluate(conditions: Iterable[Condition], facts: KernelFacts) -> Verdict:
    """The first applying skip, else the first applying xfail, else run."""
    found: dict[str, str] = {}
    for condition in conditions:
        applies, unknown = condition.applies(facts)
        if applies and condition.action not in found:
            note = " (a fact it depends on is unknown for this kernel)"
            found[condition.action] = condition.reason + (note if unknown else "")
    for action in ("skip", "xfail"):
        if action in found:
            return Verdict(action, found[action])
    return Verdict("run")


# What each string fact names, for messages.
FACT_WORDS = {
    "kernel": "a catalogue name such as '6.1'",
    "arch": f"an arch ({', '.join(ARCHES)})",
    "lsm": "an LSM name such as bpf",
    "config": "a kernel option such as CONFIG_FPROBE",
    "agent": f"an agent mode ({', '.join(AGENT_MODES)})",
}


def _yaml_kind(value: Any) -> str:
    """`[1] (a list)`: a value of the wrong type, as the user can recognise it."""
    if value is None:
        return "nothing (null)"
    text = yamlfile.as_written(value)
    if isinstance(value, bool):
        return f"{text} (a boolean to YAML, as are yes, no, on and off)"
    if isinstance(value, (int, float)):
        return f"{text} (a number)"
    if isinstance(value, str):
        return f"{value!r} (empty)" if not value else repr(value)
    return f"{value!r} (a {'mapping' if isinstance(value, Mapping) else 'list'})"


def _strings(value: Any, name: str, key: str, problems: Problems) -> tuple[str, ...]:
    """The fact `name`: one string or a non-empty list of them."""
    what = FACT_WORDS[name]
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.add(key, f"empty list; give at least one: {what}")
    out = []
    for item in items:
        if isinstance(item, str) and item:
            out.append(item)
        elif name == "kernel" and yamlfile.is_number(item):
            # YAML reads 6.10 as the number 6.1: catalogue names must be quoted.
            problems.add(key, yamlfile.quote_hint(item))
        else:
            problems.add(key, f"{_yaml_kind(item)} is not a string; expected {what}")
    return tuple(out)


def _version(value: Any, key: str, problems: Problems) -> tuple[int, ...]:
    if yamlfile.is_number(value):
        problems.add(key, yamlfile.quote_hint(value))
        return ()
    parsed = version_tuple(value) if isinstance(value, str) else ()
    if not parsed:
        text = repr(value) if isinstance(value, str) else _yaml_kind(value)
        problems.add(
            key,
            f"{text} is not a version; give one such as '6.1', "
            "or a range {min: '5.15', max: '6.1'}",
        )
    return parsed


def _version_range(
    value: Any, key: str, problems: Problems
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not isinstance(value, Mapping):
        # A bare version names a series: "6.1" is 6.1.0 up to every 6.1.x.
        one = _version(value, key, problems)
        return one, one
    problems.unknown_keys(value, key, ("min", "max"))
    low = _version(value["min"], f"{key}.min", problems) if "min" in value else ()
    high = _version(value["max"], f"{key}.max", problems) if "max" in value else ()
    if "min" not in value and "max" not in value:
        problems.add(key, "give min, max or both")
    # Bounds compare as many parts as they have, so the range is empty exactly
    # when min is above max on the parts both give (min 6.1.5, max 6.1 is not).
    common = min(len(low), len(high))
    if low and high and low[:common] > high[:common]:
        problems.add(
            key,
            f"min {value['min']!r} is above max {value['max']!r}: no kernel is in "
            "this range, so the condition never holds; swap them or correct one",
        )
    return low, high


def parse_facts(value: Any, key: str, problems: Problems) -> Facts | None:
    """The facts under a condition's `if` or `unless`."""
    if not isinstance(value, Mapping) or not value:
        problems.add(key, f"must be a mapping of {', '.join(FACT_KEYS)}")
        return None
    problems.unknown_keys(value, key, FACT_KEYS)
    given = {
        name: _strings(value[name], name, f"{key}.{name}", problems)
        for name in FACT_WORDS
        if name in value
    }
    arches = given.get("arch", ())
    for arch in arches:
        if arch not in ARCHES:
            hint = f" (did you mean {ALIASES[arch]}?)" if arch in ALIASES else ""
            known = ", ".join(ARCHES)
            problems.add(
                f"{key}.arch", f"{arch!r} is not an arch{hint}; known: {known}"
            )
    configs = given.get("config", ())
    for option in configs:
        if not option.startswith("CONFIG_"):
            problems.add(f"{key}.config", f"{option!r}: write CONFIG_{option}")
    for lsm in given.get("lsm", ()):
        if lsm not in LSMS:
            problems.add(
                f"{key}.lsm",
                f"{lsm!r} is not an LSM{did_you_mean(lsm, LSMS)} (known: "
                f"{', '.join(sorted(LSMS))})",
            )
    agents = given.get("agent", ())
    for agent in agents:
        if agent not in AGENT_MODES:
            known = ", ".join(AGENT_MODES)
            problems.add(f"{key}.agent", f"{agent!r} is not an agent mode ({known})")
    low, high = (
        _version_range(value["version"], f"{key}.version", problems)
        if "version" in value
        else ((), ())
    )
    return Facts(
        kernels=given.get("kernel", ()),
        arches=arches,
        min_version=low,
        max_version=high,
        lsms=given.get("lsm", ()),
        configs=configs,
        agents=agents,
        key=key,
    )


def parse_conditions(value: Any, key: str, problems: Problems) -> tuple[Condition, ...]:
    """A `conditions:` list."""
    if not isinstance(value, list):
        problems.add(key, "must be a list of conditions (skip/xfail with if/unless)")
        return ()
    found = []
    for index, raw in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(raw, Mapping):
            problems.add(where, "must be a mapping: {skip: reason, if: {...}}")
            continue
        problems.unknown_keys(raw, where, ("skip", "xfail", "if", "unless"))
        actions = [a for a in ("skip", "xfail") if a in raw]
        if len(actions) != 1:
            problems.add(where, "give exactly one of skip or xfail, with a reason")
            continue
        action: Literal["skip", "xfail"] = "skip" if "skip" in raw else "xfail"
        reason = raw[action]
        if not isinstance(reason, str) or not reason.strip():
            problems.add(f"{where}.{action}", "must be the reason, a non-empty string")
        if "if" not in raw and "unless" not in raw:
            problems.add(where, "give `if:` or `unless:` (or both) to say when")
        when = parse_facts(raw["if"], f"{where}.if", problems) if "if" in raw else None
        unless = (
            parse_facts(raw["unless"], f"{where}.unless", problems)
            if "unless" in raw
            else None
        )
        found.append(Condition(action, str(reason), when, unless))
    return tuple(found)


# -- policies, cases, scenarios ---------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A TracingPolicy file under test and the name it loads as."""

    name: str
    path: Path


def find_policies_dir(scenario: Path) -> Path:
    """The nearest `policies/` directory above a scenario file."""
    for directory in scenario.resolve().parents:
        if (directory / "policies").is_dir():
            return directory / "policies"
    return scenario.resolve().parent.parent / "policies"


def _portability(data: Mapping[str, Any], file: str, out: list[Problem]) -> None:
    spec = data.get("spec")
    kprobes = spec.get("kprobes") if isinstance(spec, Mapping) else None
    for index, kprobe in enumerate(kprobes if isinstance(kprobes, list) else []):
        call = kprobe.get("call") if isinstance(kprobe, Mapping) else None
        if isinstance(call, str) and call.startswith(SYSCALL_PREFIXES):
            bare = call.split("_sys_", 1)[1]
            out.append(
                Problem(
                    file,
                    f"spec.kprobes[{index}].call",
                    f"{call!r} only exists on one arch; write `call: sys_{bare}` "
                    "with `syscall: true`",
                )
            )


def load_policy(path: Path, problems: Problems, lenient: bool = False) -> Policy:
    """Read a policy's name; `lenient` when the policy is expected not to load."""
    own = Problems(str(path))
    data = yamlfile.read(path, own, "a TracingPolicy")
    name = path.stem
    if isinstance(data, Mapping):
        meta = data.get("metadata")
        found = meta.get("name") if isinstance(meta, Mapping) else None
        if isinstance(found, str) and found:
            name = found
        elif not lenient:
            own.add("metadata.name", "missing; the agent names events after it")
        if data.get("kind") not in POLICY_KINDS and not lenient:
            own.add("kind", f"must be one of {', '.join(POLICY_KINDS)}")
        if not lenient:
            _portability(data, str(path), own.items)
    elif data is not None and not lenient:
        own.add("", "must be a TracingPolicy mapping")
    if not lenient:
        problems.items.extend(own.items)
    return Policy(name, path)


@dataclass(frozen=True)
class Case:
    """One named case: steps, expected events and conditions."""

    name: str
    description: str
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    expect_not: tuple[Expectation, ...]
    ordered: bool = False
    # Seconds the workload may take under KVM; the runner scales it for TCG.
    timeout: float = DEFAULT_TIMEOUT
    conditions: tuple[Condition, ...] = ()

    def script(self) -> str:
        """The whole workload as a busybox sh script."""
        return render_script(self.steps, self.name)


@dataclass(frozen=True)
class Scenario:
    """One scenario file, loaded and validated."""

    path: Path
    description: str
    policies: tuple[Policy, ...]
    cases: tuple[Case, ...]
    conditions: tuple[Condition, ...] = ()
    expect_load_error: LoadErrorKind | None = None
    # Kernel modules copied into the guest (not loaded) before each case.
    modules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file name without `.yaml`."""
        return self.path.stem

    def verdict(self, case: Case, facts: KernelFacts) -> Verdict:
        """Run, skip or xfail `case` on a kernel: scenario conditions first."""
        return evaluate((*self.conditions, *case.conditions), facts)


def _expectations(
    raw: Mapping[str, Any],
    name: Literal["expect", "expect_not"],
    case: str,
    problems: Problems,
    policies: Sequence[str],
) -> tuple[Expectation, ...]:
    """The case's `expect:` or `expect_not:` list; () when it is left out."""
    if name not in raw:
        return ()
    value, key, absent = raw[name], f"{case}.{name}", name == "expect_not"
    if not isinstance(value, list):
        problems.add(key, "must be a list of expected events")
        return ()
    if not value:
        fix = (
            "list the events that must not appear, or leave it out"
            if absent
            else "list the events the workload must cause"
        )
        problems.add(key, f"empty list; {fix}")
    parsed = [
        parse_expectation(
            item, f"{key}[{i}]", problems, absent=absent, policies=policies
        )
        for i, item in enumerate(value)
    ]
    return tuple(p for p in parsed if p is not None)


def _timeout(value: Any, key: str, problems: Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        problems.add(key, "must be a positive number of seconds")
        return DEFAULT_TIMEOUT
    return float(value)


def parse_case(
    name: str, raw: Any, problems: Problems, policies: Sequence[str]
) -> Case | None:
    """One entry of `cases:`."""
    key = f"cases.{name}"
    if not NAME.fullmatch(name):
        problems.add(key, "case names are lower case: letters, digits, . _ -")
    if not isinstance(raw, Mapping):
        problems.add(key, "must be a mapping with steps and expect")
        return None
    problems.unknown_keys(raw, key, CASE_KEYS)
    if "steps" not in raw:
        problems.add(f"{key}.steps", "required: the workload that causes the events")
    if "expect" not in raw:
        problems.add(f"{key}.expect", NO_CONTROL if "expect_not" in raw else NO_EXPECT)
    ordered = raw.get("ordered", False)
    if not isinstance(ordered, bool):
        problems.add(f"{key}.ordered", "must be true or false")
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.add(f"{key}.description", "must be a string")
    return Case(
        name=name,
        description=str(description),
        steps=parse_optional(raw, "steps", key, problems, parse_steps) or (),
        expect=_expectations(raw, "expect", key, problems, policies),
        expect_not=_expectations(raw, "expect_not", key, problems, policies),
        ordered=bool(ordered),
        timeout=_timeout(
            raw.get("timeout", DEFAULT_TIMEOUT), f"{key}.timeout", problems
        ),
        conditions=parse_conditions(
            raw.get("conditions", []), f"{key}.conditions", problems
        ),
    )


def _load_error_kind(value: Any, problems: Problems) -> LoadErrorKind | None:
    try:
        return LoadErrorKind(value)
    except ValueError:
        known = ", ".join(k.value for k in LoadErrorKind)
        problems.add("expect_load_error", f"{value!r} is not a kind (known: {known})")
        return None


def _policies(
    value: Any, base: Path, problems: Problems, lenient: bool
) -> tuple[Policy, ...]:
    names = value if isinstance(value, list) else [value]
    found: list[Policy] = []
    for index, item in enumerate(names):
        key = f"policies[{index}]"
        if not isinstance(item, str) or not item:
            problems.add(key, "must be a policy file name in policies/")
            continue
        path = base / item
        if not path.is_file():
            problems.add(key, f"{item!r} not found in {base}")
            continue
        policy = load_policy(path, problems, lenient)
        if policy.name in [p.name for p in found]:
            # The agent keeps one policy per name: a second add is refused.
            problems.add(key, f"a second policy named {policy.name!r}")
        found.append(policy)
    return tuple(found)


def _modules(value: Any, problems: Problems) -> tuple[str, ...]:
    names = value if isinstance(value, list) else [value]
    for index, name in enumerate(names):
        if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
            problems.add(
                f"modules[{index}]", f"{name!r} is not a module name, e.g. dummy"
            )
    # modules.dep and the guest's files spell names with underscores.
    return tuple(n.replace("-", "_") for n in names if isinstance(n, str))


def parse_scenario(
    path: Path, data: Any, problems: Problems, policies_dir: Path
) -> Scenario | None:
    """A scenario from its decoded YAML; every problem goes to `problems`."""
    if not isinstance(data, Mapping):
        problems.add("", "a scenario file is a mapping with policies and cases")
        return None
    problems.unknown_keys(data, "", SCENARIO_KEYS)
    expected = (
        _load_error_kind(data["expect_load_error"], problems)
        if "expect_load_error" in data
        else None
    )
    if "policies" not in data:
        problems.add("policies", "required: the policy files under test")
    policies = _policies(
        data.get("policies", []), policies_dir, problems, expected is not None
    )
    cases_raw = data.get("cases") or {}
    if not isinstance(cases_raw, Mapping):
        problems.add("cases", f"{cases_raw!r} is not a mapping of case name to case")
        cases_raw = {}
    elif not cases_raw and expected is None:
        problems.add("cases", "no cases: add at least one case under `cases:`")
    names = [p.name for p in policies]
    for name in cases_raw:
        if yamlfile.is_number(name):
            # A case named 6.10 would silently become case 6.1.
            problems.add(
                f"cases.{yamlfile.as_written(name)}", yamlfile.quote_hint(name)
            )
    cases = [
        parse_case(yamlfile.as_written(n), raw, problems, names)
        for n, raw in cases_raw.items()
    ]
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "must be a string")
    return Scenario(
        path=path,
        description=str(description),
        policies=policies,
        cases=tuple(c for c in cases if c is not None),
        conditions=parse_conditions(data.get("conditions", []), "conditions", problems),
        expect_load_error=expected,
        modules=_modules(data.get("modules", []), problems),
    )


def _facts_of(scenario: Scenario) -> Iterator[Facts]:
    conditions = [*scenario.conditions]
    for case in scenario.cases:
        conditions += case.conditions
    for condition in conditions:
        yield from (f for f in (condition.when, condition.unless) if f is not None)


def unknown_kernels(scenario: Scenario, catalogue: Catalogue) -> list[Problem]:
    """Conditions naming a kernel the catalogue does not have: they never hold.

    Checked where the catalogue is known (collection), not at load time.
    """
    known = [k.name for k in catalogue.kernels]
    found = []
    for facts in _facts_of(scenario):
        for name in facts.kernels:
            if name not in known:
                found.append(
                    Problem(
                        str(scenario.path),
                        f"{facts.key}.kernel",
                        f"{name!r} is not a kernel of {catalogue.path}"
                        f"{did_you_mean(name, known)} (known: {', '.join(known)}); "
                        "name one of those, or add it to the catalogue",
                    )
                )
    return found


def load_scenario(path: Path, policies_dir: Path | None = None) -> Scenario:
    """Load and validate one scenario file; one ConfigError lists every problem."""
    return load_scenarios([path], policies_dir)[0]


def load_scenarios(
    paths: Iterable[Path], policies_dir: Path | None = None
) -> list[Scenario]:
    """Load several scenario files (or directories of them); all problems at once."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        else:
            files.append(path)
    problems: list[Problem] = []
    scenarios = []
    for file in files:
        own = Problems(str(file))
        data = yamlfile.read(file, own, "`policies:` and `cases:`")
        base = policies_dir or find_policies_dir(file)
        scenario = parse_scenario(file, data, own, base) if data is not None else None
        problems += own.items
        if scenario is not None:
            scenarios.append(scenario)
    if problems:
        raise ConfigError(problems)
    return scenarios
