"""The expectation matcher and its YAML form, held against recorded real events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from goldenfile import assert_golden

from harness.errors import ConfigError
from harness.events import Event, read_export
from harness.expectations import Problems, expectation, parse_expectation
from harness.matching import Expectation, check, closest

DATA = Path(__file__).parent / "data"
KERNELS = ["5.10-amd64", "6.1-amd64", "6.12-amd64"]


def golden(name: str, text: str) -> None:
    """Compare with tests/data/NAME; HARNESS_REGEN_GOLDEN=1 rewrites it."""
    assert_golden(DATA / name, text)


def case(recorded: Path, kernel: str, name: str) -> list[Event]:
    return read_export(recorded / "corpus" / kernel / name / "events.jsonl")[0]


def run(recorded: Path, name: str) -> list[Event]:
    return read_export(recorded / name / "events.jsonl")[0]


def expect(**fields: Any) -> Expectation:
    return expectation(**fields)


FD_INSTALL = {
    "type": "process_kprobe",
    "function": "fd_install",
    "policy": "fd-install",
    "process": {"binary": "/bin/cat", "arguments": "/etc/hostname-corpus-1"},
    "args": [{"int": {"min": 0}}, {"path": "/etc/hostname-corpus-1"}],
    "action": "KPROBE_ACTION_POST",
    "count": 1,
}


@pytest.mark.parametrize("kernel", KERNELS)
def test_fd_install_expectation_holds_on_every_kernel(
    recorded: Path, kernel: str
) -> None:
    events = case(recorded, kernel, "p01-fd-install-etc")

    result = check(events, [expect(**FD_INSTALL)])

    assert result.ok, result.render()
    assert result.events_seen == 5


def test_wrong_path_names_the_closest_event_and_the_field(recorded: Path) -> None:
    events = case(recorded, "6.1-amd64", "p01-fd-install-etc")
    wrong = {**FD_INSTALL, "name": "etc-shadow", "args": [{}, {"path": "/etc/shadow"}]}

    result = check(events, [expect(**wrong)])

    assert not result.ok
    (failure,) = result.failures
    assert failure.closest is not None
    assert failure.closest.function == "fd_install"
    assert failure.closest_index == 2
    assert [(d.field, d.expected, d.actual) for d in failure.diffs] == [
        ("args[1].path", "'/etc/shadow'", "'/etc/hostname-corpus-1'")
    ]
    report = result.render()
    assert "etc-shadow: process_kprobe" in report
    assert "not seen: expected exactly 1, none of 5 events" in report
    assert "args[1].path: expected '/etc/shadow', got '/etc/hostname-corpus-1'" in (
        report
    )
    golden("report-wrong-path.txt", report + "\n")


def test_type_and_hook_dominate_closeness(recorded: Path) -> None:
    events = case(recorded, "6.1-amd64", "p01-fd-install-etc")
    # Every process field below fits the exec event of cat and none fits the
    # kprobe; the kprobe is still the closer one because type and hook agree.
    wanted = expect(
        type="kprobe",
        function="fd_install",
        process={"binary": "/bin/sh", "arguments": "x", "pid": 1, "uid": 7},
    )

    index, diffs = closest(wanted.event, events)

    assert events[index].function == "fd_install"
    assert {d.field for d in diffs} == {
        "process.binary",
        "process.arguments",
        "process.pid",
        "process.uid",
    }


@pytest.mark.parametrize(
    ("run_name", "prefix"),
    [
        ("6.1.176-x86_64-fd-install-and-openat", "__x64_sys_"),
        ("6.1.176-arm64-fd-install-and-openat", "__arm64_sys_"),
        ("7.2.13-arm64-fd-install-and-openat", "__arm64_sys_"),
    ],
)
def test_syscall_names_are_portable(recorded: Path, run_name: str, prefix: str) -> None:
    events = run(recorded, run_name)
    openat = expect(
        type="kprobe",
        syscall="openat",
        policy="sys-openat",
        process={"arguments": "/etc/passwd"},
        args=[-100, "/etc/passwd", 0],
        ret={"min": 0},
    )

    assert check(events, [openat]).ok
    assert check(events, [openat], syscall_prefix=prefix).ok
    other = "__arm64_sys_" if prefix == "__x64_sys_" else "__x64_sys_"
    result = check(events, [openat], syscall_prefix=other)
    assert [d.field for d in result.failures[0].diffs] == ["function"]


def test_a_prefixed_function_name_gets_a_hint(recorded: Path) -> None:
    events = run(recorded, "6.12.117-x86_64-fd-install-and-openat")

    result = check(events, [expect(type="kprobe", function="sys_openat")])

    (diff,) = result.failures[0].diffs
    assert diff.actual == "'__x64_sys_openat'"
    assert "syscall: NAME" in diff.note


@pytest.mark.parametrize(
    ("matcher", "ok"),
    [
        ("/etc/hostname-corpus-1", True),
        ({"prefix": "/etc/"}, True),
        ({"suffix": "corpus-1"}, True),
        ({"contains": "hostname"}, True),
        ({"regex": r"^/etc/host\w+-corpus-\d$"}, True),
        ({"prefix": "/etc/", "suffix": "-2"}, False),
        ({"full": "/etc/hostname"}, False),
        ({"regex": "^hostname"}, False),
    ],
)
def test_string_operators(recorded: Path, matcher: Any, ok: bool) -> None:
    events = case(recorded, "6.1-amd64", "p01-fd-install-etc")
    wanted = expect(type="kprobe", args=[{}, {"path": matcher}])

    assert check(events, [wanted]).ok is ok


@pytest.mark.parametrize(
    ("ret", "ok"),
    [(3, True), ({"min": 0}, True), ({"min": 1, "max": 3}, True), ({"max": -1}, False)],
)
def test_number_ranges_on_the_return_value(recorded: Path, ret: Any, ok: bool) -> None:
    events = case(recorded, "6.1-amd64", "p08-openat-return")

    result = check(events, [expect(type="kprobe", syscall="openat", ret=ret)])

    assert result.ok is ok


def test_list_modes(recorded: Path) -> None:
    events = case(recorded, "6.12-amd64", "p08-openat-return")

    def ok(args: Any) -> bool:
        return check(events, [expect(type="kprobe", args=args)]).ok

    assert ok([-100, "/etc/passwd", 1025])
    assert not ok(["/etc/passwd", -100, 1025])
    assert ok({"unordered": ["/etc/passwd", 1025, -100]})
    assert not ok({"unordered": ["/etc/passwd", 1025]})
    assert ok({"subset": [{"string": "/etc/passwd"}]})
    assert ok({"subset": [{"int": -100}, {"int": {"min": 1000}}]})
    assert not ok({"subset": [{"int": -100}, {"int": -100}]})

    short = check(events, [expect(type="kprobe", args=[-100, "/etc/passwd"])])
    assert [d.field for d in short.failures[0].diffs] == ["args.length"]
    missing = check(events, [expect(type="kprobe", args={"subset": ["/etc/shadow"]})])
    (diff,) = missing.failures[0].diffs
    assert diff.field == "args.subset[0]"
    assert "closest string_arg '/etc/passwd'" in diff.actual


def test_structured_and_byte_arguments(recorded: Path) -> None:
    tcp = case(recorded, "6.1-amd64", "p04-tcp-connect")
    connect = expect(
        type="kprobe",
        function="tcp_connect",
        process={"binary": "/usr/bin/nc", "arguments": "127.0.0.1 8080"},
        args=[{"sock": {"family": "AF_INET", "daddr": "127.0.0.1", "dport": 8080}}],
        count=1,
    )
    # The accepted socket has no sport in the JSON: left-out members read as 0.
    accepted = expect(
        type="kprobe",
        function="tcp_close",
        args=[{"sock": {"saddr": {"prefix": "::ffff:"}, "sport": 0}}],
    )
    assert check(tcp, [connect, accepted]).ok
    wrong_port = expect(
        type="kprobe", function="tcp_connect", args=[{"sock": {"dport": 80}}]
    )
    (diff,) = check(tcp, [wrong_port]).failures[0].diffs
    assert (diff.field, diff.expected, diff.actual) == ("args[0].dport", "80", "8080")

    write = case(recorded, "6.1-amd64", "p05-sys-write-file")
    data = expect(
        type="kprobe",
        syscall="write",
        args=[3, {"bytes": {"prefix": "corpus-write-5"}}, {"int": 15}],
    )
    assert check(write, [data]).ok
    kind = check(write, [expect(type="kprobe", args=[3, {"string": "x"}, 15])])
    assert kind.failures[0].diffs[0].field == "args[1]"

    dup = case(recorded, "6.1-amd64", "p07b-tracepoint-list-syscalls-syscall64")
    tracepoint = expect(
        type="tracepoint",
        tracepoint="raw_syscalls/sys_enter",
        args=[{"syscall_id": {"id": 33, "abi": "x64"}}],
    )
    assert check(dup, [tracepoint]).ok

    lsm = case(recorded, "6.12-amd64", "p09b-lsm-file-open-real-binary")
    file_open = expect(
        type="lsm", function="file_open", process="/usr/bin/cat", args=["/etc/passwd"]
    )
    assert check(lsm, [file_open]).ok


@pytest.mark.parametrize(("kernel", "reads"), [("6.1-amd64", 5), ("6.12-amd64", 2)])
def test_counts(recorded: Path, kernel: str, reads: int) -> None:
    events = case(recorded, kernel, "p02-file-monitoring")
    read = {
        "type": "kprobe",
        "function": "security_file_permission",
        "process": "/bin/cat",
        "args": [{"path": "/etc/hostname-corpus-2"}, 4],
    }

    assert check(events, [expect(**read, count=reads)]).ok
    assert check(events, [expect(**read, count={"min": 2})]).ok
    result = check(events, [expect(**read, count=1)])
    assert f"seen {reads} time(s), expected exactly 1" in result.render()
    assert len(result.failures[0].offending) == reads


def test_expect_not(recorded: Path) -> None:
    events = case(recorded, "6.1-amd64", "n08-add-delete-runtime")
    setuid: dict[str, Any] = {"type": "kprobe", "syscall": "setuid", "args": [65534]}

    ok = check(events, [], [expect(type="kprobe", function="fd_install", absent=True)])
    assert ok.ok
    seen = check(events, [], [expectation(absent=True, **setuid)])
    assert "must not appear, seen 1 time(s)" in seen.render()
    assert (
        seen.failures[0].offending[0].process.binary == "/usr/local/bin/corpus-setuid"
    )


def test_order(recorded: Path) -> None:
    events = case(recorded, "6.1-amd64", "p04-tcp-connect")
    connect = expect(name="connect", type="kprobe", function="tcp_connect")
    send = expect(name="send", type="kprobe", function="tcp_sendmsg")
    listen_closed = expect(
        name="listener-closed",
        type="kprobe",
        function="tcp_close",
        args=[{"sock": {"state": "TCP_LISTEN"}}],
    )

    assert check(events, [connect, listen_closed, send], ordered=True).ok
    assert check(events, [send, connect]).ok
    result = check(events, [send, connect], ordered=True)
    assert not result.ok
    (failure,) = result.failures
    assert failure.expectation.name == "connect"
    assert "out of order" in failure.problem and "after send" in failure.problem


def test_yaml_form_reports_every_problem_with_its_key() -> None:
    problems = Problems("scenarios/x.yaml")
    raw = {
        "type": "exec",
        "function": "fd_install",
        "process": {"binary": 7, "uid": "root"},
        "args": [{"path": {"regex": "("}}, {"colour": 1}],
        "count": -1,
        "colour": "red",
    }

    parse_expectation(raw, "cases.c.expect[0]", problems)

    keys = {p.key for p in problems.items}
    assert keys == {
        "cases.c.expect[0].function",
        "cases.c.expect[0].args",
        "cases.c.expect[0].process.binary",
        "cases.c.expect[0].process.uid",
        "cases.c.expect[0].args[0].path.regex",
        "cases.c.expect[0].args[1].colour",
        "cases.c.expect[0].count",
        "cases.c.expect[0].colour",
    }
    assert all(p.file == "scenarios/x.yaml" for p in problems.items)


def test_yaml_form_rejects_what_tetragon_never_reports() -> None:
    with pytest.raises(ConfigError, match=r"type: 'kprobes' is not an event type"):
        expectation(type="kprobes")
    with pytest.raises(ConfigError, match=r"syscall: write the name without"):
        expectation(type="kprobe", syscall="sys_openat")
    with pytest.raises(ConfigError, match=r"expect.args\[0\].kind: 'filee'"):
        expectation(type="kprobe", args=[{"kind": "filee"}])
    with pytest.raises(ConfigError, match=r"only for event types kprobe"):
        expectation(type="lsm", ret=0)
    assert expectation(type="kprobe", action="post").event.action is not None


def test_byte_buffers_match_in_hex(recorded: Path) -> None:
    write = case(recorded, "6.1-amd64", "p05-sys-write-file")

    def data(test: Any) -> Expectation:
        return expect(type="kprobe", syscall="write", args=[3, {"hex": test}, 15])

    # "corpus-write-5\n", as Tetragon's base64 bytes_arg carries it.
    whole = "636f7270 75732d77 72697465 2d350a"
    assert check(write, [data(whole)]).ok
    assert check(write, [data({"prefix": "63 6F", "suffix": "35 0a"})]).ok
    assert check(write, [data({"regex": "^63 6f( [0-9a-f]{2})+ 0a$"})]).ok
    # A test matches whole bytes only: "f7" spans 6f and 72 and is not there.
    (failure,) = check(write, [data({"contains": "f7"})]).failures
    (diff,) = failure.diffs
    assert diff.field == "args[1].hex"
    assert diff.expected == "contains 'f7'"
    assert diff.actual == "'63 6f 72 70 75 73 2d 77 72 69 74 65 2d 35 0a'"


def test_hex_operands_must_be_whole_bytes() -> None:
    problems = Problems("s.yaml")
    raw = {"type": "kprobe", "args": [{"hex": "7f4"}, {"hex": {"prefix": "zz"}}]}

    parse_expectation(raw, "expect[0]", problems)

    assert [(p.key, p.message) for p in problems.items] == [
        (
            "expect[0].args[0].hex",
            "'7f4' is not hex bytes (two digits each, e.g. 7f454c46)",
        ),
        (
            "expect[0].args[1].hex.prefix",
            "'zz' is not hex bytes (two digits each, e.g. 7f454c46)",
        ),
    ]


def test_unknown_members_of_a_socket_suggest_the_closest() -> None:
    problems = Problems("scenarios/x.yaml")
    raw = {
        "type": "kprobe",
        "args": [
            {"sock": {"family": "AF_INET", "dprt": 8080}},
            {"kind": "sock", "fields": {"source": "127.0.0.1"}},
            {"kind": "file", "fields": {"mount": "/"}},
        ],
    }

    parse_expectation(raw, "cases.c.expect[0]", problems)

    members = (
        "cookie, daddr, dport, family, mark, priority, protocol, saddr, sport, "
        "state, type"
    )
    assert [str(p) for p in problems.items] == [
        "scenarios/x.yaml: cases.c.expect[0].args[0].sock.dprt: unknown member of "
        f"sock_arg; did you mean 'dport'? (allowed: {members})",
        "scenarios/x.yaml: cases.c.expect[0].args[1].fields.source: unknown member "
        f"of sock_arg (allowed: {members})",
    ]
