"""The detection-power suite: small patches to one candidate instance, each the kind of slip a port makes
(mutations), or a change a correct port may make (legitimate changes). None is in the fault catalogue
(``candidate/faults.py``). Every patch acts on the instance it is given (its modules, bound methods and
copied configs), never on shared code, so cases cannot leak into each other.

Where a slip sits in the middle of a candidate method, the patch installs a rewrite of that method with
knobs (:func:`block`, :func:`solver_step`, :func:`solve`, :func:`decode`, :func:`make_source`,
:func:`sine_phase`); with default knobs each rewrite is bit-identical to the candidate's own method (the
``control:*`` cases check that on every run), so a case differs from the reference by its one change only.
The rewrites cover the fp32 path (the suite runs fp32 candidates).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from candidate.dit import _explicit
from reference.flow_matching import time_span
from reference.hift import MAGNITUDE_CLAMP
from reference.probe import NO_PROBE, as_probe


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "mutation" | "legit" | "control"
    group: str  # front end | DiT | solver | vocoder
    stage: str  # where the change first acts (the declared stage; the benchmark measures the real one)
    description: str
    patch: Callable  # (candidate, inputs) -> None
    switches: dict = field(default_factory=dict)  # Switches overrides of the candidate (default fp32-explicit)
    threads: int = 1
    profile: str = "fp32-explicit"  # the candidate profile the overrides apply to
    faults: tuple = ()  # catalogue faults of the candidate (candidate/faults.py)


def _bind(obj, name, fn):
    setattr(obj, name, types.MethodType(fn, obj))


def _est(c):
    return c.flow.estimator


# ---------------------------------------------------------------------------------------------
# DiT block rewrite (CandidateDiT._block, fp32 path)

def block(eps=1e-6, modulation="standard", gate_attn=True, ff_residual="h", rope_k=True, contiguous=False,
          manual_ln=False, manual_gelu=False):
    def ln(x):
        if manual_ln:  # (x - mean) / sqrt(var + eps): the same function, other rounding
            mu = x.mean(-1, keepdim=True)
            var = ((x - mu) ** 2).mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(var + eps)
        return F.layer_norm(x, (x.shape[-1],), eps=eps)

    def modulate(x, scale, shift):
        if modulation == "swap":  # shift and scale chunks taken in the wrong order
            return ln(x) * (1 + shift[:, None]) + scale[:, None]
        if modulation == "no-one":  # x * scale + shift instead of x * (1 + scale) + shift
            return ln(x) * scale[:, None] + shift[:, None]
        return ln(x) * (1 + scale[:, None]) + shift[:, None]

    def _block(self, i, blk, h, c_mod, mask, rope, probe=NO_PROBE, step=0):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = torch.chunk(c_mod, 6, dim=1)
        norm = modulate(h, scale_msa, shift_msa)
        a = blk.attn
        B = norm.shape[0]
        q, k, v = a.to_q(norm), a.to_k(norm), a.to_v(norm)
        q = self._apply_rope(q, rope)
        k = self._apply_rope(k, rope) if rope_k else k
        q, k, v = (z.view(B, -1, a.heads, a.dim_head).transpose(1, 2) for z in (q, k, v))
        if contiguous:
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o = self._attention(q, k, v, mask)
        o = a.to_out[0](o.transpose(1, 2).reshape(B, -1, a.heads * a.dim_head))
        h = h + gate_msa.unsqueeze(1) * o if gate_attn else h + o
        if contiguous:
            h = h.contiguous()
        ffn_in = modulate(h, scale_mlp, shift_mlp)
        if manual_gelu:  # the tanh GELU written out
            up, down = blk.ff.ff[0][0], blk.ff.ff[2]
            u = up(ffn_in)
            f = down(0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * torch.pow(u, 3.0)))))
        else:
            f = blk.ff(ffn_in)
        base = ffn_in if ff_residual == "norm" else h
        return base + gate_mlp.unsqueeze(1) * f

    return _block


def patch_block(**knobs):
    return lambda c, inputs: _bind(_est(c), "_block", block(**knobs))


def patch_attention(scale="sqrt", mask=None, scale_on_q=False):
    def _attention(self, q, k, v, m):
        self.kernels.add("explicit")
        d = q.shape[-1]
        s = {"sqrt": 1.0 / math.sqrt(d), "dim": 1.0 / d, "model-dim": 1.0 / math.sqrt(d * q.shape[1])}[scale]
        if m is not None and mask == "off-by-one":  # chunk boundary one frame late: sees a frame of the next chunk
            T, C = m.shape[-1], self.net.static_chunk_size
            pos = torch.arange(T, device=q.device)
            m = (pos.unsqueeze(0) <= ((pos // C + 1) * C).unsqueeze(1))[None, None]
        elif m is not None and mask == "none":  # the streaming chunk mask dropped
            m = None
        if scale_on_q:  # (q * s) k^T instead of (q k^T) * s
            return _explicit(q * s, k, v, m, 1.0)
        return _explicit(q, k, v, m, s)

    return lambda c, inputs: _bind(_est(c), "_attention", _attention)


def patch_rope(base=None, offset=0, rate=1.0):
    def apply(c, inputs):
        est = _est(c)
        if base is not None:
            rot = est.net.rotary_embed
            dim = rot.inv_freq.numel() * 2
            rot.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        if offset or rate != 1.0:
            def _rope(self, T, device):
                inv = self.net.rotary_embed.inv_freq.float().to(device)
                t = torch.arange(T, device=device, dtype=torch.float32) * rate + offset
                freqs = torch.stack((torch.einsum("i,j->ij", t, inv),) * 2, -1).flatten(-2)
                return freqs, freqs.cos(), freqs.sin()

            _bind(est, "_rope", _rope)

    return apply


def patch_final_norm(swap=False):
    def _trunk(self, h, mods, attn_mask, rope, probe=NO_PROBE, step=0):
        for i, blk in enumerate(self.net.transformer_blocks):
            h = self._block(i, blk, h, mods[i], attn_mask, rope, probe, step)
            if probe:
                probe(f"block{i}", h)
        scale, shift = torch.chunk(mods[-1], 2, dim=1)
        if swap:  # the block's order (shift first) used for the final AdaLN, which has scale first
            scale, shift = shift, scale
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale)[:, None, :] + shift[:, None, :]
        return self.net.proj_out(h)

    return lambda c, inputs: _bind(_est(c), "_trunk", _trunk)


def patch_time_embed(cos_first=False, denominator="half-1"):
    def apply(c, inputs):
        te = _est(c).net.time_embed.time_embed

        def forward(x, scale=1000):
            half = te.dim // 2
            den = half - 1 if denominator == "half-1" else half  # log(10000)/half: the other papers' frequencies
            w = torch.exp(torch.arange(half, device=x.device).float() * -(math.log(10000) / den))
            a = scale * x.unsqueeze(1) * w.unsqueeze(0)
            return torch.cat((a.cos(), a.sin()) if cos_first else (a.sin(), a.cos()), dim=-1)

        te.forward = forward

    return apply


def patch_input_embed_order(c, inputs):
    ie = _est(c).net.input_embed

    def forward(x, cond, mu, spks):
        spks = spks.unsqueeze(1).expand(-1, x.shape[1], -1)
        h = ie.proj(torch.cat([x, mu, cond, spks], dim=-1))  # mu and cond swapped
        return ie.conv_pos_embed(h) + h

    ie.forward = forward


def patch_snake_no_eps(c, inputs):
    from reference.hift import Snake

    for m in c.hift.g.modules():
        if isinstance(m, Snake):
            def forward(x, m=m):
                alpha = m.alpha.unsqueeze(0).unsqueeze(-1)
                return x + (1.0 / alpha) * pow(torch.sin(x * alpha), 2)  # the 1e-9 guard dropped

            m.forward = forward


def patch_source_no_tanh(c, inputs):
    src = c.hift.g.m_source
    src.forward = lambda x: src.l_linear(x)


def patch_module(path: str, make):
    """Replace the submodule at ``path`` of the candidate's DiT copy by ``make()``."""
    def apply(c, inputs):
        parent, _, leaf = path.rpartition(".")
        mod = _est(c).net.get_submodule(parent) if parent else _est(c).net
        setattr(mod, leaf, make()) if not leaf.isdigit() else mod.__setitem__(int(leaf), make())

    return apply


