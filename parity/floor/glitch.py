"""The chunk-boundary glitch detectors' thresholds of a streaming session, measured as its floors are.

:func:`parity.measure.streaming_metrics.detect_glitches` scores every chunk boundary of a candidate stream (first- and
second-difference discontinuity, spectral flux, the differential DC step) and flags a score above a fixed multiple
of the local ceiling (the largest the reference, or the candidate away from the boundary, shows within 100 ms).
Those multiples (2.0, 1.5, 2.5) were set by hand from a few legitimate streams of the tiny model.

Here the session floor's own ensemble measures them: each fit member's stream is scored against the plain stream
at every boundary, and the deviation of its score from the plain stream's own score there is a legitimate
deviation; per boundary and detector, the extreme-value floor of those deviations (as a stage floor:
:func:`parity.floor.aggregate._ev_floor`). A candidate's boundary is then a glitch when its score deviates from the
reference's by more than k x that floor (k: the session floor's) *and* stands out locally (its score above the
local ceiling: a click, not a stream that differs everywhere). What it records per boundary: the reference's
scores and the floors; the verdict adds the ratio to the session section and a ``glitch_*`` failure per boundary
that is over.
"""

from __future__ import annotations

import math

import numpy as np

from . import aggregate as AG

DETECTORS = ("d1", "d2", "flux", "dc")
KIND = {"d1": "sample_discontinuity", "d2": "sample_discontinuity", "flux": "spectral_flux", "dc": "dc_step"}
LABEL = {"d1": "first-difference", "d2": "second-difference", "flux": "log-spectral flux", "dc": "DC step"}


def _expected(d: str, ref: float) -> float:
    """What a legitimate stream scores at a boundary: the reference's own score; 0 for the DC step (a
    differential detector: the reference against itself has none)."""
    return 0.0 if d == "dc" else ref


def _stream(tensors: dict) -> tuple[np.ndarray, list[int]] | None:
    if "stream.audio" not in tensors:
        return None
    counts, c = [], 0
    while f"chunk{c}.audio" in tensors:
        counts.append(int(tensors[f"chunk{c}.audio"].shape[-1]))
        c += 1
    y = tensors["stream.audio"].detach().double().reshape(-1).numpy()
    return (y, counts) if counts and sum(counts) == len(y) else None


def scores(tensors: dict, ref: dict, sample_rate: int) -> dict | None:
    """{(chunk, sample): {detector: score}} of the stream in ``tensors`` against the stream in ``ref`` (None: no
    stream, or the chunk counts do not add up)."""
    from ..measure.streaming_metrics import detect_glitches

    a, b = _stream(tensors), _stream(ref)
    if a is None or b is None:
        return None
    rep = detect_glitches(a[0], a[1], b[0], sample_rate=sample_rate)
    return {(bs.chunk, bs.sample): {"d1": bs.d1, "d2": bs.d2, "flux": bs.flux, "dc": bs.dc} for bs in rep.boundaries}


def glitch_floor(base: dict, member_scores: dict, members, sample_rate: int) -> dict:
    """The per-boundary floors from the fit members' scores (``member_scores``: {member name: :func:`scores`})."""
    own = scores(base, base, sample_rate)
    if not own:
        return {}
    fit = [m for m in members if m.role == "fit" and member_scores.get(m.name)]
    fam = {m.name: m.family for m in fit}
    seeded = {m.name: m.seed is not None for m in fit}
    rows = []
    for (c, b), ref in sorted(own.items()):
        floors = {}
        for d in DETECTORS:
            vals = {}
            for m in fit:
                s = member_scores[m.name].get((c, b), {}).get(d)
                if s is not None and math.isfinite(s) and math.isfinite(ref[d]):
                    vals[m.name] = abs(s - _expected(d, ref[d]))
            floors[d] = AG._ev_floor(vals, fam, seeded)[0] if vals else None
        rows.append({"chunk": c, "sample": b, "ref": {d: ref[d] for d in DETECTORS}, "floor": floors})
    return {"detectors": list(DETECTORS), "boundaries": rows,
            "rule": "glitch when |score - the reference's score| > k x floor and the score is above its local ceiling"}


def judge_boundaries(report, glitch: dict, k: float) -> tuple[list[dict], list]:
    """(per-boundary ratios, GlitchFindings) of a candidate's :class:`GlitchReport` against a session floor's
    ``glitch`` record. A boundary the floor does not hold (the candidate's calls differ) is not judged here (its
    counts are)."""
    from ..measure.streaming_metrics import GlitchFinding

    by = {(r["chunk"], r["sample"]): r for r in glitch.get("boundaries") or []}
    rows, found = [], []
    for bs in report.boundaries:
        fl = by.get((bs.chunk, bs.sample))
        if fl is None:
            continue
        ceil = bs.ratios()
        row = {"chunk": bs.chunk, "sample": bs.sample, "ratios": {}}
        seen = set()
        for d in DETECTORS:
            v, ref, f = getattr(bs, d), fl["ref"].get(d), fl["floor"].get(d)
            if v is None or ref is None or f is None or not (math.isfinite(v) and math.isfinite(ref)):
                continue
            dev = abs(v - _expected(d, ref))
            # a zero floor (every member scored this boundary bit for bit alike): one fp32 half-ulp of the score
            unit = f if f > 0 else 2.0 ** -24 * max(abs(ref), 1e-12)
            r = dev / unit
            row["ratios"][d] = r
            local = ceil.get(d)
            if r > k and isinstance(local, float) and local > 1.0 and KIND[d] not in seen:
                seen.add(KIND[d])
                found.append(GlitchFinding(
                    KIND[d], bs.chunk, bs.sample, bs.time_s, v, _expected(d, ref) + k * unit, ref,
                    f"chunk {bs.chunk} starts at sample {bs.sample} ({bs.time_s:.3f} s) with a {LABEL[d]} score of "
                    f"{v:.3g}, {r:.3g}x the floor of what legitimate re-computations of this session move it by "
                    f"({f:.3g}; gate {k:g}x) and above its local ceiling ({local:.3g}x)"))
        rows.append(row)
    return rows, found
