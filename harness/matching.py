"""Expected events and the matcher that holds the agent's events against them.

An expectation names an event (type, hook, process, arguments, return value,
action, policy) and how often it must occur. When one is not met, the report
names it, the closest event seen with the fields that differ, and how many
events there were. Closeness is a weighted count of differing fields in which
the event type and the hook dominate, so the closest event is the one a reader
would have meant. `harness.expectations` reads the YAML form (docs/scenarios.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.arches import ARCHES
from harness.events import (
    BYTES_KINDS,
    INT_KINDS,
    PATH_KINDS,
    STRING_KINDS,
    Arg,
    Event,
    Process,
    counts,
)

# How much one differing field moves an event away from an expectation.
WEIGHTS = {
    "type": 1000,
    "hook": 300,
    "policy": 60,
    "process": 20,
    "args.length": 20,
    "arg.kind": 15,
    "arg.value": 10,
    "return": 10,
    "parent": 8,
    "action": 5,
    "status": 5,
}
SYSCALL_PREFIXES = tuple(a.syscall_prefix for a in ARCHES.values())


@dataclass(frozen=True)
class Diff:
    """One field where an event differs from an expectation."""

    field: str
    expected: str
    actual: str
    weight: int
    note: str = ""

    def render(self) -> str:
        """`args[1].path: expected '/etc/shadow', got '/etc/passwd'`."""
        note = f" ({self.note})" if self.note else ""
        return f"{self.field}: expected {self.expected}, got {self.actual}{note}"


@dataclass(frozen=True)
class StrMatch:
    """A string test; every operator given must hold (`full` is equality)."""

    full: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    regex: str | None = None

    def matches(self, value: object) -> bool:
        """Whether `value` (a str, else compared as its str()) passes."""
        if value is None:
            return False
        text = value if isinstance(value, str) else str(value)
        return (
            (self.full is None or text == self.full)
            and (self.prefix is None or text.startswith(self.prefix))
            and (self.suffix is None or text.endswith(self.suffix))
            and (self.contains is None or self.contains in text)
            and (self.regex is None or re.search(self.regex, text) is not None)
        )

    def describe(self) -> str:
        """`'/etc/passwd'` or `prefix '/etc'`."""
        if self.full is not None and not (
            self.prefix or self.suffix or self.contains or self.regex
        ):
            return repr(self.full)
        ops = [
            f"{name} {value!r}"
            for name, value in (
                ("full", self.full),
                ("prefix", self.prefix),
                ("suffix", self.suffix),
                ("contains", self.contains),
                ("regex", self.regex),
            )
            if value is not None
        ]
        return " and ".join(ops)


@dataclass(frozen=True)
class NumMatch:
    """A number test: equality, or an inclusive range with either end open."""

    equal: int | None = None
    min: int | None = None
    max: int | None = None

    def matches(self, value: object) -> bool:
        """Whether `value` (an int, or a string of digits) passes."""
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                return False
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return (
            (self.equal is None or value == self.equal)
            and (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
        )

    def describe(self) -> str:
        """`3`, `>= 0`, `1..3`."""
        if self.equal is not None:
            return str(self.equal)
        if self.min is not None and self.max is not None:
            return f"{self.min}..{self.max}"
        if self.min is not None:
            return f">= {self.min}"
        if self.max is not None:
            return f"<= {self.max}"
        return "any number"


FieldMatch = StrMatch | NumMatch


def _field_diff(
    where: str, matcher: FieldMatch | None, actual: object, weight: int
) -> list[Diff]:
    if matcher is None or matcher.matches(actual):
        return []
    shown = "nothing" if actual is None else repr(actual)
    return [Diff(where, matcher.describe(), shown, weight)]


@dataclass(frozen=True)
class ArgMatch:
    """Tests on one argument; an ArgMatch with no test accepts any argument.

    `int` accepts every integer kind (int, uint, size, long), `path` every
    file-like kind, `text` a string argument's value or a file-like path.
    `bytes` sees a byte buffer as text, `hex` as lower-case hex pairs joined
    by spaces (`7f 45 4c 46`), so a test can only match whole bytes.
    Members of structured kinds that Tetragon leaves out read as 0 or ''.
    """

    kind: str | None = None
    int: NumMatch | None = None
    string: StrMatch | None = None
    path: StrMatch | None = None
    text: StrMatch | None = None
    permission: StrMatch | None = None
    bytes: StrMatch | None = None
    hex: StrMatch | None = None
    fields: tuple[tuple[str, FieldMatch], ...] = ()

    def diffs(self, arg: Arg, where: str) -> list[Diff]:
        """The fields of `arg` this matcher rejects, named under `where`."""
        value = WEIGHTS["arg.value"]
        if self.kind is not None and arg.kind != self.kind:
            return [Diff(f"{where}.kind", self.kind, arg.show(), WEIGHTS["arg.kind"])]
        out: list[Diff] = []
        checks: list[tuple[str, FieldMatch | None, object, bool]] = [
            ("int", self.int, arg.value, arg.kind in INT_KINDS),
            ("string", self.string, arg.value, arg.kind in STRING_KINDS),
            ("path", self.path, arg.path, arg.kind in PATH_KINDS),
            ("text", self.text, arg.text, arg.text is not None),
            ("permission", self.permission, arg.fields.get("permission"), True),
            ("bytes", self.bytes, _as_text(arg.value), arg.kind in BYTES_KINDS),
            ("hex", self.hex, as_hex(arg.value), arg.kind in BYTES_KINDS),
        ]
        for name, matcher, actual, kind_ok in checks:
            if matcher is None:
                continue
            if not kind_ok:
                expected = f"{name} {matcher.describe()}"
                out.append(Diff(where, expected, arg.show(), WEIGHTS["arg.kind"]))
            else:
                out += _field_diff(f"{where}.{name}", matcher, actual, value)
        for name, matcher in self.fields:
            default: object = 0 if isinstance(matcher, NumMatch) else ""
            actual = arg.fields.get(name, default)
            out += _field_diff(f"{where}.{name}", matcher, actual, value)
        return out

    def describe(self) -> str:
        """A short rendering: `path '/etc/passwd'`, `sock {dport 8080}`, `*`."""
        parts = [f"kind {self.kind}"] if self.kind else []
        for name in ("int", "string", "path", "text", "permission", "bytes", "hex"):
            matcher = getattr(self, name)
            if matcher is not None:
                label = "" if name == "text" else f"{name} "
                parts.append(f"{label}{matcher.describe()}")
        if self.fields:
            inner = ", ".join(f"{k} {m.describe()}" for k, m in self.fields)
            parts.append(f"{{{inner}}}")
        return " ".join(parts) or "*"


def _as_text(value: object) -> str | None:
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else None


def as_hex(value: object) -> str | None:
    """A byte buffer as `hex` tests see it: `7f 45 4c 46`; None for other values."""
    return value.hex(" ") if isinstance(value, bytes) else None


ListMode = Literal["ordered", "unordered", "subset"]


def _assign(ok: list[list[bool]]) -> list[int | None]:
    """A maximum matching of expected items (rows) to actual items (columns)."""
    owner: dict[int, int] = {}

    def place(row: int, seen: set[int]) -> bool:
        for col, fits in enumerate(ok[row]):
            if fits and col not in seen:
                seen.add(col)
                if col not in owner or place(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    for row in range(len(ok)):
        place(row, set())
    rows: list[int | None] = [None] * len(ok)
    for col, row in owner.items():
        rows[row] = col
    return rows


@dataclass(frozen=True)
class ListMatch:
    """Argument list test: positional (`ordered`), any order, or a subset."""

    mode: ListMode
    items: tuple[ArgMatch, ...]

    def diffs(self, args: Sequence[Arg], where: str = "args") -> list[Diff]:
        """What keeps `args` from passing, named `args[i]...`."""
        n, m = len(self.items), len(args)
        out: list[Diff] = []
        if self.mode != "subset" and n != m:
            out.append(Diff(f"{where}.length", str(n), str(m), WEIGHTS["args.length"]))
        if self.mode == "ordered":
            for i, item in enumerate(self.items):
                if i < m:
                    out += item.diffs(args[i], f"{where}[{i}]")
            return out
        ok = [[not item.diffs(arg, "") for arg in args] for item in self.items]
        for i, col in enumerate(_assign(ok)):
            if col is not None:
                continue
            near = min(
                ((sum(d.weight for d in self.items[i].diffs(a, "")), a) for a in args),
                key=lambda pair: pair[0],
                default=None,
            )
            actual = f"closest {near[1].show()}" if near else "no arguments"
            weight = near[0] if near else WEIGHTS["args.length"]
            out.append(
                Diff(
                    f"{where}.{self.mode}[{i}]",
                    self.items[i].describe(),
                    actual,
                    weight,
                )
            )
        return out

    def describe(self) -> str:
        """`[*, path '/etc/passwd']`, prefixed by the mode unless positional."""
        inner = ", ".join(item.describe() for item in self.items)
        return f"[{inner}]" if self.mode == "ordered" else f"{self.mode} [{inner}]"


@dataclass(frozen=True)
class ProcessMatch:
    """Tests on an event's `process` or `parent`."""

    binary: StrMatch | None = None
    arguments: StrMatch | None = None
    cwd: StrMatch | None = None
    pid: NumMatch | None = None
    uid: NumMatch | None = None
    auid: NumMatch | None = None

    def diffs(self, proc: Process | None, where: str, weight: int) -> list[Diff]:
        """What keeps `proc` from passing, named `process.binary` and so on."""
        out: list[Diff] = []
        for name in ("binary", "arguments", "cwd", "pid", "uid", "auid"):
            matcher = getattr(self, name)
            actual = getattr(proc, name) if proc is not None else None
            out += _field_diff(f"{where}.{name}", matcher, actual, weight)
        return out

    def describe(self, where: str) -> list[str]:
        """`process.binary '/bin/cat'` for each test given."""
        names = ("binary", "arguments", "cwd", "pid", "uid", "auid")
        return [
            f"{where}.{n} {getattr(self, n).describe()}"
            for n in names
            if getattr(self, n) is not None
        ]


