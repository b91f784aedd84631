"""Hyperparameters of the token2wav pipeline, with upstream's names.

Field names equal the keyword arguments of the upstream classes in ``cosyvoice3.yaml``
(``CausalMaskedDiffWithDiT``, ``CausalConditionalCFM`` + ``cfm_params``, ``DiT``,
``CausalHiFTGenerator``, ``CausalConvRNNF0Predictor``), so a released yaml maps onto them 1:1.
The defaults are the released Fun-CosyVoice3-0.5B values; everything the reference builds or computes
(module sizes, the fixed noise, rates, kernels, iSTFT sizes, lookahead, CFG rate, chunk mask) is read
from a :class:`ModelConfig`, and :func:`validate` rejects values the reference cannot honour (most of
them are values upstream's own code hard-codes and cannot run either), naming the yaml key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParityUserError
from .hyperyaml import HyperYamlError, Tagged, load_hyperyaml


# upstream's output rate (CosyVoice 3: 24 kHz): the default of every configuration field that holds it; everything
# else reads the rate from the model's configuration, and a trace records it (``sample_rate``)
SAMPLE_RATE = 24000


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
    out_channels: int = 80  # stored by upstream's DiT, never used (proj_out is Linear(dim, mel_dim))
    static_chunk_size: int = 50  # streaming mask chunk in mel frames; <= 0: full attention (upstream's rule)
    num_decoding_left_chunks: int = -1  # ignored: upstream's DiT.forward hard-codes -1 (all left chunks)
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
    # upstream hard-codes n_timesteps=10 in CausalMaskedDiffWithDiT.inference (the yaml cannot set it)
    n_timesteps: int = 10


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
    sampling_rate: int = SAMPLE_RATE
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
    sampling_rate: int = SAMPLE_RATE
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0
    fmax: float | None = None
    center: bool = False


@dataclass
class ModelConfig:
    name: str = "cosyvoice3-0.5b"
    sample_rate: int = SAMPLE_RATE
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
    cfg = PRESETS[name]()
    validate(cfg, f"preset {name}")
    return cfg


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
    if est_kw.get("mu_dim", 0) is None:  # upstream's DiT: mu_dim=None means mel_dim
        cfg.flow.decoder.estimator.mu_dim = cfg.flow.decoder.estimator.mel_dim
    validate(cfg, source)
    return cfg


# upstream's hard-coded widths (the yaml cannot change them)
MEL_CHANNELS = 80  # CausalConditionalCFM: rand_noise [1, 80, 15000] and the CFG batch [2, 80, T], spks [2, 80]
NB_HARMONICS = 8  # SineGen2 draws rand_ini [1, 9] and sine_waves [1, 7.2M, 9] whatever nb_harmonics is
SINEGEN1_RATE = 22050  # CausalHiFTGenerator picks SineGen (fresh random noise per call) at this rate only
CONV_POS_GROUPS = 16  # DiT CausalConvPositionEmbedding: Conv1d(dim, dim, 31, groups=16)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: ModelConfig, source: str = "config") -> None:
    """Raise :class:`ConfigError`, naming the yaml key, for any value the reference cannot honour.

    Most are values upstream's own code cannot run (its hard-codes are named in each message); the
    rest are options the reference does not implement. Checked with upstream's classes where marked."""
    f, dec, h = cfg.flow, cfg.flow.decoder, cfg.hift
    est, pla, fp, cfm = dec.estimator, f.pre_lookahead_layer, h.f0_predictor, dec.cfm_params

    def bad(key: str, value, why: str):
        raise ConfigError(f"{source}: '{key}' = {value!r}: {why}")

    def positive_ints(pairs):
        for key, v in pairs:
            if not _int(v) or v < 1:
                bad(key, v, "must be a positive integer")

    positive_ints([("flow.vocab_size", f.vocab_size), ("flow.input_size", f.input_size),
                   ("flow.output_size", f.output_size), ("flow.spk_embed_dim", f.spk_embed_dim),
                   ("flow.token_mel_ratio", f.token_mel_ratio),
                   ("flow.pre_lookahead_layer.channels", pla.channels),
                   ("flow.decoder.estimator.dim", est.dim), ("flow.decoder.estimator.depth", est.depth),
                   ("flow.decoder.estimator.heads", est.heads), ("flow.decoder.estimator.dim_head", est.dim_head),
                   ("flow.decoder.estimator.ff_mult", est.ff_mult),
                   ("hift.base_channels", h.base_channels), ("hift.sampling_rate", h.sampling_rate),
                   ("hift.f0_predictor.cond_channels", fp.cond_channels)])
    for key, v in (("flow.pre_lookahead_len", f.pre_lookahead_len),
                   ("flow.pre_lookahead_layer.pre_lookahead_len", pla.pre_lookahead_len),
                   ("hift.conv_pre_look_right", h.conv_pre_look_right)):
        if not _int(v) or v < 0:
            bad(key, v, "must be a non-negative integer")
    if not _int(est.static_chunk_size):
        bad("flow.decoder.estimator.static_chunk_size", est.static_chunk_size, "must be an integer")

    # flow: the mel width is fixed by upstream's CFM
    for key, v in (("flow.input_size", f.input_size), ("flow.output_size", f.output_size),
                   ("flow.decoder.estimator.mel_dim", est.mel_dim)):
        if v != MEL_CHANNELS:
            bad(key, v, f"upstream's CausalConditionalCFM hard-codes {MEL_CHANNELS} mel channels (rand_noise "
                        f"[1, 80, 15000], the CFG batch [2, 80, T]); it cannot run another width")
    if pla.in_channels != f.input_size:
        bad("flow.pre_lookahead_layer.in_channels", pla.in_channels,
            f"must equal flow.input_size ({f.input_size}): the layer adds its output to the token embedding")
    if est.mu_dim != f.input_size:
        bad("flow.decoder.estimator.mu_dim", est.mu_dim, f"must equal flow.input_size ({f.input_size}): mu is the "
            "upsampled token embedding")
    if est.spk_dim != f.output_size:
        bad("flow.decoder.estimator.spk_dim", est.spk_dim, f"must equal flow.output_size ({f.output_size}): spks is "
            "spk_embed_affine_layer's output (a DiT without speaker input is not implemented by the reference)")
    if est.long_skip_connection:
        bad("flow.decoder.estimator.long_skip_connection", est.long_skip_connection,
            "the reference does not implement the DiT's long skip connection")
    if est.heads * est.dim_head != est.dim:
        bad("flow.decoder.estimator.heads", est.heads,
            f"heads * dim_head = {est.heads * est.dim_head} != dim {est.dim} (not supported by the reference)")
    if est.dim % CONV_POS_GROUPS:
        bad("flow.decoder.estimator.dim", est.dim, f"upstream's CausalConvPositionEmbedding hard-codes "
            f"{CONV_POS_GROUPS} conv groups: dim must be a multiple of {CONV_POS_GROUPS}")
    if cfm.solver != "euler":
        bad("flow.decoder.cfm_params.solver", cfm.solver, "unsupported (upstream's CausalConditionalCFM uses euler)")
    if cfm.t_scheduler not in ("cosine", "linear"):
        bad("flow.decoder.cfm_params.t_scheduler", cfm.t_scheduler, "unsupported (expected cosine or linear)")
    if isinstance(cfm.inference_cfg_rate, bool) or not isinstance(cfm.inference_cfg_rate, (int, float)):
        bad("flow.decoder.cfm_params.inference_cfg_rate", cfm.inference_cfg_rate, "must be a number")

    # hift
    if h.nb_harmonics != NB_HARMONICS:
        bad("hift.nb_harmonics", h.nb_harmonics, f"upstream's SineGen2 hard-codes {NB_HARMONICS + 1} harmonic "
            f"columns in its fixed noise (rand(1, 9), rand(1, 300 * 24000, 9)); its inference fails for any other "
            f"value (checked with upstream's code at ace7c47)")
    if h.sampling_rate == SINEGEN1_RATE:
        bad("hift.sampling_rate", h.sampling_rate, f"at {SINEGEN1_RATE} Hz upstream's CausalHiFTGenerator uses "
            "SineGen, which draws fresh random noise on every call: no fixed noise to reproduce")
    if h.in_channels != f.output_size:
        bad("hift.in_channels", h.in_channels, f"must equal flow.output_size ({f.output_size}): HiFT reads the "
            "flow's mel")
    if fp.in_channels != h.in_channels:
        bad("hift.f0_predictor.in_channels", fp.in_channels, f"must equal hift.in_channels ({h.in_channels})")
    if fp.num_class != 1:
        bad("hift.f0_predictor.num_class", fp.num_class, "must be 1: f0 = |classifier(x)|.squeeze(-1) is one "
            "value per frame")
    n_up = len(h.upsample_rates)
    positive_ints([(f"hift.upsample_rates[{i}]", u) for i, u in enumerate(h.upsample_rates)]
                  + [(f"hift.upsample_kernel_sizes[{i}]", k) for i, k in enumerate(h.upsample_kernel_sizes)])
    if n_up < 1:
        bad("hift.upsample_rates", h.upsample_rates, "needs at least one stage")
    for key, seq in (("hift.upsample_kernel_sizes", h.upsample_kernel_sizes),
                     ("hift.source_resblock_kernel_sizes", h.source_resblock_kernel_sizes),
                     ("hift.source_resblock_dilation_sizes", h.source_resblock_dilation_sizes)):
        if len(seq) != n_up:
            bad(key, seq, f"needs one entry per upsampling stage ({n_up}, hift.upsample_rates); upstream zips "
                "them and then fails on the missing stage")
    if len(h.resblock_dilation_sizes) != len(h.resblock_kernel_sizes) or not h.resblock_kernel_sizes:
        bad("hift.resblock_dilation_sizes", h.resblock_dilation_sizes,
            f"needs one entry per hift.resblock_kernel_sizes entry ({len(h.resblock_kernel_sizes)})")
    if h.base_channels // 2 ** n_up < 1:
        bad("hift.base_channels", h.base_channels, f"halved {n_up} times it leaves no channel")
    ist = h.istft_params
    if not isinstance(ist, dict) or set(ist) != {"n_fft", "hop_len"}:
        bad("hift.istft_params", ist, "must hold exactly n_fft and hop_len")
    if not _int(ist["n_fft"]) or ist["n_fft"] < 2 or ist["n_fft"] % 2:
        bad("hift.istft_params.n_fft", ist["n_fft"], "must be an even integer >= 2 (conv_post makes n_fft + 2 "
            "channels: n_fft/2 + 1 magnitudes and as many phases)")
    if not _int(ist["hop_len"]) or ist["hop_len"] < 1:
        bad("hift.istft_params.hop_len", ist["hop_len"], "must be a positive integer")

