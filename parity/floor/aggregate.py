"""From member statistics to floors, and the gate multiplier k from the ensemble's own held-out data.

Floor of a statistic at a stage (``max_abs``, ``rel_l2``, a domain statistic):

1. ``M`` = the maximum over the fit members (every family);
2. extreme-value margin: for each random family (``mca-modules``, ``mca-ops``, stochastic ``chop``) with at
   least 3 fit seeds, a Gumbel distribution (the limit law of maxima; method of moments: beta = s sqrt(6)/pi,
   mu = mean - 0.5772 beta) is fitted to the seeds' values, and its quantile ``q`` at ``EV_P`` = 0.99 is the
   value one more seed of that family exceeds with probability 1 %;
3. floor = max(M, q over the families); the margin floor / M is recorded.

The envelope's floor is built the same way block by block (maximum over the fit members, raised to each
random family's per-block Gumbel quantile), then given the largest value within +-``SMOOTH_BLOCKS`` (2)
blocks: rounding noise is locally stationary along time, and a block where every member happened to land
on the same last bit (a deviation of 1 ulp where its neighbours show 2-3) is chance, not a quieter
computation. Without it, held-out seeds reached 2x the floor in such blocks on the tiny model; a bug
confined to one frame still shows against its neighbours' level. The ``max_abs`` floor is at least the
envelope's largest block.

Gate multiplier k (:func:`choose_k`): the largest error/floor ratio a legitimate re-computation the floor
never saw reaches, over (a) every held-out seed against the plain reference, (b) pairs of held-out seeds
against each other (a legitimate candidate against a legitimate, non-plain reference: the case of a port
compared with a reference run on another machine), (c) each deterministic member (2 threads, SDPA math,
SDPA default) against the floor rebuilt without it (leave-one-out: a structurally different legitimate
change). Each sample is the largest ratio over all stages and gated statistics (what the verdict takes).
k = the largest of: the largest sample, the Gumbel quantile at 1 - ``K_ALPHA`` fitted to the samples (a
legitimate comparison exceeds k with probability ``K_ALPHA`` under that model), and 2 (the triangle
inequality: two legitimate runs each at the floor can differ by twice it); rounded up to two significant
digits. ``K_ALPHA`` = 1e-6 is a false-alarm budget, not a fit to any bug: a CI suite makes thousands of
comparisons (cases x stages x runs), and at 1e-3 per comparison a spurious failure would come every few
hundred runs. The extrapolation is the Gumbel model's; the measured samples are kept in ``k_basis``.
"""

from __future__ import annotations

import math

import torch

from .judge import judge_stage
from .stats import PairStats
from .types import StageFloor

EV_P = 0.99
K_ALPHA = 1e-6  # the false-alarm budget of one legitimate comparison (see the module docstring)
K_MIN = 2.0
SMOOTH_BLOCKS = 2  # an envelope block's floor is the largest deviation within +-2 blocks (frames)
RANDOM_FAMILIES = ("mca-modules", "mca-ops", "chop")
EULER_GAMMA = 0.5772156649015329


def gumbel_quantile(values, p: float) -> float | None:
    """Quantile ``p`` of a Gumbel (maximum) law fitted to ``values`` by moments; None for < 3 values."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if len(xs) < 3:
        return None
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if sd == 0.0:
        return mean
    beta = sd * math.sqrt(6.0) / math.pi
    mu = mean - EULER_GAMMA * beta
    return mu - beta * math.log(-math.log(p))


def round_up(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant digits."""
    if x <= 0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - digits + 1
    q = 10.0 ** e
    return round(math.ceil(x / q - 1e-9) * q, max(0, -e))


def _ev_floor(vals: dict[str, float], fam: dict[str, str], seeded: dict[str, bool]) -> tuple[float, float, str]:
    """(floor, margin, worst member) of one statistic from the fit members' values."""
    if not vals:
        return 0.0, 1.0, ""
    worst = max(vals, key=lambda m: (vals[m], m))
    mx = vals[worst]
    q_best = mx
    for f in RANDOM_FAMILIES:
        xs = [v for m, v in vals.items() if fam[m] == f and seeded[m]]
        q = gumbel_quantile(xs, EV_P)
        if q is not None and q > q_best:
            q_best = q
    return q_best, (q_best / mx if mx > 0 else 1.0), worst


TINY_POS = 1e-300


def _ev_envelope(per: dict, fam: dict, seeded: dict) -> torch.Tensor:
    """Per-block envelope floor: the maximum over the fit members, raised to each random family's Gumbel
    quantile at EV_P fitted block by block (a block's maximum has its own distribution: near the last bits
    a block is 0, 1 or 2 ulps from seed to seed)."""
    names = list(per)
    env = torch.tensor([list(per[m].envelope) for m in names], dtype=torch.float64)
    out = env.amax(dim=0)
    for f in RANDOM_FAMILIES:
        rows = [i for i, m in enumerate(names) if fam[m] == f and seeded[m]]
        if len(rows) < 3:
            continue
        x = env[rows]
        mean, sd = x.mean(dim=0), x.std(dim=0, unbiased=True)
        beta = sd * math.sqrt(6.0) / math.pi
        q = mean - EULER_GAMMA * beta - beta * math.log(-math.log(EV_P))
        out = torch.maximum(out, torch.where(sd > 0, q, mean))
    if SMOOTH_BLOCKS and out.numel() > 1:  # running maximum over +-SMOOTH_BLOCKS blocks
        w = 2 * SMOOTH_BLOCKS + 1
        out = torch.nn.functional.max_pool1d(out.reshape(1, 1, -1), w, 1, SMOOTH_BLOCKS).reshape(-1)
    return out


