"""The streaming blind spot (spec 11.2) through the harness: does the candidate's estimator honour the chunk mask?

An exported estimator without an attention-mask input (upstream's ``export_onnx.py``, the TensorRT path) runs
streaming requests with full attention. :mod:`candidate.mask_check` tells that apart from other errors by
running the reference estimator with and without the mask on the step-1 inputs. It runs a model, so it is
capture-side, like the step-local run:

* :func:`check` (capture side): the check on the reference trace's step-1 inputs and the candidate's
  ``step1.v1``, with the reference model at hand (``run_case``, ``parity compare`` when the reference trace's
  provenance names a model that loads with the same weights). Returns the dict handed to compare: the
  :class:`candidate.mask_check.MaskCheck` fields plus ``checked`` True and ``prefix`` (``""``, or
  ``chunk{c}.`` for a chunked session), or ``{"checked": False, "reason": ...}``.
* :func:`findings` (diagnose side): ``streaming_mask_ignored`` (failure at the checked ``step1.v1``; it sorts
  before the stage's own finding there, so it is the headline even when ``step1.v1`` passes its own rule, as
  an fp16 graph on the tiny model does, whose ``step*.v*`` rule is looser than the mask's effect), and
  ``streaming_mask_unchecked`` (information: the check could not decide or was not run).
* :func:`expected_outcome` (the parity suite): an estimator graph without a mask input, run in streaming mode
  on an input longer than one chunk, is EXPECTED to fail, with ``streaming_mask_ignored`` as the headline.
"""

from __future__ import annotations

import re

from ..result import Finding
from ..stages import position

STAGE = "step1.v1"
NEED_REF = ("x0", "step1.t", "mu", "spks", "cond")
_CHUNK_RE = re.compile(r"^(chunk\d+\.)step1\.v1$")


def _prefixes(ref: dict, cand: dict) -> list[str]:
    """Where the step-1 stages are: ``""`` for one call; ``chunk{c}.`` (calls with the chunk mask on) for a
    chunked session, in call order."""
    if all(k in ref for k in NEED_REF) and STAGE in cand:
        return [""]
    out = []
    for name in cand:
        m = _CHUNK_RE.match(name)
        if not m:
            continue
        p = m.group(1)
        flag = ref.get(p + "streaming")
        if flag is not None and not bool(flag.reshape(-1)[0]):
            continue  # a call without the chunk mask (upstream's final call) has nothing to check
        if all(p + k in ref for k in NEED_REF):
            out.append(p)
    return sorted(out, key=lambda p: int(p[5:-1]))


def is_streaming(ref_meta: dict, cand_meta: dict) -> bool:
    """Either trace's provenance says it ran in streaming mode (the chunk mask applies)."""
    def flag(v):
        return v.strip().lower() in ("1", "true", "yes", "on") if isinstance(v, str) else bool(v)

    return flag(ref_meta.get("streaming")) or flag(cand_meta.get("streaming"))


def not_checked(reason: str) -> dict:
    return {"checked": False, "reason": reason}


def check(model, ref: dict, cand: dict, *, streaming: bool) -> dict | None:
    """The mask check of one comparison (``model``: the reference :class:`reference.model.Token2Wav`; ``ref``,
    ``cand``: the two traces' tensors). None in offline mode (no chunk mask to honour)."""
    if not streaming:
        return None
    from candidate.mask_check import mask_check_from_traces

    prefixes = _prefixes(ref, cand)
    if not prefixes:
        return not_checked(f"the traces lack the step-1 stages the check needs (reference {', '.join(NEED_REF)}; "
                           f"candidate {STAGE})")
    first = None
    for p in prefixes:
        r = {k: ref[p + k] for k in NEED_REF}
        try:
            chk = mask_check_from_traces(model.flow.decoder, r, {STAGE: cand[p + STAGE]})
        except (RuntimeError, ValueError) as exc:  # e.g. a foreign dump's step1.v1 of another shape
            return not_checked(f"the check could not run on {p + STAGE} ({type(exc).__name__}: {str(exc)[:160]})")
        d = dict(chk.to_dict(), checked=True, prefix=p, stage=p + STAGE)
        if p:
            d["message"] = d["message"].replace(f"{STAGE}:", f"{p + STAGE}:", 1)
        if chk.decidable:
            return d
        first = first or d
    return first


