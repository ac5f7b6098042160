"""The `harness` command: kernels, boots, hook checks and reports."""

from __future__ import annotations

import argparse
import logging
import os
import select
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from harness import hooks_cli, report_cli
from harness.catalogue import find_catalogue, load
from harness.errors import GuestCommandTimeout, HarnessError
from harness.interrupts import Interrupted, exit_status, stop_on_signals, write_stderr
from harness.matrix import Matrix, Target
from harness.preflight import TETRAGON_EMPTY, Preflight
from harness.progress import DownloadProgress
from harness.vm import VM, VMOptions

log = logging.getLogger(__name__)

USAGE_ERROR = 2
# `harness boot` exits with its guest command's status, so its own failures
# take codes commands seldom use: 125 as `docker run`, 124 as timeout(1).
BOOT_FAILED = 125
COMMAND_TIMED_OUT = 124
STDIN_LIMIT = 64 << 20
DISTRIBUTION = "kernel-policy-harness"
# 128 + SIGPIPE: what a shell reports for a writer whose reader went away.
STDOUT_CLOSED = 141


def _matrix(
    args: argparse.Namespace, progress: DownloadProgress | None = None
) -> Matrix:
    catalogue = load(args.catalogue or find_catalogue())
    return Matrix(catalogue, progress=progress)


# A `.deb` by URL says its version only once downloaded.
NOT_FETCHED = "known once fetched"
# What the `cached` column says of each state of Known.cached.
CACHED = {True: "yes", False: "no", None: "-"}


def cmd_kernels_list(args: argparse.Namespace) -> int:
    """Print the catalogue with each entry's resolved version and cache state.

    `cached` is `yes` when the kernel is unpacked in the cache and boots
    without a download, `-` for a local image, booted where it is.
    """
    matrix = _matrix(args)
    table = Table("name", "series", "arch", "source", "version", "cached", "default")
    for target in matrix.targets("all", args.arch or ""):
        spec = target.spec
        try:
            known = matrix.provisioner.known(spec, target.arch)
            version, cached = known.version or NOT_FETCHED, CACHED[known.cached]
        except HarnessError as e:
            version, cached = f"unresolved: {str(e).splitlines()[0]}", "no"
        table.add_row(
            spec.name,
            spec.series or "-",
            target.arch,
            spec.source,
            version,
            cached,
            "yes" if spec.default else "",
        )
    Console().print(table)
    return 0


