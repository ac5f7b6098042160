"""Workload steps of a scenario case and their rendering for the guest's busybox sh.

The guest has only busybox, installed as symlinks in /bin. Applets are run by
absolute path: started by bare name from busybox's own shell they re-execute
busybox, and their events then show `/proc/self/exe` instead of the applet.
Every step renders to one self-contained command line (wrappers for another
user or new namespaces start a fresh shell, which has no helper functions).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.expectations import Problems
from harness.initramfs import ETC

APPLETS = "/bin"
ACTIONS = ("run", "exec", "read", "write", "open", "unlink", "connect", "ptrace")
MODIFIERS = ("user", "namespaces", "exit")
# unshare flags per namespace; a new pid namespace needs a fork to enter it and
# its own /proc to show it.
NAMESPACES = {
    "mount": ("--mount",),
    "uts": ("--uts",),
    "ipc": ("--ipc",),
    "net": ("--net",),
    "pid": ("--pid", "--fork", "--mount-proc"),
    "user": ("--user", "--map-root-user"),
}
OPEN_MODES = ("read", "write", "append")
# The /proc file whose open checks each ptrace access mode against its process:
# mem with PTRACE_MODE_ATTACH, environ with PTRACE_MODE_READ (both FSCREDS).
PTRACE_FILES = {"attach": "mem", "read": "environ"}
# A safety net only: the step kills the process it started as its target.
TARGET_SECONDS = 60
PROTOCOLS = ("tcp", "udp")
FAMILIES = {"ipv4": "127.0.0.1", "ipv6": "::1"}
DEFAULT_PORT = 8080
# Safety nets only: a hung listener or client must not outlive the case.
LISTENER_SECONDS = 60
CLIENT_SECONDS = 30
# nslookup keeps retrying an unanswered query for 5 s; its connect and send
# are done in the first milliseconds.
UDP_SECONDS = 3
# How often (10 ms apart) to look for the listener before giving up.
LISTEN_POLLS = 3000
LISTENER_MISSING = 98
STEP_FAILED = 97
# What the script prints on stderr when a step ends with the wrong status.
FAILED_STEP = re.compile(r"^harness: (step \d+ \(.*\) exited \d+, expected \S+)$", re.M)


def _guest_users() -> dict[str, int]:
    users = {}
    for line in ETC["etc/passwd"].decode().splitlines():
        name, _, uid, *_ = line.split(":")
        users[name] = int(uid)
    return users


# The accounts of the guest image (harness/initramfs.py writes /etc/passwd).
GUEST_USERS = _guest_users()


@dataclass(frozen=True)
class Run:
    """A shell command line, run as written."""

    command: str

    def render(self) -> str:
        """The command line itself."""
        return self.command

    def describe(self) -> str:
        """`run: <command>`."""
        return f"run {self.command}"


@dataclass(frozen=True)
class Exec:
    """A binary executed with arguments (argv[0] is the binary's path)."""

    argv: tuple[str, ...]

    def render(self) -> str:
        """The argv, shell-quoted."""
        return shlex.join(self.argv)

    def describe(self) -> str:
        """`exec <argv>`."""
        return f"exec {shlex.join(self.argv)}"


@dataclass(frozen=True)
class ReadFile:
    """Read a whole file (busybox cat)."""

    path: str

    def render(self) -> str:
        """`/bin/cat PATH > /dev/null`."""
        return f"{APPLETS}/cat {shlex.quote(self.path)} > /dev/null"

    def describe(self) -> str:
        """`read PATH`."""
        return f"read {self.path}"


@dataclass(frozen=True)
class WriteFile:
    """Write text to a file, truncating or appending (busybox tee opens it)."""

    path: str
    data: str
    append: bool = False

    def render(self) -> str:
        """`printf '%s' DATA | /bin/tee [-a] PATH > /dev/null`."""
        tee = f"{APPLETS}/tee -a" if self.append else f"{APPLETS}/tee"
        data, path = shlex.quote(self.data), shlex.quote(self.path)
        return f"printf '%s' {data} | {tee} {path} > /dev/null"

    def describe(self) -> str:
        """`write PATH` or `append PATH`."""
        return f"{'append' if self.append else 'write'} {self.path}"


@dataclass(frozen=True)
class OpenFile:
    """Open a file without reading or writing (busybox dd with count=0)."""

    path: str
    mode: Literal["read", "write", "append"] = "read"

    def render(self) -> str:
        """dd opens `if=` read-only, `of=` write-only with O_CREAT."""
        path = shlex.quote(self.path)
        if self.mode == "read":
            return f"{APPLETS}/dd if={path} of=/dev/null count=0 status=none"
        append = " oflag=append" if self.mode == "append" else ""
        return f"{APPLETS}/dd if=/dev/null of={path} conv=notrunc{append} status=none"

    def describe(self) -> str:
        """`open PATH (mode)`."""
        return f"open {self.path} ({self.mode})"


@dataclass(frozen=True)
class Unlink:
    """Remove a file with unlink(2) (busybox unlink)."""

    path: str

    def render(self) -> str:
        """`/bin/unlink PATH`."""
        return f"{APPLETS}/unlink {shlex.quote(self.path)}"

    def describe(self) -> str:
        """`unlink PATH`."""
        return f"unlink {self.path}"


@dataclass(frozen=True)
class Connect:
    """Connect over loopback, TCP to a listener started here (or none), or UDP.

    TCP: busybox nc listens (dual-stack, on `::`), the step waits until the
    port is in LISTEN state in /proc/net/tcp{,6}, then nc connects and sends
    `data`; without `listen`, the connect is refused. UDP: this busybox's nc
    has no UDP mode and no applet can listen on UDP, so nslookup does
    connect(2) and write(2) of one DNS query to the port; nothing answers, so
    the step's exit status is not checked by default. An `address` that is not
    loopback is added to `lo` first (the step runs in a new net namespace).
    """

    protocol: Literal["tcp", "udp"] = "tcp"
    family: Literal["ipv4", "ipv6"] = "ipv4"
    port: int = DEFAULT_PORT
    data: str = "harness\n"
    # The destination; None is the family's loopback address.
    to: str | None = None
    listen: bool = True

    @property
    def address(self) -> str:
        """The destination address."""
        return self.to or FAMILIES[self.family]

    @property
    def local(self) -> bool:
        """Whether the address is loopback, there without adding it to `lo`."""
        return ipaddress.ip_address(self.address).is_loopback

    def render(self) -> str:
        """The client (and listener) as one command: its exit status is the client's."""
        command = self._udp() if self.protocol == "udp" else self._tcp()
        if self.local:
            return command
        ip = f"{APPLETS}/ip -6" if self.family == "ipv6" else f"{APPLETS}/ip"
        bits = 128 if self.family == "ipv6" else 32
        return f"{ip} addr add {self.address}/{bits} dev lo && {command}"

    def _udp(self) -> str:
        host = f"[{self.address}]" if self.family == "ipv6" else self.address
        return (
            f"{APPLETS}/timeout {UDP_SECONDS} {APPLETS}/nslookup -type=a "
            f"harness.invalid {host}:{self.port}"
        )

    def _tcp(self) -> str:
        client = (
            f"printf '%s' {shlex.quote(self.data)} | {APPLETS}/timeout "
            f"{CLIENT_SECONDS} {APPLETS}/nc {self.address} {self.port}"
        )
        if not self.listen:
            return client
        # /proc/net/tcp* columns: local address:PORT (hex), remote, state; 0A = LISTEN.
        pattern = f":{self.port:04X} [0-9A-F]*:0000 0A"
        wait = (
            "i=0; while ! "
            f"{APPLETS}/grep -q '{pattern}' /proc/net/tcp /proc/net/tcp6 2>/dev/null; "
            f"do i=$((i+1)); if [ $i -gt {LISTEN_POLLS} ]; then "
            f"echo 'harness: no listener on tcp port {self.port}' >&2; "
            f"exit {LISTENER_MISSING}; fi; {APPLETS}/usleep 10000; done"
        )
        return "\n".join(
            [
                "(",
                f"{APPLETS}/timeout {LISTENER_SECONDS} {APPLETS}/nc -l -p {self.port} "
                "> /dev/null & harness_listener=$!",
                wait,
                client,
                "harness_rc=$?",
                "wait $harness_listener",
                "exit $harness_rc",
                ")",
            ]
        )

    def describe(self) -> str:
        """`connect tcp ipv4 127.0.0.1 port 8080`, `(no listener)` without one."""
        text = f"connect {self.protocol} {self.family} {self.address} port {self.port}"
        return (
            text if self.listen or self.protocol == "udp" else f"{text} (no listener)"
        )


@dataclass(frozen=True)
class Ptrace:
    """A ptrace access check against another process, through /proc.

    busybox has no applet that calls ptrace(2) and the guest has no other
    binary, so no PTRACE_ATTACH is made: opening /proc/PID/mem (or environ)
    goes through the same access check, security_ptrace_access_check, with
    PTRACE_MODE_ATTACH (or _READ) and FSCREDS. The target is a child the step
    starts (and kills), or a pid.
    """

    mode: Literal["attach", "read"] = "attach"
    target: int | None = None

    def render(self) -> str:
        """dd opens the /proc file of the target, reading nothing."""
        pid = "$harness_target" if self.target is None else str(self.target)
        file = f"/proc/{pid}/{PTRACE_FILES[self.mode]}"
        open_it = f"{APPLETS}/dd if={file} of=/dev/null count=0 status=none"
        if self.target is not None:
            return open_it
        return "\n".join(
            [
                "(",
                f"{APPLETS}/sleep {TARGET_SECONDS} & harness_target=$!",
                open_it,
                "harness_rc=$?",
                "kill $harness_target; wait $harness_target",
                "exit $harness_rc",
                ")",
            ]
        )

    def describe(self) -> str:
        """`ptrace attach access to a child (open /proc/PID/mem)`."""
        target = "a child" if self.target is None else f"pid {self.target}"
        name = PTRACE_FILES[self.mode]
        return f"ptrace {self.mode} access to {target} (open /proc/PID/{name})"


StepAction = Run | Exec | ReadFile | WriteFile | OpenFile | Unlink | Connect | Ptrace


@dataclass(frozen=True)
class Step:
    """One workload step: an action, optionally as another user or in namespaces.

    `exit` is the exit status the step must end with; None accepts any.
    """

    action: StepAction
    user: str | None = None
    namespaces: tuple[str, ...] = ()
    exit: int | None = 0

    def render(self) -> str:
        """The step as one busybox sh command line, wrappers included."""
        command = self.action.render()
        if self.user is not None and self.user != "root":
            command = (
                f"{APPLETS}/su -s /bin/sh {shlex.quote(self.user)} "
                f"-c {shlex.quote(command)}"
            )
        if self.namespaces:
            if "net" in self.namespaces:
                # A new network namespace starts with loopback down.
                command = f"{APPLETS}/ip link set lo up && {command}"
            flags = [f for ns in self.namespaces for f in NAMESPACES[ns]]
            unshare = " ".join([f"{APPLETS}/unshare", *flags])
            command = f"{unshare} /bin/sh -c {shlex.quote(command)}"
        return command

    def describe(self) -> str:
        """A short description for reports and the script's comments."""
        text = self.action.describe()
        if self.user:
            text += f" as {self.user}"
        if self.namespaces:
            text += f" in new {'+'.join(self.namespaces)} namespace(s)"
        return text


PREAMBLE = f"""\
harness_check() {{
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit {STEP_FAILED}
}}
"""


def render_script(steps: Sequence[Step], name: str = "") -> str:
    """A busybox sh script running `steps` in order, stopping at a wrong exit.

    A step ending with another status than its `exit` makes the script exit
    97 with `harness: step N (what) exited X, expected Y` on stderr.
    """
    lines = [f"# harness workload {name}".rstrip(), PREAMBLE.rstrip()]
    for number, step in enumerate(steps, start=1):
        what = step.describe().replace("\n", " ")
        expected = "any" if step.exit is None else str(step.exit)
        lines += [
            f"# step {number}: {what}",
            step.render(),
            f"harness_check {number} $? {expected} {shlex.quote(what)}",
        ]
    return "\n".join(lines) + "\n"


def failed_step(output: str) -> str | None:
    """`step 2 (run false) exited 1, expected 0` from a script's output, if any."""
    found = FAILED_STEP.search(output)
    return found[1] if found else None


# -- parsing -------------------------------------------------------------------


def _path(value: Any, key: str, problems: Problems) -> str:
    if isinstance(value, Mapping):
        problems.unknown_keys(value, key, ("path",))
        value = value.get("path")
    if not isinstance(value, str) or not value.startswith("/"):
        problems.add(key, "must be an absolute path in the guest")
        return "/"
    return value


def _text(value: Any, key: str, problems: Problems) -> str:
    if not isinstance(value, str):
        problems.add(key, "must be a string (quote it)")
        return ""
    return value


def _exec(value: Any, key: str, problems: Problems) -> Exec:
    if isinstance(value, Mapping):
        problems.unknown_keys(value, key, ("binary", "args"))
        args = value.get("args", [])
        if not isinstance(args, list):
            problems.add(f"{key}.args", "must be a list of arguments")
            args = []
        argv = [value.get("binary"), *args]
    else:
        argv = value if isinstance(value, list) else [value]
    if not argv or not isinstance(argv[0], str) or not argv[0].startswith("/"):
        # A bare applet name would show up as /proc/self/exe (module docstring).
        problems.add(key, "the binary must be an absolute path, e.g. /bin/cat")
    words = [str(a) if isinstance(a, (int, float)) else a for a in argv]
    if not all(isinstance(w, str) for w in words):
        problems.add(key, "arguments must be strings or numbers")
        return Exec(())
    return Exec(tuple(words))


def _write(value: Any, key: str, problems: Problems) -> WriteFile:
    if not isinstance(value, Mapping):
        problems.add(key, "must be a mapping: {path: ..., data: ...}")
        return WriteFile("/", "")
    problems.unknown_keys(value, key, ("path", "data", "append"))
    append = value.get("append", False)
    if not isinstance(append, bool):
        problems.add(f"{key}.append", "must be true or false")
    return WriteFile(
        _path(value.get("path"), f"{key}.path", problems),
        _text(value.get("data", ""), f"{key}.data", problems),
        bool(append),
    )


def _open(value: Any, key: str, problems: Problems) -> OpenFile:
    if not isinstance(value, Mapping):
        return OpenFile(_path(value, key, problems))
    problems.unknown_keys(value, key, ("path", "mode"))
    mode = value.get("mode", "read")
    if mode not in OPEN_MODES:
        problems.add(f"{key}.mode", f"must be one of {', '.join(OPEN_MODES)}")
        mode = "read"
    return OpenFile(_path(value.get("path"), f"{key}.path", problems), mode)


def _address(value: Any, key: str, problems: Problems) -> str | None:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        problems.add(key, f"{value!r} is not an IPv4 or IPv6 address (quote it)")
        return None
    return str(value)


def _connect(value: Any, key: str, problems: Problems) -> Connect:
    if not isinstance(value, Mapping):
        problems.add(key, "must be a mapping: {protocol: tcp, family: ipv4, port: N}")
        return Connect()
    allowed = ("protocol", "family", "port", "data", "address", "listen")
    problems.unknown_keys(value, key, allowed)
    protocol = value.get("protocol", "tcp")
    to = (
        _address(value["address"], f"{key}.address", problems)
        if "address" in value
        else None
    )
    # The family follows from an address given without one.
    implied = None if to is None else f"ipv{ipaddress.ip_address(to).version}"
    family = value.get("family", implied or "ipv4")
    if implied and family != implied:
        problems.add(f"{key}.family", f"{family!r} does not match address {to}")
    port = value.get("port", DEFAULT_PORT)
    if protocol not in PROTOCOLS:
        problems.add(f"{key}.protocol", f"must be one of {', '.join(PROTOCOLS)}")
        protocol = "tcp"
    if family not in FAMILIES:
        problems.add(f"{key}.family", f"must be one of {', '.join(FAMILIES)}")
        family = "ipv4"
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.add(f"{key}.port", "must be a port number, 1 to 65535")
        port = DEFAULT_PORT
    if protocol == "udp" and "data" in value:
        problems.add(f"{key}.data", "udp steps send a DNS query; data is tcp only")
    if protocol == "udp" and "listen" in value:
        problems.add(f"{key}.listen", "nothing can listen on udp in the guest")
    listen = value.get("listen", True)
    if not isinstance(listen, bool):
        problems.add(f"{key}.listen", "must be true or false")
    data = _text(value.get("data", "harness\n"), f"{key}.data", problems)
    return Connect(protocol, family, port, data, to, bool(listen))


def _ptrace(value: Any, key: str, problems: Problems) -> Ptrace:
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, Mapping):
        problems.add(key, "must be a mode (attach, read) or {mode: ..., target: ...}")
        return Ptrace()
    problems.unknown_keys(value, key, ("mode", "target"))
    mode = value.get("mode", "attach")
    if mode not in PTRACE_FILES:
        problems.add(f"{key}.mode", f"must be one of {', '.join(PTRACE_FILES)}")
        mode = "attach"
    target = value.get("target", "child")
    if target == "child":
        return Ptrace(mode)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        problems.add(f"{key}.target", "must be `child` or a pid, e.g. 1")
        return Ptrace(mode)
    return Ptrace(mode, target)


