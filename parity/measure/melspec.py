"""The mel of an audio stage, by the pipeline's own recipe (:func:`reference.mel.mel_spectrogram` with the
default :class:`reference.config.MelConfig`): the one helper for every place that needs it (the audio
stages' log-mel/MCD statistics, the audio section's mel metrics, the report's mel plot of a dump without
``flow_mel``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def audio_mel(wave: Any) -> np.ndarray:
    """Log-mel ``[n_mels, frames]`` (float32) of a mono wave (torch or numpy, any leading singleton dims).
    Non-finite samples count as 0 (callers that judge audio check finiteness first)."""
    from reference.config import MelConfig
    from reference.mel import mel_spectrogram

    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().double().numpy()
    w = np.nan_to_num(np.asarray(wave, dtype=np.float64).reshape(-1)).astype(np.float32)
    return mel_spectrogram(torch.from_numpy(w)[None], MelConfig())[0].numpy()