def patch_all_blocks(fn):
    def apply(c, inputs):
        for blk in _est(c).net.transformer_blocks:
            fn(blk)

    return apply


# ---------------------------------------------------------------------------------------------
# front end

def patch_speaker(mode):
    def apply(c, inputs):
        lin = c.flow.front.spk_embed_affine_layer
        raw_norm = float(inputs["embedding"].float().norm())

        def pre(mod, args):
            e = args[0]
            if mode == "l1":  # L1 instead of L2 normalisation
                return (e / e.abs().sum(dim=1, keepdim=True),)
            return (e * raw_norm,)  # normalisation forgotten: the raw x-vector

        lin.register_forward_pre_hook(pre)

    return apply


def patch_token_offset(c, inputs):
    emb = c.flow.front.input_embedding
    emb.register_forward_pre_hook(lambda mod, args: (torch.clamp(args[0] + 1, max=emb.num_embeddings - 1),))


def patch_lookahead(mode):
    def apply(c, inputs):
        pla = c.flow.front.pre_lookahead_layer

        def forward(inputs_, context=None):
            out = inputs_.transpose(1, 2).contiguous()
            if context is None or context.size(1) == 0:
                out = F.pad(out, (0, pla.pre_lookahead_len))
            else:  # a non-final call of a streaming session: the lookahead tokens are real right context
                ctx = context.transpose(1, 2).contiguous()
                out = F.pad(torch.concat([out, ctx], dim=2), (0, pla.pre_lookahead_len - ctx.size(2)))
            out = F.relu(pla.conv1(out)) if mode == "relu" else F.leaky_relu(pla.conv1(out))
            k2 = pla.conv2.kernel_size[0] - 1
            out = pla.conv2(F.pad(out, (0, k2) if mode == "pad-right" else (k2, 0)))
            out = out.transpose(1, 2).contiguous()
            return out if mode == "no-residual" else out + inputs_

        pla.forward = forward

    return apply


