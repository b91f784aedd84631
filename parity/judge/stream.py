"""The section of a streaming-session comparison (``Comparison.session``) and the findings found with it, once
the calls are paired (:class:`parity.judge.session.SessionPrep`) and their stages judged:

* **glitches** (:func:`parity.measure.streaming_metrics.detect_glitches`): at the candidate's chunk boundaries,
  differential against the reference stream; sample counts against the schedule the candidate's calls follow
  (their token offsets, with the reference's frame and sample constants). Wrong counts and non-finite samples are
  failures, boundary scores (flux, discontinuity, DC step) warnings: their limits were measured on the tiny
  preset only (``THRESHOLD_EVIDENCE``);
* **stream vs offline** (:func:`parity.measure.streaming_metrics.stream_offline_drift`): per chunk, the reference
  stream and the candidate stream against the offline reference run of the same tokens (what the chunk mask
  costs, and whether the candidate costs more);
* **the chunk table**: per reference call, its tokens, where it sits in each stream, its stages' status and errors.

Measurement and judgement over the two loaded traces; the report only renders the section built here.
"""

from __future__ import annotations

import math

import torch

from ..ingest import Loaded
from ..result import Finding, StageResult, fmt_value
from ..stages import position
from ..trace import sample_rate_of
from .session import UNMATCHED, ChunkInfo, SessionPrep, plan_rows, schedule_text

_finding = Finding.at
_fmtv = fmt_value


def session_section(calls, ref: Loaded, cand: Loaded, offline: Loaded | None, by_name: dict, floor=None
                    ) -> tuple[dict | None, list[Finding]]:
    """The section of the comparison whose calls are paired as ``calls`` (:func:`parity.judge.session.pair_calls`)
    and the findings found with it: None and none for one call, :func:`section` for a streaming session
    (``floor``: the session's floor, whose measured glitch thresholds judge the chunk boundaries)."""
    if not isinstance(calls, SessionPrep):
        return None, []
    return section(ref, cand, offline, calls, by_name, floor)


def _stream_audio(tr: Loaded, chunks: list[ChunkInfo]) -> tuple[torch.Tensor | None, str | None]:
    if "stream.audio" in tr.tensors:
        return tr.tensors["stream.audio"], None
    parts = [tr.tensors.get(f"chunk{c.index}.audio") for c in chunks]
    if parts and all(p is not None for p in parts):
        return torch.cat([p.reshape(1, -1) for p in parts], dim=1), "stream.audio built from the chunks' audio"
    return None, None


def _stream_mel(tr: Loaded, chunks: list[ChunkInfo]) -> torch.Tensor | None:
    if "stream.mel" in tr.tensors:
        return tr.tensors["stream.mel"]
    parts = [tr.tensors.get(f"chunk{c.index}.mel") for c in chunks]
    if parts and all(p is not None and p.dim() == 3 for p in parts):
        return torch.cat(parts, dim=2)
    return None


def _constants(ref: Loaded, cand: Loaded) -> dict:
    out = {}
    for m in (cand.metadata, ref.metadata):  # the reference's win (set last)
        opts = m.get("session_options") if isinstance(m.get("session_options"), dict) else {}
        for k, v in (("token_mel_ratio", opts.get("token_mel_ratio")),
                     ("samples_per_frame", m.get("session_samples_per_frame")),
                     ("holdback_frames", m.get("session_holdback_frames"))):
            if isinstance(v, int):
                out[k] = v
    return out


def _sr(ref: Loaded) -> int:
    return sample_rate_of(ref.metadata)


