"""The reference HiFT vocoder: upstream's semantics, lengths, streaming prefix and checkpoint loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from parity.capture.recorder import Recorder
from parity.stages import VOCODER_OUTPUTS
from reference.checkpoint import read_state_dict
from reference.config import preset
from reference.errors import CheckpointError, InputError
from reference.hift import (WN_G, WN_V, CausalHiFTGenerator, build_hift, conv1d_tiled, fold_weight_norm,
                            hann_window, hift_state_dict_upstream, istft_overlap_add, load_hift_state_dict)
from reference.init import state_dict_sha256
from reference.noise import SharedNoise, noise_for_config
from reference.probe import Probe

HOP = 480


def tiny_noise() -> SharedNoise:
    """The noise upstream draws for the tiny configuration (the vocoder under test)."""
    return noise_for_config(preset("tiny"))


def speech_like_mel(T: int, seed: int = 0, silence: tuple[int, int] | None = None) -> torch.Tensor:
    """A log-mel in [-11, 2]: louder low bins, a slow level modulation, noise, an optional silent stretch."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float32)
    f = torch.arange(80, dtype=torch.float32)
    mel = -3.5 + 2.5 * torch.sin(t / 5)[None, :] - f[:, None] / 25 + 0.7 * torch.randn(80, T, generator=g)
    if silence is not None:
        mel[:, silence[0]:silence[1]] = -11.0
    return mel.clamp(-11, 2)[None].contiguous()


def run(model, mel, finalize=True, patterns=None, noise=None):
    rec = Recorder(patterns)
    audio = model.inference(mel, noise or tiny_noise(), finalize=finalize, probe=Probe(rec))
    return audio, rec.tensors


@pytest.fixture(scope="module")
def tiny():
    return build_hift(preset("tiny").hift, preset("tiny").seed)


@pytest.fixture(scope="module")
def tiny_run(tiny):
    mel = speech_like_mel(40, silence=(14, 30))
    audio, stages = run(tiny, mel, patterns="all")
    return mel, audio, stages


# ---------------------------------------------------------------------------------------------
# fixed noise and transforms

def test_sine_noise_first_values():
    row = noise_for_config(preset("cosyvoice3-0.5b")).sine_noise(4)[0, 0, :3]  # released sizes
    assert torch.allclose(row, torch.tensor([0.92282599, 0.47744751, 0.82705182]), atol=1e-8)


def test_window_is_upstreams_scipy_hann():
    ref = torch.from_numpy(get_window("hann", 16, fftbins=True).astype(np.float32))
    assert torch.equal(hann_window(16), ref)


