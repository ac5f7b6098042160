"""Run-wide state of the pytest plugin, kept in `config.stash`."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.agent import AgentSource
from harness.catalogue import find_catalogue, load
from harness.matrix import Matrix, Target
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
    tetragon: str
    tetragon_args: tuple[str, ...]


TETRAGON_ENV = "HARNESS_TETRAGON"
TETRAGON_ARGS_ENV = "HARNESS_TETRAGON_ARGS"
# Tetragon and its BPF objects unpack into the initramfs; give them room.
AGENT_MEMORY_MB = 2048

OPTIONS = pytest.StashKey[Options]()
AGENT = pytest.StashKey["AgentSource | None"]()
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
            tetragon=config.getoption("harness_tetragon")
            or os.environ.get(TETRAGON_ENV, "")
            or config.getini("harness_tetragon"),
            tetragon_args=tuple(
                config.getoption("harness_tetragon_args")
                or shlex.split(os.environ.get(TETRAGON_ARGS_ENV, ""))
                or shlex.split(config.getini("harness_tetragon_args"))
            ),
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


def agent_source_of(config: pytest.Config) -> AgentSource | None:
    """Where the agent comes from (--tetragon), or None: firing-check mode."""
    if AGENT not in config.stash:
        value = options_of(config).tetragon
        config.stash[AGENT] = (
            AgentSource(value, matrix_of(config).cache) if value else None
        )
    return config.stash[AGENT]


def pool_of(config: pytest.Config) -> VMPool:
    """The run's VM pool (one live VM per process), created on first use."""
    if POOL not in config.stash:
        opts = options_of(config)
        source = agent_source_of(config)
        memory = max(opts.memory_mb, AGENT_MEMORY_MB) if source else opts.memory_mb
        options = VMOptions(memory_mb=memory, boot_timeout=opts.boot_timeout)

        def agent_files(target: Target) -> dict[str, bytes]:
            bundle = source.bundle(target.arch) if source else None
            return bundle.files() if bundle else {}

        config.stash[POOL] = VMPool(
            matrix_of(config), Path(opts.artefacts), options, agent_files
        )
    return config.stash[POOL]