def glitches(ref: Loaded, cand: Loaded, prep: SessionPrep, floor=None) -> tuple[dict | None, list[Finding], list[str]]:
    """Chunk-boundary glitches of the candidate stream against the reference stream. With a session floor that
    measured the boundaries (:mod:`parity.floor.glitch`), its thresholds judge them (failures), instead of the
    fixed ratios (warnings)."""
    from ..measure.streaming_metrics import detect_glitches, expected_chunk_samples

    notes: list[str] = []
    ya, na = _stream_audio(cand, prep.cand_chunks)
    xa, nb = _stream_audio(ref, prep.ref_chunks)
    notes += [f"candidate: {n}" for n in [na] if n] + [f"reference: {n}" for n in [nb] if n]
    if ya is None or xa is None:
        return None, [], notes + ["glitch detection needs both streams (stream.audio or every chunk's audio)"]
    counts = [c.samples for c in prep.cand_chunks]
    if not counts or any(n is None for n in counts):
        return None, [], notes + ["glitch detection needs the samples each candidate call emitted (chunk*.audio or "
                                  "the run's session_chunks)"]
    k = _constants(ref, cand)
    offsets = [c.token_offset for c in prep.cand_chunks]
    total = next((c.n_tokens for c in reversed(prep.cand_chunks) if c.finalize and c.n_tokens is not None), None)
    if total is None and isinstance((prep.ref_schedule or {}).get("n_tokens"), int):
        total = prep.ref_schedule["n_tokens"]
    expected = None
    if len(k) == 3 and total is not None and all(o is not None for o in offsets):
        expected = expected_chunk_samples(offsets, total, token_mel_ratio=k["token_mel_ratio"],
                                          samples_per_frame=k["samples_per_frame"], holdback_frames=k["holdback_frames"])
    else:
        notes.append("sample counts not judged: the token offsets, the token count or the frame/sample constants "
                     "(session metadata) are missing")
    sr = _sr(ref)
    y = ya.detach().double().reshape(-1).numpy()
    x = xa.detach().double().reshape(-1).numpy()
    try:
        rep = detect_glitches(y, counts, x, expected_samples=expected, sample_rate=sr)
    except ValueError as exc:
        return None, [], notes + [f"glitch detection not possible: {exc}"]
    gfl = (getattr(floor, "calibration", None) or {}).get("glitch") if floor is not None else None
    judged, over = set(), []
    fl_rows = None
    if gfl:
        from ..floor.glitch import judge_boundaries

        fl_rows, over = judge_boundaries(rep, gfl, floor.k)
        judged = {(r["chunk"], r["sample"]) for r in fl_rows}
    findings = []
    for g in list(rep.findings) + over:
        counted = g.kind in ("missing_samples", "duplicated_samples", "nonfinite")
        if not counted and (g.chunk, g.boundary_sample) in judged and g not in over:
            continue  # a fixed-ratio boundary score where the session floor judged the boundary
        j = prep.cand_chunks[g.chunk].index if g.chunk < len(prep.cand_chunks) else g.chunk
        stage = f"chunk{prep.pairs[j]}.audio" if j in prep.pairs else f"{UNMATCHED}chunk{j}.audio"
        sev = "failure" if counted or g in over else "warning"
        findings.append(_finding(f"glitch_{g.kind}", stage, sev, g.message, g.to_dict()))
    d = rep.to_dict()
    if fl_rows is not None:
        d["floor"] = {"k": floor.k, "digest": floor.digest, "boundaries": fl_rows, "rule": gfl.get("rule")}
    d["expected_samples"] = expected
    d["cand_samples"] = counts
    d["sample_rate"] = sr
    d["worst"] = _worst_boundary(rep)
    return d, findings, notes


def _worst_boundary(rep) -> dict | None:
    """The boundary to zoom on: the glitch finding furthest over its limit, else the highest score ratio."""
    best = None
    for g in rep.findings:
        if g.kind in ("missing_samples", "duplicated_samples", "nonfinite"):
            continue
        r = g.value / g.limit if g.limit else math.inf
        if best is None or r > best["ratio"]:
            best = {"chunk": g.chunk, "sample": g.boundary_sample, "time_s": g.time_s, "kind": g.kind, "ratio": r,
                    "glitch": True}
    if best is not None:
        return best
    for g in rep.findings:  # only count findings: their chunk's start
        return {"chunk": g.chunk, "sample": g.boundary_sample, "time_s": g.time_s, "kind": g.kind, "ratio": None,
                "glitch": True}
    for b in rep.boundaries:
        rs = {k: v for k, v in b.ratios().items() if isinstance(v, float) and math.isfinite(v)}
        if not rs:
            continue
        kind, r = max(rs.items(), key=lambda kv: kv[1])
        if best is None or r > best["ratio"]:
            best = {"chunk": b.chunk, "sample": b.sample, "time_s": b.time_s, "kind": kind, "ratio": r,
                    "glitch": False}
    return best


