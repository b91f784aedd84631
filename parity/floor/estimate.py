"""Estimating a floor: run the ensemble on the reference, measure every stage, aggregate, choose k.

:func:`estimate_floor` gives the fp32 noise floor of (model, bundle, mode); :func:`estimate_envelope` the
expected-error envelope of a reduced precision (bf16/fp16 by chop emulation, int8 by fake quantisation).
Both look the floor up in a :class:`~parity.floor.cache.FloorCache` first when given one, and store it
there after computing it.
"""

from __future__ import annotations

import time

from ..stages import is_block_stage, is_vocoder_stage, sort_stages
from . import aggregate as AG
from . import glitch as G
from .cache import FloorCache, make_key
from .chop import PrecisionSpec
from .batched import batch_groups
from .members import Member, chop_members, fp32_members, run_members, run_reference
from .stats import n_blocks, pair_stats
from .calibrate import envelope_calibration
from .recipe import (RECIPE_VERSION, SATURATED_REL_L2, EstimateLog, Recipe, covers, floor_key,  # noqa: F401
                     provenance, recipe_dict, recipe_patterns, session_key)
from .types import Floor

DOMAIN_GATES = {"f0": ("f0_max_abs_cents", "f0_rmse_cents"), "audio": ("logmel_l1", "logmel_l1_max"),
                "audio_preclamp": ("logmel_l1", "logmel_l1_max")}


def _estimate(model, inputs: dict, kind: str, members: list[Member], spec: PrecisionSpec | None, *, streaming: bool,
              finalize: bool, recipe: Recipe, cache: FloorCache | None, bundle_name: str | None,
              log: EstimateLog | None, base: dict | None = None, session=None) -> Floor:
    t0 = time.perf_counter()
    log = log if log is not None else EstimateLog()
    if session is not None:
        streaming, finalize = True, True
    meta = model.provenance(streaming=streaming, finalize=finalize)
    rdict = recipe_dict(recipe, spec)
    skey = session_key(model, session)
    key, digest = make_key(meta, inputs, streaming=streaming, finalize=finalize, kind=kind, recipe=rdict,
                           session=skey)
    if cache is not None:
        hit = cache.get(digest)
        if hit is not None:
            log.from_cache, log.seconds = True, time.perf_counter() - t0
            return hit
    patterns = recipe_patterns(recipe, session)
    if base is not None and not covers(base, patterns):
        base = None  # a reference captured without some of the floor's stages (the blocks): run the plain one
    if base is None:
        base, log.member_seconds["plain"] = run_reference(model, inputs, streaming=streaming, finalize=finalize,
                                                          patterns=patterns, session=session)
    else:
        log.member_seconds["plain"] = 0.0  # the comparison's own reference run, reused
    base = {n: base[n] for n in sort_stages(base)}
    n_mel = int(base["flow_mel"].shape[-1]) if "flow_mel" in base else None
    spf = int(model.cfg.hift.hop_samples)
    blocks = {n: n_blocks(n, t, n_mel, spf) for n, t in base.items()}
    domain = kind != "fp32"
    stats: dict = {}
    kept: dict = {}  # tensors of the members the k choice re-judges (held-out and deterministic ones)
    glitch_scores: dict = {}  # a session's fit members' chunk-boundary scores (parity.floor.glitch)
    sr = int(model.cfg.sample_rate)
    for group in batch_groups(members, spec, recipe.batch):
        outs, sec = run_members(model, inputs, group, base, streaming=streaming, finalize=finalize, patterns=patterns,
                                spec=spec, session=session)
        for m, tens in zip(group, outs):
            log.member_seconds[m.name] = sec / len(group)
            missing = [n for n in base if n not in tens]
            if missing:
                raise RuntimeError(f"floor member {m.name} did not record {', '.join(missing[:5])}")
            stats[m.name] = {n: pair_stats(n, base[n], tens[n], blocks[n], domain=domain and n in DOMAIN_GATES)
                             for n in base}
            if m.role == "held-out" or m.seed is None:  # own copies: a batched member's stages are views of its batch
                kept[m.name] = {n: t.clone() if len(group) > 1 else t for n, t in tens.items()}
            if session is not None and m.role == "fit":
                glitch_scores[m.name] = G.scores(tens, base, sr)
    gates = _gates(kind, base, stats, members)
    stages = AG.build_stages(base, stats, members, gates, blocks)
    core = {n: sf for n, sf in stages.items() if not is_block_stage(n)}
    samples, samples_core = _k_samples(base, stages, stats, members, kept, gates, blocks, core)
    k, basis = AG.choose_k(samples)
    if len(core) < len(stages):  # k for a comparison without the DiT blocks and the HiFT internals: its own samples
        kc, bc = AG.choose_k(samples_core)
        basis["core"] = {"k": kc, "stages": "every stage but the DiT blocks and the HiFT internals",
                         **{x: bc[x] for x in ("largest", "gumbel_quantile", "n_samples", "worst")}}
    per_member = {m.name: {n: [s.max_abs, s.rel_l2] for n, s in stats[m.name].items()} for m in members}
    cal = envelope_calibration(stages, stats) if kind == "fp32" else {}
    if session is not None:
        cal = dict(cal, glitch=G.glitch_floor(base, glitch_scores, members, sr))
    floor = Floor(kind, key, digest, k, basis, stages, tuple(m.to_dict() for m in members), per_member, rdict,
                  provenance(meta, inputs, bundle_name, n_mel or 0, spec, recipe.batch, skey), cal)
    if cache is not None:
        cache.put(floor)
    log.seconds = time.perf_counter() - t0
    return floor


