"""The streaming session: upstream's chunked token2wav loop, from tokens given up front.

Upstream (``cosyvoice/cli/model.py`` at ace7c47; spec section 11.1) never calls token2wav once when it
streams. ``CosyVoice2Model.tts(stream=True)`` runs this loop, and ``CosyVoice3Model.token2wav`` does the
work of each call:

* state on the model *instance*: ``token_hop_len`` (25, "must match training static_chunk_size", i.e. the
  yaml's ``chunk_size``), ``token_max_hop_len = 4 * token_hop_len``, ``stream_scale_factor = 2``; the flow's
  ``pre_lookahead_len`` (3) and ``token_mel_ratio`` (2);
* per request: ``prompt_token_pad = ceil(P / token_hop_len) * token_hop_len - P`` (with the hop the
  instance holds *now*), ``token_offset = 0``;
* loop: ``this_hop = token_hop_len + prompt_token_pad`` for the first chunk, ``token_hop_len`` after;
  when ``len(tokens) - token_offset >= this_hop + pre_lookahead_len``: ``token2wav(tokens[:token_offset +
  this_hop + pre_lookahead_len], token_offset, stream=True, finalize=False)``, then ``token_offset +=
  this_hop`` and ``self.token_hop_len = min(max, token_hop_len * scale)`` (the instance grows);
  then ``if llm_end and len(tokens) - token_offset < this_hop + pre_lookahead_len: break`` -- with the
  ``this_hop`` of the top of the iteration (see :func:`session_schedule`);
* final call: ``token2wav(all tokens, token_offset, finalize=True)`` *without* ``stream=True``, so the flow
  runs without the chunk mask on that call only;
* ``token2wav``: the flow re-runs on prompt + all tokens so far (``streaming=stream, finalize=finalize``;
  with ``finalize=False`` the last ``pre_lookahead_len`` tokens are right context only), the mel is sliced
  from ``token_offset * token_mel_ratio``, appended to the request's cumulative mel, HiFT re-runs on the
  whole cumulative mel with the same ``finalize``, and only the samples after ``speech_offset`` are emitted.

"Tokens given up front" is upstream's voice-conversion path (``vc_job`` stores every token and sets
``llm_end`` before the loop's first poll): the break test sees ``llm_end = True`` from the start.

:func:`session_schedule` plans the calls from token counts alone; :func:`plan_session` adds a pipeline's config and
streaming faults (what a run will do, before it runs); :func:`run_session` is the one loop for every pipeline: it calls ``pipeline.flow.inference`` and
``pipeline.hift.inference`` (the reference's and the candidate's have the same signature) and asks
``pipeline.faults`` (the candidate's, when present) for the streaming faults of ``candidate/faults.py``.

Stages (through the usual :class:`~reference.probe.Probe`): per call ``c`` (the final call is the last
index) ``chunk{c}.tokens`` (the target tokens passed, prompt excluded), ``chunk{c}.token_offset``,
``chunk{c}.finalize``, ``chunk{c}.streaming`` (the flow's chunk-mask flag on that call),
``chunk{c}.flow_mel_full`` (flow output before the slice), ``chunk{c}.mel`` (the appended frames),
``chunk{c}.f0`` (the F0 the call's vocoder computed over its input: the cumulative mel, so the last call's
covers the whole stream), ``chunk{c}.audio`` (the emitted samples); for the chunks in ``step_chunks`` also the flow's own stages under
the chunk prefix (``chunk{c}.mu``, ``chunk{c}.x0``, ``chunk{c}.step{k}.v1/v2/v_cfg/x``, ...); then
``stream.mel`` (the cumulative mel) and ``stream.audio`` (all emitted samples).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .errors import InputError
from .probe import NO_PROBE, Probe, as_probe

FINAL_MASKS = ("upstream", "streaming")
HOP_STATES = ("fresh", "carried")
NOISE_MODES = ("absolute", "chunk-local")
HIFT_INPUTS = ("cumulative", "chunk")


# ---------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class SessionOptions:
    """How the session runs. ``None`` means: what upstream does with this model's config.

    * ``initial_hop``: tokens per chunk at the start (upstream ``token_hop_len`` = 25 = the yaml's
      ``chunk_size``; default: ``cfg.chunk_size``).
    * ``max_hop``: upper bound of the growing hop (upstream ``4 * token_hop_len``; default 4 x initial).
    * ``growth``: hop multiplier after each chunk (upstream ``stream_scale_factor`` = 2; 1 = fixed hop).
    * ``final_mask``: ``upstream`` (the final call runs the flow without the chunk mask, as upstream's
      ``token2wav(..., finalize=True)`` without ``stream=True`` does) or ``streaming`` (with it).
    * ``hop_state``: ``fresh`` (the hop starts at ``initial_hop`` on every request) or ``carried`` (the hop
      upstream's model instance holds from a previous request; :class:`HopState` carries it, else
      ``carried_hop``, else ``max_hop`` -- where any earlier request of >= log2(max/initial) chunks left it).
    * ``step_chunks``: calls whose flow stages (ODE steps ...) are recorded: indices, ``"first"``,
      ``"last"`` (the final call), or ``"all"``; default the first and the last.
    """

    initial_hop: int | None = None
    max_hop: int | None = None
    growth: int = 2
    final_mask: str = "upstream"
    hop_state: str = "fresh"
    carried_hop: int | None = None
    step_chunks: tuple = ("first", "last")

    def tag(self) -> str:
        """A short file-name-safe tag of the options that differ from the defaults ("" when none do), for
        case and trace names: ``final-streaming``, ``hop-carried``, ``h50``, ``max200``, ``g1``, ``steps-all``."""
        parts = []
        if self.initial_hop is not None:
            parts.append(f"h{self.initial_hop}")
        if self.max_hop is not None:
            parts.append(f"max{self.max_hop}")
        if self.growth != 2:
            parts.append(f"g{self.growth}")
        if self.final_mask != "upstream":
            parts.append(f"final-{self.final_mask}")
        if self.hop_state != "fresh":
            parts.append(f"hop-{self.hop_state}" + (str(self.carried_hop) if self.carried_hop is not None else ""))
        steps = (self.step_chunks,) if isinstance(self.step_chunks, (str, int)) else tuple(self.step_chunks)
        if steps != ("first", "last"):
            parts.append("steps-" + ("-".join(str(s) for s in steps) or "none"))
        return "-".join(parts)

    def resolve(self, cfg) -> "ResolvedOptions":
        initial = int(self.initial_hop if self.initial_hop is not None else cfg.chunk_size)
        max_hop = int(self.max_hop if self.max_hop is not None else 4 * initial)
        if initial < 1 or max_hop < initial:
            raise InputError(f"session: need 1 <= initial_hop <= max_hop, got initial_hop={initial}, max_hop={max_hop}")
        if int(self.growth) != self.growth or self.growth < 1:
            raise InputError(f"session: growth must be an integer >= 1 (upstream asserts stream_scale_factor >= 1), "
                             f"got {self.growth!r}")
        if self.final_mask not in FINAL_MASKS:
            raise InputError(f"session: final_mask must be one of {', '.join(FINAL_MASKS)}, got {self.final_mask!r}")
        if self.hop_state not in HOP_STATES:
            raise InputError(f"session: hop_state must be one of {', '.join(HOP_STATES)}, got {self.hop_state!r}")
        carried = int(self.carried_hop) if self.carried_hop is not None else max_hop
        if carried < 1:
            raise InputError(f"session: carried_hop must be >= 1, got {carried}")
        steps = self.step_chunks
        if isinstance(steps, (str, int)):
            steps = (steps,)
        for s in steps:
            if not (isinstance(s, int) or s in ("first", "last", "all")):
                raise InputError(f"session: step_chunks entries are chunk indices, 'first', 'last' or 'all'; got {s!r}")
        return ResolvedOptions(initial_hop=initial, max_hop=max_hop, growth=int(self.growth),
                               lookahead=int(cfg.flow.pre_lookahead_len), token_mel_ratio=int(cfg.flow.token_mel_ratio),
                               final_mask=self.final_mask, hop_state=self.hop_state, carried_hop=carried,
                               step_chunks=tuple(steps))


@dataclass(frozen=True)
class ResolvedOptions:
    initial_hop: int
    max_hop: int
    growth: int
    lookahead: int
    token_mel_ratio: int
    final_mask: str
    hop_state: str
    carried_hop: int
    step_chunks: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        d["step_chunks"] = list(self.step_chunks)
        return d


@dataclass
class HopState:
    """The hop upstream keeps on its model instance (``self.token_hop_len``): pass the same object to
    successive :func:`run_session` calls with ``hop_state="carried"`` to serve requests the way one upstream
    instance does. ``None`` until a first request sets it."""

    token_hop_len: int | None = None


# ---------------------------------------------------------------------------------------------
# schedule


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    token_offset: int  # target tokens already emitted before this call
    hop: int  # target tokens this call emits (final call: all that remain)
    n_tokens: int  # target tokens passed to token2wav: offset + hop + lookahead, or all of them (final)
    finalize: bool
    streaming: bool  # the flow's chunk mask on this call

    @property
    def final(self) -> bool:
        return self.finalize


@dataclass(frozen=True)
class Schedule:
    chunks: tuple  # ChunkPlan, the final call last
    n_tokens: int
    n_prompt: int
    prompt_pad: int
    hop_at_start: int
    hop_after: int  # the hop the instance holds when the request ends
    lookahead: int

    @property
    def n_chunks(self) -> int:
        """Non-final chunks (the final call is ``chunks[-1]``, index ``n_chunks``)."""
        return len(self.chunks) - 1

    def hops(self) -> list[int]:
        return [c.hop for c in self.chunks]

    def expected_frames(self, token_mel_ratio: int) -> list[int]:
        """Mel frames each call appends to the cumulative mel."""
        return [c.hop * token_mel_ratio for c in self.chunks]

    def expected_samples(self, token_mel_ratio: int, samples_per_frame: int, holdback_frames: int) -> list[int]:
        """Samples each call emits: HiFT on the cumulative mel holds back ``holdback_frames`` frames when not
        finalizing (3 F0 lookahead + 4 conv_pre lookahead + 1 dropped = 8 for CosyVoice 3), so the first
        chunk emits (2 hop - 8) frames' worth, later chunks 2 hop, and the final call the rest + 8."""
        out, emitted, cum = [], 0, 0
        for c in self.chunks:
            cum += c.hop * token_mel_ratio
            total = cum if c.finalize else max(cum - holdback_frames, 0)
            out.append((total - emitted) * samples_per_frame)
            emitted = total
        return out

    def to_list(self) -> list[dict]:
        return [asdict(c) for c in self.chunks]

    def to_dict(self) -> dict:
        return {"chunks": self.to_list(), "n_tokens": self.n_tokens, "n_prompt": self.n_prompt,
                "prompt_pad": self.prompt_pad, "hop_at_start": self.hop_at_start, "hop_after": self.hop_after,
                "lookahead": self.lookahead}


