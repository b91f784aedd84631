"""The terminal summary of a comparison result: verdict, headline, findings, then a stage table in
pipeline order with the first divergence marked. Reads the result; computes nothing."""

from __future__ import annotations

import os
import sys

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


def _ratio(r) -> str:
    """error / floor as "12x" (two significant digits)."""
    if r is None:
        return "-"
    if not isinstance(r, (int, float)) or r != r:
        return "?"
    return f"{r:.2g}x" if r < 1e4 else f"{r:.1e}x"


def gate_line(result: Comparison) -> str:
    """Which gate decided: the measured floor (its kind, k, where it came from) and/or the flat tolerances."""
    g = result.gates
    fl = result.floor or {}
    nf, nflat = g.get("floor", 0), g.get("flat", 0)
    parts = []
    if nf:
        kind = fl.get("kind")
        what = "the fp32 noise floor" if kind == "fp32" else f"the {kind} precision envelope (rounding-only error)"
        src = fl.get("source")
        where = f"{src} {fl.get('path')}" if fl.get("path") else str(src)
        parts.append(f"{what}, k {fl.get('k'):g} ({where}; digest {str(fl.get('digest'))[:12]}): {nf} stages")
    if nflat:
        why = fl.get("not_applied") or fl.get("reason") if not nf else "stages without a floor"
        parts.append(f"flat tolerances: {nflat} stages" + (f" ({why})" if why else ""))
    return "gate: " + ("; ".join(parts) if parts else "no stage was judged")


def render(result: Comparison, *, color: bool | None = None, verbose: bool = False, width: int = 110) -> str:
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    c = _color(color)
    lines = []
    v = result.verdict
    vcol = {"pass": "32;1", "fail": "31;1", "error": "33;1"}[v]
    fd = result.first_divergence
    src = result.sources
    lines.append(f"parity: {c(v.upper(), vcol)}   reference {src.get('ref')}  vs  candidate {src.get('cand')}")
    ctx = result.context
    lines.append(f"  candidate precision {ctx.get('precision')}, attention {ctx.get('attention')}; "
                 f"policy {', '.join(result.policy.get('sources', []))}")
    lines.append("  " + gate_line(result))
    if fd:
        lines.append(c(f"  first divergence: {fd.stage} [{fd.code}] {fd.message}", "31"))
    shown = [f for f in result.findings if f.severity in ("error", "failure", "warning")]
    info = [f for f in result.findings if f.severity == "info"]
    if shown or info:
        lines.append("findings:")
        for f in shown + (info if verbose else info[:4]):
            sev = {"error": c("ERROR", "33"), "failure": c("FAIL", "31"), "warning": c("warn", "33"),
                   "info": "info"}[f.severity]
            lines.append(f"  {sev:>5} {f.code:<26} {f.stage or '':<16} {f.message}"[: width * 2])
        if not verbose and len(info) > 4:
            lines.append(f"  ... {len(info) - 4} more info findings (--verbose)")
    lines.append("stages (pipeline order):")
    head = (f"  {'':2}{'stage':<18}{'status':<7}{'gate':<6}{'statistic':<17}{'value':>10}{'limit':>10}{'x floor':>9}"
            f"{'max|diff|':>11}")
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
                rated = [g for g in group if g.ratio is not None]
                wr = max(rated, key=lambda g: g.ratio) if rated else None
                lines.append(f"  {'':2}{f'step{k}.*':<18}{'ok':<7}{len(group)} stages, max |diff| {worst:.3g}"
                             + (f", worst {_ratio(wr.ratio)} floor ({wr.name})" if wr else ""))
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


def _row(s: StageResult, first_name, c) -> str:
    mark = ">>" if s.name == first_name else "  "
    status = MARK.get(s.status, s.status)
    col = {"pass": "32", "fail": "31", "missing": "90", "extra": "90"}.get(s.status, "0")
    return (f"  {c(mark, '31;1')}{s.name:<18}{c(f'{status:<7}', col)}{(s.gate or '-'):<6}{(s.statistic or '-'):<17}"
            f"{_fmt(s.value):>10}{_fmt(s.limit):>10}{_ratio(s.ratio):>9}{_fmt(s.metric('max_abs_err')):>11}")
