"""The prompt mel front end: Matcha-TTS ``mel_spectrogram``, as CosyVoice 3 uses it to build ``prompt_feat``.

Recipe (``MelConfig`` defaults, from ``cosyvoice3.yaml``'s ``feat_extractor``; see
``shared/docs/cosyvoice3-token2wav.md`` section 1):

1. Reflect-pad the 24 kHz wave by ``(n_fft - hop) / 2`` = 720 samples on each side.
2. STFT: ``n_fft`` 1920, hop 480, window length 1920, torch's periodic Hann window, ``center=False``,
   one-sided, not normalised.
3. Magnitude ``sqrt(re^2 + im^2 + 1e-9)`` (the 1e-9 is inside the root, as upstream).
4. Mel projection with librosa's filterbank ``librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80,
   fmin=0, fmax=None)``: fmax None means ``sr / 2`` = 12 kHz; librosa's defaults are the Slaney mel scale
   (linear below 1 kHz, logarithmic above) and Slaney ("area") normalisation.
5. Feature ``ln(max(mel, 1e-5))``: the floor is ``ln(1e-5)`` = -11.5129.

N samples give ``floor(N / 480)`` frames (exactly ``N / 480`` when N is a multiple of the hop).

The filterbank is computed here in numpy by our own code, not by calling librosa at run time: librosa is a
heavy import (numba) and only serves as the oracle in ``tests/test_mel.py``, which checks this filterbank
and the whole recipe against it to 1e-5.

Precision. Upstream runs the recipe in float32. In float32, the STFT's rounding error is about 1e-7 of a
frame's peak magnitude; that is invisible in loud bins but, after the log, reaches about 1e-3 nats in the
quiet bins that sit just above the 1e-5 floor (measured on the shipped recording against a float64 oracle;
it also differs between FFT back ends). :func:`mel_spectrogram` therefore computes in float64 by default
and rounds the result to float32: that output is within 1e-6 of a float64 librosa oracle and is stable
across machines, which keeps the fixture bundles reproducible bit for bit. Pass
``compute_dtype=torch.float32`` to reproduce upstream's float32 arithmetic instead. The filterbank is used
with upstream's float32 values in both cases (``torch.from_numpy(librosa_mel).float()``).

Upstream computes the mel channel-major, ``[1, 80, frames]``; the CosyVoice front end then transposes it to
the time-major ``prompt_feat`` ``[1, frames, 80]`` that ``flow.inference`` takes.
:func:`mel_spectrogram` returns the former, :func:`prompt_feat_from_wave` the latter.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from .config import SAMPLE_RATE, MelConfig
from .errors import InputError

LOG_FLOOR = 1e-5  # Matcha ``dynamic_range_compression_torch`` clip value
LOG_FLOOR_VALUE = math.log(LOG_FLOOR)  # -11.512925...
MAG_EPS = 1e-9  # added to re^2 + im^2 before the square root
MIN_SAMPLE_RATE = 16000  # upstream ``load_wav(..., min_sr=16000)`` rejects slower input

# --------------------------------------------------------------------------------------------
# Slaney mel scale and filterbank (what librosa.filters.mel does with its defaults)

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOGSTEP = math.log(6.4) / 27.0  # log-part step: 6.4x frequency per 27 mel


def hz_to_mel(freq) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(freq, dtype=np.float64)
    mel = f / _F_SP
    log_part = f >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    freq = _F_SP * m
    log_part = m >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), freq)


@functools.lru_cache(maxsize=8)
def _mel_filterbank_cached(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    if fmax is None:
        fmax = sr / 2.0
    if not 0 <= fmin < fmax <= sr / 2.0:
        raise InputError(f"mel filterbank: need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)  # [n_fft//2 + 1]
    # n_mels + 2 band edges equally spaced on the mel scale
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each triangle has unit area in Hz (scaled by 2 / bandwidth)
    weights *= (2.0 / (edges_hz[2:n_mels + 2] - edges_hz[:n_mels]))[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = 1920, n_mels: int = 80, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filterbank, float32 ``[n_mels, n_fft // 2 + 1]``.

    Equals ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)`` (librosa's
    defaults ``htk=False, norm='slaney'``); ``fmax=None`` means ``sr / 2``. Computed in float64, returned as
    float32 (read-only and cached: copy it before changing it).
    """
    return _mel_filterbank_cached(int(sr), int(n_fft), int(n_mels), float(fmin),
                                  None if fmax is None else float(fmax))


# --------------------------------------------------------------------------------------------
# the recipe


