"""report: one self-contained HTML page per comparison, plus a summary page for a matrix of cases.

Data flows one way (capture -> trace -> compare -> diagnose -> report). The report never recomputes a
metric: every number on the page comes from the comparison result (:class:`parity.result.Comparison`). It only *plots* tensors from the
traces (mels, F0, waveforms, and their plain differences) and the per-frame vectors already in the result.

The page needs no network: figures are PNGs (matplotlib's Agg canvas, object API, no pyplot state)
embedded as ``data:image/png;base64`` URIs; audio is 16-bit PCM WAV in ``data:audio/wav;base64`` URIs
(non-finite samples replaced by 0 and everything clipped to [-1, 1] first; the page says when and how
many). Above an audio budget only windows of +-0.5 s around the worst frames are embedded. Every string
that comes from a trace (stage names, metadata, messages) is HTML-escaped by jinja2's autoescape.

Entry points: :func:`build_report`, :func:`build_summary_page`, :func:`report_from_saved`.
"""

from __future__ import annotations

import base64
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from reference.errors import InputError

from .render import fmt, jinja_env
from .result import Comparison, StageResult, StepRow, aggregate_verdict, read_json
from .stages import STEP_OUTPUTS, layout, parse_step

DEFAULT_AUDIO_BUDGET = 8 * 1024 * 1024  # bytes of base64 WAV data for the three players together
WINDOW_S = 0.5  # half-width of an audio window embedded above the budget
MAX_WINDOWS = 4
FIG_W = 8.0  # inches at 100 dpi: 800 px wide figures
DPI = 100
MEL_HOP = 480
SECTION_IDS = ("verdict", "diagnosis", "provenance", "stages", "steps", "mel", "f0", "waveform", "listen",
               "nonfinite", "audio-metrics", "raw-stats")
NONFINITE_CODES = ("nonfinite_origin", "reference_nonfinite", "audio_nonfinite")


def _loc(at: Any, stage: str | None = None) -> str:
    """A max-error location {flat, index, channel, frame} as text."""
    if not isinstance(at, dict):
        return ""
    kind = layout(stage).kind if stage else ""
    if kind == "wave" and at.get("frame") is not None:
        return f"sample {at['frame']}"
    parts = []
    if at.get("channel") is not None:
        parts.append(f"ch {at['channel']}")
    if at.get("frame") is not None:
        parts.append(f"frame {at['frame']}")
    if not parts and at.get("index") is not None:
        parts.append(f"index {fmt(at['index'])}")
    return ", ".join(parts)


