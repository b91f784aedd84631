"""The pages: one self-contained HTML report per comparison (:func:`build_report`) and a summary page for
several cases (:func:`build_summary_page`), rendered through the jinja templates. Rendering only: the caller
gives the result and the tensors to plot (see :func:`parity.ingest.tensors_from_sources`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

from reference.errors import InputError

from ..render import jinja_env, size_text
from ..result import Comparison, aggregate_verdict
from .audio import DEFAULT_AUDIO_BUDGET
from .view import media_for, page_context


def _token(what: str) -> str:
    return f"@@{what}-{os.urandom(8).hex()}@@"


def _write_with_size(html: str, path: Path, token: str) -> int:
    """Write ``html`` with ``token`` replaced by the page's own final size: the smallest size whose text
    fits, padded with spaces (collapsed by the browser) so the stated number is exact."""
    base = len(html.encode("utf-8")) - len(token.encode("utf-8"))
    size = base + len(size_text(base))
    while base + len(size_text(size)) > size:
        size += 1
    text = size_text(size)
    data = html.replace(token, text + " " * (size - base - len(text))).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def build_report(result: Comparison, path, case=None, ref_tensors: dict | None = None, cand_tensors: dict | None = None,
                 *, audio_budget: int = DEFAULT_AUDIO_BUDGET, notes: list[str] | None = None,
                 tensors_note: str | None = None) -> Path:
    """Write one self-contained HTML report for a comparison result and return its path.

    Tensors for the plots come from the explicit dicts or ``case.ref_tensors``/``case.cand_tensors``; without
    any, the page says so (``tensors_note``: why there are none, or what could not be read). The file size is
    printed in the page footer; ``audio_budget`` bounds the embedded WAVs (bytes of base64 for all three).
    """
    t0 = time.perf_counter()
    if not isinstance(result, Comparison):
        raise InputError(f"build_report: expected a parity.result.Comparison, got {type(result).__name__}")
    path = Path(path)
    rt = ref_tensors if ref_tensors is not None else (getattr(case, "ref_tensors", None) if case else None)
    ct = cand_tensors if cand_tensors is not None else (getattr(case, "cand_tensors", None) if case else None)
    page_notes = list(notes or [])
    if tensors_note and (rt or ct):
        page_notes.append(tensors_note)
    media = media_for(result, rt, ct, audio_budget, tensors_note)
    title = getattr(case, "name", None) if case is not None else None
    if not title:
        src = result.sources
        title = f"{Path(str(src.get('cand') or 'candidate')).stem} vs {Path(str(src.get('ref') or 'reference')).stem}"
    ctx = page_context(result, title=title, seconds=getattr(case, "seconds", None) or {}, media=media,
                       notes=page_notes)
    token, t_token = _token("SIZE"), _token("SECONDS")  # nonces: no trace string can collide with them
    html = jinja_env().get_template("report.html.j2").render(**ctx, size_token=token, seconds_token=t_token)
    html = html.replace(t_token, f"{time.perf_counter() - t0:.2f}")
    _write_with_size(html, path, token)
    return path


def build_summary_page(cases, path) -> Path:
    """One page with a row per case (:class:`parity.session.CaseSummary`), linking (relative links) to each
    case's report."""
    path = Path(path)
    rows = []
    for c in cases:
        link = None
        if c.report:
            link = quote(os.path.relpath(Path(c.report).resolve(), path.resolve().parent).replace(os.sep, "/"),
                         safe="/")
        rows.append({"name": c.name, "bundle": c.bundle, "profile": c.profile, "mode": c.mode, "verdict": c.verdict,
                     "stage": c.stage, "code": c.code, "message": c.message,
                     "time": f"{c.seconds:.1f} s" if c.seconds is not None else "-", "link": link,
                     "expected": getattr(c, "expected", None)})
    verdicts = [r["verdict"] for r in rows]
    # a case that failed with the diagnosis its test asserted (``expected``) does not fail the session
    overall = aggregate_verdict("pass" if r["expected"] and r["verdict"] == "fail" else r["verdict"] for r in rows)
    token = _token("SIZE")
    html = jinja_env().get_template("summary.html.j2").render(
        rows=rows, verdict=overall, n_pass=verdicts.count("pass"), n=len(rows), size_token=token,
        n_expected=sum(1 for r in rows if r["expected"] and r["verdict"] == "fail"),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    _write_with_size(html, path, token)
    return path