def prompt_token_pad(n_prompt: int, hop: int) -> int:
    """``ceil(P / hop) * hop - P``: aligns the end of the first chunk to a multiple of the hop (so each
    non-final chunk ends on a boundary of the DiT's chunk mask)."""
    return int(math.ceil(n_prompt / hop) * hop - n_prompt)


def session_schedule(n_tokens: int, n_prompt: int, *, initial_hop: int = 25, max_hop: int = 100, growth: int = 2,
                     lookahead: int = 3, hop_at_start: int | None = None, prompt_pad: bool = True,
                     final_mask: str = "upstream") -> Schedule:
    """The calls upstream's loop makes for ``n_tokens`` target tokens given up front after ``n_prompt``
    prompt tokens (pure function; no model).

    ``hop_at_start`` is the hop the instance holds when the request starts (``initial_hop`` for a fresh
    one); the prompt pad is computed with it, as upstream does. The break test uses the ``this_hop`` of the
    top of the iteration (upstream's variable is not recomputed after the chunk): with a fresh hop and
    growth 2 that never changes the schedule, but with a carried hop (pad up to hop - 1) or a fixed hop it
    can end the loop one chunk early -- which is what upstream does with tokens given up front.
    """
    if n_tokens < 0 or n_prompt < 0:
        raise InputError(f"session: token counts must be >= 0, got n_tokens={n_tokens}, n_prompt={n_prompt}")
    if growth < 1 or initial_hop < 1 or max_hop < 1:
        raise InputError(f"session: need hops >= 1 and growth >= 1, got initial_hop={initial_hop}, "
                         f"max_hop={max_hop}, growth={growth}")
    hop = initial_hop if hop_at_start is None else hop_at_start
    start = hop
    pad = prompt_token_pad(n_prompt, hop) if prompt_pad else 0
    chunks: list[ChunkPlan] = []
    offset = 0
    while True:
        this_hop = hop + pad if offset == 0 else hop
        if n_tokens - offset >= this_hop + lookahead:
            chunks.append(ChunkPlan(len(chunks), offset, this_hop, offset + this_hop + lookahead, False, True))
            offset += this_hop
            hop = min(max_hop, hop * growth)
        if n_tokens - offset < this_hop + lookahead:  # upstream: llm_end is True (tokens given up front)
            break
    chunks.append(ChunkPlan(len(chunks), offset, n_tokens - offset, n_tokens, True, final_mask == "streaming"))
    return Schedule(tuple(chunks), n_tokens, n_prompt, pad, start, hop, lookahead)


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class ChunkRecord:
    """What one call actually did (a faulty candidate may deviate from its plan)."""

    index: int
    token_offset: int
    n_tokens: int
    finalize: bool
    streaming: bool
    slice_start: int  # first frame of the flow output that was appended
    mel_frames: int  # frames appended to the cumulative mel
    hift_frames: int  # frames HiFT ran on
    samples: int  # samples emitted
    start_sample: int  # position of the first emitted sample in the stream


