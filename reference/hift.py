"""The CosyVoice 3 vocoder (``CausalHiFTGenerator``): mel -> F0 -> harmonic source -> 24 kHz waveform.

fp32 eager, except the F0 predictor, which runs in float64 as upstream does. Module and attribute names
equal the keys of the released ``hift.pt`` (section 7.2 of the spec), with weight norm folded: each
weight-normed conv holds a plain ``.weight`` and the generator keeps the unfolded ``(g, v)`` pairs in
``weight_norm_parts`` (see :func:`load_hift_state_dict`).

Operation order follows upstream's op for op (see ``sine_phase`` for where the order of torch ops
matters). Weight norm is folded once at load time with the kernel upstream's parametrization calls
(``torch._weight_norm``): in fp32 for the decoder -- bit-identical to upstream's per-call fp32 fold --
and in float64 for the F0 predictor, exactly as upstream's ``f0_predictor.to(float64)``. With the
defaults every stage (f0, source, s_stft, ..., audio) equals upstream's ``CausalHiFTGenerator`` bit for
bit, finalize and streaming (checked against upstream's code at ace7c47, tiny and full-size configs).

Streaming prefix: upstream's streaming output is a prefix of its finalize output only up to the last
bit on CPU (measured max |diff| 1e-6 .. 3e-7: oneDNN conv results depend on the sequence length).
``set_length_invariant(True)`` runs the decoder convs in fixed-shape tiles (:func:`conv1d_tiled`) so
the prefix is bitwise; it is off by default because it moves the audio ~2e-6 away from upstream.

Three entry points the harness can drive separately, so a candidate can feed a reference ``f0``,
``source`` or ``flow_mel`` into the next stage:

- ``predict_f0(mel, finalize)`` -> f0 [1, T] (finalize) or [1, T-3] (streaming: the last 3 frames are
  the F0 predictor's lookahead);
- ``make_source(f0, noise)`` -> source [1, 1, 480 * f0 frames];
- ``decode(mel, source, finalize)`` -> audio [1, 480 * T] (finalize) or [1, 480 * (T - 8)] (streaming).
  ``mel`` is the same mel ``inference`` receives; when not finalizing, ``decode`` drops its last 3
  frames itself (upstream's ``inference`` does that before calling its ``decode``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import HiFTConfig
from .errors import CheckpointError, InputError
from .init import seeded_tensor
from .noise import SharedNoise
from .probe import NO_PROBE, Probe, as_probe

WN_G = "parametrizations.weight.original0"  # weight norm g [C_out, 1, 1] (torch.nn.utils.parametrizations)
WN_V = "parametrizations.weight.original1"  # weight norm v [C_out, C_in, k]
LEGACY_G, LEGACY_V = "weight_g", "weight_v"  # the old torch.nn.utils.weight_norm names
MAGNITUDE_CLAMP = 1e2  # upstream hard-codes the clip of the iSTFT magnitude at 100 (not in the yaml)
DECODER_FOLD_DTYPE = torch.float32  # upstream's parametrization folds in the weights' dtype (fp32) per call


# ---------------------------------------------------------------------------------------------
# weight norm

def fold_weight_norm(g: torch.Tensor, v: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``W = v * (g / ||v||)`` with the norm over all dims but 0, computed in ``dtype``.

    Uses ``torch._weight_norm``, the kernel upstream's parametrization calls, so a float64 fold here is
    bit-identical to upstream's float64 F0 predictor weights."""
    return torch._weight_norm(v.to(dtype), g.to(dtype), 0)


def _weight_normed(conv: nn.Conv1d) -> nn.Conv1d:
    conv.weight_normed = True  # marks the modules whose checkpoint weight comes as (g, v)
    return conv


# ---------------------------------------------------------------------------------------------
# causal convolutions (padding by hand, never by the conv)

TILE_FRAMES = 16  # conv tile length in mel frames (times the layer's rate in columns per frame)


