"""A floor for a new bundle from a few members, calibrated on a full floor of the same model and mode.

A full fp32 floor runs 28 re-computations of the reference (:mod:`parity.floor.estimate`): 4-18 minutes per
bundle at full size on a CPU. What transfers from one bundle to another is not the floor itself (the
sample-level vocoder stages' floor grows with the length of the audio: the sine source's phase accumulates
rounding, 7e-4 relative at 24 mel frames, 9e-3 at 220 on the tiny model) but the *shape* of the ensemble: how
far the full ensemble's floor (28 members, the extreme-value margin, the deterministic kernels) reaches beyond
the mean of its first few op-level Monte-Carlo members (the mean of 3 varies less from bundle to bundle than
their maximum: measured 0.55-1.82 against 0.32-3.08 over the tiny bundles' pairs). That ratio, per stage and
statistic, is the calibration (:func:`calibration`): ``max_abs`` and ``rel_l2`` from a full floor's own
per-member table, the per-block envelope from :func:`envelope_calibration`, which the full floor records when it
is computed (the largest ratio over the blocks of the floor's envelope to the few members' smoothed mean
envelope).

On a new bundle :func:`transferred_floor` runs those few members only (``CHEAP_SEEDS`` op-MCA seeds, on the batch
axis of one forward; the plain run is the comparison's own), and sets every statistic to calibration x what
they reach there (their mean; per block for the envelope, smoothed as the full floor's) x ``TRANSFER_FACTOR``,
the measured worst under-coverage of a transferred floor against the full floor of the same bundle
(``benchmarks/bench_floor_transfer.py``; docs/benchmarks.md). k is the largest k of the calibrating floors. A stage the few members leave exactly unchanged
while the full floor moves it (a deterministic member's kernel alone) keeps the full floor's value relative to
the reference's scale. The result is a :class:`~parity.floor.types.Floor` of kind ``fp32`` whose recipe says
``method: transfer`` and names its sources: the verdict says the floor was transferred, and from where.
"""

from __future__ import annotations

import math
import time

import torch

from ..stages import sort_stages
from . import aggregate as AG
from .cache import make_key
from .members import run_members
from .stats import n_blocks, pair_stats, stage_scale
from .calibrate import (CHEAP_FAMILY, CHEAP_SEEDS, STATS, TRANSFER_FACTOR, calibration,  # noqa: F401
                        cheap_envelope, cheap_members, combine, envelope_calibration)
from .types import Floor, StageFloor


