"""The streaming blind spot (spec 11.2), capture side: does the candidate's estimator honour the chunk mask?

An exported estimator without an attention-mask input (upstream's ``export_onnx.py``, the TensorRT path) runs
streaming requests with full attention. :mod:`candidate.mask_check` tells that apart from other errors by
running the reference estimator with and without the mask on the step-1 inputs. It runs a model, so it is
capture-side, like the step-local run: :func:`check` with the reference model at hand (``run_case``),
:func:`check_saved` with the model a saved reference trace's provenance names (``parity compare``). Its dict (the
:class:`candidate.mask_check.MaskCheck` fields plus ``checked`` and ``prefix``/``stage``, or ``{"checked": False,
"reason": ...}``) is handed to the comparison; :mod:`parity.judge.mask` turns it into findings.
"""

from __future__ import annotations

import re

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


def check_saved(ref_meta: dict, ref: dict, cand: dict, *, streaming: bool, model=None) -> dict | None:
    """:func:`check` for two saved traces (``parity compare``, ``parity bisect git``): with ``model``, or the
    reference model loaded from the reference trace's provenance (:func:`.trace_model.model_from_provenance`); when it cannot
    be, the result says why the check was not run."""
    if not streaming:
        return None
    if not _prefixes(ref, cand):
        return check(None, ref, cand, streaming=True)
    if model is None:
        from .trace_model import model_from_provenance

        model, why = model_from_provenance(ref_meta)
        if model is None:
            return not_checked(why)
    return check(model, ref, cand, streaming=True)
