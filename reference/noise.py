"""Shared fixed noise: every random tensor the token2wav pipeline consumes, made by upstream's recipe.

Upstream draws its noise once, at construction, from torch's CPU generator seeded 0. What it draws
depends on the sizes the model's yaml builds, so the recipe is derived from the configuration
(:class:`NoiseSizes`), never from the released numbers:

1. ``CausalConditionalCFM.__init__``: ``set_all_random_seed(0)``; ``rand_noise = randn(1, 80, 15000)``.
2. The flow's ``nn.Embedding(vocab_size, input_size)`` and ``nn.Linear(spk_embed_dim, output_size)``,
   then HiFT's F0 predictor ``Conv1d(in_channels, cond_channels, 4)``, 4 x ``Conv1d(cond_channels,
   cond_channels, 3)`` and ``Linear(cond_channels, num_class)`` are default-initialised (HyperPyYAML builds
   the ``f0_predictor`` argument before the generator): they only consume the generator (their values are
   replaced by the checkpoint). Released sizes: Embedding(6561, 80), Linear(192, 80), Conv1d(80, 512, 4),
   4 x Conv1d(512, 512, 3), Linear(512, 1).
3. ``SineGen2``: ``rand_ini = rand(1, 9)`` with ``[0, 0] = 0``; ``sine_waves = rand(1, 7_200_000, 9)``
   (uniform [0, 1), not Gaussian).
4. ``nn.Linear(nb_harmonics + 1, 1)`` (``m_source.l_linear``), then ``uv = rand(1, 7_200_000, 1)``
   (unused by the generator).

Upstream hard-codes the 80 channels and 15000 frames of step 1 and the 9 columns and 300 * 24000 rows
of step 3, whatever the yaml says (spec section 5.3 item 8 writes ``nb_harmonics + 1`` columns; upstream's
``SineGen2`` at ace7c47 draws 9, and its inference fails for any ``nb_harmonics`` other than 8, so
:mod:`reference.config` rejects other values).

torch's CPU ``rand`` fills serially from the Mersenne Twister, so the first L rows of the 7.2M x 9
buffer equal ``rand(1, L, 9)`` drawn from the same generator state: we keep that state and draw only
the prefix a run needs (260 MB and ~1.8 s for the whole buffer, ~60 ms for 10 s of audio).

The pipeline never draws random numbers itself: it asks this object. The object round-trips through
safetensors (with the sizes that shaped it in the metadata) so that another implementation (a Rust
port, a candidate) gets exactly the same noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .config import SAMPLE_RATE, ModelConfig
from .errors import InputError

# upstream's own hard-codes: the same for every configuration
FLOW_NOISE_CHANNELS = 80  # CausalConditionalCFM: randn([1, 80, 50 * 300]), not output_size
FLOW_NOISE_FRAMES = 15000  # 50 * 300: 300 s of mel at 50 Hz
HIFT_NOISE_SAMPLES = 7_200_000  # SineGen2: 300 * 24000 rows, whatever the sampling rate
EXPORT_SAMPLES = 30 * SAMPLE_RATE  # what `parity noise export` writes of the sine noise by default: 30 s
N_HARMONIC_ROWS = 9  # SineGen2: 9 columns (rand(1, 9)), not nb_harmonics + 1 (config.py rejects nb_harmonics != 8)

# tensor names in the noise safetensors file
K_FLOW = "rand_noise"
K_RAND_INI = "hift_rand_ini"
K_SINE = "hift_sine_noise"


@dataclass(frozen=True)
class NoiseSizes:
    """The module sizes whose default initialisation consumes the generator between the flow noise and
    the sine noise (step 2 of the module docstring), read from the configuration."""

    vocab_size: int  # flow.input_embedding = Embedding(vocab_size, input_size)
    input_size: int
    spk_embed_dim: int  # flow.spk_embed_affine_layer = Linear(spk_embed_dim, output_size)
    output_size: int
    f0_in_channels: int  # hift.f0_predictor.condnet.0 = Conv1d(in_channels, cond_channels, 4)
    f0_cond_channels: int  # condnet.2/4/6/8 = Conv1d(cond_channels, cond_channels, 3)
    f0_num_class: int  # classifier = Linear(cond_channels, num_class)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "NoiseSizes":
        f, fp = cfg.flow, cfg.hift.f0_predictor
        return cls(f.vocab_size, f.input_size, f.spk_embed_dim, f.output_size, fp.in_channels, fp.cond_channels,
                   fp.num_class)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "noise") -> "NoiseSizes":
        names = [f.name for f in dataclasses.fields(cls)]
        try:
            return cls(**{k: int(d[k]) for k in names})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: metadata 'sizes' must hold integers {', '.join(names)} ({exc})") from exc

    def modules(self) -> list[tuple[str, str, tuple[int, ...], int | None]]:
        """``(name, initialiser, weight shape, bias length)`` in upstream's construction order."""
        c = self.f0_cond_channels
        return ([("flow.input_embedding", "normal", (self.vocab_size, self.input_size), None),
                 ("flow.spk_embed_affine_layer", "kaiming_uniform", (self.output_size, self.spk_embed_dim),
                  self.output_size),
                 ("hift.f0_predictor.condnet.0", "kaiming_uniform", (c, self.f0_in_channels, 4), c)]
                + [(f"hift.f0_predictor.condnet.{i}", "kaiming_uniform", (c, c, 3), c) for i in (2, 4, 6, 8)]
                + [("hift.f0_predictor.classifier", "kaiming_uniform", (self.f0_num_class, c), self.f0_num_class)])

    def recipe(self) -> str:
        c = self.f0_cond_channels
        return (f"manual_seed(0); randn(1,{FLOW_NOISE_CHANNELS},{FLOW_NOISE_FRAMES}); default inits of "
                f"Embedding({self.vocab_size},{self.input_size}), Linear({self.spk_embed_dim},{self.output_size}), "
                f"Conv1d({self.f0_in_channels},{c},4), 4 x Conv1d({c},{c},3), Linear({c},{self.f0_num_class}); "
                f"rand(1,{N_HARMONIC_ROWS}); rand(1,{HIFT_NOISE_SAMPLES},{N_HARMONIC_ROWS})")


