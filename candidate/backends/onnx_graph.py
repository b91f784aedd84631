"""The estimator's ONNX graph file: whether the optional extra is installed, what a graph file is (inputs, outputs,
opset, op counts) and whether it is an estimator graph (upstream's export contract). Used by the export
(:mod:`.onnx_export`) and by the ONNX Runtime backend (:mod:`.ort`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hashlib

import numpy as np

from reference.errors import InputError

# the estimator graph's contract (upstream's cosyvoice/bin/export_onnx.py): its inputs, the optional attention
# mask input of an export with --mask-input, its output
INPUT_NAMES = ("x", "mask", "mu", "t", "spks", "cond")
MASK_INPUT = "attn_mask"
OUTPUT_NAME = "estimator_out"

# ONNX TensorProto element types
ELEM = {1: "float", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "double",
        16: "bfloat16"}
NP_DTYPE = {"float": np.float32, "float16": np.float16, "double": np.float64, "bool": np.bool_}
# the estimator's graph contract (upstream's export): name -> (rank, shape with C = channels, T = seq_len, dtypes)
EXPECTED_INPUTS = {"x": (3, ("2", "C", "T")), "mask": (3, ("2", "1", "T")), "mu": (3, ("2", "C", "T")),
                   "t": (1, ("2",)), "spks": (2, ("2", "C")), "cond": (3, ("2", "C", "T"))}
EXPECTED_MASK = (4, ("2", "1", "T", "T"))
EXPECTED_OUTPUT = (3, ("2", "C", "T"))
FLOAT_TYPES = ("float", "float16")
MASK_TYPES = ("bool", "float", "float16")

class BackendUnavailable(InputError):
    """The requested ONNX Runtime provider does not exist here: the profile is skipped, with this reason."""


def _need_ort():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable("the ONNX backend needs the optional extra: pip install -e \".[onnx]\" "
                                 "(onnx, onnxruntime)") from exc


def onnx_available() -> str | None:
    """None when onnx and onnxruntime import; otherwise why not (for skips)."""
    try:
        _need_ort()
    except BackendUnavailable as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# the graph file: what it is, and whether it is an estimator

def _dims(vi) -> list:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else "?"))
    return out


def inspect_onnx(path: str | Path) -> dict:
    """sha256, opset, producer, IR version, inputs and outputs (name, dtype, shape) and op-type counts of an
    ONNX file; initializers are not loaded when they are stored externally."""
    _need_ort()
    import onnx

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: ONNX file not found")
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:160]})") from exc
    inits = {i.name for i in m.graph.initializer}
    inputs = [{"name": i.name, "dtype": ELEM.get(i.type.tensor_type.elem_type, str(i.type.tensor_type.elem_type)),
               "shape": _dims(i)} for i in m.graph.input if i.name not in inits]
    outputs = [{"name": o.name, "dtype": ELEM.get(o.type.tensor_type.elem_type, str(o.type.tensor_type.elem_type)),
                "shape": _dims(o)} for o in m.graph.output]
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in m.opset_import}
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "opset": opsets.get("ai.onnx"), "opsets": opsets, "producer": m.producer_name,
            "producer_version": m.producer_version, "ir_version": int(m.ir_version), "inputs": inputs,
            "outputs": outputs, "mask_input": any(i["name"] == MASK_INPUT for i in inputs),
            "op_counts": dict(Counter(n.op_type for n in m.graph.node).most_common())}


def _fmt_expect(name: str, rank_shape) -> str:
    return f"{name} [{', '.join(rank_shape[1])}]"


def validate_io(info: dict, path: str | Path, channels: int | None = None) -> None:
    """Raise a one-line :class:`InputError` unless the graph's inputs and output are the estimator's:
    x, mask, mu, t, spks, cond (+ optional attn_mask) and estimator_out, with the expected ranks, float or
    float16 dtypes (bool/float for attn_mask) and, where the graph fixes them, batch 2 and ``channels``."""
    ins = {i["name"]: i for i in info["inputs"]}
    outs = info["outputs"]
    expected = ", ".join(_fmt_expect(n, EXPECTED_INPUTS[n]) for n in INPUT_NAMES)
    contract = (f"expected inputs {expected} (+ optional {MASK_INPUT} [2, 1, T, T]) and output "
                f"{OUTPUT_NAME} [2, C, T], float or float16, as upstream's export_onnx.py writes them")
    problems = []
    missing = [n for n in INPUT_NAMES if n not in ins]
    unexpected = [n for n in ins if n not in INPUT_NAMES and n != MASK_INPUT]
    if missing:
        problems.append(f"missing input(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected input(s) {', '.join(unexpected)}")
    for name, (rank, shape) in list(EXPECTED_INPUTS.items()) + [(MASK_INPUT, EXPECTED_MASK)]:
        if name not in ins:
            continue
        got = ins[name]
        allowed = MASK_TYPES if name == MASK_INPUT else FLOAT_TYPES
        if got["dtype"] not in allowed:
            problems.append(f"input {name} is {got['dtype']}, expected {' or '.join(allowed)}")
        if len(got["shape"]) != rank:
            problems.append(f"input {name} has rank {len(got['shape'])} {got['shape']}, expected {rank}")
            continue
        for i, (want, have) in enumerate(zip(shape, got["shape"])):
            if isinstance(have, int) and have > 0:
                fixed = {"2": 2, "1": 1, "C": channels}.get(want)
                if fixed is not None and have != fixed:
                    problems.append(f"input {name} axis {i} is {have}, expected {fixed}")
    if not outs:
        problems.append("no output")
    else:
        o = outs[0]
        if o["name"] != OUTPUT_NAME:
            problems.append(f"output is named {o['name']!r}, expected {OUTPUT_NAME!r}")
        if o["dtype"] not in FLOAT_TYPES:
            problems.append(f"output {o['name']} is {o['dtype']}, expected float or float16")
        if len(o["shape"]) != EXPECTED_OUTPUT[0]:
            problems.append(f"output {o['name']} has rank {len(o['shape'])}, expected 3")
    if problems:
        raise InputError(f"{path}: not a CosyVoice DiT estimator graph: {'; '.join(problems)}; {contract}")


# ---------------------------------------------------------------------------------------------
# the session


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
