"""The report's audio players: 16-bit PCM WAV data URIs (non-finite samples -> 0, clipped to [-1, 1], both
counted), whole signals or, above the audio budget, windows around the positions the result names as worst."""

from __future__ import annotations

import base64
import io

import numpy as np

from ...measure.audio_metrics import MEL_HOP
from ..render import size_text
from ...result import Comparison

DEFAULT_AUDIO_BUDGET = 8 * 1024 * 1024  # bytes of base64 WAV data for the three players together
WINDOW_S = 0.5  # half-width of an audio window embedded above the budget
MAX_WINDOWS = 4



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


def worst_positions(result: Comparison, sr: int, n: int) -> list[tuple[int, str]]:
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
        pos = worst_positions(result, sr, n_max) or [(0, "start of the audio (no worst position in the result)")]
        for p, label in pos:
            a, b = max(0, p - half), min(n_max, p + half)
            if any(a < w["stop"] and b > w["start"] for w in windows):
                continue
            windows.append({"label": f"{a / sr:.2f}-{b / sr:.2f} s around {label} (sample {p})", "start": a,
                            "stop": b})
            if len(windows) >= cap:
                break
        note = (f"The three WAVs would take {size_text(total)} embedded, over the audio budget of "
                f"{size_text(budget)}: only {len(windows)} window(s) of +-{WINDOW_S:g} s around the worst "
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
