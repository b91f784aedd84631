"""Hyperparameters of the token2wav pipeline, with upstream's names.

Field names equal the keyword arguments of the upstream classes in ``cosyvoice3.yaml``
(``CausalMaskedDiffWithDiT``, ``CausalConditionalCFM`` + ``cfm_params``, ``DiT``,
``CausalHiFTGenerator``, ``CausalConvRNNF0Predictor``), so a released yaml maps onto them 1:1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParityUserError
from .hyperyaml import HyperYamlError, Tagged, load_hyperyaml


class ConfigError(ParityUserError, ValueError):
    pass


@dataclass
class DiTConfig:
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 2
    mel_dim: int = 80
    mu_dim: int = 80
    spk_dim: int = 80
    out_channels: int = 80
    static_chunk_size: int = 50
    num_decoding_left_chunks: int = -1
    dropout: float = 0.1  # class default; inert in eval
    long_skip_connection: bool = False


@dataclass
class CFMParams:
    sigma_min: float = 1e-6
    solver: str = "euler"
    t_scheduler: str = "cosine"
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7
    reg_loss_type: str = "l1"


@dataclass
class CFMConfig:
    in_channels: int = 240
    n_spks: int = 1
    spk_emb_dim: int = 80
    cfm_params: CFMParams = field(default_factory=CFMParams)
    estimator: DiTConfig = field(default_factory=DiTConfig)


@dataclass
class PreLookaheadConfig:
    in_channels: int = 80
    channels: int = 1024
    pre_lookahead_len: int = 3


@dataclass
class FlowConfig:
    input_size: int = 80
    output_size: int = 80
    spk_embed_dim: int = 192
    output_type: str = "mel"
    vocab_size: int = 6561
    input_frame_rate: int = 25
    only_mask_loss: bool = True
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    pre_lookahead_layer: PreLookaheadConfig = field(default_factory=PreLookaheadConfig)
    decoder: CFMConfig = field(default_factory=CFMConfig)
    n_timesteps: int = 10  # hard-coded in upstream CausalMaskedDiffWithDiT.inference


@dataclass
class F0PredictorConfig:
    num_class: int = 1
    in_channels: int = 80
    cond_channels: int = 512


@dataclass
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10
    upsample_rates: list = field(default_factory=lambda: [8, 5, 3])
    upsample_kernel_sizes: list = field(default_factory=lambda: [16, 11, 7])
    istft_params: dict = field(default_factory=lambda: {"n_fft": 16, "hop_len": 4})
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    source_resblock_kernel_sizes: list = field(default_factory=lambda: [7, 7, 11])
    source_resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    conv_pre_look_right: int = 4
    f0_predictor: F0PredictorConfig = field(default_factory=F0PredictorConfig)

    @property
    def hop_samples(self) -> int:
        """Output samples per mel frame (480 for 24 kHz)."""
        total = self.istft_params["hop_len"]
        for r in self.upsample_rates:
            total *= r
        return total


@dataclass
class MelConfig:
    """The Matcha ``mel_spectrogram`` recipe used to build ``prompt_feat``."""

    n_fft: int = 1920
    num_mels: int = 80
    sampling_rate: int = 24000
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0
    fmax: float | None = None
    center: bool = False


@dataclass
class ModelConfig:
    name: str = "cosyvoice3-0.5b"
    sample_rate: int = 24000
    token_frame_rate: int = 25
    token_mel_ratio: int = 2
    chunk_size: int = 25
    num_decoding_left_chunks: int = -1
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    seed: int = 0  # seed of the deterministic weights of presets without a checkpoint

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# presets

def _cosyvoice3() -> ModelConfig:
    return ModelConfig()


def _tiny() -> ModelConfig:
    """Same structure as the released model, small enough for CI (seconds per run on 2 CPU cores)."""
    cfg = ModelConfig(name="tiny", seed=20251)
    cfg.flow.pre_lookahead_layer.channels = 128
    est = cfg.flow.decoder.estimator
    est.dim, est.depth, est.heads, est.dim_head = 128, 2, 2, 64
    h = cfg.hift
    h.base_channels = 64
    h.f0_predictor.cond_channels = 64
    return cfg


PRESETS = {"cosyvoice3-0.5b": _cosyvoice3, "tiny": _tiny}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# cosyvoice3.yaml -> ModelConfig

_EXPECTED_CLASSES = {
    "flow": "CausalMaskedDiffWithDiT",
    "pre_lookahead_layer": "PreLookaheadLayer",
    "decoder": "CausalConditionalCFM",
    "estimator": "DiT",
    "hift": "CausalHiFTGenerator",
    "f0_predictor": "CausalConvRNNF0Predictor",
}


def _fill(dc_type, values: dict, **built):
    """Build ``dc_type`` from the yaml kwargs it knows; ``built`` supplies already-parsed sub-configs.

    Keys the dataclass does not know (training-only options) are ignored.
    """
    names = {f.name for f in dataclasses.fields(dc_type)}
    kwargs = {k: v for k, v in values.items() if k in names and k not in built}
    kwargs.update(built)
    return dc_type(**kwargs)


def _tagged(node: Any, key: str, source: str) -> dict:
    if isinstance(node, Tagged):
        want = _EXPECTED_CLASSES.get(key)
        if want and node.class_name != want:
            raise ConfigError(f"{source}: '{key}' builds {node.target}, expected a {want}")
        return node.kwargs
    if isinstance(node, dict):
        return node
    raise ConfigError(f"{source}: '{key}' is missing or is not a mapping")


def config_from_yaml(path: str | Path, name: str | None = None) -> ModelConfig:
    """Read a released-style ``cosyvoice3.yaml`` into a :class:`ModelConfig` (nothing is executed)."""
    path = Path(path)
    source = str(path)
    try:
        doc = load_hyperyaml(path)
    except HyperYamlError as exc:
        raise ConfigError(str(exc)) from exc
    if "flow" not in doc:
        raise ConfigError(f"{source}: no 'flow' entry (is this a CosyVoice 3 yaml?)")
    flow_kw = _tagged(doc["flow"], "flow", source)
    pla_kw = _tagged(flow_kw.get("pre_lookahead_layer", {}), "pre_lookahead_layer", source)
    dec_kw = _tagged(flow_kw.get("decoder"), "decoder", source)
    est_kw = _tagged(dec_kw.get("estimator"), "estimator", source)
    cfm_node = dec_kw.get("cfm_params", {})
    cfm_kw = cfm_node.kwargs if isinstance(cfm_node, Tagged) else cfm_node
    if isinstance(cfm_kw, dict) and "content" in cfm_kw:  # !new:omegaconf.DictConfig {content: {...}}
        cfm_kw = cfm_kw["content"]
    est = _fill(DiTConfig, est_kw)
    cfm = _fill(CFMParams, cfm_kw or {})
    dec = _fill(CFMConfig, dec_kw, cfm_params=cfm, estimator=est)
    pla = _fill(PreLookaheadConfig, pla_kw)
    flow = _fill(FlowConfig, flow_kw, pre_lookahead_layer=pla, decoder=dec)
    cfg = ModelConfig(name=name or path.parent.name or "model-dir", flow=flow)
    for key in ("sample_rate", "token_frame_rate", "token_mel_ratio", "chunk_size", "num_decoding_left_chunks"):
        if key in doc and isinstance(doc[key], (int, float)):
            setattr(cfg, key, doc[key])
    if "hift" in doc:
        hift_kw = _tagged(doc["hift"], "hift", source)
        f0_kw = _tagged(hift_kw.get("f0_predictor", {}), "f0_predictor", source)
        f0 = _fill(F0PredictorConfig, f0_kw)
        cfg.hift = _fill(HiFTConfig, hift_kw, f0_predictor=f0)
    mel_node = doc.get("feat_extractor") or doc.get("mel_spec_transform1")
    if isinstance(mel_node, Tagged):
        cfg.mel = _fill(MelConfig, mel_node.kwargs)
    _validate(cfg, source)
    return cfg


def _validate(cfg: ModelConfig, source: str) -> None:
    est = cfg.flow.decoder.estimator
    if est.heads * est.dim_head != est.dim:
        raise ConfigError(f"{source}: DiT heads*dim_head = {est.heads * est.dim_head} != dim {est.dim}")
    if cfg.flow.decoder.cfm_params.solver != "euler":
        raise ConfigError(f"{source}: solver {cfg.flow.decoder.cfm_params.solver!r} unsupported (upstream uses euler)")
    if cfg.flow.decoder.cfm_params.t_scheduler not in ("cosine", "linear"):
        raise ConfigError(f"{source}: t_scheduler {cfg.flow.decoder.cfm_params.t_scheduler!r} unsupported")
