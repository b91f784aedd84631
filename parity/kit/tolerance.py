"""Per-unit tolerances: the module-level noise floor, measured with the end-to-end floor's ensemble method on
the unit alone.

For one unit and its captured inputs, every member of the fp32 ensemble (:func:`parity.floor.members.fp32_members`:
2 threads; SDPA math and SDPA default attention; Monte-Carlo arithmetic at every module output and at every
rounding op, 8 fit + 4 held-out seeds each) re-computes the unit on the same inputs, and the deviation of each
output from the plain computation (1 thread, explicit attention) is measured (:func:`parity.floor.stats.pair_stats`).
To these the kit adds one deterministic fit member, ``fp64``: the unit computed in float64 (the reference's weights
and inputs cast up, the outputs rounded back to their dtype), a more accurate legitimate computation. At module
level it stands in for another summation order *inside* one op (a GEMM's, a convolution's or an FFT's own
accumulation, which every port's kernels do their own way): Monte-Carlo arithmetic perturbs op results, not their
internal sums, and on a unit that is one op (a Linear, a conv, the STFT) the fp32 ensemble alone is about one ulp of
the output wide. Measured without it (tiny model, short bundle): a float64 computation of every vector was 3.6x
the floor of the STFT (k 2) and 8.5x that of source_downs.0 (k 5.7), and 5-8x several single-conv vectors.
The floor of each output and statistic is the maximum over the fit members raised to the extreme-value margin
(:func:`parity.floor.aggregate.build_stages`), and k is chosen from the held-out members exactly as for the
end-to-end floor (:func:`parity.floor.aggregate.choose_k`: held-out seeds against the plain computation, pairs of
held-out seeds, each deterministic member left out; k = max(largest sample, Gumbel quantile at 1 - 1e-6, 2)).

Gated statistics: ``max_abs`` and ``rel_l2`` over the whole output tensor (two numbers a test in any language
computes in a few lines); a floor of exactly 0 (every legitimate re-computation bit-identical) is replaced by
one fp32 unit roundoff of the output's scale (``2^-24 max|ref|`` for max_abs, ``2^-24`` for rel_l2), the end-to-end
gate's rule (:mod:`parity.floor.judge`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from ..floor import aggregate as AG
from ..floor.estimate import Recipe
from ..floor.members import PLAIN, Member, fp32_members, member_context
from ..floor.stats import TINY, U32, pair_stats
from ..floor.types import StageFloor

GATE = ("max_abs", "rel_l2")
FP64 = Member("fp64", "fp64")  # the unit in float64, outputs rounded back (deterministic, fit)


def kit_members(recipe: Recipe) -> list[Member]:
    """The module-level ensemble: the fp32 ensemble of the end-to-end floor, plus :data:`FP64`."""
    return fp32_members(recipe.n_seeds, recipe.n_held_out, recipe.families) + [FP64]


@dataclass
class UnitTolerance:
    """The measured tolerance of one unit: ``k``, its basis, the floors of its outputs (keyed by output name)."""

    k: float
    k_basis: dict
    floors: dict[str, StageFloor]
    contributions: dict = field(default_factory=dict)  # family -> output -> [max_abs, rel_l2] (largest deviation)
    seconds: float = 0.0

    def unit_of(self, output: str, statistic: str) -> float:
        """The divisor of ``statistic`` for ``output``: its floor, or the zero-floor epsilon."""
        sf = self.floors[output]
        f = sf.value(statistic)
        if f > 0:
            return f
        return U32 * max(sf.scale, TINY) if statistic == "max_abs" else U32

    def limits(self, output: str) -> dict[str, float]:
        return {s: self.k * self.unit_of(output, s) for s in GATE}


def stage_name(unit_id: str, output: str) -> str:
    """The name an output goes by in the floor machinery and in a port's outputs: ``<unit id>/<output>``."""
    return f"{unit_id}/{output}"


@contextlib.contextmanager
def as_float64(model, unit):
    """The modules ``unit`` reads, cast to float64 in place for the duration (the vocoder whole: 80 MB; of the flow
    only the modules owning the unit's weights), and back: fp32 -> fp64 -> fp32 is exact, so the weights are
    bit-identical afterwards, and no float64 copy of the whole model is held (2.7 GB at full size)."""
    mods = [model.hift] if unit.component == "hift" else [model.flow.get_submodule(p) for p in unit.weights]
    try:
        for m in mods:
            m.double()
        yield
    finally:
        for m in mods:
            m.float()