def _gates(kind: str, base: dict, stats: dict, members: list[Member]) -> dict:
    """Gated statistics per stage: everything for fp32; for reduced precision, F0 and audio by their domain
    statistics, and sample-level vocoder stages only while their rounding-only rel_l2 stays below
    SATURATED_REL_L2 (fit members' maximum)."""
    full = ("max_abs", "rel_l2", "envelope")
    if kind == "fp32":
        return {n: full for n in base}
    fit = [m.name for m in members if m.role == "fit"]
    out = {}
    for n in base:
        if n in DOMAIN_GATES:
            out[n] = DOMAIN_GATES[n]
        elif is_vocoder_stage(n) and max(stats[m][n].rel_l2 for m in fit) >= SATURATED_REL_L2:
            out[n] = ()
        else:
            out[n] = full
    return out


def _k_samples(base, stages, stats, members, kept, gates, blocks, core=None) -> tuple[list[dict], list[dict]]:
    """The held-out samples of the k choice over all ``stages`` and over the ``core`` stages (one ratio table per
    sample serves both; a member against the plain run reuses its statistics)."""
    samples, samples_core = [], []

    def add(label, table, stg):
        for out, sub in ((samples, stg), (samples_core, core if core is not None else stg)):
            r, st, stat = AG.max_ratio(sub, None, None, table=table)
            out.append({"sample": label, "ratio": r, "stage": st, "statistic": stat})

    held = [m for m in members if m.role == "held-out"]
    for m in held:
        add(f"{m.name} vs plain", AG.stage_ratios(stages, base, kept[m.name], stats[m.name]), stages)
    by_fam: dict = {}
    for m in held:
        by_fam.setdefault(m.family, []).append(m.name)
    for fam, names in by_fam.items():
        for a, b in zip(names, names[1:] + names[:1]):
            if a != b:
                add(f"{b} vs {a}", AG.stage_ratios(stages, kept[a], kept[b]), stages)
    for m in members:
        if m.role == "fit" and m.seed is None and m.name in kept:
            rest = [x for x in members if x.name != m.name]
            loo = {n: sf for n, sf in AG.build_stages(base, stats, rest, gates, blocks).items() if n in stages}
            add(f"{m.name} left out", AG.stage_ratios(loo, base, kept[m.name], stats[m.name]), loo)
    return samples, samples_core


def estimate_floor(model, inputs: dict, *, streaming: bool = False, finalize: bool = True,
                   recipe: Recipe | None = None, cache: FloorCache | None = None, bundle_name: str | None = None,
                   log: EstimateLog | None = None, base: dict | None = None, session=None) -> Floor:
    """The fp32 noise floor of ``model`` (a :class:`reference.model.Token2Wav`) on ``inputs`` (a loaded
    bundle) in one mode. ``base``: the plain reference run's stages when the caller already has them (recorded
    with the recipe's patterns; reused instead of run again). ``session``: the
    :class:`reference.session.SessionOptions` of a streaming session: every member runs the whole chunk loop, and
    the floor covers every call's stages (``chunk{c}.*``) and the stream (``stream.*``)."""
    recipe = recipe or Recipe()
    members = fp32_members(recipe.n_seeds, recipe.n_held_out, recipe.families)
    return _estimate(model, inputs, "fp32", members, None, streaming=streaming, finalize=finalize, recipe=recipe,
                     cache=cache, bundle_name=bundle_name, log=log, base=base, session=session)


def estimate_envelope(model, inputs: dict, spec: PrecisionSpec, *, streaming: bool = False, finalize: bool = True,
                      recipe: Recipe | None = None, cache: FloorCache | None = None, bundle_name: str | None = None,
                      log: EstimateLog | None = None, base: dict | None = None) -> Floor:
    """The expected-error envelope of the reduced precision ``spec`` (see :mod:`parity.floor.chop`):
    round to nearest plus stochastic-rounding seeds, aggregated and k-chosen like the fp32 floor."""
    recipe = recipe or Recipe()
    members = chop_members(spec.fmt, recipe.n_seeds, recipe.n_held_out)
    return _estimate(model, inputs, spec.fmt, members, spec, streaming=streaming, finalize=finalize, recipe=recipe,
                     cache=cache, bundle_name=bundle_name, log=log, base=base)
