"""Ports under test: other people's implementations of token2wav, driven through a small adapter each
(:mod:`parity.ports.base`), run by the harness like any candidate (``parity run --profile <port name>``).

:data:`PORTS` maps a port's name to its adapter (``"module:Class"``, imported only when used, so a port's
libraries are never needed to import the harness). :func:`port_candidate` builds the harness-facing pipeline
(:class:`parity.ports.candidate.PortCandidate`). docs/ports.md says how to add one.
"""

from __future__ import annotations

import importlib

from reference.errors import InputError

from .base import NOISE_MODES, PortAdapter, PortNoise

PORTS: dict[str, str] = {
    "mlx-audio-plus": "parity.ports.mlx_audio_plus:MlxAudioPlus",
}
PORT_HELP = {
    "mlx-audio-plus": "mlx-audio-plus 0.1.8: an MLX rewrite of CosyVoice 3 (optional extra [mlx]; docs/ports.md)",
}


def port_names() -> list[str]:
    return list(PORTS)


def is_port(name: str | None) -> bool:
    return name in PORTS


def adapter_class(name: str) -> type[PortAdapter]:
    if name not in PORTS:
        raise InputError(f"unknown port {name!r}; known ports: {', '.join(PORTS)}")
    module, _, cls = PORTS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def port_unavailable(name: str) -> str | None:
    """Why port ``name`` cannot run here, or None."""
    return adapter_class(name).unavailable()


def port_candidate(model, name: str, noise_mode: str = "shared", label: str | None = None):
    """The port ``name`` as a candidate pipeline on the reference ``model``'s weights and noise."""
    from .candidate import PortCandidate

    return PortCandidate.build(model, adapter_class(name), noise_mode, label)


__all__ = ["PORTS", "PORT_HELP", "NOISE_MODES", "PortAdapter", "PortNoise", "port_names", "is_port", "adapter_class",
           "port_unavailable", "port_candidate"]
