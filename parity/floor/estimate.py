"""Estimating a floor: run the ensemble on the reference, measure every stage, aggregate, choose k.

:func:`estimate_floor` gives the fp32 noise floor of (model, bundle, mode); :func:`estimate_envelope` the
expected-error envelope of a reduced precision (bf16/fp16 by chop emulation, int8 by fake quantisation).
Both look the floor up in a :class:`~parity.floor.cache.FloorCache` first when given one, and store it
there after computing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..stages import FLOOR_PATTERNS, SESSION_PATTERNS, is_block_stage, is_vocoder_stage, sort_stages
from . import aggregate as AG
from . import glitch as G
from .cache import FloorCache, bundle_hash, make_key
from .chop import PrecisionSpec
from .batched import batch_groups
from .members import Member, chop_members, fp32_members, run_members, run_reference
from .mca import U
from .stats import n_blocks, pair_stats
from .transfer import envelope_calibration
from .types import Floor

RECIPE_VERSION = 2  # 2: the floor covers the DiT blocks and the HiFT internals (FLOOR_PATTERNS)
DOMAIN_GATES = {"f0": ("f0_max_abs_cents", "f0_rmse_cents"), "audio": ("logmel_l1", "logmel_l1_max"),
                "audio_preclamp": ("logmel_l1", "logmel_l1_max")}
SATURATED_REL_L2 = 0.1  # reduced precision: a sample-level vocoder stage whose rounding-only error is this large
#                         measures phase drift, not arithmetic; it is reported, and judged by F0 and log-mel


@dataclass(frozen=True)
class Recipe:
    """Estimation settings (all part of the cache key). ``n_seeds`` fit and ``n_held_out`` held-out seeds per
    random family; ``families`` of the fp32 ensemble; ``patterns``: the stages recorded (None:
    :data:`parity.stages.FLOOR_PATTERNS`, every stage a single call can capture)."""

    n_seeds: int = 8
    n_held_out: int = 4
    families: tuple[str, ...] = ("threads", "attention", "mca-modules", "mca-ops")
    patterns: tuple[str, ...] | None = None
    # how the members run, not what they are (not in the key, like the CPU: a batched member moves the last bits
    # of its sequential twin by the larger batch's kernel blocking, a legitimate re-computation of its own;
    # measured in tests/test_floor_batched.py): seeded members of one family per forward (1: one by one)
    batch: int = 12

    def to_dict(self) -> dict:
        """The settings that enter the cache key (``batch`` does not: see the field)."""
        return {"version": RECIPE_VERSION, "n_seeds": self.n_seeds, "n_held_out": self.n_held_out,
                "families": list(self.families), "patterns": list(self.patterns) if self.patterns else None,
                "eps": {"float32": U[torch.float32], "float64": U[torch.float64]}, "ev_p": AG.EV_P,
                "k_alpha": AG.K_ALPHA, "k_min": AG.K_MIN, "saturated_rel_l2": SATURATED_REL_L2}


def covers(tensors: dict, patterns) -> bool:
    """Whether ``tensors`` hold a stage for every capture pattern (a run recorded with at least ``patterns``)."""
    import fnmatch

    return all(any(fnmatch.fnmatchcase(n, p) for n in tensors) for p in patterns)


def recipe_patterns(recipe: Recipe, session=None) -> list[str]:
    """The capture patterns of the floor's runs (a streaming session's: the session's default capture)."""
    if recipe.patterns:
        return list(recipe.patterns)
    return list(SESSION_PATTERNS) if session is not None else list(FLOOR_PATTERNS)


def recipe_dict(recipe: Recipe, spec: PrecisionSpec | None = None) -> dict:
    """The recipe as it enters the cache key (with the precision spec of an envelope)."""
    rdict = recipe.to_dict()
    if spec is not None:
        rdict["precision"] = spec.to_dict()
    return rdict


def session_key(model, session) -> dict | None:
    """The session part of a floor's key for :class:`reference.session.SessionOptions` ``session`` (None: a single
    call): the kind and the options resolved for the model, as a session trace records them."""
    if session is None:
        return None
    return {"kind": "streaming", "options": session.resolve(model.cfg).to_dict()}


def floor_key(model, inputs: dict, *, kind: str = "fp32", spec: PrecisionSpec | None = None, streaming: bool = False,
              finalize: bool = True, recipe: Recipe | None = None, recipe_override: dict | None = None,
              session=None) -> tuple[dict, str]:
    """(key fields, digest) of the floor :func:`estimate_floor` / :func:`estimate_envelope` would compute for
    these arguments, without computing it (``recipe_override``: the recipe dict of another method, e.g. a
    transferred floor's; ``session``: the SessionOptions of a streaming session)."""
    if session is not None:
        streaming, finalize = True, True
    meta = model.provenance(streaming=streaming, finalize=finalize)
    return make_key(meta, inputs, streaming=streaming, finalize=finalize, kind=kind,
                    recipe=recipe_override or recipe_dict(recipe or Recipe(), spec), session=session_key(model, session))


@dataclass
class EstimateLog:
    """What a computation cost (not part of the floor, which stays deterministic)."""

    seconds: float = 0.0
    from_cache: bool = False
    member_seconds: dict = field(default_factory=dict)


def _provenance(meta: dict, inputs: dict, bundle_name: str | None, n_mel: int, spec: PrecisionSpec | None,
                batch: int = 1, session: dict | None = None) -> dict:
    out = {"members_per_forward": batch, "model": meta.get("model"), "config": meta.get("config"), "weights_sha256": meta.get("weights_sha256"),
           "noise": (meta.get("noise") or {}).get("fingerprint"), "bundle": bundle_name,
           "bundle_sha256": bundle_hash(inputs), "streaming": meta.get("streaming"), "finalize": meta.get("finalize"),
           "n_timesteps": meta.get("n_timesteps"), "torch": torch.__version__, "n_mel_frames": n_mel,
           "baseline": "the reference, 1 torch thread, explicit attention"}
    if spec is not None:
        out["precision"] = spec.to_dict()
    if session is not None:
        out["session"] = session
    return out


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
                  _provenance(meta, inputs, bundle_name, n_mel or 0, spec, recipe.batch, skey), cal)
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
