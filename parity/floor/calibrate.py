"""The calibration of a transferred floor (:mod:`.transfer`): per stage and statistic, how far a full fp32 floor
reaches beyond the mean of its first few op-level Monte-Carlo members (``CHEAP_SEEDS``), read from the full floor
when it is computed or cached; and ``TRANSFER_FACTOR``, the measured worst under-coverage of a transferred floor."""

from __future__ import annotations

import torch

from . import aggregate as AG
from .members import Member
from .types import Floor

CHEAP_FAMILY = "mca-ops"
CHEAP_SEEDS = (0, 1, 2)  # fit seeds of every recipe: the calibration reads them from the full floor's table
# the measured worst ratio full floor / transferred floor (factor 1) over the 12 ordered pairs of the tiny fixture
# bundles, both modes: 2.32 (the envelope of step6.v2, short -> medium; max_abs and rel_l2 at most 1.82), rounded
# up; benchmarks/bench_floor_transfer.py, docs/benchmarks.md "Floors for new bundles"
TRANSFER_FACTOR = 2.4
STATS = ("max_abs", "rel_l2")


def cheap_members(seeds=CHEAP_SEEDS) -> list[Member]:
    return [Member(f"{CHEAP_FAMILY}#{s}", CHEAP_FAMILY, seed=s) for s in seeds]


def _smooth(env: torch.Tensor) -> torch.Tensor:
    if AG.SMOOTH_BLOCKS and env.numel() > 1:
        w = 2 * AG.SMOOTH_BLOCKS + 1
        return torch.nn.functional.max_pool1d(env.reshape(1, 1, -1), w, 1, AG.SMOOTH_BLOCKS).reshape(-1)
    return env


def cheap_envelope(stats: list, name: str) -> torch.Tensor:
    """The few members' mean envelope of one stage, smoothed as a floor's (``stats``: their PairStats by stage)."""
    return _smooth(torch.tensor([list(s[name].envelope) for s in stats], dtype=torch.float64).mean(dim=0))


def envelope_calibration(stages: dict, stats: dict, seeds=CHEAP_SEEDS) -> dict:
    """Per stage: the largest ratio over the blocks of the full floor's envelope to the cheap members' smoothed
    mean envelope (blocks where both are non-zero). What :func:`estimate._estimate` records in an fp32 floor's
    ``calibration``; empty when the cheap members are not among the fit members."""
    names = [m.name for m in cheap_members(seeds)]
    if any(n not in stats for n in names):
        return {}
    out = {}
    for name, sf in stages.items():
        mine = cheap_envelope([stats[n] for n in names], name)
        full = torch.tensor(sf.envelope, dtype=torch.float64)
        ok = (full > 0) & (mine > 0)
        out[name] = float((full[ok] / mine[ok]).max()) if bool(ok.any()) else None
    return {"family": CHEAP_FAMILY, "seeds": list(seeds), "statistic": "mean", "envelope": out}


def calibration(floor: Floor, seeds=CHEAP_SEEDS) -> dict:
    """Per stage and statistic: the full floor / the mean of the cheap members (None where they are all 0), the
    envelope's factor (the floor's recorded :func:`envelope_calibration`), and the full floor relative to the
    reference's scale (the fallback of stages the cheap members leave unchanged). Plus the floor's k, digest,
    bundle and mode. ValueError for a floor without what it takes (not fp32, no cheap members, no calibration)."""
    names = [m.name for m in cheap_members(seeds)]
    missing = [n for n in names if n not in floor.per_member]
    env_cal = (floor.calibration or {}).get("envelope")
    if floor.kind != "fp32" or missing or not env_cal or list(floor.calibration.get("seeds", [])) != list(seeds):
        raise ValueError(f"floor {floor.digest[:12]}: not an fp32 ensemble floor with its members "
                         f"{', '.join(names)} and their envelope calibration (recompute it with this version)")
    stages = {}
    for name, sf in floor.stages.items():
        row = {}
        for i, st in enumerate(STATS):
            full = sf.value(st)
            cheap = sum(floor.per_member[m][name][i] for m in names) / len(names)
            row[st] = full / cheap if cheap > 0 else None
            row[f"{st}_rel"] = (full / sf.scale if sf.scale > 0 else 0.0) if st == "max_abs" else full
        row["envelope"] = env_cal.get(name)
        stages[name] = row
    prov = floor.provenance
    core = (floor.k_basis or {}).get("core") or {}
    return {"digest": floor.digest, "bundle": prov.get("bundle"), "bundle_sha256": floor.key.get("bundle"),
            "k": floor.k, "k_core": core.get("k", floor.k), "seeds": list(seeds),
            "streaming": prov.get("streaming"), "finalize": prov.get("finalize"), "stages": stages}


def combine(cals: list[dict]) -> dict:
    """Stage by stage the largest factor of several calibrations (the conservative one)."""
    out: dict = {}
    for c in cals:
        for name, row in c["stages"].items():
            cur = out.setdefault(name, {})
            for k, v in row.items():
                if v is not None and (cur.get(k) is None or v > cur[k]):
                    cur[k] = v
                else:
                    cur.setdefault(k, None)
    return out
