"""Diagnosis: turn per-stage judgements into an ordered list of findings an engineer can act on.

Each finding (:class:`parity.result.Finding`): ``code``, ``stage``, ``severity`` (error | failure |
warning | info), a one-line ``message`` in the engineer's terms and the ``evidence`` (numbers) behind it.
Findings are ordered by severity class first (errors, then failures, warnings, info) and by pipeline
position within a class; the first error or failure is the headline (the first divergence). Nothing here
modifies its inputs.
"""

from __future__ import annotations

import dataclasses
import json

from .result import Finding, StageResult, StepRow
from .stages import (INPUTS, is_session_stage, is_vocoder_stage, key_stages, layout, parse_step, position,
                     session_rule_stage, sort_stages)

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
}


def _f(code, stage, severity, message, evidence=None) -> Finding:
    return Finding(code, stage, severity, message, evidence or {}, list(position(stage)) if stage else [-1])


# ---------------------------------------------------------------------------------------------
# metadata

_DT = {"fp32": "float32", "f32": "float32", "float": "float32", "float32": "float32", "torch.float32": "float32",
       "fp16": "float16", "f16": "float16", "half": "float16", "float16": "float16", "torch.float16": "float16",
       "bf16": "bfloat16", "bfloat16": "bfloat16", "torch.bfloat16": "bfloat16", "fp64": "float64", "float64": "float64",
       "f64": "float64", "double": "float64"}


def _norm_dtypes(v):
    if isinstance(v, dict):  # compare the component dtypes only (candidates add their switch details)
        return {k: _DT.get(str(x).lower(), str(x).lower()) for k, x in v.items()
                if k in ("flow", "hift", "f0_predictor", "dit", "vocoder")}
    if v is None:
        return None
    return _DT.get(str(v).lower(), str(v).lower())


def _noise_id(v):
    if isinstance(v, dict):
        return v.get("fingerprint") or v.get("sha256") or v.get("source")
    return str(v) if v is not None else None


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _boolish(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v) if v is not None else None


def _dtype_message(ref_dt, cand_dt) -> str:
    """What differs, component by component (``flow float32 -> float16``), then the candidate's other dtype
    details; the whole dicts stay in the evidence."""
    rn, cn = _norm_dtypes(ref_dt), _norm_dtypes(cand_dt)
    if isinstance(rn, dict) and isinstance(cn, dict):
        keys = list(dict.fromkeys(list(rn) + list(cn)))
        diff = [f"{k} {rn.get(k, '-')} -> {cn.get(k, '-')}" for k in keys if rn.get(k) != cn.get(k)]
        other = [f"{k}={v}" for k, v in cand_dt.items() if k not in cn] if isinstance(cand_dt, dict) else []
        return ("dtypes differ (reference -> candidate): " + ", ".join(diff)
                + (f"; candidate also records {', '.join(other)}" if other else ""))
    return f"dtypes differ: reference {json.dumps(ref_dt)}, candidate {json.dumps(cand_dt)}"


