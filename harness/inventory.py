"""Kernel inventory: what a booted kernel offers to hooks, captured once and cached.

One inventory per kernel, arch and exact package version: probe-able functions
(available_filter_functions), text symbols, the kprobe blacklist, function
prototypes and raw tracepoints from BTF, tracepoint formats, active LSMs, the
kernel config, the error-injection list, the guest's files, and the verdict of
real `kprobe_events` probes on a sample of symbols. It is stored as gzipped
JSON holding only what the hook checks read, with large sets joined into one
string each so that loading the whole matrix stays well under a second.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness import btf, proberules
from harness.cache import Cache
from harness.errors import GuestError, HarnessError
from harness.kernels import Kernel
from harness.proberules import ProbeRules, SymbolTables, predict_probe
from harness.vm import VM

log = logging.getLogger(__name__)

FORMAT = 1
TRACING = "/sys/kernel/tracing"
# Symbols every capture tests for real, beyond the sample: the facts the
# checks are known to depend on (issue 4's corpus facts among them).
DEFAULT_PROBES = (
    "dev_queue_xmit",
    "__dev_queue_xmit",
    "inet_csk_accept",
    "fd_install",
    "security_file_open",
    "tcp_connect",
)
TEXT_TYPES = frozenset("TtWw")
PADDING_PREFIXES = ("__pfx_", "__cfi_")
SYSCALL_RE = re.compile(r"^__(x64|ia32|arm64)_sys_")


class InventoryError(HarnessError):
    """An inventory could not be captured, read or written."""


@dataclass(frozen=True)
class Param:
    """One parameter (or the return value) of a prototype."""

    type: str
    # The C type with typedefs and qualifiers removed (`size_t` -> `long unsigned int`).
    resolved: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.type} {self.name}".strip()


@dataclass(frozen=True)
class Prototype:
    """A function's return type and parameters, as BTF describes them."""

    ret: Param
    params: tuple[Param, ...]

    @staticmethod
    def decode(text: str) -> Prototype:
        """Decode `btf.encode_proto`'s form."""
        parts = []
        for chunk in text.split(";"):
            shown, resolved, name = chunk.split("|", 2)
            parts.append(Param(shown, resolved or shown, name))
        return Prototype(parts[0], tuple(parts[1:]))

    def __str__(self) -> str:
        return f"{self.ret.type} ({', '.join(str(p) for p in self.params)})"


