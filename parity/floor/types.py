"""The Floor: per-stage noise floors (or reduced-precision envelopes) of one model, bundle and mode, with
the gate multiplier k and the provenance that produced them. Plain data, JSON round trip, deterministic:
the same inputs give the same JSON text byte for byte (no timestamps, no timings; floats are written with
``repr``, which round-trips exactly).
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from reference.errors import InputError

FLOOR_FORMAT = "tts-parity-floor/1"
KINDS = ("fp32", "bf16", "fp16", "int8")
STATISTICS = ("max_abs", "rel_l2", "envelope")


@dataclass(frozen=True)
class StageFloor:
    """The floor of one stage.

    ``max_abs``, ``rel_l2``: the floor of those statistics (maximum over the fit members times the
    extreme-value margin); ``envelope``: the floor of ``max |diff|`` per block (same margin);
    ``scale``/``block_scale``: ``max |ref|`` over the stage / per block, the unit of the absolute epsilon
    that replaces a floor that is exactly 0; ``shape``: the reference stage's shape (the blocks are cut the
    same way when judging); ``extra``: floors of domain statistics (``f0_max_abs_cents``,
    ``logmel_l1``, ...); ``gate``: the statistics the verdict uses (the others are information);
    ``margin``: the extreme-value margin applied (floor / maximum over the fit members, per statistic);
    ``worst``: the member that set each statistic's maximum."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    envelope: tuple[float, ...]
    scale: float
    block_scale: tuple[float, ...]
    gate: tuple[str, ...] = STATISTICS
    extra: dict = field(default_factory=dict)
    margin: dict = field(default_factory=dict)
    worst: dict = field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return len(self.envelope)

    def value(self, statistic: str) -> float:
        if statistic == "max_abs":
            return self.max_abs
        if statistic == "rel_l2":
            return self.rel_l2
        if statistic == "envelope":
            return max(self.envelope) if self.envelope else 0.0
        return self.extra.get(statistic, math.nan)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "max_abs": self.max_abs, "rel_l2": self.rel_l2,
                "envelope": list(self.envelope), "scale": self.scale, "block_scale": list(self.block_scale),
                "gate": list(self.gate), "extra": dict(sorted(self.extra.items())),
                "margin": dict(sorted(self.margin.items())), "worst": dict(sorted(self.worst.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> "StageFloor":
        return cls(d["name"], tuple(d["shape"]), float(d["max_abs"]), float(d["rel_l2"]),
                   tuple(float(v) for v in d["envelope"]), float(d["scale"]),
                   tuple(float(v) for v in d["block_scale"]), tuple(d.get("gate", STATISTICS)),
                   {k: float(v) for k, v in d.get("extra", {}).items()},
                   {k: float(v) for k, v in d.get("margin", {}).items()}, dict(d.get("worst", {})))


@dataclass(frozen=True)
class Floor:
    """Floors of every stage of one (model, bundle, mode), in pipeline order.

    ``kind``: ``fp32`` (the noise floor of legitimate fp32 re-computations) or ``bf16``/``fp16``/``int8``
    (the expected-error envelope of that precision, by emulation); ``key``: the cache key fields
    (:mod:`parity.floor.cache`) and ``digest`` their hash; ``k``: the gate multiplier and ``k_basis`` how
    it was chosen; ``members``: the ensemble; ``per_member``: ``{member: {stage: [max_abs, rel_l2]}}``, what
    each member contributed; ``recipe``: the estimation settings; ``provenance``: model, weights, noise,
    bundle, mode."""

    kind: str
    key: dict
    digest: str
    k: float
    k_basis: dict
    stages: dict
    members: tuple
    per_member: dict
    recipe: dict
    provenance: dict

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"floor kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def __getitem__(self, stage: str) -> StageFloor:
        return self.stages[stage]

    def __contains__(self, stage: str) -> bool:
        return stage in self.stages

    def contributions(self) -> dict:
        """What each member family contributed: ``{family: {stage: [max_abs, rel_l2]}}``, the maximum over the
        family's members (fit and held-out) of their deviation from the plain reference."""
        fam = {m["name"]: m["family"] for m in self.members}
        out: dict = {}
        for name, stages in self.per_member.items():
            f = out.setdefault(fam.get(name, "?"), {})
            for stage, (ma, rl) in stages.items():
                cur = f.get(stage, [0.0, 0.0])
                f[stage] = [max(cur[0], ma), max(cur[1], rl)]
        return out

    def to_dict(self) -> dict:
        return {"format": FLOOR_FORMAT, "kind": self.kind, "digest": self.digest, "key": self.key, "k": self.k,
                "k_basis": self.k_basis, "recipe": self.recipe, "provenance": self.provenance,
                "members": [dict(m) for m in self.members],
                "stages": [s.to_dict() for s in self.stages.values()], "per_member": self.per_member}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "floor") -> "Floor":
        if d.get("format") != FLOOR_FORMAT:
            raise InputError(f"{source}: not a noise-floor file (format {d.get('format')!r}, expected {FLOOR_FORMAT!r})")
        try:
            stages = {s["name"]: StageFloor.from_dict(s) for s in d["stages"]}
            return cls(d["kind"], dict(d["key"]), str(d["digest"]), float(d["k"]), dict(d["k_basis"]), stages,
                       tuple(dict(m) for m in d["members"]), dict(d["per_member"]), dict(d["recipe"]),
                       dict(d["provenance"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed noise-floor file ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_json(cls, text: str, source: str = "floor") -> "Floor":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{source}: not JSON ({exc})") from exc
        return cls.from_dict(d, source)

    def save(self, path: str | Path) -> Path:
        """Write the JSON (``.gz``: gzip-compressed, compact and still byte-deterministic: no timestamp in the
        gzip header), atomically."""
        from ..outputs import write_output

        path = Path(path)
        if path.suffix == ".gz":
            text = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
            data = gzip.compress(text.encode(), compresslevel=9, mtime=0)
        else:
            data = self.to_json().encode()
        return write_output(path, data)  # atomic: a concurrent reader sees the old file or the new one

    @classmethod
    def load(cls, path: str | Path) -> "Floor":
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: noise-floor file not found")
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a readable noise-floor file ({type(exc).__name__}: {exc})") from exc
        return cls.from_json(text, str(path))
