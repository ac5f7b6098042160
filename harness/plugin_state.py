"""Run-wide state of the pytest plugin, kept in `config.stash`."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.agent import AgentSource
from harness.catalogue import Catalogue, find_catalogue, load
from harness.errors import HarnessError
from harness.matrix import Matrix, Target
from harness.preflight import TETRAGON_EMPTY, Preflight
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

INI_DEFAULTS = {
    "harness_kernels": "default",
    "harness_arch": "x86_64,arm64",
    "harness_artefacts": "artefacts",
    "harness_report_dir": "reports",
    "harness_memory": "1024",
    "harness_tetragon": "",
    "harness_tetragon_args": "",
}

OPTIONS = pytest.StashKey[Options]()
AGENT = pytest.StashKey["AgentSource | None"]()
CATALOGUE = pytest.StashKey[Catalogue]()
MATRIX = pytest.StashKey[Matrix]()
TARGETS = pytest.StashKey[list[Target]]()
POOL = pytest.StashKey[VMPool]()
# Options that only a run of the harness would be given.
HARNESS_OPTIONS = (
    "harness_kernels", "harness_arch", "harness_catalogue", "harness_artefacts",
    "harness_boot_timeout", "harness_tetragon", "harness_tetragon_args",
)  # fmt: skip


def _where(config: pytest.Config, name: str, env: str = "") -> str:
    """How an error names a setting: its flag, variable or ini key, with its value."""
    flag = "--" + name.removeprefix("harness_").replace("_", "-")
    if _given(config, name):
        return f"{flag}={config.getoption(name)}"
    if env and os.environ.get(env):
        return f"{env}={os.environ[env]}"
    value = config.getini(name)
    if config.inipath is not None and value != INI_DEFAULTS.get(name):
        return f"{config.inipath}: {name} = {value!r}"
    return f"{flag} (default {value})"


def _given(config: pytest.Config, name: str) -> bool:
    """Whether the option was on the command line, even as `--arch=` (empty)."""
    return config.getoption(name) is not None


def _setting(config: pytest.Config, name: str, env: str = "") -> str:
    """A setting from its option, else its variable, else its ini key (same name).

    An option given empty stays empty, for the checks to refuse: falling back
    to the default would run what was not asked for. A variable set empty
    counts as unset, as the shell's `VAR= pytest` idiom means.
    """
    if _given(config, name):
        return str(config.getoption(name))
    if env and os.environ.get(env):
        return os.environ[env]
    return str(config.getini(name))


def options_of(config: pytest.Config) -> Options:
    """The merged options of this run."""
    if OPTIONS not in config.stash:
        check = Preflight()
        value = str(config.getini("harness_memory"))
        where = f"{config.inipath or 'ini'}: harness_memory = {value!r}"
        memory = check.memory(value, where)
        options = Options(
            kernels=_setting(config, "harness_kernels"),
            arches=_setting(config, "harness_arch"),
            artefacts=_setting(config, "harness_artefacts"),
            boot_timeout=_boot_timeout(config, check),
            memory_mb=memory or 0,
            tetragon=_setting(config, "harness_tetragon", TETRAGON_ENV),
            tetragon_args=tuple(
                config.getoption("harness_tetragon_args")
                or shlex.split(os.environ.get(TETRAGON_ARGS_ENV, ""))
                or shlex.split(config.getini("harness_tetragon_args"))
            ),
        )
        check.done()
        config.stash[OPTIONS] = options
    return config.stash[OPTIONS]


def _boot_timeout(config: pytest.Config, check: Preflight) -> float | None:
    """--boot-timeout in seconds, or None: the default, scaled to the accelerator."""
    timeout = config.getoption("harness_boot_timeout")
    if timeout is None:
        return None
    return check.seconds(timeout, f"--boot-timeout={timeout}")


def catalogue_path(config: pytest.Config) -> Path:
    """--catalogue, else the nearest kernels.yaml from the rootdir up."""
    path: Path | None = config.getoption("harness_catalogue")
    return path or find_catalogue(config.rootpath)


def is_harness_run(config: pytest.Config) -> bool:
    """Whether this run uses the harness: its options, a catalogue or a library."""
    given = any(_given(config, dest) for dest in HARNESS_OPTIONS)
    # The harness collects YAML files under these folders of the rootdir.
    library = any((config.rootpath / d).is_dir() for d in ("scenarios", "policies"))
    return given or library or catalogue_path(config).is_file()


def check_run(config: pytest.Config) -> None:
    """Check every setting of the run at once; raise one ConfigError listing all."""
    check = Preflight()
    check.environment()
    check.attempt(lambda: options_of(config))
    catalogue = check.catalogue(catalogue_path(config))
    if catalogue is not None:
        config.stash[CATALOGUE] = catalogue
    kernels, arches = "harness_kernels", "harness_arch"
    check.kernels(catalogue, _setting(config, kernels), _where(config, kernels))
    check.arches(_setting(config, arches), _where(config, arches))
    check.selection(
        catalogue, _setting(config, kernels), _setting(config, arches),
        _where(config, kernels),
    )  # fmt: skip
    for directory in ("harness_artefacts", "harness_report_dir"):
        check.directory(_setting(config, directory), _where(config, directory))
    name = "harness_tetragon"
    tetragon = _setting(config, name, TETRAGON_ENV)
    # Empty from the variable or the ini is no agent; given empty, a slip.
    empty = f"{TETRAGON_EMPTY}, or leave the option out for firing checks"
    check.tetragon(
        tetragon,
        _where(config, name, TETRAGON_ENV),
        empty if _given(config, name) else "",
    )
    for arg in config.getoption("harness_tetragon_args") or ():
        if not arg.strip():
            # An unset variable in `--tetragon-arg=$FLAGS` would reach the agent
            # as an empty argument, which it takes as a positional one.
            check.add(
                f"--tetragon-arg={arg}",
                "empty; pass one agent flag, such as "
                "--tetragon-arg=--disable-kprobe-multi, or leave the option out",
            )
    check.done()


def matrix_of(config: pytest.Config) -> Matrix:
    """The run's kernel matrix, created on first use."""
    if MATRIX not in config.stash:
        catalogue = config.stash.get(CATALOGUE, None) or load(catalogue_path(config))
        config.stash[MATRIX] = Matrix(
            catalogue, progress=DownloadProgress(enabled=False)
        )
    return config.stash[MATRIX]


def targets_of(config: pytest.Config) -> list[Target]:
    """The kernel x arch pairs this run covers (a usage error if it names none)."""
    if TARGETS not in config.stash:
        opts = options_of(config)
        try:
            targets = matrix_of(config).targets(opts.kernels, opts.arches)
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
        config.stash[TARGETS] = targets
    return config.stash[TARGETS]


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
