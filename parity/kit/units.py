"""The port kit's units: every module (and every piece of glue between modules) the kit holds a vector for,
with its call contract.

A unit says

* where its inputs come from on a real run of the reference (``source``): a forward hook on an ``nn.Module``
  (``("hook", path)``: the inputs are exactly the arguments the module's ``forward`` receives), a wrapped method
  (``("wrap", owner, method)``: the method's arguments), or the glue between modules (``("glue", fn)``: inputs
  and outputs taken from the stages the reference reports, computed by a few lines here that the build checks
  against the run);
* how to run it alone on those inputs (:meth:`Unit.call`), which is what the floor members re-run and what the
  reference does as a "port" of itself (:mod:`parity.kit.port`);
* its module path in upstream's state-dict key names (``module``) and the key prefixes of the weights it reads
  (``weights``), the names, axes and meaning of its inputs and outputs, and its non-tensor arguments.

Module paths are relative to the file the weights come from (``flow.pt`` for the flow, ``hift.pt`` for the
vocoder), as upstream's keys are. Units without weights (``f0_upsamp``, ``stft``, ``istft``, ``clamp``, the glue)
are named after upstream's attribute or method, or ``decode/...`` for the code of ``decode`` between modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from reference.hift import MAGNITUDE_CLAMP

# axis names by letter, for the tensor specs below
AXES = {"B": "batch", "C": "channel", "T": "time", "N": "token", "L": "sample", "H": "harmonic", "K": "bin",
        "F": "stft_frame", "Q": "query", "J": "key", "h": "head"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a unit: its name (the key in the vector file is ``inputs.<name>`` or
    ``outputs.<name>``), its axes (letters of :data:`AXES`; ``""`` for a 0-d tensor) and what it is."""

    name: str
    axes: str
    note: str = ""
    optional: bool = False  # an input that may be absent (then the call passes None): the streaming context, masks

    @property
    def axis_names(self) -> list[str]:
        return [AXES[a] for a in self.axes]

    @property
    def layout(self) -> str:
        """channel-major / time-major (which of the channel-like and time-like axes comes first), or what it is."""
        a = self.axes
        chan = next((i for i, c in enumerate(a) if c in "CHK"), None)
        time = next((i for i, c in enumerate(a) if c in "TLFN"), None)
        if a == "":
            return "scalar"
        if "Q" in a:
            return "mask [query, key]"
        if chan is not None and time is not None:
            return "channel-major" if chan < time else "time-major"
        if time is not None:
            return "sequence"
        return "vector"


def T(name: str, axes: str, note: str = "", optional: bool = False) -> TensorSpec:
    return TensorSpec(name, axes, note, optional)


@dataclass(frozen=True)
class Unit:
    id: str
    component: str  # "flow" | "hift": which weights file, and which run phase
    kind: str  # "module" | "method" | "op" | "glue"
    module: str | None  # upstream state-dict key prefix of the module (None: no module of its own)
    weights: tuple[str, ...]  # key prefixes of the weights the unit reads (in the component's file)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[str, ...]  # non-tensor arguments (bool/int), recorded in the manifest
    phase: str  # "front" (flow front end), "step" (inside the captured ODE step), "vocoder"
    description: str
    source: tuple  # ("hook", path) | ("wrap", owner path, method) | ("glue", name)
    extra_attrs: dict = field(default_factory=dict)  # fixed arguments of the call (not recorded from the run)

    # -- running it alone ----------------------------------------------------------------------
    def owner(self, model):
        root = model.flow if self.component == "flow" else model.hift
        src = self.source
        if src[0] == "hook":
            return root.get_submodule(src[1])
        if src[0] == "wrap":
            return root.get_submodule(src[1]) if src[1] else root
        return root

    def call(self, model, inputs: dict[str, torch.Tensor], attrs: dict) -> dict[str, torch.Tensor]:
        """Run the unit alone on ``inputs`` (tensors by name) with ``attrs``; returns its outputs by name."""
        kw = {s.name: inputs.get(s.name) for s in self.inputs}
        kw.update(attrs)
        kw.update(self.extra_attrs)
        src = self.source
        with torch.inference_mode():
            if src[0] == "hook":
                out = self.owner(model)(**kw)
            elif src[0] == "wrap":
                if src[2] == "make_source":
                    kw = {"f0": kw["f0"], "noise": NoiseView(kw["rand_ini"], kw["sine_noise"])}
                out = getattr(self.owner(model), src[2])(**kw)
            else:
                out = GLUE[src[1]](model, **kw)
        return name_outputs(self, out)


