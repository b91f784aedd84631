"""The shape of a difference: where it lies along time (at the edges only?) and what it looks like (noise?).

Pure measurements of ``cand - ref`` (float64), no thresholds: the diagnosis (:mod:`parity.judge.diagnose`) decides
what they mean, with the limits and the measurements behind them written there.

* :func:`edge_profile`: the largest |difference| per frame along the time axis; the largest one between the
  first and last :data:`EDGE_FRAMES` frames (``interior_max``), and how many frames at each end, contiguous from
  it, lie above that interior level (``head``, ``tail``). A difference far larger at a few frames at either end
  than anywhere inside is an edge effect (padding).
* :func:`noise_likeness`: for a sample-rate signal (the harmonic source), the difference after removing its
  mean over each F0 frame (``frame`` samples: the source's sine is constant over a frame, the noise is not):
  its lag-1 autocorrelation (``lag1``, about 0 for white noise, near 1 for a tone), its spectral flatness
  (``flatness``, geometric over arithmetic mean of its averaged periodogram: 1 for white noise, about 0 for a
  tone) and the Pearson correlation of the difference with the reference signal (``ref_corr``: about 0 when the
  difference is independent of the signal, +-1 for a gain or a sign).
"""

from __future__ import annotations

import math

import numpy as np

EDGE_FRAMES = 8  # frames at each end that count as the edge
FLATNESS_SEGMENT = 256  # samples per periodogram segment (Hann window)


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def edge_profile(ref, cand, time_axis: int) -> dict | None:
    """``{"frames", "head", "tail", "max", "interior_max"}`` of |cand - ref| per frame along ``time_axis`` (the
    maximum over every other axis); None for fewer than 4 x :data:`EDGE_FRAMES` frames or non-finite values."""
    r, c = _f64(ref), _f64(cand)
    if r.shape != c.shape or r.ndim == 0:
        return None
    d = np.abs(c - r)
    if not np.isfinite(d).all():
        return None
    per = np.moveaxis(d, time_axis, -1).reshape(-1, d.shape[time_axis]).max(axis=0)
    n, e = per.shape[0], EDGE_FRAMES
    if n < 4 * e:
        return None
    inner = float(per[e:n - e].max())
    head = next((i for i in range(e) if per[i] <= inner), e)
    tail = next((i for i in range(e) if per[n - 1 - i] <= inner), e)
    return {"frames": int(n), "head": int(head), "tail": int(tail), "max": float(per.max()), "interior_max": inner}


def noise_likeness(ref, cand, frame: int) -> dict | None:
    """``{"lag1", "flatness", "ref_corr", "rms", "samples", "frame"}`` of the difference of two 1-D signals
    (see the module docstring); None when there are fewer than two frames, or non-finite values."""
    r, c = _f64(ref).reshape(-1), _f64(cand).reshape(-1)
    if r.shape != c.shape or frame < 2:
        return None
    n = (r.shape[0] // frame) * frame
    if n < 2 * frame or not (np.isfinite(r[:n]).all() and np.isfinite(c[:n]).all()):
        return None
    d = c[:n] - r[:n]
    rms = float(np.sqrt(np.mean(d * d)))
    e = (d.reshape(-1, frame) - d.reshape(-1, frame).mean(axis=1, keepdims=True)).reshape(-1)
    ee = float(np.dot(e, e))
    lag1 = float(np.dot(e[:-1], e[1:]) / ee) if ee > 0 else math.nan
    seg = FLATNESS_SEGMENT
    m = e.shape[0] // seg
    if m >= 1 and ee > 0:
        p = (np.abs(np.fft.rfft(e[:m * seg].reshape(m, seg) * np.hanning(seg), axis=1)) ** 2).mean(axis=0)[1:]
        flat = float(np.exp(np.mean(np.log(np.maximum(p, 1e-300)))) / np.mean(p)) if np.mean(p) > 0 else math.nan
    else:
        flat = math.nan
    dc, rc = d - d.mean(), r[:n] - r[:n].mean()
    den = float(np.linalg.norm(dc) * np.linalg.norm(rc))
    corr = float(np.dot(dc, rc) / den) if den > 0 else math.nan
    return {"lag1": lag1, "flatness": flat, "ref_corr": corr, "rms": rms, "samples": int(n), "frame": int(frame)}