def _action(name: str, value: Any, key: str, problems: Problems) -> StepAction:
    if name == "run":
        return Run(_text(value, key, problems))
    if name == "exec":
        return _exec(value, key, problems)
    if name == "write":
        return _write(value, key, problems)
    if name == "open":
        return _open(value, key, problems)
    if name == "connect":
        return _connect(value, key, problems)
    if name == "ptrace":
        return _ptrace(value, key, problems)
    path = _path(value, key, problems)
    return ReadFile(path) if name == "read" else Unlink(path)


def _user(value: Any, key: str, problems: Problems) -> str | None:
    by_uid = {uid: name for name, uid in GUEST_USERS.items()}
    if isinstance(value, int) and not isinstance(value, bool) and value in by_uid:
        return by_uid[value]
    if isinstance(value, str) and value in GUEST_USERS:
        return value
    known = ", ".join(f"{n} ({u})" for n, u in GUEST_USERS.items())
    problems.add(key, f"{value!r} is not a guest user (known: {known})")
    return None


def _namespaces(value: Any, key: str, problems: Problems) -> tuple[str, ...]:
    names = value if isinstance(value, list) else [value]
    for name in names:
        if name not in NAMESPACES:
            problems.add(key, f"{name!r} is not a namespace ({', '.join(NAMESPACES)})")
    return tuple(n for n in names if n in NAMESPACES)