def _as_batch_wave(wave, what: str) -> torch.Tensor:
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, torch.Tensor):
        raise InputError(f"{what}: expected a torch.Tensor or numpy array, got {type(wave).__name__}")
    if not (wave.is_floating_point() and wave.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)):
        raise InputError(f"{what}: expected a floating-point wave in [-1, 1], got dtype {wave.dtype} "
                         f"(convert integer PCM with load_wav or divide by its full scale)")
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise InputError(f"{what}: expected a wave of shape [N] or [1, N], got {list(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise InputError(f"{what}: the wave holds NaN or Inf")
    return wave.to(torch.float32)


def mel_spectrogram(wave, cfg: MelConfig | None = None, *, compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Log-mel of a 24 kHz wave by the Matcha/CosyVoice recipe (module docstring), channel-major.

    Args:
        wave: float wave in [-1, 1] at ``cfg.sampling_rate``, shape ``[N]`` or ``[1, N]`` (``[B, N]``
            works too). It is first rounded to float32, as upstream's input is.
        cfg: the mel settings; ``MelConfig()`` (the CosyVoice 3 values) when omitted.
        compute_dtype: arithmetic precision of the pad/STFT/magnitude/projection/log steps:
            ``torch.float64`` (default, accurate and machine-stable) or ``torch.float32`` (upstream's own
            arithmetic; see "Precision" in the module docstring).

    Returns:
        float32 ``[B, num_mels, frames]`` (``[1, 80, N // 480]`` for one wave), natural-log mel with
        the floor ``ln(1e-5)``.

    Raises:
        InputError: wrong type, dtype or rank, NaN/Inf samples, or a wave too short for the reflect pad
            (it needs more than ``(n_fft - hop) / 2`` samples and at least one hop).
    """
    cfg = cfg or MelConfig()
    y = _as_batch_wave(wave, "mel_spectrogram")
    n_fft, hop, win = int(cfg.n_fft), int(cfg.hop_size), int(cfg.win_size)
    pad = (n_fft - hop) // 2
    n = y.shape[1]
    if n <= pad or n + 2 * pad < n_fft:
        raise InputError(f"mel_spectrogram: the wave has {n} samples; the recipe needs more than {pad} "
                         f"(reflect pad) and at least {max(n_fft - 2 * pad, pad + 1)} to give one frame")
    if compute_dtype not in (torch.float32, torch.float64):
        raise InputError(f"mel_spectrogram: compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}")
    y = y.to(compute_dtype)
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, dtype=compute_dtype)  # periodic, torch's default
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=window, center=bool(cfg.center),
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    mag = torch.sqrt(spec.pow(2).sum(-1) + MAG_EPS)  # [B, n_fft//2+1, frames]
    basis = torch.from_numpy(mel_filterbank(cfg.sampling_rate, n_fft, cfg.num_mels, cfg.fmin, cfg.fmax).copy())
    basis = basis.to(compute_dtype)  # float32 values, as upstream's, widened if computing in float64
    mel = torch.matmul(basis, mag)
    return torch.log(torch.clamp(mel, min=LOG_FLOOR)).to(torch.float32)


# --------------------------------------------------------------------------------------------
# waves in, prompt_feat out


def resample(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling with ``scipy.signal.resample_poly`` (Kaiser-window FIR, scipy's defaults).

    Upstream CosyVoice resamples with ``torchaudio.transforms.Resample`` (windowed sinc); the two differ
    slightly, so a ``prompt_feat`` made here from a 16 kHz file is close to, not equal to, upstream's. The
    parity harness never depends on this: both sides of a comparison read the same ``prompt_feat`` from
    the input bundle. Works on the last axis; float64 in, float64 out.
    """
    from scipy.signal import resample_poly

    if sr == target_sr:
        return np.asarray(wave, dtype=np.float64)
    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(np.asarray(wave, dtype=np.float64), int(target_sr) // g, int(sr) // g, axis=-1)


def prompt_feat_from_wave(wave, sr: int, cfg: MelConfig | None = None, *,
                          compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``prompt_feat`` as upstream's front end makes it: time-major float32 ``[1, frames, num_mels]``.

    ``wave`` is a mono float wave (numpy or torch, ``[N]`` or ``[1, N]``) at ``sr`` Hz. If ``sr`` differs
    from ``cfg.sampling_rate`` (24 kHz) it is first resampled with :func:`resample` (scipy
    ``resample_poly``; upstream uses torchaudio, see there). Like upstream's ``load_wav(min_sr=16000)``,
    rates below 16 kHz are refused. The zero-shot length rule (cut to ``2 * min(frames // 2, n_tokens)``)
    is not applied here: see ``fixtures/make_fixtures.py``. ``compute_dtype`` is passed to
    :func:`mel_spectrogram`.
    """
    cfg = cfg or MelConfig()
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim != 1:
        raise InputError(f"prompt_feat_from_wave: expected a mono wave [N] or [1, N], got shape {list(wave.shape)}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise InputError(f"prompt_feat_from_wave: expected a float wave in [-1, 1], got dtype {wave.dtype}")
    if int(sr) != int(cfg.sampling_rate):
        if sr < MIN_SAMPLE_RATE:
            raise InputError(f"prompt_feat_from_wave: sample rate {sr} Hz is below {MIN_SAMPLE_RATE} Hz, which "
                             f"upstream's load_wav refuses")
        wave = resample(wave, int(sr), int(cfg.sampling_rate))
    mel = mel_spectrogram(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), cfg,
                          compute_dtype=compute_dtype)
    return mel.transpose(1, 2).contiguous()


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file with ``scipy.io.wavfile``; returns ``(float32 mono wave in [-1, 1], sample_rate)``.

    Integer PCM is scaled by its full scale (int16 / 32768, int32 / 2**31; scipy reads 24-bit files as
    left-aligned int32, so they scale correctly too); float WAVs are taken as they are. Several channels are
    averaged to mono, as upstream's ``speech.mean(dim=0)``. Other sample formats (8-bit unsigned, int64)
    and unreadable files raise :class:`InputError` naming the file.
    """
    import warnings

    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: WAV file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # e.g. unknown LIST chunks
            sr, data = wavfile.read(str(path))
    except Exception as exc:  # scipy raises ValueError for most malformed files
        raise InputError(f"{path}: not a readable WAV file ({exc})") from exc
    if data.dtype == np.int16:
        wave = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        wave = (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif data.dtype in (np.float32, np.float64):
        wave = data.astype(np.float32)
    else:
        raise InputError(f"{path}: unsupported WAV sample format {data.dtype}; expected 16-bit or 32-bit "
                         f"integer PCM (24-bit reads as 32-bit) or 32/64-bit float")
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float64).astype(np.float32)
    if wave.size == 0:
        raise InputError(f"{path}: the WAV file holds no samples")
    if not np.isfinite(wave).all():
        raise InputError(f"{path}: the WAV file holds NaN or Inf samples")
    return np.ascontiguousarray(wave), int(sr)
