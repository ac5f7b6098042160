"""Hook checks of the upstream corpus on the default matrix, from cached inventories.

Each run, from a cold start of the data (nothing reused between runs): load
the 8 default inventories, parse every policy, check every hook on every
kernel and arch. The baseline, measured in the same run, is loading the
inventories alone: what any consumer of the cache pays before checking
anything. Medians of N runs; the goal is a total of at most 2 s.

    .venv/bin/python bench/hooks.py --runs=5 [--policies=DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from harness import hooks, inventory, policy
from harness.matrix import Matrix

GOAL_SECONDS = 2.0
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "tetragon" / "policies"


def inventory_paths(matrix: Matrix, kernels: str, arches: str) -> list[Path]:
    """The newest cached inventory of each target; an error names the missing."""
    paths, missing = [], []
    for target in matrix.targets(kernels, arches):
        found = inventory.cached_paths(matrix.cache, target.id)
        if found:
            paths.append(found[-1])
        else:
            missing.append(target.id)
    if missing:
        sys.exit(
            f"no cached inventory of {', '.join(missing)}: run `harness hooks check "
            f"--kernels={kernels}` once to capture them"
        )
    return paths


def one_run(paths: list[Path], corpus: Path) -> dict[str, float]:
    """Seconds per phase of one cold run."""
    start = time.perf_counter()
    invs = [inventory.load(p) for p in paths]
    loaded = time.perf_counter()
    policies = policy.load_all([corpus])
    parsed = time.perf_counter()
    findings = hooks.check(policies, invs)
    checked = time.perf_counter()
    return {
        "load": loaded - start,
        "parse": parsed - loaded,
        "check": checked - parsed,
        "total": checked - start,
        "findings": float(len(findings)),
        "policies": float(len(policies)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernels", default="default")
    parser.add_argument("--arch", default="x86_64,arm64")
    parser.add_argument("--policies", type=Path, default=CORPUS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = inventory_paths(Matrix(), args.kernels, args.arch)
    runs = [one_run(paths, args.policies) for _ in range(max(5, args.runs))]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "pairs": len(paths),
        "policies": int(median["policies"]),
        "findings": int(median["findings"]),
        "runs": len(runs),
        "baseline_load_s": round(median["load"], 3),
        "parse_s": round(median["parse"], 3),
        "check_s": round(median["check"], 3),
        "total_s": round(median["total"], 3),
        "over_baseline_s": round(median["total"] - median["load"], 3),
        "goal_s": GOAL_SECONDS,
        "all_totals_s": [round(r["total"], 3) for r in runs],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['policies']} policies x {result['pairs']} kernel/arch pairs, "
            f"{result['findings']} findings, median of {result['runs']} runs:\n"
            f"  baseline (load inventories) {result['baseline_load_s']:.3f} s\n"
            f"  parse policies              {result['parse_s']:.3f} s\n"
            f"  check hooks                 {result['check_s']:.3f} s\n"
            f"  total                       {result['total_s']:.3f} s "
            f"(goal <= {GOAL_SECONDS:.1f} s)"
        )
    return 0 if median["total"] <= GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
