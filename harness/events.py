"""Tetragon's JSON export lines as typed events, and which of them a scenario caused.

One export line is one `GetEventsResponse`: a single key naming the event type
(`process_kprobe`, ...) next to `node_name` and `time`. `tetra getevents -o
json` prints byte-identical lines, so both sources parse the same way. The
flat view keeps what expectations talk about; `Event.raw` keeps everything.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger(__name__)

# Keys of an export line that sit beside the event itself.
ENVELOPE = frozenset(
    {"node_name", "time", "cluster_name", "node_labels", "aggregation_info"}
)

# Argument kinds by what their value is. Tetragon prints 64-bit integers
# (size_arg, long_arg) as JSON strings, as protojson does for every int64.
INT_KINDS = frozenset({"int_arg", "uint_arg", "size_arg", "long_arg"})
STRING_KINDS = frozenset(
    {
        "string_arg",
        "kernel_cap_t_arg",
        "cap_inheritable_arg",
        "cap_permitted_arg",
        "cap_effective_arg",
        "bpf_cmd_arg",
    }
)
BYTES_KINDS = frozenset({"bytes_arg", "truncated_bytes_arg"})
PATH_KINDS = frozenset({"file_arg", "path_arg", "linux_binprm_arg"})
# Kinds with named members (Tetragon's KprobeArgument oneof, as of v1.8).
STRUCT_KINDS = frozenset(
    {
        "sock_arg",
        "skb_arg",
        "sockaddr_arg",
        "sockaddrun_arg",
        "cred_arg",
        "process_credentials_arg",
        "capability_arg",
        "user_namespace_arg",
        "user_ns_arg",
        "module_arg",
        "net_dev_arg",
        "bpf_attr_arg",
        "bpf_map_arg",
        "bpf_prog_arg",
        "perf_event_arg",
        "syscall_id",
        "error_arg",
    }
)
ARG_KINDS = INT_KINDS | STRING_KINDS | BYTES_KINDS | PATH_KINDS | STRUCT_KINDS


class EventFormatError(HarnessError):
    """An export line is not a Tetragon event; names the file and line."""


@dataclass(frozen=True)
class Process:
    """The process fields of an event (Tetragon's `Process` message)."""

    exec_id: str
    parent_exec_id: str
    pid: int | None
    tid: int | None
    uid: int | None
    auid: int | None
    binary: str
    arguments: str
    cwd: str
    flags: str
    start_time: str

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Process:
        """Build from the `process` or `parent` object of an event."""

        def number(key: str) -> int | None:
            value = raw.get(key)
            return int(value) if value is not None else None

        return cls(
            exec_id=str(raw.get("exec_id", "")),
            parent_exec_id=str(raw.get("parent_exec_id", "")),
            pid=number("pid"),
            tid=number("tid"),
            uid=number("uid"),
            auid=number("auid"),
            binary=str(raw.get("binary", "")),
            # Empty arguments are left out of the JSON entirely.
            arguments=str(raw.get("arguments", "")),
            cwd=str(raw.get("cwd", "")),
            flags=str(raw.get("flags", "")),
            start_time=str(raw.get("start_time", "")),
        )


@dataclass(frozen=True)
class Arg:
    """One argument (or return value) with its kind, e.g. `file_arg`.

    `value` is the argument as one comparable value: an int for the integer
    kinds, a str for strings, bytes for byte buffers, the path for file-like
    kinds, None for other structured kinds. `fields` holds the structured
    kinds' members (a sock's addresses, a file's permission) as printed.
    """

    kind: str
    value: int | str | bytes | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Arg:
        """Build from one element of an event's `args` (or its `return`)."""
        label = str(raw.get("label", ""))
        kinds = [k for k in raw if k != "label"]
        if len(kinds) != 1:
            raise ValueError(f"argument with {len(kinds)} kinds: {dict(raw)}")
        kind = kinds[0]
        payload = raw[kind]
        if kind in INT_KINDS:
            return cls(kind, int(payload), {}, label)
        if kind in STRING_KINDS:
            return cls(kind, str(payload), {}, label)
        if kind == "bytes_arg":
            return cls(kind, base64.b64decode(payload), {}, label)
        fields = dict(payload) if isinstance(payload, Mapping) else {}
        if kind == "truncated_bytes_arg":
            data = base64.b64decode(fields.get("bytes_arg", ""))
            return cls(kind, data, fields, label)
        if kind in PATH_KINDS:
            return cls(kind, str(fields.get("path", "")), fields, label)
        return cls(kind, None, fields, label)

    @property
    def path(self) -> str | None:
        """The path of a file, path or binprm argument; None for other kinds."""
        if self.kind in PATH_KINDS and isinstance(self.value, str):
            return self.value
        return None

    @property
    def text(self) -> str | None:
        """The value as text when it is a string or a path, else None."""
        return self.value if isinstance(self.value, str) else None

    def show(self) -> str:
        """A short human rendering, as used in failure reports."""
        if isinstance(self.value, bytes):
            return f"{self.kind} {self.value.decode(errors='backslashreplace')!r}"
        if self.kind in PATH_KINDS:
            permission = self.fields.get("permission")
            extra = f" ({permission})" if permission else ""
            return f"{self.kind} {self.value}{extra}"
        if self.value is not None:
            return f"{self.kind} {self.value!r}"
        inner = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.kind} {{{inner}}}"

    def flat(self) -> dict[str, Any]:
        """A JSON-ready form (bytes as text), for golden files and artefacts."""
        value: Any = self.value
        if isinstance(value, bytes):
            value = value.decode(errors="backslashreplace")
        out: dict[str, Any] = {"kind": self.kind, "value": value}
        if self.fields and self.kind not in BYTES_KINDS:
            out["fields"] = dict(self.fields)
        if self.label:
            out["label"] = self.label
        return out


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time as Tetragon prints it."""
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text
    )
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    zone = "+00:00" if match[3] == "Z" else match[3]
    # datetime keeps microseconds only; Tetragon prints nanoseconds.
    seconds = datetime.fromisoformat(match[1] + zone).timestamp()
    nanos = int((match[2] or "0").ljust(9, "0"))
    return int(seconds) * 1_000_000_000 + nanos


@dataclass(frozen=True)
class Event:
    """One Tetragon event, flattened; `raw` is the whole export line."""

    type: str
    time: str
    time_ns: int
    node_name: str
    process: Process
    parent: Process | None
    function: str
    subsys: str
    event: str
    policy: str
    action: str
    args: tuple[Arg, ...]
    ret: Arg | None
    status: int | None
    signal: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    line: int = 0

    @property
    def hook(self) -> str:
        """What fired: the function, `subsys/event` for tracepoints, or ''."""
        if self.subsys or self.event:
            return f"{self.subsys}/{self.event}"
        return self.function

    @property
    def when(self) -> datetime:
        """The event time as a datetime (microsecond precision)."""
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=UTC)

    def short(self) -> str:
        """One line naming the event, its process and its arguments."""
        head = f"{self.type} {self.hook}".rstrip()
        who = f"{self.process.binary} {self.process.arguments}".rstrip()
        args = ", ".join(a.show() for a in self.args)
        ret = f" -> {self.ret.show()}" if self.ret else ""
        policy = f" [{self.policy}]" if self.policy else ""
        body = f" ({args}){ret}" if args or ret else ""
        return f"{head}{policy}{body} by {who!r} pid {self.process.pid}"

    def flat(self) -> dict[str, Any]:
        """The flat view without `raw`, JSON-ready (golden files, artefacts)."""
        out: dict[str, Any] = {
            "type": self.type,
            "time": self.time,
            "process": {
                "binary": self.process.binary,
                "arguments": self.process.arguments,
                "pid": self.process.pid,
                "uid": self.process.uid,
                "exec_id": self.process.exec_id,
                "parent_exec_id": self.process.parent_exec_id,
            },
        }
        optional: dict[str, Any] = {
            "function": self.function,
            "subsys": self.subsys,
            "event": self.event,
            "policy": self.policy,
            "action": self.action,
            "args": [a.flat() for a in self.args],
            "return": self.ret.flat() if self.ret else None,
            "status": self.status,
            "signal": self.signal,
        }
        out.update({k: v for k, v in optional.items() if v not in ("", [], None)})
        return out


def _hook_name(kind: str, body: Mapping[str, Any]) -> str:
    if kind == "process_uprobe":
        return str(body.get("symbol") or body.get("path", ""))
    return str(body.get("function_name", ""))


def parse_event(raw: Mapping[str, Any], line: int = 0) -> Event:
    """Build an Event from one decoded export line; ValueError if it is not one."""
    kinds = [k for k in raw if k not in ENVELOPE]
    if len(kinds) != 1 or not isinstance(raw[kinds[0]], Mapping):
        raise ValueError(f"expected one event key beside {sorted(ENVELOPE)}")
    kind = kinds[0]
    body: Mapping[str, Any] = raw[kind]
    parent = body.get("parent")
    ret = body.get("return")
    status = body.get("status")
    time = str(raw.get("time", ""))
    return Event(
        type=kind,
        time=time,
        time_ns=parse_time(time) if time else 0,
        node_name=str(raw.get("node_name", "")),
        process=Process.from_json(body.get("process") or {}),
        parent=Process.from_json(parent) if isinstance(parent, Mapping) else None,
        function=_hook_name(kind, body),
        subsys=str(body.get("subsys", "")),
        event=str(body.get("event", "")),
        policy=str(body.get("policy_name", "")),
        action=str(body.get("action", "")),
        args=tuple(Arg.from_json(a) for a in body.get("args") or ()),
        ret=Arg.from_json(ret) if isinstance(ret, Mapping) else None,
        status=int(status) if status is not None else None,
        signal=str(body.get("signal", "")),
        raw=raw,
        line=line,
    )


def parse_lines(
    lines: Iterable[str], source: str = "<events>", first_line: int = 1
) -> list[Event]:
    """Parse export lines; blank lines are skipped, anything else must be an event."""
    events = []
    for number, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            events.append(parse_event(json.loads(text), number))
        except (ValueError, TypeError, KeyError) as e:
            raise EventFormatError(
                f"{source}:{number}: not a Tetragon export line ({e}): {text[:120]!r}"
            ) from e
    return events


def read_export(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Events from byte `offset` of an export file, and the offset to resume from.

    Only complete lines are parsed: the agent may be writing the last one while
    the harness reads, so a line without its newline waits for the next call.
    """
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.debug("%s: %d bytes of an unfinished line left", path, len(data) - end)
    # Line numbers in errors count from `offset`, which the source names.
    source = f"{path}@{offset}" if offset else str(path)
    events = parse_lines(data[:end].decode(errors="replace").splitlines(), source)
    return events, offset + end


