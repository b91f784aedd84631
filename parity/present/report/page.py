"""The pages: one self-contained HTML report per comparison (:func:`build_report`) and a summary page for
several cases (:func:`build_summary_page`), rendered through the jinja templates. Rendering only: the caller
gives the result and the tensors to plot (see :func:`parity.ingest.tensors_from_sources`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

from reference.errors import InputError

from ...outputs import is_regular_output, write_output
from ..render import jinja_env, size_text
from ...result import Comparison, aggregate_verdict
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
    write_output(path, data)
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


TEST_OK = ("passed", "xfailed", "xpassed")  # outcomes that leave a pytest session green


def _counts_as_ok(row: dict) -> bool:
    """By its test's outcome; a case no test claimed counts by its verdict."""
    return row["outcome"] in TEST_OK if row["outcome"] is not None else row["verdict"] == "pass"


def _test_note(row: dict) -> str:
    """What a case's test outcome means for the suite."""
    o = row["outcome"]
    if o is None:
        return "-"
    if o == "passed" and row["faults"] and row["verdict"] != "pass":
        return "expected fault caught"
    if o == "passed" and row.get("expected") and row["verdict"] != "pass":
        return "failed as expected (diagnosed)"
    # what the test expected of the case is the test's business: say only that it failed
    return {"passed": "passed", "failed": "test failed", "error": "test error"}.get(o, o)


def summary_view(rows: list[dict], session: dict | None) -> dict:
    """Banner, title and groups of a summary page. With pytest outcomes (``session`` given, or rows that name
    their test) a case counts by its test's outcome, an injected fault that the test catches is a pass for the
    suite, and the pytest exit status is on the page; otherwise (``parity run``) a case counts by its verdict."""
    by_test = session is not None or any(r["test"] for r in rows)
    n = len(rows)
    if by_test:
        ok = [r for r in rows if _counts_as_ok(r)]
        exitstatus = (session or {}).get("exitstatus")
        n_ok = len(ok)
        if n_ok == n and exitstatus in (None, 0):
            verdict = "pass"
        elif exitstatus in (None, 0, 1):
            verdict = "fail"
        else:
            verdict = "error"
        n_pass = sum(1 for r in ok if r["verdict"] == "pass")
        caught = sum(1 for r in ok if r["faults"] and r["verdict"] != "pass")
        diagnosed = sum(1 for r in ok if not r["faults"] and r.get("expected") and r["verdict"] != "pass")
        other = n_ok - n_pass - caught - diagnosed  # e.g. an xfail
        parts = [f"{n_pass} pass parity" if n_pass else "", f"{caught} expected fault(s) caught" if caught else "",
                 f"{diagnosed} failed as expected (diagnosed)" if diagnosed else "",
                 f"{other} other(s)" if other else ""]
        detail = ", ".join(p for p in parts if p)
        text = f"{n_ok} of {n} case(s) as their tests expect" + (f" ({detail})" if detail else "")
        title = f"{n_ok} of {n} cases as their tests expect"
        if exitstatus not in (None, 0):
            text += f"; pytest exit status {exitstatus}"
    else:
        # a case that failed with the diagnosis its test asserted (``expected``) does not fail the run
        verdict = aggregate_verdict("pass" if r.get("expected") and r["verdict"] == "fail" else r["verdict"]
                                    for r in rows)
        n_ok = sum(r["verdict"] == "pass" for r in rows)
        n_expected = sum(1 for r in rows if r.get("expected") and r["verdict"] == "fail")
        text = f"{n_ok} of {n} case(s) pass" + (f", {n_expected} failed as expected (diagnosed)" if n_expected else "")
        title = f"{n_ok}/{n} cases pass"
    groups = []
    plain = [r for r in rows if not r["faults"]]
    faulty = [r for r in rows if r["faults"]]
    if plain or not faulty:
        groups.append({"id": "cases", "title": "Cases", "note": "", "rows": plain})
    if faulty:
        groups.append({"id": "fault-cases", "title": "Injected faults",
                       "note": ("each case runs a candidate with a catalogue fault injected: it must fail parity, "
                                "and its test passes when the harness catches it" if by_test else
                                "each case runs a candidate with a catalogue fault injected: it fails parity when "
                                "the harness catches it"), "rows": faulty})
    return {"verdict": verdict, "banner": f"{verdict.upper()}: {text}", "title": f"parity {verdict.upper()}: {title}",
            "by_test": by_test, "groups": groups, "n": n}


def _summary_rows(cases, path: Path | None) -> list[dict]:
    regular = path is not None and is_regular_output(path)
    rows = []
    for c in cases:
        link = None
        if c.report and regular:  # relative: the page and its case pages move together
            link = quote(os.path.relpath(Path(c.report).resolve(), path.resolve().parent).replace(os.sep, "/"),
                         safe="/")
        elif c.report and path is not None:  # a page sent to a stream has no place: absolute links
            link = Path(c.report).resolve().as_uri()
        faults = list(getattr(c, "faults", None) or [])
        row = {"name": c.name, "bundle": c.bundle, "profile": c.profile, "mode": c.mode, "verdict": c.verdict,
               "stage": c.stage, "code": c.code, "message": c.message,
               "time": f"{c.seconds:.1f} s" if c.seconds is not None else "-", "link": link, "faults": faults,
               "test": getattr(c, "test", None) or "", "outcome": getattr(c, "outcome", None),
               "expected": getattr(c, "expected", None)}
        row["test_note"] = _test_note(row)
        rows.append(row)
    return rows


def summary_banner(cases, session: dict | None = None) -> str:
    """The banner a summary page of these cases shows (``PASS: 4 of 4 case(s) as their tests expect ...``)."""
    return summary_view(_summary_rows(cases, None), session)["banner"]


def build_summary_page(cases, path, session: dict | None = None) -> Path:
    """One page with a row per case (:class:`parity.harness.CaseSummary`), linking (relative links) to each
    case's report; fault cases in a group of their own. ``session``: the pytest session it summarises
    (``exitstatus``, ``counts`` of test outcomes, ``notes``): cases then count by their tests' outcomes."""
    path = Path(path)
    rows = _summary_rows(cases, path)
    view = summary_view(rows, session)
    counts = (session or {}).get("counts") or {}
    session_line = ", ".join(f"{n} {k}" for k, n in counts.items() if n) if counts else ""
    token = _token("SIZE")
    html = jinja_env().get_template("summary.html.j2").render(
        **view, session_line=session_line, notes=list((session or {}).get("notes") or []),
        exitstatus=(session or {}).get("exitstatus"), size_token=token,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    _write_with_size(html, path, token)
    return path
