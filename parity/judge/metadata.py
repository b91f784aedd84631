"""What the two traces' metadata says, judged by meaning: a different step count, scheduler, guidance rate,
weights, noise, streaming or finalize flag is a failure (the two sides did not compute the same thing); dtype,
device, attention kernels and environment are information; a reference produced in reduced precision or by
another pipeline is a hygiene warning; the candidate's ONNX Runtime provenance says whether it ran on the
provider it was required to. Pure judgement over two metadata dicts."""

from __future__ import annotations

import json

from ..result import Finding

_f = Finding.at


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


def _brief(v) -> str:
    """A metadata value as a finding prints it: numbers, strings and booleans as they are (strings cut at 60
    characters); a structure by its kind and size, never its contents."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return v if len(v) <= 60 else v[:57] + "..."
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)} entries"
    if isinstance(v, dict):
        keys = list(v)[:4]
        return f"a table ({', '.join(map(str, keys))}{', ...' if len(v) > 4 else ''})"
    return f"a {type(v).__name__}"


def _step_count(v) -> int | None:
    """A step count: an integer (or an integral float / numeric string), else None."""
    n = _num(v) if not isinstance(v, bool) else None
    return int(n) if n is not None and n == int(n) and n >= 0 else None


def _unusable(key: str, ref, cand) -> Finding:
    what = {"n_timesteps": "a step count", "cfg_rate": "a number", "t_scheduler": "a scheduler name"}[key]
    return _f("metadata_unusable", None, "info",
              f"{key} not compared: {what} was expected (reference {_brief(ref)}, candidate {_brief(cand)})",
              {"key_unusable": key})


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

    # schedule and guidance: compared only as what they are (a step count, a name, a number); a value of another
    # kind (a dump's "steps" table) is said to be unusable, never printed
    if both("n_timesteps"):
        rn, cn = _step_count(ref["n_timesteps"]), _step_count(cand["n_timesteps"])
        if rn is None or cn is None:
            out.append(_unusable("n_timesteps", ref["n_timesteps"], cand["n_timesteps"]))
        elif rn != cn:
            out.append(_f("schedule_mismatch", "step1.dt", "failure",
                          f"n_timesteps differs: reference {rn}, candidate {cn} (a {cn}-step candidate cannot match "
                          f"a {rn}-step reference)", {"key": "n_timesteps", "ref": rn, "cand": cn}))
    if both("t_scheduler"):
        if not (isinstance(ref["t_scheduler"], str) and isinstance(cand["t_scheduler"], str)):
            out.append(_unusable("t_scheduler", ref["t_scheduler"], cand["t_scheduler"]))
        elif ref["t_scheduler"].lower() != cand["t_scheduler"].lower():
            out.append(_f("schedule_mismatch", "step1.dt", "failure",
                          f"t_scheduler differs: reference {_brief(ref['t_scheduler'])}, candidate "
                          f"{_brief(cand['t_scheduler'])}",
                          {"key": "t_scheduler", "ref": ref["t_scheduler"], "cand": cand["t_scheduler"]}))
    if both("cfg_rate"):
        rc, cc = _num(ref["cfg_rate"]), _num(cand["cfg_rate"])
        if rc is None or cc is None or isinstance(ref["cfg_rate"], bool) or isinstance(cand["cfg_rate"], bool):
            out.append(_unusable("cfg_rate", ref["cfg_rate"], cand["cfg_rate"]))
        elif abs(rc - cc) > 1e-9:
            out.append(_f("cfg_combination_mismatch", "step1.v_cfg", "failure",
                          f"cfg_rate differs: reference {rc:g}, candidate {cc:g}",
                          {"key": "cfg_rate", "ref": rc, "cand": cc}))
    if both("weights_sha256") and str(ref["weights_sha256"]) != str(cand["weights_sha256"]):
        out.append(_f("weights_mismatch", "mu", "failure",
                      f"the two sides ran different weights: {str(ref['weights_sha256'])[:20]} vs "
                      f"{str(cand['weights_sha256'])[:20]}",
                      {"key": "weights_sha256", "ref": ref["weights_sha256"], "cand": cand["weights_sha256"]}))
    unshared = cand["noise"].get("unshared") if both("noise") and isinstance(cand["noise"], dict) else None
    if isinstance(unshared, list) and unshared and "rand_noise" not in unshared:
        # a candidate that declares which noise it drew itself: the flow's is shared, the vocoder's is not; the
        # data decide at the vocoder (vocoder_noise_not_shared), this is what the provenance says
        out.append(_f("noise_partly_shared", None, "info",
                      f"the candidate shares rand_noise but draws {', '.join(map(str, unshared))} itself (its "
                      f"provenance says so): the harmonic source and what follows differ by noise",
                      {"unshared": unshared}))
    elif both("noise") and _noise_id(ref["noise"]) != _noise_id(cand["noise"]):
        out.append(_f("noise_not_shared", "x0", "failure",
                      f"noise provenance differs: reference {_brief(_noise_id(ref['noise']))}, candidate "
                      f"{_brief(_noise_id(cand['noise']))}",
                      {"key": "noise", "ref": ref["noise"], "cand": cand["noise"]}))
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
