"""``CausalMaskedDiffWithDiT``: tokens + prompt -> mu/cond/spks -> CFM -> mel (prompt sliced off).

Module names equal the keys of the released ``flow.pt``: ``input_embedding``,
``spk_embed_affine_layer``, ``pre_lookahead_layer.conv{1,2}``, ``decoder.estimator.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FlowConfig
from .errors import InputError
from .flow_matching import CausalConditionalCFM
from .probe import NO_PROBE, Probe


class PreLookaheadLayer(nn.Module):
    """conv1 (k = lookahead+1, right context) -> leaky_relu(0.01) -> left pad 2 -> conv2 (k=3) -> + input."""

    def __init__(self, in_channels: int, channels: int, pre_lookahead_len: int = 3):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(in_channels, channels, kernel_size=pre_lookahead_len + 1)
        self.conv2 = nn.Conv1d(channels, in_channels, kernel_size=3)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """inputs [B, N, C] time-major. ``context`` [B, lookahead, C]: real right context (streaming)
        in place of the zero pad."""
        out = inputs.transpose(1, 2).contiguous()
        if context is None or context.size(1) == 0:
            out = F.pad(out, (0, self.pre_lookahead_len))
        else:
            if context.size(1) != self.pre_lookahead_len:  # upstream asserts this in its streaming path
                raise InputError(f"pre_lookahead_layer: {context.size(1)} context frames given, the layer's "
                                 f"pre_lookahead_len is {self.pre_lookahead_len} (flow.pre_lookahead_len and "
                                 f"flow.pre_lookahead_layer.pre_lookahead_len must agree for streaming)")
            ctx = context.transpose(1, 2).contiguous()
            out = F.pad(torch.concat([out, ctx], dim=2), (0, self.pre_lookahead_len - ctx.size(2)))
        out = F.leaky_relu(self.conv1(out))  # default slope 0.01
        out = self.conv2(F.pad(out, (self.conv2.kernel_size[0] - 1, 0)))
        return out.transpose(1, 2).contiguous() + inputs


def check_flow_inputs(token, prompt_token, prompt_feat, embedding, *, vocab: int, mel_dim: int, spk_dim: int,
                      lookahead: int, finalize: bool, source: str = "inputs", token_mel_ratio: int = 2) -> None:
    """Shapes and dtypes the flow needs, with errors that name the tensor and what was expected."""
    def need(cond: bool, msg: str):
        if not cond:
            raise InputError(f"{source}: {msg}")

    for name, t in (("token", token), ("prompt_token", prompt_token)):
        need(isinstance(t, torch.Tensor), f"tensor '{name}' is missing")
        need(t.dim() == 2 and t.shape[0] == 1, f"tensor '{name}' must be [1, N], got {list(t.shape)}")
        need(not t.is_floating_point() and t.dtype != torch.bool,
             f"tensor '{name}' must hold integer token ids, got {t.dtype}")
    need(token.shape[1] >= 1, "tensor 'token' is empty (an LLM dtype bug upstream produced zero tokens)")
    n_total = token.shape[1] + prompt_token.shape[1]
    if not finalize:
        need(n_total > lookahead, f"tensor 'token' is too short for streaming: prompt+target = {n_total} "
             f"tokens, but the pre-lookahead layer holds back {lookahead} tokens as right context and needs at "
             f"least one more (upstream fails with \"kernel size can't be greater than input size\")")
        need(token.shape[1] > lookahead, f"tensor 'token' has {token.shape[1]} tokens; a non-final chunk "
             f"needs more than the {lookahead}-token lookahead")
    need(isinstance(prompt_feat, torch.Tensor), "tensor 'prompt_feat' is missing")
    need(prompt_feat.dim() == 3 and prompt_feat.shape[0] == 1 and prompt_feat.shape[2] == mel_dim,
         f"tensor 'prompt_feat' must be [1, {token_mel_ratio}*P, {mel_dim}] (time-major as upstream), "
         f"got {list(prompt_feat.shape)}")
    need(prompt_feat.is_floating_point(), f"tensor 'prompt_feat' must be floating point, got {prompt_feat.dtype}")
    need(prompt_feat.shape[1] == token_mel_ratio * prompt_token.shape[1],
         f"tensor 'prompt_feat' has {prompt_feat.shape[1]} frames, expected token_mel_ratio * len(prompt_token) = "
         f"{token_mel_ratio} * {prompt_token.shape[1]} = {token_mel_ratio * prompt_token.shape[1]}")
    need(isinstance(embedding, torch.Tensor), "tensor 'embedding' is missing")
    need(embedding.dim() == 2 and tuple(embedding.shape) == (1, spk_dim),
         f"tensor 'embedding' must be [1, {spk_dim}], got {list(embedding.shape)}")
    need(embedding.is_floating_point(), f"tensor 'embedding' must be floating point, got {embedding.dtype}")
    for name, t in (("prompt_feat", prompt_feat), ("embedding", embedding)):
        need(bool(torch.isfinite(t).all()), f"tensor '{name}' holds NaN or Inf")
    hi = max(int(token.max()), int(prompt_token.max()) if prompt_token.numel() else 0)
    need(hi < vocab, f"token id {hi} is outside the vocabulary (0..{vocab - 1})")


class CausalMaskedDiffWithDiT(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        pla = cfg.pre_lookahead_layer
        self.pre_lookahead_layer = PreLookaheadLayer(pla.in_channels, pla.channels, pla.pre_lookahead_len)
        self.decoder = CausalConditionalCFM(cfg.decoder)
        self.pre_lookahead_len = cfg.pre_lookahead_len
        self.token_mel_ratio = cfg.token_mel_ratio

    def prepare(self, token, prompt_token, prompt_feat, embedding, finalize: bool = True, probe: Probe = NO_PROBE):
        """The front end: returns (mu [1,80,T], mask [1,1,T], spks [1,80], cond [1,80,T], mel_len1)."""
        check_flow_inputs(token, prompt_token, prompt_feat, embedding, vocab=self.cfg.vocab_size,
                          mel_dim=self.cfg.output_size, spk_dim=self.cfg.spk_embed_dim,
                          lookahead=self.pre_lookahead_len, finalize=finalize, token_mel_ratio=self.token_mel_ratio)
        embedding = F.normalize(embedding, dim=1)  # e / max(||e||, 1e-12)
        spks = self.spk_embed_affine_layer(embedding)
        tok = torch.concat([prompt_token, token], dim=1)
        mask = torch.ones(1, tok.shape[1], 1, dtype=spks.dtype, device=spks.device)
        emb = self.input_embedding(torch.clamp(tok, min=0)) * mask  # negative ids -> 0
        if finalize:
            h = self.pre_lookahead_layer(emb)
        else:
            n = self.pre_lookahead_len
            h = self.pre_lookahead_layer(emb[:, :-n], context=emb[:, -n:])
        h = h.repeat_interleave(self.token_mel_ratio, dim=1)
        mel_len1 = prompt_feat.shape[1]
        T = h.shape[1]
        cond = torch.zeros([1, T, self.cfg.output_size], device=h.device).to(h.dtype)
        cond[:, :mel_len1] = prompt_feat
        cond = cond.transpose(1, 2)
        mu = h.transpose(1, 2).contiguous()
        out_mask = torch.ones(1, 1, T, dtype=h.dtype, device=h.device)
        probe("mu", mu)
        probe("spks", spks)
        probe("cond", cond)
        return mu, out_mask, spks, cond, mel_len1

    def inference(self, token, prompt_token, prompt_feat, embedding, noise, *, streaming: bool = False,
                  finalize: bool = True, n_timesteps: int | None = None, probe: Probe = NO_PROBE) -> torch.Tensor:
        """Tokens -> mel [1, 80, r*N_t] (or r*(N_t - lookahead) when not finalizing), r = token_mel_ratio.

        ``noise`` is a :class:`reference.noise.SharedNoise`. ``n_timesteps`` defaults to the config's 10,
        which upstream hard-codes in ``CausalMaskedDiffWithDiT.inference``."""
        mu, mask, spks, cond, mel_len1 = self.prepare(token, prompt_token, prompt_feat, embedding, finalize, probe)
        feat = self.decoder(mu, mask, n_timesteps or self.cfg.n_timesteps, spks, cond,
                            noise.flow_noise(mu.shape[2]), streaming=streaming, probe=probe)
        feat = feat[:, :, mel_len1:]
        probe("flow_mel", feat)
        return feat.float() if feat.dtype != torch.float64 else feat  # float64 only for the fp64 arbiter
