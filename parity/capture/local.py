"""The candidate's step-local (teacher-forced) run: its solver step driven from the reference's own state and its
vocoder fed the reference's mel, so a comparison can tell a step's own error from the error it inherited.
Capture-side: it runs the candidate."""

from __future__ import annotations

import torch

from reference.probe import Probe

from ..stages import STEP_OUTPUTS, VOCODER_OUTPUTS
from .recorder import Recorder


def step_local(cand, ref: dict, *, streaming: bool, finalize: bool = True) -> dict:
    """Teacher-forced errors: the candidate's solver step driven from the reference's own state
    (x0 or step{k-1}.x, t, dt, mu, spks, cond) and its vocoder fed the reference flow_mel."""
    out: dict = {}
    if "mu" not in ref or "x0" not in ref:
        return out
    mu, spks, cond = ref["mu"], ref["spks"], ref["cond"]
    mask = torch.ones(1, 1, mu.shape[2])
    k = 1
    while f"step{k}.t" in ref and f"step{k}.x" in ref:
        x_prev = ref["x0"] if k == 1 else ref[f"step{k - 1}.x"]
        try:
            x, v1, v2, v_cfg = cand.step(x_prev, ref[f"step{k}.t"], ref[f"step{k}.dt"].reshape(()), mu, mask, spks,
                                         cond, streaming=streaming, k=k)
        except Exception:  # noqa: BLE001 - a crashing step shows as missing local stages
            break
        for n, t in zip(STEP_OUTPUTS, (v1, v2, v_cfg, x)):
            out[f"step{k}.{n}"] = t.detach().float().cpu()
        k += 1
    if "flow_mel" in ref:
        rec = Recorder(VOCODER_OUTPUTS)
        try:
            cand.vocode(ref["flow_mel"], finalize=finalize, probe=Probe(rec))
        except Exception:  # noqa: BLE001 - a crashing vocoder shows as missing local stages
            pass
        out.update(rec.tensors)
    return out