# ---------------------------------------------------------------------------------------------
# solver rewrites (CandidateFlow.step / solve, fp32 path)

def solver_step(cfg="standard", euler="standard", swap_rows=False, t_fed="start"):
    def step(self, x, t, dt, mu, mask, spks, cond, streaming=False, probe=NO_PROBE, step=0):
        tt = t + dt if t_fed == "end" else t
        v1, v2 = self.velocities(x, mask, mu, tt, spks, cond, streaming, probe, step)
        if swap_rows:  # conditional and unconditional rows taken in the wrong order
            v1, v2 = v2, v1
        r = self.cfg_rate
        if cfg == "rewrite":  # v1 + r (v1 - v2): the same combination, other rounding
            v_cfg = v1 + r * (v1 - v2)
        elif cfg == "sign":
            v_cfg = (1.0 + r) * v1 + r * v2
        else:
            v_cfg = (1.0 + r) * v1 - r * v2
        if euler == "v1":  # the state follows the conditional velocity, guidance dropped
            x_next = x + dt * v1
        elif euler == "half-dt":
            x_next = x + 0.5 * dt * v_cfg
        elif euler == "fused":  # one fused multiply-add kernel
            x_next = torch.add(x, v_cfg, alpha=float(dt))
        else:
            x_next = (x + dt * v_cfg).to(x.dtype)
        return x_next, v1, v2, v_cfg

    return step


def patch_step(**knobs):
    return lambda c, inputs: _bind(c.flow, "step", solver_step(**knobs))


def solve(grid="cosine"):
    def _grid(n, dtype, device):
        if grid == "sine":  # "cosine schedule" written as sin(s pi/2)
            s = torch.linspace(0, 1, n + 1, device=device, dtype=dtype)
            return torch.sin(s * 0.5 * torch.pi)
        return time_span(n, grid, dtype, device)

    def _solve(self, mu, mask, spks, cond, noise, streaming=False, probe=NO_PROBE, on_step=None):
        z = self.flow_noise(noise, mu.shape[2]).to(self.device).to(torch.float32)
        probe("x0", z)
        t_span = _grid(self.n_timesteps, torch.float32, self.device)
        n = len(t_span) - 1
        t, dt = t_span[0].unsqueeze(0), t_span[1] - t_span[0]
        x = z
        for k in range(1, n + 1):
            sp = probe.sub(f"step{k}.")
            sp("t", t)
            sp("dt", dt.reshape(1))
            x, v1, v2, v_cfg = self.step(x, t, dt, mu, mask, spks, cond, streaming, sp, k)
            for name, val in (("v1", v1), ("v2", v2), ("v_cfg", v_cfg), ("x", x)):
                sp(name, val)
            t = t + dt
            if k < n:
                dt = t_span[k + 1] - t
        return x.float()

    return _solve


def patch_solve(**knobs):
    return lambda c, inputs: _bind(c.flow, "solve", solve(**knobs))


# ---------------------------------------------------------------------------------------------
# vocoder rewrites (CandidateHiFT / the generator copy, fp32 path)

