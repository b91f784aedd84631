"""Diagnosis: turn per-stage judgements into an ordered list of findings an engineer can act on.

Each finding (:class:`parity.result.Finding`): ``code``, ``stage``, ``severity`` (error | failure |
warning | info), a one-line ``message`` in the engineer's terms and the ``evidence`` (numbers) behind it.
Findings are ordered by severity class first (errors, then failures, warnings, info) and by pipeline
position within a class; the first error or failure is the headline. Nothing here modifies its inputs.

**Divergences and the headline.** A failing stage is *downstream* of an earlier divergence only when one of its
inputs (the stages it is computed from, :func:`parity.stages.stage_inputs`, resolved through stages neither trace
holds) fails too; a failing stage whose inputs all pass is a divergence of its own (a *root*), classified on its
own (:func:`_classify`), with the stages downstream of it listed in one ``downstream_failures`` note. Roots are
ranked so that the headline is the first divergence that matters:

1. a root whose difference reaches its key output (``flow_mel`` for the flow's stages, ``audio`` for the
   vocoder's; :func:`parity.stages.key_stage_of`), or whose key output was not compared, in pipeline order;
2. then a root whose difference vanishes downstream (its key output was compared and passes): still a failure
   (the stage failed its gate), ranked after every root that matters (``evidence["rank"] = 1``), its message
   saying that the difference vanishes; it is the headline only when no divergence matters.

Metadata failures (a different step count, scheduler, CFG rate, weights or noise) keep their place by pipeline
position among the rank-0 failures. Stages outside the single-call table (a streaming session's chunk stages)
keep the simple rule: downstream of the latest earlier root.

**Named causes** beyond the stage's role (:data:`EXPLAIN`): ``vocoder_noise_not_shared`` (``source`` differs by
noise while ``f0`` matches: the candidate's HiFT draws its own random numbers; the finding says which tensors to
share, in which layout), ``stft_padding_mismatch`` (``s_stft`` differs only in its first and last frames while
``source`` matches: the centred STFT pads differently), and ``time_grid_rounding`` (information: the candidate's
time grid differs by rounding, and steps judged against the reference re-run at its grid).
"""

from __future__ import annotations

import dataclasses

from reference.config import SAMPLE_RATE

from ..result import Finding, StageResult, StepRow, fmt_value
from .observations import audio_findings, integer_stage, time_grid_findings, token_exactness_findings
from ..stages import (CHUNK_CONTROL, INPUTS, is_session_stage, is_vocoder_stage, key_stage_of, key_stages, layout,
                      parse_chunk, parse_step, position, sort_stages, stage_inputs)

FP_MAX = {"fp16": 65504.0, "bf16": 3.3895e38}

# what each first-divergence code means, in the engineer's terms
EXPLAIN = {
    "inputs_differ": "the two sides were not given the same inputs",
    "frontend_mismatch": "the flow front end (token embedding, pre-lookahead, speaker affine) differs",
    "noise_not_shared": "the initial noise x0 differs: the candidate does not use the shared rand_noise",
    "schedule_mismatch": "the ODE time grid differs (t/dt or the number of steps)",
    "estimator_mismatch": "the DiT estimator's conditional velocity differs while its inputs match",
    "uncond_branch_mismatch": "the unconditional CFG row differs while the conditional one matches "
                              "(the uncond row must zero mu, spks and cond, not x)",
    "cfg_combination_mismatch": "v1 and v2 match but their CFG combination does not (guidance rate?)",
    "euler_update_mismatch": "v_cfg matches but the Euler update x + dt * v_cfg does not",
    "error_amplification": "each step's own (local) error is within tolerance; the ODE amplifies it",
    "nonfinite_origin": "non-finite values (NaN/Inf) first appear here",
    "flow_mel_mismatch": "every step matches but the flow output (prompt slicing?) does not",
    "vocoder_divergence": "the flow mel matches; the vocoder diverges here",
    "shape_mismatch": "the tensors cannot be aligned",
    "length_mismatch": "lengths differ (never truncated silently; --allow-trim to opt in)",
    "stage_mismatch": "this stage differs",
    "candidate_crashed": "the candidate raised an exception",
    # a streaming session's calls (chunk{c}.*) and stream (stream.*)
    "session_schedule_mismatch": "the candidate's streaming loop makes other calls than the reference's (hop, "
                                 "prompt pad, lookahead, final mask)",
    "session_options_mismatch": "the two sides ran the session with different options",
    "session_kind_mismatch": "one side is a streaming session, the other a single call",
    "chunk_tokens_mismatch": "the tokens passed to this call (or its token offset) differ",
    "chunk_finalize_mismatch": "this call's finalize flag differs (lookahead tokens decoded as real ones?)",
    "chunk_mask_mismatch": "this call's flow ran with the other chunk-mask setting",
    "chunk_flow_mismatch": "the flow output of this call differs while its tokens and flags match",
    "chunk_slice_mismatch": "the flow output matches; the frames appended to the cumulative mel differ "
                            "(the token_offset * token_mel_ratio slice)",
    "chunk_mel_mismatch": "the frames this call appended differ (its flow output was not captured)",
    "chunk_vocoder_mismatch": "the call's mel is within its tolerance, its emitted samples are not (the vocoder's own "
                              "error, or the loop's vocoder step: HiFT not run on the cumulative mel, the wrong "
                              "samples emitted)",
    "chunk_audio_mismatch": "the emitted samples differ (the mel of this call was not captured)",
    "chunk_vocoder_f0_mismatch": "the call's mel is within its tolerance, the F0 its vocoder computed is not (the "
                                 "vocoder's F0 predictor, or the loop's vocoder step: HiFT not run on the "
                                 "cumulative mel)",
    "chunk_f0_mismatch": "the F0 of this call's vocoder differs (the mel of this call was not captured)",
    "stream_mismatch": "the whole stream differs while every chunk compared before it matches",
}