def run_unit(model, unit, inputs: dict, attrs: dict, member: Member = PLAIN) -> dict[str, torch.Tensor]:
    """``unit`` on ``inputs`` as ``member`` (``fp64``: the unit's modules and floating inputs cast to float64, the
    outputs rounded back to float32)."""
    if member.family == "fp64":
        up = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
        with as_float64(model, unit), member_context(model, PLAIN):
            outs = unit.call(model, up, attrs)
        return {k: v.to(torch.float32) if v.dtype == torch.float64 else v for k, v in outs.items()}
    with member_context(model, member):
        return unit.call(model, inputs, attrs)


def measure(model, unit, inputs: dict, attrs: dict, base: dict[str, torch.Tensor],
            recipe: Recipe | None = None) -> UnitTolerance:
    """The unit's tolerance: the ensemble re-computes ``unit`` on ``inputs``; ``base`` is the plain computation."""
    t0 = time.perf_counter()
    recipe = recipe or Recipe()
    members = kit_members(recipe)
    names = {stage_name(unit.id, o): o for o in base}
    ref = {n: base[o] for n, o in names.items()}
    blocks = {n: 1 for n in ref}
    stats: dict = {}
    kept: dict = {}
    for m in members:
        outs = run_unit(model, unit, inputs, attrs, m)
        tens = {n: outs[o] for n, o in names.items()}
        stats[m.name] = {n: pair_stats(n, ref[n], tens[n], 1) for n in ref}
        if m.role == "held-out" or m.seed is None:
            kept[m.name] = tens
    gates = {n: GATE for n in ref}
    stages = AG.build_stages(ref, stats, members, gates, blocks)
    samples = k_samples(ref, stages, stats, members, kept, gates, blocks)
    k, basis = AG.choose_k(samples)
    contrib: dict = {}
    for m in members:
        fam = contrib.setdefault(m.family, {})
        for n, s in stats[m.name].items():
            cur = fam.get(names[n], [0.0, 0.0])
            fam[names[n]] = [max(cur[0], s.max_abs), max(cur[1], s.rel_l2)]
    floors = {names[n]: sf for n, sf in stages.items()}
    return UnitTolerance(k, basis, floors, contrib, time.perf_counter() - t0)


def k_samples(base, stages, stats, members, kept, gates, blocks) -> list[dict]:
    """The held-out ratio samples k is chosen from (the end-to-end floor's three kinds; see
    :mod:`parity.floor.aggregate`)."""
    samples = []
    held = [m for m in members if m.role == "held-out"]
    for m in held:
        r, st, stat = AG.max_ratio(stages, base, kept[m.name])
        samples.append({"sample": f"{m.name} vs plain", "ratio": r, "stage": st, "statistic": stat})
    by_fam: dict = {}
    for m in held:
        by_fam.setdefault(m.family, []).append(m.name)
    for names in by_fam.values():
        for a, b in zip(names, names[1:] + names[:1]):
            if a != b:
                r, st, stat = AG.max_ratio(stages, kept[a], kept[b])
                samples.append({"sample": f"{b} vs {a}", "ratio": r, "stage": st, "statistic": stat})
    for m in members:
        if m.role == "fit" and m.seed is None and m.name in kept:
            rest = [x for x in members if x.name != m.name]
            loo = AG.build_stages(base, stats, rest, gates, blocks)
            r, st, stat = AG.max_ratio(loo, base, kept[m.name])
            samples.append({"sample": f"{m.name} left out", "ratio": r, "stage": st, "statistic": stat})
    return samples


def ratio_against(tol: UnitTolerance, output: str, ref: torch.Tensor, other: torch.Tensor) -> tuple[float, str]:
    """(largest gated ratio, its statistic) of ``other`` against ``ref`` for one output; +inf when non-finite."""
    st = pair_stats(output, ref, other, 1)
    if not st.finite:
        return math.inf, "finite"
    best = (0.0, GATE[0])
    for s in GATE:
        r = st.value(s) / tol.unit_of(output, s)
        if r > best[0]:
            best = (r, s)
    return best
