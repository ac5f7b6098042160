"""Fixtures of the pytest plugin: the matrix, the target under test and its VM."""

from __future__ import annotations

import pytest

from harness.matrix import Matrix, Target
from harness.plugin_state import matrix_of, pool_of
from harness.vm import VM


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


@pytest.fixture
def vm(request: pytest.FixtureRequest, target: Target) -> VM:
    """A booted guest of the target kernel, shared by every test on that target."""
    return pool_of(request.config).vm(target)


@pytest.fixture(autouse=True)
def _harness_properties(request: pytest.FixtureRequest) -> None:
    # Every test on a target carries the facts needed to read its result later.
    if "target" not in request.fixturenames:
        return
    chosen: Target = request.getfixturevalue("target")
    if "vm" in request.fixturenames:
        # Booted first: a guest that fell back from KVM to TCG says so.
        request.getfixturevalue("vm")
    for name, value in target_properties(request.config, chosen):
        request.node.user_properties.append((name, value))


def target_properties(config: pytest.Config, chosen: Target) -> list[tuple[str, str]]:
    """The junit properties that identify a target's kernel and accelerator."""
    matrix = matrix_of(config)
    kernel = matrix.kernel(chosen)
    return [
        ("kernel", chosen.spec.name),
        ("kernel_version", kernel.version),
        ("kernel_release", kernel.release),
        ("arch", chosen.arch),
        ("accelerator", matrix.accel(chosen.arch).name),
    ]
