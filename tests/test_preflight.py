"""Bad settings are found up front, all at once, each naming its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from harness.catalogue import load
from harness.errors import ConfigError
from harness.preflight import Preflight, writable_dir_problem

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "kernels.yaml"
PROC_DIR = Path("/proc")
PROC = "cannot create directories in /proc ("
TETRAGON_EMPTY = (
    "--tetragon=: empty; pass a release tarball, its unpacked directory, a URL or "
    "a version such as 1.7.0, or leave the option out for firing checks"
)


def can_create_in(path: Path) -> bool:
    """Whether this user can really make a directory in `path`."""
    try:
        Path(tempfile.mkdtemp(dir=path)).rmdir()
    except OSError:
        return False
    return True


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this user cannot create files in."""
    path = tmp_path / "read-only"
    path.mkdir(mode=0o555)
    if can_create_in(path):
        # Root ignores file modes; procfs refuses new directories even to root,
        # though os.access says it may write there.
        path = Path("/proc")
    if can_create_in(path):
        pytest.skip("no directory here is unwritable for this user")
    return path


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    check = Preflight()
    check.kernels(load(CATALOGUE), "6.1,9.9", "--kernels=6.1,9.9")
    check.arches("x86_64,sparc", "--arch=x86_64,sparc")
    check.tetragon(str(tmp_path / "absent.tar.gz"), "--tetragon=absent")
    check.tetragon("1.3.0", "--tetragon=1.3.0")
    check.tetragon("https://example.test/t.tar.gz", "--tetragon=url")

    with pytest.raises(ConfigError) as caught:
        check.done()

    lines = str(caught.value).splitlines()
    assert lines[0] == "3 problem(s) in configuration:"
    assert lines[1].startswith("--kernels=6.1,9.9: no kernel named '9.9' in ")
    assert "(known: 5.10, 6.1, 6.12, 7.x; or default, all)" in lines[1]
    assert lines[2] == "--arch=x86_64,sparc: unknown arch 'sparc'; known: x86_64, arm64"
    assert lines[3].startswith("--tetragon=absent: no such file or directory; pass ")


def test_all_and_default_stand_alone() -> None:
    check = Preflight()
    check.kernels(load(CATALOGUE), "all,6.1", "--kernels=all,6.1")

    with pytest.raises(ConfigError) as caught:
        check.done()

    assert str(caught.value) == (
        "--kernels=all,6.1: `all` and `default` stand alone and cannot be combined "
        "with kernel names; pass one of them on its own, or kernel names only "
        "(known: 5.10, 6.1, 6.12, 7.x)"
    )


