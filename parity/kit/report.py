"""Presenting a kit check: the terminal table, the JSON result (schema ``tts-parity-kit-check/1``) and the HTML page
(the harness's jinja environment, :func:`parity.present.render.render`). Display only: every number comes from the
:class:`parity.kit.check.KitCheck`."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import write_output
from ..present.render import fmt, render
from .check import KitCheck


def _rows(res: KitCheck) -> list[dict]:
    rows = []
    for v in res.vectors:
        w = v.worst
        rows.append({"id": v.id, "module": v.module or "-", "verdict": v.verdict_text(),
                     "ratio": "-" if w is None or w.ratio is None else fmt(w.ratio), "k": fmt(v.k),
                     "output": w.key.rsplit("/", 1)[1] if w is not None else "-",
                     "statistic": (w.statistic or w.status) if w is not None else "-",
                     "value": fmt(w.value) if w is not None and w.value is not None else "-",
                     "limit": fmt(w.limit) if w is not None and w.limit is not None else "-",
                     "dtype": (w.dtype or "-") if w is not None else "-",
                     "cls": "fail" if v.status == "fail" else ("missing" if v.status == "missing" else "")})
    return rows


def counts_text(res: KitCheck) -> str:
    c = res.counts()
    parts = [f"{c.get(s, 0)} {s}" for s in ("pass", "fail", "partial", "missing") if c.get(s)]
    return f"{len(res.vectors)} vectors: " + ", ".join(parts)


def _mode_text(man: dict) -> str:
    mode = man.get("mode") or {}
    if mode.get("streaming"):
        return (f"streaming session call {mode.get('chunk')} (chunk mask {'on' if mode.get('chunk_mask') else 'off'}, "
                f"finalize {mode.get('finalize')}), ODE step {mode.get('step')}")
    return f"offline, ODE step {mode.get('step')}"


def terminal(res: KitCheck, verbose: bool = False) -> str:
    """The per-vector verdict table (failing and judged vectors; ``verbose``: every vector) and the findings."""
    man = res.manifest
    lines = [f"parity kit check: {res.verdict.upper()}  ({counts_text(res)})",
             f"kit {res.kit}: {(man.get('model') or {}).get('id')}, bundle {(man.get('bundle') or {}).get('name')}, "
             f"{_mode_text(man)}"]
    hl = res.headline
    if hl:
        lines.append("headline: " + (f"{hl.stage} " if hl.stage else "") + f"[{hl.code}]: {hl.message}")
    rows = [r for r, v in zip(_rows(res), res.vectors) if verbose or v.status != "missing"]
    if rows:
        w = max(len(r["id"]) for r in rows)
        lines.append(f"  {'vector':<{w}}  {'verdict':<24}{'k':>6}  worst output")
        for r in rows:
            lines.append(f"  {r['id']:<{w}}  {r['verdict']:<24}{r['k']:>6}  {r['output']} {r['statistic']} "
                         f"{r['value']} (limit {r['limit']})")
    for f in res.findings:
        if f.code != "module_mismatch" or verbose:
            lines.append(f"  [{f.severity}] {f.code}" + (f" at {f.stage}" if f.stage else "") + f": {f.message}")
    return "\n".join(lines)


def write_json(res: KitCheck, path: str | Path) -> Path:
    """The result as JSON, through the harness's one write mechanism (:func:`parity.outputs.write_output`)."""
    return write_output(path, json.dumps(res.to_json(), indent=1, allow_nan=False) + "\n", "--json")


def write_html(res: KitCheck, path: str | Path) -> Path:
    man = res.manifest
    model = man.get("model") or {}
    html = render("kit_check.html.j2", verdict=res.verdict, headline=res.headline, counts_text=counts_text(res),
                  kit=res.kit, port=res.port, model_id=model.get("id"), weights=model.get("weights_sha256"),
                  bundle=(man.get("bundle") or {}).get("name"), mode=_mode_text(man), findings=res.findings,
                  rows=_rows(res), method=man.get("tolerance_method") or "", rule=man.get("tolerance_rule") or "")
    return write_output(path, html, "--report")