def name_outputs(unit: Unit, out) -> dict[str, torch.Tensor]:
    if isinstance(out, dict):
        vals = [out[s.name] for s in unit.outputs]
    elif isinstance(out, (tuple, list)):
        vals = list(out)[:len(unit.outputs)]
    else:
        vals = [out]
    if len(vals) != len(unit.outputs):
        raise RuntimeError(f"kit unit {unit.id}: {len(vals)} outputs, expected {len(unit.outputs)}")
    return {s.name: v for s, v in zip(unit.outputs, vals)}


class NoiseView:
    """The part of :class:`reference.noise.SharedNoise` the source module reads, from a vector's tensors."""

    def __init__(self, rand_ini: torch.Tensor, sine_noise: torch.Tensor):
        self.rand_ini = rand_ini
        self._sine = sine_noise

    def sine_noise(self, samples: int) -> torch.Tensor:
        if samples > self._sine.shape[1]:
            raise ValueError(f"the vector holds {self._sine.shape[1]} samples of sine noise, {samples} asked for")
        return self._sine[:, :samples, :]


# ---------------------------------------------------------------------------------------------
# glue: the code of the vocoder's decode between its modules (checked against the run at build time)

def glue_f0_upsamp(model, f0):
    """upstream ``self.f0_upsamp(f0[:, None]).transpose(1, 2)``: nearest upsampling to samples, [1, L, 1]."""
    h = model.hift
    return F.interpolate(f0[:, None], scale_factor=h.upsample_scale, mode="nearest").transpose(1, 2)


def glue_stage(model, x, s_stft, stage: int):
    """One upsampling stage of ``decode``: leaky_relu(lrelu_slope), ups[i], the reflection pad of the last
    stage, + source_resblocks[i](source_downs[i](s_stft)), the mean of the stage's resblocks."""
    h = model.hift
    x = F.leaky_relu(x, h.cfg.lrelu_slope)
    x = h.ups[stage](x)
    if stage == h.num_upsamples - 1:
        x = F.pad(x, (1, 0), mode="reflect")
    si = h.source_downs[stage](s_stft)
    x = x + h.source_resblocks[stage](si)
    xs = h.resblocks[stage * h.num_kernels](x)
    for j in range(1, h.num_kernels):
        xs = xs + h.resblocks[stage * h.num_kernels + j](x)
    return xs / h.num_kernels


def glue_magnitude_phase(model, x):
    """``magnitude = clamp(exp(x[:, :n_fft/2+1]), max=100)``, ``phase = sin(x[:, n_fft/2+1:])``."""
    n_bins = model.hift.n_fft // 2 + 1
    return torch.clamp(torch.exp(x[:, :n_bins, :]), max=MAGNITUDE_CLAMP), torch.sin(x[:, n_bins:, :])


def glue_post(model, x):
    """After the last stage: leaky_relu (slope 0.01, upstream's default, not lrelu_slope), conv_post,
    magnitude and phase."""
    return glue_magnitude_phase(model, model.hift.conv_post(F.leaky_relu(x)))


def glue_clamp(model, audio_preclamp):
    lim = model.hift.cfg.audio_limit
    return torch.clamp(audio_preclamp, -lim, lim)


GLUE: dict[str, Callable] = {"f0_upsamp": glue_f0_upsamp, "stage": glue_stage, "post": glue_post,
                             "magnitude_phase": glue_magnitude_phase, "clamp": glue_clamp}


# ---------------------------------------------------------------------------------------------
# the registry

