"""The domain statistics of the stages they fit, computed in one place for the comparison (as metrics the policy
can gate on) and for the noise floor (what its members do there): F0 in cents, Hz and voicing for ``f0``;
log-mel L1 (and MCD when asked) through the pipeline's own mel recipe (:func:`parity.measure.melspec.audio_mel`) for
``audio`` and ``audio_preclamp``. Pure measurement: no limits here."""

from __future__ import annotations

import torch

from reference.config import MelConfig

F0_KEYS = ("f0_rmse_cents", "f0_max_abs_cents", "gpe", "vde", "vde_count", "f0_mae_hz", "f0_max_abs_hz",
           "both_voiced")
AUDIO_STAGES = ("audio", "audio_preclamp")
# a wave shorter than one analysis window of the mel recipe (n_fft samples) has no mel frame
MIN_AUDIO_SAMPLES = MelConfig().n_fft


def domain_statistics(name: str, ref: torch.Tensor, other: torch.Tensor, *, mcd: bool = False) -> dict:
    """The domain statistics of stage ``name`` (a canonical single-call name) between ``ref`` and ``other``
    (finite tensors of the same number of elements); empty for a stage they do not fit. ``mcd``: add the mel
    cepstral distortion of the two log-mels (``mcd_db``)."""
    from . import audio_metrics as A

    if name == "f0":
        m = A.f0_metrics(ref.detach().double().reshape(-1).numpy(), other.detach().double().reshape(-1).numpy())
        return {k: m[k] for k in F0_KEYS}
    if name in AUDIO_STAGES and ref.numel() >= MIN_AUDIO_SAMPLES:
        from .melspec import audio_mel

        mr, mo = audio_mel(ref), audio_mel(other)
        ld = A.logmel_distance(mr, mo)
        out = {"logmel_l1": ld["logmel_l1"], "logmel_l1_max": ld["logmel_l1_max"], "logmel_worst_frame": ld["worst_frame"]}
        if mcd:
            out["mcd_db"] = A.mcd(mr, mo)["mcd_db"]
        return out
    return {}