def conv1d_tiled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
                 dilation: int = 1, tile: int | None = None) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride, 0, dilation)`` (x already padded), computed in output tiles
    of exactly ``tile`` columns, each by one conv call of one fixed shape (the last tile is zero-padded
    on the right; the extra outputs are dropped). ``tile=None``: one call.

    Why: CPU conv kernels (oneDNN, MKL GEMM) choose their blocking from the sequence length, so the same
    output column computed over T or T' frames can differ in the last bit (about 1e-6 here; upstream's own
    streaming output is then not a bitwise prefix of its finalize output). With a fixed call shape every
    column is computed the same way whatever the length: streaming and finalize agree bit for bit.
    The sum is the same conv; only the rounding (1 ulp level) can differ from a single call."""
    if tile is None:
        return F.conv1d(x, weight, bias, stride, 0, dilation)
    span = dilation * (weight.shape[2] - 1) + 1
    n_out = (x.shape[2] - span) // stride + 1
    if n_out <= 0:
        return F.conv1d(x, weight, bias, stride, 0, dilation)  # raises torch's own error
    n_tiles = -(-n_out // tile)
    tile_in = (tile - 1) * stride + span
    need = (n_tiles - 1) * tile * stride + tile_in
    if need > x.shape[2]:
        x = F.pad(x, (0, need - x.shape[2]))  # zeros here feed only outputs past n_out
    outs = [F.conv1d(x[:, :, i * tile * stride:i * tile * stride + tile_in].contiguous(), weight, bias, stride, 0,
                     dilation) for i in range(n_tiles)]
    return torch.cat(outs, dim=2)[:, :, :n_out]


class CausalConv1d(nn.Conv1d):
    """Stride-1 conv padded by ``P = floor((k*d - d)/2)*2 + (k+1) % 2`` zeros on the left or the right.

    ``context`` ([B, C, P]) replaces the zero pad with real frames (streaming)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 causal_type: str = "left"):
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=dilation)
        if causal_type not in ("left", "right"):
            raise ValueError(f"causal_type must be 'left' or 'right', got {causal_type!r}")
        self.causal_padding = int((kernel_size * dilation - dilation) / 2) * 2 + (kernel_size + 1) % 2
        self.causal_type = causal_type
        self.tile: int | None = None  # set by CausalHiFTGenerator.set_length_invariant

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            context = x.new_zeros(x.shape[0], x.shape[1], self.causal_padding)
        x = torch.cat([context, x], dim=2) if self.causal_type == "left" else torch.cat([x, context], dim=2)
        return conv1d_tiled(x, self.weight, self.bias, 1, self.dilation[0], self.tile)


class CausalConv1dUpsample(nn.Conv1d):
    """Nearest upsample by ``stride``, left pad k-1 zeros, stride-1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0)
        self.scale = stride
        self.causal_padding = kernel_size - 1
        self.tile: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return conv1d_tiled(F.pad(x, (self.causal_padding, 0)), self.weight, self.bias, 1, 1, self.tile)


class CausalConv1dDownSample(nn.Conv1d):
    """Left pad stride-1 zeros, then a conv with kernel 2*stride and the given stride (not weight-normed)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        if kernel_size % stride != 0 or stride == 1:
            raise ValueError("CausalConv1dDownSample needs stride > 1 dividing the kernel size")
        self.causal_padding = stride - 1
        self.tile: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv1d_tiled(F.pad(x, (self.causal_padding, 0)), self.weight, self.bias, self.stride[0], 1, self.tile)