def _consume_default_inits(g: torch.Generator, sizes: NoiseSizes) -> None:
    """Consume the generator exactly as the default initialisers of the modules built between the
    CFM and SineGen2 do (weight first, then bias, per module). ``nn.Embedding`` fills its weight with
    ``normal_``; ``nn.Linear``/``nn.Conv1d`` call ``kaiming_uniform_`` then ``uniform_`` on the bias: one
    uniform draw per element each (the bounds change the values, not how many numbers are drawn)."""
    for _, init, w_shape, n_bias in sizes.modules():
        if init == "normal":
            torch.empty(*w_shape).normal_(generator=g)
        else:
            torch.empty(*w_shape).uniform_(generator=g)
        if n_bias is not None:
            torch.empty(n_bias).uniform_(generator=g)


class SharedNoise:
    """Holds the flow noise, HiFT's ``rand_ini`` and (a prefix of) HiFT's uniform sine noise.

    ``sizes`` are the :class:`NoiseSizes` that shaped the sine noise (None for a file that does not say),
    ``config`` the name of the configuration they came from."""

    def __init__(self, flow: torch.Tensor, rand_ini: torch.Tensor, sine: torch.Tensor | None = None,
                 *, sine_state: torch.Tensor | None = None, source: str = "upstream-recipe-seed0",
                 sizes: NoiseSizes | None = None, config: str | None = None):
        if flow.dim() != 3 or flow.shape[:2] != (1, FLOW_NOISE_CHANNELS):
            raise InputError(f"noise: tensor '{K_FLOW}' must have shape [1, {FLOW_NOISE_CHANNELS}, frames], "
                             f"got {list(flow.shape)}")
        if rand_ini.shape != (1, N_HARMONIC_ROWS):
            raise InputError(f"noise: tensor '{K_RAND_INI}' must have shape [1, {N_HARMONIC_ROWS}], "
                             f"got {list(rand_ini.shape)}")
        if sine is not None and (sine.dim() != 3 or sine.shape[0] != 1 or sine.shape[2] != N_HARMONIC_ROWS):
            raise InputError(f"noise: tensor '{K_SINE}' must have shape [1, samples, {N_HARMONIC_ROWS}], "
                             f"got {list(sine.shape)}")
        self.flow = flow.float().contiguous()
        self.rand_ini = rand_ini.float().contiguous()
        self._sine = sine.float().contiguous() if sine is not None else torch.zeros(1, 0, N_HARMONIC_ROWS)
        self._sine_state = sine_state  # generator state right before the sine buffer, if drawable
        self.source = source
        self.sizes = sizes
        self.config = config

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_sizes(cls, sizes: NoiseSizes, config: str | None = None) -> "SharedNoise":
        """Rebuild upstream's buffers bit for bit for a model with these sizes (torch CPU generator;
        checked against torch 2.13 and upstream's modules built in HyperPyYAML's order)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        flow = torch.randn(1, FLOW_NOISE_CHANNELS, FLOW_NOISE_FRAMES, generator=g)
        _consume_default_inits(g, sizes)
        rand_ini = torch.rand(1, N_HARMONIC_ROWS, generator=g)
        rand_ini[:, 0] = 0
        return cls(flow, rand_ini, None, sine_state=g.get_state(), sizes=sizes, config=config)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "SharedNoise":
        """The noise upstream draws when it builds the model ``cfg`` describes (a preset or a yaml)."""
        return cls.from_sizes(NoiseSizes.from_config(cfg), cfg.name)

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
                    raise InputError(f"{path}: noise file lacks tensor(s) {', '.join(missing)} (expected "
                                     f"{K_FLOW} [1,{FLOW_NOISE_CHANNELS},T], {K_RAND_INI} [1,{N_HARMONIC_ROWS}], "
                                     f"{K_SINE} [1,L,{N_HARMONIC_ROWS}])")
                flow = f.get_tensor(K_FLOW)
                rand_ini = f.get_tensor(K_RAND_INI)
                sine = f.get_tensor(K_SINE) if K_SINE in keys else None
        except InputError:
            raise
        except Exception as exc:  # corrupt header, not safetensors
            raise InputError(f"{path}: not a readable safetensors noise file ({exc})") from exc
        sizes = None
        if "sizes" in meta:
            try:
                raw = json.loads(meta["sizes"])
            except ValueError as exc:
                raise InputError(f"{path}: metadata 'sizes' is not JSON ({exc})") from exc
            sizes = NoiseSizes.from_dict(raw if isinstance(raw, dict) else {}, source=str(path))
        try:
            return cls(flow, rand_ini, sine, source=meta.get("source", f"file:{path.name}"), sizes=sizes,
                       config=meta.get("config"))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc

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
                             f"{HIFT_NOISE_SAMPLES} (300 * 24000)")
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
                "sine_samples": int(self.sine_available), "config": self.config,
                "sizes": self.sizes.to_dict() if self.sizes is not None else None,
                "recipe": self.sizes.recipe() if self.sizes is not None else "unknown (a noise file without sizes)"}

    def save(self, path: str | Path, frames: int | None = None, samples: int | None = None) -> Path:
        """Write the noise as safetensors (``rand_noise``, ``hift_rand_ini``, ``hift_sine_noise``), with the
        sizes that shaped it in the metadata."""
        frames = self.flow.shape[2] if frames is None else frames
        samples = min(self.sine_available, EXPORT_SAMPLES) if samples is None else samples
        tensors = {K_FLOW: self.flow_noise(frames).contiguous(), K_RAND_INI: self.rand_ini,
                   K_SINE: self.sine_noise(samples).contiguous()}
        meta = {"source": self.source, "fingerprint": self.fingerprint(),
                "layout": json.dumps({K_FLOW: f"[1, {FLOW_NOISE_CHANNELS}, frames] channel-major",
                                      K_RAND_INI: f"[1, {N_HARMONIC_ROWS}]",
                                      K_SINE: f"[1, samples, {N_HARMONIC_ROWS}] uniform [0,1)"})}
        if self.sizes is not None:
            meta["sizes"] = json.dumps(self.sizes.to_dict())
            meta["recipe"] = self.sizes.recipe()
        if self.config is not None:
            meta["config"] = self.config
        from .files import write_output  # the one way to write a file (atomic, streams)

        return write_output(path, safetensors_bytes(tensors, metadata=meta))


_BY_SIZES: dict[NoiseSizes, SharedNoise] = {}


def noise_for_config(cfg: ModelConfig) -> SharedNoise:
    """The noise of a configuration. The flow noise (4.8 MB) and the generator state are built once per
    set of sizes and shared; each call returns its own object (named after ``cfg``), which draws the sine
    prefix it needs on first use."""
    sizes = NoiseSizes.from_config(cfg)
    if sizes not in _BY_SIZES:
        _BY_SIZES[sizes] = SharedNoise.from_sizes(sizes)
    base = _BY_SIZES[sizes]
    return SharedNoise(base.flow, base.rand_ini, None, sine_state=base._sine_state, sizes=sizes, config=cfg.name)


def check_noise_fits(noise: SharedNoise, cfg: ModelConfig, what: str = "noise") -> None:
    """A noise that says which sizes shaped it must be the model's own: another configuration's noise
    gives another source and audio than upstream's (a false alarm, not a port bug)."""
    if noise.sizes is None:
        return
    want = NoiseSizes.from_config(cfg)
    if noise.sizes != want:
        diff = ", ".join(f"{k} {a} (model: {want.to_dict()[k]})" for k, a in noise.sizes.to_dict().items()
                         if a != want.to_dict()[k])
        raise InputError(f"{what}: this noise was made for config {noise.config or '?'} with {diff}; upstream "
                         f"draws other noise for the model {cfg.name!r}: export the model's own with "
                         f"'parity noise export --preset NAME' or '--model-dir DIR'")
