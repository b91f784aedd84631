"""The CosyVoice 3 DiT estimator (``cosyvoice.flow.DiT.dit.DiT``), fp32 eager, explicit attention.

Module and attribute names equal the keys of the released ``flow.pt`` under ``decoder.estimator.``.
Inputs are channel-major (x, mu, cond [B, 80, T]); everything inside is time-major [B, T, C].
Operation order follows upstream so that fp32 results match it to the last bit where the kernels
allow (attention here is an explicit matmul-softmax: the golden path).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTConfig
from .probe import NO_PROBE, Probe


class SinusPositionEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, scale: float = 1000) -> torch.Tensor:
        half = self.dim // 2
        w = torch.exp(torch.arange(half, device=x.device).float() * -(math.log(10000) / (half - 1)))
        a = scale * x.unsqueeze(1) * w.unsqueeze(0)  # (1000 * t) * w_j, upstream's order
        return torch.cat((a.sin(), a.cos()), dim=-1)  # sin half first


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_embed_dim: int = 256):
        super().__init__()
        self.time_embed = SinusPositionEmbedding(freq_embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(freq_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_embed(t).to(t.dtype))


class CausalConvPositionEmbedding(nn.Module):
    """Two causal grouped convs (left pad k-1), each followed by Mish."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        x = x.permute(0, 2, 1)
        x = self.conv1(F.pad(x, (self.kernel_size - 1, 0)))
        x = self.conv2(F.pad(x, (self.kernel_size - 1, 0)))
        # time-major memory for the residual stream (upstream keeps the conv's channel-major strides, which makes
        # every LayerNorm copy its input); values are bit-identical, 1-3 % faster
        return x.permute(0, 2, 1).contiguous()


class InputEmbedding(nn.Module):
    def __init__(self, mel_dim: int, mu_dim: int, out_dim: int, spk_dim: int):
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + mu_dim + spk_dim, out_dim)
        self.conv_pos_embed = CausalConvPositionEmbedding(out_dim)

    def forward(self, x, cond, mu, spks):  # [B, T, C] each, spks [B, C]
        spks = spks.unsqueeze(1).expand(-1, x.shape[1], -1)
        h = self.proj(torch.cat([x, cond, mu, spks], dim=-1))  # order x, cond, mu, spk
        return self.conv_pos_embed(h) + h


class RotaryEmbedding(nn.Module):
    """x_transformers ``RotaryEmbedding(dim_head)``: interleaved layout, no xpos."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward_from_seq_len(self, seq_len: int) -> torch.Tensor:
        t = torch.arange(seq_len, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq)  # [T, dim/2]
        return torch.stack((freqs, freqs), dim=-1).flatten(-2)  # [T, dim]: theta_0, theta_0, theta_1, ...


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``freqs.shape[-1]`` channels of the flat [B, T, H*Dh] projection in interleaved
    pairs; the rest pass through. Applied before the head split, so only head 0 rotates (F5-TTS quirk)."""
    rot = freqs.shape[-1]
    head, tail = t[..., :rot], t[..., rot:]
    head = (head * freqs.cos() * 1.0) + (rotate_half_interleaved(head) * freqs.sin() * 1.0)
    return torch.cat((head, tail), dim=-1)