def cmd_kernels_fetch(args: argparse.Namespace) -> int:
    """Download, verify and unpack kernels into the cache."""
    with DownloadProgress() as progress:
        matrix = _matrix(args, progress)
        for target in matrix.targets(args.kernel, args.arch or ""):
            kernel = matrix.kernel(target)
            matrix.initrd(kernel)
            where = kernel.image.parent
            print(f"{target.id}: {kernel.release} ({kernel.version}) in {where}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    """Boot one kernel, run a command in it, print its output, exit with its status."""
    command = list(args.guest_command)
    stdin = guest_stdin() if command else b""
    with DownloadProgress() as progress:
        matrix = _matrix(args, progress)
        targets = matrix.targets(args.kernel, args.arch)
    if not targets:
        why = matrix.catalogue.why_none_on(args.kernel, args.arch)
        raise HarnessError(f"kernel {args.kernel}: {why}")
    if len(targets) != 1:
        named = ", ".join(t.id for t in targets)
        raise HarnessError(
            f"`harness boot` boots one kernel on one arch; kernel {args.kernel} "
            f"--arch={args.arch} names {len(targets)} ({named}): pass one kernel "
            "name and one --arch"
        )
    target = targets[0]
    options = VMOptions(memory_mb=args.memory, boot_timeout=args.boot_timeout)
    if args.show_command:
        return show_command(matrix, target, args.artefacts, options)
    temporary = not args.artefacts
    artefacts = Path(args.artefacts or tempfile.mkdtemp(prefix=f"harness-{target.id}-"))
    status = BOOT_FAILED
    try:
        vm = matrix.vm(target, artefacts, options)
        status = _boot_and_run(vm, command, stdin, args.timeout)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
    finally:
        if temporary:
            _tidy(artefacts, keep=status != 0)
    return status


def show_command(
    matrix: Matrix, target: Target, artefacts: str | None, options: VMOptions
) -> int:
    """Print the QEMU command of a boot, leaving no directory behind.

    Called once per command line, it must not leave two empty directories
    in /tmp each time: without --artefacts the console path is an example
    under a directory that is not made, and the control socket's directory
    is removed again. The command is alone on stdout; which directories to
    make before running it goes to stderr.
    """
    example = Path(tempfile.gettempdir()) / f"harness-{target.id}"
    console_dir = Path(artefacts) if artefacts else example
    vm = matrix.vm(target, console_dir, options)
    vm.close()
    print(shlex.join(vm.argv))
    missing = [d for d in (console_dir, vm.sock_path.parent) if not d.is_dir()]
    if missing:
        dirs = " ".join(shlex.quote(str(d)) for d in missing)
        print(
            f"harness: the console log ({vm.console_log}) and control socket "
            f"({vm.sock_path}) paths are examples; before running the command, "
            f"make their directories (mkdir -p -m 700 {dirs}) or change them",
            file=sys.stderr,
        )
    return 0


def guest_stdin() -> bytes:
    """The guest command's stdin: ours, unless it is a terminal."""
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    # The channel sends stdin whole, before the command starts.
    data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise HarnessError(
            f"stdin holds more than {STDIN_LIMIT >> 20} MiB: `harness boot` sends "
            "it to the guest whole; pass less, or </dev/null if the command reads none"
        )
    return data


def _boot_and_run(vm: VM, command: list[str], stdin: bytes, timeout: float) -> int:
    with vm:
        if not command:
            print(f"{vm.kernel.id}: {vm.release} ready in {vm.boot_seconds:.1f} s")
            return 0
        try:
            result = vm.run(command, stdin=stdin, timeout=timeout)
        except GuestCommandTimeout:
            print(f"harness: error: {timed_out(command, timeout, vm)}", file=sys.stderr)
            return COMMAND_TIMED_OUT
    sys.stdout.buffer.write(result.stdout)
    sys.stderr.buffer.write(result.stderr)
    return result.status


def timed_out(command: Sequence[str], timeout: float, vm: VM) -> str:
    """Why a guest command was stopped, and the option that gives it longer."""
    scale = vm.accel.scale
    scaled = f", scaled x{scale:g} for {vm.accel.name.upper()}" if scale != 1 else ""
    return (
        f"`{shlex.join(command)}` timed out after {timeout * scale:g} s "
        f"(--timeout={timeout:g}{scaled}); pass a larger --timeout"
    )


def _tidy(artefacts: Path, keep: bool) -> None:
    """Remove a run's temporary artefacts, or say where they are when it failed."""
    if keep and any(artefacts.iterdir()):
        print(
            f"harness: console log and QEMU command kept in {artefacts}",
            file=sys.stderr,
        )
    else:
        shutil.rmtree(artefacts, ignore_errors=True)


def preflight(args: argparse.Namespace) -> None:
    """Check every setting the command uses, all at once, before it does anything."""
    check = Preflight()
    if args.command_name == "report":
        # Reports read and write files only: no catalogue, cache or mirror.
        if (output := getattr(args, "output", None)) is not None:
            check.directory(Path(output), f"--output={output}")
        check.done()
        return
    check.environment()
    catalogue = check.catalogue(args.catalogue or find_catalogue())
    for name in ("kernel", "kernel_a", "kernel_b"):
        if (value := getattr(args, name, None)) is not None:
            check.kernels(catalogue, value, f"kernel {value or repr(value)}")
    if (value := getattr(args, "kernels", None)) is not None:
        check.kernels(catalogue, value, f"--kernels={value}")
    # `kernels list` and `fetch` take every arch when --arch is left out.
    if args.arch is not None:
        check.arches(args.arch, f"--arch={args.arch}")
    if args.command_name == "boot":
        check.memory(args.memory, f"--memory={args.memory}")
        if args.artefacts is not None:
            check.directory(args.artefacts, f"--artefacts={args.artefacts}")
    if args.command_name == "qualify":
        empty = f"{TETRAGON_EMPTY} (the release to qualify)"
        check.tetragon(args.tetragon, f"--tetragon={args.tetragon}", empty)
        check.directory(args.output, f"--output={args.output}")
    check.done()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with `error_status`."""

    error_status = USAGE_ERROR

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.error_status, f"{self.prog}: error: {message}\n")


def installed_version() -> str:
    """The version pip installed, or where it would be when run from a checkout."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(not installed: pip install -e . in the checkout)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `harness` command."""
    parser = _Parser(prog="harness", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {installed_version()}"
    )
    parser.add_argument("--catalogue", type=Path, help="kernels.yaml to use")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command_name", required=True)

    kernels = sub.add_parser("kernels", help="the kernel catalogue")
    ksub = kernels.add_subparsers(dest="kernels_command", required=True)
    klist = ksub.add_parser("list", help="show the catalogue")
    klist.add_argument("--arch", help="comma list of arches (default: all)")
    klist.set_defaults(func=cmd_kernels_list)
    kfetch = ksub.add_parser("fetch", help="download and cache kernels")
    kfetch.add_argument("kernel", help="catalogue name, comma list, `default` or `all`")
    kfetch.add_argument("--arch", help="comma list of arches (default: all)")
    kfetch.set_defaults(func=cmd_kernels_fetch)

    boot = sub.add_parser("boot", help="boot a kernel and run a command in it")
    boot.add_argument("kernel", help="catalogue name, e.g. 6.1")
    boot.add_argument("--arch", required=True, help="x86_64 or arm64")
    boot.add_argument(
        "--memory", type=int, default=1024, help="guest MiB, 128 or more (default 1024)"
    )
    boot.add_argument("--boot-timeout", type=float, help="seconds (default scales)")
    boot.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="command timeout in KVM seconds (x10 under TCG; default 60)",
    )
    boot.add_argument("--artefacts", help="directory for console log and QEMU command")
    boot.add_argument(
        "--show-command",
        action="store_true",
        help="print the QEMU command, boot nothing (its console and socket paths "
        "are examples)",
    )
    boot.epilog = (
        "Everything after `--` is the command to run in the guest; stdin goes to it "
        "unless it is a terminal. Exit status: the command's own; 124 when it timed "
        "out; 125 when the harness failed (bad option, boot failure); 130 or 143 "
        "when interrupted."
    )
    boot.error_status = BOOT_FAILED
    boot.set_defaults(func=cmd_boot)

    hooks_cli.add_parsers(sub)
    report_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `harness` command."""
    try:
        try:
            return run(list(sys.argv[1:] if argv is None else argv))
        finally:
            # Output still buffered meets a closed pipe here, not at exit.
            sys.stdout.flush()
    except BrokenPipeError:
        # Only our reader going away (`| head`) ends quietly; a guest's control
        # socket breaking is a failure of its own.
        if not stdout_closed():
            raise
        return quiet_stdout()


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)
    return any(event & select.POLLERR for _, event in poller.poll(0))


def quiet_stdout() -> int:
    """Send the rest of stdout nowhere; the status a shell gives a SIGPIPE death."""
    # Python flushes stdout once more at exit; that must not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return STDOUT_CLOSED


def run(argv: list[str]) -> int:
    """Parse `argv`, check every setting, run the subcommand; its exit status."""
    # Split off the guest command by hand: argparse would mistake its options
    # for ours.
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    args.guest_command = argv[split + 1 :]
    level = (
        logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        with stop_on_signals(lambda line: write_stderr(f"harness: {line}")):
            preflight(args)
            return int(args.func(args))
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return BOOT_FAILED if args.command_name == "boot" else USAGE_ERROR
    except KeyboardInterrupt as e:
        if not isinstance(e, Interrupted):
            print("harness: interrupted", file=sys.stderr)
        return exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
