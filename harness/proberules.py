"""How a kernel decides whether `kprobe_events` accepts a symbol, learned by trying.

Three rules decide it on the kernels of the matrix: a blacklisted function is
refused; a function without an ftrace location ("notrace", absent from
available_filter_functions) is refused unless the kernel was built with
CONFIG_KPROBE_EVENTS_ON_NOTRACE; and since the unique-symbol check (6.7, in
stable kernels too) a name several functions share is refused. Which of them
apply is learned per kernel from real probes on a sample of every kind of
symbol, so a backport or a config change shows up as data, and the inventory
records how often the rules predicted the probes right.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.errors import GuestError
from harness.vm import VM

log = logging.getLogger(__name__)

TRACING = "/sys/kernel/tracing"
PROBE_GROUP = "harness_probe"
# How many symbols of each kind the probe sample takes.
SAMPLE_PER_KIND = 40


@dataclass(frozen=True)
class ProbeRules:
    """How this kernel decides whether `kprobe_events` accepts a symbol.

    Learned from the probe sample rather than assumed from the version: stable
    kernels backport the unique-symbol check (6.1.176 has it).
    """

    # Functions without an ftrace location ("notrace") are refused.
    notrace_refused: bool
    # A name with several text symbols is refused (EADDRNOTAVAIL).
    unique_required: bool
    # How many sampled symbols the rules predicted right, of how many.
    agreed: int
    sampled: int


def traceable_aliases(
    groups: list[list[str]], filters: frozenset[str]
) -> frozenset[str]:
    """Names missing from available_filter_functions that share an address with
    one listed there: ftrace lists one name per address, and the kernel decides
    "notrace" by address, so they take probes (`__x64_sys_inotify_init`)."""
    return (
        frozenset(
            n for names in groups if any(x in filters for x in names) for n in names
        )
        - filters
    )


@dataclass(frozen=True)
class SymbolTables:
    """The symbol sets that decide whether `kprobe_events` accepts a name."""

    text: frozenset[str]
    filters: frozenset[str]
    blacklist: frozenset[str]
    dups: frozenset[str]
    aliases: frozenset[str]


def predict_probe(symbol: str, tables: SymbolTables, rules: ProbeRules) -> str:
    """Why `kprobe_events` would refuse `symbol` ("" if it would accept it)."""
    if symbol not in tables.text:
        return "not in kallsyms"
    if symbol in tables.blacklist:
        return "on the kprobe blacklist"
    if rules.unique_required and symbol in tables.dups:
        return "several text symbols have this name"
    traceable = tables.filters
    base = symbol.split(".", 1)[0]
    # The kernel accepts a clone (`f.cold`) when the function it belongs to is
    # traceable, so the base name counts too.
    if (
        rules.notrace_refused
        and symbol not in traceable
        and base not in traceable
        and symbol not in tables.aliases
    ):
        return "notrace: not in available_filter_functions"
    return ""


def _pick(pool: Iterable[str], count: int) -> list[str]:
    # Deterministic but spread across the name space: the same kernel always
    # samples the same symbols, so captures are reproducible.
    return sorted(pool, key=lambda s: zlib.crc32(s.encode()))[:count]


def probe_sample(t: SymbolTables) -> list[str]:
    """Symbols of every kind the rules distinguish, to test for real."""
    plain = t.text - t.blacklist - t.dups - t.aliases
    kinds = [
        plain & t.filters,
        {s for s in plain - t.filters if "." not in s},
        {s for s in plain - t.filters if "." in s},
        t.dups & t.filters,
        t.blacklist & t.text,
    ]
    return [s for pool in kinds for s in _pick(pool, SAMPLE_PER_KIND)]


def learn_rules(results: Mapping[str, str], t: SymbolTables) -> tuple[bool, bool]:
    """Whether notrace functions and repeated names were refused in a sample."""

    def mostly_refused(pool: list[str]) -> bool:
        refused = sum(1 for s in pool if results[s])
        return bool(pool) and refused >= 0.9 * len(pool)

    notrace = [
        s
        for s in results
        if s not in t.filters
        and s.split(".", 1)[0] not in t.filters
        and s not in t.dups
        and s not in t.blacklist
    ]
    repeated = [s for s in results if s in t.dups and s in t.filters]
    return mostly_refused(notrace), mostly_refused(repeated)


PROBE_SCRIPT = f"""
cd {TRACING} || exit 2
while read -r sym; do
    if echo "p:{PROBE_GROUP}/t $sym" >> kprobe_events 2>/tmp/probe.err; then
        echo "+ $sym"
        echo "-:{PROBE_GROUP}/t" >> kprobe_events
    else
        echo "- $sym $(sed 's/.*write error: //' /tmp/probe.err)"
    fi
done < /tmp/probe.syms
dmesg | grep -E 'trace_kprobe: ' | sed 's/^\\[[^]]*\\] *//'
"""


def run_probes(vm: VM, symbols: list[str]) -> dict[str, str]:
    """Add and remove a kprobe on each symbol: "" if accepted, else the error."""
    vm.copy_in(("\n".join(symbols) + "\n").encode(), "/tmp/probe.syms")
    result = vm.shell(PROBE_SCRIPT, timeout=60 + len(symbols) * 0.2)
    if result.status != 0:
        raise GuestError(
            f"{vm.kernel.id}: kprobe test script failed ({result.status}): "
            + result.stderr.decode(errors="replace")[-500:]
        )
    verdicts: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for line in result.text.splitlines():
        if line.startswith("+ "):
            verdicts[line[2:]] = ""
        elif line.startswith("- "):
            sym, _, error = line[2:].partition(" ")
            verdicts[sym] = error.strip() or "refused"
        elif match := re.match(r"trace_kprobe: (.+?) (\S+)$", line):
            reasons[match[2]] = match[1]
    # The kernel log says why (e.g. "Could not probe notrace function").
    return {
        s: f"{e} ({reasons[s]})" if e and s in reasons else e
        for s, e in verdicts.items()
    }


def learn(
    probes: Mapping[str, str], sample: list[str], tables: SymbolTables
) -> ProbeRules:
    """The rules this kernel follows, and how well they predict every probe tried."""
    notrace, unique = learn_rules({s: probes[s] for s in sample}, tables)
    rules = ProbeRules(notrace, unique, 0, 0)
    agreed = sum(
        1
        for s, error in probes.items()
        if bool(predict_probe(s, tables, rules)) == bool(error)
    )
    if agreed < len(probes):
        log.info(
            "probe rules disagree on %d of %d symbols",
            len(probes) - agreed,
            len(probes),
        )
    return ProbeRules(notrace, unique, agreed, len(probes))
