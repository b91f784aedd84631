"""The port adapter interface: what the harness needs from a Python-callable port of token2wav.

A port is someone else's implementation of CosyVoice 3 token2wav (an MLX rewrite, a JAX one, a C++ library
with Python bindings, ...). An adapter is one small module that drives it the way the harness drives its own
candidate pipeline, so ``parity run --profile <port>`` judges it against the reference like any candidate.
An adapter provides:

* :meth:`PortAdapter.unavailable` (class method): why the port cannot run here (not installed, wrong version,
  no device), or None. The CLI exits 2 with that line; tests skip with it.
* :meth:`PortAdapter.build` (class method): the port built from a model directory in the released layout
  (``cosyvoice3.yaml``, ``flow.pt``, ``hift.pt``) **through the port's own weight conversion**, with the module
  sizes the yaml gives, and the shared noise (:class:`PortNoise`) injected where the port draws random numbers.
* :meth:`PortAdapter.run`: one offline token2wav call on a bundle's tensors (``token``, ``prompt_token``,
  ``prompt_feat``, ``embedding``; torch, the reference's layouts) that reports the canonical stages it can see
  to the :class:`reference.probe.Probe` (names and layouts: :mod:`parity.stages`; torch tensors, float32) and
  returns the audio ``[1, samples]``.
* :meth:`PortAdapter.provenance`: what ran (package and version, backend, device, dtypes, the noise it used,
  anything the adapter had to stand in for); it goes into the trace's metadata.
* optional :meth:`PortAdapter.vocode`: the port's vocoder alone on a given mel (the harness feeds it the
  reference's ``flow_mel``: the vocoder's own error, independent of the flow's); raise
  :class:`NotImplementedError` when the port cannot.
* optional :meth:`PortAdapter.run_session`: the port's own streaming loop over tokens given up front, with the
  session stages of :mod:`reference.session` (``chunk{c}.*``, ``stream.mel``, ``stream.audio``);
  :attr:`PortAdapter.session_support` says whether there is one and, if not, why.

The adapter never re-implements the port's arithmetic: it calls the port's own functions and records what goes
in and out of them (wrapping a method of one instance, or its random-number source for one call). Whatever it
cannot observe stays absent from the trace (the comparison lists absent stages; it does not fail on them).

Register an adapter in :data:`parity.ports.PORTS` (``name -> "module:Class"``). See docs/ports.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from reference.errors import InputError
from reference.probe import Probe

# what the harness shares with a port: everything (the default), only the flow's rand_noise (what a port's own
# loader usually takes, e.g. a rand_noise.npy), or nothing (the port draws all its random numbers itself)
NOISE_MODES = ("shared", "flow-only", "port")


@dataclass(frozen=True)
class PortNoise:
    """The noise handed to a port: ``mode`` (one of :data:`NOISE_MODES`) and the reference's
    :class:`reference.noise.SharedNoise` (the flow's ``rand_noise`` [1, 80, 15000]; HiFT's ``rand_ini`` [1, 9]
    and the uniform sine noise [1, samples, 9])."""

    mode: str
    noise: object  # reference.noise.SharedNoise

    def __post_init__(self):
        if self.mode not in NOISE_MODES:
            raise InputError(f"port noise mode {self.mode!r} is not one of {', '.join(NOISE_MODES)}")

    @property
    def flow(self) -> bool:
        """The flow's initial noise comes from the reference."""
        return self.mode in ("shared", "flow-only")

    @property
    def vocoder(self) -> bool:
        """HiFT's rand_ini and sine noise come from the reference."""
        return self.mode == "shared"


class PortAdapter(ABC):
    """One port, driven by the harness (see the module docstring)."""

    #: registry name (``parity run --profile NAME``)
    name: ClassVar[str] = ""
    #: what the adapter was written against: the distribution and version
    distribution: ClassVar[str] = ""
    #: None: the port has a streaming session (:meth:`run_session`); otherwise why not
    session_support: ClassVar[str | None] = "this adapter does not drive a streaming session"

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """Why the port cannot run here (one line naming what to install), or None."""

    @classmethod
    @abstractmethod
    def build(cls, model_dir: Path, cfg, noise: PortNoise) -> "PortAdapter":
        """The port built from ``model_dir`` (released layout) through its own weight conversion, with the sizes of
        ``cfg`` (:class:`reference.config.ModelConfig`, read from the directory's yaml) and ``noise``."""

    @abstractmethod
    def provenance(self) -> dict:
        """What runs: ``port`` (name), ``package``, ``version``, ``backend``, ``device``, ``dtypes``
        ({flow, hift, f0_predictor}), ``n_timesteps``/``t_scheduler``/``cfg_rate`` as the port's objects hold
        them, ``noise`` (what was shared, what the port draws itself), ``standins`` and ``notes``."""

    @abstractmethod
    def run(self, inputs: dict[str, torch.Tensor], probe: Probe, *, streaming: bool = False,
            finalize: bool = True) -> torch.Tensor:
        """One token2wav call; canonical stages to ``probe``; the audio [1, samples] (torch, float32)."""

    def vocode(self, mel: torch.Tensor, probe: Probe, *, finalize: bool = True) -> torch.Tensor:
        """The port's vocoder alone on ``mel`` [1, 80, T]; vocoder stages to ``probe``; the audio."""
        raise NotImplementedError(f"port {self.name}: the adapter does not drive the vocoder alone")

    def run_session(self, inputs: dict[str, torch.Tensor], probe: Probe, options) -> dict:
        """The port's own streaming loop over ``inputs['token']`` given up front (``options``: the harness's
        :class:`reference.session.SessionOptions`, resolved against the port's config); returns the session's
        metadata (the calls it made: ``{"chunks": [{"token_offset", "tokens", "finalize", "streaming"}, ...]}``)."""
        raise NotImplementedError(f"port {self.name}: {self.session_support}")
