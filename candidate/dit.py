"""The candidate DiT: the reference's weights and module names, with the optimizations people ship
as switches (attention kernel, precision islands, cached RoPE, fused AdaLN, int8, torch.compile)
and the catalogue's faults injectable at well-defined places.

The module tree is a copy of the reference :class:`reference.dit.DiT`, so checkpoints and key names
are the same; only ``forward`` differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import copy
import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from reference.dit import DiT, rotate_half_interleaved
from reference.probe import NO_PROBE, Probe

from .faults import ActiveFaults
from .provenance import KernelLog, classify

if TYPE_CHECKING:  # the switches are data here (annotations only)
    from .switches import Switches

DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_SDPA_BACKENDS = {"sdpa-math": "MATH", "sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                  "sdpa-cudnn": "CUDNN_ATTENTION"}


class Precision:
    """Where each component runs: the flow dtype, or fp32 when the switches keep it there."""

    def __init__(self, sw: Switches, low: str, device: str):
        self.sw = sw
        self.low = DTYPE[low]
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.reduced = self.low != torch.float32

    def dtype(self, component: str) -> torch.dtype:
        if not self.reduced or self.sw.keeps(component):
            return torch.float32
        return self.low

    def region(self, component: str):
        """Context for running ``component``: autocast to the low dtype, or fp32 with autocast off."""
        if not self.reduced or self.sw.precision_mode == "cast":
            return contextlib.nullcontext()
        if self.dtype(component) == torch.float32:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.low)

    def inputs(self, component: str, *ts):
        """Cast inputs for ``component``: fp32 islands get fp32 (autocast off does not upcast by itself);
        in cast mode, everything gets the component's dtype."""
        dt = self.dtype(component)
        if dt == torch.float32 or self.sw.precision_mode == "cast":
            return tuple(t.to(dt) if t is not None and t.is_floating_point() else t for t in ts)
        return ts


def _quantize_linears(module: nn.Module, names: list[str]) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(module, set(names), dtype=torch.qint8)


