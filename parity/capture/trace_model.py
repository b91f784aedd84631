"""The reference model a saved trace names (its provenance's ``model`` field), loaded here: what the checks that
re-run the reference for a saved pair need (the chunk-mask check, the time-grid check, a floor computed for a
reference trace)."""

from __future__ import annotations

from pathlib import Path


def model_from_provenance(ref_meta: dict, *, rebuild_noise: bool = False):
    """``(model, None)``: the reference model a trace's provenance names (``model`` = ``preset:NAME`` or
    ``model_dir:PATH``), loaded here and with the trace's weights hash; else ``(None, why not)``. ``rebuild_noise``:
    also refuse a trace whose noise came from somewhere this model cannot rebuild it (a noise file, a port's own)."""
    mid = str(ref_meta.get("model") or "")
    noise = ref_meta.get("noise") if isinstance(ref_meta.get("noise"), dict) else {}
    src = str(noise.get("source") or "")
    if rebuild_noise and src and not src.startswith("upstream") and "recipe" not in src:
        return None, f"its noise came from {src!r}, which cannot be rebuilt here"
    kind, _, name = mid.partition(":")
    if kind == "model_dir" and name and not Path(name).is_dir():
        return None, f"its model directory {name} does not exist here"
    try:
        from reference.model import Token2Wav

        if kind == "preset" and name:
            model = Token2Wav.from_preset(name)
        elif kind == "model_dir" and name:
            model = Token2Wav.from_model_dir(name)
        else:
            return None, (f"the reference trace does not name a model this harness can load (model "
                          f"{mid or 'not recorded'})")
    except Exception as exc:  # noqa: BLE001 - a model that cannot be loaded here: say so, compare the rest
        return None, f"the reference model {mid} could not be loaded here ({type(exc).__name__}: {str(exc)[:160]})"
    want = ref_meta.get("weights_sha256")
    have = model.provenance(streaming=True)["weights_sha256"]
    if want and str(want) != have:
        return None, f"the reference model {mid} loaded here has other weights ({have}) than the trace ({want})"
    return model, None
