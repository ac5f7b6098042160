"""Hook checks against excerpts of real inventories (Debian kernels booted in QEMU).

The excerpts under data/inventory/ are cut from full inventories to the
symbols, tracepoints and config options the policies under data/policies/
name. Regenerate them from the cache (after `harness hooks check` captured the
kernels) with:

    HARNESS_CACHE_DIR=... .venv/bin/python tests/test_hooks.py --regen
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
from pathlib import Path

import pytest

from harness import firing, hookdiff, hooks, hooks_cli, inventory, policy, proberules
from harness.argtypes import compat
from harness.hooks import Finding
from harness.inventory import Inventory
from harness.symbols import static_symbols

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
POLICIES = DATA / "policies"
EXCERPTS = ("5.10-x86_64", "6.1-x86_64", "6.1-arm64", "6.12-x86_64")
CONFIG_KEYS = (
    "FPROBE",
    "DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
    "BPF_KPROBE_OVERRIDE",
    "FUNCTION_ERROR_INJECTION",
    "BPF_LSM",
    "UPROBES",
    "KPROBE_EVENTS_ON_NOTRACE",
)
TRACEPOINTS = ("raw_syscalls/sys_enter", "sched/sched_process_exec")


def excerpt(inv: Inventory, policies: list[policy.Policy]) -> Inventory:
    """An inventory cut to what `policies` name (absent names stay absent)."""
    names = set(static_symbols(policies, inv.arch))
    names |= {f"__{n}" for n in names}
    for p in policies:
        for h in p.hooks:
            if isinstance(h, policy.LsmHook):
                names |= {f"bpf_lsm_{h.hook}", f"security_{h.hook}"}
    names |= {
        s for s in inv.filter_functions | inv.text_symbols if s.startswith("ksys_")
    }
    names |= {c for n in list(names) for c in inv.clones(n)}
    syscalls = {n.split("_sys_", 1)[1] for n in names if "_sys_" in n}
    tracepoints = {*TRACEPOINTS, *(f"syscalls/sys_enter_{s}" for s in syscalls)}

    def keep(values: frozenset[str]) -> frozenset[str]:
        return frozenset(v for v in values if v in names)

    return dataclasses.replace(
        inv,
        filter_functions=keep(inv.filter_functions),
        text_symbols=keep(inv.text_symbols),
        duplicate_symbols=keep(inv.duplicate_symbols),
        aliases=keep(inv.aliases),
        blacklist=keep(inv.blacklist),
        error_injection=keep(inv.error_injection),
        config={k: v for k, v in inv.config.items() if k[7:] in CONFIG_KEYS},
        functions={k: v for k, v in inv.functions.items() if k in names},
        raw_tracepoints={
            "sched_process_exec": inv.raw_tracepoints["sched_process_exec"]
        },
        typedefs={k: inv.typedefs[k] for k in ("umode_t", "size_t", "pid_t")},
        tracepoints={k: v for k, v in inv.tracepoints.items() if k in tracepoints},
        probes={k: v for k, v in inv.probes.items() if k in names},
        guest_files=frozenset({"/bin/busybox", "/bin/sh", "/bin/cat"}),
        phases=(),
        _protos={},
    )


def regenerate() -> None:
    """Rewrite data/inventory/ from the full inventories in the cache."""
    from harness.cache import Cache

    cache = Cache()
    policies = policy.load_all([POLICIES, DATA / "firing"])
    out = DATA / "inventory"
    out.mkdir(exist_ok=True)
    for cell in EXCERPTS:
        paths = inventory.cached_paths(cache, cell)
        if not paths:
            sys.exit(f"no cached inventory of {cell} in {cache.root}")
        inventory.save(
            excerpt(inventory.load(paths[-1]), policies), out / f"{cell}.json.gz"
        )
        print(f"{cell}: {(out / f'{cell}.json.gz').stat().st_size} bytes")


@pytest.fixture(scope="module")
def invs() -> dict[str, Inventory]:
    """The recorded inventory excerpts, by cell."""
    return {c: inventory.load(DATA / "inventory" / f"{c}.json.gz") for c in EXCERPTS}


def run(name: str, inv: Inventory) -> list[Finding]:
    """Findings of one test policy on one inventory."""
    (found,) = policy.load(POLICIES / name)
    return hooks.check_policy(found, inv)


def of(findings: list[Finding], hook: str, severity: str = "") -> list[Finding]:
    """Findings of one hook (of one severity)."""
    return [f for f in findings if f.hook == hook and severity in ("", f.severity)]


# -- the three facts of issue 4 --------------------------------------------------


@pytest.mark.parametrize("cell", EXCERPTS)
def test_x64_openat_is_an_error_on_arm64_only(
    invs: dict[str, Inventory], cell: str
) -> None:
    inv = invs[cell]
    plain = run("x64-openat.yaml", inv)
    as_syscall = run("x64-openat-syscall.yaml", inv)
    portable = run("sys-openat.yaml", inv)
    if inv.arch == "arm64":
        assert [f.code for f in plain] == ["symbol-missing"]
        assert "x86_64 name of a syscall" in plain[0].reason
        assert [f.code for f in as_syscall] == ["wrong-arch-prefix"]
        assert "__arm64_sys_openat" in as_syscall[0].reason
    else:
        assert plain == [] and as_syscall == []
    assert portable == []


def test_dev_queue_xmit_probes_on_5_10_but_not_6_1(invs: dict[str, Inventory]) -> None:
    old = run("dev-queue-xmit.yaml", invs["5.10-x86_64"])
    new = run("dev-queue-xmit.yaml", invs["6.1-x86_64"])
    assert of(old, "kprobe dev_queue_xmit") == []
    (refused,) = of(new, "kprobe dev_queue_xmit")
    assert refused.code == "not-probeable" and refused.severity == "error"
    assert "Could not probe notrace function" in refused.reason
    assert (
        of(old, "kprobe __dev_queue_xmit") == of(new, "kprobe __dev_queue_xmit") == []
    )


def test_inet_csk_accept_third_argument_is_gone_on_6_12(
    invs: dict[str, Inventory],
) -> None:
    assert run("inet-csk-accept.yaml", invs["6.1-x86_64"]) == []
    (gone,) = run("inet-csk-accept.yaml", invs["6.12-x86_64"])
    assert (gone.severity, gone.code) == ("error", "arg-index")
    assert "has 2 parameter(s)" in gone.reason
    assert "struct proto_accept_arg * arg" in gone.reason
    assert gone.where == "spec.kprobes[0].args[1]"


def test_recorded_wrong_prefix_case(
    invs: dict[str, Inventory], shared_dir: Path
) -> None:
    # The agent refused it: `syscall "__arm64_sys_openat" (or "") expecting
    # __x64_ and got __arm64_`.
    case = (
        shared_dir / "tetragon/recorded/corpus/6.1-amd64/n04-syscall-wrong-arch-prefix"
    )
    (recorded,) = policy.load(case / "policy.yaml")
    (found,) = hooks.check_policy(recorded, invs["6.1-x86_64"])
    assert (found.severity, found.code) == ("error", "wrong-arch-prefix")
    assert "on x86_64 the symbol is __x64_sys_openat" in found.reason


def test_recorded_index_past_prototype_case(
    invs: dict[str, Inventory], shared_dir: Path
) -> None:
    # The agent loaded it with a warning and reported a meaningless int_arg.
    case = (
        shared_dir
        / "tetragon/recorded/corpus/6.1-amd64/n02-kprobe-arg-index-beyond-params"
    )
    (recorded,) = policy.load(case / "policy.yaml")
    (found,) = hooks.check_policy(recorded, invs["6.1-x86_64"])
    assert (found.code, found.where) == ("arg-index", "spec.kprobes[0].args[1]")
    assert "fd_install has 2 parameter(s)" in found.reason


# -- symbols --------------------------------------------------------------------


def test_only_a_compiler_clone_exists(invs: dict[str, Inventory]) -> None:
    (found,) = run("clone-only.yaml", invs["6.1-x86_64"])
    assert found.code == "only-clones"
    assert found.reason.startswith("only bucket_table_alloc.isra.0 exist")


def test_blacklisted_function_takes_no_probe(invs: dict[str, Inventory]) -> None:
    (found,) = run("blacklisted.yaml", invs["6.1-x86_64"])
    assert found.code == "not-probeable"
    assert "blacklist" in found.reason or "refused it in the guest" in found.reason


def test_repeated_name_is_refused_since_the_unique_check(
    invs: dict[str, Inventory],
) -> None:
    (new,) = run("duplicate.yaml", invs["6.1-x86_64"])
    assert new.code == "not-probeable"
    assert "Cannot assign requested address" in new.reason
    (old,) = run("duplicate.yaml", invs["5.10-x86_64"])
    assert (old.severity, old.code) == ("warning", "duplicate-symbol")


def test_argument_read_as_the_wrong_type(invs: dict[str, Inventory]) -> None:
    (found,) = run("vfs-unlink-type.yaml", invs["6.1-x86_64"])
    assert (found.severity, found.code) == ("warning", "arg-type")
    assert "index 1 of vfs_unlink is `struct inode * dir`" in found.reason
    assert "reads it as `file`" in found.reason


def test_generated_ftrace_list_takes_clones_that_btf_lacks(
    invs: dict[str, Inventory],
) -> None:
    findings = run("ksys-list.yaml", invs["6.1-x86_64"])
    (missing,) = [f for f in findings if f.code == "btf-missing"]
    assert "ksys_msgctl.constprop.0 (a compiler clone)" in missing.reason
    assert " symbols: " in missing.reason


# -- features -------------------------------------------------------------------


def test_override_needs_a_mechanism_the_kernel_has(invs: dict[str, Inventory]) -> None:
    on_612 = run("override-kinds.yaml", invs["6.12-x86_64"])
    assert [f.code for f in of(on_612, "kprobe security_inode_mkdir")] == [
        "override-multi"
    ]
    assert [f.code for f in of(on_612, "kprobe sys_linkat")] == ["override-unsupported"]
    assert [f.code for f in of(on_612, "kprobe fd_install")] == ["override-target"]
    on_61 = run("override-kinds.yaml", invs["6.1-x86_64"])
    assert of(on_61, "kprobe security_inode_mkdir") == []
    arm = run("override-kinds.yaml", invs["6.1-arm64"])
    assert [f.code for f in of(arm, "kprobe security_inode_mkdir")] == [
        "no-trampolines"
    ]


def test_lsm_hooks_need_bpf_lsm_and_trampolines(invs: dict[str, Inventory]) -> None:
    assert (
        of(run("lsm-and-tracepoints.yaml", invs["6.1-x86_64"]), "lsm file_open") == []
    )
    (inactive,) = of(
        run("lsm-and-tracepoints.yaml", invs["5.10-x86_64"]), "lsm file_open"
    )
    assert inactive.code == "lsm-inactive"
    assert "lockdown,capability,yama,apparmor,tomoyo" in inactive.reason
    (arm,) = of(run("lsm-and-tracepoints.yaml", invs["6.1-arm64"]), "lsm file_open")
    assert arm.code == "no-trampolines"


def test_tracepoint_fields_and_existence(invs: dict[str, Inventory]) -> None:
    findings = run("lsm-and-tracepoints.yaml", invs["6.1-x86_64"])
    (past,) = of(findings, "tracepoint raw_syscalls/sys_enter")
    assert past.code == "arg-index" and "has 6 fields" in past.reason
    (gone,) = of(findings, "tracepoint sched/no_such_event")
    assert gone.code == "tracepoint-missing"
    assert of(findings, "raw_tracepoint sched/sched_process_exec") == []


# -- diff, argument types, inventory parsing ---------------------------------


def test_diff_shows_the_prototype_change(invs: dict[str, Inventory]) -> None:
    policies = policy.load(POLICIES / "inet-csk-accept.yaml")
    changes = hookdiff.diff(invs["6.1-x86_64"], invs["6.12-x86_64"], policies)
    kinds = {(c.kind, c.subject) for c in changes}
    assert ("new", "arg-index") in kinds
    (target,) = [c for c in changes if c.kind == "target"]
    assert "int flags, int * err, bool kern" in target.before
    assert (
        target.after
        == "struct sock * (struct sock * sk, struct proto_accept_arg * arg)"
    )


def test_diff_refuses_two_arches(invs: dict[str, Inventory]) -> None:
    with pytest.raises(Exception, match="one arch"):
        hookdiff.diff(invs["6.1-x86_64"], invs["6.1-arm64"], [])


@pytest.mark.parametrize(
    ("ptype", "shown", "resolved", "severity"),
    [
        ("file", "struct file *", "struct file *", None),
        ("file", "struct inode *", "struct inode *", "warning"),
        ("path", "const struct path *", "struct path *", None),
        ("string", "const char *", "char *", None),
        ("string", "struct filename *", "struct filename *", "warning"),
        ("char_buf", "void *", "void *", None),
        ("int", "size_t", "long unsigned int", "info"),
        ("int", "int", "int", None),
        ("int", "struct sock *", "struct sock *", "warning"),
        ("uint64", "void *", "void *", None),
        ("sock", "struct sock *", "struct sock *", None),
        ("nop", "struct sock *", "struct sock *", None),
    ],
)
def test_compat(ptype: str, shown: str, resolved: str, severity: str | None) -> None:
    verdict = compat(ptype, shown, resolved)
    assert (verdict[0] if verdict else None) == severity


def test_kallsyms_keeps_weak_functions_and_drops_padding() -> None:
    text, dups, groups = inventory.parse_kallsyms(
        "ffff0010 T fd_install\n"
        "ffff0000 W __pfx_bpf_lsm_file_open\n"
        "ffff0020 W bpf_lsm_file_open\n"
        "ffff0030 t t_start\nffff0040 t t_start\n"
        "ffff0050 T __x64_sys_inotify_init\nffff0050 T __ia32_sys_inotify_init\n"
        "ffff0060 D some_data\n"
    )
    assert "bpf_lsm_file_open" in text and "__pfx_bpf_lsm_file_open" not in text
    assert dups == {"t_start"} and "some_data" not in text
    aliases = proberules.traceable_aliases(
        groups, frozenset({"__ia32_sys_inotify_init"})
    )
    assert aliases == {"__x64_sys_inotify_init"}


def test_filter_functions_and_formats_parse() -> None:
    assert inventory.parse_filter_functions(
        "fd_install\n__ftrace_invalid_address___64\nvirtio_dev_probe [virtio]\n"
    ) == {"fd_install", "virtio_dev_probe"}
    formats = inventory.parse_formats(
        "==> syscalls/sys_enter_openat/format <==\nname: sys_enter_openat\nformat:\n"
        "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
        "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n"
    )
    assert formats == {
        "syscalls/sys_enter_openat": "int __syscall_nr;const char * filename"
    }


def test_inventory_round_trips(invs: dict[str, Inventory], tmp_path: Path) -> None:
    inv = invs["6.1-arm64"]
    inventory.save(inv, tmp_path / "x.json.gz")
    again = inventory.load(tmp_path / "x.json.gz")
    assert again == inv
    assert again.prototype("fd_install") is not None
    assert (
        str(again.prototype("fd_install"))
        == "void (unsigned int fd, struct file * file)"
    )


def test_old_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json.gz").write_bytes(gzip.compress(b'{"format": 0}'))
    with pytest.raises(inventory.InventoryError, match="delete it"):
        inventory.load(tmp_path / "x.json.gz")


# -- the command line ----------------------------------------------------------------


def _cli(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    hooks_cli.add_parsers(parser.add_subparsers())
    parsed = parser.parse_args(args)
    parsed.catalogue = ROOT / "kernels.yaml"
    return parsed


@pytest.fixture
def offline_cache(
    invs: dict[str, Inventory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A cache holding the 6.1 and 6.12 x86_64 excerpts as full inventories."""
    root = tmp_path / "cache"
    directory = root / "inventory" / f"v{inventory.FORMAT}"
    directory.mkdir(parents=True)
    for cell in ("6.1-x86_64", "6.12-x86_64"):
        inv = invs[cell]
        inventory.save(inv, directory / f"{cell}-{inv.version}.json.gz")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(root))
    return root