class CandidateDiT(nn.Module):
    def __init__(self, ref: DiT, sw: Switches, faults: ActiveFaults, kernels: KernelLog, device: str = "cpu"):
        super().__init__()
        self.net = copy.deepcopy(ref)
        self.cfg = ref.cfg
        self.sw = sw
        self.faults = faults
        self.kernels = kernels
        self.prec = Precision(sw, sw.flow_dtype, device)
        self.depth = len(self.net.transformer_blocks)
        if sw.int8_dynamic:
            per_token = [f"transformer_blocks.{i}.{n}" for i in range(self.depth)
                         for n in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.ff.0.0", "ff.ff.2")]
            self.net = _quantize_linears(self.net, per_token)  # AdaLN/time linears act on [2, D]: left fp32
        if self.prec.reduced and sw.precision_mode == "cast":
            self._cast_components()
        self.net.to(device)
        self._fused_mod = None
        if sw.fused_adaln:
            self._build_fused_adaln()
        self._rope_cache: dict = {}
        self._compiled = None
        self._tracing = False
        self._mod_cache: dict = {}

    def reset_run_counts(self) -> None:
        """(The estimator interface of candidate.backends: the kernels that ran are the pipeline's KernelLog.)"""

    # -- construction helpers ----------------------------------------------------------------------
    def _cast_components(self) -> None:
        n = self.net
        for name, mod in [("time_embed", n.time_embed), ("input_embed", n.input_embed), ("norm_out", n.norm_out),
                          ("proj_out", n.proj_out)]:
            mod.to(self.prec.dtype(name))
        for i, b in enumerate(n.transformer_blocks):
            b.attn_norm.to(self.prec.dtype(f"block{i}.adaln" if not self.sw.keeps("adaln") else "adaln"))
            b.attn.to(self.prec.dtype(f"block{i}.attn"))
            b.ff.to(self.prec.dtype(f"block{i}.ff"))

    def _build_fused_adaln(self) -> None:
        """All blocks' AdaLN-Zero linears (and norm_out's) as one [(6*depth + 2) * D, D] matmul."""
        lins = [b.attn_norm.linear for b in self.net.transformer_blocks] + [self.net.norm_out.linear]
        w = torch.cat([lin.weight.detach().float() for lin in lins], 0)
        b = torch.cat([lin.bias.detach().float() for lin in lins], 0)
        self.register_buffer("fused_adaln_w", w, persistent=False)
        self.register_buffer("fused_adaln_b", b, persistent=False)
        self._fused_sizes = [lin.weight.shape[0] for lin in lins]

    # -- pieces -------------------------------------------------------------------------------------
    def _adaln_component(self, i: int) -> str:
        return "adaln" if self.sw.keeps("adaln") else f"block{i}.adaln"

    def _modulations(self, c: torch.Tensor) -> list[torch.Tensor]:
        """The [B, 6D] modulation of each block and the [B, 2D] of norm_out."""
        if self.sw.fused_adaln:
            comp = "adaln" if self.sw.keeps("adaln") else "block0.adaln"
            with self.prec.region(comp):
                (cc,) = self.prec.inputs(comp, c)
                w, b = self.fused_adaln_w.to(cc.dtype if self.sw.precision_mode == "cast" else torch.float32), None
                b = self.fused_adaln_b.to(w.dtype)
                m = F.linear(F.silu(cc), w, b)
            return list(torch.split(m, self._fused_sizes, dim=1))
        out = []
        for i, blk in enumerate(self.net.transformer_blocks):
            comp = self._adaln_component(i)
            with self.prec.region(comp):
                (cc,) = self.prec.inputs(comp, c)
                out.append(blk.attn_norm.linear(F.silu(cc)))
        comp = "adaln" if self.sw.keeps("adaln") else "norm_out"
        with self.prec.region(comp):
            (cc,) = self.prec.inputs(comp, c)
            out.append(self.net.norm_out.linear(F.silu(cc)))
        return out

    def _rope(self, T: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(freqs [T, 64] interleaved, cos, sin): cached per length when fused_rope is on."""
        key = (T, str(device))
        if self.sw.fused_rope and key in self._rope_cache:
            return self._rope_cache[key]
        inv = self.net.rotary_embed.inv_freq.float().to(device)
        t = torch.arange(T, device=device, dtype=torch.float32)
        freqs = torch.einsum("i,j->ij", t, inv)
        mode = self.faults.override("rope_mode", "interleaved")
        freqs = torch.cat((freqs, freqs), -1) if mode == "half-split" else torch.stack((freqs, freqs), -1).flatten(-2)
        val = (freqs, freqs.cos(), freqs.sin())
        if self.sw.fused_rope:
            self._rope_cache[key] = val
        return val

    def _apply_rope(self, q: torch.Tensor, rope) -> torch.Tensor:
        freqs, cos, sin = rope
        rot = freqs.shape[-1]
        mode = self.faults.override("rope_mode", "interleaved")
        if mode == "all-heads":  # fault: every head rotates
            B, T, D = q.shape
            qh = q.float().view(B, T, D // rot, rot)
            out = qh * cos[:, None, :] + rotate_half_interleaved(qh) * sin[:, None, :]
            return out.view(B, T, D).to(q.dtype)
        head = q[..., :rot].float()
        if mode == "half-split":  # fault: NeoX layout
            x1, x2 = head.chunk(2, dim=-1)
            rh = torch.cat((-x2, x1), dim=-1)
        else:
            rh = rotate_half_interleaved(head)
        if self.sw.fused_rope:
            new = head * cos + rh * sin  # cached cos/sin, rotated slice only (same values as * 1.0 twice)
        else:
            new = (head * freqs.cos() * 1.0) + (rh * freqs.sin() * 1.0)
        return torch.cat((new.to(q.dtype), q[..., rot:]), dim=-1)

    def _attention(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        """q/k/v [B, H, T, Dh]. Runs the requested kernel and records what executed."""
        mode = self.faults.override("mask_mode", None)
        scale = 1.0 / math.sqrt(q.shape[-1])
        if mode == "additive-fp16":  # fault: upstream's all-True mask turned additive in fp16 -> 0 * -inf = NaN
            full = mask if mask is not None else torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool, device=q.device)
            big = torch.full((), -1e10, dtype=torch.float16, device=q.device)  # -1e10 in fp16 is -inf
            add = (1 - full.to(torch.float16)) * big  # attended positions: 0 * -inf = NaN
            scores = torch.matmul(q, k.transpose(-2, -1)) * scale + add.to(q.dtype)
            self.kernels.add("explicit")
            return torch.matmul(torch.softmax(scores, -1), v)
        att = self.sw.attention
        if att == "explicit":
            self.kernels.add("explicit")
            return _explicit(q, k, v, mask, scale)
        try:
            if att == "flash-attn":
                return self._flash_attn_pkg(q, k, v, mask)
            ctx = contextlib.nullcontext()
            if att in _SDPA_BACKENDS:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                ctx = sdpa_kernel([getattr(SDPBackend, _SDPA_BACKENDS[att])])
            if self._tracing:  # inside torch.compile: no dispatch spy
                with ctx:
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
            spy = self.kernels.spy()
            with ctx, spy:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
            self.kernels.add(classify(spy.ops))
            return out
        except (RuntimeError, ImportError, NotImplementedError) as exc:
            if not self.sw.attention_fallback:
                raise
            self.kernels.fallback(att, str(exc).strip().splitlines()[0][:200])
            self.kernels.add("explicit")
            return _explicit(q, k, v, mask, scale)  # the field's "sdpa failed, falling back to manual path"

    def _flash_attn_pkg(self, q, k, v, mask):
        try:
            from flash_attn import flash_attn_func  # type: ignore
        except ImportError as exc:
            raise ImportError("the flash-attn package is not installed") from exc
        if mask is not None:
            raise RuntimeError("flash-attn cannot take the streaming chunk mask")
        if not q.is_cuda:
            raise RuntimeError("flash-attn runs on CUDA only")
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        self.kernels.add("flash-attn")
        return out.transpose(1, 2)

    def _block(self, i: int, blk, h, c_mod, mask, rope, probe: Probe, step):
        prec = self.prec
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = torch.chunk(c_mod, 6, dim=1)
        ad = self._adaln_component(i)
        with prec.region(ad):
            hh, sm, sh = prec.inputs(ad, h, scale_msa, shift_msa)
            norm = F.layer_norm(hh, (hh.shape[-1],), eps=1e-6) * (1 + sm[:, None]) + sh[:, None]
        acc = self.faults.override("low_accumulate_block", None)
        lin = functools.partial(_low_accumulate, rounding=acc[1]) if acc is not None and acc[0] == i else _call
        comp = f"block{i}.attn"
        with prec.region(comp):
            (x,) = prec.inputs(comp, norm)
            a = blk.attn
            B = x.shape[0]
            q, k, v = lin(a.to_q, x), lin(a.to_k, x), lin(a.to_v, x)
            q, k = self._apply_rope(q, rope), self._apply_rope(k, rope)
            q, k, v = (z.view(B, -1, a.heads, a.dim_head).transpose(1, 2) for z in (q, k, v))
            o = self._attention(q, k, v, mask)
            o = lin(a.to_out[0], o.transpose(1, 2).reshape(B, -1, a.heads * a.dim_head))
        h = self._residual_add(h, gate_msa, o)
        with prec.region(ad):
            hh, sm, sh = prec.inputs(ad, h, scale_mlp, shift_mlp)
            ffn_in = F.layer_norm(hh, (hh.shape[-1],), eps=1e-6) * (1 + sm[:, None]) + sh[:, None]
        comp = f"block{i}.ff"
        with prec.region(comp):
            (x,) = prec.inputs(comp, ffn_in)
            if lin is _call:
                f = blk.ff(x)
            else:  # FeedForward = Sequential(Sequential(Linear, GELU), Dropout, Linear), its linears by hand
                up, act = blk.ff.ff[0][0], blk.ff.ff[0][1]
                f = lin(blk.ff.ff[2], act(lin(up, x)))
        return self._residual_add(h, gate_mlp, f)

    def _residual_add(self, h, gate, out):
        if self.prec.reduced and self.sw.keeps("residual"):
            return h.float() + gate.float().unsqueeze(1) * out.float()
        if self.prec.reduced:
            return (h + gate.unsqueeze(1) * out).to(self.prec.low)
        return h + gate.unsqueeze(1) * out

    # -- forward --------------------------------------------------------------------------------
    def _time_condition(self, t: torch.Tensor) -> torch.Tensor:
        """c = time_mlp(sinusoidal(t * 1000)): the only input of the AdaLN modulations."""
        prec = self.prec
        with prec.region("time_embed"):
            (tt,) = prec.inputs("time_embed", t)
            te = self.net.time_embed
            temb = te.time_embed(tt, scale=self.faults.override("time_scale", 1000)).to(tt.dtype)
            return te.time_mlp(temb)

    def cache_modulations(self, ts: list[torch.Tensor]) -> None:
        """``adaln_cache``: the modulations depend on t alone, and the solver's t values are known before it
        starts, so compute them for every step in one batched matmul (the [n, D] x [D, (6 depth + 2) D]
        product reads the AdaLN weights once per solve instead of once per step). ``forward`` uses an entry
        when every row's t equals it bit for bit; anything else (step-local runs, other grids) recomputes."""
        if not ts:
            self._mod_cache = {}
            return
        t = torch.stack([x.reshape(()) for x in ts])
        mods = self._modulations(self._time_condition(t))
        self._mod_cache = {float(ts[i].reshape(())): [m[i:i + 1] for m in mods] for i in range(len(ts))}

    def clear_modulations(self) -> None:
        self._mod_cache = {}

    def _cached_modulations(self, t: torch.Tensor):
        if not self._mod_cache:
            return None
        key = float(t[0])
        hit = self._mod_cache.get(key)
        if hit is None or not bool((t == t[0]).all()):
            return None
        return [m.expand(t.shape[0], -1).contiguous() for m in hit]

    def forward(self, x, mask, mu, t, spks, cond, streaming: bool = False, probe: Probe = NO_PROBE, step: int = 0):
        net, prec = self.net, self.prec
        x, mu, cond = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2)
        if t.ndim == 0:
            t = t.repeat(x.shape[0])
        mods = self._cached_modulations(t)
        if mods is None:
            mods = self._modulations(self._time_condition(t))
        with prec.region("input_embed"):
            xx, cc, mm, ss = prec.inputs("input_embed", x, cond, mu, spks)
            h = net.input_embed(xx, cc, mm, ss)
        if prec.reduced:
            h = h.float() if self.sw.keeps("residual") else h.to(prec.low)
        rope = self._rope(h.shape[1], h.device)
        attn_mask = net.attention_mask(h.shape[1], streaming, h.device)  # the reference's rule, from the config
        if self.sw.compile and not probe.wants("block0") and not self.faults:
            out = self._compiled_trunk(h, mods, attn_mask, rope)
        else:
            out = self._trunk(h, mods, attn_mask, rope, probe, step)
        return out.transpose(1, 2)

    def _trunk(self, h, mods, attn_mask, rope, probe: Probe = NO_PROBE, step: int = 0):
        """The blocks, the final AdaLN and proj_out: what torch.compile compiles (a pure tensor function)."""
        net, prec = self.net, self.prec
        for i, blk in enumerate(net.transformer_blocks):
            h = self._block(i, blk, h, mods[i], attn_mask, rope, probe, step)
            h = self.faults.hook("block", h, step=step, block=i)
            if probe:
                probe(f"block{i}", h)
        comp = "adaln" if self.sw.keeps("adaln") else "norm_out"
        scale, shift = torch.chunk(mods[-1], 2, dim=1)
        with prec.region(comp):
            hh, sc, sh = prec.inputs(comp, h, scale, shift)
            h = F.layer_norm(hh, (hh.shape[-1],), eps=1e-6) * (1 + sc)[:, None, :] + sh[:, None, :]
        with prec.region("proj_out"):
            (hh,) = prec.inputs("proj_out", h)
            return net.proj_out(hh)

    def _compiled_trunk(self, h, mods, attn_mask, rope):
        if self._compiled is None:
            self._compiled = torch.compile(self._trunk, dynamic=True)
        saved, self.kernels, self._tracing = self.kernels, _NULL_KERNELS, True  # no dispatch spy inside the graph
        try:
            out = self._compiled(h, mods, attn_mask, rope)
        finally:
            self.kernels, self._tracing = saved, False
        # inductor chooses the kernel inside the graph: recorded as compiled, with the requested backend
        self.kernels.add("compiled:" + self.sw.attention, self.depth)
        return out


class _NullKernels(KernelLog):
    def add(self, kernel: str, n: int = 1) -> None:
        pass


_NULL_KERNELS = _NullKernels()


def _call(mod, x):
    return mod(x)


def _round_toward_zero(x: torch.Tensor, low: torch.dtype) -> torch.Tensor:
    r = x.to(low)
    return torch.where(r.float().abs() > x.abs(), torch.nextafter(r, torch.zeros_like(r)), r)


def _low_accumulate(mod, x, low: torch.dtype = torch.float16, rounding: str = "rz"):
    """Fault ``low-accumulate-block``: ``mod`` (a Linear) computed as a GEMM that keeps its running sum in
    ``low`` precision: operands rounded to ``low``, every product exact in fp32, the sum rounded to ``low``
    after each of the K terms, toward zero (``rz``: truncating additions, what Fasi, Higham, Mikaitis and
    Pranesh (2021) measured inside NVIDIA tensor cores) or to nearest (``rn``); then the bias."""
    if rounding not in ("rz", "rn"):
        raise ValueError(f"fault low-accumulate-block: rounding must be rz or rn, got {rounding!r}")
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise RuntimeError(f"fault low-accumulate-block needs float linears, got {type(mod).__name__}")
    with torch.autocast(x.device.type, enabled=False):
        xs, ws = x.to(low).float(), w.to(low).float()
        acc = torch.zeros(*x.shape[:-1], w.shape[0], dtype=low, device=x.device)
        for j in range(w.shape[1]):
            s = acc.float() + xs[..., j:j + 1] * ws[:, j]
            acc = _round_toward_zero(s, low) if rounding == "rz" else s.to(low)
        out = acc.float() + mod.bias.float() if mod.bias is not None else acc.float()
    return out.to(low) if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)  # the dtype a linear gives


def _explicit(q, k, v, mask, scale):
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)
