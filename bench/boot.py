"""Boot cost of the harness against the bare floor, per kernel and arch.

For each kernel and arch, in one run: the median of N boots to a ready
control channel, and the median of N "floor" boots (same kernel, same QEMU
flags, an initramfs whose init powers off at once) measured to QEMU's exit.
Also the peak memory of a VM and the wall time of 4 VMs at once against one
after another.

    .venv/bin/python bench/boot.py --kernels=default --arch=x86_64,arm64 --runs=5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import initramfs
from harness.matrix import Matrix, Target
from harness.vm import VM, VMOptions, qemu_argv

FLOOR_INIT = b"#!/bin/busybox sh\n/bin/busybox reboot -f\n"


def floor_initrd(matrix: Matrix, target: Target, work: Path) -> Path:
    busybox, _ = matrix.provisioner.busybox(target.arch)
    cpio = initramfs.Cpio()
    cpio.directory("bin")
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", FLOOR_INIT, 0o755)
    path = work / f"floor-{target.id}.cpio"
    path.write_bytes(cpio.finish())
    return path


def floor_boot(matrix: Matrix, target: Target, initrd: Path, work: Path) -> float:
    kernel = matrix.kernel(target)
    argv = qemu_argv(
        kernel, initrd, matrix.accel(target.arch), work / "floor-console.log",
        work / "floor.sock", VMOptions(),
    )  # fmt: skip
    start = time.monotonic()
    subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True
    )
    return time.monotonic() - start


def peak_rss_mb(vm: VM) -> float:
    assert vm.proc is not None
    status = Path(f"/proc/{vm.proc.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def harness_boot(matrix: Matrix, target: Target, work: Path) -> tuple[float, float]:
    with matrix.vm(target, work / target.id) as vm:
        vm.run(["true"], check=True)
        return vm.boot_seconds, peak_rss_mb(vm)


def lifecycle(matrix: Matrix, target: Target, work: Path) -> None:
    with matrix.vm(target, work / f"par-{target.id}") as vm:
        vm.run(["true"], check=True)


def parallel_vs_serial(
    matrix: Matrix, targets: list[Target], work: Path
) -> dict[str, float]:
    four = (targets * 4)[:4]
    start = time.monotonic()
    for i, target in enumerate(four):
        lifecycle(matrix, target, work / f"s{i}")
    serial = time.monotonic() - start
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda it: lifecycle(matrix, it[1], work / f"p{it[0]}"), enumerate(four)
            )
        )
    parallel = time.monotonic() - start
    return {"serial_s": serial, "parallel_s": parallel, "speedup": serial / parallel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="default")
    parser.add_argument("--arch", default="x86_64,arm64")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    matrix = Matrix()
    targets = matrix.targets(args.kernels, args.arch)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        work = Path(tmp)
        for target in targets:
            initrd = floor_initrd(matrix, target, work)
            harness_runs, floor_runs, rss = [], [], []
            for _ in range(args.runs):
                floor_runs.append(floor_boot(matrix, target, initrd, work))
                seconds, peak = harness_boot(matrix, target, work)
                harness_runs.append(seconds)
                rss.append(peak)
            row = {
                "target": target.id,
                "version": matrix.kernel(target).version,
                "accel": matrix.accel(target.arch).name,
                "harness_s": statistics.median(harness_runs),
                "floor_s": statistics.median(floor_runs),
                "peak_rss_mb": max(rss),
            }
            row["ratio"] = row["harness_s"] / row["floor_s"]
            rows.append(row)
            print(
                f"{row['target']:<14} {row['version']:<12} {row['accel']}  "
                f"ready {row['harness_s']:6.2f} s  floor {row['floor_s']:6.2f} s  "
                f"ratio {row['ratio']:.2f}  peak {row['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
        par = parallel_vs_serial(matrix, targets, work)
    print(
        f"4 VMs: one after another {par['serial_s']:.1f} s, at once "
        f"{par['parallel_s']:.1f} s (x{par['speedup']:.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps({"boots": rows, "four_vms": par}, indent=2))


if __name__ == "__main__":
    main()