def test_cli_check_json_and_table(
    offline_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [str(POLICIES / "inet-csk-accept.yaml"), "--kernels=6.1,6.12"]
    common += ["--arch=x86_64", "--offline"]
    args = _cli(["hooks", "check", *common, "--json"])
    assert args.func(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert [k["cell"] for k in out["kernels"]] == ["6.1-x86_64", "6.12-x86_64"]
    assert [(f["kernel"], f["code"]) for f in out["findings"]] == [
        ("6.12", "arg-index")
    ]
    assert out["summary"]["6.12-x86_64"]["error"] == 1
    args = _cli(["hooks", "check", *common])
    assert args.func(args) == 1
    table = capsys.readouterr().out
    assert "6.12-x86_64" in table and "arg-index" in table


def test_cli_diff(offline_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = str(POLICIES / "inet-csk-accept.yaml")
    options = ["--arch=x86_64", "--offline", "--json"]
    args = _cli(["hooks", "diff", "6.1", "6.12", policies, *options])
    assert args.func(args) == 0
    changes = json.loads(capsys.readouterr().out)
    assert {(c["kind"], c["subject"]) for c in changes} == {
        ("new", "arg-index"),
        ("target", "inet_csk_accept"),
    }


# -- firing ---------------------------------------------------------------------


def test_firing_counts_the_workload_tree_only() -> None:
    (fire_policy,) = policy.load(DATA / "firing" / "policy.yaml")
    probes = firing.plan(fire_policy.hooks, "arm64")
    assert [p.target for p in probes][:3] == [
        "fd_install",
        "__arm64_sys_openat",
        "__arm64_sys_setuid",
    ]
    trace = gzip.decompress((DATA / "firing" / "trace-6.1-arm64.txt.gz").read_bytes())
    text = trace.decode()
    pids = firing.descendants(text, 106)
    assert 106 in pids and len(pids) > 1
    unset = {p.event for p in probes if p.target == "dev_queue_xmit"}
    result = {
        f.hook: f
        for f in firing.summarise(probes, firing.count_hits(text, probes, pids), unset)
    }
    assert result["kprobe fd_install"].status == "fired"
    assert result["kprobe sys_setuid"].status == "silent"
    assert result["kprobe dev_queue_xmit"].status == "unset"
    assert result["lsm file_open"].workload_hits == 8
    assert result["tracepoint raw_syscalls/sys_enter"].other_hits == 21


if __name__ == "__main__":
    if sys.argv[1:] == ["--regen"]:
        regenerate()
    else:
        sys.exit(__doc__)
