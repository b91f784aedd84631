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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors")
    return dict(sd)


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
