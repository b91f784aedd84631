"""The terminal summary of a comparison result: verdict, headline, findings, then a stage table in
pipeline order with the first divergence marked. Reads the result; computes nothing."""

from __future__ import annotations

import os
import sys
import textwrap

from ..result import Comparison, StageResult
from ..stages import parse_chunk, parse_step

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
        tr = (fl.get("provenance") or {}).get("transfer")
        if isinstance(tr, dict):  # a floor transferred from full floors on other bundles (parity.floor.transfer)
            srcs = ", ".join(str(x.get("bundle") or str(x.get("digest"))[:12]) for x in tr.get("sources") or [])
            where += f"; transferred from the full floor of {srcs} x{tr.get('factor'):g}"
        lay = fl.get("layout")
        if isinstance(lay, dict) and lay.get("name") and kind != "fp32":
            what = f"the {kind} precision envelope of layout {lay['name']} (rounding-only error)"
            where += f"; layout: {lay.get('why')}"
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
    warns = [f for f in result.findings if f.severity == "warning"]
    head = c(v.upper(), vcol)
    if v == "pass" and warns:  # a pass with a caveat says so where it is read first
        head += f" with {len(warns)} warning{'s' if len(warns) > 1 else ''} ({warns[0].code}: {warns[0].message})"
    case = result.case or {}
    if case.get("profile") or case.get("bundle"):  # the case: what was run, on what, how
        mode = case.get("mode") or ("streaming" if case.get("streaming") else "offline")  # a session: its label
        lines.append(f"parity: {head}   profile {case.get('profile')}, bundle {case.get('bundle')}, {mode}")
        lines.append(f"  reference {src.get('ref')}  vs  candidate {src.get('cand')}")
    else:
        lines.append(f"parity: {head}   reference {src.get('ref')}  vs  candidate {src.get('cand')}")
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
            lines.extend(_wrap(f"  {sev:>5} {f.code:<26} {f.stage or '':<16} ", f.message, width))
        if not verbose and len(info) > 4:
            lines.append(f"  ... {len(info) - 4} more info findings (--verbose)")
    if result.session:
        lines.extend(session_lines(result, verbose))
    lines.extend(mapping_lines(result, verbose))
    lines.append("stages (pipeline order):")
    w = max([18] + [len(s.name) + 1 for s in result.stages])
    head = (f"  {'':2}{'stage':<{w}}{'status':<7}{'gate':<6}{'statistic':<17}{'value':>10}{'limit':>10}{'x floor':>9}"
            f"{'max|diff|':>11}{'min atol':>10}")
    lines.append(head)
    first_name = fd.stage if fd else None
    stages = result.stages
    i = 0
    while i < len(stages):
        s = stages[i]
        st = parse_step(s.name)
        ch = parse_chunk(s.name)
        if ch is not None and _chunk_flow(ch[1]) and not verbose:  # a chunk's recorded flow stages on one line
            ci = ch[0]
            group = []
            while i < len(stages) and (parse_chunk(stages[i].name) or (None, ""))[0] == ci \
                    and _chunk_flow(parse_chunk(stages[i].name)[1]):
                group.append(stages[i])
                i += 1
            if all(g.ok for g in group) and first_name not in [g.name for g in group]:
                worst = max(g.metric("max_abs_err") or 0.0 for g in group)
                lines.append(f"  {'':2}{f'chunk{ci}.(flow)':<{w}}{'ok':<7}{len(group)} stages, max |diff| {worst:.3g}")
            else:
                lines.extend(_row(g, first_name, c, w) for g in group)
            continue
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
                lines.append(f"  {'':2}{f'step{k}.*':<{w}}{'ok':<7}{len(group)} stages, max |diff| {worst:.3g}"
                             + (f", worst {_ratio(wr.ratio)} floor ({wr.name})" if wr else ""))
                continue
            for g in group:
                lines.append(_row(g, first_name, c, w))
            continue
        lines.append(_row(s, first_name, c, w))
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


def _row(s: StageResult, first_name, c, w: int = 18) -> str:
    mark = ">>" if s.name == first_name else "  "
    status = MARK.get(s.status, s.status)
    col = {"pass": "32", "fail": "31", "missing": "90", "extra": "90"}.get(s.status, "0")
    lead = f"  {c(mark, '31;1')}{s.name:<{w}}{c(f'{status:<7}', col)}"
    if s.status == "skip":  # why it was not judged: the rule and where it comes from
        rule = s.rule or {}
        prec = rule.get("precision")
        prec = f" @ {', '.join(prec) if isinstance(prec, list) else prec}" if prec else ""
        src = f" [{rule.get('source')}: {rule.get('stage')}{prec}]" if rule.get("source") else ""
        return f"{lead}{s.detail or 'skipped'}{src}"
    return (f"{lead}{(s.gate or '-'):<6}{(s.statistic or '-'):<17}"
            f"{_fmt(s.value):>10}{_fmt(s.limit):>10}{_ratio(s.ratio):>9}{_fmt(s.metric('max_abs_err')):>11}"
            f"{_fmt(s.min_atol_to_pass):>10}")


