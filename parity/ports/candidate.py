"""A port as a candidate pipeline: the object :func:`parity.harness.run_case` drives (``provenance``, ``run``,
``run_metadata``, ``vocode`` for the vocoder's own error, ``step`` for the step-local errors), built around a
:class:`parity.ports.base.PortAdapter` and the reference model whose weights and noise it is given.

* **Weights.** The port converts the reference's model directory itself (a preset is first written as one in the
  released key format, :func:`reference.export.export_model_dir`, into a per-process temporary directory). The
  trace's ``weights_sha256`` is the hash of the files the port was handed, computed here.
* **Noise.** ``noise_mode`` (:data:`parity.ports.base.NOISE_MODES`): ``shared`` (default) hands the port the
  reference's flow noise and HiFT noise, ``flow-only`` the flow noise alone, ``port`` nothing. The trace's
  ``noise`` provenance is the reference's (same fingerprint) when everything is shared; otherwise it lists what
  the port drew itself (``unshared``), and the comparison says so.
* **Step-local errors.** A port's ODE step is inline in its solver, so the candidate has no step of its own to
  drive (:meth:`PortCandidate.step` raises and the step-local table stays empty); its vocoder is driven on the
  reference's ``flow_mel`` when the adapter can (:meth:`PortAdapter.vocode`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch

from reference.errors import InputError
from reference.probe import Probe, as_probe

from ..stages import INPUTS
from .base import PortAdapter, PortNoise

_EXPORTED: dict[str, Path] = {}  # preset weights hash -> model directory written for ports in this process


def _cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def model_dir_for(model) -> Path:
    """The released-layout directory of the reference ``model``: its own for ``model_dir:PATH``, else the preset
    written once per process into a temporary directory (removed at exit)."""
    mid = str(getattr(model, "model_id", ""))
    if mid.startswith("model_dir:"):
        return Path(mid[len("model_dir:"):])
    if not mid.startswith("preset:"):
        raise InputError(f"a port converts a model directory itself; the reference model {mid!r} is neither a preset "
                         f"nor a model directory (parity export-model writes one)")
    key = f"{mid}:{model.weights.get('flow_sha256')}:{model.weights.get('hift_sha256')}"
    if key not in _EXPORTED:
        from reference.export import export_model_dir

        out = Path(tempfile.mkdtemp(prefix="parity-port-model-"))
        atexit.register(_cleanup, out)
        export_model_dir(mid[len("preset:"):], out)
        _EXPORTED[key] = out
    return _EXPORTED[key]


def _file_hashes(model_dir: Path) -> dict:
    from reference.checkpoint import read_state_dict
    from reference.init import state_dict_sha256
    from reference.model import find_checkpoint

    out = {}
    for stem in ("flow", "hift"):
        p = find_checkpoint(model_dir, stem)
        out[f"{stem}_file"] = p.name
        out[f"{stem}_sha256"] = state_dict_sha256(read_state_dict(p))
    return out


class PortCandidate:
    """The harness-facing pipeline of one port (see the module docstring)."""

    pipeline = "port"
    sw = None  # no switches: an fp32 port is judged against the fp32 noise floor

    def __init__(self, ref, adapter: PortAdapter, noise: PortNoise, model_dir: Path, weights: dict,
                 profile_name: str):
        self.ref, self.adapter, self.port_noise, self.model_dir = ref, adapter, noise, model_dir
        self.cfg, self.noise, self.weights, self.profile_name = ref.cfg, ref.noise, weights, profile_name
        self.device = "cpu"

    @classmethod
    def build(cls, model, adapter_cls: type[PortAdapter], noise_mode: str = "shared",
              label: str | None = None) -> "PortCandidate":
        why = adapter_cls.unavailable()
        if why:
            raise InputError(f"port {adapter_cls.name}: {why}")
        noise = PortNoise(noise_mode, model.noise)
        model_dir = model_dir_for(model)
        adapter = adapter_cls.build(model_dir, model.cfg, noise)
        name = label or (adapter_cls.name + ("" if noise_mode == "shared" else f"+noise-{noise_mode}"))
        return cls(model, adapter, noise, model_dir, _file_hashes(model_dir), name)

    # -- provenance ------------------------------------------------------------------------------------
    def noise_provenance(self, port: dict) -> dict:
        """The reference's noise provenance when the port was given all of it; otherwise what it drew itself."""
        ref = self.noise.provenance()
        if self.port_noise.mode == "shared":
            return dict(ref, given_to_port=(port.get("noise") or {}).get("how"))
        unshared = ["hift_rand_ini", "hift_sine_noise"] + ([] if self.port_noise.flow else ["rand_noise"])
        return {"source": f"{self.adapter.name}: its own draws for {', '.join(unshared)}",
                "fingerprint": None, "unshared": unshared,
                "shared": ["rand_noise"] if self.port_noise.flow else [],
                "reference_fingerprint": ref.get("fingerprint"), "port": port.get("noise")}

    def provenance(self, *, streaming: bool, finalize: bool = True, n_timesteps: int | None = None) -> dict:
        from reference.model import environment

        p = self.ref.provenance(streaming=streaming, finalize=finalize)
        port = self.adapter.provenance()
        w = self.weights
        p.update({
            "pipeline": f"port:{self.adapter.name}",
            "profile": self.profile_name,
            "port": port,
            "precision": "fp32",
            "model_dir": str(self.model_dir),
            "weights": dict(w, source="files converted by the port"),
            "weights_sha256": str(w.get("flow_sha256", ""))[:16] + "+" + str(w.get("hift_sha256", ""))[:16],
            "noise": self.noise_provenance(port),
            "n_timesteps": port.get("n_timesteps"),
            "t_scheduler": port.get("t_scheduler"),
            "cfg_rate": port.get("cfg_rate"),
            "dtypes": port.get("dtypes"),
            "device": port.get("device", "cpu"),
            "attention": port.get("backend", self.adapter.name),
            "attention_kernels": {"counts": {}, "fallbacks": []},
            "faults": [],
            "env": environment(),
        })
        for k in ("sigma_min",):  # the reference's value is not the port's: leave it out rather than claim it
            p.pop(k, None)
        return p

    def run_metadata(self) -> dict:
        f = getattr(self.adapter, "run_metadata", None)
        return {"port_run": f()} if callable(f) else {}

    def expected_stage(self, blocks_captured: bool = False) -> str | None:
        return None  # no injected fault: nothing the harness must localise

    # -- running -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, inputs: dict, probe: Probe | None = None, *, streaming: bool = False, finalize: bool = True,
            on_step=None) -> torch.Tensor:
        probe = as_probe(probe)
        for k in INPUTS:
            if k in inputs:
                probe(k, inputs[k])
        return self.adapter.run(inputs, probe, streaming=streaming, finalize=finalize)

    def session_refusal(self) -> str | None:
        """Why this port cannot run a streaming session (None: it can)."""
        if self.adapter.session_support is None:
            return None
        return f"port {self.adapter.name} has no streaming session in the harness: {self.adapter.session_support}"

    def run_session(self, inputs: dict, probe: Probe | None = None, options=None, *, state=None):
        if self.session_refusal():
            raise InputError(self.session_refusal())
        probe = as_probe(probe)
        for k in INPUTS:
            if k in inputs:
                probe(k, inputs[k])
        return self.adapter.run_session(inputs, probe, options)

    def step(self, *_a, **_k):
        raise NotImplementedError(f"port {self.adapter.name}: the ODE step is inline in the port's solver")

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, finalize: bool = True, probe: Probe | None = None) -> torch.Tensor:
        return self.adapter.vocode(mel, as_probe(probe), finalize=finalize)