def build_stages(base: dict, stats: dict[str, dict[str, PairStats]], members, gates=None,
                 blocks: dict[str, int] | None = None) -> dict[str, StageFloor]:
    """StageFloors from the fit members' statistics. ``stats``: {member: {stage: PairStats}};
    ``members``: the Member list (only role "fit" members count); ``gates``: {stage: gated statistics};
    ``blocks``: {stage: envelope blocks}."""
    from ..stages import sort_stages
    from .stats import stage_scale

    fit = [m for m in members if m.role == "fit" and m.name in stats]
    fam = {m.name: m.family for m in fit}
    seeded = {m.name: m.seed is not None for m in fit}
    out: dict[str, StageFloor] = {}
    for name in sort_stages(list(base)):
        per = {m.name: stats[m.name][name] for m in fit if name in stats[m.name]}
        if not per:
            continue
        t = base[name]
        nb = blocks[name] if blocks else len(next(iter(per.values())).envelope)
        scale, bscale = stage_scale(name, t, nb)
        margin, worst, values = {}, {}, {}
        for stat in ("max_abs", "rel_l2"):
            v, mg, w = _ev_floor({m: s.value(stat) for m, s in per.items()}, fam, seeded)
            values[stat], margin[stat], worst[stat] = v, mg, w
        env = _ev_envelope(per, fam, seeded)
        if float(env.max()) > values["max_abs"]:  # the largest block floor is a max_abs floor too
            values["max_abs"] = float(env.max())
            mx = max(s.max_abs for s in per.values())
            margin["max_abs"] = values["max_abs"] / mx if mx > 0 else 1.0
        emax = torch.tensor([list(s.envelope) for s in per.values()], dtype=torch.float64).amax(dim=0)
        margin["envelope"] = float((env / emax.clamp_min(TINY_POS)).max()) if float(emax.max()) > 0 else 1.0
        extra = {}
        keys = sorted({k for s in per.values() for k in s.extra})
        for key in keys:
            v, mg, w = _ev_floor({m: s.extra[key] for m, s in per.items() if key in s.extra}, fam, seeded)
            extra[key], margin[key], worst[key] = v, mg, w
        gate = tuple(gates.get(name, ("max_abs", "rel_l2", "envelope"))) if gates else ("max_abs", "rel_l2", "envelope")
        out[name] = StageFloor(name, tuple(int(s) for s in t.shape), values["max_abs"], values["rel_l2"],
                               tuple(float(x) for x in env), scale, bscale, gate, extra, margin, worst)
    return out


def stage_ratios(stages: dict[str, StageFloor], ref: dict, other: dict, stats: dict | None = None) -> dict:
    """{stage: (largest gated ratio, its statistic)} of ``other`` against ``ref`` (``stats``: their PairStats by stage
    when known, e.g. a member against the plain run)."""
    out = {}
    for name, sf in stages.items():
        if name not in ref or name not in other:
            continue
        v = judge_stage(sf, ref[name], other[name], math.inf, (stats or {}).get(name))
        if v.ratio is not None:
            out[name] = (v.ratio, v.statistic or "")
    return out


def max_ratio(stages: dict[str, StageFloor], ref: dict, other: dict, stats: dict | None = None,
              table: dict | None = None) -> tuple[float, str, str]:
    """(largest gated ratio over the stages, its stage, its statistic) of ``other`` against ``ref`` (``table``: a
    :func:`stage_ratios` result already computed)."""
    table = table if table is not None else stage_ratios(stages, ref, other, stats)
    best = (0.0, "", "")
    for name in stages:
        if name in table and table[name][0] > best[0]:
            best = (table[name][0], name, table[name][1])
    return best


def choose_k(samples: list[dict]) -> tuple[float, dict]:
    """k from held-out ratio samples ``[{"sample", "ratio", "stage", "statistic"}, ...]`` (see the module
    docstring). Returns (k, basis)."""
    ratios = [s["ratio"] for s in samples if math.isfinite(s["ratio"])]
    if any(not math.isfinite(s["ratio"]) for s in samples):
        bad = [s["sample"] for s in samples if not math.isfinite(s["ratio"])]
        raise ValueError(f"held-out legitimate runs with a non-finite ratio (a stage exact in every fit member "
                         f"differs in them): {', '.join(bad)}")
    largest = max(ratios, default=0.0)
    q = gumbel_quantile(ratios, 1.0 - K_ALPHA)
    raw = max(largest, q or 0.0, K_MIN)
    k = round_up(raw)
    worst = max(samples, key=lambda s: s["ratio"]) if samples else None
    basis = {"rule": f"max(largest held-out ratio, Gumbel quantile 1-{K_ALPHA:g} of the held-out ratios, {K_MIN:g}), "
                     f"rounded up to 2 significant digits",
             "largest": largest, "gumbel_quantile": q, "min": K_MIN, "raw": raw, "n_samples": len(samples),
             "worst": worst, "samples": samples}
    return k, basis