def _flow_units(depth: int) -> list[Unit]:
    est = "decoder.estimator"
    out = [
        Unit("input_embedding", "flow", "module", "input_embedding", ("input_embedding",),
             (T("input", "BN", "prompt + target token ids (negative ids clamped to 0)"),),
             (T("out", "BNC", "token embeddings"),), (), "front", "nn.Embedding of the speech tokens",
             ("hook", "input_embedding")),
        Unit("spk_embed_affine_layer", "flow", "module", "spk_embed_affine_layer", ("spk_embed_affine_layer",),
             (T("input", "BC", "the x-vector after F.normalize(dim=1)"),), (T("out", "BC", "spks"),), (), "front",
             "the speaker projection (Linear), on the L2-normalised x-vector", ("hook", "spk_embed_affine_layer")),
        Unit("pre_lookahead_layer", "flow", "module", "pre_lookahead_layer", ("pre_lookahead_layer",),
             (T("inputs", "BNC", "token embeddings (without the lookahead tokens when not finalizing)"),
              T("context", "BNC", "the lookahead tokens' embeddings (streaming, finalize=False); absent: zero pad",
                optional=True)),
             (T("out", "BNC", "conv1 (k = lookahead + 1) -> leaky_relu -> left pad -> conv2 (k 3) -> + inputs"),), (),
             "front", "PreLookaheadLayer", ("hook", "pre_lookahead_layer")),
        Unit("prepare", "flow", "method", None, ("input_embedding", "spk_embed_affine_layer", "pre_lookahead_layer"),
             (T("token", "BN", "target speech tokens"), T("prompt_token", "BN", "prompt speech tokens"),
              T("prompt_feat", "BTC", "prompt mel, time-major as upstream"), T("embedding", "BC", "speaker x-vector")),
             (T("mu", "BCT", "upsampled token features"), T("mask", "BCT", "all ones [1, 1, T]"),
              T("spks", "BC", "speaker projection"), T("cond", "BCT", "prompt mel, zero after the prompt")),
             ("finalize",), "front",
             "the flow's front end (CausalMaskedDiffWithDiT.inference before the solver): normalise the x-vector, "
             "speaker projection, token embedding of prompt + target, pre-lookahead layer (the last lookahead tokens "
             "as right context when not finalizing), repeat_interleave by token_mel_ratio, cond from the prompt mel",
             ("wrap", "", "prepare")),
        Unit(f"{est}.time_embed", "flow", "module", f"{est}.time_embed", (f"{est}.time_embed",),
             (T("t", "B", "flow time of the step, one per CFG row"),), (T("out", "BC", "time conditioning c"),), (),
             "step", "TimestepEmbedding: sinusoidal embedding of 1000 t (sin half first), Linear, SiLU, Linear",
             ("hook", f"{est}.time_embed")),
        Unit(f"{est}.input_embed", "flow", "module", f"{est}.input_embed", (f"{est}.input_embed",),
             (T("x", "BTC", "the ODE state, time-major"), T("cond", "BTC"), T("mu", "BTC"), T("spks", "BC")),
             (T("out", "BTC", "proj(cat[x, cond, mu, spks]) + causal conv position embedding"),), (), "step",
             "InputEmbedding (time-major inputs: DiT.forward transposes x, mu, cond first)",
             ("hook", f"{est}.input_embed")),
        Unit(f"{est}.rotary_embed", "flow", "method", f"{est}.rotary_embed", (f"{est}.rotary_embed",), (),
             (T("freqs", "TC", "RoPE angles, interleaved pairs: theta_0, theta_0, theta_1, theta_1, ..."),),
             ("seq_len",), "step", "RotaryEmbedding.forward_from_seq_len (x_transformers; its inv_freq buffer)",
             ("wrap", f"{est}.rotary_embed", "forward_from_seq_len")),
    ]
    for i in range(depth):
        b = f"{est}.transformer_blocks.{i}"
        out += [
            Unit(f"{b}.attn_norm", "flow", "module", f"{b}.attn_norm", (f"{b}.attn_norm",),
                 (T("x", "BTC"), T("emb", "BC", "time conditioning c")),
                 (T("norm", "BTC", "LayerNorm(x, eps 1e-6) * (1 + scale_msa) + shift_msa"), T("gate_msa", "BC"),
                  T("shift_mlp", "BC"), T("scale_mlp", "BC"), T("gate_mlp", "BC")), (), "step",
                 "AdaLayerNormZero: Linear(SiLU(emb)) chunked into 6 modulations (shift_msa, scale_msa, gate_msa, "
                 "shift_mlp, scale_mlp, gate_mlp)", ("hook", f"{b}.attn_norm")),
            Unit(f"{b}.attn", "flow", "module", f"{b}.attn", (f"{b}.attn",),
                 (T("x", "BTC", "attn_norm's norm"), T("mask", "BhQJ", "as the block's", optional=True),
                  T("rope", "TC")),
                 (T("out", "BTC"),), (), "step",
                 "Attention: to_q/to_k/to_v, RoPE on the first dim_head channels of the flat projection (head 0 "
                 "only), softmax(q k^T / sqrt(dim_head)) v, to_out", ("hook", f"{b}.attn")),
            Unit(f"{b}.ff", "flow", "module", f"{b}.ff", (f"{b}.ff",),
                 (T("x", "BTC", "LayerNorm(x) * (1 + scale_mlp) + shift_mlp"),), (T("out", "BTC"),), (), "step",
                 "FeedForward: Linear, GELU (tanh approximation), Linear", ("hook", f"{b}.ff")),
            Unit(b, "flow", "module", b, (b,),
                 (T("x", "BTC", "residual stream"), T("t", "BC", "time conditioning c (time_embed's output)"),
                  T("mask", "BhQJ", "boolean chunk mask [1, 1, T, T] (True = attend); absent offline: full attention",
                    optional=True),
                  T("rope", "TC", "RoPE angles (rotary_embed's output)")),
                 (T("out", "BTC"),), (), "step",
                 f"DiT block {i}: AdaLN-Zero, attention with RoPE, gated residual, LayerNorm (eps 1e-6) modulated by "
                 f"shift/scale_mlp, feed-forward, gated residual", ("hook", b)),
        ]
    out += [
        Unit(f"{est}.norm_out", "flow", "module", f"{est}.norm_out", (f"{est}.norm_out",),
             (T("x", "BTC"), T("emb", "BC", "time conditioning c")), (T("out", "BTC"),), (), "step",
             "AdaLayerNormZero_Final: LayerNorm(x) * (1 + scale) + shift, (scale, shift) = chunk(Linear(SiLU(emb)))",
             ("hook", f"{est}.norm_out")),
        Unit(f"{est}.proj_out", "flow", "module", f"{est}.proj_out", (f"{est}.proj_out",),
             (T("input", "BTC"),), (T("out", "BTC", "velocity, time-major (DiT.forward transposes it)"),), (), "step",
             "the output projection (Linear dim -> 80)", ("hook", f"{est}.proj_out")),
        Unit(est, "flow", "module", est, (est,),
             (T("x", "BCT"), T("mask", "BCT", "[2, 1, T] ones"), T("mu", "BCT"), T("t", "B"), T("spks", "BC"),
              T("cond", "BCT")),
             (T("out", "BCT", "velocity of both CFG rows"),), ("streaming",), "step",
             "one call of the DiT estimator on the CFG batch (row 0 conditional, row 1 with mu, spks, cond zeroed); "
             "streaming=True builds the static chunk mask", ("hook", est)),
        Unit("decoder", "flow", "method", "decoder", (est,),
             (T("x", "BCT", "ODE state before the step"), T("t", "B"), T("dt", "", "step size: 0-d at step 1, [1] after (upstream's solver)"),
              T("mu", "BCT"), T("mask", "BCT"), T("spks", "BC"), T("cond", "BCT")),
             (T("x_next", "BCT", "x + dt * v_cfg"), T("v1", "BCT", "conditional velocity"),
              T("v2", "BCT", "unconditional velocity"), T("v_cfg", "BCT", "(1 + cfg_rate) v1 - cfg_rate v2")),
             ("streaming",), "step",
             "one CFG/Euler step of CausalConditionalCFM.solve_euler: the batch of 2, one estimator call, the CFG "
             "combination, the Euler update", ("wrap", "decoder", "step")),
    ]
    return out