@dataclass(frozen=True)
class ExpectedEvent:
    """What one expected event looks like; fields left None are not tested.

    `syscall` is a syscall name without the arch's symbol prefix (`openat`):
    syscall kprobes report `__x64_sys_openat` on x86_64 and
    `__arm64_sys_openat` on arm64, so portable scenarios name the syscall.
    """

    type: str
    function: StrMatch | None = None
    syscall: str | None = None
    tracepoint: StrMatch | None = None
    policy: StrMatch | None = None
    action: StrMatch | None = None
    process: ProcessMatch | None = None
    parent: ProcessMatch | None = None
    args: ListMatch | None = None
    ret: ArgMatch | None = None
    status: NumMatch | None = None

    def diffs(self, event: Event, syscall_prefix: str | None = None) -> list[Diff]:
        """Every field of `event` this expectation rejects."""
        w = WEIGHTS
        out: list[Diff] = []
        if event.type != self.type:
            out.append(Diff("type", self.type, event.type, w["type"]))
        out += self._hook_diffs(event, syscall_prefix)
        out += _field_diff("policy", self.policy, event.policy, w["policy"])
        if self.process is not None:
            out += self.process.diffs(event.process, "process", w["process"])
        if self.parent is not None:
            out += self.parent.diffs(event.parent, "parent", w["parent"])
        if self.args is not None:
            out += self.args.diffs(event.args)
        if self.ret is not None:
            if event.ret is None:
                expected = self.ret.describe()
                out.append(Diff("return", expected, "no return value", w["return"]))
            else:
                out += self.ret.diffs(event.ret, "return")
        out += _field_diff("action", self.action, event.action, w["action"])
        out += _field_diff("status", self.status, event.status, w["status"])
        return out

    def _hook_diffs(self, event: Event, syscall_prefix: str | None) -> list[Diff]:
        weight = WEIGHTS["hook"]
        if self.syscall is not None:
            prefixes = (syscall_prefix,) if syscall_prefix else SYSCALL_PREFIXES
            names = [p + self.syscall for p in prefixes]
            if event.function not in names:
                expected = " or ".join(repr(n) for n in names)
                return [Diff("function", expected, repr(event.function), weight)]
        if self.tracepoint is not None:
            return _field_diff("tracepoint", self.tracepoint, event.hook, weight)
        found = _field_diff("function", self.function, event.function, weight)
        full = self.function.full if self.function else None
        if found and full and event.function.endswith(full.removeprefix("sys_")):
            # A near miss: closer than any other hook, and worth a hint.
            note = "syscall kprobes report the arch's symbol; write `syscall: NAME`"
            found = [
                Diff(d.field, d.expected, d.actual, weight // 2, note) for d in found
            ]
        return found

    def matches(self, event: Event, syscall_prefix: str | None = None) -> bool:
        """Whether `event` passes every test."""
        return not self.diffs(event, syscall_prefix)

    def describe(self) -> str:
        """A one-line summary of what is expected."""
        parts = [self.type]
        if self.syscall is not None:
            parts.append(f"syscall {self.syscall}")
        for name in ("function", "tracepoint", "policy", "action", "status"):
            matcher = getattr(self, name)
            if matcher is not None:
                parts.append(f"{name} {matcher.describe()}")
        for proc, where in ((self.process, "process"), (self.parent, "parent")):
            if proc is not None:
                parts += proc.describe(where)
        if self.args is not None:
            parts.append(f"args {self.args.describe()}")
        if self.ret is not None:
            parts.append(f"return {self.ret.describe()}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Count:
    """How many matching events are allowed: at least `min`, at most `max`."""

    min: int = 1
    max: int | None = None

    def ok(self, n: int) -> bool:
        """Whether `n` matching events satisfy the count."""
        return n >= self.min and (self.max is None or n <= self.max)

    def describe(self) -> str:
        """`at least 1`, `exactly 2`, `none`, `1 to 3`."""
        if self.max is None:
            return f"at least {self.min}"
        if self.max == 0:
            return "none"
        if self.min == self.max:
            return f"exactly {self.min}"
        return f"{self.min} to {self.max}" if self.min else f"at most {self.max}"


@dataclass(frozen=True)
class Expectation:
    """A named expected event with its count."""

    name: str
    event: ExpectedEvent
    count: Count = field(default_factory=Count)


@dataclass(frozen=True)
class Failure:
    """One unmet expectation, with the evidence a reader needs."""

    expectation: Expectation
    problem: str
    events_seen: int
    closest: Event | None = None
    closest_index: int = -1
    diffs: tuple[Diff, ...] = ()
    offending: tuple[Event, ...] = ()

    def render(self) -> str:
        """A few indented lines: what, why, the closest event and its diffs."""
        exp = self.expectation
        lines = [f"{exp.name}: {exp.event.describe()}", f"  {self.problem}"]
        if self.closest is not None:
            where = f"#{self.closest_index + 1}"
            if self.closest.line:
                where += f" (line {self.closest.line})"
            lines.append(f"  closest event {where}: {self.closest.short()}")
            lines += [f"    {d.render()}" for d in self.diffs]
        for event in self.offending[:5]:
            lines.append(f"  offending: {event.short()}")
        if len(self.offending) > 5:
            lines.append(f"  ... and {len(self.offending) - 5} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class MatchResult:
    """The verdict on one case: every failure, and what was seen."""

    failures: tuple[Failure, ...]
    events_seen: int
    seen: Mapping[str, int]

    @property
    def ok(self) -> bool:
        """True when every expectation was met."""
        return not self.failures

    def render(self) -> str:
        """The failure report (empty when everything matched)."""
        if self.ok:
            return ""
        seen = ", ".join(f"{k} x{n}" for k, n in sorted(self.seen.items())) or "none"
        blocks = [f.render() for f in self.failures]
        head = f"{len(self.failures)} expectation(s) not met"
        tail = f"events seen ({self.events_seen}): {seen}"
        return "\n".join([head, *blocks, tail])


def closest(
    expected: ExpectedEvent, events: Sequence[Event], syscall_prefix: str | None = None
) -> tuple[int, tuple[Diff, ...]]:
    """Index of the event nearest to `expected` and its diffs; (-1, ()) if none."""
    best = -1
    best_diffs: tuple[Diff, ...] = ()
    best_score = 0
    for index, event in enumerate(events):
        diffs = tuple(expected.diffs(event, syscall_prefix))
        score = sum(d.weight for d in diffs)
        if best < 0 or score < best_score:
            best, best_diffs, best_score = index, diffs, score
    return best, best_diffs


def _missing(
    exp: Expectation,
    events: Sequence[Event],
    problem: str,
    syscall_prefix: str | None,
) -> Failure:
    index, diffs = closest(exp.event, events, syscall_prefix)
    near = events[index] if index >= 0 else None
    return Failure(exp, problem, len(events), near, index, diffs)


def _check_one(
    exp: Expectation,
    events: Sequence[Event],
    hits: list[int],
    syscall_prefix: str | None,
) -> Failure | None:
    n = len(hits)
    if exp.count.ok(n):
        return None
    total = len(events)
    if n == 0:
        problem = f"not seen: expected {exp.count.describe()}, none of {total} events"
        return _missing(exp, events, problem, syscall_prefix)
    offending = tuple(events[i] for i in hits)
    if exp.count.max == 0:
        problem = f"must not appear, seen {n} time(s) among {total} events"
    else:
        problem = f"seen {n} time(s), expected {exp.count.describe()} ({total} events)"
    return Failure(exp, problem, total, offending=offending)


def _check_order(
    expect: Sequence[Expectation],
    events: Sequence[Event],
    hits: Sequence[list[int]],
    syscall_prefix: str | None,
) -> list[Failure]:
    """Earliest-first subsequence check; greedy is optimal for subsequences."""
    failures = []
    cursor = -1
    previous = ""
    for exp, found in zip(expect, hits, strict=True):
        if not found or exp.count.min == 0:
            continue
        after = [i for i in found if i > cursor]
        if len(after) < exp.count.min:
            problem = (
                f"out of order: seen {len(found)} time(s), {len(after)} of them "
                f"after {previous} matched event #{cursor + 1} "
                f"(needed {exp.count.min})"
            )
            later = events[cursor + 1 :]
            index, diffs = closest(exp.event, later, syscall_prefix)
            near = later[index] if index >= 0 else None
            failures.append(
                Failure(exp, problem, len(events), near, index + cursor + 1, diffs)
            )
            continue
        cursor = after[exp.count.min - 1]
        previous = exp.name
    return failures


def check(
    events: Sequence[Event],
    expect: Iterable[Expectation] = (),
    expect_not: Iterable[Expectation] = (),
    *,
    ordered: bool = False,
    syscall_prefix: str | None = None,
) -> MatchResult:
    """Hold `events` (in time order) against the expectations of one case.

    Each expectation counts its matching events on its own, so one event may
    satisfy several. With `ordered`, `expect` must also be met in sequence;
    order is judged once every count holds.
    `syscall_prefix` (the arch's, e.g. `__x64_sys_`) narrows `syscall:` tests;
    without it any known arch prefix is accepted.
    """
    events = sorted(events, key=lambda e: e.time_ns)
    expect = list(expect)
    expect_not = [Expectation(e.name, e.event, Count(0, 0)) for e in expect_not]
    everything = [*expect, *expect_not]
    hits = [
        [i for i, ev in enumerate(events) if exp.event.matches(ev, syscall_prefix)]
        for exp in everything
    ]
    failures = [
        failure
        for exp, found in zip(everything, hits, strict=True)
        if (failure := _check_one(exp, events, found, syscall_prefix)) is not None
    ]
    if ordered and not failures:
        failures = _check_order(expect, events, hits[: len(expect)], syscall_prefix)
    return MatchResult(tuple(failures), len(events), counts(events))
