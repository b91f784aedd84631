"""A floor's recipe and key: the estimation settings (:class:`Recipe`, all of them in the cache key), the stages
its runs record, the key a floor of (model, bundle, mode, recipe) has without computing it, and the provenance a
floor records. Shared by the full ensemble (:mod:`.estimate`) and the transferred floor (:mod:`.transfer`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

from ..stages import FLOOR_PATTERNS, SESSION_PATTERNS
from . import aggregate as AG
from .cache import bundle_hash, make_key
from .chop import PrecisionSpec
from .mca import U

RECIPE_VERSION = 2  # 2: the floor covers the DiT blocks and the HiFT internals (FLOOR_PATTERNS)
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


def provenance(meta: dict, inputs: dict, bundle_name: str | None, n_mel: int, spec: PrecisionSpec | None,
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
