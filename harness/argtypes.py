"""Tetragon argument types against C types: does a hook read what the policy says?

The agent itself only logs a warning when a policy's type does not match BTF
(and is stricter than it needs to be about integer spellings). Here a type
that reads a different object, or a pointer as a narrow integer, is a warning
(the hook loads and reports garbage), and an integer of another width is info.
"""

from __future__ import annotations

from harness.inventory import Param
from harness.policyschema import Severity

# Policy argument types that read a pointer to one kind of object.
POINTER_TYPES = {
    "file": ("struct file",),
    "path": ("struct path",),
    "dentry": ("struct dentry",),
    "sock": ("struct sock",),
    "skb": ("struct sk_buff",),
    "socket": ("struct socket",),
    "sockaddr": ("struct sockaddr",),
    "sockaddr_un": ("struct sockaddr_un", "struct sockaddr"),
    "cred": ("struct cred",),
    "linux_binprm": ("struct linux_binprm",),
    "load_info": ("struct load_info",),
    "module": ("struct module",),
    "net_device": ("struct net_device",),
    "bpf_attr": ("union bpf_attr",),
    "bpf_map": ("struct bpf_map",),
    "bpf_prog": ("struct bpf_prog",),
    "perf_event": ("struct perf_event",),
    "user_namespace": ("struct user_namespace",),
    "filename": ("struct filename",),
    "kiocb": ("struct kiocb",),
    "iov_iter": ("struct iov_iter",),
    "char_iovec": ("struct iovec",),
    "kernel_cap_t": ("kernel_cap_t", "struct kernel_cap_struct"),
    "cap_inheritable": ("kernel_cap_t", "struct kernel_cap_struct"),
    "cap_permitted": ("kernel_cap_t", "struct kernel_cap_struct"),
    "cap_effective": ("kernel_cap_t", "struct kernel_cap_struct"),
}
POLICY_INT_WIDTH = {
    **dict.fromkeys(("int8", "uint8", "sint8"), 1),
    **dict.fromkeys(("int16", "uint16", "sint16"), 2),
    **dict.fromkeys(("int", "int32", "uint32", "sint32", "fd", "capability"), 4),
    "bpf_cmd": 4,
    **dict.fromkeys(("long", "ulong", "int64", "uint64", "sint64", "size_t"), 8),
    "syscall64": 8,
}
KERNEL_INT_WIDTH = {
    **dict.fromkeys(("char", "signed char", "unsigned char", "_Bool", "bool"), 1),
    **dict.fromkeys(("short int", "short unsigned int"), 2),
    **dict.fromkeys(("int", "unsigned int"), 4),
    **dict.fromkeys(
        ("long int", "long unsigned int", "long long int", "long long unsigned int"), 8
    ),
}
# Spellings tracefs uses for the same integer types.
C_INT_ALIASES = {
    "long": "long int",
    "unsigned long": "long unsigned int",
    "unsigned": "unsigned int",
    "long long": "long long int",
    "unsigned long long": "long long unsigned int",
    "short": "short int",
    "unsigned short": "short unsigned int",
}
CHAR_POINTERS = ("char *", "unsigned char *", "signed char *")


def c_int(ctype: str) -> str:
    """An integer type in BTF's spelling (`unsigned long` -> `long unsigned int`)."""
    return C_INT_ALIASES.get(ctype, ctype)


def kernel_width(resolved: str) -> int | None:
    """Byte width of an integer (or enum) C type; None if it is not an integer."""
    if resolved.startswith("enum "):
        return 4
    return KERNEL_INT_WIDTH.get(c_int(resolved))


def _pointee(ctype: str) -> str:
    return ctype.replace("const ", "").removesuffix("*").strip()


def compat(ptype: str, shown: str, resolved: str) -> tuple[Severity, str] | None:
    """Whether reading a `shown` (`resolved`) value as `ptype` reads the right thing."""
    is_ptr = resolved.endswith("*")
    width = kernel_width(resolved)
    if ptype in POINTER_TYPES:
        wanted = POINTER_TYPES[ptype]
        if is_ptr and (_pointee(resolved) in wanted or _pointee(shown) in wanted):
            return None
        return "warning", f"a pointer to {wanted[0]}"
    if ptype == "string":
        if resolved in CHAR_POINTERS:
            return None
        if resolved == "struct filename *":
            return "warning", "a string (the type for `struct filename *` is filename)"
        return ("info" if resolved == "void *" else "warning"), "a C string"
    if ptype == "char_buf":
        if resolved in (*CHAR_POINTERS, "void *"):
            return None
        return "warning", "a buffer of bytes"
    if ptype == "const_buf":
        return None if is_ptr or "[" in resolved else ("warning", "a buffer")
    if ptype in POLICY_INT_WIDTH:
        bytes_ = POLICY_INT_WIDTH[ptype]
        if width is not None:
            if width == bytes_:
                return None
            return "info", f"a {bytes_}-byte integer (it has {width})"
        if is_ptr:
            if bytes_ == 8:
                return None
            return "warning", f"a {bytes_}-byte integer (it is a pointer)"
        return "warning", "an integer"
    return None


def split_decl(decl: str) -> Param:
    """A tracefs field declaration as a Param (`const char * filename`)."""
    ctype, _, name = decl.rpartition(" ")
    if "[" in name:
        ctype += name[name.index("[") :]
        name = name[: name.index("[")]
    return Param(ctype.strip(), ctype.strip(), name)
