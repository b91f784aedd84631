"""reference.mel against librosa (the oracle; used only here), on the shipped real recording.

The oracle builds the Matcha/CosyVoice recipe from librosa and numpy: manual reflect pad of
(n_fft - hop) / 2, ``librosa.stft(center=False, window='hann')`` (periodic Hann), magnitude
``sqrt(re^2 + im^2 + 1e-9)``, ``librosa.filters.mel`` and ``ln(max(., 1e-5))``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reference.config import MelConfig
from reference.errors import InputError
from reference.mel import (LOG_FLOOR_VALUE, hz_to_mel, load_wav, mel_filterbank, mel_spectrogram, mel_to_hz,
                           prompt_feat_from_wave, resample)

librosa = pytest.importorskip("librosa")

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
WAV_16K = AUDIO / "arctic_a0007.wav"
WAV_24K = AUDIO / "arctic_a0007_24k.wav"
CFG = MelConfig()


def oracle_log_mel(wave: np.ndarray, cfg: MelConfig = CFG) -> np.ndarray:
    """[80, frames] log-mel of a float32 24 kHz wave, by librosa + numpy."""
    pad = (cfg.n_fft - cfg.hop_size) // 2
    y = np.pad(np.asarray(wave, dtype=np.float32), pad, mode="reflect")
    spec = librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_size, win_length=cfg.win_size, window="hann",
                        center=False)
    mag = np.sqrt(spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2 + 1e-9)
    basis = librosa.filters.mel(sr=cfg.sampling_rate, n_fft=cfg.n_fft, n_mels=cfg.num_mels, fmin=cfg.fmin,
                                fmax=cfg.fmax)
    return np.log(np.maximum(basis.astype(np.float64) @ mag, 1e-5))


@pytest.fixture(scope="module")
def wave24() -> np.ndarray:
    x, sr = load_wav(WAV_24K)
    assert sr == 24000
    return x


# --------------------------------------------------------------------------------------------
# filterbank


@pytest.mark.parametrize("kw", [dict(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=None),
                                dict(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=8000),  # CosyVoice 2's fmax
                                dict(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000),
                                dict(sr=16000, n_fft=400, n_mels=128, fmin=20, fmax=None)])
def test_filterbank_matches_librosa(kw):
    ours = mel_filterbank(**kw)
    ref = librosa.filters.mel(**kw)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    err = np.abs(ours.astype(np.float64) - ref)
    assert err.max() <= 1e-5
    assert err.max() / np.abs(ref).max() <= 1e-5


def test_filterbank_cosyvoice3_shape_and_is_cached_read_only():
    fb = mel_filterbank()
    assert fb.shape == (80, 961)
    assert mel_filterbank() is fb
    with pytest.raises(ValueError):
        fb[0, 0] = 1.0


def test_slaney_scale_round_trip_and_knee():
    f = np.array([0.0, 200.0, 999.0, 1000.0, 1001.0, 4000.0, 12000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert np.allclose(hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# the whole recipe


def test_log_mel_matches_librosa_oracle_on_real_recording(wave24):
    ours = mel_spectrogram(torch.from_numpy(wave24), CFG)
    assert ours.dtype == torch.float32 and tuple(ours.shape) == (1, 80, wave24.size // 480)
    ref = oracle_log_mel(wave24)
    assert np.abs(ours[0].numpy().astype(np.float64) - ref).max() <= 1e-5


def test_float32_arithmetic_is_close_to_oracle(wave24):
    """compute_dtype=float32 (upstream's own arithmetic): equal where the mel is loud; in bins just above
    the 1e-5 floor its float32 FFT rounding shows up in the log (documented in reference.mel)."""
    ours = mel_spectrogram(torch.from_numpy(wave24), CFG, compute_dtype=torch.float32)[0].numpy().astype(np.float64)
    ref = oracle_log_mel(wave24)
    loud = np.exp(ref) >= 1e-2
    assert loud.mean() > 0.2
    assert np.abs(ours - ref)[loud].max() <= 1e-5
    assert np.abs(np.exp(ours) - np.exp(ref)).max() <= 1e-6 * np.exp(ref).max()
    assert np.abs(ours - ref).max() <= 5e-3


def test_wave_shapes_and_numpy_input(wave24):
    seg = wave24[:4800]
    a = mel_spectrogram(torch.from_numpy(seg))
    b = mel_spectrogram(torch.from_numpy(seg)[None])
    c = mel_spectrogram(seg.astype(np.float64))  # numpy, float64: rounded to float32 first
    assert tuple(a.shape) == (1, 80, 10)
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("n", [721, 959, 960, 961, 1439, 24000, 24479])
def test_frame_count_is_n_over_hop(n):
    wave = torch.from_numpy(np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32))
    assert mel_spectrogram(wave).shape[-1] == n // 480


@pytest.mark.parametrize("n", [0, 100, 720])
def test_too_short_wave_is_an_input_error(n):
    with pytest.raises(InputError, match="samples"):
        mel_spectrogram(torch.zeros(n))


def test_bad_waves_are_input_errors():
    with pytest.raises(InputError, match="dtype"):
        mel_spectrogram(torch.zeros(4800, dtype=torch.int16))
    with pytest.raises(InputError, match=r"\[N\] or \[1, N\]"):
        mel_spectrogram(torch.zeros(1, 1, 4800))
    bad = torch.zeros(4800)
    bad[7] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        mel_spectrogram(bad)


def test_floor_is_ln_1e_minus_5(wave24):
    silent = mel_spectrogram(torch.zeros(9600))
    assert torch.all(silent == np.float32(math.log(1e-5)))
    assert LOG_FLOOR_VALUE == pytest.approx(-11.512925464970229)
    feat = mel_spectrogram(torch.from_numpy(wave24))
    assert float(feat.min()) >= np.float32(LOG_FLOOR_VALUE)
    assert float(feat.max()) < 3.0  # a normal-level recording: loudest bins around ln(4)


# --------------------------------------------------------------------------------------------
# prompt_feat and resampling


def test_prompt_feat_is_time_major_transpose(wave24):
    pf = prompt_feat_from_wave(wave24, 24000)
    mel = mel_spectrogram(torch.from_numpy(wave24))
    assert tuple(pf.shape) == (1, 200, 80) and pf.dtype == torch.float32
    assert torch.equal(pf, mel.transpose(1, 2))


def test_resampling_path_16k_matches_oracle():
    x16, sr = load_wav(WAV_16K)
    assert sr == 16000 and x16.size == 64000
    pf = prompt_feat_from_wave(x16, sr)
    assert tuple(pf.shape) == (1, 200, 80)  # 64000 samples at 16 kHz -> 96000 at 24 kHz -> 200 frames
    from scipy.signal import resample_poly
    up = resample_poly(x16.astype(np.float64), 3, 2).astype(np.float32)
    assert np.abs(pf[0].numpy().T.astype(np.float64) - oracle_log_mel(up)).max() <= 1e-5
    # the shipped 24 kHz file is the same resampling rounded to int16: same spectrum up to that rounding
    ref = prompt_feat_from_wave(*load_wav(WAV_24K))[0].numpy()
    lin = np.abs(np.exp(pf[0].numpy()) - np.exp(ref)).max() / np.exp(ref).max()
    assert lin <= 1e-4


def test_resample_48k_down_and_identity():
    rng = np.random.default_rng(0)
    x48 = rng.uniform(-0.3, 0.3, 48000).astype(np.float32)
    assert prompt_feat_from_wave(x48, 48000).shape == (1, 50, 80)
    assert np.array_equal(resample(x48, 24000, 24000), x48.astype(np.float64))
    with pytest.raises(InputError, match="16000"):
        prompt_feat_from_wave(x48[:8000], 8000)
    with pytest.raises(InputError, match="mono"):
        prompt_feat_from_wave(np.zeros((2, 4800), np.float32), 24000)


# --------------------------------------------------------------------------------------------
# load_wav


def test_load_wav_formats(tmp_path):
    from scipy.io import wavfile

    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    wavfile.write(tmp_path / "i16.wav", 24000, pcm)
    x, sr = load_wav(tmp_path / "i16.wav")
    assert sr == 24000 and x.dtype == np.float32
    assert np.array_equal(x, np.array([0, 0.5, -1, 32767 / 32768], np.float32))

    wavfile.write(tmp_path / "i32.wav", 16000, (pcm.astype(np.int32) << 16))
    assert np.array_equal(load_wav(tmp_path / "i32.wav")[0], x)

    wavfile.write(tmp_path / "f32.wav", 24000, np.array([0.25, -0.5], np.float32))
    assert np.array_equal(load_wav(tmp_path / "f32.wav")[0], np.array([0.25, -0.5], np.float32))

    stereo = np.stack([pcm, np.zeros_like(pcm)], axis=1)
    wavfile.write(tmp_path / "st.wav", 24000, stereo)
    assert np.array_equal(load_wav(tmp_path / "st.wav")[0], x / 2)


def test_load_wav_errors_name_the_file(tmp_path):
    from scipy.io import wavfile

    wavfile.write(tmp_path / "u8.wav", 8000, np.array([128, 255], np.uint8))
    with pytest.raises(InputError, match=r"u8\.wav.*uint8"):
        load_wav(tmp_path / "u8.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not a RIFF file at all")
    with pytest.raises(InputError, match=r"junk\.wav.*not a readable WAV"):
        load_wav(tmp_path / "junk.wav")
    with pytest.raises(InputError, match=r"missing\.wav.*not found"):
        load_wav(tmp_path / "missing.wav")