def static_chunk_mask(size: int, chunk_size: int, device=None) -> torch.Tensor:
    """Boolean [T, T]: query i attends key j iff j < (i // C + 1) * C (all left chunks + its own)."""
    pos = torch.arange(size, device=device)
    return pos.unsqueeze(0) < ((pos // chunk_size + 1) * chunk_size).unsqueeze(1)


class AdaLayerNormZero(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x, emb):
        emb = self.linear(self.silu(emb))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = torch.chunk(emb, 6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLayerNormZero_Final(nn.Module):  # noqa: N801 - upstream's name
    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x, emb):
        emb = self.linear(self.silu(emb))
        scale, shift = torch.chunk(emb, 2, dim=1)  # scale first, unlike the block
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")),
                                nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x):
        return self.ff(x)


def explicit_attention(q, k, v, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale, masked before the softmax) v, in plain matmuls. q/k/v: [B, H, T, Dh]."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


# The reference's golden path is "explicit"; the SDPA kernels exist so that the noise-floor ensemble
# (parity/floor) can re-compute the reference with another legitimate summation order.
ATTENTION_BACKENDS = ("explicit", "sdpa-math", "sdpa")


def attend(q, k, v, mask: torch.Tensor | None, scale: float, backend: str = "explicit") -> torch.Tensor:
    """The attention of one block by ``backend``: the explicit matmul-softmax, or PyTorch SDPA forced to its
    math kernel (``sdpa-math``) or left to choose (``sdpa``). Same boolean mask semantics (True = attend)."""
    if backend == "explicit":
        return explicit_attention(q, k, v, mask, scale)
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
    ctx = contextlib.nullcontext()
    if backend == "sdpa-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = sdpa_kernel([SDPBackend.MATH])
    with ctx:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scale)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.backend = "explicit"  # see ATTENTION_BACKENDS; DiT.set_attention switches every block
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(self, x, mask: torch.Tensor | None, rope: torch.Tensor | None):
        b = x.shape[0]
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if rope is not None:
            q, k = apply_rotary_pos_emb(q, rope), apply_rotary_pos_emb(k, rope)
        q, k, v = (z.view(b, -1, self.heads, self.dim_head).transpose(1, 2) for z in (q, k, v))
        out = attend(q, k, v, mask, 1.0 / math.sqrt(self.dim_head), self.backend)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head)
        # upstream then zeroes rows where mask[:, 0, -1] is False: a no-op for B=1 without padding
        return self.to_out[1](self.to_out[0](out))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.attn_norm = AdaLayerNormZero(dim)
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x, t, mask, rope):
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(x, emb=t)
        x = x + gate_msa.unsqueeze(1) * self.attn(norm, mask=mask, rope=rope)
        ff_norm = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp.unsqueeze(1) * self.ff(ff_norm)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.input_embed = InputEmbedding(cfg.mel_dim, cfg.mu_dim, cfg.dim, cfg.spk_dim)
        self.rotary_embed = RotaryEmbedding(cfg.dim_head)
        self.transformer_blocks = nn.ModuleList(
            [DiTBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.ff_mult, cfg.dropout) for _ in range(cfg.depth)])
        self.norm_out = AdaLayerNormZero_Final(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.mel_dim)
        self.static_chunk_size = cfg.static_chunk_size

    def set_attention(self, backend: str) -> "DiT":
        """Run every block's attention with ``backend`` (one of ATTENTION_BACKENDS; "explicit" by default)."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
        for blk in self.transformer_blocks:
            blk.attn.backend = backend
        return self

    @property
    def attention_backend(self) -> str:
        return self.transformer_blocks[0].attn.backend if len(self.transformer_blocks) else "explicit"

    def attention_mask(self, seq_len: int, streaming: bool, device) -> torch.Tensor | None:
        """None (full attention) offline; the [1, 1, T, T] static chunk mask when streaming.

        The chunk is the yaml's ``static_chunk_size`` (50 released); upstream's ``add_optional_chunk_mask``
        masks nothing when it is <= 0, and it hard-codes ``num_decoding_left_chunks = -1`` (all left
        chunks) in ``DiT.forward``, whatever the yaml sets."""
        if not streaming or self.static_chunk_size <= 0:
            return None  # upstream passes an all-True mask: identical to no mask
        return static_chunk_mask(seq_len, self.static_chunk_size, device)[None, None]

    def forward(self, x, mask, mu, t, spks, cond, streaming: bool = False, probe: Probe = NO_PROBE):
        """x, mu, cond [B, 80, T]; mask [B, 1, T] (all ones for B=1); t [B]; spks [B, 80] -> v [B, 80, T].

        ``probe`` receives ``block{i}`` ([B, T, dim]) when it wants them.
        """
        x, mu, cond = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2)
        if t.ndim == 0:
            t = t.repeat(x.shape[0])
        c = self.time_embed(t)
        h = self.input_embed(x, cond, mu, spks)
        rope = self.rotary_embed.forward_from_seq_len(h.shape[1])
        attn_mask = self.attention_mask(h.shape[1], streaming, h.device)
        want_blocks = bool(probe)
        for i, block in enumerate(self.transformer_blocks):
            h = block(h, c, attn_mask, rope)
            if want_blocks:
                probe(f"block{i}", h)
        h = self.norm_out(h, c)
        return self.proj_out(h).transpose(1, 2)
