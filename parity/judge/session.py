"""How the calls of two traces pair up, before their stages are judged: one token2wav call against one call
(:class:`OneCall`: nothing to pair), or the N calls of a streaming session (:mod:`reference.session`) against
another's (:class:`SessionPrep`):

* **calls** are matched by index *and* token offset: the candidate call that starts at the same target token as
  the reference's call ``i`` is compared as ``chunk{i}``; a call with no counterpart (the schedules differ) is
  not compared with an unrelated one (the reference's stays ``missing``, the candidate's becomes
  ``unmatched.chunk{j}.*``), every re-pairing listed as a normalisation;
* **schedule**: the two plans (``session_schedule``/``session_plan`` metadata, or, for a dump without it, the
  calls its tensors show) are compared first; when they differ a ``session_schedule_mismatch`` failure naming the
  first differing call and field, with both schedules, leads the findings;
* **session options** (``session_options`` metadata) are judged by meaning: a difference is a failure when the
  calls differ, a warning when these tokens give the same calls; which chunks record the ODE steps is
  information; loop deviations a candidate reports (its streaming faults) are information;
* **call stages** are judged by the same policy (the rule of the stage they correspond to,
  :func:`parity.stages.session_rule_stage`, unless a rule names them); :mod:`.diagnose` classifies them, and
  :mod:`.stream` builds the session's section (glitches, stream vs offline, the chunk table).

The pairing object is what :func:`parity.judge.compare.compare_loaded` asks, whatever the number of calls: the
candidate with its calls re-paired (``cand``), the findings about the pairing, a stage's annotation, the stages
the audio section compares, and the session's section. Nothing modifies its inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


from ..ingest import Loaded
from ..result import Finding, StageResult
from ..stages import is_session_stage, parse_chunk, session_rule_stage

UNMATCHED = "unmatched."
# options that change what the loop computes (the rest: which stages are recorded)
JUDGED_OPTIONS = ("initial_hop", "max_hop", "growth", "lookahead", "token_mel_ratio", "final_mask", "hop_state")



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


def plan_rows(s: dict | None) -> list[dict]:
    return [r for r in (s or {}).get("chunks") or [] if isinstance(r, dict)]


def schedule_text(s: dict | None) -> str:
    """``38, 50, 100 tokens, then a final call of 32 without the chunk mask (prompt pad 13, hop 25 at start)``."""
    rows = plan_rows(s)
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
    rr, cr = plan_rows(ref), plan_rows(cand)
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


_finding = Finding.at


# ---------------------------------------------------------------------------------------------
# pairing the calls


@dataclass
class OneCall:
    """Two single-call traces: one call each, nothing to pair (N = 1 with the single-call stage names)."""

    cand: Loaded
    findings: list = field(default_factory=list)
    is_session = False

    def annotate(self, entry: StageResult, rule) -> StageResult:
        return entry

    audio_stage = "audio"  # the stage the audio section compares (its findings name it)

    def audio_view(self, tr: Loaded) -> Loaded:
        """The trace as the audio section reads it (``audio``, ``flow_mel``, ``f0``)."""
        return tr


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
    is_session = True

    def annotate(self, entry: StageResult, rule) -> StageResult:
        return annotate_stage(entry, rule, self)

    audio_stage = "stream.audio"

    def audio_view(self, tr: Loaded) -> Loaded:
        """The stream as the audio section reads one call: ``stream.audio`` as ``audio``, ``stream.mel`` as
        ``flow_mel``, the last vocoder call's F0 (over the whole stream) as ``f0``."""
        t = tr.tensors
        return dataclasses.replace(tr, tensors={"audio": t["stream.audio"],
                                                **({"flow_mel": t["stream.mel"]} if "stream.mel" in t else {}),
                                                **stream_f0(tr)})


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


def pair_calls(ref: Loaded, cand: Loaded) -> "OneCall | SessionPrep":
    """How the two traces' calls pair up: :class:`OneCall` when both are one call, else the session pairing
    (:func:`prepare`; one side a single call and the other a session is a session comparison too, and its
    ``session_kind_mismatch`` finding says so)."""
    if is_session(ref) or is_session(cand):
        return prepare(ref, cand)
    return OneCall(cand)


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


