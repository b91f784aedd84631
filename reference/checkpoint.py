"""Checkpoint reading and strict loading with errors that name every offending key.

``flow.pt``/``hift.pt`` are read with ``torch.load(weights_only=True)``; ``*.safetensors`` with
safetensors. Loading is always strict: missing keys, unexpected keys and shape mismatches are
collected and reported together in one :class:`CheckpointError` (never ``strict=False`` silence).
Tensors stored in fp16/bf16 are upcast to fp32 and the original dtype is kept for the provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import CheckpointError


def _not_a_checkpoint(path: Path, head: bytes, size: int) -> str | None:
    """Why the file cannot be a checkpoint, judged from its first bytes (None: it may be one)."""
    if size == 0:
        return "empty file (0 bytes), not a checkpoint"
    if head.startswith(b"version https://git-lfs"):
        return ("a Git LFS pointer file, not the checkpoint itself (fetch the weights: git lfs pull, or download "
                "the file)")
    lead = head.lstrip()[:15].lower()
    if lead.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML page, not a checkpoint (a failed download? open it in a browser)"
    if path.suffix == ".safetensors":
        return None  # safetensors: an 8-byte header length and JSON; its reader says what is wrong
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # a torch.save zip archive, or a legacy pickle
    return (f"not a PyTorch checkpoint: a torch.save file is a zip archive (starting with 'PK') or a pickle "
            f"(starting with 0x80); this one starts with {head[:12]!r}")


def _load_error(path: Path, head: bytes, exc: Exception) -> str:
    """``torch.load``'s failure, on one line, in terms of the file."""
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        why = detail[0].strip() if detail and detail[0].strip() else "objects other than tensors"
        return (f"holds Python objects besides tensors, which a weights-only load refuses ({why}); a checkpoint "
                f"is a mapping of parameter names to tensors")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    kind = "zip archive" if head.startswith(b"PK\x03\x04") else "pickle"
    return f"damaged or truncated checkpoint ({kind}: {type(exc).__name__}: {first[:160]})"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from exc
    why = _not_a_checkpoint(path, head, size)
    if why:
        raise CheckpointError(f"{path}: {why}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if path.suffix == ".safetensors":
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({type(exc).__name__}: "
                                  f"{first[:160]})") from exc
        raise CheckpointError(f"{path}: {_load_error(path, head, exc)}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: holds {_a(type(sd).__name__)}, not a mapping of tensor names to tensors")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors; {len(bad)} entr"
                              f"{'y is' if len(bad) == 1 else 'ies are'} not tensors (first: {str(bad[0])!r}: "
                              f"{type(sd[bad[0]]).__name__})")
    return dict(sd)


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def stored_dtypes(sd: dict[str, torch.Tensor]) -> list[str]:
    return sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})


def strict_load(module: nn.Module, sd: dict[str, torch.Tensor], *, source: str,
                optional: Callable[[str], bool] = lambda k: False, what: str = "model") -> None:
    """Copy ``sd`` into ``module``'s parameters and persistent buffers, all or nothing.

    ``optional(key)`` marks model keys that may be absent (e.g. the deterministic ``inv_freq`` buffer):
    when present they are shape-checked and loaded, when absent the module's own value stays.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not optional(k)]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [(k, list(sd[k].shape), list(own[k].shape)) for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    not_float = [(k, sd[k].dtype) for k in own if k in sd and own[k].is_floating_point()
                 and not sd[k].is_floating_point()]
    if missing or unexpected or bad_shape or not_float:
        lines = [f"{source}: checkpoint does not match the {what} "
                 f"({len(missing)} missing, {len(unexpected)} unexpected, {len(bad_shape)} wrong shape)"]

        def listing(title, items, fmt):
            if items:
                shown = items[:20]
                lines.append(f"  {title}: " + "; ".join(fmt(i) for i in shown)
                             + (f"; ... and {len(items) - 20} more" if len(items) > 20 else ""))

        listing("missing keys", missing, str)
        listing("unexpected keys", unexpected, str)
        listing("wrong shapes", bad_shape, lambda x: f"{x[0]} is {x[1]}, expected {x[2]}")
        listing("wrong dtypes", not_float, lambda x: f"{x[0]} is {x[1]}, expected floating point")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for k, v in own.items():
            if k in sd:
                v.copy_(sd[k].to(v.dtype))
