"""compare -> diagnose for streaming-session traces (:mod:`reference.session`, :mod:`parity.session_runner`): what a
session comparison adds to the per-stage judgement of :func:`parity.compare.compare_loaded`.

* **chunks** are matched by index *and* token offset: the candidate call that starts at the same target token as
  the reference's call ``i`` is compared as ``chunk{i}``; a call with no counterpart (the schedules differ) is
  not compared with an unrelated one (the reference's stays ``missing``, the candidate's becomes
  ``unmatched.chunk{j}.*``), every re-pairing listed as a normalisation;
* **schedule**: the two plans (``session_schedule``/``session_plan`` metadata, or, for a dump without it, the
  calls its tensors show) are compared first; when they differ a ``session_schedule_mismatch`` failure naming the
  first differing call and field, with both schedules, leads the findings;
* **session options** (``session_options`` metadata) are judged by meaning: a difference is a failure when the
  calls differ, a warning when these tokens give the same calls; which chunks record the ODE steps is
  information; loop deviations a candidate reports (its streaming faults) are information;
* **chunk stages** are judged by the same policy (the rule of the stage they correspond to,
  :func:`parity.stages.session_rule_stage`, unless a rule names them) and classified here: the call's
  control values, the flow output, the slice appended to the cumulative mel, the emitted samples, the flow's own
  stages (classified as in a single call, with the chunk named);
* **glitches** (:func:`parity.streaming_metrics.detect_glitches`): at the candidate's chunk boundaries,
  differential against the reference stream; sample counts against the schedule the candidate's calls follow
  (their token offsets, with the reference's frame and sample constants). Wrong counts and non-finite samples are
  failures, boundary scores (flux, discontinuity, DC step) warnings: their limits were measured on the tiny
  preset only (``THRESHOLD_EVIDENCE``);
* **stream vs offline** (:func:`parity.streaming_metrics.stream_offline_drift`): per chunk, the reference stream
  and the candidate stream against the offline reference run of the same tokens (what the chunk mask costs,
  and whether the candidate costs more).

Everything here is measurement and judgement over the two loaded traces; the report only renders the
``Comparison.session`` section built here. Nothing modifies its inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from .ingest import Loaded
from .result import Finding, StageResult
from .stages import CHUNK_CONTROL, is_session_stage, layout, parse_chunk, position, session_rule_stage

SAMPLE_RATE = 24000
UNMATCHED = "unmatched."
# options that change what the loop computes (the rest: which stages are recorded)
JUDGED_OPTIONS = ("initial_hop", "max_hop", "growth", "lookahead", "token_mel_ratio", "final_mask", "hop_state")

EXPLAIN = {
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


# ---------------------------------------------------------------------------------------------
# what each side's calls were


@dataclass
class ChunkInfo:
    """One call of a session as a trace shows it (tensors first, then the run's metadata)."""

    index: int
    token_offset: int | None = None
    n_tokens: int | None = None  # target tokens passed (lookahead included)
    finalize: bool | None = None
    streaming: bool | None = None
    samples: int | None = None  # samples emitted
    frames: int | None = None  # mel frames appended

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _scalar(t) -> int | None:
    if t is None or not hasattr(t, "numel") or t.numel() < 1:
        return None
    try:
        return int(t.reshape(-1)[0].item())
    except (TypeError, ValueError, RuntimeError):
        return None


def is_session(tr: Loaded) -> bool:
    return tr.metadata.get("session") == "streaming" or any(is_session_stage(n) for n in tr.tensors)


def chunks_of(tr: Loaded) -> list[ChunkInfo]:
    """The calls of one side, by index (from its chunk tensors; the run's ``session_chunks``, else the plan written
    before the run -- all a crashed run has for its later calls -- fill gaps)."""
    recs: dict = {}
    plan = tr.metadata.get("session_plan") if isinstance(tr.metadata.get("session_plan"), dict) else {}
    for r in (plan.get("chunks") or []) + list(tr.metadata.get("session_chunks") or []):  # what ran wins
        if isinstance(r, dict) and isinstance(r.get("index"), int):
            recs[r["index"]] = {**recs.get(r["index"], {}), **r}
    idx = sorted({c for c in (parse_chunk(n) for n in tr.tensors) if c is not None for c in [c[0]]} | set(recs))
    out = []
    T = tr.tensors
    for c in idx:
        r = recs.get(c, {})
        tok = T.get(f"chunk{c}.tokens")
        audio, mel = T.get(f"chunk{c}.audio"), T.get(f"chunk{c}.mel")
        fin, st = _scalar(T.get(f"chunk{c}.finalize")), _scalar(T.get(f"chunk{c}.streaming"))
        off = _scalar(T.get(f"chunk{c}.token_offset"))
        out.append(ChunkInfo(
            c, off if off is not None else r.get("token_offset"),
            int(tok.shape[-1]) if tok is not None and tok.dim() else r.get("n_tokens"),
            bool(fin) if fin is not None else r.get("finalize"), bool(st) if st is not None else r.get("streaming"),
            int(audio.shape[-1]) if audio is not None and audio.dim() else r.get("samples"),
            int(mel.shape[-1]) if mel is not None and mel.dim() >= 2 else r.get("mel_frames")))
    return out


def schedule_of(tr: Loaded, chunks: list[ChunkInfo]) -> tuple[dict | None, str]:
    """(the plan, where it came from): the run's ``session_schedule`` (or ``session_plan``, written before the
    first call), else the calls the chunk tensors show."""
    for key in ("session_schedule", "session_plan"):
        s = tr.metadata.get(key)
        if isinstance(s, dict) and isinstance(s.get("chunks"), list):
            return s, "metadata"
    if not chunks:
        return None, "none"
    total = next((c.n_tokens for c in reversed(chunks) if c.finalize and c.n_tokens is not None), None)
    rows = []
    for i, c in enumerate(chunks):
        nxt = chunks[i + 1].token_offset if i + 1 < len(chunks) else total
        hop = (nxt - c.token_offset) if (nxt is not None and c.token_offset is not None) else None
        rows.append({"index": c.index, "token_offset": c.token_offset, "hop": hop, "n_tokens": c.n_tokens,
                     "finalize": c.finalize, "streaming": c.streaming})
    return {"chunks": rows, "n_tokens": total}, "tensors"


def _plan_rows(s: dict | None) -> list[dict]:
    return [r for r in (s or {}).get("chunks") or [] if isinstance(r, dict)]


def schedule_text(s: dict | None) -> str:
    """``38, 50, 100 tokens, then a final call of 32 without the chunk mask (prompt pad 13, hop 25 at start)``."""
    rows = _plan_rows(s)
    if not rows:
        return "no calls"
    body = [r for r in rows if not r.get("finalize")]
    fin = [r for r in rows if r.get("finalize")]
    parts = []
    if body:
        parts.append(", ".join(str(r.get("hop")) for r in body) + " tokens")
    for r in fin:
        mask = "with" if r.get("streaming") else "without"
        parts.append(f"{'then ' if body else ''}a final call of {r.get('hop')} {mask} the chunk mask")
    extra = [f"{k.replace('_', ' ')} {s[k]}" for k in ("prompt_pad", "hop_at_start") if s.get(k) is not None]
    return ", ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def first_schedule_difference(ref: dict | None, cand: dict | None) -> tuple[int, str, str] | None:
    """(chunk, field, what) of the first call where two plans differ; None when they agree."""
    rr, cr = _plan_rows(ref), _plan_rows(cand)
    for i in range(max(len(rr), len(cr))):
        if i >= len(rr):
            return i, "tokens", f"the candidate makes a call {i} (tokens {cr[i].get('token_offset')}.."
            f"{_end(cr[i])}); the reference makes {len(rr)} calls"
        if i >= len(cr):
            return i, "tokens", f"the reference makes a call {i} (tokens {rr[i].get('token_offset')}..{_end(rr[i])}); " \
                f"the candidate makes {len(cr)} calls"
        a, b = rr[i], cr[i]

        def differ(*keys):  # a field one side does not know (a dump without it) is not a difference
            return any(a.get(k) is not None and b.get(k) is not None and a.get(k) != b.get(k) for k in keys)

        if differ("hop", "n_tokens"):
            return i, "tokens", (f"call {i} emits {b.get('hop')} tokens passing {b.get('n_tokens')} in the candidate, "
                                 f"{a.get('hop')} passing {a.get('n_tokens')} in the reference")
        if differ("token_offset"):
            return i, "token_offset", (f"call {i} starts at token {b.get('token_offset')} in the candidate, "
                                       f"{a.get('token_offset')} in the reference")
        if differ("finalize"):
            return i, "finalize", f"call {i}: finalize {b.get('finalize')} in the candidate, {a.get('finalize')} " \
                "in the reference"
        if differ("streaming"):
            return i, "streaming", (f"call {i} runs the flow {'with' if b.get('streaming') else 'without'} the chunk "
                                    f"mask in the candidate, {'with' if a.get('streaming') else 'without'} it in the "
                                    f"reference")
    return None


def _end(r: dict):
    o, h = r.get("token_offset"), r.get("hop")
    return o + h if isinstance(o, int) and isinstance(h, int) else "?"


def _finding(code, stage, severity, message, evidence=None, first: bool = False) -> Finding:
    """``first``: sorts before every stage finding of its severity (the schedule, the options)."""
    pos = [-1] if first or not stage else list(position(stage))  # as parity.diagnose builds them (sortable together)
    return Finding(code, stage, severity, message, evidence or {}, pos)


# ---------------------------------------------------------------------------------------------
# pairing the calls


@dataclass
class SessionPrep:
    """A session comparison before the stages are judged: the candidate with its chunks re-paired, the calls
    of both sides, the plans, and the findings about them."""

    cand: Loaded
    ref_chunks: list
    cand_chunks: list
    pairs: dict  # candidate chunk index -> reference chunk index
    unmatched_ref: list
    unmatched_cand: list
    matched_by: str
    ref_schedule: dict | None
    cand_schedule: dict | None
    schedule_source: dict
    schedule_diff: tuple | None
    findings: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def pair_chunks(ref_chunks: list[ChunkInfo], cand_chunks: list[ChunkInfo]) -> tuple[dict, list, list, str]:
    """Candidate chunk -> reference chunk, by token offset when both sides know every offset (index otherwise)."""
    ri = [c.index for c in ref_chunks]
    ci = [c.index for c in cand_chunks]
    if ref_chunks and cand_chunks and all(c.token_offset is not None for c in ref_chunks + cand_chunks):
        free: dict[int, list[int]] = {}
        for c in ref_chunks:
            free.setdefault(c.token_offset, []).append(c.index)
        pairs = {}
        for c in cand_chunks:
            lst = free.get(c.token_offset)
            if lst:
                pairs[c.index] = lst.pop(0)
        how = "token offset"
    else:
        pairs = {c: c for c in ci if c in set(ri)}
        how = "index (token offsets not known on both sides)"
    used = set(pairs.values())
    return pairs, [i for i in ri if i not in used], [j for j in ci if j not in pairs], how


def _rename_cand(cand: Loaded, pairs: dict, unmatched: list, cand_chunks: list[ChunkInfo]) -> tuple[Loaded, list]:
    if all(i == j for j, i in pairs.items()) and not unmatched:
        return cand, []
    offs = {c.index: c.token_offset for c in cand_chunks}
    tensors, orig, notes = {}, {}, []
    for name, t in cand.tensors.items():
        ch = parse_chunk(name)
        new = name
        if ch is not None:
            j, fld = ch
            new = f"chunk{pairs[j]}.{fld}" if j in pairs else f"{UNMATCHED}chunk{j}.{fld}"
        tensors[new] = t
        orig[new] = cand.original_names.get(name, name)
    for j, i in sorted(pairs.items()):
        if i != j:
            notes.append({"stage": f"chunk{i}", "kind": "chunk-match",
                          "detail": f"candidate chunk {j} compared as chunk {i}: both start at target token {offs.get(j)}"})
    for j in unmatched:
        notes.append({"stage": f"{UNMATCHED}chunk{j}", "kind": "chunk-unmatched",
                      "detail": f"candidate chunk {j} (starting at target token {offs.get(j)}) has no reference call "
                                f"starting there: not compared (see the schedule finding)"})
    return dataclasses.replace(cand, tensors=tensors, original_names=orig,
                               normalisations=cand.normalisations + notes), notes


def prepare(ref: Loaded, cand: Loaded) -> SessionPrep:
    """Pair the calls, compare the plans and the options: before the stages are judged."""
    rc, cc = chunks_of(ref), chunks_of(cand)
    pairs, un_r, un_c, how = pair_chunks(rc, cc)
    cand2, notes = _rename_cand(cand, pairs, un_c, cc)
    rs, rsrc = schedule_of(ref, rc)
    cs, csrc = schedule_of(cand, cc)
    diff = first_schedule_difference(rs, cs) if (rs is not None and cs is not None) else None
    prep = SessionPrep(cand2, rc, cc, pairs, un_r, un_c, how, rs, cs, {"ref": rsrc, "cand": csrc}, diff, [], notes)
    rm, cm = ref.metadata, cand.metadata
    dev = cm.get("session_deviations") if isinstance(cm.get("session_deviations"), dict) else {}
    if diff is not None:
        c, fld, what = diff
        stage = f"chunk{c}.{fld}"
        dev_txt = ("; the candidate reports these deviations from upstream's loop: "
                   + ", ".join(f"{k}={v}" for k, v in dev.items())) if dev else ""
        prep.findings.append(_finding(
            "session_schedule_mismatch", stage, "failure",
            f"the streaming schedule differs, first at chunk {c} ({what}): reference {schedule_text(rs)}; candidate "
            f"{schedule_text(cs)}{dev_txt}",
            {"key": "session_schedule", "ref": rs, "cand": cs, "first_chunk": c, "field": fld,
             "source": {"ref": rsrc, "cand": csrc}, "deviations": dev}, first=True))
    prep.findings.extend(option_findings(rm, cm, schedules_differ=diff is not None))
    if dev and diff is None:
        prep.findings.append(_finding("session_deviations", None, "info",
                                      "the candidate reports deviations from upstream's loop (its streaming faults): "
                                      + ", ".join(f"{k}={v}" for k, v in dev.items()), {"deviations": dev}))
    if un_r or un_c:
        prep.findings.append(_finding(
            "chunks_unmatched", None, "info",
            f"calls matched by {how}: reference calls {un_r or 'none'} and candidate calls {un_c or 'none'} have no "
            f"counterpart starting at the same token; they are not compared",
            {"unmatched_ref": un_r, "unmatched_cand": un_c, "pairs": {str(k): v for k, v in pairs.items()}}))
    return prep


def option_findings(rm: dict, cm: dict, *, schedules_differ: bool) -> list[Finding]:
    out = []
    if rm.get("session") and cm and "pipeline" in cm and not cm.get("session"):
        out.append(_finding("session_kind_mismatch", None, "failure",
                            f"the reference is a streaming session ({rm.get('session')}); the candidate trace is a "
                            f"single call (streaming={cm.get('streaming')})", {"key": "session"}))
    ro, co = rm.get("session_options"), cm.get("session_options")
    if not (isinstance(ro, dict) and isinstance(co, dict)):
        return out
    keys = list(JUDGED_OPTIONS) + (["carried_hop"] if ro.get("hop_state") == co.get("hop_state") == "carried" else [])
    diff = {k: (ro.get(k), co.get(k)) for k in keys if ro.get(k) != co.get(k)}
    if diff:
        txt = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
        if schedules_differ:
            out.append(_finding("session_options_mismatch", None, "failure",
                                f"session options differ (reference vs candidate): {txt}",
                                {"key": "session_options", "differ": diff}))
        else:
            out.append(_finding("session_options_mismatch", None, "warning",
                                f"session options differ (reference vs candidate): {txt}; on these tokens they give "
                                f"the same calls", {"key": "session_options", "differ": diff}))
    if ro.get("step_chunks") != co.get("step_chunks"):
        out.append(_finding("session_step_chunks_differ", None, "info",
                            f"ODE steps recorded for chunks {ro.get('step_chunks')} (reference) and "
                            f"{co.get('step_chunks')} (candidate): only the chunks both record are compared step by "
                            f"step"))
    return out


def annotate_stage(entry: StageResult, rule, prep: SessionPrep) -> StageResult:
    """Say which rule judged a session stage (the inner stage's, unless a rule names it) and why a chunk has no
    counterpart."""
    name = entry.name
    if rule is not None and is_session_stage(name) and rule.stage != name and not _glob_names(rule.stage, name):
        entry.extra["rule_from"] = session_rule_stage(name)
        entry.detail = (entry.detail + "; " if entry.detail else "") + f"judged by the rule of {rule.stage} " \
            f"({entry.gate or 'flat'} gate)"
    ch = parse_chunk(name)
    if entry.status == "missing" and ch is not None and ch[0] in prep.unmatched_ref:
        off = next((c.token_offset for c in prep.ref_chunks if c.index == ch[0]), None)
        entry.detail = f"no candidate call starts at target token {off} (the schedules differ)"
    if entry.status == "extra" and name.startswith(UNMATCHED):
        j = parse_chunk(name[len(UNMATCHED):])
        off = next((c.token_offset for c in prep.cand_chunks if j and c.index == j[0]), None)
        entry.detail = f"candidate call {j[0] if j else '?'} starts at target token {off}: no reference call starts there"
    return entry


def _glob_names(pattern: str, name: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


# ---------------------------------------------------------------------------------------------
# diagnosis of a failing session stage


def _fmtv(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _tail(name: str, entry: StageResult) -> str:
    m = entry.metrics or {}
    if m.get("kind") == "int" and isinstance(m.get("first_mismatch"), dict):
        fm = m["first_mismatch"]
        return f" (first mismatch at {fm.get('index')}: {fm.get('ref')} vs {fm.get('cand')})"
    err = f"max |diff| {m.get('max_abs_err'):.3g}" if isinstance(m.get("max_abs_err"), float) else ""
    where = m.get("max_abs_err_at") or {}
    loc = ""
    if layout(name).kind == "wave" and where.get("frame") is not None:
        loc = f" at sample {where.get('frame')} ({where.get('frame') / SAMPLE_RATE:.3f} s of the chunk)"
    elif where.get("channel") is not None and where.get("frame") is not None:
        loc = f" at channel {where.get('channel')}, frame {where.get('frame')}"
    judged = f"{entry.statistic} {_fmtv(entry.value)} vs limit {_fmtv(entry.limit)}" \
        if isinstance(entry.value, float) and isinstance(entry.limit, float) else entry.detail
    inner = "; ".join(x for x in (err + loc, judged) if x)
    return f" ({inner})" if inner else ""


def _ok(by_name: dict, name: str) -> bool | None:
    e = by_name.get(name)
    if e is None or not e.compared:
        return None
    return e.ok


def _values(entry: StageResult) -> tuple:
    fv = entry.first_values or {}
    r, c = fv.get("ref"), fv.get("cand")
    return (r[0] if isinstance(r, list) and r else r), (c[0] if isinstance(c, list) and c else c)


def classify_session_stage(name: str, entry: StageResult, by_name: dict, local_stages: dict) -> tuple[str, str]:
    """(code, message) for the first failing stage when it is a session stage (``chunk{c}.*``, ``stream.*``)."""
    from .diagnose import _classify

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
        return "stream_mismatch", f"{lead}{name} differs" + _tail(name, entry)
    c, fld = ch
    pre = f"chunk {c}: "
    tail = _tail(name, entry) if not entry.problem else f" ({entry.problem['message']})"
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
    control_ok = all(_ok(by_name, f"chunk{c}.{f}") is not False for f in CHUNK_CONTROL)
    if fld == "flow_mel_full":
        lead = "" if control_ok else "(its control values differ too) "
        return "chunk_flow_mismatch", pre + lead + EXPLAIN["chunk_flow_mismatch"] + tail
    if fld == "mel":
        full = _ok(by_name, f"chunk{c}.flow_mel_full")
        if full:
            return "chunk_slice_mismatch", pre + EXPLAIN["chunk_slice_mismatch"] + tail
        if full is None:
            return "chunk_mel_mismatch", pre + EXPLAIN["chunk_mel_mismatch"] + tail
        return "chunk_flow_mismatch", pre + EXPLAIN["chunk_flow_mismatch"] + tail
    if fld == "audio":
        mel = _ok(by_name, f"chunk{c}.mel")
        if mel:
            return "chunk_vocoder_mismatch", pre + EXPLAIN["chunk_vocoder_mismatch"] + tail
        return "chunk_audio_mismatch", pre + EXPLAIN["chunk_audio_mismatch"] + tail
    if fld == "f0":  # the first thing the call's vocoder computes, from the mel it was given
        mel = _ok(by_name, f"chunk{c}.mel")
        if mel:
            return "chunk_vocoder_mismatch", pre + EXPLAIN["chunk_vocoder_f0_mismatch"] + tail
        return "chunk_audio_mismatch", pre + EXPLAIN["chunk_f0_mismatch"] + tail
    if entry.problem:
        return entry.problem["code"], pre + entry.problem["message"]
    # the flow's own stages under the chunk prefix: classified as in a single call
    prefix = f"chunk{c}."
    inner_by = {n[len(prefix):]: e for n, e in by_name.items() if n.startswith(prefix)}
    inner_loc = {n[len(prefix):]: e for n, e in local_stages.items() if n.startswith(prefix)}
    code, msg = _classify(fld, entry, inner_by, inner_loc)
    return code, pre + msg


# ---------------------------------------------------------------------------------------------
# the session section: chunks, glitches, stream vs offline


def stream_f0(tr: Loaded) -> dict:
    """``{"f0": ...}``: the F0 of the stream, the last vocoder call's (it runs over the cumulative mel) when it
    spans ``stream.mel``; empty otherwise (a trace without per-call F0, or a loop that did not feed the
    cumulative mel)."""
    calls = sorted((ch[0], n) for n in tr.tensors if (ch := parse_chunk(n)) is not None and ch[1] == "f0")
    mel = tr.tensors.get("stream.mel")
    if not calls or mel is None:
        return {}
    f0 = tr.tensors[calls[-1][1]]
    return {"f0": f0} if f0.shape[-1] == mel.shape[-1] else {}


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
    v = ref.metadata.get("sample_rate")
    return int(v) if isinstance(v, (int, float)) and v > 0 else SAMPLE_RATE


def glitches(ref: Loaded, cand: Loaded, prep: SessionPrep) -> tuple[dict | None, list[Finding], list[str]]:
    """Chunk-boundary glitches of the candidate stream against the reference stream."""
    from .streaming_metrics import detect_glitches, expected_chunk_samples

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
    findings = []
    for g in rep.findings:
        j = prep.cand_chunks[g.chunk].index if g.chunk < len(prep.cand_chunks) else g.chunk
        stage = f"chunk{prep.pairs[j]}.audio" if j in prep.pairs else f"{UNMATCHED}chunk{j}.audio"
        sev = "failure" if g.kind in ("missing_samples", "duplicated_samples", "nonfinite") else "warning"
        findings.append(_finding(f"glitch_{g.kind}", stage, sev, g.message, g.to_dict()))
    d = rep.to_dict()
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
    from .streaming_metrics import stream_offline_drift

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
    from .audio_metrics import logmel_distance
    from .melspec import audio_mel

    s0, s1 = int(span[0]), int(span[1])
    x = a.detach().double().reshape(-1)[s0:s1]
    y = b.detach().double().reshape(-1)[s0:s1]
    if x.numel() < 1920 or x.numel() != y.numel() or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return None
    v = logmel_distance(audio_mel(y), audio_mel(x)).get("logmel_l1")
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
    rs = {r.get("index"): r for r in _plan_rows(prep.ref_schedule)}
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


def section(ref: Loaded, cand: Loaded, offline: Loaded | None, prep: SessionPrep, by_name: dict
            ) -> tuple[dict, list[Finding]]:
    """The ``Comparison.session`` section and the findings found with it (glitches, the cost of streaming)."""
    gl, gfind, gnotes = glitches(ref, cand, prep)
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