def sine_phase(harmonic_start=1, sr=None):
    def _sine_phase(self, f0_up, rand_ini):
        cfg, scale = self.cfg, self.upsample_scale
        harmonics = torch.arange(harmonic_start, harmonic_start + cfg.nb_harmonics + 1, dtype=f0_up.dtype,
                                 device=f0_up.device).view(1, 1, -1)
        rad = (f0_up * harmonics / (sr or cfg.sampling_rate)) % 1
        rad[:, 0, :] = rad[:, 0, :] + rand_ini.to(rad.device, rad.dtype)
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear").transpose(1, 2)
        phase = torch.cumsum(rad, dim=1) * 2 * math.pi
        return F.interpolate(phase.transpose(1, 2) * scale, scale_factor=scale, mode="nearest").transpose(1, 2)

    return _sine_phase


def patch_sine(**knobs):
    return lambda c, inputs: _bind(c.hift.g, "sine_phase", sine_phase(**knobs))


def make_source(unvoiced_div=3.0, sigma_mult=1.0, upsample="nearest"):
    def _make_source(self, f0, noise):
        g, cfg = self.g, self.g.cfg
        f0_up = F.interpolate(f0[:, None], scale_factor=g.upsample_scale, mode=upsample).transpose(1, 2)
        L = f0_up.shape[1]
        sine = torch.sin(g.sine_phase(f0_up, noise.rand_ini)) * cfg.nsf_alpha
        uv = (f0_up > cfg.nsf_voiced_threshold).type(torch.float32)
        amp = uv * (cfg.nsf_sigma * sigma_mult) + (1 - uv) * cfg.nsf_alpha / unvoiced_div
        sine = sine * uv + amp * noise.sine_noise(L).to(sine.device)
        return g.m_source(sine).float().transpose(1, 2)

    return _make_source


def patch_source(**knobs):
    return lambda c, inputs: _bind(c.hift, "make_source", make_source(**knobs))


def decode(phase="sin", mag_clamp=MAGNITUDE_CLAMP, mag_exp=True):
    def _decode(self, mel, source, finalize=True, probe=NO_PROBE):
        g = self.g
        probe = as_probe(probe)
        T = g._check_mel(mel, finalize)
        n_mel = T if finalize else T - g.f0_predictor.lookahead
        x = mel if finalize else mel[:, :, :n_mel]
        s_stft = g._stft(source.squeeze(1).float())
        if finalize:
            x = g.conv_pre(x)
        else:  # a non-final call of a streaming session: conv_pre's lookahead frames are right context
            look = g.conv_pre_look_right
            x = g.conv_pre(x[:, :, :-look], x[:, :, -look:])
            s_stft = s_stft[:, :, :-(math.prod(g.upsample_rates) * look)]
        probe("s_stft", s_stft)
        probe("conv_pre", x)
        for i in range(g.num_upsamples):
            x = F.leaky_relu(x, g.cfg.lrelu_slope)
            x = g.ups[i](x)
            probe(f"hift.ups{i}", x)
            if i == g.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            si = g.source_downs[i](s_stft)
            probe(f"hift.source_down{i}", si)
            x = x + g.source_resblocks[i](si)
            probe(f"hift.fusion{i}", x)
            xs = g.resblocks[i * g.num_kernels](x)
            for j in range(1, g.num_kernels):
                xs = xs + g.resblocks[i * g.num_kernels + j](x)
            x = xs / g.num_kernels
            probe(f"hift.resblocks{i}", x)
        x = g.conv_post(F.leaky_relu(x))
        probe("hift.conv_post", x)
        n_bins = g.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :n_bins, :]) if mag_exp else x[:, :n_bins, :]
        magnitude = torch.clamp(magnitude, max=mag_clamp) if mag_clamp is not None else magnitude
        ph = torch.sin(x[:, n_bins:, :]) if phase == "sin" else x[:, n_bins:, :]  # "redundant" sin dropped
        probe("magnitude", magnitude)
        probe("phase", ph)
        audio = g._istft(magnitude, ph)
        if not finalize:
            audio = audio[:, :-(math.prod(g.upsample_rates) * g.hop_len)]
        probe("audio_preclamp", audio)
        audio = torch.clamp(audio, -g.cfg.audio_limit, g.cfg.audio_limit)
        probe("audio", audio)
        return audio

    return _decode


def patch_decode(**knobs):
    return lambda c, inputs: _bind(c.hift, "decode", decode(**knobs))