@dataclass(frozen=True)
class Phase:
    """One capture phase: its outcome and duration, for reports."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class Inventory:
    """What one kernel on one arch offers to hooks."""

    kernel_id: str
    name: str
    arch: str
    release: str
    version: str
    filter_functions: frozenset[str]
    text_symbols: frozenset[str]
    duplicate_symbols: frozenset[str]
    # Names sharing an address with a traceable function (see traceable_aliases).
    aliases: frozenset[str]
    blacklist: frozenset[str]
    error_injection: frozenset[str]
    lsms: tuple[str, ...]
    config: Mapping[str, str]
    functions: Mapping[str, str]
    raw_tracepoints: Mapping[str, str]
    typedefs: Mapping[str, str]
    tracepoints: Mapping[str, str]
    probes: Mapping[str, str]
    rules: ProbeRules
    guest_files: frozenset[str]
    phases: tuple[Phase, ...] = ()
    captured_at: float = 0.0
    _protos: dict[str, Prototype | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @cached_property
    def tables(self) -> SymbolTables:
        """The symbol sets `predict_probe` reads."""
        return SymbolTables(
            self.text_symbols,
            self.filter_functions,
            self.blacklist,
            self.duplicate_symbols,
            self.aliases,
        )

    def probe_refusal(self, symbol: str) -> str:
        """Why the kernel would refuse a kprobe on `symbol`, by the learned rules."""
        return predict_probe(symbol, self.tables, self.rules)

    @property
    def has_btf(self) -> bool:
        """Whether the kernel exposes BTF (/sys/kernel/btf/vmlinux)."""
        return bool(self.functions)

    def prototype(self, function: str) -> Prototype | None:
        """The BTF prototype of a function, or None if BTF does not know it."""
        if function not in self._protos:
            text = self.functions.get(function)
            self._protos[function] = Prototype.decode(text) if text else None
        return self._protos[function]

    def raw_tracepoint(self, event: str) -> Prototype | None:
        """The arguments of a raw tracepoint (from its `btf_trace_` typedef)."""
        text = self.raw_tracepoints.get(event)
        return Prototype.decode(text) if text else None

    def tracepoint_fields(self, subsys_event: str) -> tuple[str, ...] | None:
        """A tracepoint's format fields (`type name`), common fields first."""
        text = self.tracepoints.get(subsys_event)
        return tuple(text.split(";")) if text is not None else None

    def config_value(self, option: str) -> str | None:
        """A kernel config option's value (`y`, `m`, a string), None if unset."""
        key = option if option.startswith("CONFIG_") else f"CONFIG_{option}"
        return self.config.get(key)

    def enabled(self, option: str) -> bool:
        """Whether a boolean kernel config option is `y`."""
        return self.config_value(option) == "y"

    @cached_property
    def _clones(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for sym in self.text_symbols:
            if "." in sym:
                index.setdefault(sym.split(".", 1)[0], []).append(sym)
        return index

    def clones(self, function: str) -> list[str]:
        """Compiler clones of a function (`name.isra.0`, `name.cold`), sorted."""
        return sorted(self._clones.get(function, []))

    def resolve_typedef(self, ctype: str) -> str:
        """A type with a leading typedef name replaced by what it stands for."""
        base = ctype.replace("const ", "").strip()
        stars = base.count("*")
        name = base.rstrip(" *")
        resolved = self.typedefs.get(name)
        return f"{resolved}{' ' + '*' * stars if stars else ''}" if resolved else base


# -- parsing what the guest gives -------------------------------------------


def parse_kallsyms(text: str) -> tuple[frozenset[str], frozenset[str], list[list[str]]]:
    """Text symbols of /proc/kallsyms, those whose name repeats, and name groups
    that share one address."""
    seen: set[str] = set()
    dups: set[str] = set()
    at: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        # Weak definitions (W) are functions too: 7.x emits the bpf_lsm_*
        # hooks that way. `__pfx_`/`__cfi_` symbols are padding before every
        # function (x86 since 6.2), not functions: skipping them halves the set.
        if (
            len(parts) >= 3
            and parts[1] in TEXT_TYPES
            and not parts[2].startswith(PADDING_PREFIXES)
        ):
            name = parts[2]
            if name in seen:
                dups.add(name)
            seen.add(name)
            at.setdefault(parts[0], []).append(name)
    groups = [names for names in at.values() if len(names) > 1]
    return frozenset(seen), frozenset(dups), groups


def parse_filter_functions(text: str) -> frozenset[str]:
    """Names in available_filter_functions, without module tags or placeholders."""
    names = set()
    for line in text.splitlines():
        name = line.split(" ", 1)[0].strip()
        # Records ftrace could not resolve are listed under this placeholder.
        if name and not name.startswith("__ftrace_invalid_address__"):
            names.add(name)
    return frozenset(names)


def parse_blacklist(text: str) -> frozenset[str]:
    """Function names of debugfs kprobes/blacklist (`start-end<TAB>name`)."""
    return frozenset(
        parts[-1] for line in text.splitlines() if len(parts := line.split()) >= 2
    )


def parse_error_injection(text: str) -> frozenset[str]:
    """Function names of debugfs error_injection/list (`name<TAB>ERRNO`)."""
    return frozenset(line.split()[0] for line in text.splitlines() if line.strip())


def parse_config(text: str) -> dict[str, str]:
    """The set options of a kernel .config (unset options are left out)."""
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value.strip('"')
    return config


FIELD_RE = re.compile(r"^\s*field:(?P<decl>[^;]+);")
HEADER_RE = re.compile(r"^==> (?P<path>\S+)/format <==$")


def parse_formats(text: str) -> dict[str, str]:
    """`subsys/event` -> its fields joined by `;`, from `head` over format files."""
    formats: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if header := HEADER_RE.match(line):
            current = formats.setdefault(header["path"], [])
        elif current is not None and (match := FIELD_RE.match(line)):
            current.append(" ".join(match["decl"].split()))
    return {name: ";".join(fields) for name, fields in formats.items()}


# -- capture in a guest ----------------------------------------------------------


def _read(vm: VM, path: str, required: bool = True) -> bytes:
    result = vm.run(["cat", path], timeout=120)
    if result.status != 0:
        if required:
            raise GuestError(
                f"{vm.kernel.id}: cannot read {path} in the guest: "
                + result.stderr.decode(errors="replace").strip()
            )
        return b""
    return result.stdout


def host_config(kernel: Kernel) -> str | None:
    """The kernel's .config from its package, if the host has it."""
    candidates = [kernel.config] if kernel.config else []
    # Cache entries unpacked before the manifest recorded `config` still hold
    # the file beside the image.
    candidates += [
        kernel.image.parent / f"config-{kernel.release}",
        kernel.image.parent / "config",
    ]
    for path in candidates:
        if path is not None and path.is_file():
            return path.read_text(errors="replace")
    return None


class _Phases:
    """Times capture phases and keeps their outcome."""

    def __init__(self) -> None:
        self.done: list[Phase] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        start = time.monotonic()
        try:
            yield detail
        except BaseException:
            self.done.append(Phase(name, False, time.monotonic() - start))
            raise
        self.done.append(Phase(name, True, time.monotonic() - start, "; ".join(detail)))


def _guest_config(vm: VM, kernel: Kernel) -> dict[str, str]:
    text = host_config(kernel)
    if text is None:
        raw = _read(vm, "/proc/config.gz", required=False)
        text = gzip.decompress(raw).decode(errors="replace") if raw else ""
    return parse_config(text)


@dataclass(frozen=True)
class _GuestText:
    """The guest files an inventory is made of, as read."""

    kallsyms: str
    filters: str
    blacklist: str
    injection: str
    lsm: str
    formats: str
    files: str
    btf: bytes


def _read_guest(vm: VM) -> _GuestText:
    def text(path: str, required: bool = True) -> str:
        return _read(vm, path, required).decode(errors="replace")

    return _GuestText(
        kallsyms=text("/proc/kallsyms"),
        filters=text(f"{TRACING}/available_filter_functions"),
        # Both are debugfs files that exist only with their config options.
        blacklist=text("/sys/kernel/debug/kprobes/blacklist", False),
        injection=text("/sys/kernel/debug/error_injection/list", False),
        lsm=text("/sys/kernel/security/lsm", False),
        # One `head` over every format file: a shell loop of `cat`s takes 20 s
        # under TCG, this takes a fraction of one.
        formats=vm.shell(
            f"cd {TRACING}/events && head -n 100000 */*/format", timeout=300
        ).text,
        files=vm.shell(
            "find / -xdev \\( -type f -o -type l \\) 2>/dev/null", timeout=120
        ).text,
        btf=_read(vm, "/sys/kernel/btf/vmlinux", required=False),
    )


def capture(vm: VM, kernel: Kernel, probe_symbols: Iterable[str] = ()) -> Inventory:
    """Read everything the hook checks need from a booted guest."""
    phase = _Phases()
    with phase("read"):
        raw = _read_guest(vm)
        config = _guest_config(vm, kernel)
        text, dups, groups = parse_kallsyms(raw.kallsyms)
        filters = parse_filter_functions(raw.filters)
        blacklist = parse_blacklist(raw.blacklist)
    with phase("btf") as detail:
        summary = _summarise_btf(raw.btf)
        detail.append(f"{len(summary.functions)} functions")
    with phase("probe") as detail:
        aliases = proberules.traceable_aliases(groups, filters)
        tables = SymbolTables(text, filters, blacklist, dups, aliases)
        sample = proberules.probe_sample(tables)
        # Syscall entry points outside the filter list are few and policies
        # name them often (a generated syscall list takes all): test them all.
        odd = sorted(s for s in text - filters if SYSCALL_RE.match(s))
        wanted = [*sample, *DEFAULT_PROBES, *odd, *probe_symbols]
        probes = proberules.run_probes(vm, list(dict.fromkeys(wanted)))
        rules = proberules.learn(probes, sample, tables)
        detail.append(
            f"{len(probes)} symbols; rules agreed {rules.agreed}/{rules.sampled}"
        )
    return Inventory(
        kernel_id=kernel.id,
        name=kernel.name,
        arch=kernel.arch,
        release=kernel.release,
        version=kernel.version,
        filter_functions=filters,
        text_symbols=text,
        duplicate_symbols=dups,
        aliases=tables.aliases,
        blacklist=blacklist,
        error_injection=parse_error_injection(raw.injection),
        lsms=tuple(x for x in raw.lsm.strip().split(",") if x),
        config=config,
        functions=summary.functions,
        raw_tracepoints=summary.raw_tracepoints,
        typedefs=summary.typedefs,
        tracepoints=parse_formats(raw.formats),
        probes=probes,
        rules=rules,
        guest_files=frozenset(raw.files.split()),
        phases=tuple(phase.done),
        captured_at=time.time(),
    )


def _summarise_btf(data: bytes) -> btf.BTFSummary:
    if not data:
        return btf.BTFSummary({}, {}, {})
    with tempfile.NamedTemporaryFile(prefix="vmlinux-btf-") as tmp:
        tmp.write(data)
        tmp.flush()
        return btf.summarise_file(Path(tmp.name))


# -- storage ---------------------------------------------------------------------


def _join(names: Iterable[str]) -> str:
    return "\n".join(sorted(names))


def _split(text: str) -> frozenset[str]:
    return frozenset(text.split("\n")) if text else frozenset()


SETS = (
    "filter_functions",
    "text_symbols",
    "duplicate_symbols",
    "aliases",
    "blacklist",
    "error_injection",
    "guest_files",
)
MAPS = ("config", "functions", "raw_tracepoints", "typedefs", "tracepoints", "probes")
SCALARS = ("kernel_id", "name", "arch", "release", "version", "captured_at")


def to_json(inv: Inventory) -> dict[str, Any]:
    """The JSON form of an inventory."""
    data: dict[str, Any] = {"format": FORMAT}
    data |= {k: getattr(inv, k) for k in SCALARS}
    data |= {k: _join(getattr(inv, k)) for k in SETS}
    data |= {k: dict(getattr(inv, k)) for k in MAPS}
    data["lsms"] = list(inv.lsms)
    data["rules"] = vars(inv.rules)
    data["phases"] = [vars(p) for p in inv.phases]
    return data


def from_json(data: Mapping[str, Any]) -> Inventory:
    """An inventory from its JSON form; a different format is an error."""
    if data.get("format") != FORMAT:
        raise InventoryError(
            f"inventory format {data.get('format')!r} is not {FORMAT}; delete it to "
            "capture it again"
        )
    sets = {k: _split(data[k]) for k in SETS}
    return Inventory(
        kernel_id=data["kernel_id"],
        name=data["name"],
        arch=data["arch"],
        release=data["release"],
        version=data["version"],
        filter_functions=sets["filter_functions"],
        text_symbols=sets["text_symbols"],
        duplicate_symbols=sets["duplicate_symbols"],
        aliases=sets["aliases"],
        blacklist=sets["blacklist"],
        error_injection=sets["error_injection"],
        lsms=tuple(data["lsms"]),
        config=data["config"],
        functions=data["functions"],
        raw_tracepoints=data["raw_tracepoints"],
        typedefs=data["typedefs"],
        tracepoints=data["tracepoints"],
        probes=data["probes"],
        rules=ProbeRules(**data["rules"]),
        guest_files=sets["guest_files"],
        phases=tuple(Phase(**p) for p in data["phases"]),
        captured_at=data["captured_at"],
    )


def save(inv: Inventory, path: Path) -> None:
    """Write an inventory as gzipped JSON (callers publish it atomically)."""
    raw = json.dumps(to_json(inv), separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))


