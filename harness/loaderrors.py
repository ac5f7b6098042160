"""Why a policy did not load: the agent's own text, sorted into a few kinds.

The reason comes from `tetra tracingpolicy add` (`Error: failed to add
tracing policy: rpc error: code = ... desc = <reason>`), from the agent's log
(`msg="Server AddTracingPolicy request failed" error="<reason>"`) or from
`tetra tracingpolicy list -o json` (`"error"` of a `TP_STATE_LOAD_ERROR`
policy). The kinds, with the texts recorded from Tetragon v1.8 as the truth:

- hook-not-found: the function, syscall or tracepoint does not exist here,
  including a syscall name with another arch's prefix;
- argument-mismatch: the policy's arguments do not fit the hook's prototype
  on this kernel (an index out of range, a type that does not match);
- unsupported: the kernel lacks a feature the policy needs (the BPF LSM,
  a program or attach type);
- invalid-policy: the policy is wrong for the agent whatever the kernel
  (YAML syntax, unknown fields, wrong types, selectors the agent rejects);
- other: anything else. The agent's text is always kept unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from harness.errors import HarnessError


class LoadErrorKind(StrEnum):
    """What kind of reason made a policy fail to load."""

    HOOK_NOT_FOUND = "hook-not-found"
    ARGUMENT_MISMATCH = "argument-mismatch"
    UNSUPPORTED = "unsupported"
    INVALID_POLICY = "invalid-policy"
    OTHER = "other"


@dataclass(frozen=True)
class Rule:
    """A pattern in the agent's text, the kind it means and what to do about it."""

    kind: LoadErrorKind
    pattern: re.Pattern[str]
    hint: str


def _rule(kind: LoadErrorKind, pattern: str, hint: str) -> Rule:
    return Rule(kind, re.compile(pattern, re.IGNORECASE), hint)


K = LoadErrorKind
# First match wins; feature gaps come first because their texts can also
# mention a hook that is "not found".
RULES = (
    _rule(
        K.UNSUPPORTED,
        r"support the bpf LSM",
        # The agent says this too when its start-up probe could not attach an
        # LSM program: arm64 kernels without BPF trampolines (Debian's 6.1).
        "the agent found no usable BPF LSM: `bpf` is not in "
        "/sys/kernel/security/lsm (boot with lsm=...,bpf), or, on arm64, "
        "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set; add a condition "
        "such as `xfail: ..., if: {agent: tetragon}, unless: {lsm: bpf}`",
    ),
    _rule(
        K.UNSUPPORTED,
        r"missing linux patch|\bnot supported\b|kernel does not support"
        r"|requires (linux|kernel)",
        "this kernel lacks a feature the policy needs; add a `skip` condition",
    ),
    _rule(
        K.HOOK_NOT_FOUND,
        r"syscall \"[^\"]*\" \(or \"[^\"]*\"\) expecting (\w+) and got",
        "the syscall name carries another arch's prefix; write `call: sys_NAME` "
        "with `syscall: true`",
    ),
    _rule(
        K.HOOK_NOT_FOUND,
        # Agents before 1.4 say `call "X" type name X: not found`.
        r"call \"[^\"]*\"( type name \S+)?: not found|not found in kallsyms"
        r"|no such (symbol|function)"
        r"|failed to (find|resolve) (symbol|function|tracepoint)"
        r"|tracepoint [^ ]* (does not exist|not found)",
        "the hook does not exist on this kernel (renamed, inlined or not built); "
        "check it with the hook checks or pick another",
    ),
    _rule(
        K.ARGUMENT_MISMATCH,
        r"Index \d+ out of bounds|invalid index|does not match spec type"
        r"|argument \d+ .*(type|index)",
        "an argument index or type does not fit the function's prototype here",
    ),
    _rule(
        K.INVALID_POLICY,
        r"unmarshal|converting YAML|yaml: |unknown field|error list '"
        r"|parseMatch|invalid (operator|type|selector)|validation failure",
        "the agent rejects the policy itself; fix the YAML against the "
        "TracingPolicy reference of this agent version",
    ),
)

