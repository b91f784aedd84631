"""The streaming chunk-mask check as the judge reads it (the check itself runs the reference estimator:
:mod:`parity.capture.mask_check`): its findings, placed by :mod:`.diagnose` before the checked stage's own
(``streaming_mask_ignored``, the cause before the symptom; ``streaming_mask_unchecked`` when it could not decide
or did not run), and what the parity suite expects of a case whose estimator graph cannot take the mask."""

from __future__ import annotations

from ..result import Finding
from ..stages import position

STAGE = "step1.v1"


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
    """What the parity suite expects of a :class:`parity.harness.Case`: ``{"expect": "pass"}``, or, for an
    estimator graph without a mask input run in streaming mode on more frames than one chunk holds,
    ``{"expect": "fail", "finding": "streaming_mask_ignored", "stage": "step1.v1", "why": ...}``. Decided from
    the candidate's recorded graph inputs, the reference's length and the model's chunk size (the check's
    inputs), not from the verdict being judged; a streaming case whose check did not run still expects the
    finding (the check must run)."""
    if not case.mode.streaming or not graph_without_mask_input(case.cand_meta):
        return {"expect": "pass"}
    mc = case.result.mask_check or {}
    mu = case.ref_tensors.get("mu") if not case.mode.is_session else None  # a session: the checked call's
    frames = int(mu.shape[-1]) if mu is not None else mc.get("frames")
    chunk = mc.get("chunk_size")
    if frames is not None and chunk is not None and frames <= chunk:
        return {"expect": "pass", "why": f"{frames} frames fit in one {chunk}-frame chunk: the chunk mask attends "
                                         f"everywhere, so the blind spot cannot show"}
    return {"expect": "fail", "finding": "streaming_mask_ignored", "stage": mc.get("stage") or STAGE,
            "why": "an estimator graph without an attention-mask input runs streaming requests with full attention "
                   "(spec 11.2); the harness must name the mask at step1.v1"}