def patch_f0(mode):
    def apply(c, inputs):
        fp = c.hift.g.f0_predictor
        orig = fp.forward

        def forward(x, finalize=True, params=None):
            if mode == "relu":  # relu instead of abs on the classifier output
                p = params or {}
                h = fp.features(x, finalize, params).transpose(1, 2)
                w, b = p.get("classifier.weight", fp.classifier.weight), p.get("classifier.bias", fp.classifier.bias)
                return torch.relu(F.linear(h, w, b).squeeze(-1))
            if mode == "integer-hz":  # F0 stored as whole Hz
                return torch.round(orig(x, finalize, params))
            if mode == "lookahead-left":  # the first conv's 3-frame lookahead padded on the left (past) instead
                p = params or {}
                h = x
                for i, layer in enumerate(fp.condnet):
                    if hasattr(layer, "causal_padding"):
                        h = F.pad(h, (layer.causal_padding, 0))
                        h = F.conv1d(h, p.get(f"condnet.{i}.weight", layer.weight), p.get(f"condnet.{i}.bias", layer.bias))
                    else:
                        h = layer(h)
                h = h.transpose(1, 2)
                w, b = p.get("classifier.weight", fp.classifier.weight), p.get("classifier.bias", fp.classifier.bias)
                return torch.abs(F.linear(h, w, b).squeeze(-1))
            raise ValueError(mode)

        fp.forward = forward

    return apply


def patch_istft_window_symmetric(c, inputs):
    g = c.hift.g
    win = torch.hann_window(g.n_fft, periodic=False)

    def _istft(self, magnitude, phase):
        real, img = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
        return torch.istft(torch.complex(real, img), self.n_fft, self.hop_len, self.n_fft, window=win)

    _bind(g, "_istft", _istft)


def patch_attr(getter, attr, value):
    def apply(c, inputs):
        setattr(getter(c), attr, value)

    return apply


def patch_length_invariant(c, inputs):
    c.hift.g.set_length_invariant(True)


def patch_identity(c, inputs):
    pass


def _chain(*patches):
    def apply(c, inputs):
        for p in patches:
            p(c, inputs)

    return apply


# ---------------------------------------------------------------------------------------------
# the suite

def _gelu_exact(blk):
    blk.ff.ff[0][1].approximate = "none"


