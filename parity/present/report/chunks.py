"""The streaming-session part of a report: both schedules, the chunk timeline (streams with their call boundaries,
per-chunk error bars, a zoom on the worst boundary), the chunk table, the glitch findings, stream vs offline, and
per-chunk players. Every number comes from ``Comparison.session`` (built by :mod:`parity.judge.stream`); the
only tensors used are the traces' chunk and stream audio, for the plots and the players."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..render import fmt, size_text
from ...result import Comparison
from .audio import _b64_len, wav_uri
from .plots import _figure, _png_uri, _wave_plot, finite_nan, vec

ZOOM_S = 0.02  # half-width of the zoom on the worst boundary


def _stream(t: dict, chunks: list[dict]) -> np.ndarray | None:
    a = vec(t.get("stream.audio"))
    if a is not None:
        return a
    parts = [vec(t.get(f"chunk{c['index']}.audio")) for c in chunks]
    if parts and all(p is not None for p in parts):
        return np.concatenate(parts)
    return None


def plot_chunk_timeline(ref: np.ndarray | None, cand: np.ndarray | None, sr: int, ref_bounds: list | None,
                        cand_bounds: list | None, rows: list[dict], worst: dict | None) -> str:
    """Streams with each call's first sample marked; per-chunk errors (the chunk audio's rel. L2 and the chunk
    mel's max |diff|, from the result) as bars; a zoom of +-20 ms on the worst boundary."""
    fig = _figure(6.6)
    gs = fig.add_gridspec(3, 1, hspace=0.7, left=0.08, right=0.98, top=0.95, bottom=0.08, height_ratios=[1.2, 1, 1])
    ax = fig.add_subplot(gs[0, 0])
    for sig, color, label in ((ref, "0.35", "reference stream"), (cand, "C1", "candidate stream")):
        if sig is not None:
            _wave_plot(ax, np.arange(sig.size) / sr, sig, color, label, alpha=0.75 if color == "C1" else 1.0)
    for bset, style, color, label in ((ref_bounds, "-", "C0", "reference call boundary"),
                                      (cand_bounds, "--", "C3", "candidate call boundary")):
        for i, b in enumerate(bset or []):
            ax.axvline(b / sr, color=color, ls=style, lw=0.8, label=label if i == 0 else None)
    if worst and isinstance(worst.get("sample"), int):
        ax.axvline(worst["sample"] / sr, color="red", lw=1.6, alpha=0.5, label="worst boundary (zoom below)")
    ax.set_title("chunk timeline: the two streams and where each call's samples start", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper right", ncol=2)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("time (s)", fontsize=8)

    bx = fig.add_subplot(gs[1, 0])
    idx = np.arange(len(rows))
    aud = [_num((r.get("audio") or {}).get("rel_l2")) for r in rows]
    mel = [_num((r.get("mel") or {}).get("max_abs_err")) for r in rows]
    colors = ["C3" if r.get("status") == "fail" else ("0.6" if r.get("status") == "missing" else "C2") for r in rows]
    shown = [v for v in aud + mel if v is not None and v > 0]
    if rows:
        floor = min(shown) / 10 if shown else 1e-9  # 0 (identical) and "not measured" drawn at the floor, labelled
        for off, vals, hatch, label in ((-0.2, aud, None, "chunk audio rel. L2"), (0.2, mel, "//", "chunk mel max |diff|")):
            h = [v if (v is not None and v > 0) else floor for v in vals]
            bx.bar(idx + off, h, width=0.38, color=colors, edgecolor="k", lw=0.4, hatch=hatch, label=label)
            for x, v in zip(idx + off, vals):
                if v is None or v <= 0:
                    bx.text(x, floor, "n/a" if v is None else "0", ha="center", va="bottom", fontsize=6.5)
        bx.set_yscale("log")
        bx.set_xticks(idx, [f"{r.get('chunk')}\n{r.get('token_offset')}+{r.get('hop')}" for r in rows], fontsize=7)
        bx.legend(fontsize=6.5, loc="upper left")
    else:
        bx.text(0.5, 0.5, "no calls in the result", ha="center", va="center", transform=bx.transAxes, color="0.4")
    bx.set_title("per chunk, candidate vs reference (green pass, red fail, grey not compared; n/a: not measured, e.g. "
                 "lengths differ)", fontsize=8.5)
    bx.tick_params(labelsize=7)

    z = fig.add_subplot(gs[2, 0])
    if worst and isinstance(worst.get("sample"), int) and (ref is not None or cand is not None):
        b = worst["sample"]
        h = int(ZOOM_S * sr)
        for sig, color, label in ((ref, "0.35", "reference"), (cand, "C1", "candidate")):
            if sig is not None and b < sig.size:
                a0, a1 = max(0, b - h), min(sig.size, b + h)
                z.plot(np.arange(a0, a1) / sr, finite_nan(sig[a0:a1]), "-", color=color, lw=0.9, label=label)
        z.axvline(b / sr, color="red", lw=0.8, ls=":")
        kind = worst.get("kind")
        ratio = worst.get("ratio")
        z.set_title(f"zoom +-{ZOOM_S * 1000:.0f} ms: candidate chunk {worst.get('chunk')} starts at sample {b} "
                    f"({b / sr:.3f} s); {kind}" + (f" {ratio:.3g}x its ceiling" if ratio else "")
                    + (" (glitch)" if worst.get("glitch") else " (highest score; no glitch)"), fontsize=8.5)
        z.legend(fontsize=7, loc="upper right")
    else:
        z.text(0.5, 0.5, "no boundary scored (one call, or no stream in the traces)", ha="center", va="center",
               transform=z.transAxes, color="0.4")
    z.tick_params(labelsize=7)
    z.set_xlabel("time (s)", fontsize=8)
    return _png_uri(fig)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def _players(rows: list[dict], rt: dict, ct: dict, sess: dict, sr: int, budget: int) -> tuple[list[dict], str | None]:
    """Per chunk: the reference's and the candidate's emitted samples (whole chunks; above the budget only the
    chunks that fail, worst first)."""
    items = []
    for r in rows:
        ra = vec(rt.get(f"chunk{r['chunk']}.audio"))
        j = r.get("cand_chunk")
        ca = vec(ct.get(f"chunk{r['chunk']}.audio")) if j is not None else None
        if ra is None and ca is None:
            continue
        items.append((r, ra, ca))
    for j in (sess.get("unmatched") or {}).get("cand") or []:
        ca = vec(ct.get(f"unmatched.chunk{j}.audio"))
        if ca is not None:
            items.append(({"chunk": f"candidate {j} (unmatched)", "status": "extra"}, None, ca))
    total = sum(_b64_len(x.size) for _, a, b in items for x in (a, b) if x is not None)
    note = None
    if total > budget:
        def worst(item):
            a = (item[0].get("audio") or {}).get("rel_l2")
            return (item[0].get("status") != "fail", -(a or 0.0))
        keep, used = [], 0
        for it in sorted(items, key=worst):
            size = sum(_b64_len(x.size) for x in it[1:] if x is not None)
            if used + size > budget and keep:
                break
            keep.append(it)
            used += size
        note = (f"The chunk players would take {size_text(total)} embedded, over the audio budget of "
                f"{size_text(budget)}: {len(keep)} of {len(items)} chunks embedded (failing chunks first, worst first).")
        items = [it for it in items if any(it is k for k in keep)]
    out = []
    for r, ra, ca in items:
        players = []
        for label, sig in (("reference", ra), ("candidate", ca)):
            if sig is not None:
                uri, info = wav_uri(sig, sr)
                players.append({"label": label, "uri": uri, "samples": info["samples"],
                                "sanitised": info["nonfinite"] + info["clipped"]})
        out.append({"chunk": r.get("chunk"), "status": r.get("status"), "players": players,
                    "tokens": f"{r.get('token_offset')}+{r.get('hop')}" if r.get("hop") is not None else None})
    return out, note


def session_view(result: Comparison, rt: dict | None, ct: dict | None, budget: int, safe) -> dict:
    """The template's ``session`` context (``safe``: the view's figure guard, a failing figure becomes a note)."""
    sess = result.session
    if not sess:
        return {"available": False, "note": "not a streaming session (one token2wav call): no chunks"}
    rt, ct = rt or {}, ct or {}
    sr = result.sample_rate
    sch = sess.get("schedules") or {}
    ref_rows = (sch.get("ref") or {}).get("chunks") or []
    cand_rows = (sch.get("cand") or {}).get("chunks") or []
    plan = []
    for i in range(max(len(ref_rows), len(cand_rows))):
        a = ref_rows[i] if i < len(ref_rows) else {}
        b = cand_rows[i] if i < len(cand_rows) else {}
        keys = ("token_offset", "hop", "n_tokens", "finalize", "streaming")
        plan.append({"index": i, "ref": [fmt(a.get(k)) for k in keys] if a else None,
                     "cand": [fmt(b.get(k)) for k in keys] if b else None,
                     "differs": any(a.get(k) != b.get(k) for k in keys)})
    rows = sess.get("chunks") or []
    gl = sess.get("glitches") or {}
    worst = gl.get("worst")
    bounds = sess.get("boundaries") or {}
    ref_s = _stream(rt, sess.get("ref_chunks") or [])
    cand_s = _stream(ct, sess.get("cand_chunks") or [])
    img, err = (None, "no stream audio in the traces given to the report: timeline omitted") \
        if ref_s is None and cand_s is None else safe(plot_chunk_timeline, ref_s, cand_s, sr, bounds.get("ref"),
                                                      bounds.get("cand"), rows, worst)
    players, pnote = ([], None)
    if rt or ct:
        got, e2 = safe(_players, rows, rt, ct, sess, sr, budget)
        if got:
            players, pnote = got
        elif e2:
            pnote = e2
    dr = sess.get("drift") or {}
    drift_rows = []
    sides = dr.get("sides") or {}
    if dr.get("available") and isinstance(sides.get("ref"), list):
        cand = sides.get("cand") if isinstance(sides.get("cand"), list) else []
        for i, r in enumerate(sides["ref"]):
            c = cand[i] if i < len(cand) else {}
            drift_rows.append({"chunk": r.get("index"), "frames": fmt(r.get("frames")), "samples": fmt(r.get("samples")),
                               "ref": [fmt(r.get(k)) for k in ("mel_max_abs", "mel_rel_l2", "audio_logmel_l1",
                                                               "audio_snr_db")],
                               "cand": [fmt(c.get(k)) for k in ("mel_max_abs", "mel_rel_l2", "audio_logmel_l1",
                                                                "audio_snr_db")] if c else None})
    glitch_rows = [{"kind": g.get("kind"), "chunk": g.get("chunk"), "sample": g.get("boundary_sample"),
                    "time": fmt(g.get("time_s")), "value": fmt(g.get("value")), "limit": fmt(g.get("limit")),
                    "reference": fmt(g.get("reference")), "message": g.get("message")}
                   for g in gl.get("findings") or []]
    boundary_rows = [{"chunk": b.get("chunk"), "sample": b.get("sample"), "time": fmt(b.get("time_s")),
                      "ratios": {k: fmt(v) for k, v in (b.get("ratios") or {}).items()}}
                     for b in gl.get("boundaries") or []]
    chunk_rows: list[dict[str, Any]] = []
    for r in rows:
        a, m = r.get("audio") or {}, r.get("mel") or {}
        chunk_rows.append({"chunk": r.get("chunk"), "cand_chunk": r.get("cand_chunk"),
                           "tokens": f"{r.get('token_offset')}..{_end(r)}", "final": r.get("final"),
                           "ref_samples": fmt(r.get("ref_samples")), "cand_samples": fmt(r.get("cand_samples")),
                           "status": r.get("status"), "first_fail": r.get("first_fail"),
                           "mel": fmt(m.get("max_abs_err")),
                           "audio": a.get("problem") or (f"{a.get('statistic')} {fmt(a.get('value'))} (limit "
                                                         f"{fmt(a.get('limit'))}, gate {a.get('gate') or '-'})"
                                                         if a.get("statistic") else "-"),
                           "audio_rel_l2": fmt(a.get("rel_l2"))})
    return {"available": True, "matched_by": sess.get("matched_by"), "equal": sch.get("equal"),
            "ref_text": sch.get("ref_text"), "cand_text": sch.get("cand_text"),
            "first_difference": sch.get("first_difference"), "source": sch.get("source") or {}, "plan": plan,
            "options": sess.get("options") or {}, "deviations": sess.get("deviations") or {},
            "unmatched": sess.get("unmatched") or {}, "chunks": chunk_rows, "timeline": img, "timeline_note": err,
            "glitches": glitch_rows, "boundaries": boundary_rows, "glitch_thresholds": gl.get("thresholds"),
            "expected_samples": gl.get("expected_samples"), "cand_samples": gl.get("cand_samples"),
            "glitches_available": bool(gl), "drift": drift_rows, "drift_note": dr.get("reason") if dr else
            "no offline reference run was given (parity compare --offline TRACE)",
            "players": players, "players_note": pnote, "notes": sess.get("notes") or []}


def _end(r: dict):
    o, h = r.get("token_offset"), r.get("hop")
    return o + h if isinstance(o, int) and isinstance(h, int) else "?"
