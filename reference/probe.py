"""Stage probes: the pipeline reports named tensors to a recorder the caller passes in.

A recorder is any object with ``wants(name) -> bool`` and ``record(name, tensor)``. With no
recorder attached a probe is a ``None`` check: no copy, no device synchronisation. Optional
stages (per-block outputs, HiFT internals) are computed/recorded only when ``wants`` says so.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Recorder(Protocol):
    def wants(self, name: str) -> bool: ...

    def record(self, name: str, tensor: torch.Tensor) -> None: ...


class Probe:
    __slots__ = ("recorder", "prefix")

    def __init__(self, recorder: Recorder | None = None, prefix: str = ""):
        self.recorder = recorder
        self.prefix = prefix

    def __bool__(self) -> bool:
        return self.recorder is not None

    def wants(self, name: str) -> bool:
        return self.recorder is not None and self.recorder.wants(self.prefix + name)

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        rec = self.recorder
        if rec is not None:
            full = self.prefix + name
            if rec.wants(full):
                rec.record(full, tensor)

    def sub(self, prefix: str) -> "Probe":
        return Probe(self.recorder, self.prefix + prefix)


NO_PROBE = Probe(None)


def as_probe(p: "Probe | Recorder | None") -> Probe:
    if p is None:
        return NO_PROBE
    if isinstance(p, Probe):
        return p
    return Probe(p)
