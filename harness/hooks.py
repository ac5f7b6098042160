"""Hook checks: every hook of every policy against a kernel inventory, no agent.

Severities follow what the agent would do: `error` when the policy will not
load or a hook cannot work at all on that kernel, `warning` when it loads but
reads the wrong thing or may stay silent, `info` for what is worth knowing
(Tetragon logs a pre-validation warning, a slower attach path is used, a
uprobe binary could not be looked at). Each finding says why in one line, with
the evidence from the inventory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.argtypes import c_int, compat, split_decl
from harness.inventory import Inventory, Param
from harness.policy import (
    AnyHook,
    Arg,
    KprobeHook,
    LsmHook,
    Policy,
    TracepointHook,
    UprobeHook,
)
from harness.policyschema import Severity
from harness.symbols import (
    PREFIX_OWNERS,
    WRONG_PREFIX,
    abi_prefix,
    call_symbol,
    foreign_prefix,
)

# Kernel features the hooks and actions need, by config option.
TRAMPOLINES = "DYNAMIC_FTRACE_WITH_DIRECT_CALLS"
OVERRIDE_HELPER = "BPF_KPROBE_OVERRIDE"
KPROBE_MULTI = "FPROBE"


@dataclass(frozen=True)
class Finding:
    """One checked fact about one hook of one policy on one kernel and arch."""

    kernel: str
    arch: str
    version: str
    policy: str
    hook: str
    severity: Severity
    code: str
    reason: str
    where: str = ""

    @property
    def cell(self) -> str:
        """The matrix cell, `6.1-arm64`."""
        return f"{self.kernel}-{self.arch}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# -- the checks ----------------------------------------------------------------


class Checker:
    """Checks one policy against one inventory, collecting findings."""

    def __init__(self, policy: Policy, inv: Inventory) -> None:
        self.policy = policy
        self.inv = inv
        self.prefix = abi_prefix(inv.arch)
        self.found: list[Finding] = []

    def add(
        self, hook: str, severity: Severity, code: str, reason: str, where: str = ""
    ) -> None:
        """Record a finding of this policy on this kernel."""
        inv = self.inv
        self.found.append(
            Finding(
                inv.name,
                inv.arch,
                inv.version,
                self.policy.id,
                hook,
                severity,
                code,
                reason,
                where,
            )
        )

    def has(self, option: str) -> bool:
        """Whether a config option is `y`; assumed so when the config is unknown."""
        return not self.inv.config or self.inv.enabled(option)

    # -- symbols --

    def symbols(self, hook: KprobeHook) -> list[tuple[str, bool]]:
        """The kernel symbols a kprobe hook attaches to on this arch."""
        if hook.generated is not None:
            return self.generated(hook)
        out: list[tuple[str, bool]] = []
        for call in hook.calls:
            sym, problem = call_symbol(call, self.inv.arch, bool(hook.list_name))
            if sym is not None:
                out.append((sym, call.syscall))
            elif problem.startswith(WRONG_PREFIX):
                reason = problem.removeprefix(WRONG_PREFIX)
                self.add(hook.label, "error", "wrong-arch-prefix", reason, hook.where)
            else:
                reason = f"{call.name!r} in list:{hook.list_name} {problem}"
                self.add(hook.label, "error", "list-value", reason, hook.where)
        return out

    def foreign_prefix(self, name: str) -> str:
        """The other-arch syscall prefix `name` starts with, or ""."""
        return foreign_prefix(name, self.prefix)

    def generated(self, hook: KprobeHook) -> list[tuple[str, bool]]:
        """Symbols of a generated list, as the agent would generate them here."""
        spec = hook.generated
        assert spec is not None
        inv = self.inv
        if spec.type == "generated_syscalls":
            names = (
                self.prefix + "sys_" + tp.split("/sys_enter_", 1)[1]
                for tp in inv.tracepoints
                if tp.startswith("syscalls/sys_enter_")
            )
            found = [(s, True) for s in sorted(names) if s in inv.functions]
            what = "syscalls with a BTF prototype"
        else:
            try:
                pattern = re.compile(spec.pattern)
            except re.error as e:
                self.add(
                    hook.label, "error", "list-pattern", f"bad pattern: {e}", hook.where
                )
                return []
            matches = (s for s in inv.filter_functions if pattern.search(s))
            found = [(s, False) for s in sorted(matches)]
            what = f"available_filter_functions matching {spec.pattern!r}"
        if not found:
            self.add(
                hook.label,
                "error",
                "list-empty",
                f"list:{spec.name} generates no symbol here (no {what})",
                hook.where,
            )
        return found

    def attachable(self, hook: KprobeHook, sym: str, syscall: bool) -> bool:
        """Whether a kprobe on `sym` loads; the reason why not becomes a finding."""
        inv = self.inv
        lost: Severity = "info" if hook.ignore_not_found else "error"
        skip = " (ignored: ignore.callNotFound)" if hook.ignore_not_found else ""
        in_btf = sym in inv.functions
        if sym not in inv.text_symbols and not in_btf:
            clones = inv.clones(sym)
            if clones:
                shown = ", ".join(clones[:3]) + (" ..." if len(clones) > 3 else "")
                reason = f"only {shown} exist(s): compiler clones, not {sym}"
                self.add(hook.label, lost, "only-clones", reason + skip, hook.where)
                return False
            hint = ""
            if foreign := self.foreign_prefix(sym):
                hint = f"; it is the {PREFIX_OWNERS[foreign]} name of a syscall"
            elif syscall:
                hint = f"; {inv.arch} has no such syscall"
            elif f"__{sym}" in inv.text_symbols:
                hint = f"; __{sym} exists"
            reason = f"{sym} is neither in kallsyms nor in BTF{hint}"
            self.add(hook.label, lost, "symbol-missing", reason + skip, hook.where)
            return False
        if sym not in inv.text_symbols:
            reason = f"BTF describes {sym} but kallsyms has no such symbol (inlined)"
            self.add(hook.label, lost, "symbol-inlined", reason + skip, hook.where)
            return False
        if inv.has_btf and not in_btf:
            clone = " (a compiler clone)" if "." in sym else ""
            reason = (
                f"{sym}{clone} is in kallsyms but not in BTF, so Tetragon's "
                "validation fails (call not found)"
            )
            self.add(hook.label, lost, "btf-missing", reason + skip, hook.where)
            return False
        return self.probeable(hook, sym)

    def probeable(self, hook: KprobeHook, sym: str) -> bool:
        """Whether the kernel accepts a kprobe on an existing symbol."""
        inv = self.inv
        tested = inv.probes.get(sym)
        predicted = inv.probe_refusal(sym)
        if tested:
            evidence = f"kprobe_events refused it in the guest: {tested}"
            if predicted:
                evidence += f"; {predicted}"
            self.add(
                hook.label, "error", "not-probeable", f"{sym}: {evidence}", hook.where
            )
            return False
        if tested is None and predicted:
            rules = inv.rules
            reason = (
                f"{sym}: {predicted}, which this kernel refuses to probe (rule held "
                f"for {rules.agreed}/{rules.sampled} probes tried)"
            )
            self.add(hook.label, "error", "not-probeable", reason, hook.where)
            return False
        if sym in inv.duplicate_symbols and not inv.rules.unique_required:
            reason = (
                f"several functions are named {sym}: the probe lands on one of them"
            )
            self.add(hook.label, "warning", "duplicate-symbol", reason, hook.where)
        return True

    # -- arguments --

    def args(
        self, hook: AnyHook, args: Iterable[Arg], params: Sequence[Param], owner: str
    ) -> None:
        """Argument indices against the parameters, and types against the policy's."""
        for arg in args:
            at = f"{hook.where}.args[{arg.position}]"
            if arg.index >= len(params):
                shown = ", ".join(str(p) for p in params) or "none"
                reason = (
                    f"reads index {arg.index} but {owner} has {len(params)} "
                    f"parameter(s) ({shown}): the agent loads it and reads garbage"
                )
                self.add(hook.label, "error", "arg-index", reason, at)
                continue
            if arg.resolve:
                continue
            param = params[arg.index]
            self.type_check(
                hook.label, arg.type, param, f"index {arg.index} of {owner}", at
            )

    def type_check(
        self,
        label: str,
        ptype: str,
        param: Param,
        what: str,
        at: str,
        widths: bool = True,
    ) -> None:
        """A finding if reading `param` as `ptype` reads the wrong thing."""
        resolved = param.resolved
        if resolved == param.type:
            resolved = c_int(self.inv.resolve_typedef(param.type))
        verdict = compat(ptype, param.type, resolved)
        # A return value read narrower (an fd as `int` of a `long`) is the norm.
        if verdict is None or (verdict[0] == "info" and not widths):
            return
        severity, expects = verdict
        reason = f"{what} is `{param}`, the policy reads it as `{ptype}` ({expects})"
        code = "arg-width" if severity == "info" else "arg-type"
        self.add(label, severity, code, reason, at)

    def syscall_params(self, sym: str) -> list[Param] | None:
        """A syscall's parameters, from its sys_enter tracepoint format."""
        name = sym[len(self.prefix) :].removeprefix("sys_")
        fields = self.inv.tracepoint_fields(f"syscalls/sys_enter_{name}")
        if fields is None:
            return None
        decls = [split_decl(f) for f in fields]
        names = [p.name for p in decls]
        start = names.index("__syscall_nr") + 1 if "__syscall_nr" in names else 4
        return decls[start:]

    def kprobe_args(self, hook: KprobeHook, sym: str, syscall: bool) -> None:
        """Arguments and return value of one attachable kprobe symbol."""
        if syscall:
            params = self.syscall_params(sym)
            if params is None:
                if hook.args:
                    reason = f"no sys_enter tracepoint for {sym}: arguments unchecked"
                    self.add(hook.label, "info", "args-unchecked", reason, hook.where)
                return
            owner = f"syscall {sym}"
            ret = Param("long", "long int")
        else:
            proto = self.inv.prototype(sym)
            if proto is None:
                return
            params, owner, ret = list(proto.params), sym, proto.ret
        self.args(hook, hook.args, params, owner)
        if hook.returns and hook.return_arg is not None:
            at = f"{hook.where}.returnArg"
            if ret.type == "void":
                reason = f"{owner} returns void: the returned value read is garbage"
                self.add(hook.label, "warning", "return-void", reason, at)
            else:
                what = f"the return of {owner}"
                self.type_check(hook.label, hook.return_arg.type, ret, what, at, False)

    # -- hooks --

    def kprobe(self, hook: KprobeHook) -> None:
        """Symbols, arguments, return value and actions of a kprobe or fentry."""
        before = len(self.found)
        symbols = self.symbols(hook)
        fentry = hook.section == "fentries"
        if fentry:
            self.needs_trampolines(hook, "fentry programs")
        for sym, syscall in symbols:
            if self.attachable(hook, sym, syscall):
                self.kprobe_args(hook, sym, syscall)
                if "Override" in hook.actions:
                    self.override(hook, sym, syscall)
        if len(symbols) > 1:
            self.found[before:] = merge(self.found[before:], len(symbols))

    def needs_trampolines(self, hook: AnyHook, what: str) -> bool:
        """Whether BPF trampolines can attach here; an error finding if not."""
        if self.has(TRAMPOLINES):
            return True
        reason = (
            f"{what} need BPF trampolines, and CONFIG_{TRAMPOLINES} is not set on "
            f"this {self.inv.arch} kernel"
        )
        self.add(hook.label, "error", "no-trampolines", reason, hook.where)
        return False

    def multi(self) -> bool:
        """Whether Tetragon attaches this policy's kprobes with kprobe_multi."""
        disabled = self.policy.options.get("disable-kprobe-multi", "") in ("true", "1")
        # Unknown config: claim no refusal that depends on kprobe_multi.
        return self.inv.enabled(KPROBE_MULTI) and not disabled

    def override(self, hook: KprobeHook, sym: str, syscall: bool) -> None:
        """Whether an Override action can take effect on `sym` here."""
        if sym.startswith("security_"):
            if not self.needs_trampolines(
                hook, "Override on security_ hooks (fmod_ret)"
            ):
                return
            # arm64 falls back to single kprobes when a policy overrides.
            if self.multi() and self.inv.arch != "arm64":
                reason = (
                    f"CONFIG_{KPROBE_MULTI}=y, so Tetragon attaches with kprobe_multi "
                    f"and refuses Override on {sym} (set spec option "
                    "disable-kprobe-multi: true)"
                )
                self.add(hook.label, "error", "override-multi", reason, hook.where)
        elif syscall:
            if not self.has(OVERRIDE_HELPER):
                reason = (
                    f"Override on a syscall needs bpf_override_return, and "
                    f"CONFIG_{OVERRIDE_HELPER} is not set"
                )
                self.add(
                    hook.label, "error", "override-unsupported", reason, hook.where
                )
            elif sym not in self.inv.error_injection:
                reason = f"{sym} is not on the error-injection list: cannot override"
                self.add(
                    hook.label, "error", "override-unsupported", reason, hook.where
                )
        else:
            reason = "Override works only on syscalls and security_ functions"
            self.add(hook.label, "error", "override-target", reason, hook.where)

    def tracepoint(self, hook: TracepointHook) -> None:
        """Existence, argument indices and types of a (raw) tracepoint."""
        name = f"{hook.subsystem}/{hook.event}"
        if hook.raw:
            proto = self.inv.raw_tracepoint(hook.event)
            if proto is None:
                reason = (
                    f"no raw tracepoint {hook.event} (no btf_trace_{hook.event} in BTF)"
                )
                self.add(hook.label, "error", "tracepoint-missing", reason, hook.where)
                return
            self.args(hook, hook.args, proto.params, f"raw tracepoint {hook.event}")
            return
        fields = self.inv.tracepoint_fields(name)
        if fields is None:
            known = any(
                tp.startswith(hook.subsystem + "/") for tp in self.inv.tracepoints
            )
            where = f"subsystem {hook.subsystem} has no event {hook.event}"
            reason = where if known else f"no tracepoint subsystem {hook.subsystem}"
            self.add(hook.label, "error", "tracepoint-missing", reason, hook.where)
            return
        params = [split_decl(f) for f in fields]
        for arg in hook.args:
            at = f"{hook.where}.args[{arg.position}]"
            if arg.index >= len(params):
                reason = (
                    f"{name} has {len(params)} fields (common ones included, last "
                    f"`{params[-1]}`), the policy reads field {arg.index}"
                )
                self.add(hook.label, "error", "arg-index", reason, at)
            elif "[" not in params[arg.index].type:
                self.type_check(
                    hook.label, arg.type, params[arg.index], f"field {arg.index}", at
                )

    def lsm(self, hook: LsmHook) -> None:
        """BPF LSM support, the hook's BTF prototype and its arguments."""
        inv = self.inv
        if not self.has("BPF_LSM"):
            reason = "CONFIG_BPF_LSM is not set: no BPF LSM programs"
            self.add(hook.label, "error", "lsm-unsupported", reason, hook.where)
            return
        if "bpf" not in inv.lsms:
            active = ",".join(inv.lsms) or "none"
            reason = (
                f"bpf is not an active LSM (active: {active}); boot with lsm=...,bpf"
            )
            self.add(hook.label, "error", "lsm-inactive", reason, hook.where)
        if not self.needs_trampolines(hook, "BPF LSM programs"):
            return
        proto = inv.prototype(f"bpf_lsm_{hook.hook}")
        if proto is None:
            reason = (
                f"no bpf_lsm_{hook.hook} in BTF: the kernel has no LSM hook {hook.hook}"
            )
            self.add(hook.label, "error", "lsm-hook-missing", reason, hook.where)
            return
        self.args(hook, hook.args, proto.params, f"LSM hook {hook.hook}")

    def uprobe(self, hook: UprobeHook) -> None:
        """Kernel uprobe support, and whether the binary is in the harness guest."""
        if not self.has("UPROBES"):
            reason = "CONFIG_UPROBES is not set: no uprobes"
            self.add(hook.label, "error", "uprobe-unsupported", reason, hook.where)
            return
        if hook.path in self.inv.guest_files:
            reason = f"{hook.path} is in the harness guest; its symbols are not checked"
        else:
            reason = (
                f"{hook.path} is not in the harness guest (busybox only): unchecked"
            )
        self.add(hook.label, "info", "uprobe-binary", reason, hook.where)

    # -- the policy as a whole --

    def policy_findings(self) -> None:
        """Kernel-independent findings of the policy file, on this cell too."""
        labels = {h.where: h.label for h in self.policy.hooks}
        for f in self.policy.findings:
            hook = next(
                (label for where, label in labels.items() if f.where.startswith(where)),
                "(policy)",
            )
            self.add(hook, f.severity, f.code, f.message, f.where)

    def enforcers(self) -> None:
        """An enforcer overrides syscalls: it needs a way to do so here."""
        if not self.policy.enforcer_calls:
            return
        inv = self.inv
        if self.has(OVERRIDE_HELPER):
            return
        if self.has(TRAMPOLINES) and inv.error_injection:
            return
        reason = (
            f"the enforcer needs bpf_override_return (CONFIG_{OVERRIDE_HELPER}) or "
            "fmod_ret on syscalls (an error-injection list); this kernel has neither"
        )
        self.add("enforcer", "error", "enforcer-unsupported", reason, "spec.enforcers")

    def kprobe_multi(self) -> None:
        """Without fprobe, every kprobe symbol is its own attachment."""
        kprobes = [h for h in self.policy.hooks if isinstance(h, KprobeHook)]
        count = sum(max(1, len(h.calls)) for h in kprobes if h.section == "kprobes")
        if count > 1 and not self.has(KPROBE_MULTI):
            reason = (
                f"no CONFIG_{KPROBE_MULTI}: Tetragon attaches {count} single kprobes "
                "instead of one kprobe_multi link (slower to load)"
            )
            self.add("(policy)", "info", "no-kprobe-multi", reason, "spec.kprobes")

    def run(self) -> list[Finding]:
        """Every finding of the policy on this kernel and arch."""
        self.policy_findings()
        if not self.inv.config:
            reason = "no kernel config (package or /proc/config.gz): features assumed"
            self.add("(policy)", "info", "config-unknown", reason)
        for hook in self.policy.hooks:
            if isinstance(hook, KprobeHook):
                self.kprobe(hook)
            elif isinstance(hook, TracepointHook):
                self.tracepoint(hook)
            elif isinstance(hook, LsmHook):
                self.lsm(hook)
            else:
                self.uprobe(hook)
        self.enforcers()
        self.kprobe_multi()
        return self.found