def metadata_findings(ref: dict, cand: dict) -> list[Finding]:
    out = []

    def both(key):
        return key in ref and key in cand and ref[key] is not None and cand[key] is not None

    if both("n_timesteps") and _num(ref["n_timesteps"]) != _num(cand["n_timesteps"]):
        out.append(_f("schedule_mismatch", "step1.dt", "failure",
                      f"n_timesteps differs: reference {ref['n_timesteps']}, candidate {cand['n_timesteps']} "
                      f"(a {cand['n_timesteps']}-step candidate cannot match a {ref['n_timesteps']}-step reference)",
                      {"key": "n_timesteps", "ref": ref["n_timesteps"], "cand": cand["n_timesteps"]}))
    if both("t_scheduler") and str(ref["t_scheduler"]).lower() != str(cand["t_scheduler"]).lower():
        out.append(_f("schedule_mismatch", "step1.dt", "failure",
                      f"t_scheduler differs: reference {ref['t_scheduler']}, candidate {cand['t_scheduler']}",
                      {"key": "t_scheduler", "ref": ref["t_scheduler"], "cand": cand["t_scheduler"]}))
    if both("cfg_rate") and (_num(ref["cfg_rate"]) is None or _num(cand["cfg_rate"]) is None
                             or abs(_num(ref["cfg_rate"]) - _num(cand["cfg_rate"])) > 1e-9):
        out.append(_f("cfg_combination_mismatch", "step1.v_cfg", "failure",
                      f"cfg_rate differs: reference {ref['cfg_rate']}, candidate {cand['cfg_rate']}",
                      {"key": "cfg_rate", "ref": ref["cfg_rate"], "cand": cand["cfg_rate"]}))
    if both("weights_sha256") and str(ref["weights_sha256"]) != str(cand["weights_sha256"]):
        out.append(_f("weights_mismatch", "mu", "failure",
                      f"the two sides ran different weights: {str(ref['weights_sha256'])[:20]} vs "
                      f"{str(cand['weights_sha256'])[:20]}",
                      {"key": "weights_sha256", "ref": ref["weights_sha256"], "cand": cand["weights_sha256"]}))
    if both("noise") and _noise_id(ref["noise"]) != _noise_id(cand["noise"]):
        out.append(_f("noise_not_shared", "x0", "failure",
                      f"noise provenance differs: reference {_noise_id(ref['noise'])}, candidate "
                      f"{_noise_id(cand['noise'])}", {"key": "noise", "ref": ref["noise"], "cand": cand["noise"]}))
    for key in ("streaming", "finalize"):
        if both(key) and _boolish(ref[key]) != _boolish(cand[key]):
            out.append(_f("metadata_mismatch", "mu", "failure",
                          f"{key} differs: reference {ref[key]}, candidate {cand[key]}",
                          {"key": key, "ref": ref[key], "cand": cand[key]}))
    # information: what legitimately differs between a reference and an optimized candidate
    if both("dtypes") and _norm_dtypes(ref["dtypes"]) != _norm_dtypes(cand["dtypes"]):
        out.append(_f("dtype_differs", None, "info", _dtype_message(ref["dtypes"], cand["dtypes"]),
                      {"ref": ref["dtypes"], "cand": cand["dtypes"]}))
    if both("device") and str(ref["device"]).split(":")[0] != str(cand["device"]).split(":")[0]:
        out.append(_f("device_differs", None, "info", f"device differs: {ref['device']} vs {cand['device']}"))
    if both("attention") and str(ref["attention"]) != str(cand["attention"]):
        out.append(_f("attention_differs", None, "info", f"attention: reference {ref['attention']}, candidate "
                      f"{cand['attention']}; kernels that ran: "
                      f"{json.dumps((cand.get('attention_kernels') or {}).get('counts', cand.get('attention_kernels')))}"))
    fb = (cand.get("attention_kernels") or {}).get("fallbacks") if isinstance(cand.get("attention_kernels"), dict) else None
    if fb:
        out.append(_f("attention_fallback", None, "warning",
                      "the candidate's requested attention kernel failed and it fell back to the manual path: "
                      + "; ".join(f"{f['requested']} x{f['count']}: {f['reason']}" for f in fb), {"fallbacks": fb}))
    # reference hygiene (field notes: a "reference" that silently ran TensorRT / fp16)
    if ref.get("pipeline") not in (None, "reference"):
        out.append(_f("reference_hygiene", None, "warning",
                      f"the reference side was produced by the '{ref.get('pipeline')}' pipeline, not the reference"))
    rd = _norm_dtypes(ref.get("dtypes"))
    if isinstance(rd, dict) and any(v in ("float16", "bfloat16") for v in rd.values()):
        out.append(_f("reference_hygiene", None, "warning", f"the reference ran in reduced precision: {rd}"))
    if _boolish(ref.get("tensorrt")):
        out.append(_f("reference_hygiene", None, "warning", "the reference ran with TensorRT"))
    env_r, env_c = ref.get("env") or {}, cand.get("env") or {}
    if isinstance(env_r, dict) and isinstance(env_c, dict):
        diff = {k: (env_r.get(k), env_c.get(k)) for k in ("torch", "git_sha", "threads")
                if k in env_r and k in env_c and env_r[k] != env_c[k]}
        if diff:
            out.append(_f("env_differs", None, "info", "environment differs: " + ", ".join(
                f"{k} {a} vs {b}" for k, (a, b) in diff.items()), diff))
    only_r = sorted(k for k in ("n_timesteps", "t_scheduler", "cfg_rate", "weights_sha256", "noise") if k in ref and k not in cand)
    if only_r and cand:
        out.append(_f("metadata_missing", None, "info", f"the candidate's metadata lacks {', '.join(only_r)}"))
    out.extend(onnx_findings(cand))
    return out


def onnx_findings(cand: dict) -> list[Finding]:
    """What the candidate's ONNX Runtime provenance (``onnx``, ``onnx_run``) says about the run: a session that
    did not run on the provider it was required to (``required_provider_missing``, a failure: the candidate did
    not run as configured), and streaming calls made to a graph without an attention-mask input (information;
    whether that changed the result is the chunk-mask check's finding)."""
    out = []
    onnx, run = cand.get("onnx"), cand.get("onnx_run")
    sess = (onnx.get("session") or {}) if isinstance(onnx, dict) else {}
    if sess.get("require_provider") and sess.get("required_provider_missing"):
        out.append(_f("required_provider_missing", None, "failure", str(sess["required_provider_missing"]),
                      {"required": sess.get("require_provider"), "requested": sess.get("providers_requested"),
                       "used": sess.get("providers_used")}))
    if isinstance(run, dict) and (run.get("streaming_calls_without_mask_input") or 0) > 0:
        n, total = run["streaming_calls_without_mask_input"], run.get("streaming_calls")
        out.append(_f("streaming_calls_without_mask_input", None, "info",
                      f"{n} of {total} streaming estimator calls went to an ONNX graph without an attention-mask "
                      f"input: they ran with full attention instead of the chunk mask (upstream's exported file and "
                      f"TensorRT path; an export with --mask-input takes the mask)",
                      {"streaming_calls_without_mask_input": n, "streaming_calls": total, "calls": run.get("calls")}))
    return out


