"""compare -> diagnose: two traces (and optionally step-local and float64 traces) in, one typed result out
(:class:`parity.result.Comparison`), judged as the :class:`parity.judge.spec.ComparisonSpec` says. Every command
compares through :func:`compare_loaded` (saved traces through :func:`parity.harness.compare_paths`). The report and the CLI
only read the result; nothing downstream recomputes a metric. Nothing here modifies its inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..ingest import Loaded
from ..measure import metrics as M
from ..measure.diff_shape import edge_profile, noise_likeness
from ..measure.domain import domain_statistics
from ..measure.melspec import audio_mel
from .diagnose import diagnose
from .metadata import metadata_findings
from .session import pair_calls
from .stream import session_section
from .normalize import align
from .policy import PRECISION_CLASSES, Judgement, Rule, judge, judgement_from_floor
from .spec import ComparisonSpec
from ..result import Comparison, StageResult, StepRow
from ..trace import sample_rate_of
from ..stages import STEP_OUTPUTS, layout, parse_chunk, parse_step, position, session_rule_stage, sort_stages



def _as_float_dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _cand_context(cand: Loaded, opts: ComparisonSpec) -> tuple[str, str]:
    meta = cand.metadata
    precision = opts.precision or meta.get("precision")
    if precision not in PRECISION_CLASSES:
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


def _derive_x0(tr: Loaded, other: Loaded) -> Loaded:
    """A dump that holds the whole 15000-frame ``rand_noise`` instead of x0: a copy of it with x0 = the slice
    the run used (``tr`` itself when there is nothing to derive)."""
    if "x0" in tr.tensors or "rand_noise" not in tr.tensors:
        return tr
    ref_x0 = other.tensors.get("x0")
    T = ref_x0.shape[-1] if ref_x0 is not None else (tr.tensors["mu"].shape[-1] if "mu" in tr.tensors else None)
    if T is None:
        return tr
    return dataclasses.replace(tr, tensors={**tr.tensors, "x0": tr.tensors["rand_noise"][..., :T]},
                               normalisations=tr.normalisations + [{"stage": "x0", "kind": "derive",
                                                                    "detail": f"x0 = rand_noise[..., :{T}]"}])


def _derive_dt(tr: Loaded, other: Loaded) -> Loaded:
    """A trace that records the ODE's ``step{k}.t`` but no ``step{k}.dt`` at all (a port whose solver computes dt
    inside its loop), compared with one that holds dt: a copy with ``step{k}.dt = step{k+1}.t - step{k}.t``
    (float32, as a solver that takes dt from differences of its grid does) for every step whose next t it holds,
    each listed as a normalisation; the last step's dt needs the grid's end, which the trace does not hold, and
    stays absent (the comparison lists it as missing). ``tr`` itself when there is nothing to derive."""
    ks = sorted(parse_step(n)[0] for n in tr.tensors if parse_step(n) and parse_step(n)[1] == "t")
    if not ks or any(parse_step(n) and parse_step(n)[1] == "dt" for n in tr.tensors) \
            or not any(parse_step(n) and parse_step(n)[1] == "dt" for n in other.tensors):
        return tr
    out, notes = dict(tr.tensors), []
    for k in ks:
        t, t_next = tr.tensors[f"step{k}.t"], tr.tensors.get(f"step{k + 1}.t")
        if t_next is None or t_next.numel() != t.numel() or not t.is_floating_point():
            continue
        out[f"step{k}.dt"] = (t_next.float() - t.float()).reshape(-1)[:1]
        notes.append({"stage": f"step{k}.dt", "kind": "derive",
                      "detail": f"step{k}.dt = step{k + 1}.t - step{k}.t (the trace records t, not dt)"})
    return dataclasses.replace(tr, tensors=out, normalisations=tr.normalisations + notes) if notes else tr


def _upcast(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        t = t.float()
    return t.detach().cpu().numpy()


def domain_metrics(name: str, ra: torch.Tensor, ca: torch.Tensor) -> dict:
    """Stage-specific statistics the policy can gate on (:func:`parity.measure.domain.domain_statistics`, the ones the
    floor records too): F0 in cents/GPE/VDE for ``f0``; log-mel L1 and MCD for ``audio``/``audio_preclamp``. A
    session stage gets the statistics of the single-call stage it corresponds to."""
    out = domain_statistics(session_rule_stage(name) or name, ra, ca, mcd=True)
    out.pop("vde_count", None)
    return out


@dataclass(frozen=True)
class StageGate:
    """A stage's measured floor for the gate: the :class:`parity.floor.StageFloor`, the floor's k, kind and
    digest; ``local``: the step-local comparison judged against the accumulated stage's floor (looser: the
    teacher-forced error carries no upstream error)."""

    stage: object
    k: float
    kind: str
    digest: str
    local: bool = False


def _judge_stage(rule: Rule | None, m: dict, arbiter: dict | None, gate: StageGate | None = None,
                 ref: torch.Tensor | None = None, cand: torch.Tensor | None = None,
                 no_floor: str | None = None) -> Judgement | None:
    """The one place a stage's measurements meet a gate.

    With a measured floor for the stage (``gate``), the floor decides: error / floor <= k
    (:func:`parity.floor.judge.judge_stage` on the aligned tensors, gate ``"floor"``), unless the rule says
    otherwise (``with_floor``: ``"both"`` keeps the rule next to the floor, ``"rule"`` lets the rule decide).
    Without one, the policy rule decides (gate ``"flat"``; ``no_floor`` is why there is no floor). None: no
    rule and no floor (the stage is reported, not judged)."""
    from ..floor.judge import judge_stage

    fj = None
    if gate is not None and ref is not None and cand is not None:
        sv = judge_stage(gate.stage, ref, cand, gate.k)
        if sv.status != "shape":
            fj = judgement_from_floor(sv, gate.kind, gate.k, gate.digest, gate.stage)
            if gate.local:
                fj.detail += " (the accumulated stage's floor)"
        else:
            no_floor = f"the floor's shape does not fit ({sv.detail})"
    if fj is None:
        if rule is None:
            return None
        j = judge(rule, m, arbiter)
        j.gate = "flat"
        if no_floor:
            j.floor = {"reason": no_floor}
        return j
    mode = rule.with_floor if rule is not None else "replace"
    if mode == "replace":
        return fj
    flat = judge(rule, m, arbiter)
    if mode == "rule":
        flat.gate, flat.ratio, flat.floor = "flat", fj.ratio, dict(fj.floor or {}, reported_only=True)
        flat.detail = f"{flat.detail} [the rule decides (with_floor = \"rule\"); floor: {fj.detail}]"
        return flat
    # both: the flat rule is kept next to the floor (the measured reason is in the rule); the first to fail decides
    if flat.status == "fail":
        flat.gate, flat.ratio, flat.floor = "flat", fj.ratio, fj.floor
        flat.detail = f"{flat.detail} [flat limit kept next to the floor: {rule.reason}; floor: {fj.detail}]"
        return flat
    fj.detail = f"{fj.detail}; flat limit kept too ({rule.describe()}: {flat.status})"
    return fj


def _stage_compare(name: str, r: torch.Tensor, c: torch.Tensor, rule: Rule | None, opts: ComparisonSpec,
                   prompt_frames, arbiter_ref: torch.Tensor | None = None, gate: StageGate | None = None,
                   no_floor: str | None = None) -> StageResult:
    al = align(name, r, c, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
    entry = StageResult(name=name, status="fail", rule=rule.to_dict() if rule else None, ref_stats=M.side_stats(r),
                        cand_stats=M.side_stats(c), normalisations=list(al.notes), position=list(position(name)))
    if al.problem:
        entry.statistic, entry.problem, entry.detail = "shape", al.problem, al.problem["message"]
        return entry
    ra, ca = al.ref, al.cand
    for side, t in (("reference", r), ("candidate", c)):
        if t.is_floating_point() and t.dtype != torch.float32:
            entry.normalisations.append({"stage": name, "kind": "upcast",
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
        if tx is not None and lay.kind in ("mel", "spectrum", "frames"):
            edge = edge_profile(_upcast(ra), _upcast(ca), tx)
            if edge is not None:
                m["edge"] = edge
    entry.metrics = m
    entry.first_values = {"ref": M.first_k_values(_upcast(ra)), "cand": M.first_k_values(_upcast(ca))}
    if opts.keep_vectors and tx is not None and lay.kind != "wave" and ra.dim() >= 2 and ra.shape[tx] > 1 \
            and ra.numel() < 5_000_000:  # waveforms: per-frame vectors live in the audio section
        entry.per_frame_error = M.to_jsonable(M.per_frame_error(_upcast(ra), _upcast(ca), time_axis=tx))
    arb = None
    if arbiter_ref is not None and rule is not None and rule.arbiter and m.get("finite_ok"):
        a64 = align(name, arbiter_ref.double(), c, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
        r64 = align(name, arbiter_ref.double(), r, prompt_frames=prompt_frames, allow_trim=opts.allow_trim)
        if a64.problem is None and r64.problem is None:
            mc = M.pair_metrics(a64.ref.numpy(), _upcast(a64.cand))
            mr = M.pair_metrics(r64.ref.numpy(), _upcast(r64.cand))
            if mc.get("rmse") is not None and mr.get("rmse") is not None:
                arb = {"statistic": "rmse", "cand_err": mc["rmse"], "ref_err": mr["rmse"]}
    j = _judge_stage(rule, m, arb, gate, ra, ca, no_floor)
    if j is None:
        if m.get("finite_ok"):
            entry.status, entry.detail = "info", "no policy rule and no floor for this stage"
        else:
            entry.status, entry.detail = "fail", "non-finite values (no rule needed: NaN never passes)"
        return entry
    entry.status, entry.statistic, entry.value, entry.limit, entry.detail = j.status, j.statistic, j.value, j.limit, \
        j.detail
    entry.gate, entry.arbiter, entry.floor, entry.ratio = j.gate, j.arbiter, j.floor, j.ratio
    entry.judged = rule is not None
    entry.min_atol_to_pass = m.get("min_atol_to_pass")
    entry.min_rtol_to_pass = m.get("min_rtol_to_pass")
    return entry


def _floor_for(floor, precision: str):
    """(FloorChoice, the Floor that gates this candidate or None, why none)."""
    from ..floor.store import FloorChoice
    from ..floor.types import Floor

    if floor is None:
        choice = FloorChoice(None, "none", "no floor was given to the comparison")
    elif isinstance(floor, Floor):
        choice = FloorChoice(floor, "given")
    else:
        choice = floor
    f = choice.floor
    if f is None:
        return choice, None, choice.reason or "no floor"
    want = precision
    if f.kind != want:
        return choice, None, (f"the floor is the {f.kind} {'noise floor' if f.kind == 'fp32' else 'envelope'}, the "
                              f"candidate is {precision}: it needs the {want} "
                              f"{'noise floor' if want == 'fp32' else 'envelope'}")
    return choice, f, ""


def _rejudge_on_grid(entry: StageResult, alt: StageResult, units: dict) -> None:
    """``entry`` failed against the reference and ``alt`` (the same candidate tensor against the reference re-run
    at the candidate's time grid, :mod:`parity.capture.time_grid`) passes: the stage passes, judged by ``alt``; what it
    was against the reference stays in ``extra["against_reference"]`` and in the detail."""
    was = {"status": entry.status, "statistic": entry.statistic, "value": entry.value, "limit": entry.limit,
           "ratio": entry.ratio, "detail": entry.detail}
    grid = ", ".join(f"{k} {v:.3g}" for k, v in (("t", units.get("t_units")), ("dt", units.get("dt_units")))
                     if isinstance(v, float) and v > 0)
    entry.status, entry.statistic, entry.value, entry.limit = alt.status, alt.statistic, alt.value, alt.limit
    entry.ratio, entry.floor, entry.gate = alt.ratio, alt.floor, alt.gate
    entry.detail = (f"{alt.detail} against the reference re-run at the candidate's time grid ({grid} grid units "
                    f"off: the grid's rounding); against the reference: {was['detail']}")
    entry.extra["against_reference"] = was
    entry.extra["time_grid"] = dict(units)


def compare_loaded(ref: Loaded, cand: Loaded, spec: ComparisonSpec | None = None, local: Loaded | None = None,
                   fp64: Loaded | None = None, mask_check: dict | None = None, *, offline: Loaded | None = None,
                   floor=None, time_grid=None) -> Comparison:
    """Compare two loaded traces as ``spec`` says (default: the default policy, no floor), plus optionally the
    candidate's step-local trace, a float64 reference for the arbiter rules, and what the capture side measured
    by running a model: the streaming chunk-mask check (:mod:`parity.capture.mask_check`) and the reference re-run
    at the candidate's time grid (``time_grid``, :class:`parity.capture.time_grid.TimeGridCheck`: a step stage
    failing against the reference is judged against it too). Streaming-session traces get the session comparison
    (:mod:`parity.judge.session`: calls paired by token offset, schedule, options, glitches; ``offline``: the
    offline reference run of the same tokens, for the stream-vs-offline section). ``floor``: the measured floor
    to judge against (a :class:`parity.floor.Floor` or the :class:`parity.floor.store.FloorChoice` of a floor
    store; default: the spec's, from the reference trace's own provenance); stages without one fall back to the
    policy's flat rules, and the result says which gate decided each stage. The spec's requirements are added
    last. The inputs are not modified."""
    opts = spec = spec or ComparisonSpec()
    policy = spec.policy
    ref, cand = _derive_x0(ref, cand), _derive_x0(cand, ref)
    ref, cand = _derive_dt(ref, cand), _derive_dt(cand, ref)
    from .pcm import find_integer_audio, refusal_problem, scale_integer_audio

    pcm = find_integer_audio(ref, cand)  # int16/int32 audio: scaled (a normalisation + a warning) or refused
    pcm_findings: list = []
    refused = {}
    if pcm and opts.pcm_scale:
        ref, cand, pcm_findings = scale_integer_audio(ref, cand, pcm)
    elif pcm:
        refused = {ia.stage: ia for ia in pcm}
    calls = pair_calls(ref, cand)  # one call each, or a streaming session's calls paired by token offset
    cand = calls.cand
    precision, attention = _cand_context(cand, opts)
    if floor is None:
        floor = spec.floor_for_trace(ref, cand, precision)
    choice, gfloor, why_none = _floor_for(floor, precision)
    prompt_frames = _prompt_frames(ref)
    names = sort_stages(list(dict.fromkeys(list(ref.tensors) + list(cand.tensors))))

    def gate_of(name: str, local_: bool = False) -> tuple[StageGate | None, str | None]:
        if gfloor is None:
            return None, why_none
        if name not in gfloor.stages:
            return None, f"no floor for this stage (the floor covers {len(gfloor.stages)} stages)"
        return StageGate(gfloor.stages[name], gfloor.k, gfloor.kind, gfloor.digest, local_), None

    stages: list[StageResult] = []
    for name in names:
        rule = policy.rule_for(name, precision, attention)
        in_r, in_c = name in ref.tensors, name in cand.tensors
        if name in refused and in_r and in_c:
            prob = refusal_problem(refused[name])
            entry = StageResult(name=name, status="fail", statistic="dtype", detail=prob["message"], problem=prob,
                                rule=rule.to_dict() if rule else None, position=list(position(name)),
                                ref_stats=M.side_stats(ref.tensors[name]), cand_stats=M.side_stats(cand.tensors[name]))
        elif in_r and in_c:
            g, why = gate_of(name)
            entry = _stage_compare(name, ref.tensors[name], cand.tensors[name], rule, opts, prompt_frames,
                                   fp64.tensors.get(name) if fp64 is not None else None, g, why)
            if time_grid is not None and entry.status == "fail" and name in time_grid.tensors:
                alt = _stage_compare(name, time_grid.tensors[name], cand.tensors[name], rule, opts, prompt_frames,
                                     None, g, why)
                if alt.status == "pass":
                    _rejudge_on_grid(entry, alt, time_grid.steps.get(parse_step(name)[0], {}))
        elif in_r:
            req = bool(rule and rule.required)
            entry = StageResult(name=name, status="fail" if req else "missing", ref_stats=M.side_stats(ref.tensors[name]),
                                rule=rule.to_dict() if rule else None, position=list(position(name)),
                                detail="required by the policy but absent from the candidate" if req
                                else "absent from the candidate")
        else:
            entry = StageResult(name=name, status="extra", cand_stats=M.side_stats(cand.tensors[name]),
                                position=list(position(name)), detail="absent from the reference")
        stages.append(calls.annotate(entry, rule))
    by_name = {s.name: s for s in stages}
    _source_difference(ref, cand, by_name.get("source"))

    # step-local errors: the candidate's step driven from the reference's own state
    local_stages: dict[str, StageResult] = {}
    if local is not None:
        for name, t in local.tensors.items():
            if name in ref.tensors:
                rule = (policy.rule_for("local:" + name, precision, attention)
                        or policy.rule_for(name, precision, attention))
                g, why = gate_of(name, True)
                local_stages[name] = _stage_compare(name, ref.tensors[name], t, rule, opts, prompt_frames, None, g, why)
    steps = step_table(ref, cand, by_name, local_stages)
    audio = None
    a = calls.audio_stage
    if opts.audio_metrics and a in ref.tensors and a in cand.tensors:
        audio = {"comparable": False, "reason": refused[a].what()} if a in refused else \
            audio_section(calls.audio_view(ref), calls.audio_view(cand))
        if a != "audio":
            audio["stage"] = a  # the audio findings name the stage compared (a session's stream)
    meta_find = metadata_findings(ref.metadata, cand.metadata) + pcm_findings + calls.findings
    findings = diagnose(stages, by_name, steps, local_stages, ref, cand, meta_find, precision, audio,
                        mask_check=mask_check, sample_rate=sample_rate_of(ref.metadata))
    session, more = session_section(calls, ref, cand, offline, by_name, floor=gfloor)  # chunks, glitches, drift
    findings = sorted(findings + more, key=lambda f: f.sort_key())  # stable: the diagnosis first at a tie
    result = Comparison(
        stages=stages, findings=findings, local=list(local_stages.values()), steps=steps, audio=audio,
        normalisations=ref.normalisations + cand.normalisations + [n for s in stages for n in s.normalisations],
        metadata={"ref": ref.metadata, "cand": cand.metadata},
        sources={"ref": ref.path, "cand": cand.path, "local": local.path if local else None,
                 "fp64": fp64.path if fp64 else None, "ref_dialect": ref.dialect, "cand_dialect": cand.dialect,
                 "ref_names": ref.original_names, "cand_names": cand.original_names},
        context={"precision": precision, "attention": attention, "prompt_frames": prompt_frames,
                 "allow_trim": opts.allow_trim, "sample_rate": sample_rate_of(ref.metadata)},
        policy={"sources": policy.sources}, mask_check=mask_check, session=session,
        extra={"time_grid": time_grid.to_json()} if time_grid is not None else {},
        floor=dict(choice.to_json(), applies=gfloor is not None, **({} if gfloor is not None else
                                                                   {"not_applied": why_none})))
    return spec.requirements.apply(result)


def _source_difference(ref: Loaded, cand: Loaded, entry: StageResult | None) -> None:
    """The harmonic source's difference statistics (:func:`parity.measure.diff_shape.noise_likeness`, into the stage's
    metrics as ``difference``): per F0 frame of ``len(source) / len(f0)`` samples (480 when f0 is absent)."""
    if entry is None or not entry.compared or not (entry.metrics or {}).get("finite_ok"):
        return
    r, c = ref.tensors["source"], cand.tensors["source"]
    f0 = ref.tensors.get("f0")
    frame = r.numel() // f0.numel() if f0 is not None and f0.numel() and r.numel() % f0.numel() == 0 else 480
    nl = noise_likeness(_upcast(r), _upcast(c), frame)
    if nl is not None:
        entry.metrics["difference"] = M.to_jsonable(nl)


def _err(entry: StageResult | None, key: str = "max_abs_err"):
    if entry is None or not entry.metrics:
        return None
    v = M.metric_value(entry.metrics, key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def step_table(ref: Loaded, cand: Loaded, by_name: dict[str, StageResult],
               local_stages: dict[str, StageResult]) -> list[StepRow]:
    """Per ODE step: accumulated and local errors of v1, v2, v_cfg and x, growth factor, CFG gaps. A streaming
    session has the steps of each chunk whose flow stages were recorded (``chunk{c}.step{k}.*``): their rows,
    chunk by chunk, carry the chunk."""
    names = list(ref.tensors) + list(cand.tensors)
    groups: list[tuple[str, int | None]] = [("", None)] if any(parse_step(n) for n in names) else []
    chunks = sorted({ch[0] for n in names if (ch := parse_chunk(n)) is not None and parse_step(ch[1])})
    groups += [(f"chunk{c}.", c) for c in chunks]
    rows: list[StepRow] = []
    for prefix, chunk in groups:
        rows += _step_rows(ref, cand, by_name, local_stages, prefix, chunk)
    return rows


def _step_rows(ref: Loaded, cand: Loaded, by_name: dict[str, StageResult], local_stages: dict[str, StageResult],
               prefix: str, chunk: int | None) -> list[StepRow]:
    ks = sorted({st[0] for n in list(ref.tensors) + list(cand.tensors)
                 if n.startswith(prefix) and (st := parse_step(n[len(prefix):]))})
    rows = []
    prev_acc = _err(by_name.get(prefix + "x0"), "rmse")
    for k in ks:
        row = StepRow(step=k, chunk=chunk)
        for f in STEP_OUTPUTS:
            n = row.stage(f)
            row.acc[f] = _err(by_name.get(n), "max_abs_err")
            row.acc_rmse[f] = _err(by_name.get(n), "rmse")
            row.local[f] = _err(local_stages.get(n), "max_abs_err")
            row.local_rmse[f] = _err(local_stages.get(n), "rmse")
            row.status[f] = by_name[n].status if n in by_name else None
        acc = row.acc_rmse["x"]
        row.growth = (acc / prev_acc) if (acc is not None and prev_acc not in (None, 0.0)) else None
        prev_acc = acc
        gaps = {}
        for side, tr in (("ref", ref), ("cand", cand)):
            v1, v2 = tr.tensors.get(row.stage("v1")), tr.tensors.get(row.stage("v2"))
            gaps[side] = None
            if v1 is not None and v2 is not None and v1.shape == v2.shape:
                gap = (v1.double() - v2.double()).abs()
                gaps[side] = float(gap.mean()) if torch.isfinite(gap).all() else None
        row.cfg_gap_ref, row.cfg_gap_cand = gaps["ref"], gaps["cand"]
        t = ref.tensors.get(row.stage("t"))
        row.t = float(t.reshape(-1)[0]) if t is not None and t.numel() else None
        rows.append(row)
    return rows


def audio_section(ref: Loaded, cand: Loaded) -> dict | None:
    from ..measure import audio_metrics as A

    ra = ref.tensors["audio"].double().reshape(-1).numpy()
    ca = cand.tensors["audio"].double().reshape(-1).numpy()
    if ra.shape != ca.shape:
        return {"comparable": False, "reason": f"audio lengths differ: {ra.shape[0]} vs {ca.shape[0]} samples"}
    rm = ref.tensors.get("flow_mel")
    cm = cand.tensors.get("flow_mel")
    rf, cf = ref.tensors.get("f0"), cand.tensors.get("f0")
    sr = sample_rate_of(ref.metadata)
    rep = A.audio_report(ra, ca, ref_mel=None if rm is None else rm.double().reshape(rm.shape[-2], rm.shape[-1]).numpy()
                         if rm.dim() == 3 else None,
                         cand_mel=None if cm is None or rm is None or cm.shape != rm.shape else
                         cm.double().reshape(cm.shape[-2], cm.shape[-1]).numpy(),
                         ref_f0=None if rf is None else rf.double().reshape(-1).numpy(),
                         cand_f0=None if cf is None or rf is None or cf.numel() != rf.numel() else
                         cf.double().reshape(-1).numpy(), sr=sr, mel_fn=audio_mel)
    rep = M.to_jsonable(rep)
    rep["comparable"] = True
    return rep
