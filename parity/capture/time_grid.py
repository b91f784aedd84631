"""The time-grid check: is a step that fails only because the candidate's time grid rounds differently?

The ODE time grid has legitimate formulations that differ by an fp32 ulp or two at the grid's end (t read
from the grid or accumulated, dt from differences, another library's cosine: :mod:`parity.floor.judge`,
:data:`~parity.stages.TIME_GRID_UNIT`). The t stages themselves are judged in units of that rounding. The
estimator, though, sees t through the sinusoidal time embedding (``sin(1000 t f)``), which turns a 6e-8
difference in t into a velocity difference several times the fp32 noise floor (the floor's ensemble builds the
grid one way: perturbing the solver's arithmetic was measured to dominate every velocity floor, so it is left
out; docs/floor.md). So for each step whose t (or dt) differs between the two traces, the check re-runs the
*reference's* step from its own state with the candidate's t (and dt): the reference at the candidate's grid.
The comparison then judges that step's ``v1``, ``v2``, ``v_cfg`` and ``x`` against this re-run as well
(:func:`parity.judge.compare.compare_loaded`, ``time_grid=``): a stage that fails against the reference and passes
against the reference at the candidate's grid differs only through the grid's rounding, and passes, saying so.

It runs the reference model, so it belongs to the capture side (like the step-local run and the chunk-mask
check): :func:`parity.harness.run_case` calls :func:`check` with the model at hand; ``parity compare`` loads the
model the reference trace names (:func:`check_saved`). A grid that really differs (another step count, schedule
or time scale) is not re-judged: only t/dt differences within the grid's rounding (:data:`MAX_UNITS` units of
2^-23) are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..stages import STEP_OUTPUTS, TIME_GRID_UNIT, parse_step

# t/dt differences up to this many grid units (2^-23) are rounding of the grid (measured at most 1.5 units over
# the legitimate formulations, parity.floor.judge); larger ones are a different grid and are not re-judged
MAX_UNITS = 4.0


@dataclass
class TimeGridCheck:
    """``steps``: {k: {"t_units", "dt_units"}} for the steps whose grid values differ within the rounding;
    ``tensors``: the reference re-run at the candidate's grid, ``step{k}.{v1,v2,v_cfg,x}``; ``skipped``: why a
    differing step was not re-run (a grid beyond rounding, or stages missing)."""

    steps: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"steps": {str(k): v for k, v in self.steps.items()}, "stages": sorted(self.tensors),
                "skipped": {str(k): v for k, v in self.skipped.items()}}


def _units(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None or a.numel() != b.numel():
        return None
    return float((a.double().reshape(-1) - b.double().reshape(-1)).abs().max()) / TIME_GRID_UNIT


def differing_steps(ref: dict, cand: dict) -> dict:
    """{k: {"t_units", "dt_units"}} for every step whose t or dt differs between the traces (any size)."""
    out = {}
    ks = sorted({parse_step(n)[0] for n in ref if parse_step(n) and parse_step(n)[1] == "t"})
    for k in ks:
        tu = _units(ref.get(f"step{k}.t"), cand.get(f"step{k}.t"))
        du = _units(ref.get(f"step{k}.dt"), cand.get(f"step{k}.dt"))
        if (tu or 0.0) > 0 or (du or 0.0) > 0:
            out[k] = {"t_units": tu, "dt_units": du}
    return out


@torch.inference_mode()
def check(model, ref: dict, cand: dict, *, streaming: bool = False) -> TimeGridCheck | None:
    """Re-run the reference's step k at the candidate's t/dt for each step whose grid differs within rounding;
    None when no step's grid differs (nothing to re-judge)."""
    diff = differing_steps(ref, cand)
    if not diff:
        return None
    out = TimeGridCheck()
    need = ("mu", "spks", "cond", "x0")
    for k, d in diff.items():
        units = [u for u in (d["t_units"], d["dt_units"]) if u is not None]
        if max(units) > MAX_UNITS:
            out.skipped[k] = f"t/dt differ by {max(units):.3g} grid units: a different grid, not its rounding"
            continue
        x_prev = ref.get("x0") if k == 1 else ref.get(f"step{k - 1}.x")
        missing = [n for n in need if n not in ref] + ([] if x_prev is not None else [f"step{k - 1}.x"])
        if missing or f"step{k}.t" not in ref or f"step{k}.dt" not in ref:
            out.skipped[k] = f"the reference trace lacks {', '.join(missing) or f'step{k}.t/dt'}"
            continue
        t = cand.get(f"step{k}.t", ref[f"step{k}.t"]).reshape(ref[f"step{k}.t"].shape).float()
        dt = cand.get(f"step{k}.dt", ref[f"step{k}.dt"]).reshape(()).float()
        mu = ref["mu"]
        mask = torch.ones(1, 1, mu.shape[2])
        x, v1, v2, v_cfg = model.flow.decoder.step(x_prev.float(), t, dt, mu.float(), mask, ref["spks"].float(),
                                                   ref["cond"].float(), streaming)
        out.steps[k] = d
        for n, v in zip(STEP_OUTPUTS, (v1, v2, v_cfg, x)):
            out.tensors[f"step{k}.{n}"] = v.detach().float().cpu()
    return out if (out.steps or out.skipped) else None


def check_saved(ref_meta: dict, ref: dict, cand: dict, *, streaming: bool = False, model=None):
    """:func:`check` for saved traces, with the reference model the reference trace names (None when no step's
    grid differs, or when the model cannot be loaded: then the stages are judged against the reference alone)."""
    diff = differing_steps(ref, cand)
    if not any(max(u for u in (d["t_units"], d["dt_units"]) if u is not None) <= MAX_UNITS for d in diff.values()):
        return None  # nothing differs, or only by more than rounding: no step to re-run, no model to load
    if model is None:
        from .trace_model import model_from_provenance

        model, _why = model_from_provenance(ref_meta)
        if model is None:
            return None
    return check(model, ref, cand, streaming=streaming)