class Snake(nn.Module):
    """``x + 1/(alpha + 1e-9) * sin(alpha * x)^2``, one alpha per channel, linear scale."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        return x + (1.0 / (alpha + 1e-9)) * pow(torch.sin(x * alpha), 2)  # upstream's op order


class ResBlock(nn.Module):
    """Causal HiFiGAN/BigVGAN residual block: for each dilation d,
    ``x = convs2(Snake2(convs1_d(Snake1(x)))) + x`` (convs1 dilated, convs2 dilation 1, both left-causal)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList([_weight_normed(CausalConv1d(channels, channels, kernel_size, d, "left"))
                                     for d in dilations])
        self.convs2 = nn.ModuleList([_weight_normed(CausalConv1d(channels, channels, kernel_size, 1, "left"))
                                     for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x


# ---------------------------------------------------------------------------------------------
# F0 predictor

class CausalConvRNNF0Predictor(nn.Module):
    """condnet: conv(k=4, right pad 3: 3 frames of lookahead) + ELU, then 4 x (conv k=3 left pad 2 + ELU);
    ``classifier`` Linear(C -> 1); ``abs``. All five convs are weight-normed. Upstream hard-codes the layer
    count and the kernels 4 and 3; the widths come from the yaml (``in_channels``, ``cond_channels``).

    ``params`` optionally replaces tensors by state-dict key (the generator passes float64 copies)."""

    def __init__(self, in_channels: int = 80, cond_channels: int = 512, num_class: int = 1):
        super().__init__()
        layers: list[nn.Module] = [_weight_normed(CausalConv1d(in_channels, cond_channels, 4, 1, "right")), nn.ELU()]
        for _ in range(4):
            layers += [_weight_normed(CausalConv1d(cond_channels, cond_channels, 3, 1, "left")), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    @property
    def lookahead(self) -> int:
        return self.condnet[0].causal_padding

    def features(self, x: torch.Tensor, finalize: bool = True,
                 params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The condnet output [B, C, T'] (what the classifier reads)."""
        p = params or {}
        for i, layer in enumerate(self.condnet):
            if isinstance(layer, CausalConv1d):
                if i == 0:
                    if finalize:
                        x = F.pad(x, (0, layer.causal_padding))
                    # not finalizing: the last 3 frames are the right context, i.e. no pad at all
                else:
                    x = F.pad(x, (layer.causal_padding, 0))
                x = conv1d_tiled(x, p.get(f"condnet.{i}.weight", layer.weight),
                                 p.get(f"condnet.{i}.bias", layer.bias), 1, 1, layer.tile)
            else:
                x = layer(x)
        return x

    def forward(self, x: torch.Tensor, finalize: bool = True,
                params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, 80, T] -> f0 [B, T], or [B, T-3] when not finalizing (the last 3 frames are context only)."""
        p = params or {}
        x = self.features(x, finalize, params).transpose(1, 2)
        w = p.get("classifier.weight", self.classifier.weight)
        b = p.get("classifier.bias", self.classifier.bias)
        return torch.abs(F.linear(x, w, b).squeeze(-1))


# ---------------------------------------------------------------------------------------------
# source module

class SourceModuleHnNSF(nn.Module):
    """Holds ``l_linear`` (Linear(nb_harmonics + 1, 1); 9 -> 1 released); the causal SineGen2 itself has no
    parameters and lives in :meth:`CausalHiFTGenerator.make_source`."""

    def __init__(self, harmonic_num: int = 8):
        super().__init__()
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def forward(self, sine_waves: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.l_linear(sine_waves))


# ---------------------------------------------------------------------------------------------
# iSTFT

def hann_window(n_fft: int) -> torch.Tensor:
    """Periodic Hann, computed in float64 and rounded once (equal to scipy's ``get_window('hann', n,
    fftbins=True).astype(float32)``, upstream's window; torch's fp32 ``hann_window`` differs by 1 ulp)."""
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float()


def istft_overlap_add(magnitude: torch.Tensor, phase: torch.Tensor, n_fft: int, hop: int,
                      window: torch.Tensor) -> torch.Tensor:
    """The iSTFT spelled out (documentation for ports; the model calls ``torch.istft``).

    magnitude, phase [B, n_fft/2+1, F] (phase is the angle) -> [B, hop * (F - 1)]: irfft each frame
    (imaginary parts of the DC and Nyquist bins ignored), window, overlap-add at ``hop``, divide by the
    overlap-added window^2, drop n_fft/2 samples at each end (``center=True``)."""
    spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window.view(1, -1, 1)  # [B, n_fft, F]
    n_frames = spec.shape[2]
    total = n_fft + hop * (n_frames - 1)
    y = F.fold(frames, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop)).reshape(spec.shape[0], total)
    env = F.fold((window ** 2).view(1, -1, 1).expand(1, n_fft, n_frames), output_size=(1, total),
                 kernel_size=(1, n_fft), stride=(1, hop)).reshape(total)
    half = n_fft // 2
    return y[:, half:total - half] / env[half:total - half]


# ---------------------------------------------------------------------------------------------
# generator

class CausalHiFTGenerator(nn.Module):
    max_batch = 1  # rows a mel may hold; raised on an instance only by the noise-floor ensemble's batched members

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_fft = cfg.istft_params["n_fft"]
        self.hop_len = cfg.istft_params["hop_len"]
        self.upsample_rates = list(cfg.upsample_rates)
        self.upsample_scale = cfg.hop_samples  # samples per mel frame: prod(upsample_rates) * hop (480)
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        self.conv_pre_look_right = cfg.conv_pre_look_right
        base, n_bins = cfg.base_channels, self.n_fft + 2

        # registration order = upstream's, so state-dict key order matches hift.pt
        self.m_source = SourceModuleHnNSF(cfg.nb_harmonics)
        self.conv_pre = _weight_normed(
            CausalConv1d(cfg.in_channels, base, cfg.conv_pre_look_right + 1, 1, "right"))
        self.ups = nn.ModuleList([
            _weight_normed(CausalConv1dUpsample(base // 2 ** i, base // 2 ** (i + 1), k, u))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        # source stage i runs at the rate of ups[i]: downsample the STFT frames by prod(rates[i+1:])
        down_rates = [math.prod(cfg.upsample_rates[i + 1:]) for i in range(self.num_upsamples)]
        for i, (u, k, d) in enumerate(zip(down_rates, cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            self.source_downs.append(CausalConv1d(n_bins, ch, 1, 1, "left") if u == 1
                                     else CausalConv1dDownSample(n_bins, ch, u * 2, u))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = _weight_normed(CausalConv1d(ch, n_bins, 7, 1, "left"))  # kernel 7: upstream hard-codes it
        fp = cfg.f0_predictor
        self.f0_predictor = CausalConvRNNF0Predictor(fp.in_channels, fp.cond_channels, fp.num_class)
        self.register_buffer("stft_window", hann_window(self.n_fft), persistent=False)
        # {module prefix: (g, v)} as loaded (fp32), not in the state dict; see load_hift_state_dict
        self.weight_norm_parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.set_length_invariant(False)
        self.eval()

    def set_length_invariant(self, on: bool = True) -> "CausalHiFTGenerator":
        """On (off by default): every decoder conv runs in fixed-shape tiles (:func:`conv1d_tiled`), so its
        results do not depend on the sequence length and streaming output is a bitwise prefix of
        finalize output. Off: one conv call per layer, as upstream does (bitwise equal to upstream on the
        same machine, but the prefix property can fail in the last bit).

        The F0 predictor is never tiled: it runs in float64, where a length-dependent last bit (~1e-16
        relative) practically never survives the rounding of f0 to fp32, and untiled it gives upstream's
        f0, hence upstream's source, bit for bit."""
        rate = 1
        rates = {"conv_pre": 1}
        for i, u in enumerate(self.upsample_rates):
            rate *= u
            for name in (f"ups.{i}", f"source_downs.{i}", f"source_resblocks.{i}"):
                rates[name] = rate
            for j in range(self.num_kernels):
                rates[f"resblocks.{i * self.num_kernels + j}"] = rate
        rates["conv_post"] = rate
        for name, m in self.named_modules():
            top = next((k for k in rates if name == k or name.startswith(k + ".")), None)
            if hasattr(m, "tile") and top is not None:
                m.tile = TILE_FRAMES * rates[top] if on else None
        self.length_invariant = on
        return self

    # -- helpers -----------------------------------------------------------------------------------
    def _dtypes_ok(self) -> tuple:
        """float32, plus float64 once the module itself was cast to float64 (the fp64 arbiter reference)."""
        return (torch.float32, torch.float64) if self.conv_pre.weight.dtype == torch.float64 else (torch.float32,)

    def weight_norm_prefixes(self) -> list[str]:
        return [name for name, m in self.named_modules() if getattr(m, "weight_normed", False)]

    def _check_mel(self, mel: torch.Tensor, finalize: bool, what: str = "speech_feat") -> int:
        if not isinstance(mel, torch.Tensor):
            raise InputError(f"hift: tensor '{what}' is missing")
        if mel.dim() != 3 or not 1 <= mel.shape[0] <= self.max_batch or mel.shape[1] != self.cfg.in_channels:
            raise InputError(f"hift: tensor '{what}' must be [1, {self.cfg.in_channels}, T] (channel-major), "
                             f"got {list(mel.shape)}")
        if mel.dtype not in self._dtypes_ok():
            raise InputError(f"hift: tensor '{what}' must be float32, got {mel.dtype}")
        T = mel.shape[2]
        need = 1 if finalize else self.f0_predictor.lookahead + self.conv_pre_look_right + 2
        if T < need:
            raise InputError(f"hift: tensor '{what}' has {T} frames; "
                             + ("at least 1 is needed" if finalize else
                                f"a non-final (streaming) call needs at least {need}: "
                                f"{self.f0_predictor.lookahead} frames of F0 lookahead and "
                                f"{self.conv_pre_look_right} of conv_pre lookahead (hift.conv_pre_look_right) are "
                                f"held back, then one more frame of output is dropped"))
        return T

    def _f0_params64(self) -> dict[str, torch.Tensor]:
        """The F0 predictor's tensors in float64. Weight-normed convs are re-folded from (g, v) in float64,
        as upstream's ``f0_predictor.to(float64)`` does; without parts the fp32 weight is upcast."""
        params = {k: v.double() for k, v in self.f0_predictor.state_dict().items()}
        for prefix, (g, v) in self.weight_norm_parts.items():
            if prefix.startswith("f0_predictor."):
                params[prefix[len("f0_predictor."):] + ".weight"] = fold_weight_norm(g, v, torch.float64)
        return params

    # -- stages ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel [1, 80, T] float32 -> f0 [1, T] (or [1, T-3] when not finalizing) in Hz, float32.

        Computed in float64 (weights and input), then rounded to the mel's dtype, as upstream does."""
        self._check_mel(mel, finalize)
        f0 = self.f0_predictor(mel.to(torch.float64), finalize=finalize, params=self._f0_params64())
        return f0.to(mel.dtype)

    @torch.no_grad()
    def make_source(self, f0: torch.Tensor, noise: SharedNoise) -> torch.Tensor:
        """f0 [1, N] (Hz) -> harmonic source [1, 1, S N] (causal SineGen2 + l_linear + tanh), where S =
        prod(upsample_rates) * hop_len samples per frame (480 released).

        The phase is a staircase: ``sin(S * 2pi * cumsum_k((h * f0_k / sr) mod 1))``, constant over each
        S-sample frame. Noise is the fixed uniform buffer ``noise.sine_noise(L)``: upstream's, drawn with
        the sizes of this model's configuration (:mod:`reference.noise`)."""
        if not isinstance(f0, torch.Tensor) or f0.dim() != 2 or not 1 <= f0.shape[0] <= self.max_batch:
            raise InputError(f"hift: tensor 'f0' must be [1, frames], got "
                             f"{list(f0.shape) if isinstance(f0, torch.Tensor) else type(f0).__name__}")
        if f0.dtype not in self._dtypes_ok():
            raise InputError(f"hift: tensor 'f0' must be float32, got {f0.dtype}")
        if f0.shape[1] == 0:
            raise InputError("hift: tensor 'f0' is empty")
        cfg = self.cfg
        f0_up = F.interpolate(f0[:, None], scale_factor=self.upsample_scale, mode="nearest").transpose(1, 2)
        L = f0_up.shape[1]  # f0_up: [1, L, 1]
        sine_waves = torch.sin(self.sine_phase(f0_up, noise.rand_ini)) * cfg.nsf_alpha
        uv = (f0_up > cfg.nsf_voiced_threshold).type(f0_up.dtype)
        noise_amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
        sine_waves = sine_waves * uv + noise_amp * noise.sine_noise(L).to(sine_waves.device, sine_waves.dtype)
        return self.m_source(sine_waves).transpose(1, 2)

    def sine_phase(self, f0_up: torch.Tensor, rand_ini: torch.Tensor) -> torch.Tensor:
        """The causal SineGen2 phase: f0 upsampled to samples [1, L, 1] -> sine argument [1, L, nb_harmonics + 1]
        for the harmonics h = 1..nb_harmonics + 1: ``S * 2pi * cumsum_{j<=k}((h * f0_j / sr) mod 1)`` for every
        sample of frame k, S samples per frame (a staircase, constant over each frame; the non-causal SineGen2
        ramps linearly instead)."""
        cfg, scale = self.cfg, self.upsample_scale
        harmonics = torch.arange(1, cfg.nb_harmonics + 2, dtype=f0_up.dtype, device=f0_up.device).view(1, 1, -1)
        rad = (f0_up * harmonics / cfg.sampling_rate) % 1  # [1, L, 9] cycles per sample, integer part dropped
        rad[:, 0, :] = rad[:, 0, :] + rand_ini.to(rad.device, rad.dtype)  # sample 0 only: never read below (no effect)
        # linear resampling to frames reads samples 480k+239 and 480k+240: both hold frame k's value
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear").transpose(1, 2)
        phase = torch.cumsum(rad, dim=1) * 2 * math.pi  # [1, T, 9]
        # per-frame phase * 480, nearest-upsampled back to samples
        return F.interpolate(phase.transpose(1, 2) * scale, scale_factor=scale, mode="nearest").transpose(1, 2)

    def _stft(self, s: torch.Tensor) -> torch.Tensor:
        """[1, L] -> [1, n_fft+2, L/hop + 1]: real parts then imaginary parts (center, reflect pad)."""
        spec = torch.view_as_real(torch.stft(s, self.n_fft, self.hop_len, self.n_fft, window=self.stft_window,
                                             return_complex=True))
        return torch.cat([spec[..., 0], spec[..., 1]], dim=1)

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        real = magnitude * torch.cos(phase)
        img = magnitude * torch.sin(phase)
        return torch.istft(torch.complex(real, img), self.n_fft, self.hop_len, self.n_fft, window=self.stft_window)

    @torch.no_grad()
    def decode(self, mel: torch.Tensor, source: torch.Tensor, finalize: bool = True,
               probe: Probe = NO_PROBE) -> torch.Tensor:
        """mel [1, 80, T] (the mel ``inference`` gets) + source [1, 1, L] -> audio [1, 480 T], or
        [1, 480 (T-8)] when not finalizing (then L must be 480 (T-3) and the last 3 mel frames are dropped).

        Probe stages: ``s_stft`` (after the streaming trim), ``conv_pre``, ``magnitude`` (clamped, as it
        enters the iSTFT), ``phase``, ``audio_preclamp`` (after the streaming trim), ``audio``; and, only
        when the recorder wants them, ``hift.ups{i}`` (upsample conv output, before the last stage's
        reflection pad), ``hift.source_down{i}``, ``hift.fusion{i}`` (x + source branch),
        ``hift.resblocks{i}`` (the stage mean) and ``hift.conv_post``."""
        probe = as_probe(probe)
        T = self._check_mel(mel, finalize)
        n_mel = T if finalize else T - self.f0_predictor.lookahead
        want = n_mel * self.upsample_scale
        if not isinstance(source, torch.Tensor) or source.dim() != 3 or source.shape[0] != mel.shape[0] \
                or source.shape[1] != 1 or source.shape[2] != want:
            got = list(source.shape) if isinstance(source, torch.Tensor) else type(source).__name__
            why = "" if finalize else f" when not finalizing ({self.f0_predictor.lookahead} frames of F0 lookahead)"
            raise InputError(f"hift: tensor 'source' must be [1, 1, {want}] for {T} mel frames{why}, got {got}")
        if source.dtype not in self._dtypes_ok():
            raise InputError(f"hift: tensor 'source' must be float32, got {source.dtype}")
        x = mel if finalize else mel[:, :, :n_mel]
        s_stft = self._stft(source.squeeze(1))
        if finalize:
            x = self.conv_pre(x)
        else:
            look = self.conv_pre_look_right
            x = self.conv_pre(x[:, :, :-look], x[:, :, -look:])  # the last 4 frames are right context
            s_stft = s_stft[:, :, :-(math.prod(self.upsample_rates) * look)]  # STFT frames of `look` mel frames (480)
        probe("s_stft", s_stft)
        probe("conv_pre", x)

        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, self.cfg.lrelu_slope)
            x = self.ups[i](x)
            probe(f"hift.ups{i}", x)
            if i == self.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # ReflectionPad1d((1, 0)): prepend x[..., 1]
            si = self.source_downs[i](s_stft)
            probe(f"hift.source_down{i}", si)
            x = x + self.source_resblocks[i](si)
            probe(f"hift.fusion{i}", x)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
            probe(f"hift.resblocks{i}", x)

        x = F.leaky_relu(x)  # default slope 0.01, not lrelu_slope: upstream hard-codes it
        x = self.conv_post(x)
        probe("hift.conv_post", x)
        n_bins = self.n_fft // 2 + 1
        magnitude = torch.clamp(torch.exp(x[:, :n_bins, :]), max=MAGNITUDE_CLAMP)
        phase = torch.sin(x[:, n_bins:, :])  # upstream's "redundant" sin, kept
        probe("magnitude", magnitude)
        probe("phase", phase)
        audio = self._istft(magnitude, phase)
        if not finalize:
            audio = audio[:, :-(math.prod(self.upsample_rates) * self.hop_len)]  # one mel frame of samples (480)
        probe("audio_preclamp", audio)
        audio = torch.clamp(audio, -self.cfg.audio_limit, self.cfg.audio_limit)
        probe("audio", audio)
        return audio

    @torch.no_grad()
    def inference(self, speech_feat: torch.Tensor, noise: SharedNoise, finalize: bool = True,
                  probe: Probe = NO_PROBE) -> torch.Tensor:
        """speech_feat [1, 80, T] float32 -> audio [1, 480 T] (finalize) or [1, 480 (T - 8)] (streaming),
        a bit-identical prefix of the finalize output for the same leading frames."""
        probe = as_probe(probe)
        f0 = self.predict_f0(speech_feat, finalize)
        probe("f0", f0)
        source = self.make_source(f0, noise)
        probe("source", source)
        return self.decode(speech_feat, source, finalize, probe)


# ---------------------------------------------------------------------------------------------
# checkpoints

def _file_key_map(sd: dict[str, torch.Tensor]) -> dict[str, str]:
    """canonical key -> the file's own key (a leading ``generator.`` is stripped)."""
    out = {}
    for k in sd:
        out[k[len("generator."):] if k.startswith("generator.") else k] = k
    return out


def load_hift_state_dict(module: CausalHiFTGenerator, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load a ``hift.pt``-style state dict into ``module``, folding weight norm once.

    Accepts ``<m>.parametrizations.weight.original0/original1`` (g, v; the released format), the legacy
    ``<m>.weight_g/<m>.weight_v``, and an optional ``generator.`` prefix. Folds ``W = v * (g / ||v||)``
    in float64 and stores it as fp32 ``<m>.weight``; the (g, v) pairs (as fp32) go to
    ``module.weight_norm_parts``. fp16/bf16 tensors are upcast. Every missing, unexpected, wrong-shape
    or non-float key is reported, in the file's own names, in one :class:`CheckpointError`."""
    keymap = _file_key_map(sd)
    if len(keymap) != len(sd):
        dup = sorted(k for k in sd if k.startswith("generator.") and k[len("generator."):] in sd)
        raise CheckpointError(f"{source}: keys present both with and without the 'generator.' prefix: "
                              + ", ".join(dup))
    prefix = "generator." if any(k.startswith("generator.") for k in sd) else ""
    legacy_file = any(k.endswith("." + LEGACY_G) for k in keymap) and not any(k.endswith("." + WN_G) for k in keymap)
    own = module.state_dict()
    wn = set(module.weight_norm_prefixes())
    missing: list[str] = []
    bad_shape: list[str] = []
    not_float: list[str] = []
    used: set[str] = set()
    values: dict[str, torch.Tensor] = {}  # canonical module key -> tensor as stored (cast on copy)
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def take(key: str, shape) -> torch.Tensor | None:
        """Fetch canonical ``key`` (shape-checked), recording problems under the file's name."""
        fkey = keymap.get(key)
        if fkey is None:
            missing.append(prefix + key)
            return None
        used.add(key)
        t = sd[fkey]
        if not t.is_floating_point():
            not_float.append(f"{fkey} is {t.dtype}, expected floating point")
            return None
        if tuple(t.shape) != tuple(shape):
            bad_shape.append(f"{fkey} is {list(t.shape)}, expected {list(shape)}")
            return None
        return t.detach()

    for key, ref in own.items():
        mod, _, leaf = key.rpartition(".")
        if leaf == "weight" and mod in wn:
            g_shape, v_shape = (ref.shape[0], 1, 1), tuple(ref.shape)
            if f"{mod}.{WN_G}" in keymap or f"{mod}.{WN_V}" in keymap:
                names = (WN_G, WN_V)
            elif f"{mod}.{LEGACY_G}" in keymap or f"{mod}.{LEGACY_V}" in keymap:
                names = (LEGACY_G, LEGACY_V)
            else:
                names = (LEGACY_G, LEGACY_V) if legacy_file else (WN_G, WN_V)
            g = take(f"{mod}.{names[0]}", g_shape)
            v = take(f"{mod}.{names[1]}", v_shape)
            if g is not None and v is not None:
                parts[mod] = (g.to(torch.float32, copy=True), v.to(torch.float32, copy=True))
        else:
            t = take(key, ref.shape)
            if t is not None:
                values[key] = t
    unexpected = [keymap[k] for k in keymap if k not in used]
    if missing or unexpected or bad_shape or not_float:
        lines = [f"{source}: checkpoint does not match the CosyVoice 3 HiFT generator ({len(missing)} missing, "
                 f"{len(unexpected)} unexpected, {len(bad_shape)} wrong shape, {len(not_float)} not floating point)"]
        folded = [k for k in unexpected if k.endswith(".weight") and k[len(prefix):].rpartition(".")[0] in wn]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("wrong shapes", bad_shape), ("wrong dtypes", not_float)):
            if items:
                shown = items[:64]
                lines.append(f"  {title}: " + "; ".join(shown)
                             + (f"; ... and {len(items) - 64} more" if len(items) > 64 else ""))
        if folded:
            lines.append("  note: weight-normed layers must come as (g, v) pairs "
                         f"(.{WN_G}/.{WN_V} or .{LEGACY_G}/.{LEGACY_V}), not as a folded .weight")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for key, ref in own.items():
            mod, _, leaf = key.rpartition(".")
            if leaf == "weight" and mod in parts:
                g, v = parts[mod]
                ref.copy_(fold_weight_norm(g, v, DECODER_FOLD_DTYPE).to(ref.dtype))
            else:
                ref.copy_(values[key])
    module.weight_norm_parts = parts


def hift_state_dict_upstream(module: CausalHiFTGenerator) -> dict[str, torch.Tensor]:
    """The module's weights in the released ``hift.pt`` format and key order: weight-normed layers as
    ``.bias``, ``.parametrizations.weight.original0`` (g), ``.original1`` (v), from ``weight_norm_parts``.

    Raises ``ValueError`` when a layer has no parts or its ``.weight`` no longer equals the fold of its
    parts (the weights were changed after loading)."""
    wn = set(module.weight_norm_prefixes())
    out: dict[str, torch.Tensor] = {}
    for key, t in module.state_dict().items():
        mod, _, leaf = key.rpartition(".")
        if mod not in wn:
            out[key] = t.detach().clone()
            continue
        if mod not in module.weight_norm_parts:
            raise ValueError(f"hift: no weight-norm parts for '{mod}' (build the module with build_hift or "
                             "load_hift_state_dict)")
        g, v = module.weight_norm_parts[mod]
        if leaf == "weight":
            w = getattr(module.get_submodule(mod), "weight")
            if not torch.equal(fold_weight_norm(g, v, DECODER_FOLD_DTYPE).to(w.dtype), w):
                raise ValueError(f"hift: '{mod}.weight' differs from the fold of its weight-norm parts")
            continue
        out[key] = t.detach().clone()  # bias first, then g and v: upstream's order
        out[f"{mod}.{WN_G}"] = g.clone()
        out[f"{mod}.{WN_V}"] = v.clone()
    return out


# ---------------------------------------------------------------------------------------------
# seeded weights

# (key substring, gain, bias mean, bias std): weight-normed layers get g ~ N(gain, (0.1 gain)^2) (the
# row norm of W, so W entries are ~ gain / sqrt(fan_in)) and v ~ N(0, 1); plain layers get
# W ~ N(0, gain^2 / fan_in); Snake alphas get N(bias mean, bias std^2). The first matching rule applies.
HIFT_RULES: list[tuple[str, float, float, float]] = [
    ("f0_predictor.condnet.0", 0.2, 0.0, 0.1),  # reads raw log-mel (rms ~6): small gain
    ("f0_predictor.condnet", 1.5, 0.0, 0.1),
    ("f0_predictor.classifier", 60.0, 0.0, 0.0),  # then calibrated, see _calibrate_f0_classifier
    ("m_source.l_linear", 3.0, 0.0, 0.05),
    ("activations", 0.0, 1.0, 0.15),  # Snake alpha ~ N(1, 0.15^2): never near 0
    ("conv_pre", 0.2, 0.0, 0.05),  # reads raw log-mel
    ("ups.", 1.0, 0.0, 0.05),
    ("source_downs", 1.0, 0.0, 0.05),
    (".convs1.", 1.0, 0.0, 0.05),
    (".convs2.", 0.5, 0.0, 0.05),  # residual branches at half gain
    ("conv_post", 0.5, 0.0, 0.05),  # plus CONV_POST_BIAS
    ("", 1.0, 0.0, 0.05),
]
F0_BIAS = 200.0  # Hz: mean F0 for a uniform [-11, 2] log-mel
F0_SILENCE = -11.0  # log-mel of silence (ln 1e-5 = -11.5): F0 = 0 there
CONV_POST_BIAS = (-1.25, 0.0)  # added to the log-magnitude half / the phase half of conv_post.bias


def _rule(key: str):
    return next(r for r in HIFT_RULES if r[0] in key)


def _calibrate_f0_classifier(module: CausalHiFTGenerator, sd: dict[str, torch.Tensor], seed: int) -> None:
    """Make the seeded F0 realistic: ~F0_BIAS Hz on a uniform [-11, 2] log-mel, falling (linearly in the
    condnet feature space) to 0 Hz in silence, so frames inside a silent stretch are unvoiced.

    h_ref: mean condnet feature over a seeded uniform [-11, 2] mel; h_sil: the feature of constant
    silence. The random classifier weight w gets a component along d = h_sil - h_ref such that
    w.h_sil + b = 0 and w.h_ref + b = F0_BIAS; the random rest of w gives the frame-to-frame spread."""
    fp = module.f0_predictor
    params = {k[len("f0_predictor."):]: v.double() for k, v in sd.items()
              if k.startswith("f0_predictor.") and ".parametrizations." not in k}
    for i, layer in enumerate(fp.condnet):
        if isinstance(layer, CausalConv1d):
            key = f"f0_predictor.condnet.{i}.parametrizations.weight"
            params[f"condnet.{i}.weight"] = fold_weight_norm(sd[f"{key}.original0"], sd[f"{key}.original1"])
    u = torch.special.ndtr(seeded_tensor("f0-calibration-mel", (1, fp.condnet[0].in_channels, 64), seed, 1.0))
    # frames with a full receptive field only (8 past, 3 future)
    h_ref = fp.features((u * 13 - 11).double(), params=params)[0, :, 8:-3].mean(dim=1)
    h_sil = fp.features(torch.full_like(u, F0_SILENCE, dtype=torch.float64), params=params)[0, :, 8:-3].mean(dim=1)
    w = sd["f0_predictor.classifier.weight"].double()[0]
    d = h_sil - h_ref
    w = w + (-F0_BIAS - w @ d) * d / (d @ d)
    sd["f0_predictor.classifier.weight"] = w.float()[None]
    sd["f0_predictor.classifier.bias"] = (F0_BIAS - w @ h_ref).float().reshape(1)


def build_hift(cfg: HiFTConfig, seed: int) -> CausalHiFTGenerator:
    """A HiFT generator with deterministic seeded weights, made like a real checkpoint: every tensor of
    the ``hift.pt`` layout (weight-normed layers as g = ``.parametrizations.weight.original0`` and
    v = ``.original1``) comes from :func:`reference.init.seeded_tensor` under its key name, and is
    loaded (folded) by :func:`load_hift_state_dict`.

    Magnitudes (HIFT_RULES) are chosen so every stage does real work for log-mel inputs in [-11, 2],
    with both the tiny and the full-size config (numbers measured on 100-frame uniform, smooth
    speech-like and N(0, 1.6^2) "flow-like" mels):

    - F0: the classifier is calibrated (:func:`_calibrate_f0_classifier`) to 200 Hz on average for a
      uniform [-11, 2] mel (median 170-200 Hz, 85-98 % of frames in 80-400 Hz), lower for quieter
      frames and 0 Hz in silence: frames inside a silent stretch fall under the 10 Hz voiced threshold
      and get the unvoiced noise branch of the source;
    - source: ``l_linear`` gain 3, so the merged harmonics reach about +-0.3 before the tanh;
    - ``conv_pre`` and ``condnet.0`` read the raw log-mel (rms ~6) with gain 0.2, so activations are O(1)
      (std 1-2 through every stage); Snake alphas ~ N(1, 0.15^2); residual branches (``convs2``) at
      half gain;
    - ``conv_post``: gain 0.5 and log-magnitude bias -1.25, so exp(x) is mostly 0.1-1.3 (99.9th
      percentile < 10), far below the clamp at 100; the waveform has std ~0.12-0.23 (tiny) or ~0.04
      (full size) and stays inside +-0.99 but for rare peaks (<= 0.1 % of samples, tiny) that the
      final clamp cuts.
    """
    module = CausalHiFTGenerator(cfg)
    sd: dict[str, torch.Tensor] = {}
    for key, t in hift_state_dict_template(module).items():
        _, gain, b_mean, b_std = _rule(key)
        if key.endswith(WN_G):
            sd[key] = seeded_tensor(key, t.shape, seed, 0.1 * gain, gain)
        elif key.endswith(WN_V):
            sd[key] = seeded_tensor(key, t.shape, seed, 1.0)
        elif key.endswith("bias") or key.endswith(".alpha"):
            sd[key] = seeded_tensor(key, t.shape, seed, b_std, b_mean)
        else:
            fan_in = max(1, math.prod(t.shape[1:]))
            sd[key] = seeded_tensor(key, t.shape, seed, gain / math.sqrt(fan_in))
    n_bins = module.n_fft // 2 + 1
    offset = torch.full_like(sd["conv_post.bias"], CONV_POST_BIAS[1])
    offset[:n_bins] = CONV_POST_BIAS[0]
    sd["conv_post.bias"] = sd["conv_post.bias"] + offset
    if cfg.f0_predictor.num_class == 1:
        _calibrate_f0_classifier(module, sd, seed)
    load_hift_state_dict(module, sd, source=f"seeded:{seed}")
    return module


def hift_state_dict_template(module: CausalHiFTGenerator) -> dict[str, torch.Tensor]:
    """Empty tensors with the names and shapes of the released ``hift.pt`` (upstream key order)."""
    wn = set(module.weight_norm_prefixes())
    out: dict[str, torch.Tensor] = {}
    for key, t in module.state_dict().items():
        mod, _, leaf = key.rpartition(".")
        if mod in wn and leaf == "weight":
            continue
        out[key] = torch.empty(t.shape)
        if mod in wn:
            w = module.get_submodule(mod).weight
            out[f"{mod}.{WN_G}"] = torch.empty(w.shape[0], 1, 1)
            out[f"{mod}.{WN_V}"] = torch.empty(w.shape)
    return out
