"""The recorder that pipelines report their stages to (capture -> trace).

``Recorder.wants(name)`` decides from glob patterns which stages are kept; ``record`` copies the tensor
to the CPU (the only place a probe costs anything) and appends it to a :class:`TraceWriter` when one is
attached. Default patterns keep every canonical stage; per-block DiT outputs and HiFT internals are
opt-in (``+step*.block*``, ``+hift.*`` or ``all``).
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable

import torch

from ..stages import DEFAULT_PATTERNS
from ..trace import TraceWriter

def parse_stage_patterns(spec: str | Iterable[str] | None) -> list[str]:
    """``None`` -> defaults; ``"all"`` -> everything; ``"+a,+b"`` -> defaults plus a, b; ``"a,b"`` -> only a, b."""
    if spec is None:
        return list(DEFAULT_PATTERNS)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if items == ["all"]:
        return ["*"]
    if items and all(i.startswith("+") for i in items):
        return list(DEFAULT_PATTERNS) + [i[1:] for i in items]
    return [i.lstrip("+") for i in items]


class Recorder:
    def __init__(self, patterns: str | Iterable[str] | None = None, writer: TraceWriter | None = None,
                 keep: bool = True, on_record: Callable[[str, torch.Tensor], None] | None = None):
        self.patterns = parse_stage_patterns(patterns)
        self.writer = writer
        self.keep = keep
        self.on_record = on_record
        self.tensors: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self._cache: dict[str, bool] = {}

    def wants(self, name: str) -> bool:
        hit = self._cache.get(name)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            self._cache[name] = hit
        return hit

    def record(self, name: str, tensor: torch.Tensor) -> None:
        t = tensor.detach().to("cpu", copy=True)
        if self.writer is not None:
            self.writer.add(name, t)
        if self.keep:
            self.tensors[name] = t
        self.order.append(name)
        if self.on_record is not None:
            self.on_record(name, t)

    @property
    def last(self) -> str | None:
        return self.order[-1] if self.order else None
