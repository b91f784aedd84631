"""Deterministic seeded weights for presets without a checkpoint.

Each tensor gets its own generator seeded from (preset seed, crc32 of its state-dict key), so the
values do not depend on construction order and the same key always gets the same numbers.

Magnitudes are chosen so that every stage does real work (upstream initialises the AdaLN-Zero
modulation at zero, which would make every DiT block an identity and hide attention/FFN bugs):
weights ~ N(0, gain^2 / fan_in), biases ~ N(0, 0.02^2) unless a rule says otherwise. A rule is
``(key substring, gain, bias mean, bias std)``; the first matching rule applies. A gain given as a
string ``"abs:<std>"`` sets the weight std directly (embeddings, whose fan-in is not an input width).
"""

from __future__ import annotations

import hashlib
import zlib

import torch
from torch import nn

Rule = tuple[str, "float | str", float, float]

# DiT / flow: gains keep a 22-block residual stream bounded (roughly unit variance) while gates are
# clearly non-zero, so attention, FFN and AdaLN all change the output.
FLOW_RULES: list[Rule] = [
    ("input_embedding.weight", "abs:1.0", 0.0, 0.0),  # token embeddings of unit scale, like mel features
    ("spk_embed_affine_layer", 8.0, 0.0, 0.1),  # the input is L2-normalised: keep spks of order 0.5
    ("attn_norm.linear", 0.5, 0.0, 0.1),
    ("norm_out.linear", 0.5, 0.0, 0.1),
    ("conv_pos_embed", 0.5, 0.0, 0.02),
    ("to_out.0", 1.0, 0.0, 0.02),
    ("ff.ff.2", 1.0, 0.0, 0.02),
    ("proj_out", 1.0, 0.0, 0.05),
    ("", 1.0, 0.0, 0.02),
]


def _key_seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63 - 1)


def _fan_in(t: torch.Tensor) -> int:
    if t.dim() <= 1:
        return max(1, t.numel())
    fan = t.shape[1]
    for s in t.shape[2:]:
        fan *= s
    return max(1, fan)


def seeded_tensor(key: str, shape, seed: int, std: float, mean: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    return torch.randn(*shape, generator=g) * std + mean


def seeded_init_(module: nn.Module, seed: int, rules: list[Rule]) -> nn.Module:
    """Fill every parameter of ``module`` in place (buffers such as ``inv_freq`` are left alone)."""
    with torch.no_grad():
        for key, p in module.named_parameters():
            rule = next(r for r in rules if r[0] in key)
            _, gain, b_mean, b_std = rule
            if key.endswith("bias") or p.dim() == 1:
                p.copy_(seeded_tensor(key, p.shape, seed, b_std, b_mean))
            else:
                std = float(gain[4:]) if isinstance(gain, str) else gain / _fan_in(p) ** 0.5
                p.copy_(seeded_tensor(key, p.shape, seed, std))
    return module


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes, independent of file format (pt or safetensors)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