def test_istft_equals_torch_istft(tiny):
    g = torch.Generator().manual_seed(3)
    mag = torch.rand(1, 9, 61, generator=g) * 4
    phase = torch.randn(1, 9, 61, generator=g) * 3
    w = hann_window(16)
    expected = torch.istft(torch.complex(mag * torch.cos(phase), mag * torch.sin(phase)), 16, 4, 16, window=w)
    assert torch.equal(tiny._istft(mag, phase), expected)
    assert expected.shape == (1, 4 * 60)
    spelled_out = istft_overlap_add(mag, phase, 16, 4, w)  # the documented formula
    assert spelled_out.shape == expected.shape
    assert torch.allclose(spelled_out, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# shapes, lengths, stages

def test_stage_shapes_finalize(tiny_run):
    mel, audio, s = tiny_run
    T, C = mel.shape[2], preset("tiny").hift.base_channels
    F = 120 * T + 1
    expected = {"f0": (1, T), "source": (1, 1, HOP * T), "s_stft": (1, 18, F), "conv_pre": (1, C, T),
                "magnitude": (1, 9, F), "phase": (1, 9, F), "audio_preclamp": (1, HOP * T), "audio": (1, HOP * T)}
    for name, shape in expected.items():
        assert tuple(s[name].shape) == shape, name
    assert audio.shape == (1, HOP * T)  # 480 samples per mel frame
    for i, (rate, ch) in enumerate([(8, C // 2), (40, C // 4), (120, C // 8)]):
        assert tuple(s[f"hift.ups{i}"].shape) == (1, ch, rate * T)
        n = rate * T + (1 if i == 2 else 0)  # the reflection pad adds one frame at the last stage
        for name in (f"hift.source_down{i}", f"hift.fusion{i}", f"hift.resblocks{i}"):
            assert tuple(s[name].shape) == (1, ch, n), name
    assert tuple(s["hift.conv_post"].shape) == (1, 18, F)


def test_stages_finite_and_realistic(tiny_run):
    mel, audio, s = tiny_run
    for name, t in s.items():
        assert torch.isfinite(t).all(), name
        assert t.dtype == torch.float32, name
    assert audio.abs().max() <= 0.99
    assert torch.equal(audio, s["audio"])
    assert torch.equal(audio, s["audio_preclamp"].clamp(-0.99, 0.99))
    assert audio.std() > 0.02  # real structure: neither silent ...
    assert (audio.abs() >= 0.99).float().mean() < 0.01  # ... nor clipped
    f0 = s["f0"][0]
    assert (f0[22:27] < 10).all()  # fully inside the silent stretch 14..29 (receptive field: 8 past, 3 future)
    voiced = torch.cat([f0[:12], f0[32:]])
    assert ((voiced > 80) & (voiced < 400)).float().mean() >= 0.7
    assert (s["magnitude"] < 100).float().mean() > 0.99  # the clamp at 100 is a safeguard, rarely hit
    assert torch.equal(s["magnitude"], torch.exp(s["hift.conv_post"][:, :9]).clamp(max=100))
    assert torch.equal(s["phase"], torch.sin(s["hift.conv_post"][:, 9:]))


def test_default_stages_and_optional_ones(tiny):
    mel = speech_like_mel(12, seed=2)
    _, default = run(tiny, mel)
    assert set(default) == set(VOCODER_OUTPUTS)
    _, more = run(tiny, mel, patterns="+hift.*")
    assert {f"hift.{n}{i}" for n in ("ups", "fusion", "resblocks", "source_down") for i in range(3)} \
        | {"hift.conv_post"} <= set(more)


def test_probe_never_records_unwanted_stages(tiny):
    class Refuses:
        def __init__(self):
            self.asked = []

        def wants(self, name):
            self.asked.append(name)
            return False

        def record(self, name, tensor):  # pragma: no cover - must not be called
            raise AssertionError(f"recorded {name}")

    rec = Refuses()
    tiny.inference(speech_like_mel(10, seed=4), tiny_noise(), probe=Probe(rec))
    assert "audio" in rec.asked and "hift.conv_post" in rec.asked


def test_two_runs_bit_identical(tiny):
    mel = speech_like_mel(25, seed=5)
    a = tiny.inference(mel, tiny_noise())
    b = tiny.inference(mel.clone(), tiny_noise())
    assert torch.equal(a, b)
    c = build_hift(preset("tiny").hift, preset("tiny").seed).inference(mel, tiny_noise())
    assert torch.equal(a, c)


def test_seeded_weights_deterministic():
    a = build_hift(preset("tiny").hift, 7)
    b = build_hift(preset("tiny").hift, 7)
    assert state_dict_sha256(a.state_dict()) == state_dict_sha256(b.state_dict())
    assert state_dict_sha256(build_hift(preset("tiny").hift, 8).state_dict()) != state_dict_sha256(a.state_dict())


# ---------------------------------------------------------------------------------------------
# F0 and source

def test_f0_runs_in_float64(tiny, monkeypatch):
    seen = {}
    features = tiny.f0_predictor.features

    def spy(x, finalize=True, params=None):
        seen["input"] = x.dtype
        seen["params"] = {k: v.dtype for k, v in params.items()}
        seen["conv0"] = params["condnet.0.weight"]
        out = features(x, finalize, params)
        seen["output"] = out.dtype
        return out

    monkeypatch.setattr(tiny.f0_predictor, "features", spy)
    f0 = tiny.predict_f0(speech_like_mel(12, seed=6))
    assert seen["input"] == torch.float64 and seen["output"] == torch.float64
    assert set(seen["params"].values()) == {torch.float64}
    assert f0.dtype == torch.float32 and f0.shape == (1, 12)
    # upstream casts g and v to float64 and re-folds: not the fp32 weight upcast
    g, v = tiny.weight_norm_parts["f0_predictor.condnet.0"]
    assert torch.equal(seen["conv0"], fold_weight_norm(g, v, torch.float64))
    assert not torch.equal(seen["conv0"], tiny.f0_predictor.condnet[0].weight.double())


def test_sine_phase_is_a_staircase(tiny):
    f0 = torch.tensor([[100.0, 100.0, 100.0, 250.0, 0.0, 5.0, 180.5, 321.0]])
    f0_up = f0.repeat_interleave(HOP, dim=1)[..., None]
    phase = tiny.sine_phase(f0_up, tiny_noise().rand_ini)
    assert phase.shape == (1, HOP * 8, 9)
    frames = phase.view(8, HOP, 9)
    assert torch.equal(frames, frames[:, :1].expand_as(frames))  # constant over each 480-sample frame
    # per frame the argument grows by 480 * 2pi * ((h * f0_k / 24000) mod 1)
    h = torch.arange(1, 10, dtype=torch.float64)
    inc = HOP * 2 * math.pi * torch.remainder(f0[0].double()[:, None] * h / 24000, 1.0)
    assert torch.allclose(frames[:, 0].double(), torch.cumsum(inc, dim=0), rtol=0, atol=2e-3)
    steps = frames[1:3, 0] - frames[0:2, 0]  # constant f0 -> constant increment
    assert torch.allclose(steps[0], steps[1], rtol=1e-5)


def test_source_constant_per_frame_without_noise(tiny):
    quiet = SharedNoise(torch.zeros(1, 80, 8), tiny_noise().rand_ini, torch.zeros(1, HOP * 6, 9))
    f0 = torch.tensor([[120.0, 120.0, 3.0, 200.0, 0.0, 333.0]])
    s = tiny.make_source(f0, quiet)
    assert s.shape == (1, 1, HOP * 6)
    frames = s.view(6, HOP)
    assert torch.equal(frames, frames[:, :1].expand_as(frames))
    b = torch.tanh(tiny.m_source.l_linear.bias)  # unvoiced (f0 <= 10) and no noise: only the bias is left
    assert torch.equal(frames[2, 0:1], b) and torch.equal(frames[4, 0:1], b)
    assert not torch.equal(frames[0, 0:1], b)


def test_source_uses_fixed_uniform_noise_and_rand_ini_has_no_effect(tiny):
    noise = tiny_noise()
    f0 = torch.tensor([[0.0, 150.0, 0.0]])
    s = tiny.make_source(f0, noise)
    assert not torch.equal(s[..., :HOP], s[..., :1].expand(1, 1, HOP))  # unvoiced frame 0: noise varies
    other = SharedNoise(noise.flow[:, :, :8], torch.rand(1, 9), noise.sine_noise(HOP * 3).clone())
    assert torch.equal(tiny.make_source(f0, other), s)


# ---------------------------------------------------------------------------------------------
# streaming

@pytest.mark.parametrize("T", [9, 23, 61])
def test_streaming_is_bitwise_prefix_of_finalize(tiny, T):
    mel = speech_like_mel(T, seed=T, silence=(T // 3, T // 3 + 4))
    # upstream-exact convs: a prefix up to the last bit (oneDNN results depend on the length, as upstream's do)
    full, _ = run(tiny, mel, finalize=True)
    part, _ = run(tiny, mel, finalize=False)
    assert part.shape == (1, HOP * (T - 8))
    assert torch.allclose(full[:, :part.shape[1]], part, rtol=0, atol=1e-5)
    # length-invariant (tiled) convs: a bitwise prefix
    tiny.set_length_invariant(True)
    try:
        full, fs = run(tiny, mel, finalize=True)
        part, ps = run(tiny, mel, finalize=False)
    finally:
        tiny.set_length_invariant(False)
    assert torch.equal(full[:, :part.shape[1]], part)
    assert ps["f0"].shape == (1, T - 3) and torch.equal(fs["f0"][:, :T - 3], ps["f0"])
    assert ps["source"].shape == (1, 1, HOP * (T - 3))
    assert ps["s_stft"].shape == (1, 18, 120 * (T - 7) + 1)
    assert ps["conv_pre"].shape[2] == T - 7 and torch.equal(fs["conv_pre"][:, :, :T - 7], ps["conv_pre"])
    assert ps["audio_preclamp"].shape == part.shape


def test_streaming_chunks_like_token2wav(tiny):
    """Re-vocoding a growing mel (upstream's token2wav loop) never changes already-emitted samples
    (bitwise with length-invariant convs)."""
    mel = speech_like_mel(60, seed=9)
    tiny.set_length_invariant(True)
    try:
        full = tiny.inference(mel, tiny_noise())
        for end in (20, 35, 50):
            part = tiny.inference(mel[:, :, :end], tiny_noise(), finalize=False)
            assert torch.equal(full[:, :part.shape[1]], part)
    finally:
        tiny.set_length_invariant(False)


@pytest.mark.parametrize("stride,dilation,k,length,tile", [(1, 1, 5, 50, 16), (1, 5, 11, 300, 128),
                                                         (15, 1, 30, 601, 8), (3, 1, 6, 200, 7), (1, 1, 3, 9, 16)])
def test_conv1d_tiled(stride, dilation, k, length, tile):
    g = torch.Generator().manual_seed(length)
    x, w, b = torch.randn(1, 12, length, generator=g), torch.randn(9, 12, k, generator=g), torch.randn(9, generator=g)
    ref = torch.nn.functional.conv1d(x, w, b, stride, 0, dilation)
    out = conv1d_tiled(x, w, b, stride, dilation, tile)
    assert out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    cut = conv1d_tiled(x[:, :, :length - 2 * stride - 1], w, b, stride, dilation, tile)
    assert torch.equal(out[:, :, :cut.shape[2]], cut)  # the same columns whatever the length


def test_untiled_convs_agree_to_rounding(tiny):
    mel = speech_like_mel(21, seed=14)
    plain = tiny.inference(mel, tiny_noise())
    try:
        tiny.set_length_invariant(True)
        tiled = tiny.inference(mel, tiny_noise())
    finally:
        tiny.set_length_invariant(False)
    assert torch.allclose(tiled, plain, rtol=0, atol=1e-5)
    assert torch.equal(tiny.inference(mel, tiny_noise()), plain)


def test_component_split_matches_inference(tiny):
    mel = speech_like_mel(20, seed=11)
    for finalize in (True, False):
        f0 = tiny.predict_f0(mel, finalize)
        src = tiny.make_source(f0, tiny_noise())
        assert torch.equal(tiny.decode(mel, src, finalize), tiny.inference(mel, tiny_noise(), finalize))


def test_input_errors(tiny):
    noise = tiny_noise()
    with pytest.raises(InputError, match=r"\[1, 80, T\]"):
        tiny.inference(torch.zeros(1, 20, 80), noise)
    with pytest.raises(InputError, match="float32"):
        tiny.inference(torch.zeros(1, 80, 20, dtype=torch.float64), noise)
    with pytest.raises(InputError, match="at least 9"):
        tiny.inference(torch.zeros(1, 80, 8), noise, finalize=False)
    mel = speech_like_mel(12)
    with pytest.raises(InputError, match=r"'source' must be \[1, 1, 4320\]"):
        tiny.decode(mel, torch.zeros(1, 1, HOP * 12), finalize=False)
    with pytest.raises(InputError, match="'f0'"):
        tiny.make_source(torch.zeros(1, 1, 5), noise)


# ---------------------------------------------------------------------------------------------
# checkpoints

def _fresh_tiny() -> CausalHiFTGenerator:
    return CausalHiFTGenerator(preset("tiny").hift)


def test_upstream_format_roundtrip(tiny, tmp_path):
    sd = hift_state_dict_upstream(tiny)
    assert len(sd) == 328  # the released hift.pt layout
    assert tuple(sd[f"conv_pre.{WN_G}"].shape) == (64, 1, 1)
    assert tuple(sd[f"conv_pre.{WN_V}"].shape) == (64, 80, 5)
    assert list(sd)[:5] == ["m_source.l_linear.weight", "m_source.l_linear.bias", "conv_pre.bias",
                            f"conv_pre.{WN_G}", f"conv_pre.{WN_V}"]
    assert not any(k.endswith(".weight") and k.rpartition(".")[0] in tiny.weight_norm_parts for k in sd)
    torch.save(sd, tmp_path / "hift.pt")
    m = _fresh_tiny()
    load_hift_state_dict(m, read_state_dict(tmp_path / "hift.pt"), source="hift.pt")
    assert state_dict_sha256(m.state_dict()) == state_dict_sha256(tiny.state_dict())
    assert set(m.weight_norm_parts) == set(tiny.weight_norm_parts)
    mel = speech_like_mel(16, seed=12)
    assert torch.equal(m.inference(mel, tiny_noise()), tiny.inference(mel, tiny_noise()))
    assert state_dict_sha256(hift_state_dict_upstream(m)) == state_dict_sha256(sd)


def test_weight_norm_fold(tiny):
    g, v = tiny.weight_norm_parts["ups.1"]
    w = tiny.ups[1].weight
    assert g.dtype == v.dtype == torch.float32
    expected = (g.double() * v.double() / v.double().norm(dim=(1, 2), keepdim=True)).float()
    assert torch.allclose(w, expected, rtol=1e-6, atol=0)
    # fp32 through upstream's own kernel: bit-identical to upstream's per-call parametrization
    assert torch.equal(w, torch._weight_norm(v, g, 0))
    assert not any("parametrizations" in k or k.endswith(("weight_g", "weight_v")) for k in tiny.state_dict())


def test_legacy_names_generator_prefix_and_fp16(tiny):
    sd = hift_state_dict_upstream(tiny)
    legacy = {"generator." + k.replace(WN_G, "weight_g").replace(WN_V, "weight_v"): t for k, t in sd.items()}
    m = _fresh_tiny()
    load_hift_state_dict(m, legacy, source="legacy.pt")
    assert state_dict_sha256(m.state_dict()) == state_dict_sha256(tiny.state_dict())
    half = {k: t.half() for k, t in sd.items()}
    m = _fresh_tiny()
    load_hift_state_dict(m, half, source="fp16.pt")  # stored fp16: upcast, folded in float64
    g, v = m.weight_norm_parts["conv_post"]
    assert g.dtype == torch.float32 and torch.equal(g, sd[f"conv_post.{WN_G}"].half().float())


def test_checkpoint_errors_name_every_key_in_file_names(tiny):
    sd = hift_state_dict_upstream(tiny)
    bad = dict(sd)
    del bad[f"conv_pre.{WN_V}"]
    bad["decoder.extra.weight"] = torch.zeros(3)
    bad["ups.0.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as e:
        load_hift_state_dict(_fresh_tiny(), bad, source="bad.pt")
    msg = str(e.value)
    assert "bad.pt" in msg and "1 missing, 1 unexpected, 1 wrong shape" in msg
    assert f"conv_pre.{WN_V}" in msg and "decoder.extra.weight" in msg
    assert "ups.0.bias is [5], expected [32]" in msg

    prefixed = {"generator." + k: t for k, t in sd.items() if k != f"resblocks.4.convs2.1.{WN_G}"}
    with pytest.raises(CheckpointError, match=rf"generator\.resblocks\.4\.convs2\.1\.{WN_G}"):
        load_hift_state_dict(_fresh_tiny(), prefixed, source="g.pt")

    legacy = {k.replace(WN_G, "weight_g").replace(WN_V, "weight_v"): t for k, t in sd.items()}
    del legacy["conv_post.weight_v"]
    legacy["conv_post.weight_g"] = torch.zeros(18, 1, 2)
    with pytest.raises(CheckpointError) as e:
        load_hift_state_dict(_fresh_tiny(), legacy, source="legacy.pt")
    assert "conv_post.weight_v" in str(e.value)
    assert "conv_post.weight_g is [18, 1, 2], expected [18, 1, 1]" in str(e.value)

    with pytest.raises(CheckpointError, match="folded .weight"):  # a remove_weight_norm-ed file
        load_hift_state_dict(_fresh_tiny(), tiny.state_dict(), source="folded.pt")
    m = _fresh_tiny()
    before = state_dict_sha256(m.state_dict())
    with pytest.raises(CheckpointError):
        load_hift_state_dict(m, bad, source="bad.pt")
    assert state_dict_sha256(m.state_dict()) == before  # all or nothing


def test_export_refuses_stale_parts():
    m = build_hift(preset("tiny").hift, 3)
    with torch.no_grad():
        m.conv_post.weight.mul_(2)
    with pytest.raises(ValueError, match="conv_post"):
        hift_state_dict_upstream(m)


# ---------------------------------------------------------------------------------------------
# full size

def test_full_size_layout_and_short_run():
    cfg = preset("cosyvoice3-0.5b")
    m = build_hift(cfg.hift, cfg.seed)
    sd = hift_state_dict_upstream(m)
    assert len(sd) == 328
    assert sum(t.numel() for t in sd.values()) == 20_779_887  # spec section 7.2
    assert tuple(sd[f"conv_pre.{WN_V}"].shape) == (512, 80, 5)
    assert tuple(sd[f"f0_predictor.condnet.2.{WN_V}"].shape) == (512, 512, 3)
    mel = speech_like_mel(12, seed=13)
    full, s = run(m, mel)
    part = m.inference(mel, tiny_noise(), finalize=False)
    assert full.shape == (1, HOP * 12) and part.shape == (1, HOP * 4)
    assert torch.allclose(full[:, :part.shape[1]], part, rtol=0, atol=1e-5)
    assert all(torch.isfinite(t).all() for t in s.values())
    assert 0.005 < full.std() and full.abs().max() <= 0.99
    assert ((s["f0"] > 80) & (s["f0"] < 400)).float().mean() >= 0.5
