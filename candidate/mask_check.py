"""The streaming blind spot, checked: does a candidate's estimator honour the 50-frame chunk mask?

Upstream's exported estimator has no streaming input (the export traces ``streaming=False``) and the TensorRT
branch of ``forward_estimator`` drops the argument, so streaming requests run full attention (spec 11.2). The
check runs the reference estimator on the step-1 inputs twice, with and without the chunk mask, and asks which
of the two the candidate's step-1 conditional velocity (``step1.v1``) is close to:

* ``mask_effect`` = rel_l2(reference masked, reference unmasked): what the mask changes. With T <= chunk size
  the mask is all True and the check cannot decide (``decidable`` False).
* ``ignores_mask`` when the candidate is at least ``1 / match_ratio`` times closer to the unmasked output than
  to the masked one (default 10x). A correct fp32 candidate sits at the fp32 noise floor of the masked output
  (rel_l2 ~4e-7 on tiny) and ``mask_effect`` away from the unmasked one (3.3e-2 on tiny); an fp16 graph adds
  ~5e-4 to both; a candidate broken elsewhere is far from both, and the rule does not blame the mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

STAGE = "step1.v1"


@dataclass(frozen=True)
class MaskCheck:
    stage: str
    decidable: bool
    ignores_mask: bool
    err_vs_masked: float  # rel_l2(candidate step1.v1, reference estimator with the chunk mask)
    err_vs_unmasked: float  # rel_l2(candidate step1.v1, reference estimator with full attention)
    mask_effect: float  # rel_l2(reference masked, reference unmasked)
    chunk_size: int
    frames: int
    match_ratio: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (NaN when either has a non-finite value: never folded into a match)."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    den = float(b.norm())
    return float((a - b).norm()) / den if den > 0 else float((a - b).norm())


@torch.inference_mode()
def reference_v1(decoder, x, mask, mu, t, spks, cond, streaming: bool) -> torch.Tensor:
    """Row 0 (conditional) of the reference estimator's output on the CFG batch of one step."""
    v = decoder.estimator(*decoder.cfg_batch(x, mask, mu, t, spks, cond), streaming=streaming)
    return v[:1]


def streaming_mask_check(cand_v1: torch.Tensor, decoder, x, mask, mu, t, spks, cond, *,
                         match_ratio: float = 0.1, stage: str = STAGE) -> MaskCheck:
    """Compare the candidate's step-1 velocity with the reference estimator (``decoder``: the reference
    ``CausalConditionalCFM``) run with and without the chunk mask on the same step-1 inputs (x = x0, t = step1.t,
    mu, mask, spks, cond; the CFG batch is built as the reference solver builds it)."""
    chunk = int(decoder.estimator.static_chunk_size)
    frames = int(x.shape[-1])
    masked = reference_v1(decoder, x, mask, mu, t, spks, cond, streaming=True)
    unmasked = reference_v1(decoder, x, mask, mu, t, spks, cond, streaming=False)
    cand = cand_v1.detach().to(masked.dtype).reshape(masked.shape)
    e_m, e_u, effect = rel_l2(cand, masked), rel_l2(cand, unmasked), rel_l2(masked, unmasked)
    decidable = frames > chunk and effect == effect and effect > 0  # effect == effect: not NaN
    ignores = bool(decidable and e_u == e_u and e_m == e_m and e_u <= match_ratio * e_m)
    if not decidable:
        msg = (f"{stage}: the chunk mask cannot be checked: {frames} frames fit in one {chunk}-frame chunk, so the "
               f"mask attends everywhere" if frames <= chunk else
               f"{stage}: the chunk mask cannot be checked (mask effect {effect:.3g})")
    elif ignores:
        msg = (f"{stage}: the candidate's estimator ignores the streaming chunk mask: its velocity matches the "
               f"reference run with full attention (rel_l2 {e_u:.2e}) and not the reference with the {chunk}-frame "
               f"chunk mask (rel_l2 {e_m:.2e}); an exported graph without an attention-mask input (upstream's "
               f"export_onnx.py, the TensorRT path) runs streaming requests with full attention: export with the "
               f"mask as an input (parity export-onnx --mask-input) and feed the chunk mask")
    else:
        msg = (f"{stage}: the candidate honours the chunk mask (rel_l2 {e_m:.2e} to the masked reference, "
               f"{e_u:.2e} to the unmasked one)")
    return MaskCheck(stage, bool(decidable), ignores, e_m, e_u, effect, chunk, frames, match_ratio, msg)


def mask_check_from_traces(decoder, ref: dict, cand: dict, *, match_ratio: float = 0.1) -> MaskCheck | None:
    """:func:`streaming_mask_check` on a reference trace's step-1 inputs (``x0``, ``step1.t``, ``mu``, ``spks``,
    ``cond``) and a candidate trace's ``step1.v1``; None when a stage is missing."""
    need_ref = ("x0", "step1.t", "mu", "spks", "cond")
    if any(k not in ref for k in need_ref) or STAGE not in cand:
        return None
    mu = ref["mu"].float()
    mask = torch.ones(1, 1, mu.shape[2])
    return streaming_mask_check(cand[STAGE], decoder, ref["x0"].float(), mask, mu, ref["step1.t"].float(),
                                ref["spks"].float(), ref["cond"].float(), match_ratio=match_ratio)