def _hift_units(n_up: int, n_kernels: int) -> list[Unit]:
    out = [
        Unit("f0_predictor", "hift", "method", "f0_predictor", ("f0_predictor",),
             (T("mel", "BCT", "the mel HiFT is given, float32"),), (T("f0", "BT", "Hz, float32"),), ("finalize",),
             "vocoder",
             "predict_f0: the F0 predictor in float64 (input cast, weights folded from (g, v) in float64), rounded "
             "to float32; finalize=False: the last 3 frames are right context only", ("wrap", "", "predict_f0")),
        Unit("f0_upsamp", "hift", "op", None, (), (T("f0", "BT"),), (T("f0_up", "BLC", "[1, L, 1]"),), (),
             "vocoder", "nearest upsampling of F0 to samples (x prod(upsample_rates) * hop_len), then transposed",
             ("glue", "f0_upsamp")),
        Unit("m_source", "hift", "method", "m_source", ("m_source",),
             (T("f0", "BT", "Hz per mel frame"), T("rand_ini", "BH", "the shared SineGen2 rand_ini [1, 9]"),
              T("sine_noise", "BLH", "the shared uniform sine noise, its first L rows [1, L, 9]")),
             (T("source", "BCL", "[1, 1, L]"),), (), "vocoder",
             "make_source: f0 upsampled to samples, causal SineGen2 (staircase phase from the cumulative sum of "
             "per-frame phase increments, rand_ini, voiced/unvoiced noise from the shared buffer), l_linear, tanh",
             ("wrap", "", "make_source")),
        Unit("stft", "hift", "op", None, (), (T("s", "BL", "source [1, L]"),),
             (T("s_stft", "BKF", "real parts of the n_fft/2+1 bins, then imaginary parts"),), (), "vocoder",
             "_stft: torch.stft(n_fft, hop_len, periodic Hann window, center, reflect pad)", ("wrap", "", "_stft")),
        Unit("conv_pre", "hift", "module", "conv_pre", ("conv_pre",),
             (T("x", "BCT", "mel (finalize) or its frames before the lookahead"),
              T("context", "BCT", "the conv_pre_look_right lookahead frames (finalize=False); absent: zero pad",
                optional=True)),
             (T("out", "BCT"),), (), "vocoder", "conv_pre: right-causal conv (k = conv_pre_look_right + 1)",
             ("hook", "conv_pre")),
    ]
    for i in range(n_up):
        out += [
            Unit(f"ups.{i}", "hift", "module", f"ups.{i}", (f"ups.{i}",),
                 (T("x", "BCT", f"leaky_relu(stage {i} input, lrelu_slope)"),), (T("out", "BCT"),), (), "vocoder",
                 "CausalConv1dUpsample: nearest upsample by the rate, left pad k-1, conv", ("hook", f"ups.{i}")),
            Unit(f"source_downs.{i}", "hift", "module", f"source_downs.{i}", (f"source_downs.{i}",),
                 (T("x", "BKF", "s_stft (trimmed when not finalizing)"),), (T("out", "BCT"),), (), "vocoder",
                 "the source branch's downsampling conv", ("hook", f"source_downs.{i}")),
            Unit(f"source_resblocks.{i}", "hift", "module", f"source_resblocks.{i}", (f"source_resblocks.{i}",),
                 (T("x", "BCT"),), (T("out", "BCT"),), (), "vocoder",
                 "ResBlock (Snake, dilated causal convs) of the source branch", ("hook", f"source_resblocks.{i}")),
        ]
        for j in range(n_kernels):
            r = f"resblocks.{i * n_kernels + j}"
            out.append(Unit(r, "hift", "module", r, (r,), (T("x", "BCT", f"stage {i} after the source fusion"),),
                            (T("out", "BCT"),), (), "vocoder", f"ResBlock {j} of stage {i}", ("hook", r)))
        out.append(Unit(f"decode/stage{i}", "hift", "glue", None,
                        (f"ups.{i}", f"source_downs.{i}", f"source_resblocks.{i}")
                        + tuple(f"resblocks.{i * n_kernels + j}" for j in range(n_kernels)),
                        (T("x", "BCT", "conv_pre's output (stage 0) or the previous stage's output"),
                         T("s_stft", "BKF", "s_stft as decode uses it (trimmed when not finalizing)")),
                        (T("out", "BCT", "mean of the stage's resblocks"),), (), "vocoder",
                        f"upsampling stage {i} of decode: leaky_relu(lrelu_slope), ups.{i}"
                        + (", reflection pad (1, 0)" if i == n_up - 1 else "")
                        + f", + source_resblocks.{i}(source_downs.{i}(s_stft)), mean of its {n_kernels} resblocks",
                        ("glue", "stage"), {"stage": i}))
    out += [
        Unit("conv_post", "hift", "module", "conv_post", ("conv_post",),
             (T("x", "BCT", "leaky_relu(last stage output), slope 0.01"),
              T("context", "BCT", "absent (zero pad)", optional=True)),
             (T("out", "BKF", "log-magnitudes then phase arguments"),), (), "vocoder", "conv_post (k 7, left-causal)",
             ("hook", "conv_post")),
        Unit("magnitude_phase", "hift", "op", None, (), (T("x", "BKF", "conv_post's output"),),
             (T("magnitude", "BKF", "exp of the first n_fft/2+1 channels, clamped at 100"),
              T("phase", "BKF", "sin of the rest (upstream's 'redundant' sin)")), (), "vocoder",
             "magnitude and phase from conv_post's output", ("glue", "magnitude_phase")),
        Unit("decode/post", "hift", "glue", None, ("conv_post",), (T("x", "BCT", "the last stage's output"),),
             (T("magnitude", "BKF"), T("phase", "BKF")), (), "vocoder",
             "after the last stage: leaky_relu with slope 0.01 (upstream's default, not lrelu_slope), conv_post, "
             "magnitude and phase", ("glue", "post")),
        Unit("istft", "hift", "op", None, (), (T("magnitude", "BKF"), T("phase", "BKF")),
             (T("audio", "BL", "before the streaming trim and the clamp"),), (), "vocoder",
             "_istft: torch.istft of magnitude * (cos phase + i sin phase) (n_fft, hop_len, periodic Hann, center)",
             ("wrap", "", "_istft")),
        Unit("clamp", "hift", "op", None, (), (T("audio_preclamp", "BL"),), (T("audio", "BL"),), (), "vocoder",
             "clamp to +-audio_limit (0.99)", ("glue", "clamp")),
        Unit("decode", "hift", "method", None,
             ("conv_pre", "ups", "source_downs", "source_resblocks", "resblocks", "conv_post"),
             (T("mel", "BCT", "the mel HiFT is given"), T("source", "BCL", "m_source's output")),
             (T("audio", "BL", "24 kHz waveform, clamped"),), ("finalize",), "vocoder",
             "the whole decoder (everything after the source): STFT of the source, conv_pre, the upsampling stages, "
             "conv_post, iSTFT, the streaming trims, the clamp", ("wrap", "", "decode")),
    ]
    return out


def units_for(cfg) -> list[Unit]:
    """Every unit of a model configuration (:class:`reference.config.ModelConfig`), in pipeline order."""
    h = cfg.hift
    return _flow_units(cfg.flow.decoder.estimator.depth) + _hift_units(len(h.upsample_rates),
                                                                        len(h.resblock_kernel_sizes))


def weight_keys(unit: Unit, keys: list[str]) -> list[str]:
    """The state-dict keys (of the unit's component, upstream's format) the unit reads."""
    return [k for k in keys if any(k == p or k.startswith(p + ".") for p in unit.weights)]


def samples_per_frame(model) -> int:
    return int(math.prod(model.hift.upsample_rates) * model.hift.hop_len)