_f = Finding.at


# ---------------------------------------------------------------------------------------------
# stages

_fmtv = fmt_value


def _judged_text(entry: StageResult) -> str:
    """``statistic value vs limit limit`` when both are numbers, else the judgement's own words (a non-finite
    stage has no value: its detail says how many NaN/Inf each side holds)."""
    if isinstance(entry.value, (int, float)) and isinstance(entry.limit, (int, float)):
        return f"{entry.statistic} {entry.value:.3g} vs limit {entry.limit:.3g}"
    return entry.detail or ""


def _passes(by_name: dict[str, StageResult], name: str) -> bool | None:
    e = by_name.get(name)
    if e is None or not e.compared:
        return None
    return e.ok


def _num_ev(entry: StageResult) -> dict:
    m = entry.metrics or {}
    ev = {k: m.get(k) for k in ("max_abs_err", "mean_abs_err", "rel_l2", "cosine", "snr_db", "max_abs_err_at")
          if k in m}
    ev.update({"statistic": entry.statistic, "value": entry.value, "limit": entry.limit, "gate": entry.gate})
    if entry.ratio is not None:
        ev["ratio"] = entry.ratio
    return ev


def _judged(entry: StageResult) -> str:
    """How the stage was judged, in the finding's words: the floor gate's "N x the noise floor" / "N x its
    rounding-only error", or the flat rule's value vs limit (and why no floor decided)."""
    if entry.gate == "floor":
        return entry.detail or ""
    judged = _judged_text(entry)  # a non-finite stage has no value: its detail says how many NaN/Inf each side holds
    reason = (entry.floor or {}).get("reason") if isinstance(entry.floor, dict) else None
    return "; ".join(p for p in (judged, f"flat tolerance: {reason}" if reason and entry.gate == "flat" else "") if p)


# A difference of the harmonic source that is the candidate's own noise (measured with
# parity.measure.diff_shape.noise_likeness on the fixture bundles, tiny model): mlx-audio-plus drawing its own HiFT noise
# gives |lag1| <= 0.006, flatness >= 0.989, |ref_corr| <= 0.01 (short, medium, long); the smooth-sine fault (a
# wrong phase) lag1 0.97, flatness 0.000, ref_corr -0.64..-0.72; a 1 % gain ref_corr 1.000. The limits sit between.
NOISE_MAX_LAG1 = 0.2
NOISE_MIN_FLATNESS = 0.5
NOISE_MAX_REF_CORR = 0.2
# A difference confined to the edges (parity.measure.diff_shape.edge_profile): frames above the interior's level only
# within the 8 at either end, and the interior at most a tenth of the largest difference. mlx-audio-plus's
# zero-padded STFT, fixture bundles: 2 frames at each end (of 2881 / 9601 / 26401), the largest edge difference
# 1.56 / 1.09 / 2.2 (0.66 single-call streaming, long), the interior (the source's own rounding, which passes its
# floor) 0.02 % / 0.5 % / 1.7 % of it (4 %, long, streaming).
EDGE_INTERIOR_REL = 0.1