def load(path: Path) -> Inventory:
    """Read an inventory written by `save`."""
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise InventoryError(f"{path}: unreadable inventory ({e}); delete it") from e
    return from_json(data)


def inventory_path(cache: Cache, kernel_id: str, version: str) -> Path:
    """Where the inventory of a kernel (`6.1-arm64`, exact version) is cached."""
    return cache.path("inventory", f"v{FORMAT}", f"{kernel_id}-{version}.json.gz")


def cached_paths(cache: Cache, kernel_id: str) -> list[Path]:
    """Cached inventories of a kernel id (`6.1-arm64`), any version, newest last."""
    directory = cache.path("inventory", f"v{FORMAT}")
    found = directory.glob(f"{kernel_id}-*.json.gz") if directory.is_dir() else []
    # `6.1-x86_64-6.1.176-1` must not match kernel id `6.1`; ids end at the arch.
    exact = [p for p in found if p.name[len(kernel_id) + 1 :][:1].isdigit()]
    return sorted(exact, key=lambda p: p.stat().st_mtime)


def ensure(
    cache: Cache,
    kernel: Kernel,
    boot: Callable[[], contextlib.AbstractContextManager[VM]],
    probe_symbols: Iterable[str] = (),
) -> Inventory:
    """The cached inventory of `kernel`, captured in a guest from `boot()` if absent."""
    entry = inventory_path(cache, kernel.id, kernel.version)
    if entry.is_file():
        with contextlib.suppress(InventoryError):
            return load(entry)

    def build(tmp: Path) -> None:
        with boot() as vm:
            inv = capture(vm, kernel, probe_symbols)
        save(inv, tmp)
        log.info(
            "inventory of %s (%s) captured: %s",
            kernel.id,
            kernel.version,
            ", ".join(f"{p.name} {p.seconds:.1f} s" for p in inv.phases),
        )

    # A cached entry that does not load was dropped above; rebuild it.
    return load(cache.file(entry, build, lambda p: p.stat().st_size > 0))
