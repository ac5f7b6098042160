"""The TracingPolicy schema as Tetragon 4fbfe2d7 (v1.8.0-pre) reads it, and a
reader that reports every deviation from it as a finding instead of raising.

The agent decodes policies strictly (an unknown field or a value of the wrong
type rejects the whole policy), so the reader is as strict, but keeps going
to report every problem of a file at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import did_you_mean

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
# Tetragon reads at most five arguments per hook (indices 0 to 4).
MAX_ARG_INDEX = 4
ARG_TYPES = _words(
    "auto int sint8 int8 uint8 sint16 int16 uint16 uint32 sint32 int32 ulong uint64 "
    "size_t long sint64 int64 char_buf char_iovec skb sock sockaddr socket "
    "sockaddr_un string fd file filename path nop bpf_attr perf_event bpf_map "
    "user_namespace capability kiocb iov_iter cred const_buf load_info module "
    "syscall64 kernel_cap_t cap_inheritable cap_permitted cap_effective "
    "linux_binprm data_loc net_device bpf_cmd dentry bpf_prog"
)
# Types the kprobe loader refuses although the schema allows them.
KPROBE_BAD_TYPES = frozenset({"auto", "syscall64"})
ACTIONS = _words(
    "Post Sigkill Override GetUrl DnsLookup NoPost Signal TrackSock UntrackSock "
    "NotifyEnforcer CleanupEnforcerNotification Set"
)
LIST_TYPES = frozenset({"", "syscalls", "generated_syscalls", "generated_ftrace"})
SYSCALL_LIST_TYPES = frozenset({"syscalls", "generated_syscalls"})
# Syscall symbol prefix of each ABI a `syscalls` list value may name.
ABI_PREFIXES = {
    "x64": "__x64_",
    "i386": "__ia32_",
    "arm64": "__arm64_",
    "arm32": "__arm64_",
}
KNOWN_PREFIXES = ("__x64_", "__arm64_", "__ia32_")

_ARG = "index type resolve sizeArgIndex returnCopy maxData label source btfType "
_MATCH = "operator values"
KEYS: dict[str, frozenset[str]] = {
    name: frozenset(keys.split())
    for name, keys in {
        "document": "apiVersion kind metadata spec",
        "spec": "kprobes tracepoints loader uprobes lsmhooks usdts fentries "
        "podSelector containerSelector hostSelector nodeSelector lists enforcers "
        "options selectorsMacros",
        "kprobe": "call return syscall message args data returnArg returnArgAction "
        "selectors tags ignore",
        "arg": _ARG + "btfTypeModule",
        "selector": "label matchPIDs matchArgs matchData matchActions "
        "matchReturnArgs matchReturnActions matchBinaries matchParentBinaries "
        "matchNamespaces matchNamespaceChanges matchCapabilities "
        "matchCapabilityChanges matchWorkloads macros",
        "action": "action argUrl argFqdn argError argSig argSock argIndex argValue "
        "argRegs argNewSymbol argNewAddr argNewOffset rateLimit rateLimitScope "
        "kernelStackTrace userStackTrace imaHash",
        "matchArgs": "index args " + _MATCH,
        "matchBinaries": "followChildren " + _MATCH,
        "matchPIDs": "isNamespacePID followForks " + _MATCH,
        "matchNamespaces": "namespace " + _MATCH,
        "matchNamespaceChanges": _MATCH,
        "matchCapabilities": "type isNamespaceCapability " + _MATCH,
        "tracepoint": "subsystem event message args selectors tags raw",
        "uprobe": "path btfPath symbols offsets addrs refCtrOffsets message "
        "selectors args data tags return returnArg binaryDigests ignore",
        "usdt": "path btfPath provider name tags message args selectors",
        "lsmhook": "hook message args selectors tags",
        "list": "name values type pattern validated",
        "enforcer": "calls",
        "option": "name value",
    }.items()
}
_IN = _words("In NotIn")
# The operator each kind of match accepts (the CRD's enums: any other value
# fails the agent's validation, and the whole policy with it).
OPERATORS: dict[str, frozenset[str]] = {
    "matchArgs": _words(
        "Equal NotEqual Prefix NotPrefix Postfix NotPostfix GreaterThan LessThan GT "
        "LT Mask SPort NotSPort SPortPriv NotSportPriv DPort NotDPort DPortPriv "
        "NotDPortPriv SAddr NotSAddr DAddr NotDAddr Protocol Family State InMap "
        "NotInMap CapabilitiesGained InRange NotInRange SubString SubStringIgnCase "
        "CelExpr FileType NotFileType"
    ),
    "matchBinaries": _words("In NotIn Prefix NotPrefix Postfix NotPostfix"),
    "matchPIDs": _IN,
    "matchNamespaces": _IN,
    "matchNamespaceChanges": _IN,
    "matchCapabilities": _IN,
}
# Other enum fields of a match, by the KEYS name of its mapping.
MATCH_ENUMS: dict[str, dict[str, frozenset[str]]] = {
    "matchNamespaces": {
        "namespace": _words(
            "Uts Ipc Mnt Pid PidForChildren Net Time TimeForChildren Cgroup User"
        )
    },
    "matchCapabilities": {"type": _words("Effective Inheritable Permitted")},
}
MATCH_KEYS = {
    "matchArgs": "matchArgs",
    "matchData": "matchArgs",
    "matchReturnArgs": "matchArgs",
    "matchBinaries": "matchBinaries",
    "matchParentBinaries": "matchBinaries",
    "matchPIDs": "matchPIDs",
    "matchNamespaces": "matchNamespaces",
    "matchNamespaceChanges": "matchNamespaceChanges",
    "matchCapabilities": "matchCapabilities",
    "matchCapabilityChanges": "matchCapabilities",
}


@dataclass(frozen=True)
class PolicyFinding:
    """Something wrong or notable in a policy file, found without any kernel."""

    path: Path
    document: int
    where: str
    severity: Severity
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}#{self.document}: {self.where}: {self.message}"


class Reader:
    """Walks one document, collecting findings instead of raising."""

    def __init__(self, path: Path, document: int) -> None:
        self.path = path
        self.document = document
        self.findings: list[PolicyFinding] = []

    def add(
        self, where: str, message: str, code: str, severity: Severity = "error"
    ) -> None:
        """Record a finding at `where` (a dotted key such as spec.kprobes[0])."""
        self.findings.append(
            PolicyFinding(self.path, self.document, where, severity, code, message)
        )

    def mapping(self, value: Any, where: str, keys: str) -> dict[str, Any]:
        """`value` as a mapping whose keys are checked against KEYS[keys]."""
        if not isinstance(value, dict):
            self.add(where, f"must be a mapping, not {type(value).__name__}", "type")
            return {}
        for key in value:
            if key not in KEYS[keys]:
                hint = did_you_mean(key, sorted(KEYS[keys]))
                self.add(
                    f"{where}.{key}",
                    f"unknown field {key!r}: Tetragon rejects the policy{hint}",
                    "unknown-field",
                )
        return value

    def items(self, obj: Mapping[str, Any], key: str, where: str) -> Iterator[Any]:
        """The items of the list at `obj[key]` (none if absent or not a list)."""
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.add(f"{where}.{key}", "must be a list", "type")
            return
        yield from value

    def scalar(
        self, obj: Mapping[str, Any], key: str, where: str, kind: type, default: Any
    ) -> Any:
        """`obj[key]` if it has type `kind`, else `default` and a finding."""
        value = obj.get(key, default)
        # YAML reads `yes` as a bool and `1` as an int; Tetragon's JSON decoder
        # is as strict about them as this.
        if value is default or (
            isinstance(value, kind) and not _bool_as_int(value, kind)
        ):
            return value
        self.add(
            f"{where}.{key}",
            f"must be {kind.__name__}, not {type(value).__name__} {value!r}",
            "type",
        )
        return default

    def strings(self, obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        """The list of strings at `obj[key]` (numbers read as strings)."""
        values = []
        for i, v in enumerate(self.items(obj, key, where)):
            if isinstance(v, str | int) and not isinstance(v, bool):
                values.append(str(v))
            else:
                self.add(f"{where}.{key}[{i}]", "must be a string", "type")
        return tuple(values)


def _bool_as_int(value: Any, kind: type) -> bool:
    return kind is int and isinstance(value, bool)