def noise_like(nl: dict | None) -> bool:
    """The difference statistics of :func:`parity.measure.diff_shape.noise_likeness` say: independent white noise."""
    if not nl:
        return False
    lag1, flat, corr = nl.get("lag1"), nl.get("flatness"), nl.get("ref_corr")
    if not all(isinstance(v, float) and v == v for v in (lag1, flat, corr)):
        return False
    return abs(lag1) <= NOISE_MAX_LAG1 and flat >= NOISE_MIN_FLATNESS and abs(corr) <= NOISE_MAX_REF_CORR


def edge_confined(edge: dict | None) -> bool:
    """The difference of :func:`parity.measure.diff_shape.edge_profile` lies in a few frames at the ends only."""
    if not edge or not edge.get("max"):
        return False
    h, t, inner = edge.get("head", 0), edge.get("tail", 0), edge.get("interior_max", edge["max"])
    return h + t > 0 and isinstance(inner, float) and inner <= EDGE_INTERIOR_REL * edge["max"]


NOISE_REMEDY = ("share the reference's HiFT noise: hift_rand_ini [1, 9] float32 (the initial phases of the 9 harmonics; "
                "entry 0 is 0) and hift_sine_noise [1, samples, 9] float32 (sample-major: row i is "
                "output sample i, column h harmonic h; uniform in [0, 1), added as noise_amp * noise, not Gaussian; "
                "the first `samples` rows of upstream's 7.2M-row buffer), both in the file `parity noise export` "
                "writes next to rand_noise; use them where SineGen2 draws its initial phases and its sine noise")


def _noise_message(nl: dict, tail: str) -> str:
    return (f"source differs by noise while f0 matches: the difference is white and independent of the signal "
            f"(lag-1 autocorrelation {nl['lag1']:.2f}, spectral flatness {nl['flatness']:.2f}, correlation with "
            f"the source {nl['ref_corr']:.2f}, rms {nl['rms']:.3g}): the candidate's HiFT draws its own random "
            f"numbers. Remedy: {NOISE_REMEDY}" + tail)


def _tail(name: str, entry: StageResult, sample_rate: int) -> str:
    """`` (max |diff| ... at ...; how it was judged)``: the one tail of a stage finding's message (an integer
    stage says where it first differs; a call's wave is located in the call, a single call's in the audio)."""
    m = entry.metrics or {}
    if m.get("kind") == "int" and isinstance(m.get("first_mismatch"), dict):
        fm = m["first_mismatch"]
        return f" (first mismatch at {fm.get('index')}: {fm.get('ref')} vs {fm.get('cand')})"
    err = f"max |diff| {m.get('max_abs_err'):.3g}" if isinstance(m.get("max_abs_err"), float) else ""
    where = m.get("max_abs_err_at") or {}
    loc = ""
    if layout(name).kind == "wave" and where.get("frame") is not None:
        of = " of the chunk" if parse_chunk(name) else ""
        loc = f" at sample {where.get('frame')} ({where.get('frame') / sample_rate:.3f} s{of})"
    elif where.get("channel") is not None and where.get("frame") is not None:
        loc = f" at channel {where.get('channel')}, frame {where.get('frame')}"
    elif where.get("frame") is not None:
        loc = f" at frame {where.get('frame')}"
    judged = _judged(entry)
    return " (" + "; ".join(p for p in (err + loc if err else "", judged) if p) + ")" if (err or judged) else ""


def _values(entry: StageResult) -> tuple:
    fv = entry.first_values or {}
    r, c = fv.get("ref"), fv.get("cand")
    return (r[0] if isinstance(r, list) and r else r), (c[0] if isinstance(c, list) and c else c)