def _chunk_flow(field: str) -> bool:
    """A flow stage recorded under a chunk prefix (mu, x0, step{k}.*), not the call's own stages."""
    return field not in ("tokens", "token_offset", "finalize", "streaming", "flow_mel_full", "mel", "f0", "audio")


def session_lines(result: Comparison, verbose: bool = False) -> list[str]:
    """The streaming-session section: both schedules, each call's status and errors, glitches, stream vs
    offline (all from ``result.session``)."""
    ses = result.session or {}
    sch = ses.get("schedules") or {}
    out = ["streaming session (calls matched by " + str(ses.get("matched_by")) + "):"]
    if sch.get("equal"):
        out.append(f"  schedule (both): {sch.get('ref_text')}")
    else:
        out.append(f"  schedule DIFFERS: reference {sch.get('ref_text')}")
        out.append(f"                    candidate {sch.get('cand_text')}")
    out.append(f"  {'chunk':<6}{'tokens':<12}{'samples (ref)':<18}{'status':<8}{'mel max|diff|':>14}{'audio':>22}"
               f"  first failing stage")
    for r in ses.get("chunks") or []:
        a = r.get("audio") or {}
        tok = f"{r.get('token_offset')}+{r.get('hop')}" + (" F" if r.get("final") else "")
        smp = r.get("ref_samples") or ["?", "?"]
        aud = f"{a.get('statistic') or '-'} {_fmt(a.get('value'))}" if a.get("statistic") else "-"
        out.append(f"  {r.get('chunk')!s:<6}{tok:<12}{f'{smp[0]}..{smp[1]}':<18}{MARK.get(r.get('status'), r.get('status')):<8}"
                   f"{_fmt((r.get('mel') or {}).get('max_abs_err')):>14}{aud:>22}  {r.get('first_fail') or ''}")
    un = ses.get("unmatched") or {}
    if un.get("ref") or un.get("cand"):
        out.append(f"  not compared (no call at the same token offset): reference {un.get('ref')}, candidate "
                   f"{un.get('cand')}")
    gl = ses.get("glitches")
    if gl:
        f = gl.get("findings") or []
        out.append(f"  glitches: {len(f)} finding(s) at {len(gl.get('boundaries') or [])} boundaries"
                   + ("; " + "; ".join(f"{x['kind']} chunk {x['chunk']} @ {x['boundary_sample']} ({x['time_s']:.3f} s)"
                                       for x in f[: (None if verbose else 4)]) if f else ""))
    for n in ses.get("notes") or []:
        out.append(f"  note: {n}")
    dr = ses.get("drift") or {}
    sides = dr.get("sides") or {}
    if dr.get("available") and isinstance(sides.get("ref"), list):
        out.append("  stream vs offline (same tokens), per chunk: mel max |diff| / audio log-mel L1, reference stream "
                   "| candidate stream")
        cand = sides.get("cand") if isinstance(sides.get("cand"), list) else []
        for i, r in enumerate(sides["ref"]):
            c = cand[i] if i < len(cand) else {}
            out.append(f"    chunk {r.get('index')}: {_fmt(r.get('mel_max_abs'))} / {_fmt(r.get('audio_logmel_l1'))}  |  "
                       f"{_fmt(c.get('mel_max_abs'))} / {_fmt(c.get('audio_logmel_l1'))}")
    return out


def mapping_lines(result: Comparison, verbose: bool = False, limit: int = 16) -> list[str]:
    """The naming dialect mapping applied to each side (name in the file -> canonical stage); a chunked dump's
    renames that differ only by the chunk number are one line (``chunk_{c}/tts_speech -> chunk{c}.audio``)."""
    import re

    out = []
    src = result.sources
    for side, label in (("ref", "reference"), ("cand", "candidate")):
        if src.get(f"{side}_dialect") != "aliased":
            continue
        names = src.get(f"{side}_names") or {}
        groups: dict[tuple, list] = {}
        for cn, o in names.items():
            if o == cn:
                continue
            ch = parse_chunk(cn)
            if ch is not None:
                num = str(ch[0])
                pat = re.sub(rf"(?<!\d){num}(?!\d)", "{c}", str(o), count=1)
                if pat != o:
                    groups.setdefault((pat, f"chunk{{c}}.{ch[1]}"), []).append(ch[0])
                    continue
            groups.setdefault((str(o), cn), [])
        if not groups:
            continue
        n = sum(max(len(v), 1) for v in groups.values())
        out.append(f"name mapping ({label}, {n} renamed):")
        items = list(groups.items())
        for (o, cn), cs in items[: (None if verbose else limit)]:
            out.append(f"  {o} -> {cn}" + (f"  (c = {', '.join(map(str, sorted(cs)))})" if cs else ""))
        if not verbose and len(items) > limit:
            out.append(f"  ... {len(items) - limit} more (--verbose lists them)")
    return out
