"""Fixtures of the pytest plugin: the matrix, the target under test and its VM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.matrix import Matrix, Target
from harness.plugin_state import matrix_of, options_of
from harness.vm import VM, VMOptions


@pytest.fixture(scope="session")
def harness_matrix(pytestconfig: pytest.Config) -> Matrix:
    """The kernel matrix of this run (catalogue, cache, archive)."""
    return matrix_of(pytestconfig)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The kernel and arch under test, one of the --kernels x --arch matrix."""
    param = getattr(request, "param", None)
    if not isinstance(param, Target):
        raise pytest.UsageError(
            "the `target` fixture is parametrised by --kernels/--arch"
        )
    return param


@pytest.fixture(scope="session")
def vm(
    request: pytest.FixtureRequest, target: Target, harness_matrix: Matrix
) -> Iterator[VM]:
    """A booted guest of the target kernel, shared by every test on that target."""
    opts = options_of(request.config)
    artefacts = Path(opts.artefacts) / target.id / "vm"
    options = VMOptions(memory_mb=opts.memory_mb, boot_timeout=opts.boot_timeout)
    with harness_matrix.vm(target, artefacts, options) as machine:
        yield machine


@pytest.fixture(autouse=True)
def _harness_properties(request: pytest.FixtureRequest) -> None:
    # Every test on a target carries the facts needed to read its result later.
    if "target" not in request.fixturenames:
        return
    chosen: Target = request.getfixturevalue("target")
    matrix = matrix_of(request.config)
    kernel = matrix.kernel(chosen)
    record = request.node.user_properties.append
    record(("kernel", chosen.spec.name))
    record(("kernel_version", kernel.version))
    record(("kernel_release", kernel.release))
    record(("arch", chosen.arch))
    record(("accelerator", matrix.accel(chosen.arch).name))