def _classify(name: str, entry: StageResult, by_name: dict[str, StageResult],
              local_stages: dict[str, StageResult], sample_rate: int = SAMPLE_RATE) -> tuple[str, str]:
    """(code, message) for the first failing stage: a stage of one call (a single call's, or one of a
    streaming session's calls under its ``chunk{c}.`` prefix), a session call's own stages, or the stream."""
    if is_session_stage(name):
        return _classify_session_stage(name, entry, by_name, local_stages, sample_rate)
    if entry.problem:
        return entry.problem["code"], entry.problem["message"]
    if entry.nonfinite() and not entry.nonfinite("ref"):
        st = entry.cand_stats
        return "nonfinite_origin", (f"non-finite values first appear at {name}: NaN {st.get('nan_count')}, "
                                    f"Inf {st.get('inf_count')} of {st.get('numel')} (first at index "
                                    f"{st.get('first_nonfinite_index')})")
    m = entry.metrics or {}
    tail = _tail(name, entry, sample_rate)
    if name in INPUTS:
        return "inputs_differ", f"input '{name}' differs between the two sides" + tail
    if name in ("mu", "spks", "cond"):
        return "frontend_mismatch", f"{name} differs with identical inputs: {EXPLAIN['frontend_mismatch']}" + tail
    if name == "x0":
        return "noise_not_shared", EXPLAIN["noise_not_shared"] + tail
    st = parse_step(name)
    if st:
        k, field = st
        if field in ("t", "dt"):
            return "schedule_mismatch", f"step {k}: {field} differs ({EXPLAIN['schedule_mismatch']})" + tail
        if field.startswith("block"):
            return "estimator_mismatch", f"step {k}: DiT {field} output differs while the step's inputs match" + tail
        if field == "v1":
            loc_e = local_stages.get(name)
            if k > 1 and loc_e is not None and loc_e.status == "pass":
                return "error_amplification", (f"step {k}: v1 exceeds its tolerance only through accumulated error; "
                                               f"driven from the reference's own step{k - 1}.x the step's error is "
                                               f"within tolerance" + tail)
            return "estimator_mismatch", f"step {k}: {EXPLAIN['estimator_mismatch']}" + tail
        # each explanation needs the stages it relies on to have been compared and to match
        if field == "v2":
            if _passes(by_name, f"step{k}.v1"):
                return "uncond_branch_mismatch", f"step {k}: {EXPLAIN['uncond_branch_mismatch']}" + tail
            return "estimator_mismatch", f"step {k}: the unconditional velocity differs (v1 was not captured)" + tail
        if field == "v_cfg":
            if _passes(by_name, f"step{k}.v1") and _passes(by_name, f"step{k}.v2"):
                return "cfg_combination_mismatch", f"step {k}: {EXPLAIN['cfg_combination_mismatch']}" + tail
            return "cfg_combination_mismatch", f"step {k}: the guided velocity differs (v1/v2 not both captured)" + tail
        if field == "x":
            if _passes(by_name, f"step{k}.v_cfg"):
                return "euler_update_mismatch", f"step {k}: {EXPLAIN['euler_update_mismatch']}" + tail
            return "state_mismatch", (f"step {k}: the ODE state x differs; v_cfg of this step was not captured, so the "
                                      f"velocity and the update cannot be told apart") + tail
    if name == "flow_mel":
        last = max((parse_step(n)[0] for n in by_name if parse_step(n) and parse_step(n)[1] == "x"), default=None)
        xe = by_name.get(f"step{last}.x") if last else None
        xm = (xe.metrics if xe is not None else None) or {}
        fm_err, x_err = m.get("max_abs_err"), xm.get("max_abs_err")
        if (xe is not None and _passes(by_name, xe.name) and isinstance(fm_err, float) and isinstance(x_err, float)
                and x_err > 0 and fm_err <= x_err):
            # the flow output is the last state's target frames: its worst error cannot exceed the state's, and
            # does not here: not a slicing bug (that compares other frames), the mel's own (stricter) limit
            return "flow_mel_mismatch", (f"the flow output carries the last ODE state's error (step{last}.x max |diff| "
                                         f"{x_err:.3g}, within its own limit); it fails only against the flow_mel "
                                         f"limit, judged on the target frames" + tail)
        return "flow_mel_mismatch", EXPLAIN["flow_mel_mismatch"] + tail
    if is_vocoder_stage(name):
        if name == "source" and _passes(by_name, "f0"):
            nl = m.get("difference") if isinstance(m.get("difference"), dict) else None
            if noise_like(nl):
                return "vocoder_noise_not_shared", _noise_message(nl, tail)
        edge = m.get("edge") if isinstance(m.get("edge"), dict) else None
        if name == "s_stft" and _passes(by_name, "source") and edge_confined(edge):
            return "stft_padding_mismatch", (
                f"s_stft differs only in its first {edge['head']} and last {edge['tail']} of {edge['frames']} frames "
                f"(interior max |diff| {edge['interior_max']:.3g}, edges up to {edge['max']:.3g}) while the source "
                f"matches: the centred STFT pads the signal differently (upstream's torch.stft(center=True) reflects "
                f"n_fft/2 samples at each end; zero padding differs in exactly these frames)" + tail)
        fm = _passes(by_name, "flow_mel")
        lead = "the flow mel matches; " if fm else ""
        where = (f"; the difference is confined to the first {edge['head']} and last {edge['tail']} of "
                 f"{edge['frames']} frames (an edge effect: padding)" if edge_confined(edge) else "")
        return "vocoder_divergence", f"{lead}the vocoder diverges at {name}{where}" + tail
    return "stage_mismatch", f"{name} differs" + tail


