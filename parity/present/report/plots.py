"""The report's figures: matplotlib's object API on the Agg canvas (no pyplot state), returned as PNG data
URIs. They plot trace tensors and the per-frame vectors of the result; they compute no metric."""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

import numpy as np

from ...measure.audio_metrics import MEL_HOP
from ...result import StepRow
from ...stages import STEP_OUTPUTS

FIG_W = 8.0  # inches at 100 dpi: 800 px wide figures
DPI = 100


# tensors -> numpy (for plots only)


def to_numpy(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach()
        if t.is_floating_point():
            t = t.double()
        return t.cpu().numpy()
    return np.asarray(t)


def mel2d(t: Any) -> np.ndarray | None:
    a = to_numpy(t)
    if a is None:
        return None
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a.astype(np.float64) if a.ndim == 2 else None


def vec(t: Any) -> np.ndarray | None:
    a = to_numpy(t)
    if a is None:
        return None
    return a.reshape(-1).astype(np.float64)


def listvec(v: Any) -> np.ndarray | None:
    """A per-frame vector from the result (None entries stood for non-finite values) as float64."""
    if v is None:
        return None
    return np.array([np.inf if x is None else float(x) for x in v], dtype=np.float64)


def finite_nan(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


# figures


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


def _step_groups(steps: list[StepRow]) -> list[tuple[str | None, list[StepRow]]]:
    """The rows of one call (label None), or of each recorded chunk of a streaming session ("chunk c")."""
    chunks = sorted({r.chunk for r in steps if r.chunk is not None})
    if not chunks:
        return [(None, list(steps))]
    return [(f"chunk {c}", [r for r in steps if r.chunk == c]) for c in chunks]


def plot_steps(steps: list[StepRow], step_limits: dict[str, float]) -> str:
    """Accumulated and local max |diff| of v1, v2, v_cfg, x per step (log y), growth factor and CFG gaps. A
    streaming session's rows carry their chunk: one line (one colour) per recorded chunk."""
    from matplotlib.ticker import MaxNLocator, NullLocator

    def steps_axis(ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)

    groups = _step_groups(steps)
    chunked = groups[0][0] is not None

    def label(what: str, g: str | None) -> str:
        return f"{g}: {what}" if g else what

    fig = _figure(8.4)
    gs = fig.add_gridspec(3, 2, hspace=0.55, wspace=0.25, left=0.08, right=0.98, top=0.94, bottom=0.07)
    for i, f in enumerate(STEP_OUTPUTS):
        ax = fig.add_subplot(gs[i // 2, i % 2])
        acc_all = _logsafe([r.acc.get(f) for r in steps])
        loc_all = _logsafe([r.local.get(f) for r in steps])
        if np.all(np.isnan(acc_all)) and np.all(np.isnan(loc_all)):
            zero = any(r.acc.get(f) == 0 for r in steps)
            _no_data(ax, f"{f}: exact match at every step (0 is not drawn on a log axis)" if zero
                     else f"{f}: no errors recorded")
            ax.set_title(f"{f}: max |cand - ref|", fontsize=9)
            continue
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost most of the drawing time
        for j, (g, rows) in enumerate(groups):
            k = np.array([r.step for r in rows], dtype=float)
            acc = _logsafe([r.acc.get(f) for r in rows])
            loc = _logsafe([r.local.get(f) for r in rows])
            color_a, color_l = (f"C{j}", f"C{j}") if chunked else ("C0", "C1")
            if not np.all(np.isnan(acc)):
                ax.plot(k, acc, "o-", color=color_a, ms=4, label=label("accumulated", g))
            if not np.all(np.isnan(loc)):
                ax.plot(k, loc, "x--", color=color_l, ms=5, label=label("local (teacher-forced)", g))
            bad = np.array([r.status.get(f) == "fail" for r in rows])
            if bad.any():
                ax.plot(k[bad], np.where(np.isnan(acc[bad]), np.nanmax(acc_all) if not np.all(np.isnan(acc_all))
                                         else 1.0, acc[bad]), "s", mfc="none", mec="red", ms=9,
                        label=label("fails its rule", g))
        lim = step_limits.get(f)
        if lim:
            ax.axhline(lim, color="0.5", lw=0.8, ls=":", label=f"atol {lim:.3g}")
        ax.set_title(f"{f}: max |cand - ref|", fontsize=9)
        steps_axis(ax)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    ax = fig.add_subplot(gs[2, 0])
    if all(r.growth is None for r in steps):
        _no_data(ax, "no growth factors")
    else:
        for j, (g, rows) in enumerate(groups):
            k = np.array([r.step for r in rows], dtype=float)
            gr = np.array([np.nan if r.growth is None else float(r.growth) for r in rows])
            ax.plot(k, gr, "o-", color=f"C{j}" if chunked else "C2", ms=4, label=g)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        steps_axis(ax)
        ax.grid(True, alpha=0.3)
        if chunked:
            ax.legend(fontsize=6.5)
    ax.set_title("growth: rmse(x_k) / rmse(x_{k-1})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[2, 1])
    if all(r.cfg_gap_ref is None and r.cfg_gap_cand is None for r in steps):
        _no_data(ax, "no CFG gaps (v1/v2 not captured)")
    else:
        for j, (g, rows) in enumerate(groups):
            k = np.array([r.step for r in rows], dtype=float)
            gr = np.array([np.nan if r.cfg_gap_ref is None else float(r.cfg_gap_ref) for r in rows])
            gc = np.array([np.nan if r.cfg_gap_cand is None else float(r.cfg_gap_cand) for r in rows])
            ax.plot(k, gr, "o-", color="0.3" if not chunked else f"C{j}", ms=4, label=label("reference", g))
            ax.plot(k, gc, "x--", color="C3" if not chunked else f"C{j}", ms=5, label=label("candidate", g))
        steps_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5 if chunked else 7)
    ax.set_title("CFG gap: mean |v1 - v2|", fontsize=9)
    ax.tick_params(labelsize=7)
    if chunked:
        fig.suptitle(f"streaming session: ODE steps of {', '.join(g for g, _ in groups)}", fontsize=9)
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
        im = ax.imshow(finite_nan(m), origin="lower", aspect="auto", interpolation="nearest", cmap=mag,
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
        im = ax.imshow(finite_nan(d), origin="lower", aspect="auto", interpolation="nearest", cmap=div,
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
            target.plot(x, finite_nan(vec), "-", color=color, lw=1.0, label=label)
            bad = ~np.isfinite(vec)
            if bad.any():
                top = np.nanmax(finite_nan(vec)) if np.isfinite(vec).any() else 1.0
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


def plot_f0(ref: np.ndarray, cand: np.ndarray | None, threshold: float, title: str = "F0 (HiFT predictor output)",
            bounds: list[int] | None = None) -> str:
    """Both sides' F0 and, when they have one length, their difference. ``bounds``: frames where a streaming
    session's later calls begin (dotted lines)."""
    fig = _figure(4.6 if cand is not None and cand.size == ref.size else 2.6)
    two = cand is not None and cand.size == ref.size
    gs = fig.add_gridspec(2 if two else 1, 1, hspace=0.45, left=0.08, right=0.98, top=0.92, bottom=0.12)
    ax = fig.add_subplot(gs[0, 0])
    x = np.arange(ref.size)
    ax.plot(x, finite_nan(ref), "-", color="0.25", lw=1.2, label="reference")
    if cand is not None:
        xc = np.arange(cand.size)
        ax.plot(xc, finite_nan(cand), "--", color="C1", lw=1.2, label="candidate")
        bad = ~np.isfinite(cand)
        if bad.any():
            ax.plot(xc[bad], np.zeros(bad.sum()), "v", color="red", ms=4, label=f"candidate non-finite ({bad.sum()})")
    ax.axhline(threshold, color="C2", lw=0.8, ls=":", label=f"voiced threshold {threshold:g} Hz")
    for j, b in enumerate(bounds or []):
        ax.axvline(b, color="0.55", lw=0.7, ls=":", label="chunk boundaries" if j == 0 else None)
    ax.set_ylabel("F0 (Hz)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)
    if two:
        ax2 = fig.add_subplot(gs[1, 0], sharex=ax)
        ax2.plot(x, finite_nan(cand - ref), "-", color="C3", lw=1.0)
        ax2.axhline(0.0, color="0.5", lw=0.6)
        for b in bounds or []:
            ax2.axvline(b, color="0.55", lw=0.7, ls=":")
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
    yy[: y.size] = finite_nan(y)
    yy = yy.reshape(m, c)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN (a gap in the plot)
        lo, hi = np.nanmin(yy, axis=1), np.nanmax(yy, axis=1)
    return x[::c][:m], lo, hi


def _wave_plot(ax, x, y, color, label, lw=0.6, alpha=1.0):
    xs, a, b = _env(x, y)
    if b is None:
        ax.plot(xs, finite_nan(a), "-", color=color, lw=lw, label=label, alpha=alpha)
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
    z.plot(tz, finite_nan(ref[a:b]), "-", color="0.35", lw=0.9, label="reference")
    z.plot(tz, finite_nan(cand[a:b]), "-", color="C1", lw=0.9, label="candidate")
    z.axvline(worst / sr, color="red", lw=0.6, ls=":")
    z.set_title(f"zoom: samples {a}-{b} around sample {worst} (frame {worst // MEL_HOP}; {worst_label})",
                fontsize=9)
    z.legend(fontsize=7, loc="upper right")
    z.tick_params(labelsize=7)
    z2 = fig.add_subplot(gs[3, 0], sharex=z)
    z2.plot(tz, finite_nan(d[a:b]), "-", color="C3", lw=0.9)
    z2.axvline(worst / sr, color="red", lw=0.6, ls=":")
    z2.set_title("zoom: candidate - reference", fontsize=9)
    z2.tick_params(labelsize=7)
    z2.set_xlabel("time (s)", fontsize=8)
    return _png_uri(fig)


def plot_floor_ratios(rows: list[dict], k: float | None, first: str | None) -> str:
    """error / floor of every stage in pipeline order (log y), the gate multiplier k as a line. ``rows``: one
    per stage, ``{"name", "ratio", "status", "gate"}`` as the result holds them (ratio None: no floor ratio:
    a flat-gated stage, drawn as a grey tick at the bottom; ratio 0: identical to the reference)."""
    from matplotlib.ticker import NullLocator

    fig = _figure(3.6)
    ax = fig.add_axes((0.08, 0.36, 0.9, 0.56))
    x = np.arange(len(rows))
    r = np.array([np.nan if row["ratio"] is None else float(row["ratio"]) for row in rows], dtype=np.float64)
    pos = np.isfinite(r) & (r > 0)
    lo = float(np.nanmin(r[pos])) if pos.any() else 1e-3
    hi = float(np.nanmax(r[pos])) if pos.any() else 1.0
    bottom = min(lo, 1e-2 if k is None else k * 1e-3) / 3.0
    top = max(hi, k or 1.0) * 3.0
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom, top)
    fail = np.array([row["status"] == "fail" for row in rows])
    flat = np.array([row["gate"] != "floor" for row in rows])
    zero = np.isfinite(r) & (r == 0)
    inf = np.isinf(r)
    ok = pos & ~fail
    ax.vlines(x[pos], bottom, r[pos], color="0.8", lw=0.8)
    ax.plot(x[ok], r[ok], "o", color="C2", ms=3.5, label="within k x floor")
    if (pos & fail).any():
        ax.plot(x[pos & fail], r[pos & fail], "o", color="red", ms=4.5, label="over k x floor")
    if zero.any():
        ax.plot(x[zero], np.full(zero.sum(), bottom * 1.3), "o", mfc="none", mec="C2", ms=3.5,
                label="identical (ratio 0)")
    if inf.any():
        ax.plot(x[inf], np.full(inf.sum(), top / 1.3), "^", color="red", ms=5, label="non-finite")
    sel = flat & ~np.isfinite(r)
    if sel.any():
        ax.plot(x[sel], np.full(sel.sum(), bottom * 1.3), "|", color="0.45" if not fail[sel].any() else "0.45",
                ms=8, label="flat tolerance (no floor ratio)")
        if (sel & fail).any():
            ax.plot(x[sel & fail], np.full((sel & fail).sum(), bottom * 1.3), "x", color="red", ms=6,
                    label="flat tolerance failed")
    if k is not None:
        ax.axhline(k, color="C3", lw=0.9, ls="--", label=f"gate k = {k:g}")
    ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
    names = [row["name"] for row in rows]
    if first in names:
        ax.axvline(names.index(first), color="red", lw=0.7, alpha=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=5 if len(rows) > 60 else 6.5)
    ax.set_xlim(-1, len(rows))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("error / floor", fontsize=8)
    ax.set_title("error / floor per stage, pipeline order (the deciding statistic; from the comparison result)",
                 fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", ncol=3)
    return _png_uri(fig)
