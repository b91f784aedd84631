"""Reduced-precision emulation on the fp32 reference, after Higham and Pranesh's ``chop`` (2019): values are
rounded to the target format where a low-precision implementation stores them, while every operation
itself still computes (accumulates) in float32. The result is the best case of a correct low-precision
implementation: the error that rounding alone causes.

Formats:

* ``bf16`` (8 significand bits), ``fp16`` (11 bits, max 65504: larger values overflow to inf exactly as a
  real fp16 tensor would): round to nearest (chop mode 1), or stochastically (chop mode 5: up or down
  with probability proportional to the distance), which gives the ensemble of roundings the envelope is
  the maximum of. Only computed results round stochastically (a kernel's summation order decides which
  way its result rounds); casts of operands and inputs round to nearest in every member, as every
  implementation casts them;
* ``int8``: dynamic quantisation of the linears an int8 build quantises (the candidate's
  ``int8_dynamic``: to_q/k/v, to_out, both FFN linears of every block): the weight per tensor,
  symmetric, 127 levels; the activation per tensor, affine over its [min, max], 255 levels (what
  ``quantize_dynamic`` does, without its reduce-range variant); the product accumulates in float32.

Where values are rounded (bf16/fp16), inside the modules in scope and outside the modules kept in fp32:

* every input, weight and output of a matmul-like op (linear, matmul, bmm, einsum, conv1d,
  conv_transpose1d, scaled-dot-product attention): the operands a low-precision kernel reads and the
  result it stores, the kernel's accumulator staying fp32;
* every module output (module boundaries: the activations a low-precision implementation stores), but
  for the DiT blocks' outputs when the residual stream is kept in fp32 (the upstream fp16 fix);
* every result of an op whose floating operands are all low-precision values (with Python scalars):
  PyTorch's type promotion keeps such results in the low dtype (``1000 * t`` of the time embedding,
  GELU of a linear's output, the attention's ``scores * scale``), and its CPU half/bfloat16 kernels
  compute them in fp32 and round the result, which is what the emulation does; an operand in fp32 makes
  the result fp32 (the fp32 residual stream plus a low-precision branch), and an explicit ``.float()`` or
  ``.to()`` leaves low precision;
* the DiT's inputs: upstream's AMP builds the CFG batch (x, mu, t, spks, cond) in the dtype of ``spks``,
  i.e. fp16, and so do the candidate's low-precision profiles, so the time t reaches the time embedding
  rounded to fp16 (an error of up to 1.8e-4 in t, 0.18 rad after the embedding's 1000 x; measured on the
  tiny model, leaving it out of the emulation put the fp16-flow profile at up to 36x the envelope at the
  steps where t rounds worst). Other module inputs are either outputs already rounded or tables a
  low-precision build keeps in fp32 (the RoPE angles, the attention mask).

The scope follows a candidate's switches (:func:`spec_from_switches`): ``flow_dtype`` puts the flow's
front end and the DiT in scope, ``hift_dtype`` the vocoder's modules; ``keep_fp32`` names map onto the
reference's modules (``adaln`` -> every ``attn_norm``, ``ff_norm`` and ``norm_out``; ``time_embed``;
``input_embed`` -> the DiT's input embedding and the flow front end; ``block3.attn``; ``hift.ups``; ...).
The solver's own arithmetic (time grid, CFG combination, Euler update) is outside every module, so it
stays fp32, as the upstream fp16 fixes keep it. The vocoder's iSTFT post-processing (exp, sin, iSTFT) and
its sine source phase are not modules either: they stay fp32 in the emulation (``hift.istft`` is kept by
every shipped fp16 vocoder profile).
"""

from __future__ import annotations

import contextlib
import fnmatch
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .mca import ModuleStack, RandomStream, _name

FORMATS = {"bf16": (torch.bfloat16, 8, -126), "fp16": (torch.float16, 11, -14)}  # (dtype, precision p, emin)
# the reference uses einsum only for the RoPE angle table, which low-precision builds keep in fp32
MATMUL_OPS = frozenset({"linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "conv1d", "conv_transpose1d",
                        "scaled_dot_product_attention"})
UPCASTS = frozenset({"float", "double", "to", "type", "type_as"})  # an explicit cast leaves low precision
INT8_LINEARS = ("*.attn.to_q", "*.attn.to_k", "*.attn.to_v", "*.attn.to_out.0", "*.ff.ff.0.0", "*.ff.ff.2")

# keep_fp32 component -> module-name globs of the reference (relative to the flow or the vocoder)
_FLOW_KEEP = {
    "adaln": ["decoder.estimator.transformer_blocks.*.attn_norm", "decoder.estimator.transformer_blocks.*.ff_norm",
              "decoder.estimator.norm_out"],
    "time_embed": ["decoder.estimator.time_embed"],
    "input_embed": ["decoder.estimator.input_embed", "input_embedding", "spk_embed_affine_layer",
                    "pre_lookahead_layer"],
    "norm_out": ["decoder.estimator.norm_out"],
    "proj_out": ["decoder.estimator.proj_out"],
}
_HIFT_KEEP = {
    "hift.f0_predictor": ["f0_predictor"], "hift.source": ["m_source"], "hift.conv_pre": ["conv_pre"],
    "hift.ups": ["ups"], "hift.source_fusion": ["source_downs", "source_resblocks"], "hift.resblocks": ["resblocks"],
    "hift.conv_post": ["conv_post"],
}