@dataclass
class SessionResult:
    audio: torch.Tensor  # stream.audio [1, L]
    mel: torch.Tensor  # stream.mel [1, 80, M]
    schedule: Schedule
    chunks: list  # ChunkRecord per call
    options: ResolvedOptions
    holdback_frames: int
    samples_per_frame: int
    sample_rate: int
    deviations: dict = field(default_factory=dict)  # streaming faults that were active

    @property
    def boundaries(self) -> list[int]:
        """Stream sample index where each call after the first starts."""
        return [c.start_sample for c in self.chunks[1:]]

    def expected_samples(self) -> list[int]:
        return self.schedule.expected_samples(self.options.token_mel_ratio, self.samples_per_frame,
                                              self.holdback_frames)

    def metadata(self) -> dict:
        """JSON-safe trace metadata of the session (options with their resolved values, schedule, chunks)."""
        return {"session": "streaming", "session_options": self.options.to_dict(),
                "session_schedule": self.schedule.to_dict(), "session_chunks": [asdict(c) for c in self.chunks],
                "session_holdback_frames": self.holdback_frames, "session_samples_per_frame": self.samples_per_frame,
                "session_deviations": dict(self.deviations)}


class ChunkLocalNoise:
    """Fault support: the noise a port gets when it re-indexes the fixed noise from 0 at each chunk. It keeps
    what it handed out before and appends ``buffer[0:new]`` for the frames/samples a call adds, instead of
    ``buffer[old:new]`` (upstream's noise is indexed by absolute frame and sample). Everything else comes
    from the wrapped :class:`~reference.noise.SharedNoise`."""

    def __init__(self, base):
        self._base = base
        self._flow: torch.Tensor | None = None
        self._sine: torch.Tensor | None = None

    def __getattr__(self, name):
        if name.startswith("_"):  # no delegation of private/dunder names (copy, pickle)
            raise AttributeError(name)
        return getattr(self._base, name)

    def flow_noise(self, frames: int, *args, **kwargs) -> torch.Tensor:
        have = 0 if self._flow is None else self._flow.shape[2]
        if frames > have:
            new = self._base.flow_noise(frames - have, *args, **kwargs)
            self._flow = new if self._flow is None else torch.cat([self._flow, new], dim=2)
        return self._flow[:, :, :frames]

    def sine_noise(self, samples: int, *args, **kwargs) -> torch.Tensor:
        have = 0 if self._sine is None else self._sine.shape[1]
        if samples > have:
            new = self._base.sine_noise(samples - have, *args, **kwargs)
            self._sine = new if self._sine is None else torch.cat([self._sine, new], dim=1)
        return self._sine[:, :samples, :]


