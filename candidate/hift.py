"""The candidate vocoder: the reference HiFT's weights with precision switches (fp16/bf16 islands, the
F0 predictor and iSTFT optionally kept in fp32), weight norm folded once or per call, and the
vocoder faults (fp16 weight-norm fold, iSTFT gain, smooth sine, a broadcasting crash)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from reference.hift import MAGNITUDE_CLAMP, CausalHiFTGenerator, fold_weight_norm
from reference.noise import SharedNoise
from reference.probe import NO_PROBE, Probe, as_probe

from .dit import DTYPE
from .faults import ActiveFaults

if TYPE_CHECKING:  # the switches are data here (annotations only)
    from .switches import Switches


class CandidateHiFT(nn.Module):
    def __init__(self, ref: CausalHiFTGenerator, sw: Switches, faults: ActiveFaults, device: str = "cpu"):
        super().__init__()
        self.g = copy.deepcopy(ref)
        self.g.weight_norm_parts = {k: (gg.clone(), vv.clone()) for k, (gg, vv) in ref.weight_norm_parts.items()}
        self.sw, self.faults, self.device = sw, faults, device
        self.low = DTYPE[sw.hift_dtype]
        self.reduced = self.low != torch.float32
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        wn_dtype = faults.override("weightnorm_dtype", None)
        if wn_dtype is not None:  # fault: g, v and ||v|| in half precision
            self._refold(wn_dtype)
        if self.reduced and sw.precision_mode == "cast":
            for comp, mods in self._components().items():
                if not sw.keeps(comp):
                    for m in mods:
                        m.to(self.low)
        self.g.to(device)

    def _components(self) -> dict[str, list[nn.Module]]:
        g = self.g
        return {"hift.conv_pre": [g.conv_pre], "hift.ups": [g.ups], "hift.source_fusion": [g.source_downs,
                                                                                            g.source_resblocks],
                "hift.resblocks": [g.resblocks], "hift.conv_post": [g.conv_post], "hift.source": [g.m_source]}

    def _refold(self, dtype: torch.dtype) -> None:
        with torch.no_grad():
            for prefix, (gg, vv) in self.g.weight_norm_parts.items():
                mod = self.g.get_submodule(prefix)
                mod.weight.copy_(fold_weight_norm(gg, vv, dtype).to(mod.weight.dtype))
        self._f0_fold_dtype = dtype

    # -- precision regions ---------------------------------------------------------------------------
    def region(self, comp: str):
        if not self.reduced or self.sw.precision_mode == "cast":
            return contextlib.nullcontext()
        if self.sw.keeps(comp):
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.low)

    def _in(self, comp: str, x: torch.Tensor) -> torch.Tensor:
        if not self.reduced:
            return x
        if self.sw.keeps(comp):
            return x.float()
        return x.to(self.low) if self.sw.precision_mode == "cast" else x

    def _weights_per_call(self):
        """fold_weightnorm_once=False: recompute every weight-normed weight from (g, v) on each call, the
        way torch's parametrizations do (in the weights' dtype)."""
        if self.sw.fold_weightnorm_once:
            return
        with torch.no_grad():
            for prefix, (gg, vv) in self.g.weight_norm_parts.items():
                mod = self.g.get_submodule(prefix)
                wdt = getattr(self, "_f0_fold_dtype", mod.weight.dtype)
                mod.weight.copy_(torch._weight_norm(vv.to(wdt).to(mod.weight.device), gg.to(wdt).to(mod.weight.device),
                                                    0).to(mod.weight.dtype))

    # -- stages ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        g = self.g
        fold = getattr(self, "_f0_fold_dtype", None)
        if (not self.reduced or self.sw.keeps("hift.f0_predictor")) and fold is None:
            return g.predict_f0(mel, finalize)  # the reference path: float64
        if not self.reduced or self.sw.keeps("hift.f0_predictor"):
            # fault path: float64 compute, but weights folded in half precision
            params = {k: v.double() for k, v in g.f0_predictor.state_dict().items()}
            for prefix, (gg, vv) in g.weight_norm_parts.items():
                if prefix.startswith("f0_predictor."):
                    params[prefix[len("f0_predictor."):] + ".weight"] = fold_weight_norm(gg, vv, fold).double()
            return g.f0_predictor(mel.double(), finalize=finalize, params=params).to(mel.dtype)
        # reduced-precision F0 predictor (what a naive fp16 vocoder does)
        with self.region("hift.f0_predictor"):
            x = mel.to(self.low) if self.sw.precision_mode == "cast" else mel
            fp = g.f0_predictor
            if self.sw.precision_mode == "cast":
                fp = copy.deepcopy(fp).to(self.low)
            return fp(x, finalize=finalize).float()

    @torch.no_grad()
    def make_source(self, f0: torch.Tensor, noise: SharedNoise) -> torch.Tensor:
        g, cfg = self.g, self.g.cfg
        scale = g.upsample_scale
        f0_up = F.interpolate(f0[:, None], scale_factor=scale, mode="nearest").transpose(1, 2)
        L = f0_up.shape[1]
        if self.faults.override("sine_mode") == "linear":  # fault: the non-causal SineGen2's linear phase
            harmonics = torch.arange(1, cfg.nb_harmonics + 2, dtype=torch.float32, device=f0.device).view(1, 1, -1)
            rad = (f0_up * harmonics / cfg.sampling_rate) % 1
            rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear").transpose(1, 2)
            phase = torch.cumsum(rad, dim=1) * 2 * math.pi
            arg = F.interpolate(phase.transpose(1, 2) * scale, scale_factor=scale, mode="linear").transpose(1, 2)
        else:
            arg = g.sine_phase(f0_up, noise.rand_ini)
        sine = torch.sin(arg) * cfg.nsf_alpha
        uv = (f0_up > cfg.nsf_voiced_threshold).type(torch.float32)
        amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
        amp = self.faults.hook("source_amp", amp)
        sine = sine * uv + amp * noise.sine_noise(L).to(sine.device)
        with self.region("hift.source"):
            s = g.m_source(self._in("hift.source", sine))
        return s.float().transpose(1, 2)

    @torch.no_grad()
    def decode(self, mel: torch.Tensor, source: torch.Tensor, finalize: bool = True, probe: Probe = NO_PROBE):
        g = self.g
        probe = as_probe(probe)
        self._weights_per_call()
        T = g._check_mel(mel, finalize)
        n_mel = T if finalize else T - g.f0_predictor.lookahead
        x = mel if finalize else mel[:, :, :n_mel]
        s_stft = g._stft(source.squeeze(1).float())
        with self.region("hift.conv_pre"):
            xi = self._in("hift.conv_pre", x)
            if finalize:
                x = g.conv_pre(xi)
            else:
                look = g.conv_pre_look_right
                x = g.conv_pre(xi[:, :, :-look], xi[:, :, -look:])
                s_stft = s_stft[:, :, :-(math.prod(g.upsample_rates) * look)]
        s_stft = self.faults.hook("s_stft", s_stft)
        probe("s_stft", s_stft)
        probe("conv_pre", x)
        for i in range(g.num_upsamples):
            x = F.leaky_relu(x, g.cfg.lrelu_slope)
            with self.region("hift.ups"):
                x = g.ups[i](self._in("hift.ups", x))
            probe(f"hift.ups{i}", x)
            if i == g.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            with self.region("hift.source_fusion"):
                si = g.source_downs[i](self._in("hift.source_fusion", s_stft))
                probe(f"hift.source_down{i}", si)
                si = g.source_resblocks[i](si)
            x = x + si.to(x.dtype) if self.sw.precision_mode == "cast" else x + si
            probe(f"hift.fusion{i}", x)
            with self.region("hift.resblocks"):
                xr = self._in("hift.resblocks", x)
                xs = g.resblocks[i * g.num_kernels](xr)
                for j in range(1, g.num_kernels):
                    xs = xs + g.resblocks[i * g.num_kernels + j](xr)
                x = xs / g.num_kernels
            probe(f"hift.resblocks{i}", x)
        x = F.leaky_relu(x)
        with self.region("hift.conv_post"):
            x = g.conv_post(self._in("hift.conv_post", x))
        probe("hift.conv_post", x)
        n_bins = g.n_fft // 2 + 1
        with self.region("hift.istft"):
            xi = self._in("hift.istft", x)
            magnitude = torch.clamp(torch.exp(xi[:, :n_bins, :]), max=MAGNITUDE_CLAMP)
            phase = torch.sin(xi[:, n_bins:, :])
        probe("magnitude", magnitude)
        probe("phase", phase)
        audio = g._istft(magnitude.float(), phase.float())  # torch.istft needs fp32 on CPU
        gain = self.faults.override("istft_gain", None)
        if gain is not None:  # fault: an empirical gain after the iSTFT
            audio = audio * gain
        if not finalize:
            audio = audio[:, :-(math.prod(g.upsample_rates) * g.hop_len)]
        audio = self.faults.hook("audio_preclamp", audio)
        probe("audio_preclamp", audio)
        audio = torch.clamp(audio, -g.cfg.audio_limit, g.cfg.audio_limit)
        probe("audio", audio)
        return audio

    @torch.no_grad()
    def inference(self, mel: torch.Tensor, noise: SharedNoise, finalize: bool = True, probe: Probe = NO_PROBE):
        probe = as_probe(probe)
        mel = mel.float()
        f0 = self.predict_f0(mel, finalize)
        f0 = self.faults.hook("f0", f0)
        probe("f0", f0)
        s = self.make_source(f0, noise)
        s = self.faults.hook("source", s)
        probe("source", s)
        return self.decode(mel, s, finalize, probe)