@dataclass(frozen=True)
class PrecisionSpec:
    """Which format, where. ``flow``/``hift``: the part runs in ``fmt``; ``keep``: module-name globs (prefixed
    ``flow.`` or ``hift.``) that stay fp32; ``residual_fp32``: DiT block outputs are not rounded."""

    fmt: str
    flow: bool = True
    hift: bool = False
    keep: tuple[str, ...] = ()
    residual_fp32: bool = False
    int8_linears: tuple[str, ...] = INT8_LINEARS

    def __post_init__(self):
        if self.fmt not in ("bf16", "fp16", "int8"):
            raise ValueError(f"precision format {self.fmt!r} is not one of bf16, fp16, int8")

    def to_dict(self) -> dict:
        return {"fmt": self.fmt, "flow": self.flow, "hift": self.hift, "keep": list(self.keep),
                "residual_fp32": self.residual_fp32, "int8_linears": list(self.int8_linears) if self.fmt == "int8" else []}


def spec_from_switches(sw) -> PrecisionSpec:
    """The emulation matching a candidate's :class:`candidate.switches.Switches`."""
    if sw.int8_dynamic:
        return PrecisionSpec("int8", flow=True, hift=False)
    fmt = sw.precision
    if fmt == "fp32":
        raise ValueError("an fp32 candidate has no reduced-precision envelope: use the fp32 noise floor")
    keep: list[str] = []
    for k in sw.keep_fp32:
        if k in _FLOW_KEEP:
            keep += ["flow." + g for g in _FLOW_KEEP[k]]
        elif k in _HIFT_KEEP:
            keep += ["hift." + g for g in _HIFT_KEEP[k]]
        elif k.startswith("block"):
            head, _, part = k.partition(".")
            base = f"flow.decoder.estimator.transformer_blocks.{head[5:]}"
            if part == "":
                keep.append(base)
            elif part == "adaln":
                keep += [base + ".attn_norm", base + ".ff_norm"]
            else:
                keep.append(f"{base}.{part}")
    return PrecisionSpec(fmt, flow=sw.flow_dtype != "fp32", hift=sw.hift_dtype != "fp32", keep=tuple(keep),
                         residual_fp32=sw.keeps("residual"))


# ---------------------------------------------------------------------------------------------
# rounding

def round_float(x: torch.Tensor, fmt: str, gen: RandomStream | None = None) -> torch.Tensor:
    """``x`` rounded to ``fmt`` (bf16/fp16) and back to its own dtype: to nearest, or stochastically when
    ``gen`` is given (x + (v - 1/2) ulp(x), v ~ U[0, 1), then to nearest: the upper neighbour with
    probability (x - lower) / ulp; ulp from x's binade, so exact inside a binade and within one ulp at
    its edges)."""
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        return x
    low, p, emin = FORMATS[fmt]
    if gen is None:
        return x.to(low).to(x.dtype)
    xd = x.double()
    _, e = torch.frexp(xd)  # x = m 2^e, 0.5 <= |m| < 1
    e = torch.where(xd == 0, torch.full_like(e, emin + 1), e)  # 0 (and the subnormals) use the finest spacing
    ulp = torch.ldexp(torch.ones_like(xd), (torch.clamp(e - 1, min=emin) - (p - 1)).to(torch.int32))
    v = gen.rand(x.shape)
    return (xd + (v - 0.5) * ulp).to(low).to(x.dtype)


def quantize_int8(x: torch.Tensor, symmetric: bool, gen: RandomStream | None = None) -> torch.Tensor:
    """Per-tensor int8 fake quantisation: symmetric over [-max|x|, max|x|] with 127 levels a side (weights),
    or affine over [min(x, 0), max(x, 0)] with 255 levels (activations); to nearest or stochastically."""
    xd = x.double()
    if symmetric:
        scale = float(xd.abs().max()) / 127.0
        zero, lo, hi = 0.0, -127.0, 127.0
    else:
        mn, mx = min(float(xd.min()), 0.0), max(float(xd.max()), 0.0)
        scale = (mx - mn) / 255.0
        zero = round(-mn / scale) if scale > 0 else 0.0
        lo, hi = 0.0, 255.0
    if scale == 0.0:
        return x
    q = xd / scale + zero
    q = torch.floor(q + gen.rand(q.shape)) if gen is not None else torch.round(q)
    return ((torch.clamp(q, lo, hi) - zero) * scale).to(x.dtype)


class _ChopMode(TorchFunctionMode):
    def __init__(self, owner: "Chop"):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.owner.call(func, args, kwargs or {})


