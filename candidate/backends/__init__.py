"""Backends: what computes the candidate's DiT estimator, behind one interface, chosen by the switch
``estimator_backend`` and configured by its options (``estimator_options``; each backend declares the options it
takes, with their defaults and allowed values).

* ``torch`` (the default, :mod:`.pytorch`): the candidate's own PyTorch estimator; every other switch acts on it;
* ``onnxruntime`` (:mod:`.ort`): the estimator exported as upstream does (or a user's file) run by ONNX Runtime;
  the solver, CFG, the rest of the flow and the vocoder stay the candidate's PyTorch code;
* a port under test (``port:<name>``, registered by :mod:`parity.ports`): someone else's implementation driven by
  an adapter; a port computes the estimator and everything around it, so it builds the whole candidate
  (:meth:`Backend.build_candidate`), and the harness's own switches and faults do not apply to it.

A backend says why it cannot run here (:meth:`Backend.unavailable`: a missing package or provider; the suite
skips with it, the CLI exits 2), refuses the switches it cannot honour (:meth:`Backend.validate`, one line), may
impose a precision class (:meth:`Backend.precision`: an fp16 graph) and names what attention the provenance
reports (:meth:`Backend.attention`). The estimator it builds has the PyTorch estimator's call signature
(``estimator(x, mask, mu, t, spks, cond, streaming, probe, step) -> velocity [2, C, T]``, plus
``cache_modulations``/``clear_modulations``), and reports what it is (``provenance()``: trace metadata entries,
written before the run) and what it did (``run_metadata()``: entries written after it; ``reset_run_counts()``).
"""

from __future__ import annotations

from .base import BACKENDS, Backend, backend_named, backend_of, legacy_option, register_backend
from .ort import OrtBackend
from .pytorch import TorchBackend

register_backend(TorchBackend())
register_backend(OrtBackend())

__all__ = ["Backend", "BACKENDS", "register_backend", "backend_named", "backend_of", "legacy_option"]
