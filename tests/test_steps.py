"""Workload steps: parsing, the busybox rendering, and the script around them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.expectations import Problems
from harness.steps import (
    Connect,
    Ptrace,
    Run,
    Step,
    failed_step,
    parse_step,
    render_script,
)


def run_script(steps: list[Step]) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this host to run a rendered script")
    script = render_script(steps)
    return subprocess.run([sh], input=script, text=True, capture_output=True)


def test_the_step_that_broke_is_found_in_the_output() -> None:
    done = run_script([Step(Run("true")), Step(Run("sh -c 'exit 3'"), exit=4)])

    assert done.returncode == 97
    assert (
        failed_step("noise\n" + done.stderr)
        == "step 2 (run sh -c 'exit 3') exited 3, expected 4"
    )
    assert failed_step("harness: no listener on tcp port 8080\n") is None


def parse(raw: dict[str, Any]) -> tuple[Step | None, list[tuple[str, str]]]:
    problems = Problems("s.yaml")
    step = parse_step(raw, "steps[0]", problems)
    return step, [(p.key, p.message) for p in problems.items]


def syntax_ok(line: str) -> None:
    sh = shutil.which("sh")
    if sh is not None:
        subprocess.run([sh, "-n", "-c", line], check=True)


def test_a_connect_without_a_listener_is_only_the_client() -> None:
    step, problems = parse({"connect": {"port": 12346, "listen": False}, "exit": 1})

    assert problems == []
    assert step is not None and step.exit == 1
    assert step.render() == (
        "printf '%s' 'harness\n' | /bin/timeout 30 /bin/nc 127.0.0.1 12346"
    )
    assert step.describe() == "connect tcp ipv4 127.0.0.1 port 12346 (no listener)"


def test_a_connect_to_another_address_adds_it_to_lo_in_a_new_net_namespace() -> None:
    step, problems = parse(
        {
            "connect": {"address": "fd00::10", "port": 8081, "listen": False},
            "namespaces": ["net"],
            "exit": 1,
        }
    )

    assert problems == []
    assert step is not None
    assert isinstance(step.action, Connect) and step.action.family == "ipv6"
    inner = (
        "/bin/ip link set lo up && /bin/ip -6 addr add fd00::10/128 dev lo && "
        "printf '%s' 'harness\n' | /bin/timeout 30 /bin/nc fd00::10 8081"
    )
    assert step.render() == f"/bin/unshare --net /bin/sh -c {shlex.quote(inner)}"
    syntax_ok(step.render())
    listening = Connect(port=8080, to="10.10.0.1").render()
    assert listening.startswith("/bin/ip addr add 10.10.0.1/32 dev lo && (\n")
    assert "/bin/nc -l -p 8080" in listening
    syntax_ok(listening)
    udp = Connect("udp", "ipv4", 8053, to="10.10.0.3").render()
    assert udp == (
        "/bin/ip addr add 10.10.0.3/32 dev lo && /bin/timeout 3 /bin/nslookup "
        "-type=a harness.invalid 10.10.0.3:8053"
    )


def test_loopback_addresses_need_no_namespace() -> None:
    step, problems = parse({"connect": {"address": "127.0.0.2", "listen": False}})

    assert problems == []
    assert step is not None
    assert step.render().endswith("/bin/nc 127.0.0.2 8080")


def test_connect_option_problems() -> None:
    _, problems = parse(
        {"connect": {"address": "10.10.0.1", "family": "ipv6", "listen": "no"}}
    )
    assert problems == [
        ("steps[0].connect.family", "'ipv6' does not match address 10.10.0.1"),
        ("steps[0].connect.listen", "must be true or false"),
        (
            "steps[0].namespaces",
            "connecting to 10.10.0.1 adds it to `lo`: give `namespaces: [net]`, "
            "so the guest's own network stays as it is",
        ),
    ]
    _, problems = parse({"connect": {"protocol": "udp", "address": "localhost"}})
    assert problems == [
        (
            "steps[0].connect.address",
            "'localhost' is not an IPv4 or IPv6 address (quote it)",
        )
    ]
    _, problems = parse({"connect": {"protocol": "udp", "listen": False}})
    assert problems == [
        ("steps[0].connect.listen", "nothing can listen on udp in the guest")
    ]


def test_a_ptrace_step_opens_a_childs_proc_file_and_kills_the_child() -> None:
    step, problems = parse({"ptrace": {"mode": "attach"}, "user": "harness"})

    assert problems == []
    assert step is not None and step.action == Ptrace("attach")
    text = step.action.render()
    assert text.splitlines() == [
        "(",
        "/bin/sleep 60 & harness_target=$!",
        "/bin/dd if=/proc/$harness_target/mem of=/dev/null count=0 status=none",
        "harness_rc=$?",
        "kill $harness_target; wait $harness_target",
        "exit $harness_rc",
        ")",
    ]
    assert step.describe() == (
        "ptrace attach access to a child (open /proc/PID/mem) as harness"
    )
    syntax_ok(step.render())


def test_a_ptrace_step_can_check_read_access_to_a_pid() -> None:
    step, problems = parse({"ptrace": {"mode": "read", "target": 1}})

    assert problems == []
    assert step is not None
    assert step.render() == (
        "/bin/dd if=/proc/1/environ of=/dev/null count=0 status=none"
    )
    short, _ = parse({"ptrace": "read"})
    assert short is not None and short.action == Ptrace("read")


def test_ptrace_step_problems() -> None:
    _, problems = parse({"ptrace": {"mode": "seize", "target": "init"}})

    assert problems == [
        ("steps[0].ptrace.mode", "must be one of attach, read"),
        ("steps[0].ptrace.target", "must be `child` or a pid, e.g. 1"),
    ]


def test_a_ptrace_step_runs_against_a_real_child() -> None:
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc on this host")
    done = run_script([Step(Ptrace("attach")), Step(Ptrace("read"))])

    assert done.returncode == 0, done.stderr
