"""Findings about what was compared besides its divergences (:mod:`.diagnose` places them with the others):
the audio-level observations (non-finite samples, clipping, DC offset, clicks), the exactness of integer stages
held in a float dtype (token ids), and the time grid's rounding (steps judged against the reference re-run at
the candidate's grid)."""

from __future__ import annotations

from ..result import Finding, StageResult
from ..stages import layout, session_rule_stage

# audio warnings (never verdicts), with the values legitimate candidates reach: every shipped CPU profile (fp32,
# bf16, fp16, int8, ONNX Runtime) on every fixture bundle, offline and streaming, tiny preset (78 cases;
# benchmarks/measure_diagnose_thresholds.py, benchmarks/results/diagnose_thresholds.json, docs/benchmarks.md)
AUDIO_DC_STEP = 0.01  # |DC offset difference|: legitimate at most 0.0044 (2.3x below); NaN faults 0.018-0.022
AUDIO_CLICK_RATIO = 10.0  # click detector's worst burst ratio: legitimate at most 5.8 (1.7x below)

_f = Finding.at


def time_grid_findings(stages: list[StageResult]) -> list[Finding]:
    """Information: the candidate's time grid differs from the reference's by rounding (judged in grid units,
    :mod:`parity.floor.judge`), and which step stages passed against the reference re-run at its grid
    (:mod:`parity.capture.time_grid`)."""
    from ..floor.judge import TIME_GRID_UNIT, is_time_grid

    grid = [s for s in stages if is_time_grid(s.name) and s.status == "pass"
            and isinstance((s.metrics or {}).get("max_abs_err"), float) and s.metrics["max_abs_err"] > 0]
    rejudged = [s for s in stages if isinstance(s.extra.get("against_reference"), dict)]
    if not grid and not rejudged:
        return []
    units = max((s.metrics["max_abs_err"] / TIME_GRID_UNIT for s in grid), default=0.0)
    msg = ""
    if grid:
        msg = (f"the candidate's time grid differs from the reference's by rounding at {', '.join(s.name for s in grid)}"
               f" (at most {units:.2g} units of 2^-23, the grid's last bit: t read from the grid rather than "
               f"accumulated, or another library's cosine; legitimate)")
    if rejudged:
        parts = []
        for s in rejudged:
            was = s.extra["against_reference"]
            parts.append(f"{s.name} {was.get('ratio'):.2g}x -> {s.ratio:.2g}x" if isinstance(was.get("ratio"), float)
                         and isinstance(s.ratio, float) else s.name)
        msg += (("; " if msg else "") + "judged against the reference re-run at the candidate's grid, these pass "
                "(the time embedding amplifies the grid's rounding): " + ", ".join(parts))
    return [_f("time_grid_rounding", (grid or rejudged)[0].name, "info", msg,
               {"steps": [s.name for s in grid], "rejudged": [s.name for s in rejudged], "max_units": units})]


_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
# the largest integer up to which every integer is exact in a float format: 2^(significand bits + 1)
EXACT_INT = {"float16": 2048, "bfloat16": 256, "float32": 1 << 24}


def integer_stage(s: StageResult) -> bool:
    """A stage whose values are integers by meaning (token ids, a call's token offset and flags) or by dtype:
    never judged for fp16/bf16 range."""
    dts = {(st or {}).get("dtype") for st in (s.ref_stats, s.cand_stats)} - {None}
    if dts and dts <= set(_INT_DTYPES):
        return True
    rule_stage = session_rule_stage(s.name) or s.name
    return rule_stage in ("token", "prompt_token") or layout(s.name).kind == "tokens"


def token_exactness_findings(stages: list[StageResult]) -> list[Finding]:
    """A side that holds token ids in a float format cannot hold every id exactly: float16 only up to 2048,
    bfloat16 only up to 256 (CosyVoice 3 speech tokens go up to 6560). Said only where it applies: the ids are
    stored in such a dtype and reach beyond its exact range."""
    out = []
    for s in stages:
        if layout(s.name).kind != "tokens":  # token, prompt_token, chunk{c}.tokens
            continue
        for side, st in (("candidate", s.cand_stats), ("reference", s.ref_stats)):
            dt = (st or {}).get("dtype")
            exact = EXACT_INT.get(dt)
            vals = [abs(v) for v in ((s.ref_stats or {}).get("max"), (s.ref_stats or {}).get("min"),
                                     (st or {}).get("max"), (st or {}).get("min")) if isinstance(v, (int, float))]
            reach = max(vals) if vals else None
            if exact is None or reach is None or reach <= exact:
                continue
            out.append(_f("token_ids_inexact", s.name, "warning",
                          f"the {side} stores {s.name} as {dt}, which holds integers exactly only up to {exact}; "
                          f"the ids reach {reach:.0f}, so ids above {exact} are rounded (keep token ids in an "
                          f"integer dtype)", {"side": side, "dtype": dt, "exact_up_to": exact, "max_id": reach}))
    return out


def audio_findings(a: dict) -> list[Finding]:
    out = []
    stage = a.get("stage") or "audio"  # "stream.audio" for a streaming session
    cand, ref = a.get("cand") or {}, a.get("ref") or {}
    nf = (cand.get("nonfinite") or {}).get("total") if isinstance(cand.get("nonfinite"), dict) else None
    if nf:
        out.append(_f("audio_nonfinite", stage, "failure", f"the candidate audio holds {nf} non-finite samples"))
    cr, rr = (cand.get("clipping") or {}), (ref.get("clipping") or {})
    if cr.get("runs", 0) > rr.get("runs", 0):
        out.append(_f("audio_clipping", stage, "warning",
                      f"candidate clips at the 0.99 clamp in {cr.get('runs')} runs (reference {rr.get('runs', 0)}); "
                      f"longest {cr.get('longest_run')} samples", {"cand": cr, "ref": rr}))
    dc_c, dc_r = cand.get("dc_offset"), ref.get("dc_offset")
    if isinstance(dc_c, float) and isinstance(dc_r, float) and abs(dc_c - dc_r) > AUDIO_DC_STEP:
        out.append(_f("audio_dc_offset", stage, "warning", f"DC offset {dc_c:.4f} vs reference {dc_r:.4f}"))
    clicks = a.get("clicks") or {}
    if isinstance(clicks.get("ratio_max"), float) and clicks["ratio_max"] > AUDIO_CLICK_RATIO:
        t = clicks.get("worst_time_s")
        out.append(_f("audio_click", stage, "warning",
                      f"high-frequency burst {clicks['ratio_max']:.3g}x the reference's"
                      + (f" at {t:.3f} s" if isinstance(t, float) else ""), clicks))
    return out
