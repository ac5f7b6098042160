"""Policy parsing: the upstream corpus and the recorded rejections of a real agent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness import policy
from harness.policy import KprobeHook, LsmHook, TracepointHook, UprobeHook


@pytest.fixture(scope="module")
def corpus(shared_dir: Path) -> list[policy.Policy]:
    """The 71 upstream example policies."""
    return policy.load_all([shared_dir / "tetragon" / "policies"])


def recorded(shared_dir: Path, case: str) -> Path:
    """A policy file a real agent was given in the recorded corpus (6.1)."""
    return (
        shared_dir
        / "tetragon"
        / "recorded"
        / "corpus"
        / "6.1-amd64"
        / case
        / "policy.yaml"
    )


def test_every_upstream_policy_parses(
    corpus: list[policy.Policy], shared_dir: Path
) -> None:
    files = policy.discover([shared_dir / "tetragon" / "policies"])
    assert len(files) == 71
    assert any("sandbox/linux-namespaces" in str(f) for f in files)
    assert len(corpus) == 71 and all(p.name for p in corpus)
    kinds = Counter(type(h).__name__ for p in corpus for h in p.hooks)
    assert kinds == {
        "KprobeHook": 97,
        "TracepointHook": 4,
        "LsmHook": 3,
        "UprobeHook": 6,
    }


def test_only_the_list_type_mismatch_is_wrong_in_the_corpus(
    corpus: list[policy.Policy],
) -> None:
    # The recorded agent refused list-syscalls-tracepoint.yaml on every kernel:
    # "error list 'dups' argument type is not syscall64".
    found = [(p.path.name, f.code) for p in corpus for f in p.findings]
    assert found == [("list-syscalls-tracepoint.yaml", "list-arg-type")]


def test_syscall_lists_and_generated_lists(corpus: list[policy.Policy]) -> None:
    by_name = {p.path.name: p for p in corpus}
    (dups,) = by_name["list-syscalls.yaml"].hooks
    assert isinstance(dups, KprobeHook)
    assert [(c.name, c.syscall) for c in dups.calls] == [
        ("sys_dup", True),
        ("sys_dup2", True),
    ]
    (generated,) = by_name["list-syscalls-generated.yaml"].hooks
    assert isinstance(generated, KprobeHook)
    assert generated.calls == () and generated.generated is not None
    assert generated.generated.type == "generated_syscalls"
    (ftrace,) = by_name["list-generated-ftrace.yaml"].hooks
    assert isinstance(ftrace, KprobeHook) and ftrace.generated is not None
    assert ftrace.generated.pattern == "^ksys_*"


def test_hook_kinds_carry_what_checks_read(corpus: list[policy.Policy]) -> None:
    by_name = {p.path.name: p for p in corpus}
    (openat,) = by_name["openat_write.yaml"].hooks
    assert isinstance(openat, KprobeHook)
    assert openat.syscall and openat.returns and openat.return_arg is not None
    assert [(a.index, a.type) for a in openat.args] == [
        (0, "int"),
        (1, "string"),
        (2, "int"),
    ]
    (raw,) = by_name["rawtp.yaml"].hooks
    assert isinstance(raw, TracepointHook) and raw.raw
    assert raw.label == "raw_tracepoint sched/sched_process_exec"
    (lsm,) = by_name["lsm_file_open.yaml"].hooks
    assert isinstance(lsm, LsmHook) and lsm.hook == "file_open"
    (uprobe,) = by_name["uprobe-binaries.yaml"].hooks
    assert isinstance(uprobe, UprobeHook)
    assert (uprobe.path, uprobe.symbols) == ("/lib64/libc.so.6", ("malloc",))
    override = by_name["override-security.yaml"].hooks[0]
    assert "Override" in override.actions


def test_index_out_of_tetragon_bounds(shared_dir: Path) -> None:
    # Recorded: "error add arg: ArgType int Index 5 out of bounds".
    (p,) = policy.load(recorded(shared_dir, "n03-kprobe-arg-index-out-of-bounds"))
    assert [(f.code, f.where) for f in p.findings] == [
        ("arg-index-limit", "spec.kprobes[0].args[0].index")
    ]


def test_invalid_yaml_is_a_finding(shared_dir: Path) -> None:
    (p,) = policy.load(recorded(shared_dir, "n05-invalid-yaml"))
    (finding,) = p.findings
    assert (finding.severity, finding.code) == ("error", "yaml")
    assert p.hooks == ()


def test_unknown_field_is_a_finding(shared_dir: Path) -> None:
    # Recorded: `json: unknown field "notAField"`.
    (p,) = policy.load(recorded(shared_dir, "n06-unknown-field"))
    assert [(f.code, f.where) for f in p.findings] == [
        ("unknown-field", "spec.kprobes[0].notAField")
    ]
    assert len(p.hooks) == 1


def test_a_misspelt_field_gets_the_closest_name(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: a}\n"
        "spec: {kprobes: [{call: fd_install, syscall: false, retrun: true}]}\n"
    )

    (p,) = policy.load(path)

    assert [f.message for f in p.findings] == [
        "unknown field 'retrun': Tetragon rejects the policy; did you mean 'return'?"
    ]


def test_operators_and_other_enums_are_tetragons(tmp_path: Path) -> None:
    # v1.7.0 refuses each of these with "validation failed: ... should be one of".
    path = tmp_path / "enums.yaml"
    path.write_text(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: a}\n"
        "spec:\n  kprobes:\n  - call: fd_install\n    syscall: false\n"
        "    args: [{index: 1, type: file}]\n    selectors:\n"
        "    - matchArgs: [{index: 1, operator: Prefx, values: [/etc]}]\n"
        "      matchBinaries: [{operator: Equal, values: [/bin/cat]}]\n"
        "      matchNamespaces: [{namespace: Mount, operator: In, values: [1]}]\n"
        "      matchPIDs: [{values: [1]}]\n"
        "      matchCapabilities: [{type: Effective, operator: NotIn, values: [x]}]\n"
    )

    (p,) = policy.load(path)

    at = "spec.kprobes[0].selectors[0]"
    assert [(f.code, f.where, f.message) for f in p.findings] == [
        (
            "enum",
            f"{at}.matchArgs[0].operator",
            "'Prefx' is no operator of matchArgs: Tetragon rejects the policy; "
            "did you mean 'Prefix'?",
        ),
        (
            "enum",
            f"{at}.matchBinaries[0].operator",
            "'Equal' is no operator of matchBinaries: Tetragon rejects the policy "
            "(allowed: In, NotIn, NotPostfix, NotPrefix, Postfix, Prefix)",
        ),
        ("enum", f"{at}.matchPIDs[0].operator", "missing: Tetragon requires it"),
        (
            "enum",
            f"{at}.matchNamespaces[0].namespace",
            "'Mount' is no namespace of matchNamespaces: Tetragon rejects the "
            "policy; did you mean 'Mnt'?",
        ),
    ]


def test_a_cilium_document_of_no_policy_kind_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "kind.yaml"
    path.write_text(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicyy\nmetadata: {name: a}\n"
        "spec: {kprobes: [{call: fd_install, syscall: false}]}\n"
    )

    (p,) = policy.load(path)

    assert [(f.severity, f.where, f.message) for f in p.findings] == [
        (
            "error",
            "kind",
            "'TracingPolicyy' is not a policy kind of Tetragon; did you mean "
            "'TracingPolicy'?",
        )
    ]


def test_wrong_field_types_are_all_reported(shared_dir: Path) -> None:
    # The agent reports only the first (`index` of type uint32); all are here.
    (p,) = policy.load(recorded(shared_dir, "n07-bad-field-type"))
    wheres = sorted(f.where for f in p.findings if f.code == "type")
    assert "spec.kprobes[0].syscall" in wheres
    assert any(w.startswith("spec.kprobes[0].args[0].index") for w in wheres)


def test_a_repeated_key_is_a_finding_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: a}\n"
        "spec:\n  kprobes:\n  - call: fd_install\n    syscall: false\n"
        "    call: security_file_open\n"
    )

    (p,) = policy.load(path)

    assert [(f.severity, f.code, f.where, f.message) for f in p.findings] == [
        (
            "error",
            "duplicate-key",
            "spec.kprobes[0].call",
            "duplicate key on line 8 (first on line 6): YAML would keep only the "
            "last; remove or rename one",
        )
    ]


def test_several_documents_and_foreign_kinds(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n"
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicyNamespaced\n"
        "metadata: {name: a, namespace: n}\n"
        "spec: {kprobes: [{call: fd_install, syscall: false}]}\n---\n"
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: b}\n"
        "spec: {tracepoints: [{subsystem: sched, event: sched_switch}]}\n"
    )
    first, second = policy.load(path)
    assert (first.document, first.kind, first.name) == (
        1,
        "TracingPolicyNamespaced",
        "a",
    )
    assert second.id == f"{path}#2"
    assert isinstance(second.hooks[0], TracepointHook)


def test_wrong_shapes_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {}\n"
        "spec:\n  kprobes: fd_install\n  lsmhooks: [{args: 3}]\n"
        "  tracepoints: [{subsystem: sched}]\n"
    )
    (p,) = policy.load(path)
    codes = {f.code for f in p.findings}
    assert {"name-missing", "type", "call-missing", "tracepoint-missing"} <= codes


@pytest.mark.parametrize(
    ("value", "symbol"),
    [
        ("sys_dup", "__x64_sys_dup"),
        ("i386/sys_dup", "__ia32_sys_dup"),
        ("__ia32_sys_dup", "__ia32_sys_dup"),
        ("arm64/sys_dup", "__arm64_sys_dup"),
        ("dup", None),
        ("mips/sys_dup", None),
    ],
)
def test_syscall_list_values(value: str, symbol: str | None) -> None:
    assert policy.syscall_symbol(value, "__x64_") == symbol
