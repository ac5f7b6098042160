"""What the harness adds to Tetragon's own start and policy-load times.

Per kernel and arch, in one run, each figure the median of N repetitions:

- agent start: the harness's `Tetragon.start()` (host clock) against the
  agent's own start measured inside the guest (exec to its readiness line,
  guest /proc/uptime, polled every 20 ms);
- policy load: `Tetragon.add_policy()` against `tetra tracingpolicy add`
  timed inside the guest;
- a scenario's marginal cost once its policy is loaded: the whole case
  minus its workload.

    .venv/bin/python bench/agent.py --tetragon=tetragon-v1.3.0-amd64.tar.gz \\
        --kernels=6.1 --arch=x86_64 --runs=5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.agent import GUEST_DIR, READY_LINE, AgentSource, Tetragon
from harness.matrix import Matrix, Target
from harness.runner import run_with_agent
from harness.scenarios import load_scenario
from harness.vm import VM, VMOptions

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "file-access.yaml"

GUEST_START = f"""
read t0 _ < /proc/uptime
setsid /usr/local/bin/tetragon --bpf-lib /usr/local/lib/tetragon/bpf/ \\
    --export-filename {GUEST_DIR}/floor.jsonl --log-level info {{args}} \\
    < /dev/null > {GUEST_DIR}/floor.log 2>&1 &
pid=$!
while ! grep -qF '{READY_LINE}' {GUEST_DIR}/floor.log; do usleep 20000; done
read t1 _ < /proc/uptime
kill $pid; while kill -0 $pid 2>/dev/null; do usleep 50000; done
echo "$t0 $t1"
"""
GUEST_LOAD = """
read t0 _ < /proc/uptime
tetra --timeout 600s tracingpolicy add {path} > /dev/null
read t1 _ < /proc/uptime
tetra tracingpolicy delete {name} > /dev/null
echo "$t0 $t1"
"""


def guest_seconds(vm: VM, script: str, timeout: float) -> float:
    t0, t1 = vm.shell(script, timeout=timeout).check().text.split()
    return float(t1) - float(t0)


def bench_target(matrix: Matrix, source: AgentSource, target: Target, runs: int,
                 args: list[str], work: Path) -> dict[str, float]:  # fmt: skip
    bundle = source.bundle(target.arch)
    if bundle is None:
        raise SystemExit(f"--tetragon has no agent for {target.arch}")
    scenario = load_scenario(SCENARIO)
    policy = scenario.policies[0]
    floor_start, harness_start, floor_load, harness_load, marginal = [], [], [], [], []
    options = VMOptions(memory_mb=2048)
    with matrix.vm(target, work / target.id, options, bundle.files()) as vm:
        vm.shell(f"mkdir -p {GUEST_DIR}/policies", timeout=10).check()
        start_script = GUEST_START.replace("{args}", " ".join(args))
        for _ in range(runs):
            floor_start.append(guest_seconds(vm, start_script, 60))
        agent = Tetragon(vm, bundle, args)
        harness_start.append(agent.start())
        guest_policy = f"{GUEST_DIR}/policies/bench.yaml"
        vm.copy_in(policy.path.read_bytes(), guest_policy)
        for _ in range(runs):
            load = GUEST_LOAD.format(path=guest_policy, name=policy.name)
            floor_load.append(guest_seconds(vm, load, 120))
            agent.loaded.clear()
            started = time.monotonic()
            agent.add_policy(policy.name, policy.path.read_text())
            harness_load.append(time.monotonic() - started)
            if len(harness_load) < runs:
                agent.delete_policy(policy.name)
        case = scenario.cases[0]
        for _ in range(runs):
            started = time.monotonic()
            outcome = run_with_agent(agent, scenario, case, work / "case")
            marginal.append(time.monotonic() - started - outcome.timings["workload"])
    return {
        "agent_start_floor_s": statistics.median(floor_start),
        "agent_start_harness_s": statistics.median(harness_start),
        "policy_load_floor_s": statistics.median(floor_load),
        "policy_load_harness_s": statistics.median(harness_load),
        "scenario_marginal_s": statistics.median(marginal),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tetragon", required=True)
    parser.add_argument("--tetragon-arg", action="append", default=[])
    parser.add_argument("--kernels", default="6.1")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    matrix = Matrix()
    source = AgentSource(args.tetragon, matrix.cache)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        for target in matrix.targets(args.kernels, args.arch):
            row = bench_target(
                matrix, source, target, args.runs, args.tetragon_arg, Path(tmp)
            )
            start = row["agent_start_harness_s"] / row["agent_start_floor_s"]
            load = row["policy_load_harness_s"] / row["policy_load_floor_s"]
            print(
                f"{target.id:<14} start {row['agent_start_harness_s']:.1f} s vs "
                f"{row['agent_start_floor_s']:.1f} s in guest (x{start:.2f})  "
                f"load {row['policy_load_harness_s']:.1f} s vs "
                f"{row['policy_load_floor_s']:.1f} s (x{load:.2f})  "
                f"scenario overhead {row['scenario_marginal_s']:.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