class Chop(contextlib.AbstractContextManager):
    """Run the reference (``flow``, ``hift`` modules) with the roundings of ``spec``; ``seed`` None rounds
    to nearest, a seed rounds stochastically."""

    def __init__(self, flow: nn.Module, hift: nn.Module, spec: PrecisionSpec, seed: int | None = None, gen=None):
        self.spec = spec
        self.gen = gen if gen is not None else (RandomStream(seed) if seed is not None else None)
        self.named: dict[int, str] = {}
        for prefix, root in (("flow", flow), ("hift", hift)):
            for n, m in root.named_modules():
                self.named[id(m)] = f"{prefix}.{n}" if n else prefix
        self.roots = [flow, hift]
        self.stack = ModuleStack(self.roots)
        self.handles: list = []
        self._mode = _ChopMode(self)
        self.count = 0
        self.low: dict[int, weakref.ref] = {}  # tensors that hold low-precision values (by id, weakly)

    # -- where --------------------------------------------------------------------------------
    def _in_scope(self, name: str | None) -> bool:
        if name is None:
            return False
        part = name.split(".", 1)[0]
        if not ((part == "flow" and self.spec.flow) or (part == "hift" and self.spec.hift)):
            return False
        return not any(name == g or fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(name, g + ".*")
                       for g in self.spec.keep)

    def _current(self) -> str | None:
        m = self.stack.innermost
        return self.named.get(id(m)) if m is not None else None

    # -- what -----------------------------------------------------------------------------------
    def _is_low(self, t) -> bool:
        return id(t) in self.low

    def _mark(self, t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            i = id(t)
            self.low[i] = weakref.ref(t, lambda _r, i=i: self.low.pop(i, None))
        return t

    def _round(self, x, result: bool = True):
        """Round ``x`` and mark it low-precision; stochastically (for a stochastic member) only when it is a
        computed ``result``: a cast of an operand or an input rounds to nearest in every implementation."""
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64:
            self.count += 1
            return self._mark(round_float(x, self.spec.fmt, self.gen if result else None))
        return x

    def _float_inputs(self, args, kwargs) -> list:
        out = []
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, (list, tuple)):
                out += [x for x in a if isinstance(x, torch.Tensor) and x.is_floating_point()]
            elif isinstance(a, torch.Tensor) and a.is_floating_point():
                out.append(a)
        return out

    def call(self, func, args, kwargs):
        name = _name(func)
        cur = self._current()
        if self.spec.fmt == "int8":
            if name == "linear" and cur is not None and self._in_scope(cur) and any(
                    fnmatch.fnmatchcase(cur, g) for g in self.spec.int8_linears):
                x, w = args[0], args[1]
                b = args[2] if len(args) > 2 else kwargs.get("bias")
                self.count += 1
                return func(quantize_int8(x, False, self.gen), quantize_int8(w, True, self.gen), b)
            return func(*args, **kwargs)
        if not self._in_scope(cur):
            return func(*args, **kwargs)
        if name in MATMUL_OPS:
            args = tuple(self._round(a, False) for a in args)
            kwargs = {k: self._round(v, False) for k, v in kwargs.items()}
            return self._round(func(*args, **kwargs))
        out = func(*args, **kwargs)
        if name in UPCASTS or (name.endswith("_") and not name.endswith("__")) or not isinstance(out, torch.Tensor) \
                or not out.is_floating_point():
            return out
        ins = self._float_inputs(args, kwargs)
        if ins and all(self._is_low(t) for t in ins):
            return self._round(out)  # type promotion: low-precision operands (and scalars) give a low result
        return out

    def _boundary(self, module) -> bool:
        """Whether ``module``'s inputs and outputs are rounded (a module boundary in scope)."""
        if not self._in_scope(self.named.get(id(module))) or isinstance(module, (nn.Sequential, nn.ModuleList,
                                                                                  nn.Dropout, nn.Identity)):
            return False
        from reference.dit import DiTBlock
        from reference.flow_matching import CausalConditionalCFM

        return not (isinstance(module, CausalConditionalCFM) or (self.spec.residual_fp32 and isinstance(module, DiTBlock)))

    def _pre_hook(self, module, args):
        return tuple(self._round(a, False) for a in args)

    def _hook(self, module, args, out):
        if isinstance(out, tuple):
            return tuple(self._round(o) for o in out)
        return self._round(out)

    def __enter__(self):
        from reference.dit import DiT

        self.stack.__enter__()
        if self.spec.fmt != "int8":
            seen = set()
            for root in self.roots:
                for m in root.modules():
                    if id(m) not in seen and self._boundary(m):
                        seen.add(id(m))
                        if isinstance(m, DiT):  # the CFG batch enters the estimator in the low dtype
                            self.handles.append(m.register_forward_pre_hook(self._pre_hook))
                        self.handles.append(m.register_forward_hook(self._hook))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.stack.__exit__(*exc)
        return False