def drift(ref: Loaded, cand: Loaded, offline: Loaded | None, prep: SessionPrep) -> dict | None:
    """Stream vs offline per chunk, for the reference stream (the cost of streaming) and the candidate's."""
    from ..measure.streaming_metrics import stream_offline_drift

    if offline is None:
        return None
    om, oa = offline.tensors.get("flow_mel"), offline.tensors.get("audio")
    if om is None or oa is None:
        return {"available": False, "reason": f"the offline run {offline.path} holds no flow_mel and audio"}
    ratio = _constants(ref, cand).get("token_mel_ratio", 2)
    out: dict = {"available": True, "offline": offline.path, "sides": {}}
    for side, tr, chunks in (("ref", ref, prep.ref_chunks), ("cand", cand, prep.cand_chunks)):
        sm = _stream_mel(tr, chunks)
        sa, _ = _stream_audio(tr, chunks)
        if sm is None or sa is None or not chunks:
            out["sides"][side] = None
            continue
        frames, samples, f, s = [], [], 0, 0
        for c in chunks:
            nf = c.frames if c.frames is not None else ratio * ((c.n_tokens or 0) - (c.token_offset or 0))
            ns = c.samples if c.samples is not None else 0
            frames.append((f, f + nf))
            samples.append((s, s + ns))
            f, s = f + nf, s + ns
        try:
            rows = stream_offline_drift(sm, om, sa, oa, frames, samples)
        except ValueError as exc:
            out["sides"][side] = {"error": str(exc)}
            continue
        out["sides"][side] = [dict(r.to_dict(), index=chunks[r.chunk].index,
                                   audio_logmel_l1=_logmel_l1(sa, oa, r.samples)) for r in rows]
    return out


def _logmel_l1(a: torch.Tensor, b: torch.Tensor, span) -> float | None:
    """Log-mel L1 (the pipeline's mel recipe) between two streams over samples ``span``: how far the streamed
    audio sounds from the offline audio where sample-level errors say little (the vocoder's phase)."""
    from ..measure.domain import domain_statistics

    s0, s1 = int(span[0]), int(span[1])
    x = a.detach().double().reshape(-1)[s0:s1]
    y = b.detach().double().reshape(-1)[s0:s1]
    if x.numel() != y.numel() or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return None
    v = domain_statistics("audio", y, x).get("logmel_l1")
    return float(v) if isinstance(v, (int, float)) else None


def _metric(entry: StageResult | None, key: str):
    if entry is None or not entry.metrics:
        return None
    v = entry.metrics.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def chunk_rows(prep: SessionPrep, by_name: dict) -> list[dict]:
    """Per reference call: its tokens, where it sits in each stream, the status of its stages, its errors."""
    rows = []
    inv = {i: j for j, i in prep.pairs.items()}
    cand_by = {c.index: c for c in prep.cand_chunks}
    rstart = cstart = 0
    cstarts = {}
    for c in prep.cand_chunks:
        cstarts[c.index] = cstart
        cstart += c.samples or 0
    rs = {r.get("index"): r for r in plan_rows(prep.ref_schedule)}
    for c in prep.ref_chunks:
        j = inv.get(c.index)
        cc = cand_by.get(j) if j is not None else None
        prefix = f"chunk{c.index}."
        stages = {n[len(prefix):]: s for n, s in by_name.items() if n.startswith(prefix)}
        statuses = {f: s.status for f, s in stages.items()}
        fails = [n for n, s in sorted(stages.items(), key=lambda kv: position(prefix + kv[0])) if s.status == "fail"]
        mel, aud = by_name.get(prefix + "mel"), by_name.get(prefix + "audio")
        hop = (rs.get(c.index) or {}).get("hop")
        row = {"chunk": c.index, "cand_chunk": j, "token_offset": c.token_offset, "hop": hop, "final": bool(c.finalize),
               "ref_samples": [rstart, rstart + (c.samples or 0)],
               "cand_samples": [cstarts[j], cstarts[j] + (cc.samples or 0)] if cc is not None else None,
               "status": "fail" if fails else ("missing" if j is None or any(v == "missing" for v in statuses.values())
                                               else "pass"),
               "first_fail": prefix + fails[0] if fails else None, "statuses": statuses,
               "mel": {"max_abs_err": _metric(mel, "max_abs_err"), "rel_l2": _metric(mel, "rel_l2"),
                       "status": mel.status if mel else None},
               "audio": {"max_abs_err": _metric(aud, "max_abs_err"), "rel_l2": _metric(aud, "rel_l2"),
                         "snr_db": _metric(aud, "snr_db"), "logmel_l1": _metric(aud, "logmel_l1"),
                         "status": aud.status if aud else None, "statistic": aud.statistic if aud else None,
                         "value": aud.value if aud else None, "limit": aud.limit if aud else None,
                         "gate": aud.gate if aud else None,
                         "problem": aud.problem.get("message") if aud is not None and aud.problem else None}}
        rows.append(row)
        rstart += c.samples or 0
    return rows


