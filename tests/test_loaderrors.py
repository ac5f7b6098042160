"""Classifying the agent's policy-load errors, on the texts recorded from Tetragon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from goldenfile import assert_golden

from harness.loaderrors import (
    LoadErrorKind,
    PolicyLoadError,
    classify,
    from_agent_log,
    from_policy_list,
    from_tetra_output,
    load_warnings,
    parse_logfmt,
)

DATA = Path(__file__).parent / "data"
KERNELS = ["5.10-amd64", "6.1-amd64", "6.12-amd64"]
K = LoadErrorKind
# What each recorded case's add did, by kernel where it differs (README table).
EXPECTED = {
    "n01-kprobe-nonexistent-function": K.HOOK_NOT_FOUND,
    "n02-kprobe-arg-index-beyond-params": None,
    "n03-kprobe-arg-index-out-of-bounds": K.ARGUMENT_MISMATCH,
    "n04-syscall-wrong-arch-prefix": K.HOOK_NOT_FOUND,
    "n05-invalid-yaml": K.INVALID_POLICY,
    "n06-unknown-field": K.INVALID_POLICY,
    "n07-bad-field-type": K.INVALID_POLICY,
    "n08-add-delete-runtime": None,
    "p07-tracepoint-list-syscalls": K.INVALID_POLICY,
    "p07b-tracepoint-list-syscalls-syscall64": None,
}
# The BPF LSM is not active on Debian's 5.10.
LSM_CASES = ("p09-lsm-file-open", "p09b-lsm-file-open-real-binary")


def golden(name: str, text: str) -> None:
    """Compare with tests/data/NAME; HARNESS_REGEN_GOLDEN=1 rewrites it."""
    assert_golden(DATA / name, text)


@pytest.fixture(scope="module")
def corpus(shared_dir: Path) -> Path:
    """shared/tetragon/recorded/corpus: failure cases n01..n08 and friends."""
    path = shared_dir / "tetragon" / "recorded" / "corpus"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the recorded Tetragon corpus is missing")
    return path


def expected_kind(kernel: str, name: str) -> LoadErrorKind | None:
    if name in LSM_CASES:
        return K.UNSUPPORTED if kernel == "5.10-amd64" else None
    return EXPECTED.get(name)


def cases(corpus: Path, kernel: str) -> list[Path]:
    return sorted(
        p.parent for p in (corpus / kernel).glob("*/tetra-tracingpolicy-add.txt")
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_cli_output_is_classified(corpus: Path, kernel: str) -> None:
    found = cases(corpus, kernel)
    assert len(found) >= 14

    for directory in found:
        text = (directory / "tetra-tracingpolicy-add.txt").read_text()
        failure = from_tetra_output(text)
        want = expected_kind(kernel, directory.name)
        if want is None:
            assert failure is None, directory
            assert "added" in text
            continue
        assert failure is not None, directory
        assert failure.kind is want, f"{directory}: {failure.reason}"
        # The agent's own words survive unchanged.
        assert failure.reason in text
        assert failure.source == "tetra"


@pytest.mark.parametrize("kernel", KERNELS)
def test_agent_log_gives_the_same_reason_as_the_cli(corpus: Path, kernel: str) -> None:
    for directory in cases(corpus, kernel):
        cli = from_tetra_output((directory / "tetra-tracingpolicy-add.txt").read_text())
        logged = from_agent_log((directory / "tetragon.log").read_text())
        if cli is None:
            assert logged == [], directory
            continue
        assert [(f.kind, f.reason) for f in logged] == [(cli.kind, cli.reason)]


def test_exact_texts_and_policy_names(corpus: Path) -> None:
    directory = corpus / "6.1-amd64"

    def read(name: str) -> str:
        return (directory / name / "tetra-tracingpolicy-add.txt").read_text()

    missing = from_tetra_output(read("n01-kprobe-nonexistent-function"))
    assert missing is not None
    assert missing.policy == "neg-nonexistent-function"
    assert missing.reason.endswith('call "this_function_does_not_exist": not found')
    prefix = from_tetra_output(read("n04-syscall-wrong-arch-prefix"))
    assert prefix is not None and "another arch's prefix" in prefix.hint
    yaml_error = from_tetra_output(read("n05-invalid-yaml"))
    assert yaml_error is not None and yaml_error.policy == ""
    assert yaml_error.reason == (
        "failed to unmarshal YAML: error converting YAML to JSON: yaml: line 9: "
        "mapping values are not allowed in this context"
    )

    lsm = corpus / "5.10-amd64/p09-lsm-file-open/tetra-tracingpolicy-add.txt"
    unsupported = from_tetra_output(lsm.read_text())
    assert unsupported is not None and unsupported.policy == "lsm-file-open"
    assert "does you kernel support the bpf LSM?" in unsupported.reason
    assert "lsm: bpf" in unsupported.hint


@pytest.mark.parametrize("kernel", KERNELS)
def test_policy_list_json(corpus: Path, kernel: str) -> None:
    path = corpus / kernel / "boot-negative" / "tetra-tracingpolicy-list.json"

    found = from_policy_list(path.read_text())

    assert found["neg-nonexistent-function"].kind is K.HOOK_NOT_FOUND
    assert found["neg-arg-index-out-of-bounds"].kind is K.ARGUMENT_MISMATCH
    assert found["neg-wrong-arch-prefix"].kind is K.HOOK_NOT_FOUND
    # n02 loads although its index is past the prototype.
    assert "neg-arg-index-beyond-params" not in found
    assert all(f.source == "policy-list" for f in found.values())


def test_warnings_of_a_policy_that_loads_anyway(corpus: Path) -> None:
    log = (
        corpus / "6.1-amd64/n02-kprobe-arg-index-beyond-params/tetragon.log"
    ).read_text()

    warnings = load_warnings(log, "neg-arg-index-beyond-params")

    assert warnings == [
        "kprobe spec pre-validation returned an error, but will continue with "
        "loading: kprobe arg 1 has an invalid index: 3 based on prototype: FuncProto"
    ]
    assert load_warnings(log, "some-other-policy") == []


def test_arm64_lsm_attach_failure_is_a_missing_feature(shared_dir: Path) -> None:
    console = shared_dir / "tetragon/recorded/6.1.176-arm64-fd-install-and-openat"
    if not console.is_dir():
        pytest.skip(f"{console} not found")
    lines = [
        line
        for line in (console / "console.log").read_text().splitlines()
        if "failed to attach LSM probe" in line
    ]

    assert len(lines) == 1
    fields = parse_logfmt(lines[0])
    failure = classify(f"{fields['msg']}: {fields['error']}")
    assert failure.kind is K.UNSUPPORTED


def test_logfmt_unescapes_quoted_values() -> None:
    line = (
        'level=warn msg="Server AddTracingPolicy request failed" '
        'error="call \\"f\\": not found" metadata.namespace="" metadata.name=p1'
    )

    assert parse_logfmt(line) == {
        "level": "warn",
        "msg": "Server AddTracingPolicy request failed",
        "error": 'call "f": not found',
        "metadata.namespace": "",
        "metadata.name": "p1",
    }
    assert from_agent_log(line, policy="p2") == []
    assert from_agent_log(line, policy="p1")[0].policy == "p1"


def test_unknown_texts_are_kept_as_other() -> None:
    failure = classify("  something nobody has seen before  ")

    assert failure.kind is K.OTHER
    assert failure.reason == "something nobody has seen before"
    error = PolicyLoadError(failure, "6.1-x86_64")
    assert str(error).startswith("a policy failed to load on 6.1-x86_64: other: some")


def test_classification_golden(corpus: Path) -> None:
    table = {}
    for kernel in KERNELS:
        for directory in cases(corpus, kernel):
            text = (directory / "tetra-tracingpolicy-add.txt").read_text()
            failure = from_tetra_output(text)
            key = f"{kernel}/{directory.name}"
            table[key] = failure.kind.value if failure else "loaded"

    golden("loaderrors-classified.json", json.dumps(table, indent=1) + "\n")


def test_older_agents_wording_of_a_missing_function() -> None:
    # Seen from a real Tetragon v1.3.0 `tetra tracingpolicy add` on 6.1 x86_64.
    output = (
        "Error: failed to add tracing policy: rpc error: code = Unknown desc = "
        "policy handler 'tracing' failed loading policy 'missing-hook': validation "
        'failed: kprobe spec pre-validation failed: call "harness_no_such_function" '
        "type name harness_no_such_function: not found"
    )
    failure = from_tetra_output(output)
    assert failure is not None
    assert failure.kind is LoadErrorKind.HOOK_NOT_FOUND
    assert failure.policy == "missing-hook"
    assert failure.reason.endswith("harness_no_such_function: not found")