def _classify_session_stage(name: str, entry: StageResult, by_name: dict, local_stages: dict,
                            sample_rate: int) -> tuple[str, str]:
    """(code, message) for a streaming session's stage: a call's control values, its flow output, the frames it
    appended, its vocoder's F0 and samples, the stream; a call's flow stages are classified as in one call."""
    ch = parse_chunk(name)
    if entry.nonfinite() and not entry.nonfinite("ref"):
        st = entry.cand_stats
        where = f"chunk {ch[0]}, {ch[1]}" if ch else name
        return "nonfinite_origin", (f"non-finite values first appear at {where}: NaN {st.get('nan_count')}, Inf "
                                    f"{st.get('inf_count')} of {st.get('numel')}")
    if ch is None:  # the stream
        prior = [s for n, s in by_name.items() if parse_chunk(n) is not None and s.compared]
        if entry.problem:
            return entry.problem["code"], f"{name}: {entry.problem['message']}"
        lead = "every chunk stage compared before it matches; " if prior and all(s.ok for s in prior) else ""
        return "stream_mismatch", f"{lead}{name} differs" + _tail(name, entry, sample_rate)
    c, fld = ch
    pre = f"chunk {c}: "
    tail = _tail(name, entry, sample_rate) if not entry.problem else f" ({entry.problem['message']})"
    if fld in ("tokens", "token_offset"):
        return "chunk_tokens_mismatch", pre + EXPLAIN["chunk_tokens_mismatch"] + tail
    if fld == "finalize":
        r, v = _values(entry)
        return "chunk_finalize_mismatch", pre + f"called with finalize={bool(v) if v is not None else '?'}, the " \
            f"reference with finalize={bool(r) if r is not None else '?'} ({EXPLAIN['chunk_finalize_mismatch']})"
    if fld == "streaming":
        r, v = _values(entry)
        return "chunk_mask_mismatch", pre + f"the flow ran {'with' if v else 'without'} the chunk mask, the " \
            f"reference's {'with' if r else 'without'} it"
    control_ok = all(_passes(by_name, f"chunk{c}.{f}") is not False for f in CHUNK_CONTROL)
    if fld == "flow_mel_full":
        lead = "" if control_ok else "(its control values differ too) "
        return "chunk_flow_mismatch", pre + lead + EXPLAIN["chunk_flow_mismatch"] + tail
    if fld == "mel":
        full = _passes(by_name, f"chunk{c}.flow_mel_full")
        if full:
            return "chunk_slice_mismatch", pre + EXPLAIN["chunk_slice_mismatch"] + tail
        if full is None:
            return "chunk_mel_mismatch", pre + EXPLAIN["chunk_mel_mismatch"] + tail
        return "chunk_flow_mismatch", pre + EXPLAIN["chunk_flow_mismatch"] + tail
    if fld == "audio":
        mel = _passes(by_name, f"chunk{c}.mel")
        if mel:
            return "chunk_vocoder_mismatch", pre + EXPLAIN["chunk_vocoder_mismatch"] + tail
        return "chunk_audio_mismatch", pre + EXPLAIN["chunk_audio_mismatch"] + tail
    if fld == "f0":  # the first thing the call's vocoder computes, from the mel it was given
        mel = _passes(by_name, f"chunk{c}.mel")
        if mel:
            return "chunk_vocoder_mismatch", pre + EXPLAIN["chunk_vocoder_f0_mismatch"] + tail
        return "chunk_audio_mismatch", pre + EXPLAIN["chunk_f0_mismatch"] + tail
    if entry.problem:
        return entry.problem["code"], pre + entry.problem["message"]
    # the flow's own stages under the chunk prefix: classified as in a single call
    prefix = f"chunk{c}."
    inner_by = {n[len(prefix):]: e for n, e in by_name.items() if n.startswith(prefix)}
    inner_loc = {n[len(prefix):]: e for n, e in local_stages.items() if n.startswith(prefix)}
    code, msg = _classify(fld, entry, inner_by, inner_loc, sample_rate)
    return code, pre + msg


