"""Error statistics of one stage pair (reference, other): what a floor records and what a candidate is
judged by. Pure measurement, no thresholds.

Three statistics per stage, all in float64:

* ``max_abs``: ``max |other - ref|``;
* ``rel_l2``: ``||other - ref|| / ||ref||`` (0 when both are all zero; +inf when only ``ref`` is);
* ``envelope``: ``max |other - ref|`` per block along the stage's time axis. Flow stages (mel, per-block
  DiT outputs) have one block per frame; vocoder stages are cut into as many blocks as the vocoder has mel
  frames (``torch.tensor_split``: equal sizes up to one element, so a block is one mel frame's worth of
  samples, STFT frames or F0 frames); stages without a time axis are one block.

and, for the perceptual view of reduced precision, the domain statistics of ``f0`` (cents over frames
voiced in both, :func:`parity.measure.audio_metrics.f0_metrics`) and of ``audio``/``audio_preclamp`` (log-mel L1
through the pipeline's own mel recipe, :func:`parity.measure.audio_metrics.logmel_distance`).

Non-finite values are never folded away: a pair where either side holds NaN or Inf is ``finite=False``
and its statistics are +inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..stages import is_session_stage, is_vocoder_stage, layout

U32 = 2.0 ** -24  # unit roundoff of float32
TINY = 2.0 ** -126  # smallest normal float32: the scale of an all-zero stage


@dataclass(frozen=True)
class PairStats:
    """The statistics of ``other - ref`` for one stage."""

    max_abs: float
    rel_l2: float
    envelope: tuple[float, ...]
    finite: bool = True
    extra: dict = field(default_factory=dict)  # domain statistics (f0 cents, log-mel L1), when asked for

    def value(self, statistic: str) -> float:
        if statistic == "max_abs":
            return self.max_abs
        if statistic == "rel_l2":
            return self.rel_l2
        if statistic == "envelope":
            return max(self.envelope) if self.envelope else 0.0
        return self.extra.get(statistic, math.nan)


def time_axis(name: str, t: torch.Tensor) -> int | None:
    """The stage's time axis (non-negative), or None for vectors and scalars."""
    lay = layout(name)
    if lay.time_axis is None or t.dim() == 0:
        return None
    ax = lay.time_axis % t.dim() if lay.time_axis < 0 else lay.time_axis
    return ax if ax < t.dim() and t.shape[ax] > 1 else None


def n_blocks(name: str, t: torch.Tensor, n_mel: int | None, samples_per_frame: int | None = None) -> int:
    """How many envelope blocks the stage has: its frames (flow), ``n_mel`` mel frames' worth (vocoder); a streaming
    session's waveforms (``chunk{c}.audio``, ``stream.audio``) one block per ``samples_per_frame`` samples (a mel
    frame's worth: each call emits its own number of frames)."""
    ax = time_axis(name, t)
    if ax is None:
        return 1
    T = int(t.shape[ax])
    if samples_per_frame and is_session_stage(name) and layout(name).kind == "wave":
        return max(1, min(T, T // int(samples_per_frame)))
    if is_vocoder_stage(name) and n_mel:
        return max(1, min(T, int(n_mel)))
    return T


def block_max(x: torch.Tensor, ax: int | None, blocks: int) -> torch.Tensor:
    """``max |x|`` per block along ``ax`` (float64 [blocks])."""
    a = x.abs()
    if ax is None or blocks <= 1:
        return a.reshape(-1).max().reshape(1) if a.numel() else torch.zeros(1, dtype=torch.float64)
    per = a.movedim(ax, -1).reshape(-1, a.shape[ax]).amax(dim=0)
    T = per.numel()
    if blocks >= T:
        return per
    # the blocks of torch.tensor_split: the first T % blocks have one element more
    size, extra = divmod(T, blocks)
    starts = np.arange(blocks) * size + np.minimum(np.arange(blocks), extra)
    return torch.from_numpy(np.maximum.reduceat(per.numpy(), starts))


def stage_scale(name: str, ref: torch.Tensor, blocks: int) -> tuple[float, tuple[float, ...]]:
    """``max |ref|`` over the stage and per block: the unit of the absolute epsilon of a zero floor."""
    r = ref.detach().double()
    if not r.numel():
        return 0.0, tuple(0.0 for _ in range(blocks))
    ax = time_axis(name, r)
    bm = block_max(torch.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0), ax, blocks)
    return float(bm.max()), tuple(float(v) for v in bm)


def pair_stats(name: str, ref: torch.Tensor, other: torch.Tensor, blocks: int, domain: bool = False) -> PairStats:
    """Statistics of ``other - ref`` (same shape). Integer and boolean stages are compared exactly (the
    difference of their values, 0 when equal)."""
    if tuple(ref.shape) != tuple(other.shape):
        raise ValueError(f"stage {name!r}: shapes differ: reference {list(ref.shape)} vs {list(other.shape)}")
    r, o = ref.detach().double(), other.detach().double()
    if not r.numel():
        return PairStats(0.0, 0.0, tuple(0.0 for _ in range(blocks)))
    if not (torch.isfinite(r).all() and torch.isfinite(o).all()):
        return PairStats(math.inf, math.inf, tuple(math.inf for _ in range(blocks)), finite=False)
    d = o - r
    ax = time_axis(name, r)
    env = block_max(d, ax, blocks)
    nd, nr = float(d.norm()), float(r.norm())
    rel = nd / nr if nr > 0 else (0.0 if nd == 0 else math.inf)
    extra = domain_stats(name, r, o) if domain else {}
    return PairStats(float(env.max()), rel, tuple(float(v) for v in env), True, extra)


def domain_stats(name: str, ref: torch.Tensor, other: torch.Tensor) -> dict:
    """Perceptual statistics of the stages they fit: F0 in cents (``f0``), log-mel L1 in nats through the
    pipeline's own mel recipe (``audio``, ``audio_preclamp``). Empty for other stages."""
    from ..measure.domain import domain_statistics

    m = domain_statistics(name, ref, other)
    if name == "f0":
        out = {}
        for key in ("f0_max_abs_cents", "f0_rmse_cents"):
            out[key] = float(m[key]) if m[key] is not None else 0.0  # no frame voiced in both: nothing to judge
        out["f0_voicing_flips"] = float(m["vde_count"])
        return out
    if "logmel_l1" in m:
        return {"logmel_l1": float(m["logmel_l1"]), "logmel_l1_max": float(m["logmel_l1_max"])}
    return {}