def _size_text(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MiB ({n:,} bytes)"
    return f"{n / 1024:.1f} KiB ({n:,} bytes)"


# ---------------------------------------------------------------------------------------------
# tensors -> numpy (for plots only)

def _np(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach()
        if t.is_floating_point():
            t = t.double()
        return t.cpu().numpy()
    return np.asarray(t)


def _mel2d(t: Any) -> np.ndarray | None:
    a = _np(t)
    if a is None:
        return None
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a.astype(np.float64) if a.ndim == 2 else None


def _vec(t: Any) -> np.ndarray | None:
    a = _np(t)
    if a is None:
        return None
    return a.reshape(-1).astype(np.float64)


def _listvec(v: Any) -> np.ndarray | None:
    """A per-frame vector from the result (None entries stood for non-finite values) as float64."""
    if v is None:
        return None
    return np.array([np.inf if x is None else float(x) for x in v], dtype=np.float64)


def _finite_nan(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


# ---------------------------------------------------------------------------------------------
# figures (matplotlib object API on the Agg canvas)

def _figure(h_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIG_W, h_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png_uri(fig) -> str:
    from markupsafe import Markup

    try:
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        png = _png_bytes(rgba)
    finally:
        fig.clear()  # release the artists (the figure is not registered with pyplot)
    return Markup("data:image/png;base64," + base64.b64encode(png).decode("ascii"))


def _png_bytes(rgba: np.ndarray) -> bytes:
    """PNG of an RGBA canvas, quantised to a 256-colour palette (2-3x smaller for these charts)."""
    buf = io.BytesIO()
    try:
        from PIL import Image

        img = Image.fromarray(rgba[..., :3].copy(), "RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                                    dither=Image.Dither.NONE)
        img.save(buf, format="PNG", optimize=True)
    except ImportError:  # Pillow ships with matplotlib; keep a plain path anyway
        import matplotlib.image

        matplotlib.image.imsave(buf, rgba, format="png")
    return buf.getvalue()


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _logsafe(vals: list) -> np.ndarray:
    a = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    a[~(a > 0)] = np.nan  # zero (exact match) and missing values cannot sit on a log axis
    return a


def plot_steps(steps: list[StepRow], step_limits: dict[str, float]) -> str:
    """Accumulated and local max |diff| of v1, v2, v_cfg, x per step (log y), growth factor and CFG gaps."""
    from matplotlib.ticker import MaxNLocator, NullLocator

    def steps_axis(ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)

    fig = _figure(8.4)
    gs = fig.add_gridspec(3, 2, hspace=0.55, wspace=0.25, left=0.08, right=0.98, top=0.94, bottom=0.07)
    k = np.array([r.step for r in steps], dtype=float)
    for i, f in enumerate(STEP_OUTPUTS):
        ax = fig.add_subplot(gs[i // 2, i % 2])
        acc = _logsafe([r.acc.get(f) for r in steps])
        loc = _logsafe([r.local.get(f) for r in steps])
        if np.all(np.isnan(acc)) and np.all(np.isnan(loc)):
            zero = any(r.acc.get(f) == 0 for r in steps)
            _no_data(ax, f"{f}: exact match at every step (0 is not drawn on a log axis)" if zero
                     else f"{f}: no errors recorded")
            ax.set_title(f"{f}: max |cand - ref|", fontsize=9)
            continue
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost most of the drawing time
        if not np.all(np.isnan(acc)):
            ax.plot(k, acc, "o-", color="C0", ms=4, label="accumulated")
        if not np.all(np.isnan(loc)):
            ax.plot(k, loc, "x--", color="C1", ms=5, label="local (teacher-forced)")
        bad = np.array([r.status.get(f) == "fail" for r in steps])
        if bad.any():
            ax.plot(k[bad], np.where(np.isnan(acc[bad]), np.nanmax(acc) if not np.all(np.isnan(acc)) else 1.0,
                                     acc[bad]), "s", mfc="none", mec="red", ms=9, label="fails its rule")
        lim = step_limits.get(f)
        if lim:
            ax.axhline(lim, color="0.5", lw=0.8, ls=":", label=f"atol {lim:.3g}")
        ax.set_title(f"{f}: max |cand - ref|", fontsize=9)
        steps_axis(ax)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    ax = fig.add_subplot(gs[2, 0])
    g = np.array([np.nan if r.growth is None else float(r.growth) for r in steps])
    if np.all(np.isnan(g)):
        _no_data(ax, "no growth factors")
    else:
        ax.plot(k, g, "o-", color="C2", ms=4)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        steps_axis(ax)
        ax.grid(True, alpha=0.3)
    ax.set_title("growth: rmse(x_k) / rmse(x_{k-1})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[2, 1])
    gr = np.array([np.nan if r.cfg_gap_ref is None else float(r.cfg_gap_ref) for r in steps])
    gc = np.array([np.nan if r.cfg_gap_cand is None else float(r.cfg_gap_cand) for r in steps])
    if np.all(np.isnan(gr)) and np.all(np.isnan(gc)):
        _no_data(ax, "no CFG gaps (v1/v2 not captured)")
    else:
        ax.plot(k, gr, "o-", color="0.3", ms=4, label="reference")
        ax.plot(k, gc, "x--", color="C3", ms=5, label="candidate")
        steps_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax.set_title("CFG gap: mean |v1 - v2|", fontsize=9)
    ax.tick_params(labelsize=7)
    return _png_uri(fig)


def plot_mel(ref: np.ndarray, cand: np.ndarray | None, per_frame: list[tuple[str, np.ndarray]],
             title: str) -> str:
    """Reference and candidate mel on one colour scale, their difference on a diverging scale centred on
    zero, and per-frame distances underneath on the same frame axis."""
    import matplotlib
    from matplotlib.colors import TwoSlopeNorm

    same = cand is not None and cand.shape == ref.shape
    rows = [("reference", ref)] + ([("candidate", cand)] if cand is not None else [])
    n_img = len(rows) + (1 if same else 0)
    heights = [2.2] * n_img + ([1.5] if per_frame else [])
    fig = _figure(sum(heights) + 0.9)
    gs = fig.add_gridspec(len(heights), 2, width_ratios=[1, 0.018], height_ratios=heights, hspace=0.45,
                          wspace=0.02, left=0.08, right=0.93, top=0.95, bottom=0.07)
    rf = ref[np.isfinite(ref)]
    vmin, vmax = (np.percentile(rf, 1), np.percentile(rf, 99)) if rf.size else (-1.0, 1.0)
    if not vmax > vmin:
        vmax = vmin + 1e-6
    mag = matplotlib.colormaps["magma"].with_extremes(bad="#00e000")
    ax0 = None
    for i, (name, m) in enumerate(rows):
        ax = fig.add_subplot(gs[i, 0], sharex=ax0)
        ax0 = ax0 or ax
        im = ax.imshow(_finite_nan(m), origin="lower", aspect="auto", interpolation="nearest", cmap=mag,
                       vmin=vmin, vmax=vmax)
        nbad = int(np.count_nonzero(~np.isfinite(m)))
        ax.set_title(f"{name} {title}" + (f"  ({nbad} non-finite values in green)" if nbad else "")
                     + ("" if i else "  (colour scale: 1st-99th percentile of the reference)"), fontsize=9)
        ax.set_ylabel("mel bin", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, cax=fig.add_subplot(gs[i, 1])).ax.tick_params(labelsize=6)
    row = len(rows)
    if same:
        d = cand - ref
        df = np.abs(d[np.isfinite(d)])
        zero = not (df.size and df.max() > 0)
        lim = 1e-12 if zero else float(df.max())
        div = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#00e000")
        ax = fig.add_subplot(gs[row, 0], sharex=ax0)
        im = ax.imshow(_finite_nan(d), origin="lower", aspect="auto", interpolation="nearest", cmap=div,
                       norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim))
        ax.set_title("candidate - reference: " + ("no finite difference (identical where finite)" if zero else
                     f"diverging scale +-{lim:.3g}, white = 0"), fontsize=9)
        ax.set_ylabel("mel bin", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, cax=fig.add_subplot(gs[row, 1]), format="%.2g").ax.tick_params(labelsize=6)
        row += 1
    if per_frame:
        ax = fig.add_subplot(gs[row, 0], sharex=ax0)
        fig.add_subplot(gs[row, 1]).axis("off")
        twin = None
        for j, (label, vec) in enumerate(per_frame):
            x = np.arange(vec.size)
            target = ax
            if j == 1:
                twin = ax.twinx()
                target = twin
            color = f"C{j}"
            target.plot(x, _finite_nan(vec), "-", color=color, lw=1.0, label=label)
            bad = ~np.isfinite(vec)
            if bad.any():
                top = np.nanmax(_finite_nan(vec)) if np.isfinite(vec).any() else 1.0
                target.plot(x[bad], np.full(bad.sum(), top), "v", color="red", ms=4,
                            label=f"{label}: non-finite")
            target.tick_params(labelsize=7, colors=color if j else "black")
            if j > 1:
                break
        handles = ax.get_legend_handles_labels()
        if twin is not None:
            h2 = twin.get_legend_handles_labels()
            handles = (handles[0] + h2[0], handles[1] + h2[1])
        ax.legend(*handles, fontsize=6.5, loc="upper right")
        ax.set_xlabel("frame (hop 480 samples = 20 ms)", fontsize=8)
        ax.set_title("per-frame distance (from the comparison result)", fontsize=9)
        ax.grid(True, alpha=0.3)
    elif ax0 is not None:
        ax0.set_xlabel("frame", fontsize=8)
    return _png_uri(fig)


def plot_f0(ref: np.ndarray, cand: np.ndarray | None, threshold: float) -> str:
    fig = _figure(4.6 if cand is not None and cand.size == ref.size else 2.6)
    two = cand is not None and cand.size == ref.size
    gs = fig.add_gridspec(2 if two else 1, 1, hspace=0.45, left=0.08, right=0.98, top=0.92, bottom=0.12)
    ax = fig.add_subplot(gs[0, 0])
    x = np.arange(ref.size)
    ax.plot(x, _finite_nan(ref), "-", color="0.25", lw=1.2, label="reference")
    if cand is not None:
        xc = np.arange(cand.size)
        ax.plot(xc, _finite_nan(cand), "--", color="C1", lw=1.2, label="candidate")
        bad = ~np.isfinite(cand)
        if bad.any():
            ax.plot(xc[bad], np.zeros(bad.sum()), "v", color="red", ms=4, label=f"candidate non-finite ({bad.sum()})")
    ax.axhline(threshold, color="C2", lw=0.8, ls=":", label=f"voiced threshold {threshold:g} Hz")
    ax.set_ylabel("F0 (Hz)", fontsize=8)
    ax.set_title("F0 (HiFT predictor output)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)
    if two:
        ax2 = fig.add_subplot(gs[1, 0], sharex=ax)
        ax2.plot(x, _finite_nan(cand - ref), "-", color="C3", lw=1.0)
        ax2.axhline(0.0, color="0.5", lw=0.6)
        ax2.set_ylabel("Hz", fontsize=8)
        ax2.set_title("candidate - reference (Hz)", fontsize=9)
        ax2.grid(True, alpha=0.3)
        ax2.tick_params(labelsize=7)
        ax2.set_xlabel("frame (20 ms)", fontsize=8)
    else:
        ax.set_xlabel("frame (20 ms)", fontsize=8)
    return _png_uri(fig)


def _env(x: np.ndarray, y: np.ndarray, bins: int = 2000, direct: int = 60000):
    """Min/max envelope of a long signal for display (a line of 10^6 points shows nothing more)."""
    if y.size <= direct:
        return x, y, None
    c = -(-y.size // bins)
    m = -(-y.size // c)
    yy = np.full(m * c, np.nan)
    yy[: y.size] = _finite_nan(y)
    yy = yy.reshape(m, c)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN (a gap in the plot)
        lo, hi = np.nanmin(yy, axis=1), np.nanmax(yy, axis=1)
    return x[::c][:m], lo, hi


def _wave_plot(ax, x, y, color, label, lw=0.6, alpha=1.0):
    xs, a, b = _env(x, y)
    if b is None:
        ax.plot(xs, _finite_nan(a), "-", color=color, lw=lw, label=label, alpha=alpha)
    else:
        ax.fill_between(xs, a, b, color=color, alpha=alpha, lw=0, label=label)


def plot_waves(ref: np.ndarray, cand: np.ndarray | None, sr: int, worst: int | None, worst_label: str) -> str:
    fig = _figure(7.4 if cand is not None else 2.8)
    n_rows = 4 if cand is not None else 1
    gs = fig.add_gridspec(n_rows, 1, hspace=0.65, left=0.08, right=0.98, top=0.95 if cand is not None else 0.88,
                          bottom=0.07 if cand is not None else 0.17)
    t = np.arange(ref.size) / sr
    ax = fig.add_subplot(gs[0, 0])
    _wave_plot(ax, t, ref, "0.35", "reference")
    if cand is not None:
        _wave_plot(ax, np.arange(cand.size) / sr, cand, "C1", "candidate", alpha=0.75)
        bad = np.flatnonzero(~np.isfinite(cand))
        if bad.size:
            ax.axvspan(bad[0] / sr, (bad[-1] + 1) / sr, color="red", alpha=0.2,
                       label=f"candidate non-finite ({bad.size} samples in {bad[0]}-{bad[-1]})")
    ax.set_title("waveforms", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("time (s)", fontsize=8)
    if cand is None:
        return _png_uri(fig)
    n = min(ref.size, cand.size)
    d = cand[:n] - ref[:n]
    ax2 = fig.add_subplot(gs[1, 0], sharex=ax)
    _wave_plot(ax2, t[:n], d, "C3", "candidate - reference")
    ax2.set_title("difference: candidate - reference" + ("" if ref.size == cand.size else
                                                          f" (first {n} samples; lengths differ)"), fontsize=9)
    ax2.tick_params(labelsize=7)
    ax2.set_xlabel("time (s)", fontsize=8)
    if worst is None or not 0 <= worst < n:
        worst = n // 2
        worst_label = "no worst position in the result; middle of the audio"
    half = 2 * MEL_HOP
    a, b = max(0, worst - half), min(n, worst + half)
    for axx in (ax, ax2):
        axx.axvspan(a / sr, b / sr, color="C0", alpha=0.12)
    z = fig.add_subplot(gs[2, 0])
    tz = np.arange(a, b) / sr
    z.plot(tz, _finite_nan(ref[a:b]), "-", color="0.35", lw=0.9, label="reference")
    z.plot(tz, _finite_nan(cand[a:b]), "-", color="C1", lw=0.9, label="candidate")
    z.axvline(worst / sr, color="red", lw=0.6, ls=":")
    z.set_title(f"zoom: samples {a}-{b} around sample {worst} (frame {worst // MEL_HOP}; {worst_label})",
                fontsize=9)
    z.legend(fontsize=7, loc="upper right")
    z.tick_params(labelsize=7)
    z2 = fig.add_subplot(gs[3, 0], sharex=z)
    z2.plot(tz, _finite_nan(d[a:b]), "-", color="C3", lw=0.9)
    z2.axvline(worst / sr, color="red", lw=0.6, ls=":")
    z2.set_title("zoom: candidate - reference", fontsize=9)
    z2.tick_params(labelsize=7)
    z2.set_xlabel("time (s)", fontsize=8)
    return _png_uri(fig)


# ---------------------------------------------------------------------------------------------
# audio

def wav_uri(x: np.ndarray, sr: int) -> tuple[str, dict]:
    """16-bit PCM WAV data URI; non-finite samples -> 0 and clip to [-1, 1] first (counted)."""
    from markupsafe import Markup
    from scipy.io import wavfile

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    fin = np.isfinite(x)
    n_nonfinite = int(x.size - np.count_nonzero(fin))
    y = np.where(fin, x, 0.0)
    n_clipped = int(np.count_nonzero(np.abs(y) > 1.0))
    y = np.clip(y, -1.0, 1.0)
    buf = io.BytesIO()
    wavfile.write(buf, int(sr), np.round(y * 32767.0).astype(np.int16))
    raw = buf.getvalue()
    uri = Markup("data:audio/wav;base64," + base64.b64encode(raw).decode("ascii"))
    return uri, {"nonfinite": n_nonfinite, "clipped": n_clipped, "samples": int(x.size), "bytes": len(uri)}


def _b64_len(n_samples: int) -> int:
    return 4 * ((44 + 2 * n_samples + 2) // 3) + len("data:audio/wav;base64,")


def _worst_positions(result: Comparison, sr: int, n: int) -> list[tuple[int, str]]:
    """Sample positions the result names as worst, most important first."""
    a = result.audio or {}
    out: list[tuple[int, str]] = []

    def add(pos, label):
        if isinstance(pos, (int, float)) and not isinstance(pos, bool) and 0 <= int(pos) < n:
            out.append((int(pos), label))

    wf = a.get("waveform") or {}
    add(wf.get("max_abs_err_sample"), "max |diff|")
    cand_nf = ((a.get("cand") or {}).get("nonfinite") or {})
    add(cand_nf.get("first_index"), "first non-finite sample")
    clk = a.get("clicks") or {}
    add(clk.get("diff_worst_start_sample"), "worst high-frequency difference")
    add(clk.get("worst_start_sample"), "worst click ratio")
    hop_s = (a.get("per_frame_hop_s") or {}).get("lsd_db")
    sp = a.get("spectral") or {}
    if isinstance(sp.get("worst_frame"), int):
        add(sp["worst_frame"] * (int(round(hop_s * sr)) if hop_s else MEL_HOP), "worst log-spectral distance")
    mel = a.get("mel") or {}
    if isinstance(mel.get("logmel_worst_frame"), int):
        add(mel["logmel_worst_frame"] * MEL_HOP, "worst log-mel frame")
    st = result.stage("audio")
    if st and isinstance(st.metric("max_abs_err_at"), dict):
        add(st.metric("max_abs_err_at").get("flat"), "audio stage max |diff|")
    return out


def audio_players(result: Comparison, ref: np.ndarray | None, cand: np.ndarray | None, sr: int,
                  budget: int) -> dict:
    """Players for reference, candidate and difference: whole signals, or windows above the budget."""
    sides = [("reference", ref), ("candidate", cand)]
    if ref is not None and cand is not None:
        n = min(ref.size, cand.size)
        with np.errstate(all="ignore"):
            sides.append(("difference (candidate - reference)" if ref.size == cand.size else
                          f"difference (candidate - reference, first {n} samples: lengths differ)",
                          cand[:n] - ref[:n]))
    sides = [(k, v) for k, v in sides if v is not None and v.size]
    if not sides:
        return {"windows": [], "note": None, "sanitised": []}
    total = sum(_b64_len(v.size) for _, v in sides)
    n_max = max(v.size for _, v in sides)
    windows = []
    note = None
    if total <= budget:
        windows.append({"label": f"whole audio ({n_max / sr:.2f} s)", "start": 0, "stop": n_max})
    else:
        half = int(WINDOW_S * sr)
        per = _b64_len(2 * half) * len(sides)
        cap = max(1, min(MAX_WINDOWS, budget // max(per, 1)))
        pos = _worst_positions(result, sr, n_max) or [(0, "start of the audio (no worst position in the result)")]
        for p, label in pos:
            a, b = max(0, p - half), min(n_max, p + half)
            if any(a < w["stop"] and b > w["start"] for w in windows):
                continue
            windows.append({"label": f"{a / sr:.2f}-{b / sr:.2f} s around {label} (sample {p})", "start": a,
                            "stop": b})
            if len(windows) >= cap:
                break
        note = (f"The three WAVs would take {_size_text(total)} embedded, over the audio budget of "
                f"{_size_text(budget)}: only {len(windows)} window(s) of +-{WINDOW_S:g} s around the worst "
                f"frames are embedded, not the whole audio.")
    sanitised: dict[str, dict] = {}
    for w in windows:
        w["players"] = []
        for label, sig in sides:
            uri, info = wav_uri(sig[w["start"]:w["stop"]], sr)
            w["players"].append({"label": label, "uri": uri, "samples": info["samples"]})
            s = sanitised.setdefault(label, {"label": label, "nonfinite": 0, "clipped": 0})
            s["nonfinite"] += info["nonfinite"]
            s["clipped"] += info["clipped"]
    return {"windows": windows, "note": note,
            "sanitised": [s for s in sanitised.values() if s["nonfinite"] or s["clipped"]]}


# ---------------------------------------------------------------------------------------------
# view model: the result reshaped for the template (no metric is computed here)

def _evidence(ev: Any, limit: int = 10) -> list[tuple[str, str]]:
    if not isinstance(ev, dict):
        return [("evidence", fmt(ev))] if ev not in (None, {}, []) else []
    out = []
    for k, v in ev.items():
        if k.endswith("_at") and isinstance(v, dict):
            out.append((k, _loc(v) or fmt(v)))
        elif isinstance(v, list) and len(v) > 8:
            out.append((k, f"{len(v)} items: " + fmt(v[:8], limit=120) + " ..."))
        else:
            out.append((k, fmt(v, limit=200)))
        if len(out) >= limit:
            out.append(("...", f"{len(ev) - limit} more"))
            break
    return out


def _kernels(m: dict) -> tuple[Any, Any]:
    k = m.get("attention_kernels")
    if isinstance(k, dict) and ("counts" in k or "fallbacks" in k):
        return k.get("counts"), k.get("fallbacks")
    return k, None


def _error_text(e: Any) -> str | None:
    if e is None:
        return None
    if isinstance(e, dict):
        s = f"{e.get('type', 'error')}: {e.get('message', '')}"
        if e.get("stage"):
            s += f" (while computing {e['stage']}"
            s += f", after {e['last_recorded']})" if e.get("last_recorded") else ")"
        return s
    return str(e)


PROVENANCE = [
    # label, getter, highlight differences
    ("pipeline", lambda m: m.get("pipeline"), False),  # differs by design
    ("model", lambda m: m.get("model"), True),
    ("config", lambda m: m.get("config"), True),
    ("weights sha256", lambda m: m.get("weights_sha256"), True),
    ("weights", lambda m: m.get("weights"), True),
    ("noise fingerprint", lambda m: (m.get("noise") or {}).get("fingerprint") if isinstance(m.get("noise"), dict)
     else m.get("noise"), True),
    ("noise source", lambda m: (m.get("noise") or {}).get("source") if isinstance(m.get("noise"), dict) else None,
     True),
    ("dtypes", lambda m: m.get("dtypes"), True),
    ("precision", lambda m: m.get("precision"), True),
    ("device", lambda m: m.get("device"), True),
    ("attention (requested)", lambda m: m.get("attention"), True),
    ("attention kernels that ran (counts)", lambda m: _kernels(m)[0], True),
    ("attention fallbacks", lambda m: _kernels(m)[1] or None, True),
    ("n_timesteps", lambda m: m.get("n_timesteps"), True),
    ("t_scheduler", lambda m: m.get("t_scheduler"), True),
    ("cfg_rate", lambda m: m.get("cfg_rate"), True),
    ("sigma_min", lambda m: m.get("sigma_min"), True),
    ("streaming", lambda m: m.get("streaming"), True),
    ("finalize", lambda m: m.get("finalize"), True),
    ("sample rate", lambda m: m.get("sample_rate"), True),
    ("inputs", lambda m: m.get("inputs"), True),
    ("torch", lambda m: (m.get("env") or {}).get("torch") if isinstance(m.get("env"), dict) else None, True),
    ("git SHA", lambda m: (m.get("env") or {}).get("git_sha") if isinstance(m.get("env"), dict) else None, True),
    ("python", lambda m: (m.get("env") or {}).get("python") if isinstance(m.get("env"), dict) else None, True),
    ("threads", lambda m: (m.get("env") or {}).get("threads") if isinstance(m.get("env"), dict) else None, True),
    ("profile", lambda m: m.get("profile"), True),
    ("switches", lambda m: m.get("switches"), True),
    ("faults", lambda m: m.get("faults"), True),
    ("compile", lambda m: m.get("compile"), True),
    ("status", lambda m: m.get("status"), True),
    ("error", lambda m: _error_text(m.get("error")), True),
    ("started", lambda m: m.get("started"), False),
    ("seconds", lambda m: m.get("seconds"), False),
]
_PROV_KEYS = {"pipeline", "model", "config", "weights_sha256", "weights", "noise", "dtypes", "precision", "device",
              "attention", "attention_kernels", "n_timesteps", "t_scheduler", "cfg_rate", "sigma_min", "streaming",
              "finalize", "sample_rate", "inputs", "env", "profile", "switches", "faults", "compile", "status",
              "error", "started", "seconds", "stage_order"}


def provenance_rows(meta: dict) -> tuple[list[dict], list[dict]]:
    ref = meta.get("ref") if isinstance(meta.get("ref"), dict) else {}
    cand = meta.get("cand") if isinstance(meta.get("cand"), dict) else {}
    rows = []
    for label, get, hl in PROVENANCE:
        a, b = get(ref), get(cand)
        if a is None and b is None:
            continue
        ta, tb = fmt(a, limit=400), fmt(b, limit=400)
        rows.append({"label": label, "ref": ta, "cand": tb, "differs": hl and ta != tb})
    other = []
    for k in sorted(set(ref) | set(cand)):
        if k in _PROV_KEYS:
            continue
        ta, tb = fmt(ref.get(k), limit=400), fmt(cand.get(k), limit=400)
        other.append({"label": k, "ref": ta, "cand": tb, "differs": ta != tb})
    return rows, other


def _stage_row(s: StageResult, first: str | None) -> dict:
    m = s.metrics or {}
    sp = m.get("special") or {}
    name = s.name
    if m.get("kind") == "int" and isinstance(m.get("first_mismatch"), dict):
        fm = m["first_mismatch"]
        maxd = f"{m.get('n_mismatch')} mismatches; first at {fmt(fm.get('index'))}: {fmt(fm.get('ref'))} vs " \
               f"{fmt(fm.get('cand'))}"
    else:
        maxd = fmt(m.get("max_abs_err"), sp, "max_abs_err") if m else "-"
        loc = _loc(m.get("max_abs_err_at"), name)
        if loc:
            maxd += f" @ {loc}"
    min_atol = s.min_atol_to_pass if s.judged else m.get("min_atol_to_pass")
    atol_txt = fmt(min_atol, sp, "min_atol_to_pass") if (min_atol is not None or "min_atol_to_pass" in sp) else "-"
    if atol_txt == "+inf":
        atol_txt = "none (non-finite)"
    norms = [f"{n.get('kind')}: {n.get('detail')}" for n in s.normalisations if isinstance(n, dict)]
    rs, cs = s.ref_stats or {}, s.cand_stats or {}
    nf = []
    for side, st in (("ref", rs), ("cand", cs)):
        k = (st.get("nan_count") or 0) + (st.get("inf_count") or 0)
        if k:
            nf.append(f"{side}: {k} NaN/Inf")
    detail = s.detail or ""
    if s.arbiter:
        detail += f" [arbiter: {fmt(s.arbiter)}]"
    return {"name": name, "status": s.status, "statistic": s.statistic or "-",
            "value": fmt(s.value), "limit": fmt(s.limit), "maxdiff": maxd, "min_atol": atol_txt,
            "min_rtol": fmt(s.min_rtol_to_pass, sp, "min_rtol_to_pass"), "norms": norms, "nonfinite": nf,
            "detail": detail, "first": first is not None and name == first,
            "shape": fmt(rs.get("shape") or cs.get("shape"))}


def stage_groups(stages: list[StageResult], first: str | None) -> list[dict]:
    """Stage rows in pipeline order; a whole passing ODE step becomes one collapsible group."""
    groups: list[dict] = []
    i = 0
    while i < len(stages):
        st = parse_step(stages[i].name)
        if st is None:
            groups.append({"collapsible": False, "rows": [_stage_row(stages[i], first)]})
            i += 1
            continue
        k = st[0]
        grp = []
        while i < len(stages) and (parse_step(stages[i].name) or (None,))[0] == k:
            grp.append(stages[i])
            i += 1
        ok = all(g.ok for g in grp) and first not in [g.name for g in grp]
        rows = [_stage_row(g, first) for g in grp]
        if ok:
            errs = [(g.metric("max_abs_err"), g.name) for g in grp]
            errs = [e for e in errs if isinstance(e[0], (int, float))]
            worst = max(errs) if errs else None
            summary = f"{len(grp)} stages pass" + (f"; worst max |diff| {fmt(worst[0])} ({worst[1]})" if worst else "")
            groups.append({"collapsible": True, "id": f"step-{k}", "label": f"step{k}.*", "summary": summary,
                           "rows": rows})
        else:
            groups.append({"collapsible": False, "rows": rows})
    return groups


def _kv_rows(d: dict | None, skip=("special",)) -> list[tuple[str, str]]:
    if not isinstance(d, dict):
        return []
    sp = d.get("special") or {}
    return [(k, fmt(v, sp, k, limit=300)) for k, v in d.items() if k not in skip]


def _stats_table(rs: dict | None, cs: dict | None) -> list[tuple[str, str, str]]:
    keys = list(dict.fromkeys(list((rs or {}).keys()) + list((cs or {}).keys())))
    rsp, csp = (rs or {}).get("special") or {}, (cs or {}).get("special") or {}
    return [(k, fmt((rs or {}).get(k), rsp, k) if rs else "-", fmt((cs or {}).get(k), csp, k) if cs else "-")
            for k in keys if k != "special"]


def raw_stats(stages: list[StageResult]) -> list[dict]:
    """Everything the result holds about each stage (the step-local stages' rows are in the stage section)."""
    out = []
    for s in stages:
        m = s.metrics
        out.append({"name": str(s.name), "status": s.status,
                    "stats": _stats_table(s.ref_stats, s.cand_stats),
                    "metrics": "\n".join(f"{k}: {v}" for k, v in _kv_rows(m)) if m else "",
                    "metrics_special": fmt((m or {}).get("special")) if (m or {}).get("special") else None,
                    "rule": fmt(s.rule, limit=400) if s.rule else None,
                    "first_values": fmt(s.first_values, limit=400) if s.first_values else None,
                    "problem": fmt(s.problem, limit=400) if s.problem else None,
                    "detail": s.detail})
    return out


def nonfinite_rows(stages: list[StageResult]) -> list[dict]:
    rows = []
    seen_first = set()
    for s in stages:
        for side in ("ref", "cand"):
            st = (s.ref_stats if side == "ref" else s.cand_stats) or {}
            nan, inf = st.get("nan_count") or 0, st.get("inf_count") or 0
            if nan or inf:
                rows.append({"stage": s.name, "side": "reference" if side == "ref" else "candidate",
                             "nan": nan, "posinf": st.get("posinf_count") or 0, "neginf": st.get("neginf_count") or 0,
                             "numel": st.get("numel"), "first": fmt(st.get("first_nonfinite_index")),
                             "origin": side not in seen_first})
                seen_first.add(side)
    return rows


def audio_metric_tables(audio: dict | None) -> dict:
    if not audio:
        return {"available": False, "reason": "no audio section in the result (no audio on one side, or audio "
                                              "metrics were not computed)"}
    if audio.get("comparable") is False:
        return {"available": False, "reason": audio.get("reason") or "audio not comparable"}
    sections = []
    for key, title in (("waveform", "waveform"), ("spectral", "log-spectral distance"), ("mel", "log-mel / MCD"),
                       ("f0", "F0"), ("clicks", "clicks (high-frequency bursts)"), ("length", "length")):
        d = audio.get(key)
        if isinstance(d, dict):
            sections.append({"title": title, "rows": _kv_rows(d)})
        elif key != "length":
            sections.append({"title": title, "rows": [], "note": "not computed"})
    side_rows = []
    r, c = audio.get("ref") or {}, audio.get("cand") or {}
    for k in list(dict.fromkeys(list(r) + list(c))):
        if k == "special":
            continue
        rv, cv = r.get(k), c.get(k)
        if isinstance(rv, dict) or isinstance(cv, dict):
            for kk in list(dict.fromkeys(list(rv or {}) + list(cv or {}))):
                if kk == "special":
                    continue
                side_rows.append((f"{k}.{kk}", fmt((rv or {}).get(kk)), fmt((cv or {}).get(kk))))
        else:
            side_rows.append((k, fmt(rv, r.get("special"), k), fmt(cv, c.get("special"), k)))
    return {"available": True, "sections": sections, "sides": side_rows, "notes": audio.get("notes") or [],
            "finite_ok": audio.get("finite_ok"), "sr": audio.get("sr")}


# ---------------------------------------------------------------------------------------------
# tensors and figures for the page

@dataclass
class _Media:
    steps: dict
    mel: dict
    f0: dict
    waveform: dict
    listen: dict


def _step_limits(result: Comparison) -> dict[str, float]:
    out = {}
    for f in STEP_OUTPUTS:
        s = result.stage(f"step1.{f}")
        rule = (s.rule if s else None) or {}
        if rule.get("statistic") == "elementwise" and isinstance(rule.get("atol"), (int, float)) and rule["atol"] > 0:
            out[f] = float(rule["atol"])
    return out


def _safe(fn, *a, **k) -> tuple[Any, str | None]:
    """A figure that fails to draw becomes a note; it never takes the report down."""
    try:
        return fn(*a, **k), None
    except Exception as exc:  # noqa: BLE001 - plotting foreign data must not crash the report
        return None, f"could not draw this figure: {type(exc).__name__}: {exc}"


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _media(result: Comparison, rt: dict | None, ct: dict | None, budget: int, tensor_note: str | None) -> _Media:
    rt, ct = rt or {}, ct or {}
    have = bool(rt) or bool(ct)
    no_t = tensor_note or "no trace tensors were given to the report (only the comparison result): plots omitted"
    steps = result.steps
    if steps:
        img, err = _safe(plot_steps, steps, _step_limits(result))
        step_sec = {"img": img, "note": err, "rows": [r.to_json() for r in steps]}
    else:
        step_sec = {"img": None, "note": "no ODE steps in either trace (e.g. an external dump without per-step "
                                         "tensors)", "rows": []}

    # mel
    mel_sec: dict = {"img": None, "note": None}
    rm, cm = _mel2d(rt.get("flow_mel")), _mel2d(ct.get("flow_mel"))
    label = "flow_mel"
    pf: list[tuple[str, np.ndarray]] = []
    st = result.stage("flow_mel")
    if st and st.per_frame_error:
        pf.append(("flow_mel: mean |cand - ref| per frame", _listvec(st.per_frame_error)))
    apf = (result.audio or {}).get("per_frame") or {}
    if rm is None and not have:
        mel_sec["note"] = no_t
    elif rm is None and rt.get("audio") is not None:
        try:  # an external dump without flow_mel: the mel of each side's audio, by the pipeline's recipe
            from .melspec import audio_mel

            rm = audio_mel(_vec(rt["audio"])).astype(np.float64)
            cm = audio_mel(_vec(ct["audio"])).astype(np.float64) if ct.get("audio") is not None else None
            label = "mel of the audio (pipeline recipe; no flow_mel in the traces)"
            if apf.get("logmel_l1") is not None:
                pf.append(("audio log-mel L1 per frame", _listvec(apf["logmel_l1"])))
        except Exception as exc:  # noqa: BLE001
            mel_sec["note"] = f"no flow_mel in the traces and the audio mel failed: {exc}"
    if rm is not None:
        if apf.get("lsd_db") is not None:
            pf.append(("audio log-spectral distance (dB)", _listvec(apf["lsd_db"])))
        img, err = _safe(plot_mel, rm, cm, pf[:2], label)
        mel_sec["img"] = img
        notes = [err] if err else []
        if cm is None:
            notes.append("the candidate has no " + label.split(" ")[0] + ": reference only")
        elif cm.shape != rm.shape:
            notes.append(f"shapes differ (reference {list(rm.shape)}, candidate {list(cm.shape)}): no difference "
                         f"image")
        mel_sec["note"] = "; ".join(notes) or None
    elif mel_sec["note"] is None:
        mel_sec["note"] = "no flow_mel (and no audio) in the reference trace"

    # F0
    f0_sec: dict = {"img": None, "note": None}
    rf, cf = _vec(rt.get("f0")), _vec(ct.get("f0"))
    thr = ((result.audio or {}).get("f0") or {}).get("voiced_threshold_hz")
    if thr is None:
        from .audio_metrics import VOICED_THRESHOLD_HZ

        thr = VOICED_THRESHOLD_HZ
    if rf is None:
        f0_sec["note"] = no_t if not have else "no f0 in the reference trace"
    else:
        f0_sec["img"], err = _safe(plot_f0, rf, cf, float(thr))
        f0_sec["note"] = _join(err, "the candidate has no f0: reference only" if cf is None else
                               f"F0 lengths differ ({rf.size} vs {cf.size} frames): no difference curve"
                               if cf.size != rf.size else None)
    f0_sec["threshold"] = fmt(thr)

    # waveform and players
    audio = result.audio or {}
    ref_meta = result.metadata.get("ref")
    sr = audio.get("sr") or (ref_meta.get("sample_rate") if isinstance(ref_meta, dict) else None)
    sr = int(sr) if isinstance(sr, (int, float)) and sr > 0 else 24000
    ra, ca = _vec(rt.get("audio")), _vec(ct.get("audio"))
    wav_sec: dict = {"img": None, "note": None}
    listen: dict = {"windows": [], "note": None, "sanitised": [], "missing": None}
    if ra is None:
        wav_sec["note"] = no_t if not have else "no audio in the reference trace"
        listen["missing"] = wav_sec["note"]
    else:
        pos = _worst_positions(result, sr, ra.size if ca is None else min(ra.size, ca.size))
        worst, wl = pos[0] if pos else (None, "")
        wav_sec["img"], err = _safe(plot_waves, ra, ca, sr, worst, wl)
        no_cand = "the candidate has no audio (it crashed or did not dump it): reference only" if ca is None else None
        wav_sec["note"] = _join(err, no_cand)
        lp, err = _safe(audio_players, result, ra, ca, sr, budget)
        if lp:
            listen.update(lp)
        listen["missing"] = _join(err, no_cand)
    return _Media(step_sec, mel_sec, f0_sec, wav_sec, listen)


# ---------------------------------------------------------------------------------------------
# rendering

def _token(what: str) -> str:
    return f"@@{what}-{os.urandom(8).hex()}@@"


def _write_with_size(html: str, path: Path, token: str) -> int:
    """Write ``html`` with ``token`` replaced by the page's own final size: the smallest size whose text
    fits, padded with spaces (collapsed by the browser) so the stated number is exact."""
    base = len(html.encode("utf-8")) - len(token.encode("utf-8"))
    size = base + len(_size_text(base))
    while base + len(_size_text(size)) > size:
        size += 1
    text = _size_text(size)
    data = html.replace(token, text + " " * (size - base - len(text))).encode("utf-8")
    path.write_bytes(data)
    return len(data)


def _tensors_from_sources(result: Comparison) -> tuple[dict | None, dict | None, str | None]:
    src = result.sources
    r, c = src.get("ref"), src.get("cand")
    if not (isinstance(r, str) and isinstance(c, str)):
        return None, None, None
    from .ingest import load

    out, notes = [], []
    for p in (r, c):
        if not Path(p).exists():
            out.append(None)
            continue
        try:
            out.append(load(p).tensors)
        except Exception as exc:  # noqa: BLE001 - the result is still worth a report
            out.append(None)
            notes.append(f"{p}: {exc}")
    if out[0] is None and out[1] is None:
        return None, None, ("the traces named in the result (" + ", ".join(notes or [r, c]) +
                            ") could not be read: plots omitted") if notes else None
    return out[0], out[1], ("; ".join(notes) if notes else None)


def build_report(result: Comparison, path, case=None, ref_tensors: dict | None = None, cand_tensors: dict | None = None,
                 *, audio_budget: int = DEFAULT_AUDIO_BUDGET, load_sources: bool = True,
                 notes: list[str] | None = None) -> Path:
    """Write one self-contained HTML report for a comparison result and return its path.

    Tensors for the plots come from ``case.ref_tensors``/``case.cand_tensors``, the explicit dicts, or
    (``load_sources``) the trace files named in ``result["sources"]`` when they exist. The file size is
    printed in the page footer; ``audio_budget`` bounds the embedded WAVs (bytes of base64 for all three).
    """
    t0 = time.perf_counter()
    if not isinstance(result, Comparison):
        raise InputError(f"build_report: expected a parity.result.Comparison, got {type(result).__name__}")
    path = Path(path)
    page_notes = list(notes or [])
    rt = ref_tensors if ref_tensors is not None else (getattr(case, "ref_tensors", None) if case else None)
    ct = cand_tensors if cand_tensors is not None else (getattr(case, "cand_tensors", None) if case else None)
    tensor_note = None
    if not rt and not ct and load_sources:
        rt, ct, tensor_note = _tensors_from_sources(result)
        if tensor_note and (rt or ct):
            page_notes.append(tensor_note)
    media = _media(result, rt, ct, audio_budget, tensor_note)

    fd = result.first_divergence
    first = fd.stage if fd else None
    findings = []
    for f in result.findings:
        findings.append({"severity": f.severity, "code": f.code, "stage": f.stage, "message": f.message,
                         "evidence": _evidence(f.evidence)})
    crash = next((f for f in result.findings if f.code == "candidate_crashed"), None)
    if crash is not None:
        ev = crash.evidence
        crash = {"stage": crash.stage, "message": crash.message, "last_recorded": ev.get("last_recorded"),
                 "missing": [str(m) for m in ev.get("missing_stages") or []]}
    stages = result.stages
    local = result.local
    prov, prov_other = provenance_rows(result.metadata)
    case_info = dict(result.case or {})
    title = getattr(case, "name", None) if case is not None else None
    src = result.sources
    if not title:
        title = f"{Path(str(src.get('cand') or 'candidate')).stem} vs {Path(str(src.get('ref') or 'reference')).stem}"
    nf_find = [f for f in findings if f["code"] in NONFINITE_CODES]
    token, t_token = _token("SIZE"), _token("SECONDS")  # nonces: no trace string can collide with them
    ctx = {
        "title": title,
        "verdict": result.verdict,
        "first": fd.headline_json() if fd else None,
        "crash": crash,
        "findings": findings,
        "counts": {s: sum(1 for f in findings if f["severity"] == s) for s in ("error", "failure", "warning", "info")},
        "sources": {k: src.get(k) for k in ("ref", "cand", "local", "fp64") if src.get(k)},
        "context": result.context,
        "policy_sources": result.policy.get("sources") or [],
        "summary": result.summary,
        "case": case_info,
        "seconds": {k: fmt(v) for k, v in (getattr(case, "seconds", None) or {}).items()},
        "prov": prov,
        "prov_other": prov_other,
        "groups": stage_groups(stages, first),
        "local_rows": [_stage_row(s, None) for s in local],
        "normalisations": [n for n in result.normalisations if isinstance(n, dict)],
        "first_in_table": any(s.name == first for s in stages),
        "media": media,
        "nonfinite": nonfinite_rows(stages),
        "nf_findings": nf_find,
        "audio_tables": audio_metric_tables(result.audio),
        "raw": raw_stats(stages),
        "notes": page_notes,
        "section_ids": SECTION_IDS,
        "size_token": token,
        "seconds_token": t_token,
        "schema": result.schema,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    env = jinja_env()
    html = env.get_template("report.html.j2").render(**ctx)
    html = html.replace(t_token, f"{time.perf_counter() - t0:.2f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_with_size(html, path, token)
    return path


def build_summary_page(cases, path) -> Path:
    """One page with a row per case, linking (relative links) to each case's report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in cases:
        r = c.result
        fd = r.first_divergence.headline_json() if r.first_divergence else {}
        rep = getattr(c, "report", None)
        link = None
        if rep:
            link = quote(os.path.relpath(Path(rep).resolve(), path.resolve().parent).replace(os.sep, "/"), safe="/")
        secs = getattr(c, "seconds", None) or {}
        rows.append({"name": c.name, "bundle": c.bundle, "profile": c.profile,
                     "mode": "streaming" if c.streaming else "offline", "verdict": r.verdict,
                     "stage": fd.get("stage"), "code": fd.get("code"), "message": fd.get("message"),
                     "time": f"{sum(v for v in secs.values() if isinstance(v, (int, float))):.1f} s" if secs else "-",
                     "link": link})
    verdicts = [r["verdict"] for r in rows]
    overall = aggregate_verdict(verdicts)
    token = _token("SIZE")
    html = jinja_env().get_template("summary.html.j2").render(
        rows=rows, verdict=overall, n_pass=verdicts.count("pass"), n=len(rows), size_token=token,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    _write_with_size(html, path, token)
    return path


# ---------------------------------------------------------------------------------------------
# from saved inputs (parity-report)

def report_from_saved(inputs: list[str], out=None, policy=None, maps=None, allow_trim: bool = False):
    """``parity-report``: REF_TRACE CAND_TRACE (compare, then report), or RESULT.json [REF_TRACE CAND_TRACE]
    (the saved result; plots from the given traces or from the result's sources when they exist).
    Returns ``(path, result)``."""
    from .aliases import parse_maps
    from .ingest import load

    inputs = [str(i) for i in inputs or []]
    mp = maps if isinstance(maps, dict) else parse_maps(maps)
    is_json = bool(inputs) and inputs[0].lower().endswith(".json")
    if is_json and len(inputs) in (1, 3):
        result = read_json(Path(inputs[0]))
        notes = []
        if len(inputs) == 3:
            rl, cl = load(inputs[1], mp), load(inputs[2], mp)
            rt, ct = rl.tensors, cl.tensors
            ref_name, cand_name = inputs[1], inputs[2]
            src = result.sources
            for side, given in (("ref", inputs[1]), ("cand", inputs[2])):
                if src.get(side) and Path(str(src[side])).name != Path(given).name:
                    notes.append(f"the {side} trace given ({given}) is not the one the result was computed from "
                                 f"({src[side]})")
        else:
            rt, ct, tn = _tensors_from_sources(result)
            if tn:
                notes.append(tn)
            if not rt and not ct:
                notes.append("no traces given and none found at the result's sources: plots omitted")
            src = result.sources
            ref_name = str(src.get("ref") or "reference")
            cand_name = str(src.get("cand") or Path(inputs[0]).stem)
        default = Path("reports") / f"{Path(cand_name).stem}-vs-{Path(ref_name).stem}.html"
        path = build_report(result, Path(out) if out else default, ref_tensors=rt or {}, cand_tensors=ct or {},
                            load_sources=False, notes=notes)
        return path, result
    if len(inputs) == 2 and not any(i.lower().endswith(".json") for i in inputs):
        from .compare import CompareOptions, compare_loaded
        from .policy import load_policy

        rl, cl = load(inputs[0], mp), load(inputs[1], mp)
        result = compare_loaded(rl, cl, load_policy(policy), CompareOptions(allow_trim=allow_trim))
        default = Path("reports") / f"{Path(inputs[1]).stem}-vs-{Path(inputs[0]).stem}.html"
        path = build_report(result, Path(out) if out else default, ref_tensors=rl.tensors, cand_tensors=cl.tensors,
                            load_sources=False)
        return path, result
    raise InputError("parity-report: expected REF_TRACE CAND_TRACE, or RESULT.json [REF_TRACE CAND_TRACE] "
                     f"(got {len(inputs)} argument(s): {' '.join(inputs) or 'none'})")


__all__ = ["build_report", "build_summary_page", "report_from_saved", "SECTION_IDS", "DEFAULT_AUDIO_BUDGET"]