def transferred_floor(model, inputs: dict, calibrations: list[dict], *, streaming: bool = False,
                      finalize: bool = True, base: dict | None = None, recipe=None, bundle_name: str | None = None,
                      factor: float = TRANSFER_FACTOR, log=None) -> Floor:
    """The fp32 floor of ``inputs`` from :func:`calibration` s of full floors of ``model`` on other bundles (same mode).
    ``base``: the plain reference run's stages (reused; else run). ``log``: an :class:`EstimateLog`."""
    from .recipe import EstimateLog, Recipe, provenance, recipe_patterns
    from .members import run_reference

    if not calibrations:
        raise ValueError("a transferred floor needs at least one calibration (a full floor of the same model and mode)")
    t0 = time.perf_counter()
    log = log if log is not None else EstimateLog()
    recipe = recipe or Recipe()
    seeds = tuple(calibrations[0]["seeds"])
    if base is None:
        base, log.member_seconds["plain"] = run_reference(model, inputs, streaming=streaming, finalize=finalize,
                                                          patterns=recipe_patterns(recipe))
    else:
        log.member_seconds["plain"] = 0.0
    patterns = covered(base, recipe)  # the members record what the plain run has (the blocks only if it has them)
    base = {n: base[n] for n in sort_stages(base)}
    n_mel = int(base["flow_mel"].shape[-1]) if "flow_mel" in base else None
    blocks = {n: n_blocks(n, t, n_mel) for n, t in base.items()}
    members = cheap_members(seeds)
    outs, sec = run_members(model, inputs, members, base, streaming=streaming, finalize=finalize, patterns=patterns)
    for m in members:
        log.member_seconds[m.name] = sec / len(members)
    stats = [{n: pair_stats(n, base[n], tens[n], blocks[n]) for n in base} for tens in outs]
    cal = combine(calibrations)
    stages: dict = {}
    for name, t in base.items():
        if name not in cal:
            continue  # a stage the calibrating floors do not hold (other capture patterns): no floor here
        row = cal[name]
        scale, bscale = stage_scale(name, t, blocks[name])
        vals, margin = {}, {}
        for st in STATS:
            cheap = sum(s[name].value(st) for s in stats) / len(stats)
            f = row.get(st)
            if f is not None and cheap > 0:
                vals[st], margin[st] = f * cheap * factor, f * factor
            else:  # the few members leave it unchanged: the full floor relative to the reference's scale
                rel = row.get(f"{st}_rel") or 0.0
                vals[st], margin[st] = (rel * scale if st == "max_abs" else rel) * factor, math.nan
        env = cheap_envelope(stats, name)
        f = row.get("envelope")
        if f is not None and float(env.max()) > 0:
            env = env * (f * factor)
            margin["envelope"] = f * factor
        else:  # no block to calibrate on: the stage's max_abs floor in every block
            env = torch.full_like(env, vals["max_abs"])
        stages[name] = StageFloor(name, tuple(int(s) for s in t.shape), vals["max_abs"], vals["rel_l2"],
                                  tuple(float(x) for x in env), scale, bscale, ("max_abs", "rel_l2", "envelope"), {},
                                  {k: v for k, v in margin.items() if not math.isnan(v)},
                                  {"max_abs": "transfer", "rel_l2": "transfer"})
    k = max(c["k"] for c in calibrations)
    k_core = max(c.get("k_core", c["k"]) for c in calibrations)
    meta = model.provenance(streaming=streaming, finalize=finalize)
    rdict = transfer_recipe(recipe, calibrations, factor, patterns)
    key, digest = make_key(meta, inputs, streaming=streaming, finalize=finalize, kind="fp32", recipe=rdict)
    basis = {"rule": "the largest k of the calibrating full floors", "largest": k, "gumbel_quantile": None,
             "min": AG.K_MIN, "raw": k, "n_samples": 0, "worst": None, "samples": [],
             "sources": [{"digest": c["digest"], "bundle": c["bundle"], "k": c["k"]} for c in calibrations],
             "core": {"k": k_core, "stages": "every stage but the DiT blocks and the HiFT internals",
                      "largest": k_core, "gumbel_quantile": None, "n_samples": 0, "worst": None}}
    per_member = {m.name: {n: [s[n].max_abs, s[n].rel_l2] for n in base} for m, s in zip(members, stats)}
    prov = provenance(meta, inputs, bundle_name, n_mel or 0, None, len(members))
    prov["transfer"] = {"sources": basis["sources"], "factor": factor, "members": [m.name for m in members]}
    floor = Floor("fp32", key, digest, k, basis, stages, tuple(m.to_dict() for m in members), per_member, rdict, prov)
    log.seconds = time.perf_counter() - t0
    return floor


def covered(base: dict, recipe=None) -> list[str]:
    """The recipe's capture patterns that ``base`` (a reference run) holds stages for: what a transferred floor
    on it covers."""
    from .recipe import Recipe, covers, recipe_patterns

    return [p for p in recipe_patterns(recipe or Recipe()) if covers(base, [p])]


def transfer_recipe(recipe, calibrations: list[dict], factor: float = TRANSFER_FACTOR, patterns=None) -> dict:
    """The recipe of a transferred floor as it enters the key: the ensemble recipe it is calibrated on, the method,
    the cheap members, the factor, the calibrating floors' digests and the capture patterns it covers (None: all
    of the recipe's)."""
    from .recipe import recipe_dict, recipe_patterns

    if patterns is not None and list(patterns) == recipe_patterns(recipe):
        patterns = None
    r = recipe_dict(recipe)
    r["method"] = "transfer"
    r["transfer"] = {"family": CHEAP_FAMILY, "seeds": list(calibrations[0]["seeds"]), "factor": factor,
                     "sources": sorted(c["digest"] for c in calibrations), "covers": list(patterns) if patterns else None}
    return r
