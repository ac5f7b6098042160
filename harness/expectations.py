"""The YAML (or dict) form of expected events, read strictly into matchers.

Scenario files and Python tests write expectations the same way; the schema
is documented in docs/scenarios.md. Every problem is collected with its
dotted key so that one ConfigError lists them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any, TypeVar

# Problems is re-exported: steps and tests import it from here.
from harness.errors import Problems as Problems
from harness.errors import unknown_key_message
from harness.events import ARG_KINDS
from harness.matching import (
    ArgMatch,
    Count,
    Expectation,
    ExpectedEvent,
    FieldMatch,
    ListMatch,
    ListMode,
    NumMatch,
    ProcessMatch,
    StrMatch,
)

STR_OPS = ("full", "prefix", "suffix", "contains", "regex")
NUM_OPS = ("equal", "min", "max")
LIST_MODES: tuple[ListMode, ...] = ("ordered", "unordered", "subset")
EVENT_TYPES = {
    "process_exec": "exec",
    "process_exit": "exit",
    "process_kprobe": "kprobe",
    "process_tracepoint": "tracepoint",
    "process_lsm": "lsm",
    "process_uprobe": "uprobe",
    "process_usdt": "usdt",
    "process_loader": "loader",
}
TYPE_ALIASES = {short: full for full, short in EVENT_TYPES.items()}
# Which event types carry which fields (Tetragon's events.proto).
HOOKED = {"process_kprobe", "process_lsm", "process_uprobe", "process_usdt"}
POLICY_TYPES = HOOKED | {"process_tracepoint"}
KEYS_BY_TYPE: dict[str, frozenset[str]] = {
    "function": frozenset(HOOKED),
    "syscall": frozenset({"process_kprobe"}),
    "tracepoint": frozenset({"process_tracepoint"}),
    "policy": frozenset(POLICY_TYPES),
    "action": frozenset(POLICY_TYPES),
    "args": frozenset(POLICY_TYPES),
    "return": frozenset({"process_kprobe"}),
    "status": frozenset({"process_exit"}),
}
EVENT_KEYS = frozenset({"type", "process", "parent", *KEYS_BY_TYPE})
PROCESS_STR = ("binary", "arguments", "cwd")
PROCESS_NUM = ("pid", "uid", "auid")
# Short names for structured argument kinds: `sock: {dport: 8080}`.
STRUCT_ALIASES = {
    "sock": "sock_arg",
    "skb": "skb_arg",
    "sockaddr": "sockaddr_arg",
    "syscall_id": "syscall_id",
    "cred": "process_credentials_arg",
    "capability": "capability_arg",
    "module": "module_arg",
    "net_dev": "net_dev_arg",
}
# Members of structured arguments as Tetragon's events name them (Tetragon
# leaves out those that are zero). Kinds not listed are matched unchecked.
STRUCT_MEMBERS = {
    "sock_arg": frozenset(
        {"family", "type", "protocol", "mark", "priority", "saddr", "daddr"}
        | {"sport", "dport", "cookie", "state"}
    ),
    "sockaddr_arg": frozenset({"family", "addr", "port"}),
    "syscall_id": frozenset({"id", "abi"}),
}
ARG_STR = ("string", "path", "permission", "bytes", "hex")
# A hex test's operands: whole bytes, two digits each, spaces anywhere.
HEX_OPERAND = re.compile(r"(?:[0-9a-f]{2})*")
ARG_KEYS = frozenset({"kind", "int", "fields", *ARG_STR, *STRUCT_ALIASES})
SYSCALL_NAME = re.compile(r"[a-z0-9_]+")

T = TypeVar("T")


def parse_optional(
    raw: Mapping[str, Any],
    name: str,
    key: str,
    problems: Problems,
    parse: Callable[[Any, str, Problems], T | None],
) -> T | None:
    """`raw[name]` parsed under `key.name`, or None when absent."""
    return parse(raw[name], f"{key}.{name}", problems) if name in raw else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_str(value: Any, key: str, problems: Problems) -> StrMatch | None:
    """`'/etc/passwd'` (equality) or a mapping of full/prefix/suffix/contains/regex."""
    if isinstance(value, str):
        return StrMatch(full=value)
    if not isinstance(value, Mapping) or not value:
        problems.add(
            key,
            "must be a string or a mapping with one or more of "
            f"{', '.join(STR_OPS)} (quote values YAML reads as numbers or booleans)",
        )
        return None
    problems.unknown_keys(value, key, STR_OPS)
    ops: dict[str, str] = {}
    for op in STR_OPS:
        if op not in value:
            continue
        if not isinstance(value[op], str):
            problems.add(f"{key}.{op}", "must be a string (quote it)")
            continue
        ops[op] = value[op]
    if "regex" in ops:
        try:
            re.compile(ops["regex"])
        except re.error as e:
            problems.add(f"{key}.regex", f"not a valid regular expression: {e}")
    return StrMatch(**ops) if ops else None


def parse_num(value: Any, key: str, problems: Problems) -> NumMatch | None:
    """`3` (equality) or a mapping of equal/min/max (inclusive)."""
    if _is_int(value):
        return NumMatch(equal=value)
    if not isinstance(value, Mapping) or not value:
        problems.add(key, f"must be an integer or a mapping of {', '.join(NUM_OPS)}")
        return None
    problems.unknown_keys(value, key, NUM_OPS)
    ops: dict[str, int] = {}
    for op in NUM_OPS:
        if op in value:
            if _is_int(value[op]):
                ops[op] = value[op]
            else:
                problems.add(f"{key}.{op}", "must be an integer")
    if "min" in ops and "max" in ops and ops["min"] > ops["max"]:
        problems.add(key, f"min {ops['min']} is above max {ops['max']}")
    return NumMatch(**ops) if ops else None


def parse_field(value: Any, key: str, problems: Problems) -> FieldMatch | None:
    """A member of a structured argument: a number or a string test by its form."""
    numeric = isinstance(value, Mapping) and value and set(value) <= set(NUM_OPS)
    if _is_int(value) or numeric:
        return parse_num(value, key, problems)
    return parse_str(value, key, problems)


def parse_hex(value: Any, key: str, problems: Problems) -> StrMatch | None:
    """A string test on a buffer's bytes in hex: `7f454c46`, `{prefix: "02 00"}`.

    Operands are normalised to the form they are matched against, lower-case
    pairs joined by spaces (`7f 45 4c 46`); a regex is used as it is written.
    """
    matcher = parse_str(value, key, problems)
    if matcher is None:
        return None
    ops: dict[str, str] = {}
    for op in ("full", "prefix", "suffix", "contains"):
        operand = getattr(matcher, op)
        if operand is None:
            continue
        digits = "".join(operand.split()).lower()
        where = key if isinstance(value, str) else f"{key}.{op}"
        if not HEX_OPERAND.fullmatch(digits):
            problems.add(
                where, f"{operand!r} is not hex bytes (two digits each, e.g. 7f454c46)"
            )
        ops[op] = " ".join(digits[i : i + 2] for i in range(0, len(digits), 2))
    return replace(matcher, **ops)


def _struct_fields(
    value: Any, key: str, problems: Problems, kind: str | None
) -> tuple[tuple[str, FieldMatch], ...]:
    if not isinstance(value, Mapping) or not value:
        problems.add(key, "must be a mapping of member name to value")
        return ()
    members = STRUCT_MEMBERS.get(kind or "")
    found = []
    for name, raw in value.items():
        if members is not None and name not in members:
            what = f"member of {kind}"
            problems.add(f"{key}.{name}", unknown_key_message(name, members, what))
            continue
        matcher = parse_field(raw, f"{key}.{name}", problems)
        if matcher is not None:
            found.append((str(name), matcher))
    return tuple(found)


def _kind(value: Any, key: str, problems: Problems) -> str | None:
    text = str(value)
    full = text if text in ARG_KINDS else f"{text}_arg"
    if full not in ARG_KINDS:
        known = ", ".join(sorted(k.removesuffix("_arg") for k in ARG_KINDS))
        problems.add(key, f"{text!r} is not an argument kind (known: {known})")
        return None
    return full


def parse_arg(value: Any, key: str, problems: Problems) -> ArgMatch | None:
    """One argument: `{}` (any), an int, a string (value or path), or a mapping."""
    if value is None:
        return ArgMatch()
    if _is_int(value):
        return ArgMatch(int=NumMatch(equal=value))
    if isinstance(value, str):
        return ArgMatch(text=StrMatch(full=value))
    if not isinstance(value, Mapping):
        problems.add(key, "must be {}, an integer, a string or a mapping")
        return None
    problems.unknown_keys(value, key, ARG_KEYS)
    structs = [name for name in STRUCT_ALIASES if name in value]
    if len(structs) > 1 or (structs and ("fields" in value or "kind" in value)):
        problems.add(key, "give one of kind/fields or one structured kind, not both")
        return None
    kind = _kind(value["kind"], f"{key}.kind", problems) if "kind" in value else None
    fields: tuple[tuple[str, FieldMatch], ...] = ()
    if structs:
        kind = STRUCT_ALIASES[structs[0]]
        where = f"{key}.{structs[0]}"
        fields = _struct_fields(value[structs[0]], where, problems, kind)
    elif "fields" in value:
        fields = _struct_fields(value["fields"], f"{key}.fields", problems, kind)
    return ArgMatch(
        kind=kind,
        int=parse_optional(value, "int", key, problems, parse_num),
        string=parse_optional(value, "string", key, problems, parse_str),
        path=parse_optional(value, "path", key, problems, parse_str),
        permission=parse_optional(value, "permission", key, problems, parse_str),
        bytes=parse_optional(value, "bytes", key, problems, parse_str),
        hex=parse_optional(value, "hex", key, problems, parse_hex),
        fields=fields,
    )


def parse_args(value: Any, key: str, problems: Problems) -> ListMatch | None:
    """A list (positional), or `{ordered|unordered|subset: [...]}`."""
    mode: ListMode = "ordered"
    items = value
    if isinstance(value, Mapping):
        modes = [m for m in LIST_MODES if m in value]
        problems.unknown_keys(value, key, LIST_MODES)
        if len(modes) != 1:
            problems.add(key, f"give exactly one of {', '.join(LIST_MODES)}")
            return None
        mode = modes[0]
        key = f"{key}.{mode}"
        items = value[mode]
    if not isinstance(items, list):
        problems.add(key, "must be a list of argument tests")
        return None
    parsed = [parse_arg(item, f"{key}[{i}]", problems) for i, item in enumerate(items)]
    found = tuple(p for p in parsed if p is not None)
    return ListMatch(mode, found) if len(found) == len(parsed) else None


def parse_process(value: Any, key: str, problems: Problems) -> ProcessMatch | None:
    """`'/bin/cat'` (the binary) or a mapping of binary/arguments/cwd/pid/uid/auid."""
    if isinstance(value, str):
        return ProcessMatch(binary=StrMatch(full=value))
    if not isinstance(value, Mapping):
        problems.add(key, "must be a binary path or a mapping")
        return None
    problems.unknown_keys(value, key, (*PROCESS_STR, *PROCESS_NUM))
    return ProcessMatch(
        binary=parse_optional(value, "binary", key, problems, parse_str),
        arguments=parse_optional(value, "arguments", key, problems, parse_str),
        cwd=parse_optional(value, "cwd", key, problems, parse_str),
        pid=parse_optional(value, "pid", key, problems, parse_num),
        uid=parse_optional(value, "uid", key, problems, parse_num),
        auid=parse_optional(value, "auid", key, problems, parse_num),
    )


def parse_return(value: Any, key: str, problems: Problems) -> ArgMatch | None:
    """`3`, `{min: 0}` (the integer returned) or an argument test."""
    if isinstance(value, Mapping) and value and set(value) <= set(NUM_OPS):
        number = parse_num(value, key, problems)
        return ArgMatch(int=number) if number else None
    return parse_arg(value, key, problems)


def _event_type(raw: Mapping[str, Any], key: str, problems: Problems) -> str | None:
    kind = raw.get("type")
    if kind is None:
        known = ", ".join(EVENT_TYPES)
        problems.add(f"{key}.type", f"required (one of {known}, or short: kprobe...)")
        return None
    full = TYPE_ALIASES.get(str(kind), str(kind))
    if full not in EVENT_TYPES:
        known = ", ".join(f"{t} ({s})" for t, s in EVENT_TYPES.items())
        problems.add(f"{key}.type", f"{kind!r} is not an event type (known: {known})")
        return None
    return full


def _action(value: Any, key: str, problems: Problems) -> StrMatch | None:
    # Policies write actions as `Post`, `Sigkill`; events print KPROBE_ACTION_*.
    if isinstance(value, str) and not value.startswith("KPROBE_ACTION_"):
        value = f"KPROBE_ACTION_{value.upper()}"
    return parse_str(value, key, problems)


def _syscall(value: Any, key: str, problems: Problems) -> str | None:
    if not isinstance(value, str) or not SYSCALL_NAME.fullmatch(value):
        problems.add(key, "must be a syscall name without prefix, e.g. openat")
        return None
    if value.startswith(("sys_", "__")):
        bare = value.split("sys_", 1)[-1]
        problems.add(key, f"write the name without the prefix: {bare}")
    return value


def parse_event(
    raw: Mapping[str, Any],
    key: str,
    problems: Problems,
    policies: Collection[str] = (),
) -> ExpectedEvent | None:
    """One expected event; `policies`, when given, are the names `policy:` may use."""
    kind = _event_type(raw, key, problems)
    if kind is None:
        return None
    for name, types in KEYS_BY_TYPE.items():
        if name in raw and kind not in types:
            allowed = ", ".join(sorted(EVENT_TYPES[t] for t in types))
            problems.add(f"{key}.{name}", f"only for event types {allowed}, not {kind}")
    hooks = [n for n in ("function", "syscall", "tracepoint") if n in raw]
    if len(hooks) > 1:
        problems.add(key, f"give one of function, syscall, tracepoint (got {hooks})")
    policy = raw.get("policy")
    if policies and isinstance(policy, str) and policy not in policies:
        names = ", ".join(sorted(policies))
        problems.add(
            f"{key}.policy", f"{policy!r} is not a policy of this scenario ({names})"
        )

    return ExpectedEvent(
        type=kind,
        function=parse_optional(raw, "function", key, problems, parse_str),
        syscall=parse_optional(raw, "syscall", key, problems, _syscall),
        tracepoint=parse_optional(raw, "tracepoint", key, problems, parse_str),
        policy=parse_optional(raw, "policy", key, problems, parse_str),
        action=parse_optional(raw, "action", key, problems, _action),
        process=parse_optional(raw, "process", key, problems, parse_process),
        parent=parse_optional(raw, "parent", key, problems, parse_process),
        args=parse_optional(raw, "args", key, problems, parse_args),
        ret=parse_optional(raw, "return", key, problems, parse_return),
        status=parse_optional(raw, "status", key, problems, parse_num),
    )


def parse_count(value: Any, key: str, problems: Problems) -> Count | None:
    """`2` (exactly) or `{min: 1, max: 3}`."""
    if _is_int(value) and value >= 0:
        return Count(value, value)
    number = parse_num(value, key, problems) if isinstance(value, Mapping) else None
    if number is None or number.equal is not None:
        problems.add(key, "must be a count >= 0 or a mapping of min/max")
        return None
    low = number.min or 0
    if low < 0 or (number.max is not None and number.max < 0):
        problems.add(key, "counts cannot be negative")
    return Count(low, number.max)


def parse_expectation(
    raw: Any,
    key: str,
    problems: Problems,
    *,
    absent: bool = False,
    policies: Collection[str] = (),
) -> Expectation | None:
    """One item of `expect:` (or, with `absent`, of `expect_not:`)."""
    if not isinstance(raw, Mapping):
        problems.add(key, "must be a mapping describing an event (type: ..., ...)")
        return None
    allowed = EVENT_KEYS | ({"name"} if absent else {"name", "count"})
    problems.unknown_keys(raw, key, allowed)
    if absent and "count" in raw:
        problems.add(f"{key}.count", "events in expect_not must not appear at all")
    count = (
        parse_count(raw["count"], f"{key}.count", problems) if "count" in raw else None
    )
    event = parse_event(raw, key, problems, policies)
    if event is None:
        return None
    name = raw.get("name", key)
    if not isinstance(name, str):
        problems.add(f"{key}.name", "must be a string")
        name = key
    return Expectation(name, event, Count(0, 0) if absent else count or Count())


def expectation(
    source: str = "<python>", *, absent: bool = False, **fields: Any
) -> Expectation:
    """An expectation from keyword arguments (Python tests); raises ConfigError.

    `expectation(type="kprobe", function="fd_install", args=[{}, {"path": p}])`.
    """
    if "ret" in fields:
        # `return` is a Python keyword, so keyword callers spell it `ret`.
        fields["return"] = fields.pop("ret")
    problems = Problems(source)
    found = parse_expectation(fields, "expect", problems, absent=absent)
    problems.raise_if_any()
    assert found is not None
    return found