class _VocoderProbe(Probe):
    """A vocoder call's F0 under ``chunk{c}.`` (``chunk{c}.f0``: the F0 the call computed over its HiFT input);
    the call's other stages are not recorded (the loop records the samples it emits as ``chunk{c}.audio``)."""

    __slots__ = ()

    def wants(self, name: str) -> bool:
        return name == "f0" and super().wants(name)

    def __call__(self, name, tensor):
        if name == "f0":
            super().__call__(name, tensor)

    def sub(self, prefix: str) -> "Probe":
        return NO_PROBE


class _FlowProbe(Probe):
    """The flow's stages under ``chunk{c}.``, without its ``flow_mel`` (the loop records ``flow_mel_full``)."""

    __slots__ = ()

    def wants(self, name: str) -> bool:
        return name != "flow_mel" and super().wants(name)

    def __call__(self, name, tensor):
        if name != "flow_mel":
            super().__call__(name, tensor)

    def sub(self, prefix: str) -> "Probe":
        return _FlowProbe(self.recorder, self.prefix + prefix)


def hift_holdback_frames(hift) -> int:
    """Mel frames a non-final HiFT call holds back: F0 lookahead + conv_pre lookahead + the dropped frame."""
    g = getattr(hift, "g", hift)  # the candidate wraps the reference generator as .g
    return int(g.f0_predictor.lookahead + g.conv_pre_look_right + 1)


