"""Port adapter: mlx-audio-plus 0.1.8 (``mlx_audio.tts.models.cosyvoice3``), an MLX rewrite of CosyVoice 3.

Install (CPU): ``pip install mlx==0.32.4 mlx-cpu==0.32.4`` then ``pip install --no-deps mlx-audio-plus==0.1.8``
(``pip install -e ".[mlx]"`` does the first; the package's own dependency list pulls its LLM's libraries, which
token2wav does not use, hence ``--no-deps``).

* **Stand-ins.** The package imports ``mlx_lm.models.cache.KVCache`` (its LLM) and
  ``huggingface_hub.snapshot_download`` (its converter's download) at module level, and its model card text names
  ``mlx_audio.tts.generate``; where they are not installed, :mod:`parity.ports.standins` registers small modules
  whose functions raise if called (token2wav never calls them).
* **Build.** The port's own converters (``convert_flow_weights``, ``convert_hifigan_weights`` in
  ``mlx_audio.tts.models.cosyvoice3.scripts.convert``) turn the released-format state dicts into MLX weights;
  ``rotary_embed.inv_freq`` is dropped (the port computes it, as its own loader does); ``build_flow_model`` and
  ``CausalHiFTGenerator`` get the yaml's sizes; the vocoder's weights load with ``strict=False`` (its STFT
  window is computed, not stored), after the adapter has checked that every other parameter was in the file.
* **Noise.** The flow's ``rand_noise`` goes through the port's own argument (``build_flow_model(rand_noise=)``,
  what its loader fills from ``rand_noise.npy``). The vocoder has no such argument: ``SineGen2`` draws
  ``mx.random.uniform(shape=(1, 9))`` for the initial phases and ``mx.random.normal(shape=(1, L, 9))`` for the
  sine noise on every call. With shared noise the adapter hands the port's vocoder module, for the duration of a
  call, an ``mx`` whose ``random.uniform``/``random.normal`` answer those two draws with the reference's
  ``hift_rand_ini`` and ``hift_sine_noise`` (uniform [0, 1), as upstream's buffer is) and pass every other
  draw to MLX (the (1, L, 1) Gaussian of ``SourceModuleHnNSF2``, which its output does not use). The port's code
  runs unchanged. Otherwise MLX's generator is seeded 0 before each call, so a run repeats.
* **Capture.** Instance methods are wrapped, the port's code runs unchanged: the CFM call (``mu``, ``spks``,
  ``cond``, the final ODE state), the estimator (per call k: ``step{k}.t``, ``step{k}.v1``/``v2`` from the batch
  of 2, its ``x`` input: ``x0`` at k = 1, ``step{k-1}.x`` after), the flow's output (``flow_mel``), the F0
  predictor (``f0``), the vocoder's decode (``source``), ``_stft`` (``s_stft``, real then imaginary parts),
  ``conv_pre``, ``_istft`` (``magnitude``, clamped at 1e2 as the port's ``istft`` does first, ``phase``, and
  its output ``audio_preclamp``) and the vocoder's output (``audio``). Not observable without re-implementing
  the solver: ``step{k}.dt`` and ``step{k}.v_cfg`` (the port computes them inside ``solve_euler``).
* **Streaming session.** The port's own loop, ``CosyVoice3.synthesize_streaming``, pulls its tokens from its LLM's
  generator (``generate_tokens``); the adapter builds a ``CosyVoice3`` around the same flow and vocoder (no LLM)
  and answers that generator, for this instance, with the bundle's tokens, all of them available at once (as
  upstream's voice-conversion path gives them), silent-token filtering off (it belongs to the LLM's output). The
  loop's one setting is its hop (``chunk_size``, given the session's initial hop); it keeps the hop fixed and
  always finishes with a call on all tokens. Recorded per call ``c``: ``chunk{c}.tokens`` (the tokens passed to
  ``tokens_to_mel``), ``.finalize``, ``.streaming``, ``.flow_mel_full`` (its output), ``.token_offset`` and ``.mel``
  (read from how much the cumulative mel handed to ``mel_to_audio`` grew), ``.audio`` (what the loop yields), the
  flow's stages of the calls in ``step_chunks``, then ``stream.mel`` and ``stream.audio``. The trace's session
  metadata is what the port's loop did (its calls, its fixed hop), not the plan of upstream's loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import math
from pathlib import Path

import numpy as np
import torch

from reference.errors import InputError
from reference.probe import Probe

from .base import PortAdapter, PortNoise
from .standins import StandIn, activate, refusing, refusing_class

PACKAGE = "mlx_audio.tts.models.cosyvoice3"
VERSION = "0.1.8"
N_HARMONIC_ROWS = 9  # SineGen2 draws (1, 9) initial phases and (1, L, 9) noise for nb_harmonics 8

STANDINS = [
    StandIn("mlx_lm.models.cache", lambda: {"KVCache": refusing_class("mlx_lm.models.cache.KVCache",
                                                                      "the port's LLM cache")},
            "mlx_lm: the port's LLM (KVCache) only"),
    StandIn("huggingface_hub", lambda: {"snapshot_download": refusing("huggingface_hub.snapshot_download",
                                                                      "model downloads"),
                                        "hf_hub_download": refusing("huggingface_hub.hf_hub_download",
                                                                    "model downloads")},
            "huggingface_hub: the converter's downloads only"),
    StandIn("mlx_audio.tts.generate", lambda: {"generate_audio": refusing("mlx_audio.tts.generate.generate_audio",
                                                                          "text-to-speech generation")},
            "mlx_audio.tts.generate: the package's text-to-speech CLI (needs soundfile), not token2wav"),
]


def _to_torch(a) -> torch.Tensor:
    import mlx.core as mx

    return torch.from_numpy(np.array(a.astype(mx.float32) if a.dtype != mx.float32 else a, copy=True))


def _to_mx(t: torch.Tensor, dtype=None):
    import mlx.core as mx

    return mx.array(t.detach().cpu().numpy()) if dtype is None else mx.array(t.detach().cpu().numpy()).astype(dtype)


def _wrap(obj, method: str, wrapper, undo: list):
    """Wrap ``obj.method`` for this one instance: ``wrapper(original_bound, *args, **kwargs)``; appends the way
    back to ``undo``. Dunder methods (``__call__``) are looked up on the type, so the instance gets a one-off
    subclass that overrides them; other methods get an instance attribute."""
    cls = type(obj)
    if method.startswith("__"):
        orig = getattr(cls, method)

        def call(self, *a, **k):
            return wrapper(lambda *a2, **k2: orig(self, *a2, **k2), *a, **k)

        obj.__class__ = type(f"Recorded{cls.__name__}", (cls,), {method: call})
        undo.append(lambda: setattr(obj, "__class__", cls))
    else:
        bound = getattr(obj, method)
        object.__setattr__(obj, method, lambda *a, **k: wrapper(bound, *a, **k))
        undo.append(lambda: object.__delattr__(obj, method))


class _SharedDraws:
    """``mx.random`` for the port's vocoder module during one call: the initial-phase draw (uniform, shape
    (1, 9)) and the sine-noise draw (normal, shape (1, L, 9)) answered with the reference's buffers; every other
    draw goes to MLX. ``log``: what was answered how."""

    def __init__(self, real, rand_ini: np.ndarray, sine_noise):
        self._real, self._rand_ini, self._sine, self.log = real, rand_ini, sine_noise, []

    def uniform(self, low=0.0, high=1.0, shape=(), *a, **k):
        import mlx.core as mx

        if tuple(shape) == (1, N_HARMONIC_ROWS) and (low, high) == (0.0, 1.0):
            self.log.append(("uniform", tuple(shape), "hift_rand_ini"))
            return mx.array(self._rand_ini)
        self.log.append(("uniform", tuple(shape), "mlx"))
        return self._real.uniform(low, high, shape, *a, **k)

    def normal(self, shape=(), *a, **k):
        import mlx.core as mx

        if len(shape) == 3 and shape[0] == 1 and shape[2] == N_HARMONIC_ROWS:
            self.log.append(("normal", tuple(shape), "hift_sine_noise"))
            return mx.array(self._sine(int(shape[1])))
        self.log.append(("normal", tuple(shape), "mlx"))
        return self._real.normal(shape, *a, **k)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _MxWithDraws:
    def __init__(self, mx, random):
        self._mx, self.random = mx, random

    def __getattr__(self, name):
        return getattr(self._mx, name)


class MlxAudioPlus(PortAdapter):
    name = "mlx-audio-plus"
    distribution = f"mlx-audio-plus=={VERSION}"
    session_support = None  # CosyVoice3.synthesize_streaming, its token generator answered with the bundle's tokens

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            version = importlib.metadata.version("mlx-audio-plus")
        except importlib.metadata.PackageNotFoundError:
            return ("mlx-audio-plus is not installed (pip install mlx==0.32.4 mlx-cpu==0.32.4, then pip install "
                    "--no-deps mlx-audio-plus==0.1.8; see docs/ports.md)")
        try:
            import mlx.core  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - any failure to load MLX means the port cannot run here
            return f"mlx cannot be imported ({type(exc).__name__}: {exc}); on CPU install mlx==0.32.4 mlx-cpu==0.32.4"
        if version != VERSION:
            return f"mlx-audio-plus {version} is installed; this adapter is written for {VERSION}"
        return None

    @staticmethod
    def import_port():
        """The port's modules (stand-ins registered first where needed)."""
        activate(STANDINS)
        import mlx_audio.tts.models.cosyvoice3.flow as flow_mod
        import mlx_audio.tts.models.cosyvoice3.hifigan as hift_mod
        from mlx_audio.tts.models.cosyvoice3.scripts import convert

        return flow_mod, hift_mod, convert

    # -- build -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model_dir: Path, cfg, noise: PortNoise) -> "MlxAudioPlus":
        why = cls.unavailable()
        if why:
            raise InputError(f"port {cls.name}: {why}")
        from reference.checkpoint import read_state_dict
        from reference.model import find_checkpoint

        flow_mod, hift_mod, convert = cls.import_port()
        import mlx.core as mx
        from mlx.utils import tree_flatten

        f, est, h = cfg.flow, cfg.flow.decoder.estimator, cfg.hift
        cfm = cfg.flow.decoder.cfm_params
        if f.pre_lookahead_layer.channels != est.dim:
            raise InputError(f"port {cls.name}: the port builds the pre-lookahead layer with the DiT's width "
                             f"({est.dim}); this yaml gives it {f.pre_lookahead_layer.channels} channels")
        if h.f0_predictor.cond_channels != h.base_channels:
            raise InputError(f"port {cls.name}: the port builds the F0 predictor with base_channels "
                             f"({h.base_channels}) channels; this yaml gives it {h.f0_predictor.cond_channels}")
        rand_noise = mx.array(noise.noise.flow.numpy()) if noise.flow else None
        flow = flow_mod.build_flow_model(
            input_size=f.input_size, output_size=f.output_size, spk_embed_dim=f.spk_embed_dim,
            vocab_size=f.vocab_size, input_frame_rate=f.input_frame_rate, token_mel_ratio=f.token_mel_ratio,
            pre_lookahead_len=f.pre_lookahead_len, dit_dim=est.dim, dit_depth=est.depth, dit_heads=est.heads,
            dit_dim_head=est.dim_head, dit_ff_mult=est.ff_mult, dit_dropout=est.dropout,
            cfm_sigma_min=cfm.sigma_min, cfm_t_scheduler=cfm.t_scheduler, cfm_inference_cfg_rate=cfm.inference_cfg_rate,
            n_timesteps=f.n_timesteps, static_chunk_size=est.static_chunk_size, rand_noise=rand_noise)
        model_dir = Path(model_dir)
        flow_path, hift_path = find_checkpoint(model_dir, "flow"), find_checkpoint(model_dir, "hift")
        flow_np = {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                   for k, v in read_state_dict(flow_path).items()}
        fw = {k: v for k, v in convert.convert_flow_weights(flow_np).items() if "rotary_embed.inv_freq" not in k}
        flow.load_weights([(k, mx.array(v)) for k, v in fw.items()], strict=True)
        hift = hift_mod.CausalHiFTGenerator(
            in_channels=h.in_channels, base_channels=h.base_channels, nb_harmonics=h.nb_harmonics,
            sampling_rate=h.sampling_rate, nsf_alpha=h.nsf_alpha, nsf_sigma=h.nsf_sigma,
            nsf_voiced_threshold=h.nsf_voiced_threshold, upsample_rates=list(h.upsample_rates),
            upsample_kernel_sizes=list(h.upsample_kernel_sizes), istft_params=dict(h.istft_params),
            resblock_kernel_sizes=list(h.resblock_kernel_sizes),
            resblock_dilation_sizes=[list(d) for d in h.resblock_dilation_sizes],
            source_resblock_kernel_sizes=list(h.source_resblock_kernel_sizes),
            source_resblock_dilation_sizes=[list(d) for d in h.source_resblock_dilation_sizes],
            lrelu_slope=h.lrelu_slope, audio_limit=h.audio_limit, conv_pre_look_right=h.conv_pre_look_right)
        hift_np = {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                   for k, v in read_state_dict(hift_path).items()}
        hw = convert.convert_hifigan_weights(hift_np)
        want = {k for k, _ in tree_flatten(hift.parameters())} - {"stft_window"}
        missing, unknown = sorted(want - set(hw)), sorted(set(hw) - want)
        if missing or unknown:
            raise InputError(f"port {cls.name}: {hift_path}: the port's converter gives "
                             + (f"no value for {', '.join(missing[:6])}" if missing else "")
                             + ("; " if missing and unknown else "")
                             + (f"keys the vocoder does not have: {', '.join(unknown[:6])}" if unknown else ""))
        hift.load_weights([(k, mx.array(v)) for k, v in hw.items()], strict=False)
        flow.eval()
        hift.eval()
        mx.eval(flow.parameters(), hift.parameters())
        return cls(flow, hift, hift_mod, cfg, noise, {"flow": flow_path.name, "hift": hift_path.name})

    def __init__(self, flow, hift, hift_mod, cfg, noise: PortNoise, files: dict):
        self.flow, self.hift, self._hift_mod, self.cfg, self.noise, self.files = flow, hift, hift_mod, cfg, noise, files
        self._draws: list = []

    # -- provenance ----------------------------------------------------------------------------------
    def provenance(self) -> dict:
        import mlx.core as mx

        from .standins import active

        dec = self.flow.decoder
        shared, port_draws = [], []
        (shared if self.noise.flow else port_draws).append("rand_noise (flow x0)")
        (shared if self.noise.vocoder else port_draws).extend(["hift_rand_ini", "hift_sine_noise"])
        return {
            "port": self.name, "package": "mlx-audio-plus", "version": importlib.metadata.version("mlx-audio-plus"),
            "module": PACKAGE, "backend": f"mlx {importlib.metadata.version('mlx')}",
            "device": "cpu" if mx.default_device().type == mx.cpu else "gpu",
            "dtypes": {"flow": "float32", "hift": "float32", "f0_predictor": "float32"},
            "n_timesteps": int(self.flow.n_timesteps), "t_scheduler": str(dec.t_scheduler),
            "cfg_rate": float(dec.inference_cfg_rate), "files": dict(self.files),
            "noise": {"mode": self.noise.mode, "shared": shared, "port_draws": port_draws,
                      "how": ("rand_noise through build_flow_model(rand_noise=); rand_ini and sine noise answer the "
                              "vocoder's mx.random.uniform((1, 9)) / mx.random.normal((1, L, 9)) draws")
                      if self.noise.vocoder else
                      ("rand_noise through build_flow_model(rand_noise=); the vocoder draws its own (MLX seeded 0)"
                       if self.noise.flow else "the port draws all its noise (MLX seeded 0)")},
            "standins": active(STANDINS),
            "captured": ["mu", "spks", "cond", "x0", "step*.t", "step*.v1", "step*.v2", "step*.x", "flow_mel", "f0",
                         "source", "s_stft", "conv_pre", "magnitude", "phase", "audio_preclamp", "audio"],
            "not_observable": {"step*.dt": "computed inside solve_euler", "step*.v_cfg": "computed inside solve_euler"},
        }

    def run_metadata(self) -> dict:
        return {"port_draws": [list(d) for d in self._draws]}

    # -- running -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _vocoder_noise(self):
        """The shared HiFT noise for the duration of one vocoder call (see the module docstring)."""
        import mlx.core as mx

        if not self.noise.vocoder:
            yield
            return
        n = self.noise.noise
        draws = _SharedDraws(mx.random, n.rand_ini.numpy(), lambda L: n.sine_noise(L).numpy())
        mod = self._hift_mod
        mod.mx = _MxWithDraws(mx, draws)
        try:
            yield
        finally:
            mod.mx = mx
            self._draws.extend(draws.log)

    @contextlib.contextmanager
    def _wrapped(self, probe):
        """The port's instances with recording wrappers for one call (restored afterwards); yields ``rec``.
        ``probe``: a :class:`Probe`, or a function returning the probe of the moment (a streaming session records
        each call's flow stages under its own prefix)."""
        import mlx.core as mx

        current = probe if callable(probe) and not isinstance(probe, Probe) else (lambda: probe)

        flow, hift = self.flow, self.hift
        dec, est = flow.decoder, flow.decoder.estimator
        state = {"k": 0}

        def rec(name, a):
            p = current()
            if p.wants(name):
                mx.eval(a)
                p(name, _to_torch(a))

        def on_decoder(orig, mu, mask, spks, cond, n_timesteps=10, streaming=False):
            state["k"] = 0
            rec("mu", mu)
            rec("spks", spks)
            rec("cond", cond)
            out, cache = orig(mu=mu, mask=mask, spks=spks, cond=cond, n_timesteps=n_timesteps, streaming=streaming)
            if state["k"]:
                rec(f"step{state['k']}.x", out)
            return out, cache

        def on_estimator(orig, x, mask, mu, t, spks=None, cond=None, streaming=False):
            state["k"] += 1
            k = state["k"]
            rec("x0" if k == 1 else f"step{k - 1}.x", x[:1])
            rec(f"step{k}.t", t[:1])
            out = orig(x=x, mask=mask, mu=mu, t=t, spks=spks, cond=cond, streaming=streaming)
            rec(f"step{k}.v1", out[:1])
            rec(f"step{k}.v2", out[1:2])
            return out

        def on_f0(orig, x, finalize=True):
            f0 = orig(x, finalize=finalize)
            rec("f0", f0)
            return f0

        def on_decode(orig, x, s, finalize=True):
            rec("source", s)
            return orig(x=x, s=s, finalize=finalize)

        def on_stft(orig, x):
            re, im = orig(x)
            if current().wants("s_stft"):
                rec("s_stft", mx.concatenate([re, im], axis=1))
            return re, im

        def on_conv_pre(orig, x, cache=None):
            y = orig(x, cache=cache)
            rec("conv_pre", y)
            return y

        def on_istft(orig, magnitude, phase):
            rec("magnitude", mx.clip(magnitude, 0.0, 1e2))  # the port's istft clamps first: the canonical stage
            rec("phase", phase)
            y = orig(magnitude, phase)
            rec("audio_preclamp", y)
            return y

        undo: list = []
        try:
            _wrap(dec, "__call__", on_decoder, undo)
            _wrap(est, "__call__", on_estimator, undo)
            _wrap(hift.f0_predictor, "__call__", on_f0, undo)
            _wrap(hift, "decode", on_decode, undo)
            _wrap(hift, "_stft", on_stft, undo)
            _wrap(hift.conv_pre, "__call__", on_conv_pre, undo)
            _wrap(hift, "_istft", on_istft, undo)
            yield rec
        finally:
            for u in reversed(undo):
                u()

    def run_session(self, inputs: dict[str, torch.Tensor], probe: Probe, options) -> object:
        """The port's streaming loop over the bundle's tokens (see the module docstring); returns a
        :class:`reference.session.SessionResult` describing what the loop did."""
        import mlx.core as mx
        from mlx_audio.tts.models.cosyvoice3.cosyvoice3 import CosyVoice3

        from reference.probe import NO_PROBE
        from reference.session import ChunkPlan, ChunkRecord, Schedule, SessionOptions, SessionResult, _step_chunk_set

        opts = (options or SessionOptions()).resolve(self.cfg)
        tok, ptok = inputs["token"].long(), inputs["prompt_token"].long()
        tokens = [int(x) for x in tok.reshape(-1)]
        ratio = int(self.flow.token_mel_ratio)
        tv = CosyVoice3(config=None, llm=None, flow=self.flow, hifigan=self.hift)
        object.__setattr__(tv, "generate_tokens", lambda **_kw: iter(tokens))
        calls: list[dict] = []
        flow_stages: list[dict] = []
        now = {"probe": NO_PROBE, "cum": 0}

        class _Buffer:  # the flow's stages of one call, kept until the calls to record are known
            def __init__(self, store: dict):
                self.store = store

            def wants(self, name: str) -> bool:
                return name != "flow_mel" and probe.wants(name)

            def record(self, name: str, t: torch.Tensor) -> None:
                self.store[name] = t

        def scalar(v) -> torch.Tensor:
            return torch.tensor([int(v)], dtype=torch.int64)

        def on_tokens_to_mel(orig, **kw):
            c = len(calls)
            store: dict = {}
            flow_stages.append(store)
            now["probe"] = Probe(_Buffer(store), f"chunk{c}.")
            try:
                mel, cache = orig(**kw)
            finally:
                now["probe"] = NO_PROBE
            mx.eval(mel)
            n = int(kw["tokens"].shape[1])
            calls.append({"n_tokens": n, "finalize": bool(kw.get("finalize", True)),
                          "streaming": bool(kw.get("streaming", False)), "mel_full": int(mel.shape[2])})
            probe(f"chunk{c}.tokens", torch.from_numpy(np.array(kw["tokens"])).long())
            probe(f"chunk{c}.finalize", scalar(calls[-1]["finalize"]))
            probe(f"chunk{c}.streaming", scalar(calls[-1]["streaming"]))
            probe(f"chunk{c}.flow_mel_full", _to_torch(mel))
            return mel, cache

        def on_mel_to_audio(orig, mel, finalize=True):
            c = len(calls) - 1
            mx.eval(mel)
            start, appended = now["cum"], int(mel.shape[2]) - now["cum"]
            call = calls[c]
            call["token_offset"] = (call["mel_full"] - appended) // ratio
            call.update(slice_start=call["mel_full"] - appended, mel_frames=appended, hift_frames=int(mel.shape[2]))
            probe(f"chunk{c}.token_offset", scalar(call["token_offset"]))
            probe(f"chunk{c}.mel", _to_torch(mel[:, :, start:]))
            now["cum"], now["mel"] = int(mel.shape[2]), _to_torch(mel)
            with self._vocoder_noise():
                return orig(mel, finalize=finalize)

        undo: list = []
        _wrap(tv, "tokens_to_mel", on_tokens_to_mel, undo)
        _wrap(tv, "mel_to_audio", on_mel_to_audio, undo)
        pieces, cum_mel = [], None
        self._draws = []
        self._seed()
        try:
            with self._wrapped(lambda: now["probe"]):
                prompt_feat = _to_mx(inputs["prompt_feat"].float())
                gen = tv.synthesize_streaming(
                    text=None, text_len=None, prompt_text=None, prompt_text_len=None,
                    prompt_speech_token=_to_mx(ptok, mx.int32),
                    prompt_speech_token_len=mx.array([ptok.shape[1]], dtype=mx.int32), prompt_mel=prompt_feat,
                    prompt_mel_len=mx.array([prompt_feat.shape[1]], dtype=mx.int32),
                    speaker_embedding=_to_mx(inputs["embedding"].float()), n_timesteps=int(self.flow.n_timesteps),
                    chunk_size=int(opts.initial_hop), filter_silent_tokens=False)
                for piece in gen:
                    mx.eval(piece)
                    c = len(calls) - 1
                    a = _to_torch(piece).reshape(1, -1)
                    calls[c]["samples"] = int(a.shape[1])
                    probe(f"chunk{c}.audio", a)
                    pieces.append(a)
        finally:
            for u in reversed(undo):
                u()
        steps = _step_chunk_set(tuple(opts.step_chunks), len(calls))
        for c in sorted(steps):
            for name, t in flow_stages[c].items():  # names already carry their chunk prefix
                probe(name, t)
        audio = torch.cat(pieces, dim=1) if pieces else torch.zeros(1, 0)
        cum_mel = now.get("mel")  # the cumulative mel of the last call: the whole stream's
        if cum_mel is not None:
            probe("stream.mel", cum_mel)
        probe("stream.audio", audio)
        # what the loop did, in the terms of the harness's session (reference.session): its calls, its fixed hop
        emitted, plans, records = 0, [], []
        for c, call in enumerate(calls):
            nxt = calls[c + 1]["token_offset"] if c + 1 < len(calls) else len(tokens)
            plans.append(ChunkPlan(c, call["token_offset"], nxt - call["token_offset"], call["n_tokens"],
                                   call["finalize"], call["streaming"]))
            records.append(ChunkRecord(c, call["token_offset"], call["n_tokens"], call["finalize"], call["streaming"],
                                       call.get("slice_start", 0), call.get("mel_frames", 0),
                                       call.get("hift_frames", 0), call.get("samples", 0), emitted))
            emitted += call.get("samples", 0)
        first_hop = plans[0].hop if plans and not plans[0].finalize else int(opts.initial_hop)
        sched = Schedule(tuple(plans), len(tokens), int(ptok.shape[1]), max(first_hop - int(opts.initial_hop), 0),
                         int(opts.initial_hop), int(opts.initial_hop), int(self.flow.pre_lookahead_len))
        effective = dataclasses.replace(opts, max_hop=int(opts.initial_hop), growth=1)  # the port's hop is fixed
        hold = int(self.hift.f0_predictor.condnet_0.causal_padding + self.hift.conv_pre_look_right + 1)
        spf = int(math.prod(self.hift.upsample_rates) * self.hift.istft_params["hop_len"])
        return SessionResult(audio, cum_mel, sched, records, effective, hold, spf, int(self.hift.sampling_rate), {})

    def _seed(self):
        import mlx.core as mx

        mx.random.seed(0)

    def run(self, inputs: dict[str, torch.Tensor], probe: Probe, *, streaming: bool = False,
            finalize: bool = True) -> torch.Tensor:
        import mlx.core as mx

        tok, ptok = inputs["token"].long(), inputs["prompt_token"].long()
        args = dict(token=_to_mx(tok, mx.int32), token_len=mx.array([tok.shape[1]], dtype=mx.int32),
                    prompt_token=_to_mx(ptok, mx.int32), prompt_token_len=mx.array([ptok.shape[1]], dtype=mx.int32),
                    prompt_feat=_to_mx(inputs["prompt_feat"].float()),
                    prompt_feat_len=mx.array([inputs["prompt_feat"].shape[1]], dtype=mx.int32),
                    embedding=_to_mx(inputs["embedding"].float()))
        self._draws = []
        self._seed()
        with self._wrapped(probe) as rec:
            mel, _ = self.flow.inference(**args, streaming=streaming, finalize=finalize)
            rec("flow_mel", mel)
            with self._vocoder_noise():
                audio, _ = self.hift(mel, finalize=finalize)
            mx.eval(audio)
            rec("audio", audio)
        return _to_torch(audio)

    def vocode(self, mel: torch.Tensor, probe: Probe, *, finalize: bool = True) -> torch.Tensor:
        import mlx.core as mx

        self._seed()
        with self._wrapped(probe) as rec:
            with self._vocoder_noise():
                audio, _ = self.hift(_to_mx(mel.float()), finalize=finalize)
            mx.eval(audio)
            rec("audio", audio)
        return _to_torch(audio)
