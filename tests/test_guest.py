"""The guest as a user sees it: real kernels booted in QEMU, driven over the channel."""

from __future__ import annotations

import pytest

from harness.errors import GuestCommandTimeout
from harness.matrix import Matrix, Target
from harness.vm import VM


def test_uname_reports_the_catalogue_kernel(
    vm: VM, target: Target, harness_matrix: Matrix
) -> None:
    kernel = harness_matrix.kernel(target)
    assert vm.run(["uname", "-r"], check=True).text.strip() == kernel.release
    machine = vm.run(["uname", "-m"], check=True).text.strip()
    assert machine == {"x86_64": "x86_64", "arm64": "aarch64"}[target.arch]


def test_filesystems_agents_need_are_mounted(vm: VM) -> None:
    mounts = {
        line.split()[2] for line in vm.copy_out("/proc/mounts").decode().splitlines()
    }
    for fstype in ("proc", "sysfs", "tracefs", "debugfs", "bpf", "cgroup2"):
        assert fstype in mounts, f"{fstype} not mounted: {sorted(mounts)}"


def test_arguments_environment_stdin_and_status(vm: VM) -> None:
    result = vm.run(
        [
            "sh",
            "-c",
            'printf "%s|" "$@"; echo "$GREETING"; cat; echo oops >&2; exit 3',
            "sh",
            "a b",
            "it's",
            "$HOME",
        ],
        env={"GREETING": "hello world"},
        stdin=b"from stdin\n",
    )
    assert result.status == 3
    assert result.text == "a b|it's|$HOME|hello world\nfrom stdin\n"
    assert result.stderr == b"oops\n"


def test_working_directory(vm: VM) -> None:
    assert vm.run(["pwd"], cwd="/sys/kernel").text.strip() == "/sys/kernel"


def test_binary_files_round_trip(vm: VM) -> None:
    data = bytes(range(256)) * 4096 + b"\n\x00tail"
    vm.copy_in(data, "/tmp/in/blob.bin", mode=0o600)
    assert vm.copy_out("/tmp/in/blob.bin") == data
    assert vm.run(["stat", "-c", "%a %s", "/tmp/in/blob.bin"]).text.split() == [
        "600",
        str(len(data)),
    ]


def test_command_timeout_is_distinct_and_the_channel_survives(vm: VM) -> None:
    with pytest.raises(GuestCommandTimeout, match="timed out"):
        vm.channel_or_fail().run(["sleep", "30"], timeout=1)
    assert vm.run(["echo", "still here"]).text == "still here\n"