MUTATIONS = [
    # front end
    Case("spk-l1-normalize", "mutation", "front end", "spks", "speaker x-vector L1- instead of L2-normalised",
         patch_speaker("l1")),
    Case("spk-not-normalized", "mutation", "front end", "spks", "speaker x-vector not normalised",
         patch_speaker("raw")),
    Case("token-off-by-one", "mutation", "front end", "mu", "token ids shifted by one before the embedding",
         patch_token_offset),
    Case("lookahead-relu", "mutation", "front end", "mu", "pre-lookahead layer: relu instead of leaky_relu(0.01)",
         patch_lookahead("relu")),
    Case("lookahead-no-residual", "mutation", "front end", "mu", "pre-lookahead layer: residual connection dropped",
         patch_lookahead("no-residual")),
    Case("lookahead-pad-right", "mutation", "front end", "mu", "pre-lookahead conv2 padded on the right (non-causal)",
         patch_lookahead("pad-right")),
    # DiT
    Case("gelu-exact", "mutation", "DiT", "step1.v1", "FFN GELU exact (erf) instead of the tanh approximation",
         patch_all_blocks(_gelu_exact)),
    Case("time-mlp-relu", "mutation", "DiT", "step1.v1", "time MLP activation ReLU instead of SiLU",
         patch_module("time_embed.time_mlp.1", torch.nn.ReLU)),
    Case("conv-pos-silu", "mutation", "DiT", "step1.v1", "conv position embedding: SiLU instead of Mish",
         patch_module("input_embed.conv_pos_embed.conv1.1", torch.nn.SiLU)),
    Case("layernorm-eps-1e-5", "mutation", "DiT", "step1.v1", "block LayerNorm eps 1e-5 instead of 1e-6",
         patch_block(eps=1e-5)),
    Case("modulation-swap", "mutation", "DiT", "step1.v1", "AdaLN shift and scale swapped in the blocks",
         patch_block(modulation="swap")),
    Case("modulation-no-one", "mutation", "DiT", "step1.v1", "AdaLN x*scale+shift instead of x*(1+scale)+shift",
         patch_block(modulation="no-one")),
    Case("final-norm-swap", "mutation", "DiT", "step1.v1", "final AdaLN chunks in the blocks' order (shift first)",
         patch_final_norm(swap=True)),
    Case("attn-scale-1/d", "mutation", "DiT", "step1.v1", "attention scale 1/d_head instead of 1/sqrt(d_head)",
         patch_attention(scale="dim")),
    Case("attn-scale-model-dim", "mutation", "DiT", "step1.v1",
         "attention scale 1/sqrt(heads*d_head) instead of 1/sqrt(d_head)", patch_attention(scale="model-dim")),
    Case("mask-off-by-one", "mutation", "DiT", "step1.v1", "streaming chunk mask one frame late (<= instead of <)",
         patch_attention(mask="off-by-one")),
    Case("mask-dropped", "mutation", "DiT", "step1.v1", "streaming chunk mask not applied", patch_attention(mask="none")),
    Case("rope-base-1000", "mutation", "DiT", "step1.v1", "RoPE base 1000 instead of 10000", patch_rope(base=1000.0)),
    Case("rope-positions-halved", "mutation", "DiT", "step1.v1", "RoPE positions at the token rate (frame / 2)",
         patch_rope(rate=0.5)),
    Case("rope-q-only", "mutation", "DiT", "step1.v1", "RoPE applied to q only", patch_block(rope_k=False)),
    Case("residual-no-gate", "mutation", "DiT", "step1.v1", "attention residual added without its AdaLN gate",
         patch_block(gate_attn=False)),
    Case("ff-residual-from-norm", "mutation", "DiT", "step1.v1", "FFN residual added to the modulated norm, not h",
         patch_block(ff_residual="norm")),
    Case("time-embed-cos-first", "mutation", "DiT", "step1.v1", "sinusoidal time embedding with the cos half first",
         patch_time_embed(cos_first=True)),
    Case("time-embed-freqs", "mutation", "DiT", "step2.v1", "time embedding frequencies log(1e4)/half instead of "
         "/(half-1) (invisible at t = 0)", patch_time_embed(denominator="half")),
    Case("input-embed-order", "mutation", "DiT", "step1.v1", "input embedding concatenates mu before cond",
         patch_input_embed_order),
    # solver
    Case("time-grid-sine", "mutation", "solver", "step1.dt", "cosine schedule written as sin(s pi/2)",
         patch_solve(grid="sine")),
    Case("t-end-of-step", "mutation", "solver", "step2.v1", "the estimator sees t + dt instead of t",
         patch_step(t_fed="end")),
    Case("cfg-sign", "mutation", "solver", "step1.v_cfg", "CFG (1+r) v1 + r v2 (sign slip)", patch_step(cfg="sign")),
    Case("cfg-rows-swapped", "mutation", "solver", "step1.v1", "CFG rows swapped (v1 <-> v2)",
         patch_step(swap_rows=True)),
    Case("euler-uses-v1", "mutation", "solver", "step1.x", "Euler step with v1 instead of the guided velocity",
         patch_step(euler="v1")),
    Case("euler-half-dt", "mutation", "solver", "step1.x", "Euler step of dt/2", patch_step(euler="half-dt")),
    # vocoder
    Case("f0-relu", "mutation", "vocoder", "f0", "F0 post-processing relu instead of abs", patch_f0("relu")),
    Case("f0-integer-hz", "mutation", "vocoder", "f0", "F0 rounded to whole Hz", patch_f0("integer-hz")),
    Case("f0-lookahead-left", "mutation", "vocoder", "f0", "F0 predictor's lookahead padded on the past side",
         patch_f0("lookahead-left")),
    Case("sine-harmonics-from-0", "mutation", "vocoder", "source", "sine harmonics 0..8 instead of 1..9",
         patch_sine(harmonic_start=0)),
    Case("sine-sr-22050", "mutation", "vocoder", "source", "sine phase at 22050 Hz instead of 24000",
         patch_sine(sr=22050)),
    Case("voiced-noise-x10", "mutation", "vocoder", "source", "voiced noise amplitude 0.03 instead of 0.003",
         patch_source(sigma_mult=10.0)),
    Case("unvoiced-noise-alpha", "mutation", "vocoder", "source", "unvoiced noise amplitude alpha instead of alpha/3",
         patch_source(unvoiced_div=1.0)),
    Case("f0-upsample-linear", "mutation", "vocoder", "source", "F0 upsampled to samples linearly, not nearest",
         patch_source(upsample="linear")),
    Case("source-no-tanh", "mutation", "vocoder", "source", "source module without its tanh", patch_source_no_tanh),
    Case("voiced-threshold-100", "mutation", "vocoder", "source", "voiced/unvoiced threshold 100 Hz instead of 10",
         patch_attr(lambda c: c.hift.g.cfg, "nsf_voiced_threshold", 100.0)),
    Case("snake-no-eps", "mutation", "vocoder", "magnitude", "Snake without the 1e-9 guard (alphas ~ 1: "
         "a change below rounding)", patch_snake_no_eps),
    Case("hift-lrelu-0.01", "mutation", "vocoder", "magnitude", "upsampling leaky_relu slope 0.01 (torch's default) "
         "instead of lrelu_slope 0.1", patch_attr(lambda c: c.hift.g.cfg, "lrelu_slope", 0.01)),
    Case("conv-pre-left-pad", "mutation", "vocoder", "conv_pre", "conv_pre padded on the left (lookahead lost)",
         patch_attr(lambda c: c.hift.g.conv_pre, "causal_type", "left")),
    Case("resblock-pad-right", "mutation", "vocoder", "magnitude", "one resblock conv padded on the right",
         patch_attr(lambda c: c.hift.g.resblocks[0].convs1[0], "causal_type", "right")),
    Case("istft-no-sin", "mutation", "vocoder", "phase", "iSTFT phase = x instead of sin(x)", patch_decode(phase="id")),
    Case("magnitude-clamp-10", "mutation", "vocoder", "magnitude", "iSTFT magnitude clamped at 10 instead of 100",
         patch_decode(mag_clamp=10.0)),
    Case("magnitude-no-exp", "mutation", "vocoder", "magnitude", "conv_post's log-magnitude used as the magnitude",
         patch_decode(mag_exp=False)),
    Case("istft-window-symmetric", "mutation", "vocoder", "audio_preclamp", "iSTFT with a symmetric Hann window",
         patch_istft_window_symmetric),
    Case("audio-clamp-1.0", "mutation", "vocoder", "audio", "final clamp at 1.0 instead of 0.99",
         patch_attr(lambda c: c.hift.g.cfg, "audio_limit", 1.0)),
]

