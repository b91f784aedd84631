"""Layout normalisation of a candidate tensor onto the reference's layout, only when unambiguous.

Applied in this order, each one listed in the result:

1. singleton dimensions: ``[1, T]`` vs ``[1, 1, T]`` vs ``[T, 1]`` (same elements, same order);
2. transposition: ``[B, T, C]`` vs ``[B, C, T]`` when the non-singleton sizes are all distinct (a
   square tensor is never transposed: there is no way to tell);
3. prompt-inclusive mel: a ``flow_mel`` that is ``prompt_frames`` longer than the reference's is
   the un-sliced CFM output; the prompt part is dropped (the prompt length must be known);
4. a length mismatch left after that is a finding, never a silent truncation; ``allow_trim`` trims
   both sides to the shorter length and says so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..stages import layout


@dataclass
class Aligned:
    ref: torch.Tensor | None
    cand: torch.Tensor | None
    notes: list[dict] = field(default_factory=list)
    problem: dict | None = None  # {"code": "length_mismatch"|"shape_mismatch", "message": ...}


def _core(shape) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def _fit(ref: torch.Tensor, cand: torch.Tensor, stage: str) -> tuple[torch.Tensor | None, list[dict]]:
    """cand reshaped/permuted to ref's shape, or None."""
    notes = []
    if tuple(cand.shape) == tuple(ref.shape):
        return cand, notes
    rc, cc = _core(ref.shape), _core(cand.shape)
    if rc == cc:
        notes.append({"stage": stage, "kind": "squeeze",
                      "detail": f"singleton dims: {list(cand.shape)} -> {list(ref.shape)}"})
        return cand.reshape(ref.shape), notes
    if len(rc) == len(cc) and sorted(rc) == sorted(cc) and len(set(cc)) == len(cc) and 1 < len(cc) <= 4:
        squeezed = cand.reshape(cc)
        for perm in itertools.permutations(range(len(cc))):
            if tuple(cc[p] for p in perm) == rc:
                notes.append({"stage": stage, "kind": "transpose",
                              "detail": f"{list(cand.shape)} -> {list(ref.shape)} (permutation {list(perm)} of the "
                                        f"non-singleton dims)"})
                return squeezed.permute(*perm).reshape(ref.shape), notes
    return None, notes


def align(stage: str, ref: torch.Tensor, cand: torch.Tensor, *, prompt_frames: int | None = None,
          allow_trim: bool = False) -> Aligned:
    fitted, notes = _fit(ref, cand, stage)
    if fitted is not None:
        return Aligned(ref, fitted, notes)
    lay = layout(stage)
    rc, cc = _core(ref.shape), _core(cand.shape)
    # time-length differences: an orientation of cand that matches ref on every axis but time
    if lay.time_axis is not None and ref.dim() > 0:
        t_ax = lay.time_axis % ref.dim()
        T_ref = ref.shape[t_ax]
        ref_others = [s for i, s in enumerate(ref.shape) if i != t_ax]
        same = t_ax if cand.dim() == ref.dim() else None
        # the axis at the reference's time position first: an ambiguous (square) candidate is never transposed
        for c_ax in sorted(range(cand.dim()), key=lambda a: a != same):
            T_c = cand.shape[c_ax]
            c_others = [s for i, s in enumerate(cand.shape) if i != c_ax]
            if T_c == T_ref or _core(c_others) != _core(ref_others):
                continue
            cand_r = cand.movedim(c_ax, -1).reshape(ref_others + [T_c]).movedim(-1, t_ax)
            ref_pos = [i for i, s in enumerate(ref.shape) if s != 1 or i == t_ax].index(t_ax)
            c_pos = [i for i, s in enumerate(cand.shape) if s != 1 or i == c_ax].index(c_ax)
            if ref_pos != c_pos:
                notes.append({"stage": stage, "kind": "transpose",
                              "detail": f"{list(cand.shape)} -> {list(cand_r.shape)} (time axis moved)"})
            elif tuple(cand.shape) != tuple(cand_r.shape):
                notes.append({"stage": stage, "kind": "squeeze",
                              "detail": f"singleton dims: {list(cand.shape)} -> {list(cand_r.shape)}"})
            if prompt_frames and stage == "flow_mel" and T_c == T_ref + prompt_frames:
                notes.append({"stage": stage, "kind": "prompt-slice",
                              "detail": f"candidate holds the prompt: dropped its first {prompt_frames} frames "
                                        f"({T_c} -> {T_ref})"})
                return Aligned(ref, cand_r.narrow(t_ax, prompt_frames, T_ref), notes)
            if prompt_frames and stage == "flow_mel" and T_ref == T_c + prompt_frames:
                notes.append({"stage": stage, "kind": "prompt-slice",
                              "detail": f"reference holds the prompt: dropped its first {prompt_frames} frames"})
                return Aligned(ref.narrow(t_ax, prompt_frames, T_c), cand_r, notes)
            msg = (f"length differs along time: reference {T_ref}, candidate {T_c} "
                   f"(shapes {list(ref.shape)} vs {list(cand.shape)})")
            if allow_trim:
                n = min(T_ref, T_c)
                notes.append({"stage": stage, "kind": "trim", "detail": f"--allow-trim: both cut to {n} along time"})
                return Aligned(ref.narrow(t_ax, 0, n), cand_r.narrow(t_ax, 0, n), notes)
            return Aligned(None, None, notes, {"code": "length_mismatch", "message": msg,
                                               "ref_shape": list(ref.shape), "cand_shape": list(cand.shape)})
    return Aligned(None, None, notes, {"code": "shape_mismatch",
                                      "message": f"shapes cannot be aligned: reference {list(ref.shape)}, candidate "
                                                 f"{list(cand.shape)} (core {list(rc)} vs {list(cc)})",
                                      "ref_shape": list(ref.shape), "cand_shape": list(cand.shape)})
