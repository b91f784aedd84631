"""The candidate token2wav: built from the reference's weights and shared noise, reporting the same stage
names to the same recorder, callable per component (estimator step, vocoder) like the reference."""

from __future__ import annotations

import torch

from reference.model import Token2Wav, environment
from reference.probe import NO_PROBE, Probe, as_probe

from .faults import ActiveFaults
from .flow import CandidateFlow
from .hift import CandidateHiFT
from .provenance import KernelLog
from .switches import Switches

DTYPE_NAME = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class CandidateToken2Wav:
    pipeline = "candidate"

    def __init__(self, ref: Token2Wav, sw: Switches, profile_name: str = "custom"):
        if sw.device == "cuda" and not torch.cuda.is_available():
            from reference.errors import InputError

            raise InputError(f"profile {profile_name!r} needs CUDA, and no CUDA device is available")
        self.ref, self.sw, self.profile_name = ref, sw, profile_name
        self.cfg, self.noise, self.device = ref.cfg, ref.noise, sw.device
        self.faults = ActiveFaults.from_specs(sw.faults)
        self.kernels = KernelLog()
        if sw.device == "cuda" and not sw.tf32:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.flow = CandidateFlow(ref.flow, sw, self.faults, self.kernels, sw.device)
        self.hift = CandidateHiFT(ref.hift, sw, self.faults, sw.device)

    # -- provenance ------------------------------------------------------------------------------
    def noise_provenance(self) -> dict:
        seed = self.faults.override("noise_seed", None)
        if seed is not None:
            z = torch.randn(1, self.noise.flow.shape[1], 64, generator=torch.Generator().manual_seed(seed))
            import hashlib

            return {"source": f"candidate randn seed {seed}", "fingerprint": hashlib.sha256(z.numpy().tobytes()).hexdigest()[:16]}
        return self.noise.provenance()

    def provenance(self, *, streaming: bool, finalize: bool = True, n_timesteps: int | None = None) -> dict:
        p = self.ref.provenance(streaming=streaming, finalize=finalize)
        sw = self.sw
        p.update({
            "pipeline": "candidate",
            "profile": self.profile_name,
            "switches": sw.to_dict(),
            "faults": list(sw.faults),
            "precision": sw.precision,
            "noise": self.noise_provenance(),
            "n_timesteps": self.flow.n_timesteps,
            "t_scheduler": self.flow.t_scheduler,
            "cfg_rate": self.flow.cfg_rate,
            "dtypes": {"flow": DTYPE_NAME[sw.flow_dtype], "hift": DTYPE_NAME[sw.hift_dtype],
                       "f0_predictor": "float64" if (sw.hift_dtype == "fp32" or sw.keeps("hift.f0_predictor"))
                       else DTYPE_NAME[sw.hift_dtype], "keep_fp32": list(sw.keep_fp32),
                       "int8_dynamic": sw.int8_dynamic, "precision_mode": sw.precision_mode},
            "device": sw.device,
            "attention": sw.attention,
            "attention_kernels": {"counts": {}, "fallbacks": []},
            "compile": sw.compile,
            "env": environment(),
        })
        if sw.device == "cuda":
            p["gpu"] = torch.cuda.get_device_name(0)
            p["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        backend = sw.backend  # what computes the estimator, and what it says about itself (candidate.backends)
        p["attention"] = backend.attention(sw) or p["attention"]
        p.update(backend.provenance(self.flow.estimator))
        return p

    def run_metadata(self) -> dict:
        """What actually executed in the last run (filled after it)."""
        meta = {"attention_kernels": self.kernels.to_dict()}
        meta.update(self.sw.backend.run_metadata(self.flow.estimator))
        return meta

    def expected_stage(self, blocks_captured: bool = False) -> str | None:
        """Where the harness must localise the active fault (the first fault's record)."""
        if not self.faults.items:
            return None
        f, params = self.faults.items[0]
        return f.stage(params, blocks_captured)

    def expected_session_stage(self, last_chunk: int, blocks_captured: bool = False) -> str | None:
        """Where a session comparison must localise the first active session fault (``last_chunk``: the
        index of this candidate's final call)."""
        for f, params in self.faults.items:
            if f.mode == "session":
                return f.stage(params, blocks_captured, last_chunk=last_chunk)
        return None

    # -- running ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, inputs: dict, probe: Probe | None = None, *, streaming: bool = False, finalize: bool = True,
            on_step=None) -> torch.Tensor:
        probe = as_probe(probe)
        self.kernels.counts.clear()
        self.kernels.fallbacks.clear()
        self.flow.estimator.reset_run_counts()
        for k in ("token", "prompt_token", "prompt_feat", "embedding"):
            if k in inputs:
                probe(k, inputs[k])
        mel = self.flow.inference(inputs["token"].long(), inputs["prompt_token"].long(), inputs["prompt_feat"].float(),
                                  inputs["embedding"].float(), self.noise, streaming=streaming, finalize=finalize,
                                  probe=probe, on_step=on_step)
        return self.hift.inference(mel, self.noise, finalize=finalize, probe=probe)

    def run_session(self, inputs: dict, probe: Probe | None = None, options=None, *, state=None):
        """The streaming session (:func:`reference.session.run_session`, the same loop as the reference's)
        with this candidate's switches and its session faults."""
        from reference.session import run_session

        self.kernels.counts.clear()
        self.kernels.fallbacks.clear()
        self.flow.estimator.reset_run_counts()
        return run_session(self, inputs, probe, options, state=state)

    # -- components (for step-local errors) ------------------------------------------------------
    @torch.inference_mode()
    def step(self, x, t, dt, mu, mask, spks, cond, streaming=False, k: int = 0):
        dev = self.device
        args = [a.to(dev) for a in (x, t, dt, mu, mask, spks, cond)]
        return self.flow.step(*args, streaming=streaming, probe=NO_PROBE, step=k)

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, finalize: bool = True, probe: Probe | None = None) -> torch.Tensor:
        return self.hift.inference(mel.to(self.device).float(), self.noise, finalize=finalize, probe=as_probe(probe))


def build_candidate(model, sw: Switches, label: str = "custom"):
    """The candidate pipeline of switches ``sw`` on the reference ``model``: the one its estimator backend builds
    when it computes the whole pipeline (a port under test), else :class:`CandidateToken2Wav` with the backend's
    estimator (:mod:`candidate.backends`)."""
    cand = sw.backend.build_candidate(model, sw, label)
    return cand if cand is not None else CandidateToken2Wav(model, sw, label)