LEGIT = [
    Case("threads2-sdpa-math", "legit", "DiT", "step1.v1", "2 torch threads and SDPA's math kernel",
         patch_identity, {"attention": "sdpa-math"}, threads=2),
    Case("sdpa-default", "legit", "DiT", "step1.v1", "SDPA, default kernel", patch_identity, {"attention": "sdpa"}),
    Case("fused-rope-adaln-cache", "legit", "DiT", "step1.v1",
         "cached RoPE, all AdaLN modulations in one matmul, per-solve AdaLN cache", patch_identity,
         {"fused_rope": True, "fused_adaln": True, "adaln_cache": True}),
    Case("cfg-two-calls", "legit", "solver", "step1.v1", "CFG as two estimator calls", patch_identity,
         {"cfg_mode": "two-calls"}),
    Case("cfg-algebra", "legit", "solver", "step1.v_cfg", "v1 + r (v1 - v2) instead of (1+r) v1 - r v2",
         patch_step(cfg="rewrite")),
    Case("euler-fused", "legit", "solver", "step1.x", "Euler update as one fused add (alpha=dt)",
         patch_step(euler="fused")),
    Case("contiguous-copies", "legit", "DiT", "step1.v1", "contiguous q/k/v and residual copies",
         patch_block(contiguous=True)),
    Case("layernorm-manual", "legit", "DiT", "step1.v1", "LayerNorm written out (mean, var, rsqrt)",
         patch_block(manual_ln=True)),
    Case("gelu-manual", "legit", "DiT", "step1.v1", "tanh GELU written out", patch_block(manual_gelu=True)),
    Case("rope-positions-from-1", "legit", "DiT", "step1.v1",
         "RoPE positions start at 1 (attention sees position differences only: an equivalent rewrite)",
         patch_rope(offset=1)),
    Case("attn-scale-on-q", "legit", "DiT", "step1.v1", "attention scale applied to q before the product",
         patch_attention(scale_on_q=True)),
    Case("weightnorm-per-call", "legit", "vocoder", "f0", "weight norm re-folded on every call", patch_identity,
         {"fold_weightnorm_once": False}),
    Case("vocoder-length-invariant", "legit", "vocoder", "conv_pre", "vocoder convs in fixed-shape tiles",
         patch_length_invariant),
]

CONTROLS = [
    Case("control:block", "control", "DiT", "-", "the block rewrite with default knobs", patch_block()),
    Case("control:attention", "control", "DiT", "-", "the attention rewrite", patch_attention()),
    Case("control:final-norm", "control", "DiT", "-", "the trunk rewrite", patch_final_norm()),
    Case("control:step", "control", "solver", "-", "the solver step rewrite", patch_step()),
    Case("control:solve", "control", "solver", "-", "the solve rewrite", patch_solve()),
    Case("control:vocoder", "control", "vocoder", "-", "the sine, source and decode rewrites",
         _chain(patch_sine(), patch_source(), patch_decode())),
    Case("control:lookahead", "control", "front end", "-", "the pre-lookahead rewrite", patch_lookahead("none")),
]

