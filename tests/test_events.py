"""Parsing Tetragon export lines and attributing events, on recorded real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from goldenfile import assert_golden

from harness.events import (
    Event,
    EventFormatError,
    Window,
    attribute,
    counts,
    parse_lines,
    parse_time,
    read_export,
)

DATA = Path(__file__).parent / "data"
ARCH_SYMBOL = {"x86_64": "__x64_sys_openat", "arm64": "__arm64_sys_openat"}
FD_INSTALL_RUNS = [
    f"{kernel}-{arch}-fd-install-and-openat"
    for kernel in ("5.10.223", "6.1.176", "6.12.117", "7.2.13")
    for arch in ("x86_64", "arm64")
]


def golden(name: str, text: str) -> None:
    """Compare with tests/data/NAME; HARNESS_REGEN_GOLDEN=1 rewrites it."""
    assert_golden(DATA / name, text)


def events_of(path: Path) -> list[Event]:
    return read_export(path)[0]


def test_every_recorded_line_parses(recorded: Path) -> None:
    files = sorted(recorded.rglob("*.jsonl"))
    events = [e for f in files for e in events_of(f)]

    assert len(files) > 100
    assert len(events) > 5000
    types = {e.type for e in events}
    assert types == {
        "process_exec",
        "process_exit",
        "process_kprobe",
        "process_tracepoint",
        "process_lsm",
    }
    assert all(e.time_ns > 0 and e.process.exec_id for e in events)


def test_fd_install_on_6_1_x86_64_names_etc_passwd(recorded: Path) -> None:
    events = events_of(recorded / "6.1.176-x86_64-fd-install-and-openat/events.jsonl")
    hits = [
        e
        for e in events
        if e.function == "fd_install" and e.process.arguments == "/etc/passwd"
    ]

    assert len(hits) == 1
    event = hits[0]
    assert event.type == "process_kprobe"
    assert event.policy == "fd-install"
    assert event.action == "KPROBE_ACTION_POST"
    assert event.process.pid == 347
    # cat run by bare name from busybox sh re-executes busybox.
    assert event.process.binary == "/proc/self/exe"
    fd, file = event.args
    assert (fd.kind, fd.value) == ("int_arg", 3)
    assert (file.kind, file.path) == ("file_arg", "/etc/passwd")
    assert file.fields["permission"] == "-rw-r--r--"
    assert event.parent is not None and event.parent.arguments == "sh /init"


@pytest.mark.parametrize("run", FD_INSTALL_RUNS)
def test_openat_reports_the_arch_symbol_and_return(recorded: Path, run: str) -> None:
    events = events_of(recorded / run / "events.jsonl")
    arch = run.split("-")[1]
    openat = [e for e in events if e.policy == "sys-openat"]

    assert [e.function for e in openat] == [ARCH_SYMBOL[arch]]
    event = openat[0]
    assert [a.value for a in event.args] == [-100, "/etc/passwd", 0]
    assert event.ret is not None and (event.ret.kind, event.ret.value) == ("int_arg", 3)


def test_argument_kinds(recorded: Path) -> None:
    corpus = recorded / "corpus" / "6.1-amd64"

    write = [e for e in events_of(corpus / "p05-sys-write-file/events.jsonl") if e.args]
    fd, buf, size = write[0].args
    assert (fd.value, buf.kind, buf.value) == (3, "bytes_arg", b"corpus-write-5\n")
    # size_arg is printed as a JSON string; the flat view makes it a number.
    assert (size.kind, size.value) == ("size_arg", 15)

    tcp = events_of(corpus / "p04-tcp-connect/events.jsonl")
    connect = next(e for e in tcp if e.function == "tcp_connect")
    sock = connect.args[0]
    assert sock.kind == "sock_arg" and sock.value is None
    assert sock.fields["daddr"] == "127.0.0.1"
    assert sock.fields["dport"] == 8080
    assert sock.fields["state"] == "TCP_SYN_SENT"

    dup = events_of(corpus / "p07b-tracepoint-list-syscalls-syscall64/events.jsonl")
    tracepoints = [e for e in dup if e.type == "process_tracepoint"]
    assert [e.hook for e in tracepoints] == ["raw_syscalls/sys_enter"] * 2
    ids = [e.args[0].fields for e in tracepoints]
    assert ids == [{"id": 32, "abi": "x64"}, {"id": 33, "abi": "x64"}]

    bprm = events_of(corpus / "p03-exec-bprm-check/events.jsonl")
    check = next(e for e in bprm if e.function == "security_bprm_check")
    assert check.args[0].kind == "linux_binprm_arg"
    assert check.args[0].path == "/usr/bin/sample-exec"

    lsm = events_of(corpus / "p09b-lsm-file-open-real-binary/events.jsonl")
    opened = [e for e in lsm if e.type == "process_lsm"]
    assert [(e.function, e.args[0].path) for e in opened] == [
        ("file_open", "/etc/passwd")
    ]

    truncate = events_of(corpus / "p02-file-monitoring/events.jsonl")
    path_args = [a for e in truncate for a in e.args if a.kind == "path_arg"]
    assert [a.path for a in path_args] == ["/etc/corpus-file-2"]


def test_exec_and_exit_events(recorded: Path) -> None:
    events = events_of(recorded / "corpus/6.1-amd64/p01-fd-install-etc/events.jsonl")

    assert [e.type for e in events] == [
        "process_exec",
        "process_exec",
        "process_kprobe",
        "process_exit",
        "process_exit",
    ]
    cat = events[1]
    assert (cat.process.binary, cat.process.pid) == ("/bin/cat", 388)
    assert cat.args == () and cat.hook == ""
    assert cat.process.parent_exec_id == events[0].process.exec_id
    assert counts(events) == {
        "process_exec": 2,
        "process_kprobe fd_install": 1,
        "process_exit": 2,
    }


def test_time_keeps_nanoseconds() -> None:
    ns = parse_time("2026-12-03T15:32:16.547139504Z")

    assert ns % 1_000_000_000 == 547139504
    assert parse_time("2026-12-03T15:32:16Z") == ns - 547139504
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("yesterday")


def test_flat_view_golden(recorded: Path) -> None:
    corpus = recorded / "corpus" / "6.1-amd64"
    flat = {
        str(f.relative_to(recorded)): [e.flat() for e in events_of(f)]
        for f in sorted(corpus.glob("p*/events.jsonl"))
    }
    arm64 = recorded / "6.12.117-arm64-fd-install-and-openat/events.jsonl"
    flat[str(arm64.relative_to(recorded))] = [
        e.flat() for e in events_of(arm64) if e.policy
    ]

    golden("events-flat.json", json.dumps(flat, indent=1, sort_keys=True) + "\n")


def _boot_with(case: Path, first: Event) -> list[Event]:
    for boot in sorted(case.parent.glob("boot-*/boot-events.jsonl")):
        events = events_of(boot)
        if any(e.raw == first.raw for e in events):
            return events
    raise AssertionError(f"no boot of {case} holds its first event")


@pytest.mark.parametrize("kernel", ["5.10-amd64", "6.1-amd64", "6.12-amd64"])
def test_attribution_reproduces_the_recorded_cuts(recorded: Path, kernel: str) -> None:
    cases = sorted((recorded / "corpus" / kernel).glob("[pn]*/events.jsonl"))
    checked = 0
    for case in cases:
        cut = events_of(case)
        if not cut:
            continue
        boot = _boot_with(case.parent, cut[0])
        # The workload shell (twice for n08, before and after the delete).
        roots = [e.process.exec_id for e in cut if e.process.binary == "/bin/sh"]
        policy = next((e.policy for e in cut if e.policy), None)
        mine = [
            e
            for e in attribute(boot, exec_ids=roots)
            if e.type in ("process_exec", "process_exit") or e.policy == policy
        ]

        extra = [e for e in mine if e.raw not in [c.raw for c in cut]]
        assert [e.raw for e in mine if e not in extra] == [c.raw for c in cut], case
        # The recorded cut left out the exits of timeout's own forks in p04;
        # they are descendants of the workload, so attribution keeps them.
        assert all(
            e.type == "process_exit" and e.process.binary == "/usr/bin/timeout"
            for e in extra
        ), case
        checked += 1
    assert checked >= 12


def test_attribution_by_pid_trusts_only_the_window(recorded: Path) -> None:
    boot = events_of(recorded / "corpus/6.1-amd64/boot-positive/boot-events.jsonl")
    start = next(
        e
        for e in boot
        if e.type == "process_exec"
        and e.process.arguments.endswith("p01-fd-install-etc/workload.sh")
    )
    end = next(
        e
        for e in boot
        if e.type == "process_exit" and e.process.exec_id == start.process.exec_id
    )
    window = Window(start.time_ns, end.time_ns)
    pid = start.process.pid
    assert pid is not None

    found = attribute(boot, pids=[pid], window=window)
    assert [e.process.binary for e in found if e.type == "process_exec"] == [
        "/bin/sh",
        "/bin/cat",
    ]
    assert any(e.function == "fd_install" for e in found)
    assert attribute(boot, pids=[pid], window=Window(0, start.time_ns - 1)) == []
    only_root = attribute(boot, pids=[pid], window=window, descendants=False)
    assert {e.process.pid for e in only_root} == {pid}


def test_read_export_waits_for_unfinished_lines(recorded: Path, tmp_path: Path) -> None:
    source = recorded / "corpus/6.1-amd64/p01-fd-install-etc/events.jsonl"
    lines = source.read_bytes().splitlines(keepends=True)
    export = tmp_path / "events.json"
    export.write_bytes(lines[0] + lines[1][:40])

    first, offset = read_export(export)
    assert len(first) == 1 and offset == len(lines[0])

    export.write_bytes(b"".join(lines))
    rest, end = read_export(export, offset)
    assert [e.raw for e in rest] == [e.raw for e in events_of(source)[1:]]
    assert end == export.stat().st_size


def test_a_bad_line_names_its_place() -> None:
    good = '{"process_exec":{"process":{"exec_id":"x"}},"time":"2026-01-01T00:00:00Z"}'

    with pytest.raises(EventFormatError, match=r"export\.json:2: not a Tetragon"):
        parse_lines([good, '{"oops": 1, "other": 2}'], "export.json")
    with pytest.raises(EventFormatError, match=r"export\.json:1"):
        parse_lines(["{truncated"], "export.json")
    assert parse_lines(["", good, "  "])[0].line == 2
