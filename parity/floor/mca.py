"""Monte-Carlo arithmetic (the idea behind Verificarlo and CADNA) on the reference, by perturbation.

Every perturbed result ``y`` becomes ``y * (1 + eps * u)``, ``u ~ U[-1, 1]`` drawn from a seeded generator,
``eps`` the unit roundoff of ``y``'s dtype (2^-24 for float32, 2^-53 for float64: the F0 predictor runs
in float64 as upstream does, and an fp32 perturbation there would model an error no implementation
makes). The product is formed in float64 and rounded back to ``y``'s dtype, so the perturbation is a
random rounding: each element stays or moves to a neighbouring float. Two granularities:

* :class:`ModuleMCA` ("mca-modules"): every module output, through forward hooks. Skipped: pure
  containers (``Sequential``, ``ModuleList``), identities (``Dropout``, ``Identity``) and the ODE solver
  module (``CausalConditionalCFM``), whose outputs are an inner module's output or a copy of it.
* :class:`OpMCA` ("mca-ops", finer): every arithmetic torch function whose result is rounded (matmuls,
  convolutions, reductions, normalisations, transcendental functions, FFTs, interpolation, and
  tensor-by-tensor elementwise arithmetic), through a ``TorchFunctionMode``. Not perturbed: ops that are
  exact (views, copies, indexing, concatenation, padding, comparisons, clamps, products with a 0/1 mask
  such as the voicing mask or the flow's all-ones mask), elementwise ops with a Python scalar (``noise * temperature``, ``1 - x``: a scalar 1 or 0 makes them exact, and perturbing an
  exact result models no implementation), and everything the ODE solver computes itself (the time grid,
  the CFG combination, the Euler update: their inputs are already perturbed, and ``t = 1 - cos(0) = 0`` is
  exact in every implementation, while a perturbed ``t`` near 0 is amplified 1000x by the time embedding).

Both are context managers that leave the model as they found it.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

U = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}

# results that round (the name of the torch function or Tensor method)
ROUNDING_OPS = frozenset({
    "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "conv1d", "conv_transpose1d",
    "scaled_dot_product_attention", "softmax", "log_softmax", "layer_norm", "normalize", "norm",
    "exp", "log", "sin", "cos", "tanh", "sigmoid", "silu", "gelu", "mish", "elu", "softplus",
    "sqrt", "rsqrt", "pow", "cumsum", "sum", "mean", "stft", "istft", "interpolate", "leaky_relu",
})
# elementwise arithmetic: perturbed only when both operands are tensors with more than one element
ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
                         "__rmul__", "__truediv__", "__rtruediv__"})
MULTIPLICATIVE = frozenset({"mul", "__mul__", "__rmul__"})
SKIP_MODULES = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Dropout, nn.Identity)


def solver_types() -> tuple[type, ...]:
    from reference.flow_matching import CausalConditionalCFM

    return (CausalConditionalCFM,)


POOL_SIZE = 1 << 22
_POOL: torch.Tensor | None = None
_POOL32: torch.Tensor | None = None  # the same numbers as 2u - 1 in float32: the signed factor of the perturbation


class RandomStream:
    """Uniform [0, 1) numbers for one member: consecutive windows of one fixed pool of 2^22 float64 values
    (drawn once per process from a fixed seed), starting at an offset the member's seed picks. Slicing a
    pool costs nothing next to drawing from the Mersenne twister at every op (which tripled a run's time);
    members differ by their windows, and a run draws far fewer numbers than the pool holds between wraps
    on the tiny model (more on the full-size one: windows then repeat, shifted, which keeps the
    perturbations' distribution and only correlates far-apart draws)."""

    def __init__(self, seed: int):
        global _POOL, _POOL32
        if _POOL is None:
            _POOL = torch.rand(POOL_SIZE, generator=torch.Generator().manual_seed(0x5EED), dtype=torch.float64)
            _POOL32 = (_POOL * 2.0 - 1.0).float()
        self.pool = _POOL
        self.pos = (int(seed) * 2_654_435_761 + 12_345) % POOL_SIZE  # Knuth's multiplicative hash

    def _take(self, pool: torch.Tensor, shape) -> torch.Tensor:
        return self._flat(pool, math.prod(int(s) for s in shape)).reshape(tuple(shape))

    def _flat(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        out = []
        need = n
        while need > 0:
            take = min(need, POOL_SIZE - self.pos)
            out.append(pool[self.pos:self.pos + take])
            self.pos = (self.pos + take) % POOL_SIZE
            need -= take
        return out[0] if len(out) == 1 else torch.cat(out)

    def rand(self, shape) -> torch.Tensor:
        """U[0, 1) in float64, the next ``prod(shape)`` numbers of this stream."""
        return self._take(self.pool, shape)

    def signed(self, shape, dtype=torch.float32) -> torch.Tensor:
        """The same numbers as :meth:`rand` would give, as ``2u - 1`` (U[-1, 1)): in float32 (rounded) for a float32
        result, in float64 otherwise."""
        if dtype == torch.float32:
            return self._take(_POOL32, shape)
        return self._take(self.pool, shape).mul(2.0).sub_(1.0)


class MemberStreams:
    """The random streams of several members run along the batch axis in one forward
    (:mod:`parity.floor.batched`): a result of shape ``[b0 * n, ...]`` holds member ``i`` in rows
    ``j * n + i`` (``j < b0``; ``b0`` = 1 in the front end and the vocoder, 2 for the DiT's CFG batch), and
    ``rand(shape)`` fills member ``i``'s rows with what its own :class:`RandomStream` would draw for the
    ``[b0, ...]`` result of a sequential run: the same numbers, in the same order."""

    def __init__(self, seeds):
        self.streams = [RandomStream(s) for s in seeds]
        self.only: int | None = None  # set: every draw is member ``only``'s alone (a part run member by member)

    @contextlib.contextmanager
    def member(self, i: int):
        """Draws for member ``i`` alone, for a part of the forward run member by member."""
        self.only = i
        try:
            yield
        finally:
            self.only = None

    def _rows(self, shape, pool: torch.Tensor) -> torch.Tensor:
        n = len(self.streams)
        shape = tuple(int(s) for s in shape)
        if self.only is not None:
            return self.streams[self.only]._take(pool, shape)
        if not shape or shape[0] % n:
            raise RuntimeError(f"batched members: a perturbed result of shape {list(shape)} has no member axis "
                               f"({n} members ride dim 0)")
        b0 = shape[0] // n
        per = math.prod(shape) // n  # one member's numbers, in its own [b0, ...] order
        rows = torch.stack([g._flat(pool, per) for g in self.streams])  # [n, b0 * rest]
        if b0 > 1:
            rows = rows.reshape(n, b0, per // b0).transpose(0, 1)
        return rows.reshape(shape)

    def rand(self, shape) -> torch.Tensor:
        return self._rows(shape, self.streams[0].pool)

    def signed(self, shape, dtype=torch.float32) -> torch.Tensor:
        if dtype == torch.float32:
            return self._rows(shape, _POOL32)
        return self.rand(shape).mul(2.0).sub_(1.0)


def perturb(y, gen: "RandomStream"):
    """``y * (1 + eps * u)`` rounded to ``y``'s dtype; non-float values pass unchanged.

    Computed as ``y + eps * y * u`` in ``y``'s own dtype (one fused ``addcmul``): ``eps * y * u`` is at most half
    an ulp of ``y`` and is formed with a relative error of ``eps``, so the sum rounds to the neighbour of ``y``
    that ``y * (1 + eps * u)`` formed exactly would round to, except within ``eps^2 |y|`` of a rounding tie
    (probability about ``eps`` per element). A float64 evaluation of the same product costs four passes over a
    float64 copy, two thirds of a perturbed run on the tiny model."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.numel() == 0:
        return y
    eps = U.get(y.dtype)
    if eps is None:
        return y
    if y.dtype == torch.float32:
        return torch.addcmul(y, y, gen.signed(y.shape, torch.float32), value=eps)
    f = gen.signed(y.shape, torch.float64).mul_(eps)  # eps * u, u ~ U[-1, 1)
    if y.dtype == torch.float64:
        return y + y * f  # the product is exact enough; the sum rounds to a neighbour or stays
    return y.double().mul_(f.add_(1.0)).to(y.dtype)


def _perturb_tree(out, gen):
    if isinstance(out, tuple):
        return tuple(_perturb_tree(o, gen) for o in out)
    if isinstance(out, list):
        return [_perturb_tree(o, gen) for o in out]
    return perturb(out, gen)


def _modules(roots) -> list[nn.Module]:
    seen, out = set(), []
    for r in roots:
        for m in r.modules():
            if id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


class ModuleMCA(contextlib.AbstractContextManager):
    """Perturb every module output of ``roots`` (see the module docstring for what is skipped)."""

    def __init__(self, roots, seed: int, gen=None):
        self.roots = list(roots)
        self.gen = gen if gen is not None else RandomStream(seed)
        self.handles: list = []
        self.count = 0

    def _hook(self, module, args, out):
        self.count += 1
        return _perturb_tree(out, self.gen)

    def __enter__(self):
        skip = SKIP_MODULES + solver_types()
        for m in _modules(self.roots):
            if not isinstance(m, skip):
                self.handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False


class ModuleStack(contextlib.AbstractContextManager):
    """Tracks which module of ``roots`` is running (innermost last), through pre/post forward hooks."""

    def __init__(self, roots):
        self.roots = list(roots)
        self.stack: list[nn.Module] = []
        self.handles: list = []

    def __enter__(self):
        for m in _modules(self.roots):
            self.handles.append(m.register_forward_pre_hook(lambda mod, args: self.stack.append(mod)))
            self.handles.append(m.register_forward_hook(lambda mod, args, out: self._pop(mod)))
        return self

    def _pop(self, mod):
        if self.stack and self.stack[-1] is mod:
            self.stack.pop()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.stack.clear()
        return False

    @property
    def innermost(self) -> nn.Module | None:
        return self.stack[-1] if self.stack else None


def _is_mask(t: torch.Tensor) -> bool:
    """All elements 0 or 1 (a scan of the first 64 elements first: almost every non-mask fails there)."""
    flat = t.reshape(-1)
    head = flat[:64]
    if not bool(((head == 0) | (head == 1)).all()):
        return False
    return bool(((flat == 0) | (flat == 1)).all())


def _name(func) -> str:
    return getattr(func, "__name__", "") or ""


class _OpMode(TorchFunctionMode):
    def __init__(self, owner: "OpMCA"):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return self.owner.after(func, args, out)


class OpMCA(contextlib.AbstractContextManager):
    """Perturb the result of every rounding torch function (see the module docstring)."""

    def __init__(self, roots, seed: int, gen=None):
        self.gen = gen if gen is not None else RandomStream(seed)
        self.modules = ModuleStack(roots)
        self.solver = solver_types()
        self.count = 0
        self._mode = _OpMode(self)

    def after(self, func, args, out):
        name = _name(func)
        if name not in ROUNDING_OPS and name not in ELEMENTWISE:
            return out
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return out
        if isinstance(self.modules.innermost, self.solver):
            return out
        if name in ELEMENTWISE:
            if not (len(args) >= 2 and all(isinstance(a, torch.Tensor) and a.numel() > 1 for a in args[:2])):
                return out
            if name in MULTIPLICATIVE and any(_is_mask(a) for a in args[:2]):
                return out  # a product with a 0/1 mask (voicing, the all-ones flow mask) is exact
        self.count += 1
        return perturb(out, self.gen)

    def __enter__(self):
        self.modules.__enter__()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self.modules.__exit__(*exc)
        return False
