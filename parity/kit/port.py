"""The reference as a port of itself: run every vector of a kit through a model's own modules and save the
outputs under the kit's names (``<vector id>/<output>``), one safetensors file.

This is what a port's test does, in Python: read the vector's inputs, call the module, save (or compare) the
outputs. ``parity kit check`` on the result of the reference must pass; a model with one module changed (an
injected fault) must fail at that module's vector. The model must have the reference's module tree
(:class:`reference.model.Token2Wav`, or a copy with modules or methods replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from reference.errors import InputError

from . import manifest as M
from .units import units_for


def run_port(model, kit: str | Path, out: str | Path | None = None, *, only: list[str] | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """``{"<vector id>/<output>": tensor}`` computed by ``model`` from every vector's inputs (``only``: these
    ids); written to ``out`` (safetensors) when given."""
    man = M.read_manifest(kit)
    units = {u.id: u for u in units_for(model.cfg)}
    results: dict[str, torch.Tensor] = {}
    for v in man["vectors"]:
        if only and v["id"] not in only:
            continue
        unit = units.get(v["id"])
        if unit is None:
            raise InputError(f"{kit}: vector {v['id']} is not a unit of this model's configuration "
                             f"({model.cfg.name}); was the kit made for another model?")
        inputs, _ = M.load_vector(kit, v)
        attrs = {a: v["attributes"][a] for a in unit.attributes}
        outs = unit.call(model, inputs, attrs)
        for name, t in outs.items():
            results[f"{v['id']}/{name}"] = t.detach().contiguous()
        if log:
            log(f"ran {v['id']}")
    if out is not None:
        from safetensors.torch import save

        from ..outputs import write_output

        write_output(out, save(results, metadata={"producer": "tts-parity kit run", "model": model.model_id}), "--out")
    return results
