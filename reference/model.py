"""Building the reference token2wav model from a preset or a released model directory, and running it.

A model directory has the released layout: ``cosyvoice3.yaml`` plus ``flow.pt``/``hift.pt`` (or the
``flow.safetensors``/``hift.safetensors`` that ports use). Presets without a checkpoint get the
deterministic seeded weights of :mod:`reference.init`.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import read_state_dict, stored_dtypes, strict_load
from .config import ModelConfig, config_from_yaml, preset
from .errors import CheckpointError, InputError
from .flow import CausalMaskedDiffWithDiT
from .init import FLOW_RULES, seeded_init_, state_dict_sha256
from .noise import SharedNoise, check_noise_fits, noise_for_config
from .probe import Probe, as_probe

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _optional_inv_freq(key: str) -> bool:
    return key.endswith("rotary_embed.inv_freq")  # deterministic buffer; upstream files may or may not hold it


def build_flow(cfg: ModelConfig, state_dict: dict | None = None, source: str = "") -> CausalMaskedDiffWithDiT:
    flow = CausalMaskedDiffWithDiT(cfg.flow)
    if state_dict is None:
        seeded_init_(flow, cfg.seed, FLOW_RULES)
    else:
        strict_load(flow, state_dict, source=source, optional=_optional_inv_freq, what="CosyVoice 3 flow")
    return flow.eval()


def find_checkpoint(model_dir: Path, stem: str) -> Path:
    for suffix in (".pt", ".safetensors"):
        p = model_dir / f"{stem}{suffix}"
        if p.exists():
            return p
    raise CheckpointError(f"{model_dir}: no {stem}.pt or {stem}.safetensors in the model directory")


def project_git_sha(root: Path = PROJECT_ROOT) -> str:
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads(), "git_sha": project_git_sha()}


def _model_noise(noise: SharedNoise | None, cfg: ModelConfig) -> SharedNoise:
    """The given noise (checked against the model's sizes when it records them), or the noise upstream
    draws for this configuration."""
    if noise is None:
        return noise_for_config(cfg)
    check_noise_fits(noise, cfg)
    return noise


@dataclass
class Token2Wav:
    """The reference pipeline: flow (fp32, explicit attention) + HiFT (F0 in fp64) + shared noise."""

    cfg: ModelConfig
    flow: torch.nn.Module
    hift: torch.nn.Module
    noise: SharedNoise
    model_id: str
    weights: dict = field(default_factory=dict)
    device: str = "cpu"
    pipeline: str = "reference"
    dtype: torch.dtype = torch.float32

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, noise: SharedNoise | None = None) -> "Token2Wav":
        return cls.from_config(preset(name), noise, f"preset:{name}")

    @classmethod
    def from_config(cls, cfg: ModelConfig, noise: SharedNoise | None = None,
                    model_id: str | None = None) -> "Token2Wav":
        """Seeded weights (``cfg.seed``) for any valid configuration, with the noise of that configuration."""
        from .config import validate
        from .hift import build_hift, hift_state_dict_upstream

        validate(cfg, f"config {cfg.name}")
        flow = build_flow(cfg)
        hift = build_hift(cfg.hift, cfg.seed)
        # hashes over the released key format, so a preset and its exported model directory agree
        weights = {"source": "seeded", "seed": cfg.seed,
                   "flow_sha256": state_dict_sha256(flow.state_dict()),
                   "hift_sha256": state_dict_sha256(hift_state_dict_upstream(hift))}
        return cls(cfg, flow, hift, _model_noise(noise, cfg), model_id or f"config:{cfg.name}", weights)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, noise: SharedNoise | None = None) -> "Token2Wav":
        from .hift import CausalHiFTGenerator, load_hift_state_dict

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(f"{model_dir}: model directory not found")
        yaml_path = model_dir / "cosyvoice3.yaml"
        if not yaml_path.exists():
            raise InputError(f"{model_dir}: no cosyvoice3.yaml in the model directory")
        cfg = config_from_yaml(yaml_path, name=model_dir.name)
        flow_path, hift_path = find_checkpoint(model_dir, "flow"), find_checkpoint(model_dir, "hift")
        flow_sd = read_state_dict(flow_path)
        flow = build_flow(cfg, flow_sd, str(flow_path))
        hift_sd = read_state_dict(hift_path)
        hift = CausalHiFTGenerator(cfg.hift)
        load_hift_state_dict(hift, hift_sd, str(hift_path))
        hift.eval()
        weights = {"source": "checkpoint", "flow_file": flow_path.name, "hift_file": hift_path.name,
                   "flow_sha256": state_dict_sha256(flow_sd), "hift_sha256": state_dict_sha256(hift_sd),
                   "flow_stored_dtypes": stored_dtypes(flow_sd), "hift_stored_dtypes": stored_dtypes(hift_sd)}
        return cls(cfg, flow, hift, _model_noise(noise, cfg), f"model_dir:{model_dir.resolve()}", weights)

    @classmethod
    def load(cls, preset_name: str | None = None, model_dir: str | Path | None = None,
             noise: SharedNoise | None = None) -> "Token2Wav":
        if (preset_name is None) == (model_dir is None):
            raise InputError("give exactly one of a preset name or a model directory")
        return cls.from_model_dir(model_dir, noise) if model_dir is not None else cls.from_preset(preset_name, noise)

    def to_float64(self) -> "Token2Wav":
        """A float64 copy (same weights, same noise): the arbiter for fp32 noise-floor measurements."""
        import copy

        return Token2Wav(self.cfg, copy.deepcopy(self.flow).double(), copy.deepcopy(self.hift).double(), self.noise,
                         self.model_id, dict(self.weights), self.device, "reference-fp64", torch.float64)

    # -- provenance ------------------------------------------------------------------------------
    def provenance(self, *, streaming: bool, finalize: bool = True, n_timesteps: int | None = None) -> dict:
        p = self.cfg.flow.decoder.cfm_params
        return {
            "pipeline": self.pipeline,
            "model": self.model_id,
            "config": self.cfg.name,
            "weights": self.weights,
            "weights_sha256": self.weights.get("flow_sha256", "")[:16] + "+" + self.weights.get("hift_sha256", "")[:16],
            "noise": self.noise.provenance(),
            "n_timesteps": n_timesteps or self.cfg.flow.n_timesteps,
            "t_scheduler": p.t_scheduler,
            "cfg_rate": p.inference_cfg_rate,
            "sigma_min": p.sigma_min,
            "dtypes": {"flow": str(self.dtype).replace("torch.", ""), "hift": str(self.dtype).replace("torch.", ""),
                       "f0_predictor": "float64"},
            "device": self.device,
            "attention": self.flow.decoder.estimator.attention_backend,
            # the reference runs the explicit matmul-softmax (unless switched, see DiT.set_attention): one call
            # per block per step
            "attention_kernels": {"counts": {self.flow.decoder.estimator.attention_backend:
                                             self.cfg.flow.decoder.estimator.depth
                                             * (n_timesteps or self.cfg.flow.n_timesteps)}, "fallbacks": []},
            "streaming": streaming,
            "finalize": finalize,
            "sample_rate": self.cfg.sample_rate,
            "env": environment(),
        }

    # -- running ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, inputs: dict, probe: Probe | None = None, *, streaming: bool = False, finalize: bool = True,
            n_timesteps: int | None = None) -> torch.Tensor:
        """Bundle tensors -> audio [1, L]. Every stage goes to ``probe``; inputs are recorded first."""
        probe = as_probe(probe)
        for k in ("token", "prompt_token", "prompt_feat", "embedding"):
            if k in inputs:
                probe(k, inputs[k])
        mel = self.flow.inference(inputs["token"].long(), inputs["prompt_token"].long(),
                                  inputs["prompt_feat"].to(self.dtype), inputs["embedding"].to(self.dtype), self.noise,
                                  streaming=streaming, finalize=finalize, n_timesteps=n_timesteps, probe=probe)
        mel = mel.to(self.dtype)  # the flow returns float32 as upstream does; the fp64 arbiter keeps float64
        return self.hift.inference(mel, self.noise, finalize=finalize, probe=probe)

    def run_session(self, inputs: dict, probe: Probe | None = None, options=None, *, state=None):
        """The streaming session loop (:func:`reference.session.run_session`) on this model."""
        from .session import run_session

        return run_session(self, inputs, probe, options, state=state)
