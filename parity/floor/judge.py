"""Judging a candidate against a floor: the one implementation of the floor-relative gate.

For every stage the candidate's error against the reference is measured with the statistics the floor
records (:mod:`parity.floor.stats`) and divided by the floor: ``ratio = error / floor``. The stage passes
when the largest ratio of its gated statistics is at most ``k`` (the floor's own multiplier unless one is
given). Where a floor is exactly 0 (every legitimate re-computation was bit-identical there), the
divisor is an absolute epsilon of one float32 unit roundoff on the stage's scale instead:
``2^-24 * max |ref|`` for ``max_abs`` (per block for the envelope), ``2^-24`` for ``rel_l2``, the
cents or nats of a 2^-24 relative change for the domain statistics; so a stage that is exact in every
legitimate run fails on any difference beyond about k ulps. Non-finite values fail whatever the floor.

The ODE time grid (``step{k}.t``, ``step{k}.dt``) has its own unit (:data:`TIME_GRID_UNIT`): one fp32 ulp at
the grid's end, 2^-23 for a grid on [0, 1], and only the absolute statistics are gated (``max_abs``,
``envelope``; a scalar's relative error near t = 0 says nothing). Every member of the floor ensemble builds the
grid the same way, so its floor is exactly 0; but the grid has legitimate formulations that differ by rounding
of values up to 1: t read from the grid or accumulated (``t += dt``), dt from differences of grid points or
from the accumulated t, the cosine evaluated by another library (torch, numpy, MLX) or in float64 and rounded
once. Measured (``benchmarks/measure_time_grid.py``): they differ by at most 2 x 2^-24 in t and 3 x 2^-24 in dt
(1.5 units) over n = 1..50, 100 and 200 steps with both schedulers; a grid that really differs (9 or 11 steps
instead of 10, linear instead of cosine, t in another time scale) is 10^5 units off or more.

Pure: the verdict is a function of (floor, reference tensors, candidate tensors, k). The policy
calls :func:`judge_stage` per stage (or :func:`judge` per trace); nothing else decides against a floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..stages import TIME_GRID_UNIT, parse_chunk, parse_step, sort_stages
from .stats import TINY, U32, pair_stats
from .types import Floor, StageFloor

CENTS_EPS = 1200.0 * math.log2(1.0 + U32)  # cents of a 2^-24 relative change
FAILING = ("fail", "nonfinite", "shape")
# the unit of the ODE time grid's stages: one fp32 ulp at the grid's end (1.0); see the module docstring
TIME_GRID_GATE = ("max_abs", "envelope")


def is_time_grid(name: str) -> bool:
    """``step{k}.t`` / ``step{k}.dt`` (also under a chunk prefix)."""
    ch = parse_chunk(name)
    st = parse_step(ch[1] if ch else name)
    return bool(st) and st[1] in ("t", "dt")


@dataclass(frozen=True)
class StageVerdict:
    """``status``: pass | fail | nonfinite | shape (the candidate's shape differs from the floor's) |
    missing (absent from the candidate) | no-floor (the floor has no such stage). ``ratio`` is the largest
    gated ratio, from ``statistic``; ``block`` the worst envelope block; ``ratios`` every statistic's
    ratio (gated or not); ``zero_floor`` the statistics judged against the absolute epsilon."""

    stage: str
    status: str
    ratio: float | None = None
    statistic: str | None = None
    value: float | None = None
    floor: float | None = None
    block: int | None = None
    ratios: dict = field(default_factory=dict)
    zero_floor: tuple[str, ...] = ()
    detail: str = ""
    unit: float | None = None  # the divisor of ``statistic``: its floor, or the absolute epsilon of a zero floor

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def to_dict(self) -> dict:
        def j(v):
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

        return {"stage": self.stage, "status": self.status, "ratio": j(self.ratio), "statistic": self.statistic,
                "value": j(self.value), "floor": j(self.floor), "block": self.block,
                "ratios": {k: j(v) for k, v in self.ratios.items()}, "zero_floor": list(self.zero_floor),
                "detail": self.detail, "unit": j(self.unit)}


@dataclass(frozen=True)
class FloorVerdict:
    kind: str
    k: float
    digest: str
    stages: tuple[StageVerdict, ...]

    @property
    def first_over(self) -> StageVerdict | None:
        """The first failing stage in pipeline order."""
        return next((s for s in self.stages if s.failed), None)

    @property
    def passed(self) -> bool:
        return self.first_over is None

    @property
    def max_ratio(self) -> float:
        return max((s.ratio for s in self.stages if s.ratio is not None), default=0.0)

    def __getitem__(self, stage: str) -> StageVerdict:
        return next(s for s in self.stages if s.stage == stage)

    def to_dict(self) -> dict:
        fo = self.first_over
        return {"kind": self.kind, "k": self.k, "digest": self.digest, "passed": self.passed,
                "first_over": fo.stage if fo else None, "stages": [s.to_dict() for s in self.stages]}


def _div(value: float, floor: float, eps: float) -> tuple[float, bool]:
    """(ratio, judged against eps). eps > 0 always."""
    if floor > 0:
        return value / floor, False
    return value / eps, True


def _domain_eps(statistic: str) -> float:
    return CENTS_EPS if "cents" in statistic else U32


def judge_stage(sf: StageFloor, ref: torch.Tensor, cand: torch.Tensor, k: float, stats=None) -> StageVerdict:
    """One stage: ``cand`` against ``ref`` in units of the stage floor ``sf``. ``stats``: the pair's
    :class:`PairStats` when the caller has them already (the floor's own members: cut into the floor's blocks)."""
    if tuple(cand.shape) != tuple(ref.shape) or tuple(ref.shape) != tuple(sf.shape):
        return StageVerdict(sf.name, "shape", detail=f"shapes: floor {list(sf.shape)}, reference {list(ref.shape)}, "
                                                     f"candidate {list(cand.shape)}")
    domain = bool(sf.extra)
    st = stats if stats is not None else pair_stats(sf.name, ref, cand, sf.n_blocks, domain=domain)
    if not st.finite:
        return StageVerdict(sf.name, "nonfinite", math.inf, "finite", math.inf, None,
                            detail="non-finite values (NaN never passes, whatever the floor)")
    ratios: dict[str, float] = {}
    units: dict[str, float] = {}
    zero: list[str] = []
    grid = is_time_grid(sf.name)
    eps = TIME_GRID_UNIT * max(sf.scale, 1.0) if grid else U32 * max(sf.scale, TINY)
    if grid:  # the grid's rounding is legitimate whatever the ensemble measured: the larger of the two
        r, z = st.max_abs / max(sf.max_abs, eps), sf.max_abs < eps
    else:
        r, z = _div(st.max_abs, sf.max_abs, eps)
    ratios["max_abs"], units["max_abs"] = r, (eps if z else sf.max_abs)
    if z:
        zero.append("max_abs")
    r, z = _div(st.rel_l2, sf.rel_l2, U32)
    ratios["rel_l2"], units["rel_l2"] = r, (U32 if z else sf.rel_l2)
    if z:
        zero.append("rel_l2")
    worst_b, worst_r, env_zero, env_unit = None, -1.0, False, None
    if st.envelope:  # per block, vectorised: the first block with the largest ratio, as a loop would find it
        e = torch.tensor(st.envelope, dtype=torch.float64)
        f = torch.tensor(sf.envelope, dtype=torch.float64)
        sc = torch.tensor(sf.block_scale, dtype=torch.float64)
        if grid:
            ub = TIME_GRID_UNIT * sc.clamp_min(1.0)
            zb, unit = f < ub, torch.maximum(f, ub)
        else:
            zb = ~(f > 0)
            unit = torch.where(zb, U32 * sc.clamp_min(TINY), f)
        rb = e / unit
        b = int(torch.argmax(torch.nan_to_num(rb, nan=-1.0)))
        worst_b, worst_r, env_zero = b, float(rb[b]), bool(zb[b])
        env_unit = float(ub[b]) if (grid and env_zero) else float(unit[b])
    ratios["envelope"] = max(worst_r, 0.0)
    units["envelope"] = env_unit
    if env_zero:
        zero.append("envelope")
    for name, fv in sf.extra.items():
        v = st.extra.get(name)
        if v is not None:
            r, z = _div(v, fv, _domain_eps(name))
            ratios[name], units[name] = r, (_domain_eps(name) if z else fv)
            if z:
                zero.append(name)
    gated = [(ratios[g], g) for g in sf.gate if g in ratios and (not grid or g in TIME_GRID_GATE)]
    if not gated:
        return StageVerdict(sf.name, "pass", None, None, None, None, worst_b, ratios, tuple(zero),
                            "no gated statistic (information only)")
    ratio, stat = max(gated)
    value = st.envelope[worst_b] if stat == "envelope" else st.value(stat)
    floor = (sf.envelope[worst_b] if stat == "envelope" else sf.value(stat))
    status = "pass" if ratio <= k else "fail"
    where = f" at block {worst_b}" if stat == "envelope" else ""
    if grid and stat in zero:
        why = " (the time grid: judged in units of one fp32 ulp at the grid's end, 2^-23; t/dt formulations differ by rounding)"
    elif stat in zero:
        why = " (floor exactly 0: judged against one fp32 ulp of the stage's scale)"
    else:
        why = ""
    detail = f"{stat} {value:.3g}{where} = {ratio:.3g} x floor {floor:.3g}{why}; gate {k:g}x"
    return StageVerdict(sf.name, status, ratio, stat, value, floor, worst_b, ratios, tuple(zero), detail, units.get(stat))


def judge(floor: Floor, ref: dict, cand: dict, k: float | None = None, stages=None) -> FloorVerdict:
    """Every stage of ``floor`` (or of ``stages``) present in ``ref``, in pipeline order."""
    k = floor.k if k is None else float(k)
    names = sort_stages([n for n in (stages if stages is not None else floor.stages) if n in ref or n in floor.stages])
    out = []
    for n in names:
        if n not in floor.stages:
            out.append(StageVerdict(n, "no-floor", detail="the floor has no such stage"))
        elif n not in ref:
            continue
        elif n not in cand:
            out.append(StageVerdict(n, "missing", detail="absent from the candidate"))
        else:
            out.append(judge_stage(floor.stages[n], ref[n], cand[n], k))
    return FloorVerdict(floor.kind, k, floor.digest, tuple(out))
