"""Release qualification from recorded inventories, policies and a matrix."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness import hooks, policy, qualify, results
from harness.inventory import Inventory, load
from harness.results import AGENT_NONE, AGENT_NOT_STARTED, Cell, Column, Matrix

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("tests") / "data"
REGEN = os.environ.get("HARNESS_REGEN_GOLDEN") == "1"
OPENAT = DATA / "policies" / "sys-openat.yaml"
LSM = DATA / "policies" / "lsm-and-tracepoints.yaml"
ROW = "scenarios/openat.yaml::open"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Policy ids are the paths they were loaded by, relative to the checkout.
    monkeypatch.chdir(ROOT)


# `y` on every Debian cloud kernel of the catalogue; the recorded inventories
# keep only the options the hook checks read.
TRACING_CONFIG = {
    f"CONFIG_{o}": "y"
    for o in ("KPROBES", "KPROBE_EVENTS", "BPF_EVENTS", "TRACEPOINTS", "UPROBE_EVENTS")
}


@pytest.fixture(scope="module")
def invs() -> list[Inventory]:
    """Recorded inventories: 5.10, 6.1 and 6.12 on x86_64, 6.1 on arm64."""
    found = sorted((ROOT / DATA / "inventory").glob("*.json.gz"))
    return [replace(i, config={**i.config, **TRACING_CONFIG}) for i in map(load, found)]


def matrix() -> Matrix:
    """The openat scenario: passing on two kernels, skipped on one, failing on one."""
    outcomes = {
        "5.10-x86_64": ("pass", ""),
        "6.1-x86_64": ("pass", ""),
        "6.1-arm64": ("skip", "--tetragon has no agent for arm64"),
        "6.12-x86_64": ("fail", "SILENT kprobe sys_openat"),
    }
    cells = [
        Cell(ROW, col, outcome, reason, properties=(("agent", "tetragon v1.3.0"),))  # type: ignore[arg-type]
        for col, (outcome, reason) in outcomes.items()
    ]
    split = [c.rsplit("-", 1) for c in outcomes]
    columns = [Column(kernel, arch, accelerator="tcg") for kernel, arch in split]
    return results.build(columns, cells)


@pytest.fixture
def qualification(invs: list[Inventory]) -> qualify.Qualification:
    """The qualification of the two test policies."""
    policies = policy.load_all([OPENAT, LSM])
    m = matrix()
    prints = [qualify.fingerprint(i, f"{i.kernel_id}-config", "tcg") for i in invs]
    return qualify.qualify(
        qualify.agent_of(m, "v1.3.0"),
        m,
        policies,
        {"scenarios/openat.yaml": [OPENAT]},
        hooks.check(policies, invs),
        prints,
        invs,
    )


def test_policies_work_where_scenarios_pass_and_hooks_check(
    qualification: qualify.Qualification,
) -> None:
    q = qualification
    assert q.agent == "tetragon v1.3.0"
    assert q.works_on(str(OPENAT)) == ("5.10-x86_64", "6.1-x86_64")
    status = {p.column: p for p in q.policies if p.policy == str(OPENAT)}
    assert status["6.12-x86_64"].status == "fails"
    assert "SILENT kprobe sys_openat" in status["6.12-x86_64"].reasons[0]
    assert status["6.1-arm64"].status == "untested"
    assert q.works_on(str(LSM)) == ()
    lsm = next(p for p in q.policies if p.policy == str(LSM))
    assert any("tracepoint-missing" in r for r in lsm.reasons)
    assert not q.qualified


def test_oldest_kernel_per_hook_type(qualification: qualify.Qualification) -> None:
    support = {(s.hook_type, s.arch): s for s in qualification.support}
    kprobe = support[("kprobe", "x86_64")]
    assert (kprobe.oldest, kprobe.oldest_tested) == ("5.10", True)
    lsm = support[("lsm", "x86_64")]
    assert (lsm.oldest, lsm.version, lsm.oldest_tested) == ("6.1", "6.1.176-1", False)
    assert lsm.unsupported[0].startswith("5.10-x86_64: bpf is not an active LSM")
    arm = support[("lsm", "arm64")]
    assert arm.oldest == ""
    assert "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS unset" in arm.unsupported[0]


def test_fingerprints_per_column(qualification: qualify.Qualification) -> None:
    fp = {f.column: f for f in qualification.fingerprints}
    f = fp["6.12-x86_64"]
    assert (f.version, f.btf, f.accelerator) == ("6.12.117-1", True, "tcg")
    assert "bpf" in f.lsms and f.config_sha256 == "6.12-x86_64-config"
    assert [f.column for f in qualification.fingerprints] == [
        "5.10-x86_64", "6.1-arm64", "6.1-x86_64", "6.12-x86_64",
    ]  # fmt: skip


def test_report_golden(qualification: qualify.Qualification, tmp_path: Path) -> None:
    paths = qualify.write(qualification, tmp_path)
    text = paths[1].read_text()
    golden = ROOT / DATA / "report" / "qualification.md"
    if REGEN:
        golden.write_text(text)
    assert text == golden.read_text(), f"differs from {golden} (HARNESS_REGEN_GOLDEN=1)"
    data = json.loads(paths[0].read_text())
    assert data["qualified"] is False
    assert data["works_on"][str(OPENAT)] == ["5.10-x86_64", "6.1-x86_64"]


def test_pytest_command_runs_the_library_with_the_agent(tmp_path: Path) -> None:
    plan = qualify.Plan(tetragon="v1.3.0", kernels="6.1", output=tmp_path, workers=2)
    argv = qualify.pytest_argv(plan)
    assert argv[1:5] == ["-m", "pytest", "scenarios", "policies"]
    assert "--tetragon=v1.3.0" in argv and "--kernels=6.1" in argv
    assert f"--report-dir={tmp_path / 'matrix'}" in argv
    assert argv[-2:] == ["-n", "2"]


@pytest.mark.boot
def test_qualify_over_a_given_matrix(tmp_path: Path) -> None:
    """The orchestration, without pytest: one inventory (booted if not cached)."""
    given = tmp_path / "matrix.json"
    given.write_text(results.dumps(matrix()))
    plan = qualify.Plan(
        tetragon="v1.3.0", kernels="6.1", arch="x86_64", output=tmp_path / "q",
        matrix=given,
    )  # fmt: skip
    said: list[str] = []
    q, paths = qualify.run(plan, said.append)
    assert [p.name for p in paths] == ["qualification.json", "qualification.md"]
    (fp,) = q.fingerprints
    assert fp.column == "6.1-x86_64" and len(fp.config_sha256) == 64 and fp.btf
    assert "policies/file-access-etc.yaml" in q.policy_ids()


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie no longer does)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigterm_to_qualify_stops_its_pytest_run(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    root = tmp_path / "library"
    (root / "scenarios").mkdir(parents=True)
    (root / "scenarios" / "test_wait.py").write_text(
        "import os, time\nfrom pathlib import Path\n\n"
        f"def test_wait():\n    Path({str(pids)!r}, str(os.getpid())).touch()\n"
        "    time.sleep(100)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "--catalogue", str(ROOT / "kernels.yaml"),
         "qualify", "--tetragon=1.3.0", "--kernels=6.1", "--arch=x86_64",
         f"--output={tmp_path / 'out'}"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(pids.iterdir()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.1)
        (test_pid,) = (int(p.name) for p in pids.iterdir())

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)

        assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
        assert b"passing SIGTERM on to pytest" in output, output[-3000:]
        assert not alive(test_pid), output[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for leftover in pids.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(leftover.name), signal.SIGKILL)


def ran(agents: dict[str, str]) -> Matrix:
    """The openat scenario passing on every column, each column with its agent."""
    cells = [
        Cell(ROW, col, "pass", properties=(("agent", agent),))
        for col, agent in agents.items()
    ]
    columns = [
        Column(*col.rsplit("-", 1), accelerator="tcg", agent=agent)
        for col, agent in agents.items()
    ]
    return results.build(columns, cells)


@pytest.mark.parametrize(
    ("tetragon", "agents"),
    [
        ("1.7.0", {"6.1-x86_64": "tetragon v1.7.0"}),
        ("v1.7.0", {"6.1-x86_64": "tetragon 1.7.0"}),
        ("tetragon-v1.7.0-amd64.tar.gz", {"6.1-x86_64": "tetragon v1.7.0"}),
        (
            "https://example.test/v1.7.0/tetragon-v1.7.0-{debarch}.tar.gz",
            {"6.1-x86_64": "tetragon v1.7.0"},
        ),
        # The agent did not start on a target (its cells fail or skip, and say why).
        ("1.7.0", {"6.1-x86_64": "tetragon v1.7.0", "6.1-arm64": AGENT_NOT_STARTED}),
        # A directory of another name: only the run can tell which version it holds.
        ("my-build", {"6.1-x86_64": "tetragon v1.8.0-dev"}),
    ],
)
def test_a_run_of_the_release_on_every_column_qualifies(
    tetragon: str, agents: dict[str, str]
) -> None:
    assert qualify.agent_problem(ran(agents), tetragon) == ""


@pytest.mark.parametrize(
    ("tetragon", "agents", "wanted"),
    [
        (
            "1.7.0",
            {"6.1-x86_64": AGENT_NONE, "6.12-x86_64": AGENT_NONE},
            "6.1-x86_64, 6.12-x86_64 ran none (firing check)",
        ),
        (
            "1.7.0",
            {"6.1-x86_64": "tetragon v1.7.0", "6.12-x86_64": "tetragon v1.6.0"},
            "6.12-x86_64 ran tetragon v1.6.0",
        ),
        (
            "1.7.0",
            {"6.1-x86_64": f"{AGENT_NONE}, tetragon v1.7.0"},
            "6.1-x86_64 ran none (firing check)",
        ),
        ("my-build", {"6.1-x86_64": AGENT_NONE}, "6.1-x86_64 ran none (firing check)"),
        ("1.7.0", {"6.1-x86_64": ""}, "6.1-x86_64 recorded no agent"),
        # An empty matrix: hook checks alone would "qualify" the release.
        ("1.7.0", {}, "no kernel column ran, so no event was asserted"),
    ],
)
def test_a_matrix_of_another_agent_qualifies_nothing(
    tetragon: str, agents: dict[str, str], wanted: str
) -> None:
    problem = qualify.agent_problem(ran(agents), tetragon)
    assert wanted in problem
    assert f"run the matrix with --tetragon={tetragon}" in problem


def test_qualify_refuses_a_firing_check_matrix(tmp_path: Path) -> None:
    given = tmp_path / "matrix.json"
    given.write_text(
        results.dumps(ran({"6.1-x86_64": AGENT_NONE, "6.1-arm64": AGENT_NONE}))
    )
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "--catalogue", str(ROOT / "kernels.yaml"),
         "qualify", "--tetragon=1.7.0", f"--matrix={given}", "--offline",
         "--kernels=6.1", f"--output={tmp_path / 'q'}"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"harness: error: {given}: "), line
    assert "6.1-arm64, 6.1-x86_64 ran none (firing check), not tetragon v1.7.0" in line
    assert "run the matrix with --tetragon=1.7.0" in line
    assert not (tmp_path / "q" / "qualification.md").exists()
    assert "qualified" not in done.stdout
