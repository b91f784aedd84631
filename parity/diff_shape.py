"""The shape of a difference: where it lies along time (at the edges only?) and what it looks like (noise?).

Pure measurements of ``cand - ref`` (float64), no thresholds: the diagnosis (:mod:`parity.diagnose`) decides
what they mean, with the limits and the measurements behind them written there.

* :func:`edge_profile`: the largest |difference| per frame along the time axis, and how many leading and
  trailing frames hold a difference above 1 % of the largest one (:data:`EDGE_REL`), with the largest
  difference between them (``interior_max``). A difference confined to a few frames at either end is an edge
  effect (padding).
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

EDGE_REL = 0.01  # a frame is "at the edge" while its difference is above this fraction of the largest
FLATNESS_SEGMENT = 256  # samples per periodogram segment (Hann window)


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def edge_profile(ref, cand, time_axis: int) -> dict | None:
    """``{"frames", "head", "tail", "max", "interior_max"}`` of |cand - ref| per frame along ``time_axis`` (the
    maximum over every other axis); None for fewer than 8 frames or non-finite values."""
    r, c = _f64(ref), _f64(cand)
    if r.shape != c.shape or r.ndim == 0:
        return None
    d = np.abs(c - r)
    if not np.isfinite(d).all():
        return None
    per = np.moveaxis(d, time_axis, -1).reshape(-1, d.shape[time_axis]).max(axis=0)
    n = per.shape[0]
    if n < 8:
        return None
    top = float(per.max())
    if top == 0.0:
        return {"frames": n, "head": 0, "tail": 0, "max": 0.0, "interior_max": 0.0}
    above = per > EDGE_REL * top
    head = int(np.argmin(above)) if not above.all() else n
    tail = int(np.argmin(above[::-1])) if not above.all() else 0
    inner = per[head:n - tail]
    return {"frames": n, "head": head, "tail": tail, "max": top,
            "interior_max": float(inner.max()) if inner.size else 0.0}


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
