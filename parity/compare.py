"""compare -> diagnose: two traces (and optionally step-local and float64 traces) in, one result out.

The result is plain data (JSON-safe): ``verdict``, ``first_divergence``, ``findings``, ``stages``,
``normalisations``, ``steps``, ``audio``, ``metadata`` and ``policy``. The report and the CLI only
read it; nothing downstream recomputes a metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics as M
from .diagnose import diagnose, metadata_findings
from .ingest import Loaded, load
from .normalize import align
from .policy import Policy, judge, load_policy
from .stages import layout, parse_step, position, sort_stages

RESULT_SCHEMA = "tts-parity-comparison/1"
PROFILE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass
class CompareOptions:
    allow_trim: bool = False
    precision: str | None = None  # the candidate's precision class (default: from its metadata)
    attention: str | None = None
    audio_metrics: bool = True
    keep_vectors: bool = True  # per-frame vectors for the report


def _as_float_dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _cand_context(cand: Loaded, opts: CompareOptions) -> tuple[str, str]:
    meta = cand.metadata
    precision = opts.precision or meta.get("precision")
    if precision not in PROFILE_PRECISIONS:
        dts = meta.get("dtypes")
        names = json.dumps(dts).lower() if dts is not None else ""
        precision = "fp16" if ("float16" in names or "fp16" in names) else (
            "bf16" if ("bfloat16" in names or "bf16" in names) else "fp32")
        # a foreign dump without metadata: judge by the stored dtypes of its float tensors
        if dts is None:
            stored = {str(t.dtype) for t in cand.tensors.values() if t.is_floating_point()}
            if "torch.float16" in stored:
                precision = "fp16"
            elif "torch.bfloat16" in stored:
                precision = "bf16"
    attention = opts.attention or meta.get("attention") or "unknown"
    return precision, str(attention)


def _prompt_frames(ref: Loaded) -> int | None:
    if "prompt_feat" in ref.tensors:
        pf = ref.tensors["prompt_feat"]
        return int(pf.shape[1]) if pf.dim() == 3 else None
    v = ref.metadata.get("prompt_frames")
    return int(v) if isinstance(v, (int, float)) else None


def _derive_x0(tr: Loaded, other: Loaded) -> None:
    """A dump that holds the whole 15000-frame ``rand_noise`` instead of x0: take the slice the run used."""
    if "x0" in tr.tensors or "rand_noise" not in tr.tensors:
        return
    ref_x0 = other.tensors.get("x0")
    T = ref_x0.shape[-1] if ref_x0 is not None else (tr.tensors["mu"].shape[-1] if "mu" in tr.tensors else None)
    if T is None:
        return
    tr.tensors["x0"] = tr.tensors["rand_noise"][..., :T]
    tr.normalisations.append({"stage": "x0", "kind": "derive", "detail": f"x0 = rand_noise[..., :{T}]"})


def _upcast(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        t = t.float()
    return t.detach().cpu().numpy()


def _mel_of(wave: torch.Tensor) -> np.ndarray:
    from reference.config import MelConfig
    from reference.mel import mel_spectrogram

    return mel_spectrogram(wave.detach().float().reshape(1, -1), MelConfig())[0].numpy()


def domain_metrics(name: str, ra: torch.Tensor, ca: torch.Tensor) -> dict:
    """Stage-specific statistics the policy can gate on: F0 in cents/GPE/VDE for ``f0``; log-mel L1 and
    MCD through the pipeline's own mel recipe for ``audio``/``audio_preclamp``."""
    from . import audio_metrics as A

    out: dict = {}
    if name == "f0":
        fm = A.f0_metrics(ra.double().reshape(-1).numpy(), ca.double().reshape(-1).numpy())
        out.update({k: fm[k] for k in ("f0_rmse_cents", "f0_max_abs_cents", "gpe", "vde", "f0_mae_hz", "f0_max_abs_hz",
                                       "both_voiced")})
    elif name in ("audio", "audio_preclamp") and ra.numel() >= 1920:
        mr, mc = _mel_of(ra), _mel_of(ca)
        ld = A.logmel_distance(mr, mc)
        md = A.mcd(mr, mc)
        out.update({"logmel_l1": ld["logmel_l1"], "logmel_l1_max": ld["logmel_l1_max"],
                    "logmel_worst_frame": ld["worst_frame"], "mcd_db": md["mcd_db"]})
    return out