@dataclass(frozen=True)
class Window:
    """A span of guest wall-clock time, in nanoseconds since the epoch."""

    start_ns: int
    end_ns: int

    @classmethod
    def from_seconds(cls, start: float, end: float) -> Window:
        """From epoch seconds, as `date +%s.%N` prints them in the guest."""
        return cls(round(start * 1e9), round(end * 1e9))

    def __contains__(self, ns: object) -> bool:
        return isinstance(ns, int) and self.start_ns <= ns <= self.end_ns


def process_tree(events: Iterable[Event], roots: Iterable[str]) -> set[str]:
    """The exec ids of `roots` and of every process descended from them.

    Descent follows `parent_exec_id` of both the `process` and `parent`
    objects, so a process whose exec event was missed is still linked by
    the events of its children.
    """
    children: dict[str, set[str]] = {}
    for event in events:
        for proc in (event.process, event.parent):
            if proc is not None and proc.exec_id and proc.parent_exec_id:
                children.setdefault(proc.parent_exec_id, set()).add(proc.exec_id)
    tree: set[str] = set()
    todo = [r for r in roots if r]
    while todo:
        exec_id = todo.pop()
        if exec_id not in tree:
            tree.add(exec_id)
            todo.extend(children.get(exec_id, ()))
    return tree


def attribute(
    events: Sequence[Event],
    *,
    window: Window | None = None,
    pids: Iterable[int] = (),
    exec_ids: Iterable[str] = (),
    descendants: bool = True,
) -> list[Event]:
    """The events a workload caused: its processes (by pid or exec id) in `window`.

    Pids are only trusted inside the window, because the guest reuses them.
    With `descendants`, every process started below the workload counts too.
    """
    in_window = [e for e in events if window is None or e.time_ns in window]
    wanted_pids = set(pids)
    roots = set(exec_ids)
    roots.update(e.process.exec_id for e in in_window if e.process.pid in wanted_pids)
    tree = process_tree(events, roots) if descendants else roots
    return [e for e in in_window if e.process.exec_id in tree]


def counts(events: Iterable[Event]) -> dict[str, int]:
    """How many events of each type and hook, e.g. `process_kprobe fd_install`."""
    seen: dict[str, int] = {}
    for event in events:
        key = f"{event.type} {event.hook}".rstrip()
        seen[key] = seen.get(key, 0) + 1
    return seen
