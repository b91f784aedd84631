"""The pages of a bisection: the parity report of one trial (:func:`trial_report`) and the final bisect page
(:func:`write_bisect_report`), both rendered through the jinja templates in ``parity/templates`` (autoescaped:
switch names, commit subjects, headlines and reasons come from outside)."""

from __future__ import annotations

import os
from pathlib import Path

from ..ingest import tensors_from_sources
from ..outputs import is_regular_output, write_output
from ..present.render import render
from ..result import Comparison
from .log import BisectResult, TrialLog, headline_text


def trial_report(result: Comparison, path: Path, case=None) -> Path:
    """The parity report of one trial: :func:`parity.present.report.build_report` when available, otherwise (or if
    it fails) a small fallback page (verdict, headline, findings, stage table; no plots)."""
    path = Path(path)
    note = None
    try:
        from ..present.report import build_report  # lazily: heavy (matplotlib) and maybe absent
    except ImportError as exc:
        build_report = None
        note = f"parity.present.report is not available ({exc})"
    if build_report is not None:
        try:
            rt, ct, tensors_note = getattr(case, "ref_tensors", None), getattr(case, "cand_tensors", None), None
            if not rt and not ct:  # a trial's tensors live in its trace files (or a resumed log's)
                rt, ct, tensors_note = tensors_from_sources(result)
            return Path(build_report(result, path, case=case, ref_tensors=rt, cand_tensors=ct,
                                     tensors_note=tensors_note))
        except Exception as exc:  # noqa: BLE001 - the bisection's result must not be lost to a plotting error
            note = f"parity.present.report failed ({type(exc).__name__}: {exc})"
    fd = result.first_divergence
    page = render("trial_fallback.html.j2", note=note or "parity.present.report unavailable", verdict=result.verdict,
                  first=fd.headline_json() if fd else {}, findings=result.findings, stages=result.stages)
    write_output(path, page)
    return path


def _rel_link(target: Path | None, page: Path) -> str | None:
    if target is None:
        return None
    if not is_regular_output(page):  # a page sent to a device or a pipe: absolute links
        return Path(target).resolve().as_uri()
    try:
        return os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)
    except ValueError:
        return str(target)


def culprit_text(culprit) -> str:
    if isinstance(culprit, dict):
        return f"{culprit.get('sha', '')[:12]} {culprit.get('subject', '')}"
    if isinstance(culprit, list):
        return ", ".join(map(str, culprit)) or "(none)"
    return str(culprit) if culprit is not None else "(none)"


def write_bisect_report(res: BisectResult, log: TrialLog, path: Path) -> Path:
    """The final page: what was searched, the culprit, its headline, a link to the failing trial's parity
    report, the pasteable profile (precision) and every trial."""
    path = Path(path)
    trials = []
    for t in log.trials:
        rep = log.abs(t.get("report"))
        trials.append({"n": t.get("n"), "what": str(t.get("what")), "verdict": str(t.get("verdict")),
                       "headline": headline_text(t.get("headline")) or "", "reason": t.get("reason") or "",
                       "seconds": f"{t.get('seconds', 0):.1f}", "link": _rel_link(rep, path) if rep else None})
    page = render("bisect.html.j2", res=res, culprit=culprit_text(res.culprit),
                  headline=headline_text(res.headline, 400) or "-", trial_link=_rel_link(res.trial_report, path),
                  trial_name=res.trial_report.name if res.trial_report else None, trials=trials,
                  log_path=str(log.path), skipped=[{"sha": s["sha"][:12], "subject": s.get("subject", ""),
                                                    "reason": s.get("reason", "")} for s in res.skipped])
    write_output(path, page)
    return path


def finish(res: BisectResult, log: TrialLog, report: Path | None) -> BisectResult:
    """Close a bisection: totals, the final page, the result in the log."""
    res.log = log.path
    res.total_trials = len(log.trials)
    res.report = write_bisect_report(res, log, report or (log.dir / f"bisect-{res.mode}.html"))
    log.update(status=res.status, result=res.to_dict(), report=log.rel(res.report))
    return res
