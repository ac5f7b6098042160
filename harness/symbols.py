"""Which kernel symbol a policy's call names on an arch, the way Tetragon decides.

`syscall: true` adds the arch's prefix (`sys_openat` is `__x64_sys_openat` on
x86_64 and `__arm64_sys_openat` on arm64), a call that already carries
another arch's prefix is refused, and a value of a `syscalls` list may name
its ABI (`i386/sys_dup`).
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.arches import ARCHES
from harness.policy import Call, KprobeHook, Policy, syscall_symbol


def abi_prefix(arch: str) -> str:
    """The prefix Tetragon puts before `sys_NAME` on an arch (`__x64_`)."""
    return ARCHES[arch].syscall_prefix.removesuffix("sys_")


# Syscall symbol prefixes Tetragon knows, and whose they are.
PREFIX_OWNERS = {abi_prefix(a): a for a in ARCHES} | {"__ia32_": "i386 (x86 compat)"}
WRONG_PREFIX = "wrong prefix: "


def foreign_prefix(name: str, own: str) -> str:
    """The syscall prefix of another arch that `name` starts with, or ""."""
    return next((p for p in PREFIX_OWNERS if p != own and name.startswith(p)), "")


def call_symbol(call: Call, arch: str, from_list: bool) -> tuple[str | None, str]:
    """The symbol a call attaches to on `arch`, or None and why, as Tetragon does.

    A direct syscall call gets the arch prefix unless it already has it, and
    another arch's prefix is refused; a `syscalls` list value may name its ABI.
    """
    if not call.syscall:
        return call.name, ""
    prefix = abi_prefix(arch)
    if from_list:
        sym = syscall_symbol(call.name, prefix)
        return sym, "" if sym else "is not a syscall name (sys_NAME or ABI/sys_NAME)"
    if foreign := foreign_prefix(call.name, prefix):
        bare = call.name[len(foreign) :]
        return None, (
            f"{WRONG_PREFIX}{call.name} has the {PREFIX_OWNERS[foreign]} syscall "
            f"prefix; on {arch} the symbol is {prefix}{bare} (write {bare})"
        )
    return (call.name if call.name.startswith(prefix) else prefix + call.name), ""


def static_symbols(policies: Iterable[Policy], arch: str) -> list[str]:
    """Every kprobe symbol the policies name on `arch` (generated lists aside)."""
    return list(
        dict.fromkeys(
            sym
            for p in policies
            for h in p.hooks
            if isinstance(h, KprobeHook)
            for call in h.calls
            if (sym := call_symbol(call, arch, bool(h.list_name))[0])
        )
    )
