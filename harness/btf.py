"""Kernel BTF to function prototypes, through Debian's `bpftool`.

`bpftool -j btf dump file X` is the kernel's own BTF decoder, kept in step with
every new BTF kind (ENUM64, TYPE_TAG, DECL_TAG, ...), and it takes 0.2 s on a
4 MB vmlinux BTF. A reader of our own would have to follow those additions by
hand, so the harness uses the tool and only renders the types it prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

BPFTOOL_ENV_HINT = "install Debian's `bpftool` package (apt-get install bpftool)"
# Raw tracepoints have no format file: their arguments are the parameters of
# these typedefs' prototypes, after the leading `void *__data`.
RAW_TP_PREFIX = "btf_trace_"

TypeTable = Mapping[int, Mapping[str, Any]]


@dataclass(frozen=True)
class BTFSummary:
    """What the hook checks need from BTF, with prototypes kept encoded."""

    # function name -> encoded prototype (see `encode_proto`)
    functions: dict[str, str]
    # raw tracepoint event -> encoded prototype without `void *__data`
    raw_tracepoints: dict[str, str]
    # typedef name -> the C type it stands for, typedefs and qualifiers removed
    typedefs: dict[str, str]


def dump_json(btf_file: Path) -> list[dict[str, Any]]:
    """The BTF types of a raw BTF file, as bpftool prints them."""
    tool = shutil.which("bpftool") or (
        "/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None
    )
    if tool is None:
        raise HarnessError(f"bpftool not found: {BPFTOOL_ENV_HINT}")
    proc = subprocess.run(
        [tool, "-j", "btf", "dump", "file", str(btf_file)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(
            f"bpftool could not read BTF from {btf_file} (status {proc.returncode}):"
            f"\n{proc.stderr.decode(errors='replace').strip()}"
        )
    types: list[dict[str, Any]] = json.loads(proc.stdout)["types"]
    return types


def render(types: TypeTable, type_id: int, resolve: bool = False) -> str:
    """A C spelling of a type; with `resolve`, typedefs and qualifiers removed."""
    suffix = ""
    seen = 0
    while True:
        seen += 1
        if type_id == 0:
            return "void" + suffix
        t = types.get(type_id)
        if t is None or seen > 64:
            return "?" + suffix
        kind, name = str(t["kind"]), str(t.get("name", "(anon)"))
        if kind == "PTR":
            suffix = " *" + suffix
            type_id = t["type_id"]
        elif kind in ("CONST", "VOLATILE", "RESTRICT") and not resolve:
            inner = render(types, t["type_id"])
            if suffix and not inner.endswith("*"):
                return f"{kind.lower()} {inner}{suffix}"
            return inner + suffix
        elif kind in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            type_id = t["type_id"]
        elif kind == "TYPEDEF":
            if not resolve:
                return name + suffix
            type_id = t["type_id"]
        elif kind in ("STRUCT", "UNION"):
            return f"{kind.lower()} {name}{suffix}"
        elif kind == "FWD":
            return f"{t.get('fwd_kind', 'struct')} {name}{suffix}"
        elif kind in ("ENUM", "ENUM64"):
            return f"enum {name}{suffix}"
        elif kind == "ARRAY":
            return f"{render(types, t['type_id'], resolve)}[{t['nr_elems']}]{suffix}"
        elif kind == "FUNC_PROTO":
            return "func" + suffix
        else:
            return name + suffix


def _param(types: TypeTable, type_id: int, name: str) -> str:
    shown = render(types, type_id)
    resolved = render(types, type_id, resolve=True)
    return f"{shown}|{'' if resolved == shown else resolved}|{name}"


def encode_proto(types: TypeTable, proto: Mapping[str, Any], skip: int = 0) -> str:
    """A prototype as `ret|resolved|;type|resolved|name;...` (resolved blank if same).

    One string per function keeps the cached inventory small and fast to load;
    `inventory.Prototype.decode` splits it only for the functions checked.
    """
    parts = [_param(types, proto["ret_type_id"], "")]
    parts += [
        _param(types, p["type_id"], p.get("name", ""))
        for p in proto.get("params", [])[skip:]
    ]
    return ";".join(parts)


def summarise(types_list: list[dict[str, Any]]) -> BTFSummary:
    """Prototypes of every function and raw tracepoint, and the typedef table."""
    types = {t["id"]: t for t in types_list}
    functions: dict[str, str] = {}
    raw: dict[str, str] = {}
    typedefs: dict[str, str] = {}
    for t in types_list:
        kind = t["kind"]
        if kind == "FUNC":
            proto = types.get(t["type_id"])
            # Static functions of the same name in several units: the first
            # one is the one Tetragon validates against, so keep that.
            if proto is not None and t["name"] not in functions:
                functions[t["name"]] = encode_proto(types, proto)
        elif kind == "TYPEDEF":
            name = t["name"]
            typedefs.setdefault(name, render(types, t["type_id"], resolve=True))
            if name.startswith(RAW_TP_PREFIX):
                target = types.get(t["type_id"], {})
                proto = types.get(target.get("type_id", -1), {})
                if target.get("kind") == "PTR" and proto.get("kind") == "FUNC_PROTO":
                    event = name[len(RAW_TP_PREFIX) :]
                    raw[event] = encode_proto(types, proto, skip=1)
    return BTFSummary(functions, raw, typedefs)


def summarise_file(btf_file: Path) -> BTFSummary:
    """`summarise` of a raw BTF file (such as /sys/kernel/btf/vmlinux)."""
    return summarise(dump_json(btf_file))