def model_from_provenance(ref_meta: dict):
    """``(model, None)``: the reference model a trace's provenance names (``model`` = ``preset:NAME`` or
    ``model_dir:PATH``), loaded here and with the trace's weights hash; else ``(None, why not)``."""
    mid = str(ref_meta.get("model") or "")
    kind, _, name = mid.partition(":")
    try:
        from reference.model import Token2Wav

        if kind == "preset" and name:
            model = Token2Wav.from_preset(name)
        elif kind == "model_dir" and name:
            model = Token2Wav.from_model_dir(name)
        else:
            return None, (f"the reference trace does not name a model this harness can load (model "
                          f"{mid or 'not recorded'})")
    except Exception as exc:  # noqa: BLE001 - a model that cannot be loaded here: say so, compare the rest
        return None, f"the reference model {mid} could not be loaded here ({type(exc).__name__}: {str(exc)[:160]})"
    want = ref_meta.get("weights_sha256")
    have = model.provenance(streaming=True)["weights_sha256"]
    if want and str(want) != have:
        return None, f"the reference model {mid} loaded here has other weights ({have}) than the trace ({want})"
    return model, None


def check_saved(ref_meta: dict, ref: dict, cand: dict, *, streaming: bool, model=None) -> dict | None:
    """:func:`check` for two saved traces (``parity compare``, ``parity bisect git``): with ``model``, or the
    reference model loaded from the reference trace's provenance (:func:`model_from_provenance`); when it cannot
    be, the result says why the check was not run."""
    if not streaming:
        return None
    if not _prefixes(ref, cand):
        return check(None, ref, cand, streaming=True)
    if model is None:
        model, why = model_from_provenance(ref_meta)
        if model is None:
            return not_checked(why)
    return check(model, ref, cand, streaming=True)


def findings(mask_check: dict | None) -> list[Finding]:
    """The findings of a mask check (:func:`check`'s dict; None: nothing to say)."""
    if not mask_check:
        return []
    if not mask_check.get("checked"):
        return [Finding("streaming_mask_unchecked", None, "info",
                        f"streaming: whether the candidate honours the chunk mask was not checked: "
                        f"{mask_check.get('reason')}", dict(mask_check))]
    stage = mask_check.get("stage") or STAGE
    ev = {k: mask_check.get(k) for k in ("err_vs_masked", "err_vs_unmasked", "mask_effect", "chunk_size", "frames",
                                         "match_ratio")}
    if mask_check.get("ignores_mask"):
        return [Finding("streaming_mask_ignored", stage, "failure", str(mask_check.get("message")), ev,
                        list(position(stage)))]
    if not mask_check.get("decidable"):
        return [Finding("streaming_mask_unchecked", None, "info", str(mask_check.get("message")), ev)]
    return []


def graph_without_mask_input(cand_meta: dict) -> bool:
    """The candidate's estimator is an ONNX graph that cannot take the chunk mask (no ``attn_mask`` input)."""
    f = (cand_meta.get("onnx") or {}).get("file") if isinstance(cand_meta.get("onnx"), dict) else None
    return isinstance(f, dict) and f.get("mask_input") is False


def expected_outcome(case) -> dict:
    """What the parity suite expects of a :class:`parity.session.Case`: ``{"expect": "pass"}``, or, for an
    estimator graph without a mask input run in streaming mode on more frames than one chunk holds,
    ``{"expect": "fail", "finding": "streaming_mask_ignored", "stage": "step1.v1", "why": ...}``. Decided from
    the candidate's recorded graph inputs, the reference's length and the model's chunk size (the check's
    inputs), not from the verdict being judged; a streaming case whose check did not run still expects the
    finding (the check must run)."""
    if not case.mode.streaming or not graph_without_mask_input(case.cand_meta):
        return {"expect": "pass"}
    mc = case.result.mask_check or {}
    mu = case.ref_tensors.get("mu") if case.mode.session == "single" else None  # a session: the checked call's
    frames = int(mu.shape[-1]) if mu is not None else mc.get("frames")
    chunk = mc.get("chunk_size")
    if frames is not None and chunk is not None and frames <= chunk:
        return {"expect": "pass", "why": f"{frames} frames fit in one {chunk}-frame chunk: the chunk mask attends "
                                         f"everywhere, so the blind spot cannot show"}
    return {"expect": "fail", "finding": "streaming_mask_ignored", "stage": mc.get("stage") or STAGE,
            "why": "an estimator graph without an attention-mask input runs streaming requests with full attention "
                   "(spec 11.2); the harness must name the mask at step1.v1"}
