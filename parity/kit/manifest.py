"""The kit on disk: ``manifest.json`` (schema ``tts-parity-kit/1``) and one safetensors file per vector.

Layout of a kit directory::

    KIT/manifest.json
    KIT/vectors/<vector id, '/' written '__'>.safetensors   tensors inputs.<name>, outputs.<name>;
                                                             __metadata__: schema, id, module, weights, attributes

The manifest is plain JSON, complete enough for a test in any language: per vector its module path
(upstream's state-dict key prefix), the weights it reads (keys of ``flow.pt`` or ``hift.pt``), its non-tensor
arguments, and per tensor the key in the vector file, shape, dtype, axes and layout; per output the tolerance
(k, the floors, the limits, what they were measured from). ``tolerance_rule`` states the statistics and the
pass rule in words and formulas. A port's outputs are named ``<vector id>/<output name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reference.errors import InputError

SCHEMA = "tts-parity-kit/1"
MANIFEST = "manifest.json"
VECTOR_DIR = "vectors"

STATISTICS = {
    "max_abs": "max over all elements of |port - reference|, in float64",
    "rel_l2": "sqrt(sum (port - reference)^2) / sqrt(sum reference^2), in float64 (0 when both are all zero)",
}
RULE = ("an output passes when it has the manifest's shape, every element is finite, and for each statistic in "
        "'gate': value <= limit, where limit = k * floor and a floor of exactly 0 is replaced by the zero-floor "
        "unit (max_abs: 2^-24 * scale, scale = max |reference|; rel_l2: 2^-24); a vector passes when all its "
        "outputs pass. 'ratio' (reported as 'N x floor') = the largest value / (limit / k) over the gated "
        "statistics. Compare in float64 after casting the port's output to float64.")


def vector_path(unit_id: str) -> str:
    """The vector file of a unit, relative to the kit directory."""
    return f"{VECTOR_DIR}/{unit_id.replace('/', '__')}.safetensors"


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def tensor_entry(spec, key: str, t: torch.Tensor) -> dict:
    axes = spec.axis_names
    if not axes and t.dim():  # a scalar stored with a unit axis (the solver's dt after step 1 is [1])
        axes = ["element"] * t.dim()
    if len(axes) != t.dim():
        raise RuntimeError(f"kit: tensor {key} is {list(t.shape)}, its spec names axes {axes}")
    return {"name": spec.name, "key": key, "shape": [int(s) for s in t.shape], "dtype": dtype_name(t),
            "axes": axes, "layout": spec.layout, "note": spec.note}


def read_manifest(kit: str | Path) -> dict:
    """The manifest of a kit directory (or of a manifest file), checked for the schema and its required keys."""
    kit = Path(kit)
    path = kit / MANIFEST if kit.is_dir() else kit
    if not path.exists():
        raise InputError(f"{kit}: not a port kit (no {MANIFEST}; make one with parity kit --out DIR)")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable kit manifest ({exc})") from exc
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        got = m.get("schema") if isinstance(m, dict) else type(m).__name__
        raise InputError(f"{path}: kit manifest schema {got!r} is not supported (expected {SCHEMA})")
    vecs = m.get("vectors")
    if not isinstance(vecs, list) or not vecs:
        raise InputError(f"{path}: the manifest lists no vectors")
    for i, v in enumerate(vecs):
        for key in ("id", "file", "inputs", "outputs"):
            if key not in v:
                raise InputError(f"{path}: vector {i} ({v.get('id', '?')}) has no '{key}'")
    return m


def kit_dir(kit: str | Path) -> Path:
    kit = Path(kit)
    return kit if kit.is_dir() else kit.parent


def load_vector(kit: str | Path, entry: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(inputs, outputs) of one manifest vector, by name; every tensor the manifest lists must be there with
    its listed shape and dtype."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = kit_dir(kit) / entry["file"]
    if not path.exists():
        raise InputError(f"{path}: vector file of {entry['id']} is missing from the kit")
    try:
        tens = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable safetensors vector ({exc})") from exc
    out: tuple[dict, dict] = ({}, {})
    for side, d in (("inputs", out[0]), ("outputs", out[1])):
        for t in entry[side]:
            if t["key"] not in tens:
                raise InputError(f"{path}: tensor '{t['key']}' listed in the manifest is missing")
            v = tens[t["key"]]
            if list(v.shape) != list(t["shape"]) or dtype_name(v) != t["dtype"]:
                raise InputError(f"{path}: tensor '{t['key']}' is {dtype_name(v)} {list(v.shape)}, the manifest "
                                 f"says {t['dtype']} {t['shape']}")
            d[t["name"]] = v
    return out


def output_keys(manifest: dict) -> dict[str, tuple[dict, dict]]:
    """``<vector id>/<output>`` -> (vector entry, output entry): the names a port's outputs go by."""
    out = {}
    for v in manifest["vectors"]:
        for o in v["outputs"]:
            out[f"{v['id']}/{o['name']}"] = (v, o)
    return out
