"""The terminal summary of a comparison result: verdict, headline, findings, then a stage table in
pipeline order with the first divergence marked. Reads the result; computes nothing."""

from __future__ import annotations

import os
import sys
import textwrap

from .result import Comparison, StageResult
from .stages import parse_step

MARK = {"pass": "ok", "fail": "FAIL", "missing": "--", "extra": "++", "skip": "skip", "info": ".."}


def _color(enabled: bool):
    def c(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if enabled else text
    return c


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def render(result: Comparison, *, color: bool | None = None, verbose: bool = False, width: int = 110) -> str:
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    c = _color(color)
    lines = []
    v = result.verdict
    vcol = {"pass": "32;1", "fail": "31;1", "error": "33;1"}[v]
    fd = result.first_divergence
    src = result.sources
    warns = [f for f in result.findings if f.severity == "warning"]
    head = c(v.upper(), vcol)
    if v == "pass" and warns:  # a pass with a caveat says so where it is read first
        head += f" with {len(warns)} warning{'s' if len(warns) > 1 else ''} ({warns[0].code}: {warns[0].message})"
    case = result.case or {}
    if case.get("profile") or case.get("bundle"):  # the case: what was run, on what, how
        mode = ("streaming" if case.get("streaming") else "offline") + (
            f"-{case['session']}" if case.get("session") else "")
        lines.append(f"parity: {head}   profile {case.get('profile')}, bundle {case.get('bundle')}, {mode}")
        lines.append(f"  reference {src.get('ref')}  vs  candidate {src.get('cand')}")
    else:
        lines.append(f"parity: {head}   reference {src.get('ref')}  vs  candidate {src.get('cand')}")
    ctx = result.context
    lines.append(f"  candidate precision {ctx.get('precision')}, attention {ctx.get('attention')}; "
                 f"policy {', '.join(result.policy.get('sources', []))}")
    if fd:
        lines.append(c(f"  first divergence: {fd.stage} [{fd.code}] {fd.message}", "31"))
    shown = [f for f in result.findings if f.severity in ("error", "failure", "warning")]
    info = [f for f in result.findings if f.severity == "info"]
    if shown or info:
        lines.append("findings:")
        for f in shown + (info if verbose else info[:4]):
            sev = {"error": c("ERROR", "33"), "failure": c("FAIL", "31"), "warning": c("warn", "33"),
                   "info": "info"}[f.severity]
            lines.extend(_wrap(f"  {sev:>5} {f.code:<26} {f.stage or '':<16} ", f.message, width))
        if not verbose and len(info) > 4:
            lines.append(f"  ... {len(info) - 4} more info findings (--verbose)")
    lines.append("stages (pipeline order):")
    head = f"  {'':2}{'stage':<18}{'status':<7}{'statistic':<13}{'value':>10}{'limit':>10}{'max|diff|':>11}{'min atol':>10}"
    lines.append(head)
    first_name = fd.stage if fd else None
    stages = result.stages
    i = 0
    while i < len(stages):
        s = stages[i]
        st = parse_step(s.name)
        # compress a whole passing ODE step onto one line unless verbose
        if st and not verbose:
            k = st[0]
            group = []
            while i < len(stages) and (parse_step(stages[i].name) or (None,))[0] == k:
                group.append(stages[i])
                i += 1
            bad = [g for g in group if not g.ok]
            if not bad and first_name not in [g.name for g in group]:
                worst = max(g.metric("max_abs_err") or 0.0 for g in group)
                lines.append(f"  {'':2}{f'step{k}.*':<18}{'ok':<7}{len(group)} stages, max |diff| {worst:.3g}")
                continue
            for g in group:
                lines.append(_row(g, first_name, c))
            continue
        lines.append(_row(s, first_name, c))
        i += 1
    steps = result.steps
    if steps and any(r.local.get("x") is not None for r in steps):
        lines.append("per-step error (max |diff| of x): accumulated / local / growth")
        for r in steps:
            lines.append(f"  step{r.step:<3} {_fmt(r.acc.get('x')):>10} {_fmt(r.local.get('x')):>10} "
                         f"{_fmt(r.growth):>8}")
    lines.append("  " + ", ".join(f"{k}: {n}" for k, n in sorted(result.summary.items())))
    if result.normalisations:
        lines.append(f"normalisations applied: {len(result.normalisations)}" + ("" if verbose else " (--verbose lists them)"))
        if verbose:
            for n in result.normalisations:
                lines.append(f"  {n['stage']}: {n['kind']}: {n['detail']}")
    return "\n".join(lines)


def _wrap(lead: str, message: str, width: int) -> list[str]:
    """A finding on as many lines as it needs (never cut): continuation lines indented under the message.
    ``lead`` may hold colour codes; the wrap width is counted without them."""
    visible = len(_strip_codes(lead))
    body = textwrap.wrap(message, max(40, width - visible), break_long_words=False, break_on_hyphens=False) or [""]
    return [lead + body[0]] + [" " * visible + b for b in body[1:]]


def _strip_codes(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _row(s: StageResult, first_name, c) -> str:
    mark = ">>" if s.name == first_name else "  "
    status = MARK.get(s.status, s.status)
    col = {"pass": "32", "fail": "31", "missing": "90", "extra": "90"}.get(s.status, "0")
    lead = f"  {c(mark, '31;1')}{s.name:<18}{c(f'{status:<7}', col)}"
    if s.status == "skip":  # why it was not judged: the rule and where it comes from
        rule = s.rule or {}
        prec = rule.get("precision")
        prec = f" @ {', '.join(prec) if isinstance(prec, list) else prec}" if prec else ""
        src = f" [{rule.get('source')}: {rule.get('stage')}{prec}]" if rule.get("source") else ""
        return f"{lead}{s.detail or 'skipped'}{src}"
    return (f"{lead}{(s.statistic or '-'):<13}"
            f"{_fmt(s.value):>10}{_fmt(s.limit):>10}{_fmt(s.metric('max_abs_err')):>11}"
            f"{_fmt(s.min_atol_to_pass):>10}")