def _step_chunk_set(spec: tuple, n_calls: int) -> set[int]:
    out: set[int] = set()
    for s in spec:
        if s == "all":
            out.update(range(n_calls))
        elif s == "first":
            out.add(0)
        elif s == "last":
            out.add(n_calls - 1)
        elif isinstance(s, int):
            out.add(s if s >= 0 else n_calls + s)
    return out


def _no_faults(key, default=None):
    return default


def _scalar(v: int) -> torch.Tensor:
    return torch.tensor([int(v)], dtype=torch.int64)


@dataclass(frozen=True)
class SessionPlan:
    """What a session will do before it runs: the schedule, and the pieces of the loop a streaming fault
    replaces (all upstream's unless ``deviations`` says otherwise)."""

    options: ResolvedOptions
    schedule: Schedule
    step_chunks: tuple  # call indices whose flow stages are recorded
    finalize_all: bool = False
    slice_shift: int = 0
    hift_input: str = "cumulative"
    noise_mode: str = "absolute"
    deviations: dict = field(default_factory=dict)


def plan_session(pipeline, n_tokens: int, n_prompt: int, options: SessionOptions | None = None, *,
                 state: HopState | None = None) -> SessionPlan:
    """The plan :func:`run_session` follows for ``n_tokens`` target and ``n_prompt`` prompt tokens on
    ``pipeline`` (its config, and its streaming faults when it has any). Nothing runs."""
    opts = (options or SessionOptions()).resolve(pipeline.cfg)
    faults = getattr(pipeline, "faults", None)
    fault = faults.override if faults else _no_faults
    if opts.hop_state == "carried":
        hop_start = state.token_hop_len if (state is not None and state.token_hop_len is not None) else opts.carried_hop
    else:
        hop_start = opts.initial_hop
    # streaming faults (candidate only): each replaces one piece of upstream's loop
    growth = fault("session_growth", None)
    prompt_pad = fault("session_prompt_pad", True)
    final_mask = opts.final_mask
    if fault("session_final_mask_flip", False):
        final_mask = "streaming" if final_mask == "upstream" else "upstream"
    finalize_all = bool(fault("session_finalize_all", False))
    slice_shift = int(fault("session_slice_shift", 0))
    hift_input = fault("session_hift_input", "cumulative")
    noise_mode = fault("session_noise", "absolute")
    if hift_input not in HIFT_INPUTS or noise_mode not in NOISE_MODES:
        raise InputError(f"session: unknown hift input {hift_input!r} or noise mode {noise_mode!r}")
    deviations = {}
    for k, v, up in (("growth", growth, None), ("prompt_pad", prompt_pad, True), ("final_mask", final_mask, opts.final_mask),
                     ("finalize_all", finalize_all, False), ("slice_shift", slice_shift, 0),
                     ("hift_input", hift_input, "cumulative"), ("noise", noise_mode, "absolute")):
        if v != up:
            deviations[k] = v
    sched = session_schedule(n_tokens, n_prompt, initial_hop=opts.initial_hop, max_hop=opts.max_hop,
                             growth=opts.growth if growth is None else int(growth), lookahead=opts.lookahead,
                             hop_at_start=hop_start, prompt_pad=bool(prompt_pad), final_mask=final_mask)
    steps = tuple(sorted(_step_chunk_set(opts.step_chunks, len(sched.chunks))))
    return SessionPlan(opts, sched, steps, finalize_all, slice_shift, hift_input, noise_mode, deviations)


