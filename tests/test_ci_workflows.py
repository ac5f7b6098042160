"""The nightly CI definitions: valid by their published schemas, and in step
with the catalogue and the plugin's options.

check-jsonschema ships the GitHub workflow and GitLab CI schemas inside the
package (`--builtin-schema`), so validation needs no network.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.catalogue import load

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / "ci" / "github" / "nightly.yml"
GITLAB = ROOT / "ci" / "gitlab" / "nightly.gitlab-ci.yml"
# Hosts a workflow must not pin: the agent and images come from CI variables.
HOSTS = re.compile(
    r"https?://|pypi\.org|files\.pythonhosted|ghcr\.io|docker\.io|quay\.io|"
    r"registry\.|deb\.debian\.org|githubusercontent"
)


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with a builtin schema, as CI would run it."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
         str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "schema"),
    [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")],
)
def test_workflow_validates_against_its_schema(path: Path, schema: str) -> None:
    done = validate(path, schema)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "nightly.yml"
    bad.write_text(GITHUB.read_text().replace("runs-on:", "run-on:", 1))
    assert validate(bad, "vendor.github-workflows").returncode == 1


def read(path: Path) -> dict[str, Any]:
    """A workflow as data."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def default_kernels() -> set[str]:
    """The kernels of `--kernels=default`."""
    return {spec.name for spec in load(ROOT / "kernels.yaml").select("default")}


def test_github_matrix_covers_the_default_kernels_on_both_arches() -> None:
    jobs = read(GITHUB)["jobs"]
    matrix = jobs["shard"]["strategy"]["matrix"]
    assert set(matrix["kernel"]) == default_kernels()
    assert set(matrix["arch"]) == {"x86_64", "arm64"}
    steps = jobs["shard"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == "${{ env.HARNESS_CACHE_DIR }}"
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert any("ci/install.sh" in s.get("run", "") for s in steps)
    report = jobs["report"]
    assert report["needs"] == "shard" and report["if"] == "always()"
    runs = "\n".join(s.get("run", "") for s in report["steps"])
    assert "harness report merge reports/*/matrix.json" in runs
    assert '>> "$GITHUB_STEP_SUMMARY"' in runs


def test_gitlab_matrix_covers_the_default_kernels_on_both_arches() -> None:
    data = read(GITLAB)
    job = data["kernel-matrix"]
    (axes,) = job["parallel"]["matrix"]
    assert set(axes["KERNEL"]) == default_kernels()
    assert set(axes["ARCH"]) == {"x86_64", "arm64"}
    assert job["cache"]["paths"] == [".harness-cache/"]
    assert data["variables"]["HARNESS_CACHE_DIR"] == "$CI_PROJECT_DIR/.harness-cache"
    assert job["artifacts"]["when"] == "always"
    merge = data["merge-matrix"]
    assert "harness report merge reports/*/matrix.json" in " ".join(merge["script"])
    assert all(rule["when"] == "always" for rule in merge["rules"])


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_no_registry_host_is_named(path: Path) -> None:
    text = path.read_text()
    assert not HOSTS.search(text), HOSTS.search(text)
    assert "HARNESS_TETRAGON" in text


def shard_command(path: Path) -> list[str]:
    """The shard's pytest command line, with the matrix variables filled in."""
    text = path.read_text()
    found = re.search(r"\.venv/bin/pytest [^\n]*(?:\n +--[^\n]*)*", text)
    assert found, f"no pytest command in {path}"
    line = " ".join(found.group(0).split())
    line = line.replace("$KERNEL", "6.1").replace("$ARCH", "x86_64")
    return shlex.split(line)[1:]


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_shard_command_is_one_pytest_accepts(path: Path, tmp_path: Path) -> None:
    args = shard_command(path)
    assert "--kernels=6.1" in args and "--arch=x86_64" in args
    assert "--report-dir=reports/6.1-x86_64" in args
    # Collection builds the targets from the catalogue; nothing boots.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--collect-only", "-q",
         "-p", "harness.reportplugin", "-p", "no:cacheprovider",
         f"--junitxml={tmp_path / 'junit.xml'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "scenarios/file-access.yaml::etc-read[6.1-x86_64]" in done.stdout