CLI_PREFIX = re.compile(
    r"failed to add tracing policy: (?:rpc error: code = \w+ desc = )?(?P<reason>.*)",
    re.DOTALL,
)
POLICY_NAME = re.compile(r"failed loading policy '(?P<name>[^']*)'")
LOGFMT_PAIR = re.compile(r'(?P<key>[\w.-]+)=(?P<value>"(?:[^"\\]|\\.)*"|\S*)')


@dataclass(frozen=True)
class LoadFailure:
    """One policy load failure: its kind, the agent's text and a hint."""

    kind: LoadErrorKind
    reason: str
    policy: str = ""
    hint: str = ""
    source: str = ""

    def describe(self) -> str:
        """`hook-not-found: <agent text>` followed by the hint."""
        hint = f"\n  hint: {self.hint}" if self.hint else ""
        return f"{self.kind.value}: {self.reason}{hint}"


class PolicyLoadError(HarnessError):
    """A policy under test did not load; carries the classified failure."""

    def __init__(self, failure: LoadFailure, where: str = "") -> None:
        self.failure = failure
        name = f"policy {failure.policy!r}" if failure.policy else "a policy"
        place = f" on {where}" if where else ""
        super().__init__(f"{name} failed to load{place}: {failure.describe()}")


def classify(reason: str, source: str = "") -> LoadFailure:
    """Classify the agent's reason text; the text is kept as it is."""
    reason = reason.strip()
    found = POLICY_NAME.search(reason)
    policy = found["name"] if found else ""
    for rule in RULES:
        if rule.pattern.search(reason):
            return LoadFailure(rule.kind, reason, policy, rule.hint, source)
    return LoadFailure(LoadErrorKind.OTHER, reason, policy, "", source)


def from_tetra_output(output: str) -> LoadFailure | None:
    """The failure in `tetra tracingpolicy add` output; None if it reports none."""
    found = CLI_PREFIX.search(output)
    if found is None:
        return None
    return classify(found["reason"], "tetra")


def parse_logfmt(line: str) -> dict[str, str]:
    """The key=value pairs of one agent log line (quoted values unescaped)."""
    pairs = {}
    for match in LOGFMT_PAIR.finditer(line):
        value = match["value"]
        if value.startswith('"'):
            value = json.loads(value)
        pairs[match["key"]] = value
    return pairs


def from_agent_log(text: str, policy: str = "") -> list[LoadFailure]:
    """Failures the agent logged, in order; only those of `policy` if given."""
    found = []
    for line in text.splitlines():
        if "AddTracingPolicy request failed" not in line:
            continue
        fields = parse_logfmt(line)
        failure = classify(fields.get("error", ""), "agent-log")
        name = fields.get("metadata.name") or failure.policy
        if policy and name != policy:
            continue
        if name and not failure.policy:
            failure = LoadFailure(
                failure.kind, failure.reason, name, failure.hint, failure.source
            )
        found.append(failure)
    return found


def load_warnings(text: str, policy: str) -> list[str]:
    """The agent's warnings about `policy` that let it load anyway.

    A kprobe argument index past the prototype only warns ("pre-validation
    returned an error, but will continue") and then reports meaningless values.
    """
    found = []
    for line in text.splitlines():
        if "level=warn" not in line or "pre-validation" not in line:
            continue
        fields = parse_logfmt(line)
        if fields.get("policy") == policy:
            found.append(f"{fields.get('msg', '')}: {fields.get('error', '')}")
    return found


def from_policy_list(text: str) -> dict[str, LoadFailure]:
    """Failures in `tetra tracingpolicy list -o json`, by policy name."""
    data: Any = json.loads(text)
    found = {}
    for entry in data.get("policies", []) if isinstance(data, dict) else []:
        if entry.get("state") == "TP_STATE_LOAD_ERROR" or entry.get("error"):
            failure = classify(str(entry.get("error", "")), "policy-list")
            name = str(entry.get("name", failure.policy))
            found[name] = LoadFailure(
                failure.kind, failure.reason, name, failure.hint, failure.source
            )
    return found