def compared_inputs(name: str, by_name: dict[str, StageResult], _seen: set | None = None) -> list[str] | None:
    """The nearest compared stages ``name`` is computed from (:func:`parity.stages.stage_inputs`, looking through
    stages that were not compared); None when its data flow is not in the table."""
    direct = stage_inputs(name, by_name)
    if direct is None:
        return None
    seen = set() if _seen is None else _seen
    out: list[str] = []
    for i in direct:
        if i in seen:
            continue
        seen.add(i)
        e = by_name.get(i)
        if e is not None and e.compared:
            out.append(i)
        else:
            out.extend(compared_inputs(i, by_name, seen) or [])
    return list(dict.fromkeys(out))


def divergences(failing: list[StageResult], by_name: dict[str, StageResult]) -> tuple[list[StageResult], dict]:
    """(roots, {root: [its downstream stages]}) of the failing stages (in pipeline order): a failing stage with a
    failing input is downstream of that input's root(s); one whose inputs all pass is a root. A stage outside the
    data-flow table is downstream of the latest earlier root."""
    roots: list[StageResult] = []
    root_of: dict[str, list[str]] = {}
    below: dict[str, list[str]] = {}
    for s in failing:
        ins = compared_inputs(s.name, by_name)
        if ins is None:
            parents = [roots[-1].name] if roots else []
        else:
            parents = list(dict.fromkeys(r for i in ins if by_name[i].status == "fail" for r in root_of.get(i, [])))
        if parents:
            root_of[s.name] = parents
            for r in parents:
                below.setdefault(r, []).append(s.name)
        else:
            roots.append(s)
            root_of[s.name] = [s.name]
    return roots, below


def vanishes_at(name: str, by_name: dict[str, StageResult]) -> str | None:
    """The key output (:func:`parity.stages.key_stage_of`) where a divergence at ``name`` is seen to vanish: it was
    compared and passes; None when it fails, was not compared, or is ``name`` itself."""
    key = key_stage_of(name)
    e = by_name.get(key) if key else None
    if key is None or key == name or e is None or not e.compared or e.status == "fail":
        return None
    return key