@torch.inference_mode()
def run_session(pipeline, inputs: dict, probe: Probe | None = None, options: SessionOptions | None = None, *,
                state: HopState | None = None) -> SessionResult:
    """Run upstream's streaming loop on ``pipeline`` (a reference :class:`~reference.model.Token2Wav` or a
    candidate) for the bundle ``inputs``; every stage goes to ``probe``. Returns a :class:`SessionResult`.

    With ``options.hop_state == "carried"`` and a ``state``, the request starts from ``state.token_hop_len``
    (if set) and leaves its grown hop there, as upstream's instance does."""
    probe = as_probe(probe)
    opts = (options or SessionOptions()).resolve(pipeline.cfg)
    for k in ("token", "prompt_token", "prompt_feat", "embedding"):
        if k in inputs:
            probe(k, inputs[k])
    dtype = getattr(pipeline, "dtype", torch.float32)
    token = inputs["token"].long()
    prompt_token = inputs["prompt_token"].long()
    prompt_feat = inputs["prompt_feat"].to(dtype)
    embedding = inputs["embedding"].to(dtype)
    if token.dim() != 2 or token.shape[0] != 1 or prompt_token.dim() != 2:
        raise InputError(f"session: tensor 'token' must be [1, N] and 'prompt_token' [1, P], got "
                         f"{list(token.shape)} and {list(prompt_token.shape)}")

    plan_ = plan_session(pipeline, token.shape[1], prompt_token.shape[1], options, state=state)
    sched, deviations = plan_.schedule, plan_.deviations
    finalize_all, slice_shift, hift_input = plan_.finalize_all, plan_.slice_shift, plan_.hift_input
    hold = hift_holdback_frames(pipeline.hift)
    spf = int(pipeline.cfg.hift.hop_samples)
    ratio = opts.token_mel_ratio
    noise = pipeline.noise if plan_.noise_mode == "absolute" else ChunkLocalNoise(pipeline.noise)
    steps = set(plan_.step_chunks)

    cum: torch.Tensor | None = None
    speech_offset = 0
    pieces: list[torch.Tensor] = []
    records: list[ChunkRecord] = []
    emitted = 0
    for plan in sched.chunks:
        c = plan.index
        cp = probe.sub(f"chunk{c}.")
        finalize = plan.finalize or finalize_all
        tokens = token[:, :plan.n_tokens]
        cp("tokens", tokens)
        cp("token_offset", _scalar(plan.token_offset))
        cp("finalize", _scalar(finalize))
        cp("streaming", _scalar(plan.streaming))
        fp = _FlowProbe(cp.recorder, cp.prefix) if (c in steps and cp) else NO_PROBE
        mel_full = pipeline.flow.inference(tokens, prompt_token, prompt_feat, embedding, noise,
                                           streaming=plan.streaming, finalize=finalize, probe=fp)
        mel_full = mel_full.to(dtype)
        cp("flow_mel_full", mel_full)
        start = max(plan.token_offset * ratio + slice_shift, 0)
        mel = mel_full[:, :, start:]
        cp("mel", mel)
        cum = mel if cum is None else torch.cat([cum, mel], dim=2)
        hift_in = cum if hift_input == "cumulative" else mel
        vp = _VocoderProbe(cp.recorder, cp.prefix) if cp else NO_PROBE
        speech = pipeline.hift.inference(hift_in, noise, finalize=finalize, probe=vp)
        if hift_input == "cumulative":
            new = speech[:, speech_offset:]
            speech_offset += new.shape[1]
        else:  # fault: each call's output is emitted whole
            new = speech
        cp("audio", new)
        pieces.append(new)
        records.append(ChunkRecord(c, plan.token_offset, plan.n_tokens, finalize, plan.streaming, start,
                                   mel.shape[2], hift_in.shape[2], new.shape[1], emitted))
        emitted += new.shape[1]
    stream_audio = torch.cat(pieces, dim=1)
    probe("stream.mel", cum)
    probe("stream.audio", stream_audio)
    if opts.hop_state == "carried" and state is not None:
        state.token_hop_len = sched.hop_after
    return SessionResult(stream_audio, cum, sched, records, opts, hold, spf, int(pipeline.cfg.sample_rate), deviations)


def session_provenance(pipeline, options: SessionOptions | None = None) -> dict:
    """The pipeline's provenance for a session run (the chunk mask is on for the non-final calls), with the
    session's resolved options; :meth:`SessionResult.metadata` adds the schedule after the run."""
    p = dict(pipeline.provenance(streaming=True, finalize=True))
    p["session"] = "streaming"
    p["session_options"] = (options or SessionOptions()).resolve(pipeline.cfg).to_dict()
    return p