def parse_step(raw: Any, key: str, problems: Problems) -> Step | None:
    """One item of `steps:`: exactly one action, plus user/namespaces/exit."""
    if not isinstance(raw, Mapping):
        problems.add(key, f"must be a mapping with one of {', '.join(ACTIONS)}")
        return None
    problems.unknown_keys(raw, key, (*ACTIONS, *MODIFIERS))
    actions = [a for a in ACTIONS if a in raw]
    if len(actions) != 1:
        problems.add(key, f"give exactly one of {', '.join(ACTIONS)} (got {actions})")
        return None
    action = _action(actions[0], raw[actions[0]], f"{key}.{actions[0]}", problems)
    user = _user(raw["user"], f"{key}.user", problems) if "user" in raw else None
    namespaces = _namespaces(raw.get("namespaces", []), f"{key}.namespaces", problems)
    if user not in (None, "root") and "user" in namespaces:
        problems.add(key, "`user:` cannot be combined with a new user namespace")
    if isinstance(action, Connect) and not action.local and "net" not in namespaces:
        problems.add(
            f"{key}.namespaces",
            f"connecting to {action.address} adds it to `lo`: give "
            "`namespaces: [net]`, so the guest's own network stays as it is",
        )
    udp = isinstance(action, Connect) and action.protocol == "udp"
    code = raw.get("exit", None if udp else 0)
    if code == "any":
        code = None
    if code is not None and (
        isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255
    ):
        problems.add(
            f"{key}.exit", f"{code!r} is not an exit status; give 0-255 or `any`"
        )
        code = 0
    return Step(action, user, namespaces, code)


def parse_steps(value: Any, key: str, problems: Problems) -> tuple[Step, ...]:
    """A `steps:` list."""
    if not isinstance(value, list) or not value:
        problems.add(key, "must be a non-empty list of steps")
        return ()
    parsed = [parse_step(raw, f"{key}[{i}]", problems) for i, raw in enumerate(value)]
    return tuple(s for s in parsed if s is not None)
