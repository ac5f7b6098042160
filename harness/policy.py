"""Tetragon TracingPolicy files as typed hooks, with what is wrong in them as findings.

A policy file may hold several YAML documents. Each TracingPolicy or
TracingPolicyNamespaced becomes a `Policy` with its hooks (kprobes, fentries,
tracepoints, LSM hooks, uprobes, USDTs), lists and enforcers. Nothing in a
file makes the parser raise: a YAML error, an unknown key or a value of the
wrong type becomes a `PolicyFinding` and the rest of the document is still
read, so one bad hook does not hide the others.

Field names and allowed values follow Tetragon at 4fbfe2d7 (v1.8.0-pre), the
agent of the recorded runs, whose loader rejects unknown fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import yamlfile
from harness.errors import did_you_mean
from harness.policyschema import (
    ABI_PREFIXES,
    ACTIONS,
    ARG_TYPES,
    KINDS,
    KNOWN_PREFIXES,
    KPROBE_BAD_TYPES,
    LIST_TYPES,
    MATCH_ENUMS,
    MATCH_KEYS,
    MAX_ARG_INDEX,
    OPERATORS,
    SYSCALL_LIST_TYPES,
    PolicyFinding,
    Reader,
)


@dataclass(frozen=True)
class Arg:
    """One argument a hook reads: the position it reads and how it decodes it."""

    index: int
    type: str
    label: str = ""
    resolve: str = ""
    # `args[i]` of the hook, for messages.
    position: int = 0


@dataclass(frozen=True)
class MatchArg:
    """A matchArgs filter: the hook argument (position in `args`) it tests."""

    index: int
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Action:
    """One matchActions entry."""

    action: str
    arg_error: int | None = None


@dataclass(frozen=True)
class Selector:
    """The parts of a selector the hook checks read."""

    actions: tuple[Action, ...] = ()
    match_args: tuple[MatchArg, ...] = ()
    binaries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call:
    """One kernel symbol a kprobe attaches to, as the policy names it."""

    name: str
    syscall: bool


@dataclass(frozen=True)
class ListSpec:
    """A `spec.lists` entry."""

    name: str
    type: str
    values: tuple[str, ...] = ()
    pattern: str = ""

    @property
    def generated(self) -> bool:
        """Whether its values come from the running kernel, not the policy."""
        return self.type.startswith("generated_")


@dataclass(frozen=True)
class Hook:
    """Fields every hook has: where it is in the policy and what it reads."""

    section: str
    position: int
    args: tuple[Arg, ...]
    selectors: tuple[Selector, ...]

    @property
    def where(self) -> str:
        """Its key in the policy, as in `spec.kprobes[2]`."""
        return f"spec.{self.section}[{self.position}]"

    @property
    def actions(self) -> tuple[str, ...]:
        """Every action any selector of the hook takes."""
        return tuple(a.action for s in self.selectors for a in s.actions)


@dataclass(frozen=True)
class KprobeHook(Hook):
    """A kprobe (or fentry) on one call, or on every call of a list."""

    call: str
    syscall: bool
    calls: tuple[Call, ...]
    list_name: str = ""
    generated: ListSpec | None = None
    returns: bool = False
    return_arg: Arg | None = None
    return_arg_action: str = ""
    ignore_not_found: bool = False

    @property
    def label(self) -> str:
        """Short name for reports."""
        kind = "fentry" if self.section == "fentries" else "kprobe"
        return f"{kind} {self.call}"


@dataclass(frozen=True)
class TracepointHook(Hook):
    """A tracepoint (or raw tracepoint) `subsystem/event`."""

    subsystem: str
    event: str
    raw: bool = False

    @property
    def label(self) -> str:
        """Short name for reports."""
        kind = "raw_tracepoint" if self.raw else "tracepoint"
        return f"{kind} {self.subsystem}/{self.event}"


@dataclass(frozen=True)
class LsmHook(Hook):
    """A BPF LSM hook (`file_open` attaches to `bpf_lsm_file_open`)."""

    hook: str

    @property
    def label(self) -> str:
        """Short name for reports."""
        return f"lsm {self.hook}"


@dataclass(frozen=True)
class UprobeHook(Hook):
    """A uprobe (or USDT) in a user-space binary."""

    path: str
    symbols: tuple[str, ...] = ()
    usdt: str = ""

    @property
    def label(self) -> str:
        """Short name for reports."""
        if self.usdt:
            return f"usdt {self.path}:{self.usdt}"
        return f"uprobe {self.path}:{','.join(self.symbols) or '?'}"


AnyHook = KprobeHook | TracepointHook | LsmHook | UprobeHook


@dataclass(frozen=True)
class Policy:
    """One TracingPolicy document of a file, with its problems."""

    path: Path
    document: int
    kind: str
    name: str
    hooks: tuple[AnyHook, ...] = ()
    lists: tuple[ListSpec, ...] = ()
    enforcer_calls: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    findings: tuple[PolicyFinding, ...] = ()

    @property
    def id(self) -> str:
        """`file.yaml` or `file.yaml#1` for the second document of a file."""
        return f"{self.path}#{self.document}" if self.document else str(self.path)

    def list(self, name: str) -> ListSpec | None:
        """The list called `name` (with or without `list:`), if the policy has it."""
        name = name.removeprefix("list:")
        return next((x for x in self.lists if x.name == name), None)


def syscall_symbol(value: str, default_prefix: str) -> str | None:
    """The kernel symbol of a syscall list value (`sys_dup`, `i386/sys_dup`, ...)."""
    abi, _, name = value.rpartition("/")
    prefix = ABI_PREFIXES.get(abi, default_prefix) if abi else default_prefix
    if abi and abi not in ABI_PREFIXES:
        return None
    if name.startswith(KNOWN_PREFIXES):
        return name
    return prefix + name if name.startswith("sys_") else None


def _arg(r: Reader, obj: Any, where: str, position: int) -> Arg | None:
    data = r.mapping(obj, where, "arg")
    if not data:
        return None
    index = r.scalar(data, "index", where, int, None)
    type_ = r.scalar(data, "type", where, str, "auto")
    if index is None:
        r.add(f"{where}.index", "missing or not an integer", "type")
        return None
    if index < 0:
        r.add(f"{where}.index", f"must be at least 0, not {index}", "type")
        return None
    if type_ not in ARG_TYPES:
        r.add(f"{where}.type", f"unknown argument type {type_!r}", "arg-type-unknown")
    return Arg(
        index=index,
        type=type_,
        label=r.scalar(data, "label", where, str, ""),
        resolve=r.scalar(data, "resolve", where, str, ""),
        position=position,
    )


def _args(
    r: Reader, obj: Mapping[str, Any], where: str, key: str = "args"
) -> tuple[Arg, ...]:
    parsed = (
        _arg(r, a, f"{where}.{key}[{i}]", i)
        for i, a in enumerate(r.items(obj, key, where))
    )
    return tuple(a for a in parsed if a is not None)


def _match(r: Reader, item: Mapping[str, Any], where: str, keys: str) -> None:
    if not item:
        return
    enums = {"operator": OPERATORS[keys], **MATCH_ENUMS.get(keys, {})}
    for name, allowed in enums.items():
        if name not in item:
            if name == "operator" or keys == "matchNamespaces":
                r.add(f"{where}.{name}", "missing: Tetragon requires it", "enum")
            continue
        value = item[name]
        if value not in allowed:
            hint = did_you_mean(value, sorted(allowed))
            listed = hint or f" (allowed: {', '.join(sorted(allowed))})"
            why = f"{value!r} is no {name} of {keys}: Tetragon rejects the policy"
            r.add(f"{where}.{name}", why + listed, "enum")


def _selector(r: Reader, obj: Any, where: str) -> Selector:
    data = r.mapping(obj, where, "selector")
    for key, keys in MATCH_KEYS.items():
        for i, item in enumerate(r.items(data, key, where)):
            _match(
                r,
                r.mapping(item, f"{where}.{key}[{i}]", keys),
                f"{where}.{key}[{i}]",
                keys,
            )
    actions = []
    for i, item in enumerate(r.items(data, "matchActions", where)):
        at = f"{where}.matchActions[{i}]"
        act = r.mapping(item, at, "action")
        name = r.scalar(act, "action", at, str, "")
        if name not in ACTIONS:
            r.add(f"{at}.action", f"unknown action {name!r}", "action-unknown")
        actions.append(Action(name, r.scalar(act, "argError", at, int, None)))
    match_args = []
    for i, item in enumerate(r.items(data, "matchArgs", where)):
        if isinstance(item, dict) and isinstance(item.get("index", 0), int):
            values = r.strings(item, "values", f"{where}.matchArgs[{i}]")
            match_args.append(
                MatchArg(item.get("index", 0), str(item.get("operator", "")), values)
            )
    binaries = tuple(
        v
        for i, item in enumerate(r.items(data, "matchBinaries", where))
        if isinstance(item, dict)
        for v in r.strings(item, "values", f"{where}.matchBinaries[{i}]")
    )
    return Selector(tuple(actions), tuple(match_args), binaries)


def _selectors(r: Reader, obj: Mapping[str, Any], where: str) -> tuple[Selector, ...]:
    return tuple(
        _selector(r, s, f"{where}.selectors[{i}]")
        for i, s in enumerate(r.items(obj, "selectors", where))
    )


def _check_args(r: Reader, where: str, args: tuple[Arg, ...], kprobe: bool) -> None:
    for a in args:
        at = f"{where}.args[{a.position}]"
        if a.index > MAX_ARG_INDEX:
            r.add(
                f"{at}.index",
                f"index {a.index} is out of bounds: Tetragon reads indices 0 to "
                f"{MAX_ARG_INDEX} only",
                "arg-index-limit",
            )
        if kprobe and a.type in KPROBE_BAD_TYPES:
            r.add(
                f"{at}.type",
                f"type {a.type!r} is not allowed for kprobes",
                "arg-type-unknown",
            )


def _list_uses(
    r: Reader,
    where: str,
    args: tuple[Arg, ...],
    selectors: tuple[Selector, ...],
    lists: Mapping[str, ListSpec],
) -> None:
    """`list:NAME` in matchArgs values must name a syscall list read as syscall64."""
    for s_i, sel in enumerate(selectors):
        for m_i, m in enumerate(sel.match_args):
            at = f"{where}.selectors[{s_i}].matchArgs[{m_i}]"
            for value in m.values:
                if not value.startswith("list:"):
                    continue
                spec = lists.get(value[5:])
                arg = next((a for a in args if a.position == m.index), None)
                if spec is None:
                    r.add(at, f"{value} names no list of spec.lists", "list-unknown")
                elif arg is not None and arg.type != "syscall64":
                    r.add(
                        at,
                        f"uses {value}, which needs args[{m.index}] of type syscall64 "
                        f"(it is {arg.type}): Tetragon refuses to load it",
                        "list-arg-type",
                    )


def _calls(
    r: Reader, call: str, syscall: bool, lists: Mapping[str, ListSpec], where: str
) -> tuple[tuple[Call, ...], ListSpec | None]:
    """The symbols of a kprobe; a generated list is returned for later resolution."""
    if not call.startswith("list:"):
        return (Call(call, syscall),), None
    spec = lists.get(call[5:])
    if spec is None:
        r.add(f"{where}.call", f"{call} names no list of spec.lists", "list-unknown")
        return (), None
    if spec.generated:
        return (), spec
    # A syscall list turns every value into a syscall, whatever `syscall:` says.
    is_syscall = syscall or spec.type in SYSCALL_LIST_TYPES
    return tuple(Call(v, is_syscall) for v in spec.values), None


def _kprobe(
    r: Reader, obj: Any, where: str, section: str, lists: Mapping[str, ListSpec]
) -> KprobeHook | None:
    data = r.mapping(obj, where, "kprobe")
    call = r.scalar(data, "call", where, str, "")
    if not call:
        r.add(f"{where}.call", "missing: the function to probe", "call-missing")
        return None
    syscall = r.scalar(data, "syscall", where, bool, False)
    returns = r.scalar(data, "return", where, bool, False)
    ret = data.get("returnArg")
    return_arg = _arg(r, ret, f"{where}.returnArg", 0) if ret is not None else None
    if returns and return_arg is None:
        r.add(
            f"{where}.returnArg",
            "return: true without returnArg: Tetragon's schema rejects it",
            "return-arg-missing",
        )
    ignore = data.get("ignore")
    calls, generated = _calls(r, call, syscall, lists, where)
    args = _args(r, data, where)
    selectors = _selectors(r, data, where)
    _check_args(r, where, args, kprobe=True)
    _list_uses(r, where, args, selectors, lists)
    return KprobeHook(
        section=section,
        position=int(where.rsplit("[", 1)[1].rstrip("]")),
        args=args,
        selectors=selectors,
        call=call,
        syscall=syscall,
        calls=calls,
        list_name=call[5:] if call.startswith("list:") else "",
        generated=generated,
        returns=returns,
        return_arg=return_arg,
        return_arg_action=r.scalar(data, "returnArgAction", where, str, ""),
        ignore_not_found=isinstance(ignore, dict)
        and ignore.get("callNotFound") is True,
    )


def _tracepoint(
    r: Reader, obj: Any, where: str, position: int, lists: Mapping[str, ListSpec]
) -> TracepointHook | None:
    data = r.mapping(obj, where, "tracepoint")
    subsystem = r.scalar(data, "subsystem", where, str, "")
    event = r.scalar(data, "event", where, str, "")
    if not subsystem or not event:
        r.add(where, "tracepoint needs both subsystem and event", "tracepoint-missing")
        return None
    args = _args(r, data, where)
    selectors = _selectors(r, data, where)
    raw = r.scalar(data, "raw", where, bool, False)
    if raw:
        for a in args:
            # Raw tracepoints read up to six arguments (Tetragon checks > 5).
            if a.index > 5:
                r.add(
                    f"{where}.args[{a.position}].index",
                    f"raw tracepoints read up to 5 arguments, not index {a.index}",
                    "arg-index-limit",
                )
    _list_uses(r, where, args, selectors, lists)
    return TracepointHook(
        "tracepoints", position, args, selectors, subsystem, event, raw
    )


def _lsmhook(r: Reader, obj: Any, where: str, position: int) -> LsmHook | None:
    data = r.mapping(obj, where, "lsmhook")
    hook = r.scalar(data, "hook", where, str, "")
    if not hook:
        r.add(f"{where}.hook", "missing: the LSM hook name", "call-missing")
        return None
    args = _args(r, data, where)
    _check_args(r, where, args, kprobe=False)
    return LsmHook("lsmhooks", position, args, _selectors(r, data, where), hook)


def _uprobe(
    r: Reader, obj: Any, where: str, position: int, usdt: bool
) -> UprobeHook | None:
    data = r.mapping(obj, where, "usdt" if usdt else "uprobe")
    path = r.scalar(data, "path", where, str, "")
    if not path:
        r.add(f"{where}.path", "missing: the binary to probe", "call-missing")
        return None
    section = "usdts" if usdt else "uprobes"
    args = _args(r, data, where)
    selectors = _selectors(r, data, where)
    if usdt:
        name = f"{data.get('provider', '')}:{data.get('name', '')}"
        return UprobeHook(section, position, args, selectors, path, usdt=name)
    symbols = r.strings(data, "symbols", where)
    return UprobeHook(section, position, args, selectors, path, symbols)


def _lists(r: Reader, spec: Mapping[str, Any]) -> dict[str, ListSpec]:
    lists: dict[str, ListSpec] = {}
    for i, item in enumerate(r.items(spec, "lists", "spec")):
        where = f"spec.lists[{i}]"
        data = r.mapping(item, where, "list")
        name = r.scalar(data, "name", where, str, "")
        type_ = r.scalar(data, "type", where, str, "")
        if type_.lower() not in LIST_TYPES:
            known = ", ".join(sorted(t for t in LIST_TYPES if t))
            r.add(
                f"{where}.type",
                f"unknown list type {type_!r} (known: {known})",
                "list-type",
            )
        values = r.strings(data, "values", where)
        pattern = r.scalar(data, "pattern", where, str, "")
        if type_.startswith("generated_") and values:
            r.add(where, f"generated list {name!r} must not have values", "list-type")
        if type_ == "generated_ftrace" and not pattern:
            r.add(where, f"generated_ftrace list {name!r} needs a pattern", "list-type")
        lists[name] = ListSpec(name, type_.lower(), values, pattern)
    return lists


def _hooks(
    r: Reader, spec: Mapping[str, Any], lists: Mapping[str, ListSpec]
) -> list[AnyHook]:
    hooks: list[AnyHook | None] = []
    for section in ("kprobes", "fentries"):
        hooks += [
            _kprobe(r, k, f"spec.{section}[{i}]", section, lists)
            for i, k in enumerate(r.items(spec, section, "spec"))
        ]
    hooks += [
        _tracepoint(r, t, f"spec.tracepoints[{i}]", i, lists)
        for i, t in enumerate(r.items(spec, "tracepoints", "spec"))
    ]
    hooks += [
        _lsmhook(r, h, f"spec.lsmhooks[{i}]", i)
        for i, h in enumerate(r.items(spec, "lsmhooks", "spec"))
    ]
    for usdt, section in ((False, "uprobes"), (True, "usdts")):
        hooks += [
            _uprobe(r, u, f"spec.{section}[{i}]", i, usdt)
            for i, u in enumerate(r.items(spec, section, "spec"))
        ]
    return [h for h in hooks if h is not None]


def parse_document(data: Any, path: Path, document: int = 0) -> Policy | None:
    """A policy from one YAML document; None if it is not a TracingPolicy at all."""
    r = Reader(path, document)
    if data is None:
        return None
    top = r.mapping(data, "(document)", "document")
    kind = top.get("kind")
    if kind not in KINDS:
        api = top.get("apiVersion")
        if not (isinstance(api, str) and api.startswith("cilium.io/")):
            return None
        # A cilium.io document of no policy kind is a typo, not another file.
        hint = did_you_mean(kind, KINDS) or f" (policy kinds: {', '.join(KINDS)})"
        r.add("kind", f"{kind!r} is not a policy kind of Tetragon{hint}", "kind")
        return Policy(path, document, "", "", findings=tuple(r.findings))
    name = ""
    metadata = top.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        name = metadata["name"]
    else:
        r.add("metadata.name", "missing: every policy needs a name", "name-missing")
    spec = r.mapping(top.get("spec"), "spec", "spec")
    lists = _lists(r, spec)
    hooks = _hooks(r, spec, lists)
    enforcer_calls = tuple(
        call
        for i, e in enumerate(r.items(spec, "enforcers", "spec"))
        for call in r.strings(
            r.mapping(e, f"spec.enforcers[{i}]", "enforcer"), "calls", "spec"
        )
    )
    options = {
        str(o.get("name")): str(o.get("value", ""))
        for i, o in enumerate(r.items(spec, "options", "spec"))
        if r.mapping(o, f"spec.options[{i}]", "option")
    }
    if not hooks and not spec.get("loader"):
        r.add("spec", "the policy has no hooks", "no-hooks", "warning")
    return Policy(
        path,
        document,
        str(kind),
        name,
        tuple(hooks),
        tuple(lists.values()),
        enforcer_calls,
        options,
        tuple(r.findings),
    )


def load(path: Path) -> list[Policy]:
    """Every TracingPolicy document of a file (a stub with findings if it is broken)."""
    try:
        documents = yamlfile.documents(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = " ".join(str(e).split())
        finding = PolicyFinding(
            path, 0, "(file)", "error", "yaml", f"cannot read: {reason}"
        )
        return [Policy(path, 0, "", "", findings=(finding,))]
    found = []
    for index, document in enumerate(documents):
        policy = parse_document(document.data, path, index)
        if policy is None:
            continue
        repeated = tuple(
            PolicyFinding(path, index, d.key, "error", "duplicate-key", d.message)
            for d in document.duplicates
        )
        found.append(replace(policy, findings=repeated + policy.findings))
    if not found:
        finding = PolicyFinding(
            path,
            0,
            "(file)",
            "info",
            "not-a-policy",
            f"no {' or '.join(KINDS)} document in the file",
        )
        return [Policy(path, 0, "", "", findings=(finding,))]
    return found


def discover(paths: Iterable[Path]) -> list[Path]:
    """Policy files under `paths` (directories searched recursively), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                p
                for p in path.rglob("*")
                if p.suffix in (".yaml", ".yml") and p.is_file()
            ]
        else:
            found.append(path)
    return sorted(dict.fromkeys(found))


def load_all(paths: Iterable[Path]) -> list[Policy]:
    """Every policy under `paths`."""
    return [p for path in discover(paths) for p in load(path)]
