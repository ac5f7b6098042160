"""Wall time of the main job over a matrix, without and with the agent.

Runs the README's main job (`pytest scenarios policies`) as a subprocess,
alternating the two modes so that host noise falls on both:

- firing: no agent, scenarios run as firing checks (the baseline);
- tetragon: the same library with a real Tetragon in every guest.

Prints, per mode, the median wall time of N runs with its spread and the
outcome counts, the ratio tetragon/firing, and per target the median time
its tests took (setup, call and teardown from the junit report). A target's
time is about what one CI job holding only that target would take, so the
largest of them is the wall time of a nightly spread one job per target.

    .venv/bin/python bench/matrix.py --runs=3
    .venv/bin/python bench/matrix.py --tetragon=DIR --runs=3 --agent-runs=2

DIR holds one release tarball per arch (`tetragon-*-amd64.tar.gz`,
`tetragon-*-arm64.tar.gz`). Without --tetragon only the baseline runs. With
--json, the figures are written after every run; Ctrl-C prints those of the
runs that completed. With --keep DIR, each run's junit XML and reports are
copied to DIR/N-MODE, to read its failures and reasons afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_ID = re.compile(r"\[([^\[\]]+)\]$")
SUMMARY = re.compile(r"^=*\s*(\d+ \w+.* in [\d.]+s[^=]*?)\s*=*$", re.MULTILINE)


def run_once(mode: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    """One main-job run; its wall time, summary line and seconds per target."""
    junit = work / "junit.xml"
    argv = [
        sys.executable, "-m", "pytest", "scenarios", "policies", "-q",
        "-p", "no:cacheprovider", f"-n{args.jobs}",
        f"--kernels={args.kernels}", f"--arch={args.arch}",
        f"--artefacts={work / 'artefacts'}", f"--report-dir={work / 'reports'}",
        f"--junitxml={junit}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_TETRA")}
    if mode == "tetragon":
        argv.append(f"--tetragon={args.tetragon}")
        argv += [f"--tetragon-arg={extra}" for extra in args.tetragon_arg]
    started = time.monotonic()
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as proc:  # fmt: skip
        try:
            output, _ = proc.communicate()
        except KeyboardInterrupt:
            # SIGTERM, not SIGINT: a job started in the background (`cmd &`)
            # ignores SIGINT, and so does the pytest it starts. The harness
            # stops its VMs on either; SIGKILL if it is still there after.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise
    wall = time.monotonic() - started
    found = SUMMARY.findall(output)
    summary = found[-1] if found else f"no summary (exit {proc.returncode})"
    if proc.returncode not in (0, 1):
        tail = "\n".join(output.splitlines()[-15:])
        raise SystemExit(f"{mode} run failed to complete:\n{tail}")
    return {
        "wall": wall,
        "summary": summary,
        "exit": proc.returncode,
        "targets": per_target(junit),
    }


def keep(work: Path, dest: Path) -> None:
    """Copy a run's junit and reports (not its artefacts) to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "junit.xml", dest / "junit.xml")
    if (work / "reports").is_dir():
        shutil.copytree(work / "reports", dest / "reports", dirs_exist_ok=True)


def per_target(junit: Path) -> dict[str, float]:
    """Seconds per target: the sum of its test cases' times in the junit XML."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        match = TARGET_ID.search(case.get("name", ""))
        if match:
            totals[match.group(1)] += float(case.get("time", "0"))
    return dict(totals)


def describe(mode: str, runs: list[dict[str, object]]) -> str:
    walls = [float(str(r["wall"])) for r in runs]
    summaries = sorted({str(r["summary"]) for r in runs})
    return (
        f"{mode:<9} median {statistics.median(walls):7.1f} s over {len(walls)} "
        f"run(s) (min {min(walls):.1f}, max {max(walls):.1f})\n"
        + "\n".join(f"          {s}" for s in summaries)
    )


def target_medians(runs: list[dict[str, object]]) -> dict[str, float]:
    seen: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        targets = run["targets"]
        assert isinstance(targets, dict)
        for target, seconds in targets.items():
            seen[target].append(seconds)
    return {t: statistics.median(v) for t, v in sorted(seen.items())}


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: the pytest child is sent SIGTERM and stops
    # its VMs, and the temporary directory is removed.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="default")
    parser.add_argument("--arch", default="x86_64,arm64")
    parser.add_argument("--jobs", type=int, default=2, help="pytest -n")
    parser.add_argument("--runs", type=int, default=3, help="baseline runs")
    parser.add_argument(
        "--agent-runs", type=int, help="runs with the agent (default: --runs)"
    )
    parser.add_argument("--tetragon", help="release tarballs, one per arch")
    parser.add_argument("--tetragon-arg", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--keep", type=Path, help="keep each run's junit and reports under DIR/N-MODE"
    )
    args = parser.parse_args()
    if args.tetragon and not Path(args.tetragon).exists():
        parser.error(f"--tetragon {args.tetragon}: no such file or directory")
    agent_runs = (args.agent_runs or args.runs) if args.tetragon else 0

    # Alternate the modes so that a noisy spell on the host hits both.
    order = [
        mode
        for index in range(max(args.runs, agent_runs))
        for mode, wanted in (("firing", args.runs), ("tetragon", agent_runs))
        if index < wanted
    ]
    results: dict[str, list[dict[str, object]]] = {"firing": [], "tetragon": []}
    try:
        for index, mode in enumerate(order, 1):
            with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
                run = run_once(mode, args, Path(tmp))
                if args.keep:
                    keep(Path(tmp), args.keep / f"{index}-{mode}")
            run["load_average"] = os.getloadavg()[1]
            results[mode].append(run)
            print(
                f"run {index}/{len(order)} {mode}: {float(str(run['wall'])):.1f} s, "
                f"{run['summary']}, load average {run['load_average']:.1f}",
                flush=True,
            )
            if args.json:  # kept run by run: a long bench may be cut short
                args.json.write_text(json.dumps({"results": results}))
    except KeyboardInterrupt:
        if not results["firing"]:
            raise
        print("interrupted: figures of the runs that completed", flush=True)
    print(f"\nmatrix --kernels={args.kernels} --arch={args.arch}, pytest -n{args.jobs}")
    summarize(results)


def summarize(results: dict[str, list[dict[str, object]]]) -> None:
    """Medians per mode, the agent's ratio, and seconds per target."""
    for mode, runs in results.items():
        if runs:
            print(describe(mode, runs))
    base = statistics.median(float(str(r["wall"])) for r in results["firing"])
    if results["tetragon"]:
        agent = statistics.median(float(str(r["wall"])) for r in results["tetragon"])
        print(f"ratio tetragon/firing: x{agent / base:.2f}")
    medians = {mode: target_medians(runs) for mode, runs in results.items() if runs}
    print("\nper target, median seconds of its tests (one CI job per target):")
    for target in medians["firing"]:
        line = f"  {target:<14} firing {medians['firing'][target]:7.1f}"
        if "tetragon" in medians:
            line += f"   tetragon {medians['tetragon'].get(target, 0.0):7.1f}"
        print(line)
    for mode, per in medians.items():
        print(f"largest target, {mode}: {max(per.values()):.1f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted: no figures") from None
