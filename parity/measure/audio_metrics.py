"""Audio-domain metrics for reference/candidate pairs: pure numpy/scipy functions (no librosa, no torch).

Definitions follow ``shared/docs/landscape.md`` Part B sections 2 and 3. Every detector is
*differential* (candidate measured against the reference, frame by frame) except the absolute
backstops that are never legitimate: non-finite samples, runs at HiFT's +/-0.99 clamp, samples beyond
the clamp, DC offset.

Conventions
    * Audio is mono float in [-1, 1] at ``sr`` (24 kHz by default), shape ``[N]``, ``[1, N]`` or
      ``[1, 1, N]`` (numpy or torch). Integer PCM is refused: divide by its full scale first.
    * Log-mel tensors are natural-log mel, ``[n_mels, T]`` (a leading ``[1, ...]`` is squeezed), as the
      pipeline's ``ln(max(mel, 1e-5))``; F0 tensors are Hz per mel frame, ``[T]`` (``[1, T]``,
      ``[1, 1, T]`` squeezed).
    * The building blocks (:func:`snr_db`, :func:`si_sdr_db`, :func:`logmel_distance`, :func:`mcd`,
      :func:`log_spectral_distance`, :func:`f0_metrics`, :func:`click_detector`,
      :func:`clipping_runs`) require finite input and raise ``ValueError`` otherwise; they return
      plain Python floats in which ``inf`` is possible (e.g. the SNR of identical signals) and
      ``float('nan')`` marks an undefined value (e.g. SI-SDR against a silent reference).
    * :func:`audio_report` is the JSON-facing entry point. It counts non-finite values in every input
      *before* anything else, computes the other metrics on a copy with them replaced (audio and F0 by
      0.0, log-mel by the floor ``ln(1e-5)``), says so in ``sanitized`` / ``notes`` and sets
      ``finite_ok`` False. Its scalars follow :mod:`parity.measure.metrics`' JSON convention: never NaN/Inf;
      a ``None`` that stands for an infinite/undefined value is named in the ``special`` map *of the
      dict that holds it* (``"+inf"``, ``"-inf"``, ``"undefined"``). Per-frame vectors are numpy
      arrays under ``per_frame`` (convert with :func:`parity.measure.metrics.to_jsonable`); they are always
      finite, with a boolean mask where a value does not apply.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from scipy import fft as sfft
from scipy import signal

from reference.config import SAMPLE_RATE

from .metrics import ShapeMismatch, _as_array, _dot, _num

__all__ = [
    "SAMPLE_RATE", "AUDIO_LIMIT", "CLIP_EPS", "VOICED_THRESHOLD_HZ", "LOG_MEL_FLOOR", "MEL_HOP",
    "as_mono", "snr_db", "si_sdr_db", "clipping_runs", "audio_side_stats", "stft_power",
    "log_spectral_distance", "logmel_distance", "mcd", "f0_metrics", "click_detector", "audio_report",
]

AUDIO_LIMIT = 0.99  # HiFT's audio_limit: the output is clamped to +/-0.99
CLIP_EPS = 1e-6  # a sample with |x| >= AUDIO_LIMIT - CLIP_EPS sits at the clamp
VOICED_THRESHOLD_HZ = 10.0  # HiFT: uv = f0 > nsf_voiced_threshold (10 Hz)
LOG_MEL_FLOOR = math.log(1e-5)  # the pipeline's log-mel floor, -11.5129...
MEL_HOP = 480  # samples per mel / F0 frame at 24 kHz (20 ms)
_DB = 10.0 / math.log(10.0)  # 10/ln(10): natural-log difference -> dB


# ----------------------------------------------------------------------------------------------
# inputs


def _squeeze_to(x: Any, ndim: int, what: str) -> np.ndarray:
    a, name = _as_array(x)
    if a.dtype.kind != "f":
        raise ValueError(f"{what}: expected a floating-point tensor, got dtype {name}"
                         + (" (integer PCM: divide by its full scale first)" if ndim == 1 else ""))
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if ndim == 1 and a.ndim > 1 and sum(s != 1 for s in a.shape) <= 1:
        a = a.reshape(-1)  # [N, 1], [1, N, 1]...
    if a.ndim != ndim:
        want = "[N] / [1, N] / [1, 1, N]" if ndim == 1 else "[n_mels, T] / [1, n_mels, T]"
        raise ValueError(f"{what}: expected {want}, got shape {list(_as_array(x)[0].shape)}")
    return np.asarray(a, dtype=np.float64)


def as_mono(x: Any, what: str = "audio") -> np.ndarray:
    """1-D float64 copy of a mono wave given as ``[N]``, ``[1, N]``, ``[1, 1, N]`` (or ``[N, 1]``)."""
    return _squeeze_to(x, 1, what)


def _require_finite(*arrays: np.ndarray, what: str) -> None:
    for a in arrays:
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: input holds NaN/Inf; sanitise it first (audio_report does, and "
                             f"reports the counts)")


def _nonfinite_info(a: np.ndarray) -> dict:
    """Counts of NaN/+Inf/-Inf and the first non-finite flat index (C order)."""
    fin = np.isfinite(a)
    if fin.all():
        return {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None}
    nan = int(np.count_nonzero(np.isnan(a)))
    pos = int(np.count_nonzero(np.isposinf(a)))
    neg = int(np.count_nonzero(np.isneginf(a)))
    return {"nan": nan, "posinf": pos, "neginf": neg, "total": nan + pos + neg,
            "first_index": int(np.argmin(fin.reshape(-1)))}


def _sanitize(a: np.ndarray, fill: float) -> tuple[np.ndarray, dict]:
    info = _nonfinite_info(a)
    if info["total"]:
        a = np.where(np.isfinite(a), a, fill)
    return a, info


# ----------------------------------------------------------------------------------------------
# waveform


def snr_db(ref: Any, cand: Any) -> float:
    """SNR of the candidate against the reference: ``10 log10(sum r^2 / sum (c - r)^2)`` dB.

    ``+inf`` when the signals are identical (silent ones included), ``-inf`` when the reference is
    silent and the candidate is not. Only meaningful when the excitation noise matches (landscape B 2.1).
    """
    r, c = as_mono(ref, "snr_db ref"), as_mono(cand, "snr_db cand")
    if r.shape != c.shape:
        raise ShapeMismatch(r.shape, c.shape, "snr_db")
    _require_finite(r, c, what="snr_db")
    d = c - r
    rr, dd = _dot(r, r), _dot(d, d)
    if dd == 0.0:
        return math.inf
    if rr == 0.0:
        return -math.inf
    return 10.0 * math.log10(rr / dd)


def si_sdr_db(ref: Any, cand: Any) -> float:
    """Scale-invariant SDR: ``a = <c, r> / <r, r>``, ``10 log10(||a r||^2 / ||a r - c||^2)`` dB.

    No mean removal (landscape B 2.2). ``+inf`` when ``c`` is an exact multiple of ``r`` (identical
    included), ``-inf`` when ``c`` is orthogonal to ``r`` (``a = 0``), ``nan`` (undefined) when the
    reference is silent. Invariant to any non-zero scaling of the candidate.
    """
    r, c = as_mono(ref, "si_sdr ref"), as_mono(cand, "si_sdr cand")
    if r.shape != c.shape:
        raise ShapeMismatch(r.shape, c.shape, "si_sdr_db")
    _require_finite(r, c, what="si_sdr_db")
    rr = _dot(r, r)
    if rr == 0.0:
        return math.nan
    a = _dot(c, r) / rr
    e = a * r - c
    num = a * a * rr
    den = _dot(e, e)
    if den == 0.0:
        return math.inf
    if num == 0.0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def clipping_runs(x: Any, limit: float = AUDIO_LIMIT, eps: float = CLIP_EPS, min_run: int = 2) -> dict:
    """Clipping signature of HiFT's clamp on one (finite) wave.

    * ``clamp_samples``: samples with ``|x| >= limit - eps`` (at the clamp);
    * ``runs``: maximal runs of consecutive such samples with length ``>= min_run`` (isolated 1-sample
      peaks are ordinary speech peaks); ``longest_run`` (any length, 0 if none) and ``first_run_start``
      (sample index of the first counted run, or None);
    * backstop ``over_limit_count`` / ``over_limit``: samples with ``|x| > float32(limit)``
      (0.99000000953...: a float32 wave clamped at 0.99 holds exactly that value, so only a wave that
      did *not* come straight out of the clamp exceeds it).
    """
    a = as_mono(x, "clipping_runs")
    _require_finite(a, what="clipping_runs")
    mag = np.abs(a)
    at = mag >= (limit - eps)
    edges = np.diff(np.concatenate(([0], at.view(np.int8), [0])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lengths = ends - starts
    counted = lengths >= min_run
    over = int(np.count_nonzero(mag > float(np.float32(limit))))
    return {"limit": float(limit), "clamp_samples": int(np.count_nonzero(at)),
            "runs": int(np.count_nonzero(counted)),
            "longest_run": int(lengths.max()) if lengths.size else 0,
            "first_run_start": int(starts[counted][0]) if counted.any() else None,
            "over_limit_count": over, "over_limit": over > 0}


def audio_side_stats(x: Any, sr: int = SAMPLE_RATE) -> dict:
    """Per-side audio summary (JSON-safe; see the module docstring).

    ``n_samples``, ``duration_s`` (N / sr), ``nonfinite`` (``{nan, posinf, neginf, total, first_index}``,
    counted on the raw samples), ``sanitized`` (True when non-finite samples were replaced by 0.0 for the
    rest), ``dc_offset`` (mean), ``rms``, ``peak`` (max |x|), ``rms_dbfs`` = 20 log10(rms),
    ``peak_dbfs`` = 20 log10(peak) (None with ``special == "-inf"`` for a silent wave), ``clipping``
    (:func:`clipping_runs`), ``special``.
    """
    a = as_mono(x, "audio")
    return _side(a, sr)[0]


def _side(a: np.ndarray, sr: int) -> tuple[dict, np.ndarray]:
    clean, info = _sanitize(a, 0.0)
    special: dict = {}
    n = int(clean.size)
    rms = math.sqrt(_dot(clean, clean) / n) if n else 0.0
    peak = float(np.max(np.abs(clean))) if n else 0.0
    out = {"n_samples": n, "duration_s": n / float(sr), "nonfinite": info, "sanitized": info["total"] > 0,
           "dc_offset": float(clean.mean()) if n else 0.0, "rms": rms, "peak": peak,
           "rms_dbfs": _num(20 * math.log10(rms) if rms > 0 else -math.inf, "rms_dbfs", special),
           "peak_dbfs": _num(20 * math.log10(peak) if peak > 0 else -math.inf, "peak_dbfs", special),
           "clipping": clipping_runs(clean), "special": special}
    return out, clean


# ----------------------------------------------------------------------------------------------
# spectra


def stft_power(x: Any, n_fft: int = 1920, hop: int = MEL_HOP) -> np.ndarray:
    """Power spectrogram ``|STFT|^2``, time-major ``[T, n_fft // 2 + 1]`` (float64).

    Frames follow the pipeline's mel recipe so frame ``t`` lines up with mel frame ``t``: reflect-pad
    ``(n_fft - hop) // 2`` samples each side (zero padding when the wave is too short to reflect),
    periodic Hann window of length ``n_fft``, hop ``hop``, no centring: ``T = N // hop`` frames for the
    default sizes.
    """
    a = as_mono(x, "stft_power")
    _require_finite(a, what="stft_power")
    pad = (n_fft - hop) // 2
    xp = np.pad(a, pad, mode="reflect" if a.size > pad else "constant")
    n_frames = (xp.size - n_fft) // hop + 1 if xp.size >= n_fft else 0
    if n_frames <= 0:
        return np.zeros((0, n_fft // 2 + 1))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    win = signal.get_window("hann", n_fft)  # periodic (fftbins=True), as torch.hann_window
    spec = sfft.rfft(frames * win, axis=1)
    return spec.real ** 2 + spec.imag ** 2


def log_spectral_distance(ref: Any, cand: Any, *, n_fft: int = 1920, hop: int = MEL_HOP, floor_db: float = 60.0,
                          active_db: float = 40.0) -> dict:
    """Per-frame log-spectral distance with a dB floor, on frames where the reference is active.

    ``P`` = :func:`stft_power`. Both spectra are floored at ``max(P_ref) - floor_db`` dB (relative to the
    reference's largest bin; landscape B 2.1: without a floor, noise in silence dominates), then
    ``LSD_t = sqrt(mean_f (10 log10 P_ref[t, f] - 10 log10 P_cand[t, f])^2)`` dB. A frame is *active*
    when the reference's frame energy ``sum_f P_ref[t, f]`` is within ``active_db`` dB of its loudest
    frame. Summaries use active frames only:

    ``lsd_db_mean`` / ``lsd_db_median`` / ``lsd_db_max`` / ``worst_frame``; robust z-score
    ``z_t = (LSD_t - median) / (1.4826 * MAD)`` (landscape B 3.1 item 4; ``lsd_z_max`` and its frame,
    None when MAD is 0); ``spectral_convergence`` = ``|| |S_ref| - |S_cand| ||_F / || S_ref ||_F`` over all
    frames (``inf`` for a silent reference and a non-silent candidate). Also ``n_frames``, ``n_active``.

    ``per_frame``: ``lsd_db`` (every frame, float64), ``lsd_active`` (bool), ``lsd_z`` (0.0 on inactive
    frames or when MAD is 0).
    """
    pr = stft_power(ref, n_fft, hop)
    pc = stft_power(cand, n_fft, hop)
    if pr.shape != pc.shape:
        raise ShapeMismatch(pr.shape, pc.shape, "log_spectral_distance (frames)")
    t = pr.shape[0]
    empty = np.zeros(0)
    out: dict = {"n_frames": t, "n_active": 0, "lsd_db_mean": None, "lsd_db_median": None, "lsd_db_max": None,
                 "worst_frame": None, "lsd_z_max": None, "lsd_z_max_frame": None, "spectral_convergence": None,
                 "floor_db": float(floor_db), "active_db": float(active_db),
                 "per_frame": {"lsd_db": empty, "lsd_active": empty.astype(bool), "lsd_z": empty}}
    if t == 0:
        return out
    pmax = float(pr.max())
    floor = max(pmax * 10.0 ** (-floor_db / 10.0), 1e-30)
    lr = 10.0 * np.log10(np.maximum(pr, floor))
    lc = 10.0 * np.log10(np.maximum(pc, floor))
    lsd = np.sqrt(np.mean((lr - lc) ** 2, axis=1))
    energy = pr.sum(axis=1)
    emax = float(energy.max())
    active = energy >= emax * 10.0 ** (-active_db / 10.0) if emax > 0 else np.zeros(t, dtype=bool)
    z = np.zeros(t)
    den = float(pr.sum())
    num = float(np.sum((np.sqrt(pr) - np.sqrt(pc)) ** 2))
    out["spectral_convergence"] = (math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf))
    if active.any():
        la = lsd[active]
        idx = np.flatnonzero(active)
        med = float(np.median(la))
        mad = float(np.median(np.abs(la - med)))
        out.update({"n_active": int(active.sum()), "lsd_db_mean": float(la.mean()), "lsd_db_median": med,
                    "lsd_db_max": float(la.max()), "worst_frame": int(idx[int(np.argmax(la))])})
        if mad > 0:
            z[active] = (la - med) / (1.4826 * mad)
            k = int(np.argmax(z[active]))
            out["lsd_z_max"] = float(z[idx[k]])
            out["lsd_z_max_frame"] = int(idx[k])
    out["per_frame"] = {"lsd_db": lsd, "lsd_active": active, "lsd_z": z}
    return out


def _mels(ref_logmel: Any, cand_logmel: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    r = _squeeze_to(ref_logmel, 2, f"{what} ref")
    c = _squeeze_to(cand_logmel, 2, f"{what} cand")
    if r.shape != c.shape:
        raise ShapeMismatch(r.shape, c.shape, what)
    _require_finite(r, c, what=what)
    return r, c


def logmel_distance(ref_logmel: Any, cand_logmel: Any, floor: float = LOG_MEL_FLOOR) -> dict:
    """Mean absolute log-mel difference (natural-log units; multiply by 10/ln10 for dB).

    Both log-mels ``[n_mels, T]`` are clamped below at ``floor`` (the pipeline's ``ln(1e-5)``), then
    ``D_t = mean_m |L_cand[m, t] - L_ref[m, t]|``. Returns ``logmel_l1`` (mean over all bins and frames,
    i.e. ``mean_t D_t``), ``logmel_l1_max`` (max ``D_t``), ``worst_frame``, ``n_frames`` and
    ``per_frame`` (``D`` as a float64 array).
    """
    r, c = _mels(ref_logmel, cand_logmel, "logmel_distance")
    per = np.mean(np.abs(np.maximum(c, floor) - np.maximum(r, floor)), axis=0)
    t = per.size
    return {"n_frames": t, "logmel_l1": float(per.mean()) if t else None,
            "logmel_l1_max": float(per.max()) if t else None, "worst_frame": int(np.argmax(per)) if t else None,
            "per_frame": per}


def mcd(ref_logmel: Any, cand_logmel: Any, n_cep: int = 13, floor: float = LOG_MEL_FLOOR) -> dict:
    """Mel-cepstral distortion from log-mels (landscape B 2.2), frame-aligned (no DTW).

    ``C = scipy.fft.dct(max(L, floor), type=2, norm="ortho", axis=0)[1:n_cep]`` (c0, the energy, dropped;
    with the default ``n_cep = 13`` that is c1..c12), ``MCD_t = (10 / ln 10) * sqrt(2 * sum_k
    (C_cand[k, t] - C_ref[k, t])^2)`` dB, ``mcd_db = mean_t MCD_t``. The 10/ln10 factor assumes natural-log
    input (true for this pipeline). An internal relative number: not comparable with SPTK-mcep MCD.
    Returns ``mcd_db``, ``mcd_db_max``, ``worst_frame``, ``n_cep``, ``n_frames``, ``per_frame``.
    """
    r, c = _mels(ref_logmel, cand_logmel, "mcd")
    if n_cep < 2:
        raise ValueError("n_cep must be >= 2 (c0 is dropped)")
    cr = sfft.dct(np.maximum(r, floor), type=2, norm="ortho", axis=0)[1:n_cep]
    cc = sfft.dct(np.maximum(c, floor), type=2, norm="ortho", axis=0)[1:n_cep]
    per = _DB * np.sqrt(2.0 * np.sum((cc - cr) ** 2, axis=0))
    t = per.size
    return {"n_cep": int(n_cep), "n_frames": t, "mcd_db": float(per.mean()) if t else None,
            "mcd_db_max": float(per.max()) if t else None, "worst_frame": int(np.argmax(per)) if t else None,
            "per_frame": per}


# ----------------------------------------------------------------------------------------------
# F0


def f0_metrics(ref_f0: Any, cand_f0: Any, voiced_hz: float = VOICED_THRESHOLD_HZ,
               gpe_threshold: float = 0.2) -> dict:
    """F0 agreement from per-frame F0 tensors (Hz), no pitch tracker needed.

    A frame is voiced when ``f0 > voiced_hz`` (HiFT's own 10 Hz threshold). On frames voiced in both
    (``both_voiced`` of them): ``cents_t = 1200 log2(f_cand / f_ref)``; ``f0_rmse_cents`` =
    ``sqrt(mean cents^2)``, ``f0_mean_abs_cents``, ``f0_max_abs_cents``; ``gpe`` (gross pitch error) =
    share with ``|f_cand / f_ref - 1| > gpe_threshold`` (``gpe_count`` of them). Over all ``n_frames``:
    ``vde`` (voicing decision error) = share of frames whose voicing differs (``vde_count``), ``ffe`` =
    ``(gpe_count + vde_count) / n_frames``, ``f0_mae_hz`` / ``f0_max_abs_hz`` (raw Hz difference, every
    frame, matching the field notes' "F0 mean" check). Cents/GPE values are None when no frame is voiced
    in both. Also ``ref_voiced``, ``cand_voiced``.

    ``per_frame``: ``f0_cents`` (0.0 where not voiced in both), ``f0_both_voiced`` (bool),
    ``f0_abs_err_hz``.
    """
    r = as_mono(ref_f0, "f0 ref")
    c = as_mono(cand_f0, "f0 cand")
    if r.shape != c.shape:
        raise ShapeMismatch(r.shape, c.shape, "f0_metrics")
    _require_finite(r, c, what="f0_metrics")
    n = int(r.size)
    vr = r > voiced_hz
    vc = c > voiced_hz
    both = vr & vc
    nb = int(both.sum())
    cents = np.zeros(n)
    ratio = c[both] / r[both]
    cents[both] = 1200.0 * np.log2(ratio)
    gpe_count = int(np.count_nonzero(np.abs(ratio - 1.0) > gpe_threshold))
    vde_count = int(np.count_nonzero(vr != vc))
    abs_hz = np.abs(c - r)
    cb = cents[both]
    return {"n_frames": n, "ref_voiced": int(vr.sum()), "cand_voiced": int(vc.sum()), "both_voiced": nb,
            "voiced_threshold_hz": float(voiced_hz), "gpe_threshold": float(gpe_threshold),
            "f0_rmse_cents": float(math.sqrt(np.mean(cb ** 2))) if nb else None,
            "f0_mean_abs_cents": float(np.mean(np.abs(cb))) if nb else None,
            "f0_max_abs_cents": float(np.max(np.abs(cb))) if nb else None,
            "gpe": gpe_count / nb if nb else None, "gpe_count": gpe_count,
            "vde": vde_count / n if n else None, "vde_count": vde_count,
            "ffe": (gpe_count + vde_count) / n if n else None,
            "f0_mae_hz": float(abs_hz.mean()) if n else None, "f0_max_abs_hz": float(abs_hz.max()) if n else None,
            "per_frame": {"f0_cents": cents, "f0_both_voiced": both, "f0_abs_err_hz": abs_hz}}


# ----------------------------------------------------------------------------------------------
# clicks


def click_detector(ref: Any, cand: Any, sr: int = SAMPLE_RATE, *, cutoff_hz: float = 7000.0, order: int = 4,
                   frame_s: float = 0.010, floor_abs: float = 1e-5) -> dict:
    """Differential click / discontinuity detector (landscape B 3.1 item 3).

    Both waves go through a zero-phase high-pass (``order``-th order Butterworth at ``cutoff_hz``,
    ``scipy.signal.sosfiltfilt``). Per frame of ``frame_s`` (10 ms = 240 samples at 24 kHz; the last
    frame is zero-padded): ``R_t = max |hp(ref)|``, ``C_t = max |hp(cand)|``, ``E_t = max |hp(cand) -
    hp(ref)|`` (the high-passed *difference* signal). With ``floor = max(median_t R_t, floor_abs)``:

    * ``click_ratio_t = C_t / (R_t + floor)``: ~<= 1 where the candidate's HF content matches the
      reference's, large at a click the reference does not have; works when the noise differs;
    * ``click_diff_ratio_t = E_t / (R_t + floor)``: more sensitive, meaningful when the two waves are
      sample-aligned (same excitation noise).

    Returns ``available`` (False with ``reason`` when the cutoff is not below Nyquist or the wave is
    shorter than 2 samples), ``frame_samples``, ``n_frames``, ``floor``, ``ratio_max``, ``worst_frame``,
    ``worst_start_sample``, ``worst_time_s``, the same four for the diff ratio (``diff_ratio_max``,
    ``diff_worst_frame``...), and ``per_frame`` (``click_ratio``, ``click_diff_ratio``).
    """
    r = as_mono(ref, "click ref")
    c = as_mono(cand, "click cand")
    if r.shape != c.shape:
        raise ShapeMismatch(r.shape, c.shape, "click_detector")
    _require_finite(r, c, what="click_detector")
    n = int(r.size)
    frame = max(1, int(round(sr * frame_s)))
    base = {"available": False, "reason": None, "frame_samples": frame, "cutoff_hz": float(cutoff_hz)}
    if not 0 < cutoff_hz < sr / 2:
        base["reason"] = f"cutoff {cutoff_hz} Hz is not below Nyquist ({sr / 2} Hz)"
        return base
    if n < 2:
        base["reason"] = f"wave too short ({n} samples)"
        return base
    sos = signal.butter(order, cutoff_hz, btype="highpass", fs=sr, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), n - 1)
    hr = signal.sosfiltfilt(sos, r, padlen=padlen)
    hc = signal.sosfiltfilt(sos, c, padlen=padlen)
    nf = -(-n // frame)
    tot = nf * frame

    def fmax(v):
        return np.abs(np.pad(v, (0, tot - n))).reshape(nf, frame).max(axis=1)

    rm, cm, dm = fmax(hr), fmax(hc), fmax(hc - hr)
    floor = max(float(np.median(rm)), float(floor_abs))
    ratio = cm / (rm + floor)
    dratio = dm / (rm + floor)
    w = int(np.argmax(ratio))
    wd = int(np.argmax(dratio))
    base.update({"available": True, "n_frames": nf, "floor": floor,
                 "ratio_max": float(ratio[w]), "worst_frame": w, "worst_start_sample": w * frame,
                 "worst_time_s": w * frame / float(sr),
                 "diff_ratio_max": float(dratio[wd]), "diff_worst_frame": wd, "diff_worst_start_sample": wd * frame,
                 "diff_worst_time_s": wd * frame / float(sr),
                 "per_frame": {"click_ratio": ratio, "click_diff_ratio": dratio}})
    return base


# ----------------------------------------------------------------------------------------------
# the report


def _jsafe_section(d: dict | None, keys: tuple[str, ...]) -> dict | None:
    """Move ``per_frame`` out and make the listed float keys JSON-safe (``special`` map)."""
    if d is None:
        return None
    d = dict(d)
    d.pop("per_frame", None)
    special = d.setdefault("special", {})
    for k in keys:
        if k in d:
            v = d[k]
            d[k] = _num(v, k, special) if isinstance(v, float) else v
    return d


def _trim_pair(r: np.ndarray, c: np.ndarray, allow_trim: bool, what: str, notes: list) -> tuple | None:
    """Equal last-axis lengths, or trimmed to the shorter one when allowed (noted), else None (noted)."""
    if r.shape == c.shape:
        return r, c
    if r.shape[:-1] != c.shape[:-1]:
        notes.append(f"{what}: shapes {list(r.shape)} vs {list(c.shape)} differ beyond length; not compared")
        return None
    if not allow_trim:
        notes.append(f"{what}: length mismatch {r.shape[-1]} vs {c.shape[-1]}; not compared "
                     f"(allow_trim=True compares the common prefix)")
        return None
    k = min(r.shape[-1], c.shape[-1])
    notes.append(f"{what}: length mismatch {r.shape[-1]} vs {c.shape[-1]}; compared the first {k} only")
    return r[..., :k], c[..., :k]


def audio_report(ref_audio: Any, cand_audio: Any, ref_mel: Any = None, cand_mel: Any = None, ref_f0: Any = None,
                 cand_f0: Any = None, sr: int = SAMPLE_RATE, mel_fn: Callable[[np.ndarray], Any] | None = None, *,
                 n_cep: int = 13, allow_trim: bool = False, mel_hop: int = MEL_HOP,
                 lsd_n_fft: int = 1920, lsd_hop: int = MEL_HOP) -> dict:
    """Everything audio-domain for one reference/candidate pair, as a JSON-safe dict plus per-frame arrays.

    Args:
        ref_audio, cand_audio: mono float waves at ``sr`` (see module docstring for accepted shapes).
        ref_mel, cand_mel: optional natural-log mel tensors ``[n_mels, T]`` (e.g. the flow output) from
            both pipelines; used when both are given.
        ref_f0, cand_f0: optional F0 tensors ``[T]`` in Hz (HiFT's F0 predictor output).
        mel_fn: optional ``mel_fn(wave) -> log-mel [n_mels, T]`` (a leading ``[1, ...]`` is squeezed;
            numpy or torch), called with a finite 1-D float32 numpy wave. Used for the mel metrics
            when the mel tensors are not both given (e.g. ``reference.mel.mel_spectrogram``).
        n_cep: MCD keeps cepstra ``[1:n_cep]``.
        allow_trim: on a length mismatch, compare the common prefix (and say so) instead of skipping
            the pair metrics. Either way the mismatch is reported (``length.match`` False).
        mel_hop: samples per mel/F0 frame, for ``per_frame_hop_s`` only.
        lsd_n_fft, lsd_hop: STFT for the log-spectral distance (defaults align with the mel frames).

    Returns a dict:
        ``sr``; ``finite_ok`` (no NaN/Inf in any given input); ``sanitized`` ``{"ref", "cand",
        "replacement"}``; ``notes`` (list of strings: sanitising, length mismatches, skipped sections);
        ``ref`` / ``cand``: :func:`audio_side_stats`; ``length`` ``{"ref_samples", "cand_samples",
        "match", "compared_samples", "trimmed"}``;
        ``waveform`` (None if not compared): ``max_abs_err``, ``max_abs_err_sample``,
        ``max_abs_err_time_s``, ``mean_abs_err``, ``snr_db``, ``si_sdr_db``, ``clip_runs_delta``
        (cand runs - ref runs), ``dc_offset_delta``, ``rms_db_delta``, ``special``;
        ``spectral``: :func:`log_spectral_distance` summaries (None if not compared);
        ``mel``: ``{"source": "tensors" | "mel_fn", "nonfinite": {"ref", "cand"}, ...}`` with
        :func:`logmel_distance` (``logmel_l1``...) and :func:`mcd` (``mcd_db``...) summaries, or None;
        ``f0``: :func:`f0_metrics` summaries plus ``nonfinite``, or None; ``clicks``:
        :func:`click_detector` summaries, or None;
        ``per_frame``: numpy arrays (float64, or bool for masks): ``lsd_db``, ``lsd_active``, ``lsd_z``,
        ``logmel_l1``, ``mcd_db``, ``f0_cents``, ``f0_both_voiced``, ``f0_abs_err_hz``, ``click_ratio``,
        ``click_diff_ratio`` (only those computed); ``per_frame_hop_s``: seconds per frame of each.
        Scalars are JSON-safe (module docstring); ``to_jsonable(report)`` makes the whole dict JSON.
    """
    notes: list[str] = []
    r_raw = as_mono(ref_audio, "ref_audio")
    c_raw = as_mono(cand_audio, "cand_audio")
    ref_side, r = _side(r_raw, sr)
    cand_side, c = _side(c_raw, sr)
    finite_ok = ref_side["nonfinite"]["total"] == 0 and cand_side["nonfinite"]["total"] == 0
    for name, side in (("ref", ref_side), ("cand", cand_side)):
        nfi = side["nonfinite"]
        if nfi["total"]:
            notes.append(f"{name} audio has {nfi['total']} non-finite samples (NaN {nfi['nan']}, +Inf "
                         f"{nfi['posinf']}, -Inf {nfi['neginf']}; first at sample {nfi['first_index']}); "
                         f"metrics computed on a copy with them replaced by 0.0")
    per_frame: dict[str, np.ndarray] = {}
    hop_s: dict[str, float] = {}
    out: dict = {"sr": int(sr), "finite_ok": finite_ok,
                 "sanitized": {"ref": ref_side["sanitized"], "cand": cand_side["sanitized"], "replacement": 0.0},
                 "notes": notes, "ref": ref_side, "cand": cand_side}

    pair = _trim_pair(r, c, allow_trim, "audio", notes)
    out["length"] = {"ref_samples": int(r.size), "cand_samples": int(c.size), "match": r.size == c.size,
                     "compared_samples": int(pair[0].size) if pair else None,
                     "trimmed": bool(pair) and r.size != c.size}
    out["waveform"] = out["spectral"] = out["clicks"] = None
    if pair is not None and pair[0].size:
        rp, cp = pair
        d = np.abs(cp - rp)
        i = int(np.argmax(d))
        wf = {"max_abs_err": float(d[i]), "max_abs_err_sample": i if d[i] > 0 else None,
              "max_abs_err_time_s": i / float(sr) if d[i] > 0 else None, "mean_abs_err": float(d.mean()),
              "snr_db": snr_db(rp, cp), "si_sdr_db": si_sdr_db(rp, cp),
              "clip_runs_delta": cand_side["clipping"]["runs"] - ref_side["clipping"]["runs"],
              "dc_offset_delta": cand_side["dc_offset"] - ref_side["dc_offset"],
              "rms_db_delta": _rms_db_delta(ref_side["rms"], cand_side["rms"])}
        out["waveform"] = _jsafe_section(wf, ("max_abs_err", "mean_abs_err", "snr_db", "si_sdr_db",
                                              "dc_offset_delta", "rms_db_delta"))
        lsd = log_spectral_distance(rp, cp, n_fft=lsd_n_fft, hop=lsd_hop)
        per_frame.update(lsd["per_frame"])
        hop_s.update({k: lsd_hop / float(sr) for k in lsd["per_frame"]})
        out["spectral"] = _jsafe_section(lsd, ("lsd_db_mean", "lsd_db_median", "lsd_db_max", "lsd_z_max",
                                               "spectral_convergence"))
        clk = click_detector(rp, cp, sr)
        if clk["available"]:
            per_frame.update(clk["per_frame"])
            hop_s.update({k: clk["frame_samples"] / float(sr) for k in clk["per_frame"]})
        else:
            notes.append(f"clicks: not computed ({clk['reason']})")
        out["clicks"] = _jsafe_section(clk, ("ratio_max", "diff_ratio_max", "floor"))

    out["mel"] = _mel_section(ref_mel, cand_mel, mel_fn, r, c, pair, n_cep, allow_trim, notes, per_frame)
    if out["mel"] is not None:
        hop_s.update({k: mel_hop / float(sr) for k in ("logmel_l1", "mcd_db") if k in per_frame})
        finite_ok = finite_ok and out["mel"]["nonfinite"]["ref"]["total"] == 0 \
            and out["mel"]["nonfinite"]["cand"]["total"] == 0

    out["f0"] = None
    if ref_f0 is not None and cand_f0 is not None:
        fr, info_r = _sanitize(as_mono(ref_f0, "ref_f0"), 0.0)
        fc, info_c = _sanitize(as_mono(cand_f0, "cand_f0"), 0.0)
        for name, info in (("ref", info_r), ("cand", info_c)):
            if info["total"]:
                notes.append(f"{name} F0 has {info['total']} non-finite frames (first {info['first_index']}); "
                             f"replaced by 0.0 (unvoiced) for the F0 metrics")
        finite_ok = finite_ok and info_r["total"] == 0 and info_c["total"] == 0
        fp = _trim_pair(fr, fc, allow_trim, "f0", notes)
        if fp is not None:
            f0 = f0_metrics(*fp)
            per_frame.update(f0["per_frame"])
            hop_s.update({k: mel_hop / float(sr) for k in f0["per_frame"]})
            out["f0"] = _jsafe_section(f0, ("f0_rmse_cents", "f0_mean_abs_cents", "f0_max_abs_cents",
                                            "f0_mae_hz", "f0_max_abs_hz"))
            out["f0"]["nonfinite"] = {"ref": info_r, "cand": info_c}
    elif (ref_f0 is None) != (cand_f0 is None):
        notes.append("f0: only one side given; not compared")

    out["finite_ok"] = finite_ok
    out["per_frame"] = per_frame
    out["per_frame_hop_s"] = hop_s
    return out


def _rms_db_delta(rms_r: float, rms_c: float) -> float:
    if rms_r == 0.0 and rms_c == 0.0:
        return 0.0
    if rms_r == 0.0:
        return math.inf
    if rms_c == 0.0:
        return -math.inf
    return 20.0 * math.log10(rms_c / rms_r)


def _mel_section(ref_mel, cand_mel, mel_fn, r, c, pair, n_cep, allow_trim, notes, per_frame) -> dict | None:
    if ref_mel is not None and cand_mel is not None:
        source = "tensors"
        mr_in, mc_in = ref_mel, cand_mel
    else:
        if (ref_mel is None) != (cand_mel is None):
            notes.append("mel: only one mel tensor given; ignored")
        if mel_fn is None:
            notes.append("mel: no mel tensors and no mel_fn; log-mel distance and MCD not computed")
            return None
        source = "mel_fn"
        wr, wc = pair if pair is not None else (r, c)
        try:
            mr_in = mel_fn(np.ascontiguousarray(wr, dtype=np.float32))
            mc_in = mel_fn(np.ascontiguousarray(wc, dtype=np.float32))
        except Exception as e:  # noqa: BLE001 - the recipe is the caller's; report, do not crash the whole report
            notes.append(f"mel: mel_fn failed: {type(e).__name__}: {e}")
            return None
    mr, info_r = _sanitize(_squeeze_to(mr_in, 2, "ref_mel"), LOG_MEL_FLOOR)
    mc, info_c = _sanitize(_squeeze_to(mc_in, 2, "cand_mel"), LOG_MEL_FLOOR)
    for name, info in (("ref", info_r), ("cand", info_c)):
        if info["total"]:
            notes.append(f"{name} mel ({source}) has {info['total']} non-finite values (first flat index "
                         f"{info['first_index']}); replaced by ln(1e-5) for the mel metrics")
    sec: dict = {"source": source, "n_mels": int(mr.shape[0]), "nonfinite": {"ref": info_r, "cand": info_c},
                 "available": False}
    mp = _trim_pair(mr, mc, allow_trim, "mel", notes)
    if mp is None:
        return sec
    lm = logmel_distance(*mp)
    mc_ = mcd(*mp, n_cep=n_cep)
    per_frame["logmel_l1"] = lm["per_frame"]
    per_frame["mcd_db"] = mc_["per_frame"]
    special: dict = {}
    sec.update({"available": True, "n_frames": lm["n_frames"],
                "logmel_l1": _num(lm["logmel_l1"], "logmel_l1", special),
                "logmel_l1_max": _num(lm["logmel_l1_max"], "logmel_l1_max", special),
                "logmel_worst_frame": lm["worst_frame"], "n_cep": mc_["n_cep"],
                "mcd_db": _num(mc_["mcd_db"], "mcd_db", special),
                "mcd_db_max": _num(mc_["mcd_db_max"], "mcd_db_max", special),
                "mcd_worst_frame": mc_["worst_frame"], "special": special})
    return sec

