"""Run-wide state of the pytest plugin, kept in `config.stash`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.catalogue import find_catalogue, load
from harness.matrix import Matrix
from harness.progress import DownloadProgress
from harness.session import VMPool
from harness.vm import VMOptions


@dataclass(frozen=True)
class Options:
    """The plugin's settings after command line and ini are merged."""

    kernels: str
    arches: str
    artefacts: str
    boot_timeout: float | None
    memory_mb: int


OPTIONS = pytest.StashKey[Options]()
MATRIX = pytest.StashKey[Matrix]()
POOL = pytest.StashKey[VMPool]()


def options_of(config: pytest.Config) -> Options:
    """The merged options of this run."""
    if OPTIONS not in config.stash:
        timeout = config.getoption("harness_boot_timeout")
        config.stash[OPTIONS] = Options(
            kernels=config.getoption("harness_kernels")
            or config.getini("harness_kernels"),
            arches=config.getoption("harness_arch") or config.getini("harness_arch"),
            artefacts=config.getoption("harness_artefacts")
            or config.getini("harness_artefacts"),
            boot_timeout=float(timeout) if timeout else None,
            memory_mb=int(config.getini("harness_memory")),
        )
    return config.stash[OPTIONS]


def matrix_of(config: pytest.Config) -> Matrix:
    """The run's kernel matrix, created on first use."""
    if MATRIX not in config.stash:
        path = config.getoption("harness_catalogue") or find_catalogue(config.rootpath)
        config.stash[MATRIX] = Matrix(
            load(path), progress=DownloadProgress(enabled=False)
        )
    return config.stash[MATRIX]


def pool_of(config: pytest.Config) -> VMPool:
    """The run's VM pool (one live VM per process), created on first use."""
    if POOL not in config.stash:
        opts = options_of(config)
        options = VMOptions(memory_mb=opts.memory_mb, boot_timeout=opts.boot_timeout)
        config.stash[POOL] = VMPool(matrix_of(config), Path(opts.artefacts), options)
    return config.stash[POOL]
