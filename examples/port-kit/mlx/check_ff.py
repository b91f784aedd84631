"""A module of the port written in MLX, tested against a tts-parity port kit (docs/port-kit.md).

    python check_ff.py KIT_DIR MODEL_DIR [BLOCK]

MODEL_DIR holds the weights the kit was made for as ``flow.safetensors`` (``parity export-model --format
safetensors``; the manifest's ``model.weights`` records their hash). The module is the DiT feed-forward of one
block (Linear, GELU with the tanh approximation, Linear), written with ``mlx.core`` only; its input and the
reference output come from the kit's vector, its weights from the model directory under the names the manifest
lists, and the verdict follows the manifest's rule (float64 statistics, limit = k x floor). Exit code 1 on failure.
"""

import json
import math
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np


def judge(out: dict, ref: np.ndarray, got: np.ndarray) -> tuple[bool, float, str]:
    """The manifest's rule for one output: (passed, ratio = N x floor, text)."""
    if list(got.shape) != out["shape"]:
        return False, math.inf, f"shape {list(got.shape)}, the kit's {out['shape']} ({out['layout']})"
    if not np.isfinite(got).all():
        return False, math.inf, "non-finite values"
    r, d = ref.astype(np.float64), got.astype(np.float64) - ref.astype(np.float64)
    nr, nd = float(np.sqrt((r * r).sum())), float(np.sqrt((d * d).sum()))
    values = {"max_abs": float(np.abs(d).max()), "rel_l2": nd / nr if nr > 0 else (0.0 if nd == 0 else math.inf)}
    tol = out["tolerance"]
    passed = all(values[s] <= tol["limit"][s] for s in tol["gate"])
    ratio = max(values[s] / (tol["limit"][s] / tol["k"]) for s in tol["gate"])
    return passed, ratio, ", ".join(f"{s} {values[s]:.3g}" for s in tol["gate"]) + f": {ratio:.3g} x floor (k {tol['k']})"


def feed_forward(x: mx.array, w: dict, prefix: str) -> mx.array:
    """upstream's FeedForward: Linear(dim, inner), GELU(approximate='tanh'), Linear(inner, dim)."""
    h = x @ w[f"{prefix}.ff.0.0.weight"].T + w[f"{prefix}.ff.0.0.bias"]
    h = 0.5 * h * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h * h * h)))
    return h @ w[f"{prefix}.ff.2.weight"].T + w[f"{prefix}.ff.2.bias"]


def main(kit: Path, model_dir: Path, block: int = 0) -> int:
    manifest = json.loads((kit / "manifest.json").read_text())
    vid = f"decoder.estimator.transformer_blocks.{block}.ff"
    v = next(x for x in manifest["vectors"] if x["id"] == vid)
    tensors = mx.load(str(kit / v["file"]))  # {"inputs.x": mx.array, "outputs.out": mx.array}
    weights = mx.load(str(model_dir / "flow.safetensors"))
    w = {k: weights[k] for k in v["weights"]}  # exactly the module's own weights
    got = feed_forward(tensors["inputs.x"], w, v["module"])
    out = v["outputs"][0]
    passed, ratio, text = judge(out, np.array(tensors[out["key"]]), np.array(got))
    print(f"{vid} (MLX, {mx.default_device()}): {'pass' if passed else 'FAIL'}, {text}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
