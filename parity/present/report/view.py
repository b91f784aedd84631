"""The view model: the comparison result reshaped for the page template (rows, tables, groups, notes) plus the
figures and players the page embeds. No metric is computed here; every number comes from the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..render import fmt
from ...result import Comparison, StageResult
from ...stages import STEP_OUTPUTS, layout, parse_chunk, parse_step
from .audio import audio_players, worst_positions
from .provenance import provenance_rows
from .plots import listvec, mel2d, plot_f0, plot_floor_ratios, plot_mel, plot_steps, plot_waves, vec

NONFINITE_CODES = ("nonfinite_origin", "reference_nonfinite", "audio_nonfinite")


def _loc(at: Any, stage: str | None = None) -> str:
    """A max-error location {flat, index, channel, frame} as text."""
    if not isinstance(at, dict):
        return ""
    kind = layout(stage).kind if stage else ""
    if kind == "wave" and at.get("frame") is not None:
        return f"sample {at['frame']}"
    parts = []
    if at.get("channel") is not None:
        parts.append(f"ch {at['channel']}")
    if at.get("frame") is not None:
        parts.append(f"frame {at['frame']}")
    if not parts and at.get("index") is not None:
        parts.append(f"index {fmt(at['index'])}")
    return ", ".join(parts)



def _evidence(ev: Any, limit: int = 10) -> list[tuple[str, str]]:
    if not isinstance(ev, dict):
        return [("evidence", fmt(ev))] if ev not in (None, {}, []) else []
    out = []
    for k, v in ev.items():
        if k.endswith("_at") and isinstance(v, dict):
            out.append((k, _loc(v) or fmt(v)))
        elif isinstance(v, list) and len(v) > 8:
            out.append((k, f"{len(v)} items: " + fmt(v[:8], limit=120) + " ..."))
        else:
            out.append((k, fmt(v, limit=200)))
        if len(out) >= limit:
            out.append(("...", f"{len(ev) - limit} more"))
            break
    return out


def _stage_row(s: StageResult, first: str | None) -> dict:
    m = s.metrics or {}
    sp = m.get("special") or {}
    name = s.name
    if m.get("kind") == "int" and isinstance(m.get("first_mismatch"), dict):
        fm = m["first_mismatch"]
        maxd = f"{m.get('n_mismatch')} mismatches; first at {fmt(fm.get('index'))}: {fmt(fm.get('ref'))} vs " \
               f"{fmt(fm.get('cand'))}"
    else:
        maxd = fmt(m.get("max_abs_err"), sp, "max_abs_err") if m else "-"
        loc = _loc(m.get("max_abs_err_at"), name)
        if loc:
            maxd += f" @ {loc}"
    min_atol = s.min_atol_to_pass if s.judged else m.get("min_atol_to_pass")
    atol_txt = fmt(min_atol, sp, "min_atol_to_pass") if (min_atol is not None or "min_atol_to_pass" in sp) else "-"
    if atol_txt == "+inf":
        atol_txt = "none (non-finite)"
    norms = [f"{n.get('kind')}: {n.get('detail')}" for n in s.normalisations if isinstance(n, dict)]
    rs, cs = s.ref_stats or {}, s.cand_stats or {}
    nf = []
    for side, st in (("ref", rs), ("cand", cs)):
        k = (st.get("nan_count") or 0) + (st.get("inf_count") or 0)
        if k:
            nf.append(f"{side}: {k} NaN/Inf")
    detail = s.detail or ""
    if s.arbiter:
        detail += f" [arbiter: {fmt(s.arbiter)}]"
    fl = s.floor if isinstance(s.floor, dict) else {}
    return {"name": name, "status": s.status, "statistic": s.statistic or "-", "gate": s.gate or "-",
            "floor": fmt(fl.get("unit", fl.get("value"))) if s.gate == "floor" or s.ratio is not None else "-",
            "ratio": ratio_text(s.ratio),
            "value": fmt(s.value), "limit": fmt(s.limit), "maxdiff": maxd, "min_atol": atol_txt,
            "min_rtol": fmt(s.min_rtol_to_pass, sp, "min_rtol_to_pass"), "norms": norms, "nonfinite": nf,
            "detail": detail, "first": first is not None and name == first,
            "shape": fmt(rs.get("shape") or cs.get("shape"))}


def ratio_text(r) -> str:
    """error / floor as display text ("12x", "0.31x")."""
    if r is None:
        return "-"
    if not isinstance(r, (int, float)) or r != r:
        return "?"
    if r == float("inf"):
        return "inf"
    return f"{r:.2g}x" if r < 1e4 else f"{r:.1e}x"


def floor_section(result: Comparison) -> dict:
    """The floor's provenance as the result holds it (``result.floor``): where it came from, its key, k and how
    k was chosen, the ensemble by family (members, seeds) and what each family contributed per stage; and
    the gates that decided. Nothing is recomputed."""
    fl = result.floor or {}
    gates = result.gates
    out = {"available": bool(fl.get("kind")), "applies": bool(fl.get("applies")), "source": fl.get("source"),
           "path": fl.get("path"), "reason": fl.get("reason") or "", "not_applied": fl.get("not_applied") or "",
           "tried": ", ".join(fl.get("tried") or []), "gates": gates, "kind": fl.get("kind"), "k": fl.get("k"),
           "digest": fl.get("digest"), "verified": fl.get("verified", True)}
    if not out["available"]:
        return out
    key = fl.get("key") or {}
    model = key.get("model") or {}
    out["key_rows"] = [(k, fmt(v, limit=200)) for k, v in (
        ("flow weights sha256", model.get("flow_sha256")), ("hift weights sha256", model.get("hift_sha256")),
        ("noise fingerprint", model.get("noise")), ("n_timesteps / t_scheduler / cfg_rate",
                                                    f"{model.get('n_timesteps')} / {model.get('t_scheduler')} / "
                                                    f"{model.get('cfg_rate')}"),
        ("bundle sha256", key.get("bundle")), ("streaming / finalize", f"{key.get('streaming')} / {key.get('finalize')}"),
        ("torch", key.get("torch")), ("kind", key.get("kind")))]
    prov = fl.get("provenance") or {}
    out["prov_rows"] = [(k, fmt(v, limit=300)) for k, v in prov.items() if v is not None]
    basis = fl.get("k_basis") or {}
    worst = basis.get("worst") or {}
    out["k_rows"] = [("rule", fmt(basis.get("rule"), limit=300)), ("largest held-out ratio", fmt(basis.get("largest"))),
                     ("Gumbel quantile", fmt(basis.get("gumbel_quantile"))), ("samples", fmt(basis.get("n_samples"))),
                     ("worst sample", f"{worst.get('sample')} at {worst.get('stage')} ({worst.get('statistic')}, "
                                      f"{fmt(worst.get('ratio'))})" if worst else "-")]
    fams = fl.get("families") or {}
    out["families"] = [{"family": f, "fit": d.get("fit"), "held_out": d.get("held_out"),
                        "seeds": fmt(d.get("seeds") or "-", limit=120), "members": fmt(d.get("members"), limit=300)}
                       for f, d in fams.items()]
    contrib = fl.get("contributions") or {}
    fam_names = list(contrib)
    stage_names = [s.name for s in result.stages if any(s.name in contrib[f] for f in fam_names)]
    out["contrib_families"] = fam_names
    out["contrib_rows"] = [{"stage": n, "values": [fmt((contrib[f].get(n) or [None])[0]) for f in fam_names]}
                           for n in stage_names]
    rec = fl.get("recipe") or {}
    out["recipe"] = fmt({k: v for k, v in rec.items() if k != "precision"}, limit=400)
    out["precision"] = fmt(rec.get("precision"), limit=400) if rec.get("precision") else None
    return out


def stage_groups(stages: list[StageResult], first: str | None) -> list[dict]:
    """Stage rows in pipeline order; a whole passing ODE step becomes one collapsible group."""
    groups: list[dict] = []
    i = 0
    while i < len(stages):
        st = parse_step(stages[i].name)
        if st is None:
            groups.append({"collapsible": False, "rows": [_stage_row(stages[i], first)]})
            i += 1
            continue
        k = st[0]
        grp = []
        while i < len(stages) and (parse_step(stages[i].name) or (None,))[0] == k:
            grp.append(stages[i])
            i += 1
        ok = all(g.ok for g in grp) and first not in [g.name for g in grp]
        rows = [_stage_row(g, first) for g in grp]
        if ok:
            errs = [(g.metric("max_abs_err"), g.name) for g in grp]
            errs = [e for e in errs if isinstance(e[0], (int, float))]
            worst = max(errs) if errs else None
            summary = f"{len(grp)} stages pass" + (f"; worst max |diff| {fmt(worst[0])} ({worst[1]})" if worst else "")
            rated = [g for g in grp if g.ratio is not None]
            if rated:
                wr = max(rated, key=lambda g: g.ratio)
                summary += f"; worst {ratio_text(wr.ratio)} floor ({wr.name})"
            groups.append({"collapsible": True, "id": f"step-{k}", "label": f"step{k}.*", "summary": summary,
                           "rows": rows})
        else:
            groups.append({"collapsible": False, "rows": rows})
    return groups


def _kv_rows(d: dict | None, skip=("special",)) -> list[tuple[str, str]]:
    if not isinstance(d, dict):
        return []
    sp = d.get("special") or {}
    return [(k, fmt(v, sp, k, limit=300)) for k, v in d.items() if k not in skip]


def _stats_table(rs: dict | None, cs: dict | None) -> list[tuple[str, str, str]]:
    keys = list(dict.fromkeys(list((rs or {}).keys()) + list((cs or {}).keys())))
    rsp, csp = (rs or {}).get("special") or {}, (cs or {}).get("special") or {}
    return [(k, fmt((rs or {}).get(k), rsp, k) if rs else "-", fmt((cs or {}).get(k), csp, k) if cs else "-")
            for k in keys if k != "special"]


def raw_stats(stages: list[StageResult]) -> list[dict]:
    """Everything the result holds about each stage (the step-local stages' rows are in the stage section)."""
    out = []
    for s in stages:
        m = s.metrics
        out.append({"name": str(s.name), "status": s.status,
                    "stats": _stats_table(s.ref_stats, s.cand_stats),
                    "metrics": "\n".join(f"{k}: {v}" for k, v in _kv_rows(m)) if m else "",
                    "metrics_special": fmt((m or {}).get("special")) if (m or {}).get("special") else None,
                    "rule": fmt(s.rule, limit=400) if s.rule else None,
                    "first_values": fmt(s.first_values, limit=400) if s.first_values else None,
                    "problem": fmt(s.problem, limit=400) if s.problem else None,
                    "detail": s.detail})
    return out


def nonfinite_rows(stages: list[StageResult]) -> list[dict]:
    rows = []
    seen_first = set()
    for s in stages:
        for side in ("ref", "cand"):
            st = (s.ref_stats if side == "ref" else s.cand_stats) or {}
            nan, inf = st.get("nan_count") or 0, st.get("inf_count") or 0
            if nan or inf:
                rows.append({"stage": s.name, "side": "reference" if side == "ref" else "candidate",
                             "nan": nan, "posinf": st.get("posinf_count") or 0, "neginf": st.get("neginf_count") or 0,
                             "numel": st.get("numel"), "first": fmt(st.get("first_nonfinite_index")),
                             "origin": side not in seen_first})
                seen_first.add(side)
    return rows


def audio_metric_tables(audio: dict | None) -> dict:
    if not audio:
        return {"available": False, "reason": "no audio section in the result (no audio on one side, or audio "
                                              "metrics were not computed)"}
    if audio.get("comparable") is False:
        return {"available": False, "reason": audio.get("reason") or "audio not comparable"}
    sections = []
    for key, title in (("waveform", "waveform"), ("spectral", "log-spectral distance"), ("mel", "log-mel / MCD"),
                       ("f0", "F0"), ("clicks", "clicks (high-frequency bursts)"), ("length", "length")):
        d = audio.get(key)
        if isinstance(d, dict):
            sections.append({"title": title, "rows": _kv_rows(d)})
        elif key != "length":
            sections.append({"title": title, "rows": [], "note": "not computed"})
    side_rows = []
    r, c = audio.get("ref") or {}, audio.get("cand") or {}
    for k in list(dict.fromkeys(list(r) + list(c))):
        if k == "special":
            continue
        rv, cv = r.get(k), c.get(k)
        if isinstance(rv, dict) or isinstance(cv, dict):
            for kk in list(dict.fromkeys(list(rv or {}) + list(cv or {}))):
                if kk == "special":
                    continue
                side_rows.append((f"{k}.{kk}", fmt((rv or {}).get(kk)), fmt((cv or {}).get(kk))))
        else:
            side_rows.append((k, fmt(rv, r.get("special"), k), fmt(cv, c.get("special"), k)))
    return {"available": True, "sections": sections, "sides": side_rows, "notes": audio.get("notes") or [],
            "finite_ok": audio.get("finite_ok"), "sr": audio.get("sr")}


# tensors and figures for the page


@dataclass
class Media:
    steps: dict
    mel: dict
    f0: dict
    waveform: dict
    listen: dict
    floor: dict | None = None
    session: dict | None = None  # the streaming-session section (parity.present.report.chunks)


def _step_limits(result: Comparison) -> dict[str, float]:
    out = {}
    first = result.steps[0] if result.steps else None
    for f in STEP_OUTPUTS:
        s = result.stage(first.stage(f) if first is not None else f"step1.{f}")
        rule = (s.rule if s else None) or {}
        if rule.get("statistic") == "elementwise" and isinstance(rule.get("atol"), (int, float)) and rule["atol"] > 0:
            out[f] = float(rule["atol"])
    return out


def _safe(fn, *a, **k) -> tuple[Any, str | None]:
    """A figure that fails to draw becomes a note; it never takes the report down."""
    try:
        return fn(*a, **k), None
    except Exception as exc:  # noqa: BLE001 - plotting foreign data must not crash the report
        return None, f"could not draw this figure: {type(exc).__name__}: {exc}"


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def floor_chart(result: Comparison) -> dict:
    """The error/floor chart over every compared stage in pipeline order, from the stages' ratios."""
    rows = [{"name": s.name, "ratio": s.ratio, "status": s.status, "gate": s.gate} for s in result.stages
            if s.gate is not None]
    if not any(r["ratio"] is not None for r in rows):
        return {"img": None, "note": "no stage has a floor ratio (every judged stage was decided by a flat "
                                     "tolerance)" if rows else "no stage was judged"}
    fd = result.first_divergence
    img, err = _safe(plot_floor_ratios, rows, (result.floor or {}).get("k"), fd.stage if fd else None)
    return {"img": img, "note": err}


def steps_section(result: Comparison) -> dict:
    """The ODE-step figure and table. A streaming session shows each recorded chunk's steps (the calls whose flow
    stages the capture kept, ``--step-chunks``), one line per chunk; rows name their chunk."""
    steps = result.steps
    chunks = sorted({r.chunk for r in steps if r.chunk is not None})
    n_calls = len((result.session or {}).get("chunks") or [])
    if not steps:
        note = ("no ODE steps recorded in this session (the capture keeps the flow stages of the calls named by "
                "--step-chunks: none here)" if result.session else
                "no ODE steps in either trace (e.g. an external dump without per-step tensors)")
        return {"img": None, "note": note, "rows": [], "chunks": []}
    img, err = _safe(plot_steps, steps, _step_limits(result))
    note = err
    if chunks:
        calls = f" of its {n_calls} calls" if n_calls else ""
        note = _join(err, f"streaming session: the ODE steps of {len(chunks)}{calls} (chunk "
                          f"{', '.join(map(str, chunks))}), the calls whose flow stages the capture kept "
                          f"(--step-chunks); every call runs the same schedule")
    return {"img": img, "note": note, "rows": [r.to_json() for r in steps], "chunks": chunks}


def _last_call_f0(t: dict) -> tuple[int | None, Any]:
    """The F0 of a session's last vocoder call that recorded one (over the cumulative mel: the whole stream)."""
    calls = sorted((ch[0], n) for n in t if (ch := parse_chunk(n)) is not None and ch[1] == "f0")
    return (calls[-1][0], t[calls[-1][1]]) if calls else (None, None)


def _chunk_bounds(t: dict) -> list[int]:
    """The frame where each call's appended mel starts in the stream (from ``chunk{c}.mel``), after the first."""
    mels = sorted((ch[0], t[n]) for n in t if (ch := parse_chunk(n)) is not None and ch[1] == "mel")
    out, acc = [], 0
    for _, m in mels[:-1]:
        acc += int(m.shape[-1])
        out.append(acc)
    return out


def f0_section(result: Comparison, rt: dict, ct: dict, have: bool, no_t: str) -> dict:
    """The F0 figure (the HiFT predictor's output, both sides, and their difference). A streaming session has no
    single-call ``f0``: the figure shows each side's last vocoder call (it computes F0 over the cumulative mel,
    so it covers the whole stream), chunk boundaries marked, and a row per call with its ``chunk{c}.f0`` stage
    as the comparison judged it."""
    sec: dict = {"img": None, "note": None, "chunks": []}
    thr = ((result.audio or {}).get("f0") or {}).get("voiced_threshold_hz")
    if thr is None:
        from ...measure.audio_metrics import VOICED_THRESHOLD_HZ

        thr = VOICED_THRESHOLD_HZ
    sec["threshold"] = fmt(thr)
    session = bool(result.session) and "f0" not in rt
    what, bounds = "f0", []
    if session:
        rc, rf_t = _last_call_f0(rt)
        cc, cf_t = _last_call_f0(ct)
        rf, cf = vec(rf_t), vec(cf_t)
        bounds = _chunk_bounds(rt)
        what = f"chunk{rc}.f0" if rc is not None else "chunk f0"
        for s in result.stages:
            ch = parse_chunk(s.name)
            if ch is not None and ch[1] == "f0":
                shape = (s.ref_stats or s.cand_stats or {}).get("shape") or []
                sec["chunks"].append({"chunk": ch[0], "stage": s.name, "status": s.status,
                                      "frames": shape[-1] if shape else None,
                                      "max_abs": fmt(s.metric("max_abs_err")), "gate": s.gate or "-",
                                      "detail": s.detail or ""})
    else:
        rf, cf = vec(rt.get("f0")), vec(ct.get("f0"))
    if rf is None:
        if not have:
            sec["note"] = no_t
        elif session:
            sec["note"] = ("no F0 in the reference session trace (a capture that predates per-call F0, or a dump "
                           "without chunk{c}.f0)")
        else:
            sec["note"] = "no f0 in the reference trace"
        return sec
    title = (f"F0 of the last vocoder call ({what}: over the cumulative mel, the whole stream)" if session
             else "F0 (HiFT predictor output)")
    sec["img"], err = _safe(plot_f0, rf, cf, float(thr), title=title, bounds=bounds)
    notes = [err, "the candidate has no f0: reference only" if cf is None else
             f"F0 lengths differ ({rf.size} vs {cf.size} frames): no difference curve" if cf.size != rf.size else None]
    if session:
        notes.append(f"streaming session: each vocoder call computes F0 over the cumulative mel; the figure shows "
                     f"the last call's ({what}, {rf.size} frames), the dotted lines where each later call's frames "
                     f"begin; the table judges every call's F0")
    sec["note"] = _join(*notes)
    return sec


def media_for(result: Comparison, rt: dict | None, ct: dict | None, budget: int, tensor_note: str | None) -> Media:
    rt, ct = rt or {}, ct or {}
    if result.session:  # a streaming session: the mel, waveform and players show the streams
        from .chunks import session_view

        sess = session_view(result, rt, ct, budget, _safe)
        rt, ct = ({**t, **{k: t[s] for k, s in (("flow_mel", "stream.mel"), ("audio", "stream.audio"))
                           if s in t and k not in t}} for t in (rt, ct))
    else:
        sess = {"available": False, "note": "not a streaming session (one token2wav call): no chunks"}
    have = bool(rt) or bool(ct)
    no_t = tensor_note or "no trace tensors were given to the report (only the comparison result): plots omitted"
    step_sec = steps_section(result)

    # mel
    mel_sec: dict = {"img": None, "note": None}
    rm, cm = mel2d(rt.get("flow_mel")), mel2d(ct.get("flow_mel"))
    label = "flow_mel"
    pf: list[tuple[str, np.ndarray]] = []
    st = result.stage("flow_mel")
    if st and st.per_frame_error:
        pf.append(("flow_mel: mean |cand - ref| per frame", listvec(st.per_frame_error)))
    apf = (result.audio or {}).get("per_frame") or {}
    if rm is None and not have:
        mel_sec["note"] = no_t
    elif rm is None and rt.get("audio") is not None:
        try:  # an external dump without flow_mel: the mel of each side's audio, by the pipeline's recipe
            from ...measure.melspec import audio_mel

            rm = audio_mel(vec(rt["audio"])).astype(np.float64)
            cm = audio_mel(vec(ct["audio"])).astype(np.float64) if ct.get("audio") is not None else None
            label = "mel of the audio (pipeline recipe; no flow_mel in the traces)"
            if apf.get("logmel_l1") is not None:
                pf.append(("audio log-mel L1 per frame", listvec(apf["logmel_l1"])))
        except Exception as exc:  # noqa: BLE001
            mel_sec["note"] = f"no flow_mel in the traces and the audio mel failed: {exc}"
    if rm is not None:
        if apf.get("lsd_db") is not None:
            pf.append(("audio log-spectral distance (dB)", listvec(apf["lsd_db"])))
        img, err = _safe(plot_mel, rm, cm, pf[:2], label)
        mel_sec["img"] = img
        notes = [err] if err else []
        if cm is None:
            notes.append("the candidate has no " + label.split(" ")[0] + ": reference only")
        elif cm.shape != rm.shape:
            notes.append(f"shapes differ (reference {list(rm.shape)}, candidate {list(cm.shape)}): no difference "
                         f"image")
        mel_sec["note"] = "; ".join(notes) or None
    elif mel_sec["note"] is None:
        mel_sec["note"] = "no flow_mel (and no audio) in the reference trace"

    f0_sec = f0_section(result, rt, ct, have, no_t)

    # waveform and players
    sr = result.sample_rate
    ra, ca = vec(rt.get("audio")), vec(ct.get("audio"))
    wav_sec: dict = {"img": None, "note": None}
    listen: dict = {"windows": [], "note": None, "sanitised": [], "missing": None}
    if ra is None:
        wav_sec["note"] = no_t if not have else "no audio in the reference trace"
        listen["missing"] = wav_sec["note"]
    else:
        pos = worst_positions(result, sr, ra.size if ca is None else min(ra.size, ca.size))
        worst, wl = pos[0] if pos else (None, "")
        wav_sec["img"], err = _safe(plot_waves, ra, ca, sr, worst, wl)
        no_cand = "the candidate has no audio (it crashed or did not dump it): reference only" if ca is None else None
        wav_sec["note"] = _join(err, no_cand)
        lp, err = _safe(audio_players, result, ra, ca, sr, budget)
        if lp:
            listen.update(lp)
        listen["missing"] = _join(err, no_cand)
    return Media(step_sec, mel_sec, f0_sec, wav_sec, listen, floor=floor_chart(result), session=sess)


# ---------------------------------------------------------------------------------------------
# the whole page

SECTION_IDS = ("verdict", "diagnosis", "provenance", "stages", "floor", "session", "steps", "mel", "f0", "waveform",
               "listen",
               "nonfinite", "audio-metrics", "raw-stats")


def mask_check_line(mc: dict | None) -> str | None:
    """The streaming chunk-mask check (:mod:`parity.capture.mask_check`) as one line, numbers from the result."""
    if not mc:
        return None
    if not mc.get("checked"):
        return f"not checked: {mc.get('reason')}"
    nums = (f" (rel_l2 to the masked reference {fmt(mc.get('err_vs_masked'))}, to the unmasked one "
            f"{fmt(mc.get('err_vs_unmasked'))}; the mask's own effect {fmt(mc.get('mask_effect'))}; "
            f"{fmt(mc.get('frames'))} frames, {fmt(mc.get('chunk_size'))}-frame chunks)")
    if mc.get("ignores_mask"):
        verdict = "the candidate IGNORES the chunk mask"
    elif mc.get("decidable"):
        verdict = "the candidate honours the chunk mask"
    else:
        verdict = "cannot decide"
    return f"{mc.get('stage') or 'step1.v1'}: {verdict}{nums}"


def page_context(result: Comparison, *, title: str, seconds: dict, media: Media, notes: list[str]) -> dict:
    """Everything ``report.html.j2`` shows, from the result (and the figures/players already made)."""
    import time

    fd = result.first_divergence
    first = fd.stage if fd else None
    findings = [{"severity": f.severity, "code": f.code, "stage": f.stage, "message": f.message,
                 "evidence": _evidence(f.evidence)} for f in result.findings]
    crash = next((f for f in result.findings if f.code == "candidate_crashed"), None)
    if crash is not None:
        ev = crash.evidence
        crash = {"stage": crash.stage, "message": crash.message, "last_recorded": ev.get("last_recorded"),
                 "missing": [str(m) for m in ev.get("missing_stages") or []]}
    prov, prov_other = provenance_rows(result.metadata)
    src = result.sources
    return {
        "title": title,
        "verdict": result.verdict,
        "first": fd.headline_json() if fd else None,
        "crash": crash,
        "findings": findings,
        "counts": {s: sum(1 for f in findings if f["severity"] == s) for s in ("error", "failure", "warning", "info")},
        "sources": {k: src.get(k) for k in ("ref", "cand", "local", "fp64") if src.get(k)},
        "context": result.context,
        "policy_sources": result.policy.get("sources") or [],
        "summary": result.summary,
        "case": dict(result.case or {}),
        "seconds": {k: fmt(v) for k, v in seconds.items()},
        "prov": prov,
        "prov_other": prov_other,
        "groups": stage_groups(result.stages, first),
        "floor": floor_section(result),
        "local_rows": [_stage_row(s, None) for s in result.local],
        "normalisations": [n for n in result.normalisations if isinstance(n, dict)],
        "first_in_table": any(s.name == first for s in result.stages),
        "media": media,
        "nonfinite": nonfinite_rows(result.stages),
        "nf_findings": [f for f in findings if f["code"] in NONFINITE_CODES],
        "audio_tables": audio_metric_tables(result.audio),
        "raw": raw_stats(result.stages),
        "notes": notes,
        "mask_check": mask_check_line(result.mask_check),
        "section_ids": SECTION_IDS,
        "schema": result.schema,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