# ---------------------------------------------------------------------------------------------
# reduced precision: fp16 ports, each judged as a foreign dump (no switches in its metadata) against the envelope
# of the layout its stored dtypes show. Slips: one of the upstream fp16 fixes missing (the Euler state, the time
# grid, the residual stream or AdaLN in fp16), one block accumulating in fp16, the vocoder's weight norm folded in
# fp16. Legitimate: the emulated layouts themselves, other kernels and threads, more kept in fp32.

def _keep(profile: str, drop=(), add=()) -> tuple:
    from candidate.switches import switches_from

    return tuple(k for k in switches_from(profile).keep_fp32 if k not in drop) + tuple(add)


FP16 = [
    Case("fp16-flow", "legit", "DiT", "step1.v1", "fp16 DiT with the upstream fixes (the emulated fp16-flow layout)",
         patch_identity, profile="fp16-flow"),
    Case("fp16-all", "legit", "vocoder", "step1.v1", "fp16 DiT and fp16 HiFT (the emulated fp16-all layout)",
         patch_identity, profile="fp16-all"),
    Case("fp16-flow-sdpa-math", "legit", "DiT", "step1.v1", "fp16-flow with SDPA's math kernel", patch_identity,
         {"attention": "sdpa-math"}, profile="fp16-flow"),
    Case("fp16-flow-2-threads", "legit", "DiT", "step1.v1", "fp16-flow on 2 torch threads", patch_identity,
         threads=2, profile="fp16-flow"),
    Case("fp16-flow-keep-more", "legit", "DiT", "step1.v1", "fp16-flow keeping the time and input embeddings, "
         "norm_out and proj_out in fp32 too", patch_identity,
         {"keep_fp32": _keep("fp16-flow", add=("time_embed", "input_embed", "norm_out", "proj_out"))},
         profile="fp16-flow"),
    Case("fp16-all-keep-source", "legit", "vocoder", "conv_pre", "fp16-all keeping the source module in fp32",
         patch_identity, {"keep_fp32": _keep("fp16-all", add=("hift.source",))}, profile="fp16-all"),
    Case("fp16-all-cfg-two-calls", "legit", "solver", "step1.v1", "fp16-all with CFG as two estimator calls",
         patch_identity, {"cfg_mode": "two-calls"}, profile="fp16-all"),
    Case("fp16-euler-state", "mutation", "solver", "step1.x", "the Euler state and the time grid in fp16 (the "
         "upstream fix that keeps them fp32 missing)", patch_identity,
         {"keep_fp32": _keep("fp16-all", drop=("euler", "time_grid"))}, profile="fp16-all"),
    Case("fp16-time-grid", "mutation", "solver", "step1.v1", "the time grid in fp16 (t rounded before the Euler "
         "update)", patch_identity, {"keep_fp32": _keep("fp16-flow", drop=("time_grid",))}, profile="fp16-flow"),
    Case("fp16-residual", "mutation", "DiT", "step1.v1", "the DiT residual stream in fp16", patch_identity,
         {"keep_fp32": _keep("fp16-flow", drop=("residual",))}, profile="fp16-flow"),
    Case("fp16-adaln", "mutation", "DiT", "step1.v1", "AdaLN in fp16", patch_identity,
         {"keep_fp32": _keep("fp16-flow", drop=("adaln",))}, profile="fp16-flow"),
    Case("fp16-accumulate-block0-rz", "mutation", "DiT", "step1.v1", "block 0's linears accumulate in fp16, "
         "truncating", patch_identity, profile="fp16-flow", faults=("low-accumulate-block",)),
    Case("fp16-accumulate-block0-rn", "mutation", "DiT", "step1.v1", "block 0's linears accumulate in fp16, "
         "rounding to nearest", patch_identity, profile="fp16-flow", faults=("low-accumulate-block:rounding=rn",)),
    Case("fp16-weightnorm", "mutation", "vocoder", "conv_pre", "HiFT weight norm folded in fp16", patch_identity,
         profile="fp16-all", faults=("hift-fp16-weightnorm",)),
]

ALL = {c.name: c for c in MUTATIONS + LEGIT + CONTROLS + FP16}
