"""Shared fixed noise: every random tensor the token2wav pipeline consumes, made by upstream's recipe.

Upstream draws its noise once, at construction, from torch's CPU generator seeded 0:

1. ``CausalConditionalCFM.__init__``: ``set_all_random_seed(0)``; ``rand_noise = randn(1, 80, 15000)``.
2. The flow's ``nn.Embedding(6561, 80)`` and ``nn.Linear(192, 80)``, then HiFT's F0 predictor convs
   ``Conv1d(80, 512, 4)``, 4 x ``Conv1d(512, 512, 3)`` and ``Linear(512, 1)`` are default-initialised:
   they only consume the generator (their values are replaced by the checkpoint).
3. ``SineGen2``: ``rand_ini = rand(1, 9)`` with ``[0, 0] = 0``; ``sine_waves = rand(1, 7_200_000, 9)``
   (uniform [0, 1), not Gaussian).
4. ``nn.Linear(9, 1)`` (``m_source.l_linear``), then ``uv = rand(1, 7_200_000, 1)`` (unused by the generator).

torch's CPU ``rand`` fills serially from the Mersenne Twister, so the first L rows of the 7.2M x 9
buffer equal ``rand(1, L, 9)`` drawn from the same generator state: we keep that state and draw only
the prefix a run needs (260 MB and ~1.8 s for the whole buffer, ~60 ms for 10 s of audio).

The pipeline never draws random numbers itself: it asks this object. The object round-trips through
safetensors so that another implementation (a Rust port, a candidate) gets exactly the same noise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import InputError

FLOW_NOISE_FRAMES = 15000  # 300 s of mel at 50 Hz
HIFT_NOISE_SAMPLES = 7_200_000  # 300 s at 24 kHz
N_HARMONIC_ROWS = 9  # nb_harmonics + 1

# tensor names in the noise safetensors file
K_FLOW = "rand_noise"
K_RAND_INI = "hift_rand_ini"
K_SINE = "hift_sine_noise"


def _consume_default_inits(g: torch.Generator) -> None:
    """Consume the generator exactly as the default initialisers of the modules built between the
    CFM and SineGen2 do (weight first, then bias, per module; see the module docstring)."""
    torch.empty(6561, 80).normal_(generator=g)  # flow.input_embedding (nn.Embedding -> normal_)
    for shape_w, n_b in (((80, 192), 80),  # flow.spk_embed_affine_layer
                         ((512, 80, 4), 512),  # f0_predictor.condnet.0
                         ((512, 512, 3), 512), ((512, 512, 3), 512), ((512, 512, 3), 512), ((512, 512, 3), 512),
                         ((1, 512), 1)):  # f0_predictor.classifier
        torch.empty(*shape_w).uniform_(generator=g)  # kaiming_uniform_ -> one uniform draw per element
        torch.empty(n_b).uniform_(generator=g)


class SharedNoise:
    """Holds the flow noise, HiFT's ``rand_ini`` and (a prefix of) HiFT's uniform sine noise."""

    def __init__(self, flow: torch.Tensor, rand_ini: torch.Tensor, sine: torch.Tensor | None = None,
                 *, sine_state: torch.Tensor | None = None, source: str = "upstream-recipe-seed0"):
        if flow.dim() != 3 or flow.shape[:2] != (1, 80):
            raise InputError(f"noise: tensor '{K_FLOW}' must have shape [1, 80, frames], got {list(flow.shape)}")
        if rand_ini.shape != (1, N_HARMONIC_ROWS):
            raise InputError(f"noise: tensor '{K_RAND_INI}' must have shape [1, 9], got {list(rand_ini.shape)}")
        if sine is not None and (sine.dim() != 3 or sine.shape[0] != 1 or sine.shape[2] != N_HARMONIC_ROWS):
            raise InputError(f"noise: tensor '{K_SINE}' must have shape [1, samples, 9], got {list(sine.shape)}")
        self.flow = flow.float().contiguous()
        self.rand_ini = rand_ini.float().contiguous()
        self._sine = sine.float().contiguous() if sine is not None else torch.zeros(1, 0, N_HARMONIC_ROWS)
        self._sine_state = sine_state  # generator state right before the sine buffer, if drawable
        self.source = source

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def upstream(cls) -> "SharedNoise":
        """Rebuild upstream's buffers bit for bit (torch CPU generator; checked against torch 2.13)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        flow = torch.randn(1, 80, FLOW_NOISE_FRAMES, generator=g)
        _consume_default_inits(g)
        rand_ini = torch.rand(1, N_HARMONIC_ROWS, generator=g)
        rand_ini[:, 0] = 0
        return cls(flow, rand_ini, None, sine_state=g.get_state())

    @classmethod
    def load(cls, path: str | Path) -> "SharedNoise":
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: noise file not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                meta = f.metadata() or {}
                missing = [k for k in (K_FLOW, K_RAND_INI) if k not in keys]
                if missing:
                    raise InputError(f"{path}: noise file lacks tensor(s) {', '.join(missing)} "
                                     f"(expected {K_FLOW} [1,80,T], {K_RAND_INI} [1,9], {K_SINE} [1,L,9])")
                flow = f.get_tensor(K_FLOW)
                rand_ini = f.get_tensor(K_RAND_INI)
                sine = f.get_tensor(K_SINE) if K_SINE in keys else None
        except InputError:
            raise
        except Exception as exc:  # corrupt header, not safetensors
            raise InputError(f"{path}: not a readable safetensors noise file ({exc})") from exc
        return cls(flow, rand_ini, sine, source=meta.get("source", f"file:{path.name}"))

    # -- access --------------------------------------------------------------------------------
    def flow_noise(self, frames: int) -> torch.Tensor:
        """``rand_noise[:, :, :frames]`` (the CFM's x0 before the temperature)."""
        if frames > self.flow.shape[2]:
            raise InputError(f"noise: need {frames} frames of flow noise '{K_FLOW}', the noise holds "
                             f"{self.flow.shape[2]} (upstream supports at most {FLOW_NOISE_FRAMES} = 300 s)")
        return self.flow[:, :, :frames]

    def sine_noise(self, samples: int) -> torch.Tensor:
        """``sine_waves[:, :samples, :]``: uniform [0, 1) noise of SineGen2, drawn on first use."""
        if samples > HIFT_NOISE_SAMPLES:
            raise InputError(f"noise: {samples} samples of HiFT noise requested; upstream's buffer holds "
                             f"{HIFT_NOISE_SAMPLES} (300 s)")
        if samples > self._sine.shape[1]:
            if self._sine_state is None:
                raise InputError(f"noise: need {samples} samples of '{K_SINE}', the loaded noise holds "
                                 f"{self._sine.shape[1]}; export it with a longer --samples")
            g = torch.Generator(device="cpu")
            g.set_state(self._sine_state)
            self._sine = torch.rand(1, samples, N_HARMONIC_ROWS, generator=g)
        return self._sine[:, :samples, :]

    @property
    def sine_available(self) -> int:
        return HIFT_NOISE_SAMPLES if self._sine_state is not None else self._sine.shape[1]

    # -- identity and persistence ----------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of the first 64 flow frames, rand_ini and the first 64 sine rows: equal for any two
        copies of the same noise, however long a prefix each holds (exports always hold at least 64)."""
        h = hashlib.sha256()
        h.update(self.flow[:, :, :64].contiguous().numpy().tobytes())
        h.update(self.rand_ini.numpy().tobytes())
        n = min(64, self.sine_available)
        h.update(self.sine_noise(n).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def provenance(self) -> dict:
        return {"source": self.source, "fingerprint": self.fingerprint(), "flow_frames": int(self.flow.shape[2]),
                "sine_samples": int(self.sine_available), "recipe": "manual_seed(0); randn(1,80,15000); "
                "default inits; rand(1,9); rand(1,7.2M,9)"}

    def save(self, path: str | Path, frames: int | None = None, samples: int | None = None) -> Path:
        """Write the noise as safetensors (``rand_noise``, ``hift_rand_ini``, ``hift_sine_noise``)."""
        frames = self.flow.shape[2] if frames is None else frames
        samples = min(self.sine_available, 24000 * 30) if samples is None else samples
        tensors = {K_FLOW: self.flow_noise(frames).contiguous(), K_RAND_INI: self.rand_ini,
                   K_SINE: self.sine_noise(samples).contiguous()}
        meta = {"source": self.source, "fingerprint": self.fingerprint(),
                "layout": json.dumps({K_FLOW: "[1, 80, frames] channel-major", K_RAND_INI: "[1, 9]",
                                      K_SINE: "[1, samples, 9] uniform [0,1)"})}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)
        return path


_UPSTREAM: SharedNoise | None = None


def upstream_noise() -> SharedNoise:
    """The process-wide upstream noise (built once; flow noise is 4.8 MB)."""
    global _UPSTREAM
    if _UPSTREAM is None:
        _UPSTREAM = SharedNoise.upstream()
    return _UPSTREAM