def _stage_compare(name: str, r: torch.Tensor, c: torch.Tensor, rule, opts: CompareOptions, prompt_frames,
                   arbiter_ref: torch.Tensor | None = None) -> dict:
    al = align(name, r, c, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
    entry = {"name": name, "normalisations": al.notes,
             "ref_stats": M.side_stats(r), "cand_stats": M.side_stats(c),
             "rule": rule.to_dict() if rule else None}
    if al.problem:
        entry.update(status="fail", statistic="shape", value=None, limit=None, problem=al.problem,
                     detail=al.problem["message"], metrics=None)
        return entry
    ra, ca = al.ref, al.cand
    for side, t in (("reference", r), ("candidate", c)):
        if t.is_floating_point() and t.dtype != torch.float32:
            entry["normalisations"].append({"stage": name, "kind": "upcast",
                                            "detail": f"{side} stored as {_as_float_dtype_name(t)}; compared in float64"})
    lay = layout(name)
    nd = ra.dim()
    ch = lay.channel_axis if lay.channel_axis is not None and lay.channel_axis < nd else None
    tx = (lay.time_axis % nd) if lay.time_axis is not None and nd else None
    atol, rtol = (rule.atol, rule.rtol) if rule else (0.0, 0.0)
    m = M.pair_metrics(_upcast(ra), _upcast(ca), atol=atol, rtol=rtol, cand_dtype=_as_float_dtype_name(c),
                       ref_dtype=_as_float_dtype_name(r), channel_axis=ch, time_axis=tx)
    if rule is not None and rule.statistic == "quantile" and m.get("finite_ok"):
        m["quantile_abs_err"] = M.quantile_abs_err(_upcast(ra), _upcast(ca), rule.quantile)
    if m.get("finite_ok"):
        m.update(domain_metrics(name, ra, ca))
    entry["metrics"] = m
    entry["first_values"] = {"ref": M.first_k_values(_upcast(ra)), "cand": M.first_k_values(_upcast(ca))}
    if opts.keep_vectors and tx is not None and lay.kind != "wave" and ra.dim() >= 2 and ra.shape[tx] > 1 \
            and ra.numel() < 5_000_000:  # waveforms: per-frame vectors live in the audio section
        entry["per_frame_error"] = M.to_jsonable(M.per_frame_error(_upcast(ra), _upcast(ca), time_axis=tx))
    arb = None
    if arbiter_ref is not None and rule is not None and rule.arbiter and m.get("finite_ok"):
        a64 = align(name, arbiter_ref.double(), c, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
        r64 = align(name, arbiter_ref.double(), r, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
        if a64.problem is None and r64.problem is None:
            mc = M.pair_metrics(a64.ref.numpy(), _upcast(a64.cand))
            mr = M.pair_metrics(r64.ref.numpy(), _upcast(r64.cand))
            if mc.get("rmse") is not None and mr.get("rmse") is not None:
                arb = {"statistic": "rmse", "cand_err": mc["rmse"], "ref_err": mr["rmse"]}
    if rule is None:
        entry.update(status="info", statistic=None, value=None, limit=None, detail="no policy rule for this stage")
        if not m.get("finite_ok"):
            entry.update(status="fail", detail="non-finite values (no rule needed: NaN never passes)")
        return entry
    j = judge(rule, m, arb)
    entry.update(status=j.status, statistic=j.statistic, value=j.value, limit=j.limit, detail=j.detail)
    if j.arbiter:
        entry["arbiter"] = j.arbiter
    entry["min_atol_to_pass"] = m.get("min_atol_to_pass")
    entry["min_rtol_to_pass"] = m.get("min_rtol_to_pass")
    return entry


def compare_loaded(ref: Loaded, cand: Loaded, policy: Policy | None = None, opts: CompareOptions | None = None,
                   local: Loaded | None = None, fp64: Loaded | None = None) -> dict:
    opts = opts or CompareOptions()
    policy = policy or load_policy()
    _derive_x0(ref, cand)
    _derive_x0(cand, ref)
    precision, attention = _cand_context(cand, opts)
    prompt_frames = _prompt_frames(ref)
    names = sort_stages(list(dict.fromkeys(list(ref.tensors) + list(cand.tensors))))
    stages = []
    for name in names:
        rule = policy.rule_for(name, precision, attention)
        in_r, in_c = name in ref.tensors, name in cand.tensors
        if in_r and in_c:
            entry = _stage_compare(name, ref.tensors[name], cand.tensors[name], rule, opts, prompt_frames,
                                   fp64.tensors.get(name) if fp64 is not None else None)
        elif in_r:
            req = bool(rule and rule.required)
            entry = {"name": name, "status": "fail" if req else "missing", "statistic": None, "value": None,
                     "limit": None, "ref_stats": M.side_stats(ref.tensors[name]), "cand_stats": None, "metrics": None,
                     "normalisations": [], "rule": rule.to_dict() if rule else None,
                     "detail": "required by the policy but absent from the candidate" if req
                     else "absent from the candidate"}
        else:
            entry = {"name": name, "status": "extra", "statistic": None, "value": None, "limit": None,
                     "ref_stats": None, "cand_stats": M.side_stats(cand.tensors[name]), "metrics": None,
                     "normalisations": [], "rule": None, "detail": "absent from the reference"}
        entry["position"] = list(position(name))
        stages.append(entry)
    by_name = {s["name"]: s for s in stages}

    # step-local errors: the candidate's step driven from the reference's own state
    local_stages = {}
    if local is not None:
        for name, t in local.tensors.items():
            if name in ref.tensors:
                rule = (policy.rule_for("local:" + name, precision, attention)
                        or policy.rule_for(name, precision, attention))
                local_stages[name] = _stage_compare(name, ref.tensors[name], t, rule, opts, prompt_frames)
    steps = step_table(ref, cand, by_name, local_stages)
    audio = None
    if opts.audio_metrics and "audio" in ref.tensors and "audio" in cand.tensors:
        audio = audio_section(ref, cand)
    meta_find = metadata_findings(ref.metadata, cand.metadata)
    findings = diagnose(stages, by_name, steps, local_stages, ref, cand, meta_find, precision, audio)
    failing = [f for f in findings if f["severity"] == "failure"]
    errors = [f for f in findings if f["severity"] == "error"]
    verdict = "error" if errors else ("fail" if failing else "pass")
    headline = (errors or failing or [None])[0]
    first = {"stage": headline["stage"], "code": headline["code"], "message": headline["message"]} if headline else None
    return {
        "schema": RESULT_SCHEMA,
        "verdict": verdict,
        "first_divergence": first,
        "findings": findings,
        "stages": stages,
        "local": list(local_stages.values()),
        "steps": steps,
        "audio": audio,
        "normalisations": ref.normalisations + cand.normalisations
        + [n for s in stages for n in s.get("normalisations", [])],
        "metadata": {"ref": ref.metadata, "cand": cand.metadata},
        "sources": {"ref": ref.path, "cand": cand.path, "local": local.path if local else None,
                    "fp64": fp64.path if fp64 else None, "ref_dialect": ref.dialect, "cand_dialect": cand.dialect,
                    "ref_names": ref.original_names, "cand_names": cand.original_names},
        "context": {"precision": precision, "attention": attention, "prompt_frames": prompt_frames,
                    "allow_trim": opts.allow_trim},
        "policy": {"sources": policy.sources},
        "summary": _summary(stages),
    }


def _summary(stages: list[dict]) -> dict:
    out: dict = {}
    for s in stages:
        out[s["status"]] = out.get(s["status"], 0) + 1
    return out


def _err(entry: dict | None, key: str = "max_abs_err"):
    if not entry or not entry.get("metrics"):
        return None
    v = M.metric_value(entry["metrics"], key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def step_table(ref: Loaded, cand: Loaded, by_name: dict, local_stages: dict) -> list[dict]:
    """Per ODE step: accumulated and local errors of v1, v2, v_cfg and x, growth factor, CFG gaps."""
    ks = sorted({parse_step(n)[0] for n in list(ref.tensors) + list(cand.tensors) if parse_step(n)})
    rows = []
    prev_acc = _err(by_name.get("x0"), "rmse")
    for k in ks:
        row = {"step": k}
        for f in ("v1", "v2", "v_cfg", "x"):
            n = f"step{k}.{f}"
            row[f"acc_{f}"] = _err(by_name.get(n), "max_abs_err")
            row[f"acc_{f}_rmse"] = _err(by_name.get(n), "rmse")
            row[f"local_{f}"] = _err(local_stages.get(n), "max_abs_err")
            row[f"local_{f}_rmse"] = _err(local_stages.get(n), "rmse")
            row[f"status_{f}"] = by_name[n]["status"] if n in by_name else None
        acc = row["acc_x_rmse"]
        row["growth"] = (acc / prev_acc) if (acc is not None and prev_acc not in (None, 0.0)) else None
        prev_acc = acc
        for side, tr in (("ref", ref), ("cand", cand)):
            v1, v2 = tr.tensors.get(f"step{k}.v1"), tr.tensors.get(f"step{k}.v2")
            if v1 is not None and v2 is not None and v1.shape == v2.shape:
                gap = (v1.double() - v2.double()).abs()
                row[f"cfg_gap_{side}"] = float(gap.mean()) if torch.isfinite(gap).all() else None
            else:
                row[f"cfg_gap_{side}"] = None
        t = ref.tensors.get(f"step{k}.t")
        row["t"] = float(t.reshape(-1)[0]) if t is not None and t.numel() else None
        rows.append(row)
    return rows


def audio_section(ref: Loaded, cand: Loaded) -> dict | None:
    from . import audio_metrics as A

    ra = ref.tensors["audio"].double().reshape(-1).numpy()
    ca = cand.tensors["audio"].double().reshape(-1).numpy()
    if ra.shape != ca.shape:
        return {"comparable": False, "reason": f"audio lengths differ: {ra.shape[0]} vs {ca.shape[0]} samples"}
    rm = ref.tensors.get("flow_mel")
    cm = cand.tensors.get("flow_mel")
    rf, cf = ref.tensors.get("f0"), cand.tensors.get("f0")
    sr = int(ref.metadata.get("sample_rate", 24000)) if isinstance(ref.metadata.get("sample_rate"), (int, float)) else 24000
    try:
        from reference.config import MelConfig
        from reference.mel import mel_spectrogram

        mel_fn = lambda w: mel_spectrogram(torch.from_numpy(np.nan_to_num(w)).float()[None], MelConfig())[0].numpy()  # noqa: E731
    except ImportError:
        mel_fn = None
    rep = A.audio_report(ra, ca, ref_mel=None if rm is None else rm.double().reshape(rm.shape[-2], rm.shape[-1]).numpy()
                         if rm.dim() == 3 else None,
                         cand_mel=None if cm is None or rm is None or cm.shape != rm.shape else
                         cm.double().reshape(cm.shape[-2], cm.shape[-1]).numpy(),
                         ref_f0=None if rf is None else rf.double().reshape(-1).numpy(),
                         cand_f0=None if cf is None or rf is None or cf.numel() != rf.numel() else
                         cf.double().reshape(-1).numpy(), sr=sr, mel_fn=mel_fn)
    rep = M.to_jsonable(rep)
    rep["comparable"] = True
    return rep


def compare_paths(ref_path, cand_path, *, policy_path=None, maps: dict | None = None, opts: CompareOptions | None = None,
                  local_path=None, fp64_path=None, pyproject=None) -> dict:
    ref = load(ref_path, maps)
    cand = load(cand_path, maps)
    local = load(local_path, maps) if local_path else None
    fp64 = load(fp64_path, maps) if fp64_path else None
    return compare_loaded(ref, cand, load_policy(policy_path, pyproject), opts, local, fp64)


def exit_code(result: dict) -> int:
    return {"pass": 0, "fail": 1}.get(result["verdict"], 2)


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(M.to_jsonable(result), indent=1, allow_nan=False))
    return path