# ---------------------------------------------------------------------------------------------
# stages

def _fmtv(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


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


def _classify(name: str, entry: StageResult, by_name: dict[str, StageResult],
              local_stages: dict[str, StageResult]) -> tuple[str, str]:
    """(code, message) for the first failing stage."""
    if is_session_stage(name):  # a streaming session's chunk or stream stage (parity.session_compare)
        from .session_compare import classify_session_stage

        return classify_session_stage(name, entry, by_name, local_stages)
    if entry.problem:
        return entry.problem["code"], entry.problem["message"]
    if entry.nonfinite() and not entry.nonfinite("ref"):
        st = entry.cand_stats
        return "nonfinite_origin", (f"non-finite values first appear at {name}: NaN {st.get('nan_count')}, "
                                    f"Inf {st.get('inf_count')} of {st.get('numel')} (first at index "
                                    f"{st.get('first_nonfinite_index')})")
    m = entry.metrics or {}
    err = f"max |diff| {m.get('max_abs_err'):.3g}" if isinstance(m.get("max_abs_err"), float) else ""
    where = m.get("max_abs_err_at") or {}
    loc = ""
    if layout(name).kind == "wave" and where.get("frame") is not None:
        loc = f" at sample {where.get('frame')} ({where.get('frame') / 24000:.3f} s)"
    elif where.get("channel") is not None and where.get("frame") is not None:
        loc = f" at channel {where.get('channel')}, frame {where.get('frame')}"
    elif where.get("frame") is not None:
        loc = f" at frame {where.get('frame')}"
    judged = _judged(entry)
    tail = " (" + "; ".join(p for p in (err + loc if err else "", judged) if p) + ")" if (err or judged) else ""
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
                and x_err > 0 and abs(fm_err - x_err) <= 0.05 * x_err):
            # same worst element as the last ODE state: not a slicing bug, the mel's own (stricter) limit
            return "flow_mel_mismatch", (f"the flow output carries the last ODE state's error (step{last}.x max |diff| "
                                         f"{x_err:.3g}, within its own limit); it fails only against the flow_mel "
                                         f"limit, judged on the target frames" + tail)
        return "flow_mel_mismatch", EXPLAIN["flow_mel_mismatch"] + tail
    if is_vocoder_stage(name):
        fm = _passes(by_name, "flow_mel")
        lead = "the flow mel matches; " if fm else ""
        return "vocoder_divergence", f"{lead}the vocoder diverges at {name}" + tail
    return "stage_mismatch", f"{name} differs" + tail


def diagnose(stages: list[StageResult], by_name: dict[str, StageResult], steps: list[StepRow],
             local_stages: dict[str, StageResult], ref, cand, meta_find: list[Finding], precision: str,
             audio: dict | None, mask_check: dict | None = None) -> list[Finding]:
    """The ordered findings of one comparison (``ref``/``cand``: the two :class:`parity.ingest.Loaded`;
    ``mask_check``: the streaming chunk-mask check, whose finding goes before the stage's own at the same
    position: the cause before the symptom)."""
    from .streaming_mask import findings as mask_findings

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
    # the first failing stage, classified
    failing = [s for s in stages if s.status == "fail"]
    first = failing[0] if failing else None
    if first is not None:
        code, msg = _classify(first.name, first, by_name, local_stages)
        out.append(_f(code, first.name, "failure", msg, _num_ev(first)))
        later = [s.name for s in failing[1:]]
        if later:
            out.append(_f("downstream_failures", later[0], "info",
                          f"{len(later)} later stages also fail (downstream of {first.name}): "
                          + ", ".join(later[:8]) + (" ..." if len(later) > 8 else ""), {"stages": later}))
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
        if not (first is not None and first.name == s0.name):
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
        out.extend(_audio_findings(audio))
    return sorted(out, key=Finding.sort_key)


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


def _audio_findings(a: dict) -> list[Finding]:
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
    if isinstance(dc_c, float) and isinstance(dc_r, float) and abs(dc_c - dc_r) > 0.01:
        out.append(_f("audio_dc_offset", stage, "warning", f"DC offset {dc_c:.4f} vs reference {dc_r:.4f}"))
    clicks = a.get("clicks") or {}
    if isinstance(clicks.get("ratio_max"), float) and clicks["ratio_max"] > 10:
        t = clicks.get("worst_time_s")
        out.append(_f("audio_click", stage, "warning",
                      f"high-frequency burst {clicks['ratio_max']:.3g}x the reference's"
                      + (f" at {t:.3f} s" if isinstance(t, float) else ""), clicks))
    return out
