"""Ports under test: other people's implementations of token2wav, driven through a small adapter each
(:mod:`parity.ports.base`), run by the harness like any candidate (``parity run --profile <port name>``).

:data:`PORTS` maps a port's name to its adapter (``"module:Class"``, imported only when used, so a port's
libraries are never needed to import the harness). :func:`port_candidate` builds the harness-facing pipeline
(:class:`parity.ports.candidate.PortCandidate`). docs/ports.md says how to add one.
"""

from __future__ import annotations

import importlib

from reference.errors import InputError

from candidate.backends import Backend, register_backend

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


# ---------------------------------------------------------------------------------------------
# a port is an estimator backend (candidate.backends) that computes everything: ``port:<name>``

PORT_BACKEND_PREFIX = "port:"


class PortBackend(Backend):
    """``port:<name>``: the port ``name`` driven by its adapter computes the estimator and everything around it, so
    it builds the whole candidate (:meth:`build_candidate`); its one option is the noise the harness shares with
    it (``noise``: :data:`NOISE_MODES`). The harness's switches, faults and devices act on its own pipeline, not on
    a port's code: a port profile refuses them."""

    options = {"noise": "shared"}
    choices = {"noise": NOISE_MODES}
    takes_switches = False

    def __init__(self, port: str):
        self.port = port
        self.name = PORT_BACKEND_PREFIX + port
        self.description = PORT_HELP.get(port, "a port under test")

    def refuse_switches(self, profile: str | None, faults=(), overrides: dict | None = None,
                        device: str = "cpu") -> str | None:
        what = [w for w, v in (("--fault", faults), ("ONNX options", overrides), (f"--device {device}",
                                                                                  device != "cpu")) if v]
        if what:
            return (f"profile {profile or self.port!r} is a port: {' and '.join(what)} act on the harness's own "
                    f"candidate pipeline, not on a port's code")
        return None

    def validate(self, sw) -> None:
        changed = [k for k in sw.differences() if k not in ("estimator_backend", "estimator_options")]
        if changed:
            raise InputError(f"port {self.port!r}: the switches {', '.join(changed)} act on the harness's own "
                             f"candidate pipeline, not on a port's code")

    def unavailable(self, sw) -> str | None:
        return port_unavailable(self.port)

    def build_candidate(self, model, sw, label: str):
        return port_candidate(model, self.port, sw.option("noise"), label)


def port_profiles() -> dict[str, dict]:
    """Each port as a profile of its name (``parity run --profile mlx-audio-plus``): its backend."""
    return {name: {"estimator_backend": PORT_BACKEND_PREFIX + name} for name in PORTS}


for _name in PORTS:
    register_backend(PortBackend(_name))


__all__ = ["PORTS", "PORT_HELP", "NOISE_MODES", "PortAdapter", "PortNoise", "port_names", "is_port", "adapter_class",
           "port_unavailable", "port_candidate", "PortBackend", "port_profiles"]
