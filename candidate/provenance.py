"""Which attention kernel actually ran: counted per call, from the aten ops the dispatcher executed.

``F.scaled_dot_product_attention`` is a composite op: PyTorch picks a backend at run time and
dispatches to a backend-specific aten op. A :class:`TorchDispatchMode` active only around the call
sees that op, so the count is of what executed, not of what was requested:

=================================================  =====================
aten op seen                                       kernel name recorded
=================================================  =====================
``_scaled_dot_product_flash_attention_for_cpu``    ``flash-cpu``
``_scaled_dot_product_flash_attention``            ``flash``
``_scaled_dot_product_efficient_attention``        ``efficient``
``_scaled_dot_product_cudnn_attention``            ``cudnn``
``_scaled_dot_product_attention_math``/softmax     ``math``
=================================================  =====================

The candidate's own matmul-softmax is recorded as ``explicit``, the ``flash_attn`` package as
``flash-attn``, and a call whose requested kernel failed as ``explicit`` plus a fallback entry.
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

_FUSED = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash-cpu",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_flash_attention_forward": "flash",
    "_efficient_attention_forward": "efficient",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_attention_math_for_mps": "math",
}
_MATH = {"_safe_softmax", "_softmax", "softmax"}


class _OpSpy(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops.append(name)
        if name == "scaled_dot_product_attention":
            # Under inference_mode the composite op reaches us undecomposed: run its decomposition under a
            # nested spy to see the backend op it dispatches to (the choice PyTorch really made).
            inner = _OpSpy()
            with inner:
                out = func.decompose(*args, **(kwargs or {}))
            self.ops.extend(inner.ops)
            if out is not NotImplemented:
                return out
        return func(*args, **(kwargs or {}))


def classify(ops: list[str]) -> str:
    for op in ops:
        if op in _FUSED:
            return _FUSED[op]
    if any(op in _MATH for op in ops):
        return "math"
    return "unknown"


class KernelLog:
    """Counts of attention kernels that executed, and the fallbacks that happened."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.fallbacks: list[dict] = []

    def spy(self) -> _OpSpy:
        return _OpSpy()

    def add(self, kernel: str, n: int = 1) -> None:
        self.counts[kernel] += n

    def fallback(self, requested: str, reason: str) -> None:
        if not any(f["requested"] == requested and f["reason"] == reason for f in self.fallbacks):
            self.fallbacks.append({"requested": requested, "reason": reason, "count": 0})
        for f in self.fallbacks:
            if f["requested"] == requested and f["reason"] == reason:
                f["count"] += 1

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "fallbacks": list(self.fallbacks)}


def kernel_matches(required: str, kernel: str) -> bool:
    """``flash`` matches ``flash`` and ``flash-cpu``; otherwise names must be equal."""
    return kernel == required or kernel.startswith(required + "-")


def check_required_kernel(required: str, log: dict) -> str | None:
    """None when every attention call ran ``required``; otherwise the message to fail with."""
    counts = {k: v for k, v in (log.get("counts") or {}).items() if v}
    total = sum(counts.values())
    ran = sum(v for k, v in counts.items() if kernel_matches(required, k))
    if total and ran == total:
        return None
    others = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()) if not kernel_matches(required, k)) or "none"
    why = "; ".join(f"requested {f['requested']} failed {f['count']}x: {f['reason']}" for f in log.get("fallbacks", []))
    return (f"required attention kernel '{required}' ran in {ran} of {total} attention calls; ran instead: {others}"
            + (f" ({why})" if why else ""))