def test_artefact_directories(tmp_path: Path, unwritable_dir: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert writable_dir_problem(tmp_path / "new" / "deeper") == ""
    assert writable_dir_problem(tmp_path) == ""
    assert "is a file, not a directory" in writable_dir_problem(a_file)
    assert "is a file, not a directory" in writable_dir_problem(a_file / "sub")
    assert writable_dir_problem(unwritable_dir / "x").startswith(
        f"cannot create directories in {unwritable_dir} ("
    )
    # The probes leave nothing behind (the fixture made read-only/).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "read-only"]


def pytest_run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run pytest on the policy library with `args`; its exit status and output."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "policies", "-p",
         "no:cacheprovider", "-q", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def cli_run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the `harness` command; its exit status and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "--catalogue", str(CATALOGUE), *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.returncode, done.stderr


def one_clean_error(output: str, *wanted: str) -> None:
    """Exactly one error line, naming every `wanted` piece, and no traceback."""
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    for piece in wanted:
        assert piece in errors[0], output


@pytest.mark.parametrize(
    ("args", "env", "wanted"),
    [
        (["--kernels=9.9"], {}, ["--kernels=9.9", "known: 5.10"]),
        (["--arch=sparc"], {}, ["--arch=sparc", "known: x86_64, arm64"]),
        (["--catalogue=/"], {}, ["/: is a directory", "--catalogue="]),
        (["--catalogue=/nonexistent.yaml"], {}, ["/nonexistent.yaml: not found"]),
        (["--artefacts=README.md"], {}, ["--artefacts=README.md", "is a file"]),
        (["--tetragon=/nonexistent"], {}, ["--tetragon=/nonexistent", "no such"]),
        ([], {"HARNESS_TETRAGON": "/nonexistent"}, ["HARNESS_TETRAGON=/nonexistent"]),
        ([], {"HARNESS_INDEX_TTL": "abc"}, ["HARNESS_INDEX_TTL=abc", "seconds"]),
        ([], {"HARNESS_INDEX_TTL": "-1"}, ["HARNESS_INDEX_TTL=-1", "negative"]),
        ([], {"HARNESS_ACCEL": "bogus"}, ["HARNESS_ACCEL=bogus", "kvm, tcg"]),
        (["--tetragon-arg="], {}, ["--tetragon-arg=: empty", "agent flag"]),
        (["--arch="], {}, ["--arch=: empty; pass x86_64, arm64"]),
        (["--arch=,"], {}, ["--arch=,: empty; pass x86_64, arm64"]),
        (["--kernels="], {}, ["--kernels=: empty; pass kernel names", "or all"]),
        (["--kernels=,"], {}, ["--kernels=,: empty; pass kernel names"]),
        (["--tetragon="], {}, [TETRAGON_EMPTY, "out for firing checks"]),
        (["--artefacts="], {}, ["--artefacts=: empty; pass a directory"]),
        (["--report-dir="], {}, ["--report-dir=: empty; pass a directory"]),
        (["--boot-timeout="], {}, ["--boot-timeout=: expected a number of seconds"]),
        (["-o", "harness_memory=64"], {}, ["harness_memory = '64'", "128 or more"]),
        (["-o", "harness_memory=lots"], {}, ["harness_memory = 'lots'", "MiB"]),
        # Root may write anywhere by os.access, yet procfs takes no directory.
        (["--artefacts=/proc/x"], {}, ["--artefacts=/proc/x: ", PROC]),
        (["--report-dir=/proc/x"], {}, ["--report-dir=/proc/x: ", PROC]),
    ],
)
def test_pytest_reports_a_bad_setting_once_as_a_usage_error(
    args: list[str], env: dict[str, str], wanted: list[str]
) -> None:
    # Collection only: a setting the checks let through must not boot anything.
    status, output = pytest_run(
        "--arch=x86_64", "--kernels=6.1", "--collect-only", *args, env=env
    )
    assert status == pytest.ExitCode.USAGE_ERROR, output
    one_clean_error(output, *wanted)


def test_an_empty_tetragon_variable_means_firing_checks() -> None:
    status, output = pytest_run(
        # -v undoes the helper's -q: the header says which mode runs.
        "--arch=x86_64", "--kernels=6.1", "--collect-only", "-v",
        env={"HARNESS_TETRAGON": ""},
    )  # fmt: skip
    assert status == pytest.ExitCode.OK, output
    assert "no --tetragon: scenarios run as firing checks" in output


def test_pytest_artefacts_in_an_unwritable_directory(unwritable_dir: Path) -> None:
    status, output = pytest_run(
        "--collect-only", f"--artefacts={unwritable_dir / 'artefacts'}"
    )
    assert status == pytest.ExitCode.USAGE_ERROR, output
    one_clean_error(
        output, "--artefacts=", f"cannot create directories in {unwritable_dir}"
    )


@pytest.mark.parametrize(
    ("args", "status", "wanted"),
    [
        (["kernels", "list", "--arch=sparc"], 2, ["--arch=sparc"]),
        (["kernels", "fetch", "9.9"], 2, ["kernel 9.9", "known: 5.10"]),
        (["hooks", "check", "policies", "--kernels=9.9"], 2, ["--kernels=9.9"]),
        (["qualify", "--tetragon=/nonexistent"], 2, ["--tetragon=/nonexistent"]),
        (["--catalogue=/", "kernels", "list"], 2, ["/: is a directory"]),
        (["boot", "9.9", "--arch=x86_64"], 125, ["kernel 9.9"]),
        (["boot", "6.1", "--arch=x86_64", "--artefacts=README.md"], 125, ["is a file"]),
        # Each of these stops short of a boot or a pytest run if let through.
        (["boot", "6.1", "--arch=", "--", "true"], 125, ["--arch=: empty; pass"]),
        (["boot", "", "--arch=x86_64", "--show-command"], 125, ["kernel '': empty"]),
        (
            ["boot", "6.1", "--arch=x86_64", "--artefacts=", "--show-command"],
            125,
            ["--artefacts=: empty; pass a directory"],
        ),
        (["hooks", "check", "policies", "--offline", "--arch="], 2, ["--arch=: empty"]),
        (["hooks", "check", "policies", "--offline", "--arch=,"], 2, ["--arch=,: "]),
        (
            ["hooks", "check", "policies", "--offline", "--kernels="],
            2,
            ["--kernels=: empty; pass kernel names"],
        ),
        (
            ["hooks", "check", "policies", "--offline", "--kernels=,"],
            2,
            ["--kernels=,: empty"],
        ),
        (
            ["hooks", "diff", "6.1", "6.12", "policies", "--offline", "--arch="],
            2,
            ["--arch=: empty"],
        ),
        (["kernels", "list", "--arch="], 2, ["--arch=: empty; pass x86_64, arm64"]),
        (["kernels", "fetch", "6.1", "--arch=,"], 2, ["--arch=,: empty; pass"]),
        (
            ["qualify", "--tetragon=", "--matrix=/nonexistent.json"],
            2,
            ["--tetragon=: empty; pass a release tarball"],
        ),
        (
            ["qualify", "--tetragon=1.7.0", "--kernels=", "--matrix=/nonexistent.json"],
            2,
            ["--kernels=: empty"],
        ),
        (["boot", "6.1", "--arch=x86_64", "--artefacts=/proc/x"], 125, [PROC]),
        (
            ["qualify", "--tetragon=1.7.0", "--output=/proc/x", "--matrix=/none.json"],
            2,
            ["--output=/proc/x: ", PROC],
        ),
        (["report", "merge", "none.json", "-o", "/proc/x"], 2, ["--output=", PROC]),
        (
            ["boot", "6.1", "--arch=x86_64", "--memory", "0", "--show-command"],
            125,
            ["--memory=0: ", "128 or more"],
        ),
        (
            ["boot", "6.1", "--arch=x86_64", "--memory", "-5", "--show-command"],
            125,
            ["--memory=-5: "],
        ),
        (
            ["boot", "6.1", "--arch=x86_64", "--memory=64", "--show-command"],
            125,
            ["--memory=64: "],
        ),
    ],
)
def test_cli_reports_a_bad_setting_in_one_line(
    args: list[str], status: int, wanted: list[str], tmp_path: Path
) -> None:
    # `--show-command` keeps the VM's directories: here, if a check lets it by.
    temporary = {"TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    got, stderr = cli_run(*args, env=temporary)
    assert got == status, stderr
    assert stderr.count("\n") == 1, stderr
    one_clean_error(stderr, *wanted)


def test_cli_reports_bad_variables(unwritable_dir: Path) -> None:
    env = {"HARNESS_INDEX_TTL": "abc", "HARNESS_ACCEL": "bogus"}
    artefacts = f"--artefacts={unwritable_dir}"
    status, stderr = cli_run("boot", "6.1", "--arch=x86_64", artefacts, env=env)
    assert status == 125, stderr
    assert "Traceback" not in stderr
    why = (
        "No such file or directory"
        if unwritable_dir == PROC_DIR
        else "Permission denied"
    )
    assert stderr.splitlines()[1:] == [
        "HARNESS_INDEX_TTL=abc: not a number of seconds; set it to a number of "
        "seconds, 0 or more (0 re-reads indices every run), or unset it for 21600 "
        "(6 hours)",
        "HARNESS_ACCEL=bogus: not an accelerator; accepted values: kvm, tcg (unset: "
        "KVM when a trial guest runs under it, else TCG)",
        f"{artefacts}: cannot create directories in {unwritable_dir} ({why}); pass "
        "a directory you can write",
    ]


def test_a_library_without_a_catalogue_is_one_usage_error(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    for name in ("exec.yaml", "mount.yaml"):
        (tmp_path / "scenarios" / name).write_text(
            (ROOT / "scenarios" / name).read_text()
        )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    one_clean_error(done.stderr, f"{tmp_path / 'kernels.yaml'}: not found")


def test_a_selection_that_names_no_target_says_what_would(tmp_path: Path) -> None:
    catalogue = tmp_path / "kernels.yaml"
    catalogue.write_text(
        'kernels:\n  - {name: "6.1", source: debian, series: "6.1", '
        "suites: [bookworm], arch: [x86_64]}\n"
    )

    def problems(kernels: str, arches: str) -> list[str]:
        check = Preflight()
        check.selection(load(catalogue), kernels, arches, f"--kernels={kernels}")
        try:
            check.done()
        except ConfigError as e:
            return [p.message for p in e.problems]
        return []

    assert problems("6.1", "x86_64,arm64") == []
    assert problems("6.1", "arm64") == [
        f"no kernel of --kernels=6.1 is listed for --arch=arm64 ({catalogue} has "
        "6.1 on x86_64); pass one of those arches or add yours to the entry's "
        "`arch:` list"
    ]
    assert problems("default", "x86_64") == [
        f"names no kernel: no entry of {catalogue} has `default: true`; name "
        "kernels, pass --kernels=all or mark an entry `default: true`"
    ]


def test_a_tetragon_path_must_be_a_release(tmp_path: Path) -> None:
    not_tar = tmp_path / "tetragon-v1.7.0-amd64.tar.gz"
    not_tar.write_text("not a tarball\n")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    no_binary = tmp_path / "other.tar.gz"
    with tarfile.open(no_binary, "w:gz") as tar:
        tar.add(empty_dir, arcname="tetragon-v1.7.0-amd64/usr/local/bin")
    release = tmp_path / "release" / "tetragon-v1.7.0-amd64" / "usr/local/bin"
    release.mkdir(parents=True)
    (release / "tetragon").write_bytes(b"\x7fELF")

    check = Preflight()
    for path in (not_tar, empty_dir, no_binary, tmp_path / "release"):
        check.tetragon(str(path), f"--tetragon={path.name}")

    with pytest.raises(ConfigError) as caught:
        check.done()

    lines = str(caught.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[1].startswith(f"--tetragon={not_tar.name}: not a tar archive")
    assert lines[2].startswith("--tetragon=empty: no usr/local/bin/tetragon in it")
    assert lines[3] == (
        "--tetragon=other.tar.gz: a tarball without usr/local/bin/tetragon; pass a "
        "Tetragon release tarball"
    )