def merge(findings: list[Finding], total: int) -> list[Finding]:
    """One finding per kind for a list hook, naming how many symbols it hit."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.severity, f.code), []).append(f)
    merged = []
    for group in groups.values():
        first = group[0]
        more = f"; and {len(group) - 1} more" if len(group) > 1 else ""
        reason = f"{len(group)} of {total} symbols: {first.reason}{more}"
        merged.append(Finding(**{**asdict(first), "reason": reason}))
    return merged


def check_policy(policy: Policy, inv: Inventory) -> list[Finding]:
    """Every finding of one policy on one kernel and arch."""
    return Checker(policy, inv).run()


def check(
    policies: Iterable[Policy], inventories: Iterable[Inventory]
) -> list[Finding]:
    """Every finding of every policy on every inventory, cell by cell."""
    policies = list(policies)
    return [f for inv in inventories for p in policies for f in check_policy(p, inv)]


def summary(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    """Counts of findings by cell and severity."""
    counts: dict[str, dict[str, int]] = {}
    for f in findings:
        cell = counts.setdefault(f.cell, {"error": 0, "warning": 0, "info": 0})
        cell[f.severity] += 1
    return counts


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe severity among findings, or None if there are none."""
    seen = {f.severity for f in findings}
    return next((s for s in ("error", "warning", "info") if s in seen), None)