def diagnose(stages: list[StageResult], by_name: dict[str, StageResult], steps: list[StepRow],
             local_stages: dict[str, StageResult], ref, cand, meta_find: list[Finding], precision: str,
             audio: dict | None, mask_check: dict | None = None, sample_rate: int = SAMPLE_RATE) -> list[Finding]:
    """The ordered findings of one comparison (``ref``/``cand``: the two :class:`parity.ingest.Loaded`;
    ``mask_check``: the streaming chunk-mask check, whose finding goes before the stage's own at the same
    position: the cause before the symptom)."""
    from .mask import findings as mask_findings

    out: list[Finding] = list(meta_find) + mask_findings(mask_check)
    common = [s for s in stages if s.compared]
    if not common:
        out.append(_f("nothing_to_compare", None, "error",
                      "the two traces share no stage (check the names; --map a=b maps a name onto a canonical stage)",
                      {"ref": list(ref.tensors)[:30], "cand": list(cand.tensors)[:30]}))
    # the reference itself must be usable
    ref_bad = [s.name for s in stages if s.ref_stats and s.nonfinite("ref")]
    if ref_bad:
        out.append(_f("reference_nonfinite", ref_bad[0], "error",
                      f"the reference itself holds NaN/Inf (first at {ref_bad[0]}; {len(ref_bad)} stages): "
                      f"nothing can be judged against it", {"stages": ref_bad}))
    if ref.metadata.get("status") in ("crashed", "incomplete"):
        out.append(_f("reference_incomplete", None, "error",
                      f"the reference trace is {ref.metadata.get('status')}: {ref.metadata.get('error')}"))
    # a reference stored in reduced precision is itself a finding (field notes: an F16 .bak reference)
    low = [s for s in stages if (s.ref_stats or {}).get("dtype") in ("float16", "bfloat16")]
    if low:
        out.append(_f("reference_low_precision", low[0].name, "warning",
                      f"the reference stores {len(low)} stages in reduced precision (first {low[0].name}: "
                      f"{low[0].ref_stats['dtype']}); its own rounding limits what can be judged",
                      {"stages": [s.name for s in low]}))
    # crash of the candidate
    status = cand.metadata.get("status")
    if status in ("crashed", "incomplete"):
        err = cand.metadata.get("error") or {}
        missing = [n for n in sort_stages(ref.tensors) if n not in cand.tensors]
        at = err.get("stage") if isinstance(err, dict) and err.get("stage") else (missing[0] if missing else None)
        last = err.get("last_recorded") if isinstance(err, dict) else None
        if status == "crashed":
            msg = (f"candidate crashed while computing {at}" + (f" (after {last})" if last else "") + f": "
                   f"{err.get('type', 'error')}: {err.get('message', '')}")
        else:
            msg = f"candidate trace is incomplete (the run was killed); it stops before {at}"
        out.append(_f("candidate_crashed", at, "failure", msg, {"error": err, "last_recorded": last,
                                                                "missing_stages": missing[:50]}))
    # the divergences (failing stages whose inputs pass), each classified; the ones that vanish ranked last
    failing = [s for s in stages if s.status == "fail"]
    roots, below = divergences(failing, by_name)
    for root in roots:
        code, msg = _classify(root.name, root, by_name, local_stages, sample_rate)
        ev = _num_ev(root)
        gone = vanishes_at(root.name, by_name)
        if gone:
            msg += (f"; the difference vanishes downstream ({gone} passes): a note, not the first divergence "
                    f"that matters")
            ev.update(rank=1, vanishes_at=gone)
        out.append(_f(code, root.name, "failure", msg, ev))
        later = below.get(root.name) or []
        if later:
            out.append(_f("downstream_failures", later[0], "info",
                          f"{len(later)} later stages fail downstream of {root.name} (each has a failing input): "
                          + ", ".join(later[:8]) + (" ..." if len(later) > 8 else ""),
                          {"stages": later, "root": root.name}))
    out.extend(time_grid_findings(stages))
    # the vocoder driven by the reference's own mel: its own divergence, independent of the flow's
    loc_voc = [e for n, e in sorted(local_stages.items(), key=lambda kv: position(kv[0]))
               if is_vocoder_stage(n) and e.status == "fail"]
    if loc_voc:
        e = loc_voc[0]
        out.append(_f("vocoder_local_mismatch", e.name, "failure",
                      f"fed the reference flow_mel, the candidate vocoder itself diverges at {e.name}"
                      + (f" ({_judged(e)})" if _judged(e) else ""), _num_ev(e)))
    # step count differs (a 1-step candidate against a 10-step reference)
    rk = max([parse_step(n)[0] for n in ref.tensors if parse_step(n)] or [0])
    ck = max([parse_step(n)[0] for n in cand.tensors if parse_step(n)] or [0])
    if rk and ck and rk != ck and status not in ("crashed", "incomplete"):
        out.append(_f("schedule_mismatch", "step1.dt", "failure",
                      f"the candidate ran {ck} ODE steps, the reference {rk}", {"ref_steps": rk, "cand_steps": ck}))
    # where non-finite values first appear (if not the headline already), with the block when captured
    nf = [s for s in stages if s.cand_stats and s.nonfinite() and not (s.ref_stats and s.nonfinite("ref"))]
    if nf:
        s0 = nf[0]
        st = parse_step(s0.name)
        blk = ""
        if st and st[1].startswith("block"):
            blk = f" (step {st[0]}, DiT {st[1]})"
        if s0.name not in {r.name for r in roots}:
            out.append(_f("nonfinite_origin", s0.name, "failure",
                          f"non-finite values first appear at {s0.name}{blk}", {"stages": [s.name for s in nf][:20]}))
        elif blk:
            out = [dataclasses.replace(f, message=f.message + blk)
                   if f.stage == s0.name and f.code == "nonfinite_origin" else f for f in out]
    # error growth across steps
    grows = [r for r in steps if r.growth is not None and r.growth > 1.0]
    if steps and any(r.local.get("x") is not None for r in steps):
        amp = [r for r in steps if r.status.get("x") == "fail" and r.local.get("x") is not None
               and by_name.get(r.stage("x")) and local_stages.get(r.stage("x")) is not None
               and local_stages[r.stage("x")].status == "pass"]
        if amp:
            first_amp = amp[0]
            last = [r for r in steps if r.chunk == first_amp.chunk][-1]
            ratio = None
            if last.acc.get("x") and last.local.get("x"):
                ratio = last.acc["x"] / max(last.local["x"], 1e-30)
            out.append(_f("error_amplification", first_amp.stage("x"), "warning",
                          f"from {first_amp.where} on the accumulated error exceeds the tolerance while each step's "
                          f"own error is within it" + (f"; at the last step accumulated/local = {ratio:.3g}x"
                                                       if ratio else ""), {"steps": [r.step for r in amp]}))
    if grows:
        worst = max(grows, key=lambda r: r.growth)
        same = [r for r in steps if r.chunk == worst.chunk and r.growth is not None]
        out.append(_f("error_growth", worst.stage("x"), "info",
                      f"accumulated x error grows up to {worst.growth:.3g}x per step ({worst.where})",
                      {"growth": {r.step: r.growth for r in same}}
                      | ({"chunk": worst.chunk} if worst.chunk is not None else {})))
    # fp16/bf16 overflow risk from the reference's magnitudes (activations only: token ids, offsets and flags
    # are integers, which a port does not compute in fp16; their hazard is exactness, below)
    if precision in FP_MAX:
        lim = FP_MAX[precision]
        risky = []
        for s in stages:
            if integer_stage(s):
                continue
            rs = s.ref_stats or {}
            mx = max(abs(rs.get("min") or 0.0), abs(rs.get("max") or 0.0)) if rs else 0.0
            if mx and mx > lim / 64:
                risky.append((s.name, mx))
        if risky:
            nm, mx = max(risky, key=lambda x: x[1])
            out.append(_f("overflow_risk", risky[0][0], "warning",
                          f"{precision} range is +-{lim:.5g}; the reference reaches {mx:.4g} at {nm} "
                          f"({len(risky)} stages within 64x of the limit)", {"stages": dict(risky[:20])}))
    out.extend(token_exactness_findings(stages))
    # presence
    miss = [s.name for s in stages if s.status == "missing"]
    if miss and status not in ("crashed", "incomplete"):
        out.append(_f("stage_missing", miss[0], "info", f"{len(miss)} reference stages are absent from the candidate "
                      f"(not a failure: dumps from other implementations often hold a subset): " + ", ".join(miss[:8])
                      + (" ..." if len(miss) > 8 else ""), {"stages": miss}))
    req = [s.name for s in stages if s.status == "fail" and (s.rule or {}).get("required") and s.cand_stats is None]
    if req:
        out.append(_f("stage_missing_required", req[0], "failure", f"required stages absent: {', '.join(req)}"))
    # the stages a user cares most about: absent, the comparison says nothing about what is heard
    key_missing = [n for n in key_stages(list(ref.tensors) + list(cand.tensors)) if n not in cand.tensors]
    if key_missing and status not in ("crashed", "incomplete"):
        neither = [n for n in key_missing if n not in ref.tensors]
        who = "neither trace holds" if len(neither) == len(key_missing) else "the candidate lacks"
        out.append(_f("key_stages_missing", key_missing[0], "warning",
                      f"{who} {', '.join(key_missing)}: what the user hears is not compared "
                      f"(--require-stages makes this a failure)", {"stages": key_missing, "ref_lacks": neither}))
    extra = [s.name for s in stages if s.status == "extra"]
    if extra:
        out.append(_f("stage_extra", None, "info", f"{len(extra)} candidate stages have no reference counterpart: "
                      + ", ".join(extra[:8]), {"stages": extra}))
    # audio-level observations
    if audio and audio.get("comparable"):
        out.extend(audio_findings(audio))
    return sorted(out, key=Finding.sort_key)