def section(ref: Loaded, cand: Loaded, offline: Loaded | None, prep: SessionPrep, by_name: dict, floor=None
            ) -> tuple[dict, list[Finding]]:
    """The ``Comparison.session`` section and the findings found with it (glitches, the cost of streaming);
    ``floor``: the session's floor (its measured glitch thresholds)."""
    gl, gfind, gnotes = glitches(ref, cand, prep, floor)
    dr = drift(ref, cand, offline, prep)
    findings = list(gfind)
    if dr and dr.get("available"):
        findings.extend(_drift_findings(dr))
    sec = {
        "kind": ref.metadata.get("session") or cand.metadata.get("session") or "streaming",
        "matched_by": prep.matched_by,
        "schedules": {"ref": prep.ref_schedule, "cand": prep.cand_schedule, "source": prep.schedule_source,
                      "equal": prep.schedule_diff is None,
                      "ref_text": schedule_text(prep.ref_schedule), "cand_text": schedule_text(prep.cand_schedule),
                      "first_difference": list(prep.schedule_diff) if prep.schedule_diff else None},
        "options": {"ref": ref.metadata.get("session_options"), "cand": cand.metadata.get("session_options")},
        "deviations": cand.metadata.get("session_deviations") or {},
        "ref_chunks": [c.to_json() for c in prep.ref_chunks],
        "cand_chunks": [c.to_json() for c in prep.cand_chunks],
        "pairs": {str(k): v for k, v in sorted(prep.pairs.items())},
        "unmatched": {"ref": prep.unmatched_ref, "cand": prep.unmatched_cand},
        "chunks": chunk_rows(prep, by_name),
        "boundaries": {"ref": _starts(prep.ref_chunks), "cand": _starts(prep.cand_chunks)},
        "glitches": gl,
        "drift": dr,
        "notes": gnotes,
        "sample_rate": _sr(ref),
    }
    return sec, findings


def _starts(chunks: list[ChunkInfo]) -> list[int] | None:
    """Stream sample index where each call after the first starts (None when a count is unknown)."""
    if not chunks or any(c.samples is None for c in chunks):
        return None
    out, s = [], 0
    for c in chunks[:-1]:
        s += c.samples
        out.append(s)
    return out


def _drift_findings(dr: dict) -> list[Finding]:
    r, c = dr["sides"].get("ref"), dr["sides"].get("cand")
    if not isinstance(r, list):
        return []

    def span(rows, key, agg=max):
        vals = [x[key] for x in rows if isinstance(x.get(key), (int, float)) and math.isfinite(x[key])]
        return agg(vals) if vals else None

    body = [x for x in r[:-1]] if len(r) > 1 else []
    msg = (f"streaming costs (the reference stream against the offline run of the same tokens): mel max |diff| "
           f"{_fmtv(span(body, 'mel_max_abs', min))}..{_fmtv(span(body, 'mel_max_abs'))} on the calls with the chunk "
           f"mask, {_fmtv(r[-1]['mel_max_abs'])} on the final call; audio log-mel L1 up to "
           f"{_fmtv(span(r, 'audio_logmel_l1'))}")
    ev = {"ref": r}
    if isinstance(c, list):
        msg += (f". The candidate stream against the same offline run: mel max |diff| up to "
                f"{_fmtv(span(c, 'mel_max_abs'))}, audio log-mel L1 up to {_fmtv(span(c, 'audio_logmel_l1'))}")
        ev["cand"] = c
    return [_finding("stream_vs_offline", None, "info", msg, ev)]
