"""Canonical stage names, their pipeline order and their tensor layouts: the stage vocabulary of the harness
(every list of stage names lives here; other modules name single stages only where they give them meaning).

Pipeline order: inputs, flow front end, noise, the ODE steps (t, dt, blocks, v1, v2, v_cfg, x per
step), the flow mel, then HiFT (f0, source, s_stft, conv_pre, internals, magnitude, phase, audio).
Names outside the table sort after the known ones of their group, in recording order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INPUTS = ["token", "prompt_token", "prompt_feat", "embedding"]
FRONT = ["mu", "spks", "cond", "x0"]
STEP_FIELDS = ["t", "dt", "v1", "v2", "v_cfg", "x"]
STEP_OUTPUTS = ("v1", "v2", "v_cfg", "x")  # what each step computes (judged per step; step-local reruns)
VOCODER = ["f0", "source", "s_stft", "conv_pre"]
HIFT_INTERNAL_ORDER = ["ups", "source_down", "fusion", "resblocks"]
VOCODER_TAIL = ["hift.conv_post", "magnitude", "phase", "audio_preclamp", "audio"]
VOCODER_OUTPUTS = VOCODER + ["magnitude", "phase", "audio_preclamp", "audio"]  # what the vocoder reports by default

# capture: what a trace records by default; per-block DiT outputs and HiFT internals are opt-in
DEFAULT_PATTERNS = INPUTS + FRONT + [f"step*.{f}" for f in STEP_FIELDS] + ["flow_mel"] + VOCODER_OUTPUTS
# what a noise floor records (parity.floor): every stage a single call can capture, the DiT blocks' outputs and the
# HiFT internals too, so that a trace capturing them is judged by the floor there as well
BLOCK_PATTERNS = ["step*.block*", "hift.*"]
FLOOR_PATTERNS = DEFAULT_PATTERNS + BLOCK_PATTERNS
# the compact golden traces of the reference (fixtures/golden)
GOLDEN_STAGES = ["mu", "spks", "cond", "step1.v1", "step1.v2", "step1.v_cfg", "step1.x", "step5.x", "step10.x",
                 "flow_mel", "f0", "conv_pre", "audio"]
# the two stages a user cares most about: the mel the flow hands the vocoder, and what is heard; a comparison
# without them warns (and fails under --require-stages)
KEY_STAGES = ("flow_mel", "audio")
# their counterparts in a streaming session: the cumulative mel the vocoder calls were fed, the emitted stream
SESSION_KEY_STAGES = {"flow_mel": "stream.mel", "audio": "stream.audio"}
# progress lines: the stages whose arrival is worth a line (besides every step's x)
PROGRESS_MARKS = {"flow_mel": "flow done", "f0": "vocoder: F0", "audio": "vocoder done"}

# the unit of the ODE time grid (step{k}.t, step{k}.dt): one fp32 ulp at the grid's end, 2^-23 on [0, 1]; its
# legitimate formulations differ by a few of these (parity.floor.judge judges the grid in it)
TIME_GRID_UNIT = 2.0 ** -23

_STEP_RE = re.compile(r"^step(\d+)\.(.+)$")
_BLOCK_RE = re.compile(r"^block(\d+)$")
_HIFT_RE = re.compile(r"^hift\.([a-z_]+?)(\d*)$")


@dataclass(frozen=True)
class Layout:
    """Which axis holds channels and which holds time, for a canonical stage (None: no such axis)."""

    channel_axis: int | None
    time_axis: int | None
    kind: str  # "tokens", "mel", "vector", "scalar", "block", "frames", "wave", "spectrum"


def parse_step(name: str) -> tuple[int, str] | None:
    m = _STEP_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def position(name: str) -> tuple:
    """Sort key in pipeline order."""
    ch = parse_chunk(name)
    if ch is not None or name in STREAM_STAGES:
        return session_position(name)
    if name in INPUTS:
        return (0, INPUTS.index(name), 0, 0)
    if name in FRONT:
        return (1, FRONT.index(name), 0, 0)
    st = parse_step(name)
    if st:
        k, field = st
        if field in ("t", "dt"):
            return (2, k, STEP_FIELDS.index(field), 0)
        b = _BLOCK_RE.match(field)
        if b:
            return (2, k, 2, int(b.group(1)))
        if field in STEP_FIELDS:
            return (2, k, 3 + STEP_FIELDS.index(field), 0)
        return (2, k, 50, 0)
    if name == "flow_mel":
        return (3, 0, 0, 0)
    if name in VOCODER:
        return (4, VOCODER.index(name), 0, 0)
    m = _HIFT_RE.match(name)
    if m and name not in VOCODER_TAIL:
        part, idx = m.group(1), m.group(2)
        stage = int(idx) if idx else 0
        order = HIFT_INTERNAL_ORDER.index(part) if part in HIFT_INTERNAL_ORDER else len(HIFT_INTERNAL_ORDER)
        return (5, stage, order, 0)
    if name in VOCODER_TAIL:
        return (6, VOCODER_TAIL.index(name), 0, 0)
    return (7, 0, 0, 0)


def sort_stages(names) -> list[str]:
    names = list(names)
    order = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (position(n), order[n]))


def layout(name: str) -> Layout:
    if parse_chunk(name) is not None or name in STREAM_STAGES:
        return session_layout(name)
    if name in ("token", "prompt_token"):
        return Layout(None, 1, "tokens")
    if name == "prompt_feat":
        return Layout(2, 1, "mel")  # time-major, as upstream
    if name in ("embedding", "spks"):
        return Layout(1, None, "vector")
    if name in ("mu", "cond", "x0", "flow_mel"):
        return Layout(1, 2, "mel")
    st = parse_step(name)
    if st:
        field = st[1]
        if field in ("t", "dt"):
            return Layout(None, None, "scalar")
        if _BLOCK_RE.match(field):
            return Layout(2, 1, "block")
        return Layout(1, 2, "mel")
    if name == "f0":
        return Layout(None, 1, "frames")
    if name in ("source", "audio", "audio_preclamp"):
        return Layout(None, -1, "wave")
    if name in ("s_stft", "conv_pre", "magnitude", "phase") or name.startswith("hift."):
        return Layout(1, 2, "spectrum")
    return Layout(None, None, "other")


def is_block_stage(name: str) -> bool:
    """A DiT block's output (``step{k}.block{i}``) or a HiFT internal (``hift.*``): captured on request only."""
    st = parse_step(name)
    return bool(st and _BLOCK_RE.match(st[1])) or name.startswith("hift.")


def is_vocoder_stage(name: str) -> bool:
    return position(name)[0] in (4, 5, 6)


# ---------------------------------------------------------------------------------------------
# data flow: which stages each canonical single-call stage is computed from (diagnosis: a failing stage is
# downstream of a divergence only when one of its inputs fails too)

_HIFT_PART_RE = re.compile(r"^hift\.(ups|source_down|fusion|resblocks)(\d+)$")


def stage_inputs(name: str, present=()) -> tuple[str, ...] | None:
    """The canonical stages ``name`` is computed from, directly: () for the inputs, ``x0`` (the noise) and the time
    grid (``step{k}.t/dt``); None for names outside the single-call table (session stages, unknown names).
    ``present``: the stage names of the two traces, to resolve "the last" (step, block, HiFT stage): the flow mel is
    the last step's ``x``; ``v1``/``v2`` also depend on the step's captured DiT blocks; the vocoder's
    ``hift.conv_post`` on the last captured ``hift.resblocks{i}``, else directly on ``conv_pre`` and ``s_stft``."""
    present = set(present)
    if name in INPUTS or name == "x0":
        return ()
    if name == "mu":
        return ("token", "prompt_token")
    if name == "spks":
        return ("embedding",)
    if name == "cond":
        return ("prompt_feat",)
    st = parse_step(name)
    if st:
        k, field = st
        prev = "x0" if k == 1 else f"step{k - 1}.x"
        step_in = (prev, f"step{k}.t", "mu", "spks", "cond")
        if field in ("t", "dt"):
            return ()
        b = _BLOCK_RE.match(field)
        if b:
            i = int(b.group(1))
            return (f"step{k}.block{i - 1}",) if i > 0 else step_in
        if field in ("v1", "v2"):
            blocks = sorted((n for n in present if (parse_step(n) or (0, ""))[0] == k
                             and _BLOCK_RE.match(parse_step(n)[1])), key=position)
            return step_in + (blocks[-1],) if blocks else step_in
        if field == "v_cfg":
            return (f"step{k}.v1", f"step{k}.v2")
        if field == "x":
            return (prev, f"step{k}.dt", f"step{k}.v_cfg")
        return None
    if name == "flow_mel":
        ks = [parse_step(n)[0] for n in present if parse_step(n)]
        return (f"step{max(ks)}.x",) if ks else ("x0", "mu", "spks", "cond")
    if name in ("f0", "conv_pre"):
        return ("flow_mel",)
    if name == "source":
        return ("f0",)
    if name == "s_stft":
        return ("source",)
    m = _HIFT_PART_RE.match(name)
    if m:
        part, i = m.group(1), int(m.group(2))
        if part == "ups":
            return ("conv_pre",) if i == 0 else (f"hift.resblocks{i - 1}",)
        if part == "source_down":
            return ("s_stft",)
        if part == "fusion":
            return (f"hift.ups{i}", f"hift.source_down{i}")
        return (f"hift.fusion{i}",)
    if name == "hift.conv_post":
        res = sorted((n for n in present if _HIFT_PART_RE.match(n) and n.startswith("hift.resblocks")), key=position)
        return (res[-1],) if res else ("conv_pre", "s_stft")
    if name in ("magnitude", "phase"):
        return ("hift.conv_post",)
    if name == "audio_preclamp":
        return ("magnitude", "phase")
    if name == "audio":
        return ("audio_preclamp",)
    return None


def key_stage_of(name: str) -> str | None:
    """The key output a divergence at ``name`` must reach to matter: ``flow_mel`` for the flow's stages (inputs,
    front end, ODE steps, the mel itself), ``audio`` for the vocoder's; None outside the single-call table."""
    pos = position(name)
    if pos[0] in (0, 1, 2, 3):
        return "flow_mel"
    if pos[0] in (4, 5, 6):
        return "audio"
    return None


def canonical_expected(n_steps: int = 10, blocks: int = 0, vocoder: bool = True) -> list[str]:
    """The canonical stages a complete trace holds (used to name where a crashed run stopped)."""
    out = list(INPUTS) + list(FRONT)
    for k in range(1, n_steps + 1):
        out += [f"step{k}.t", f"step{k}.dt"] + [f"step{k}.block{i}" for i in range(blocks)]
        out += [f"step{k}.{f}" for f in ("v1", "v2", "v_cfg", "x")]
    out.append("flow_mel")
    if vocoder:
        out += VOCODER_OUTPUTS
    return out


# ---------------------------------------------------------------------------------------------
# streaming session stages (reference/session.py): ``chunk{c}.<field>`` per call c of the loop (the final
# call has the last index), the flow's own stages under the chunk prefix for the chunks whose ODE steps
# were recorded, then the whole stream. Order: inputs, then chunk by chunk (control, flow stages,
# flow_mel_full, mel, the vocoder call's f0, audio), then stream.mel, stream.audio.

CHUNK_CONTROL = ["tokens", "token_offset", "finalize", "streaming"]
CHUNK_OUTPUTS = ["mel", "f0", "audio"]  # recording order: the appended frames, the vocoder call's F0, its samples
STREAM_STAGES = ["stream.mel", "stream.audio"]
# capture patterns of a streaming session: per-call control, the flow's own stages of the recorded chunks,
# each call's outputs, the stream
SESSION_PATTERNS = (INPUTS + [f"chunk*.{c}" for c in CHUNK_CONTROL]
                    + [f"chunk*.{p}" for p in FRONT + [f"step*.{f}" for f in STEP_FIELDS]]
                    + ["chunk*.flow_mel_full"] + [f"chunk*.{o}" for o in CHUNK_OUTPUTS] + STREAM_STAGES)
_CHUNK_RE = re.compile(r"^chunk(\d+)\.(.+)$")


def parse_chunk(name: str) -> tuple[int, str] | None:
    """``chunk3.step2.v1`` -> (3, "step2.v1")."""
    m = _CHUNK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def chunk_stage(c: int, field: str) -> str:
    return f"chunk{c}.{field}"


def is_session_stage(name: str) -> bool:
    return parse_chunk(name) is not None or name in STREAM_STAGES


def key_stages(names) -> tuple[str, ...]:
    """The stages a user cares most about for traces holding ``names``: ``flow_mel`` and ``audio`` for one
    call, ``stream.mel`` and ``stream.audio`` for a streaming session (its chunk stages name it one)."""
    if any(is_session_stage(n) for n in names):
        return tuple(SESSION_KEY_STAGES[k] for k in KEY_STAGES)
    return KEY_STAGES


def session_position(name: str) -> tuple:
    """Sort key of a session stage: (8, chunk, (part, ...)) for chunk stages, (9, i, ()) for the stream."""
    if name in STREAM_STAGES:
        return (9, STREAM_STAGES.index(name), ())
    ch = parse_chunk(name)
    if ch is None:
        return (7, 0, 0, 0)
    c, field = ch
    if field in CHUNK_CONTROL:
        return (8, c, (0, CHUNK_CONTROL.index(field)))
    if field == "flow_mel_full":
        return (8, c, (1, 3, 0, 0, 1))  # right after the flow's own flow_mel position
    if field in CHUNK_OUTPUTS:
        return (8, c, (2, CHUNK_OUTPUTS.index(field)))
    return (8, c, (1,) + position(field))


def session_layout(name: str) -> Layout:
    if name == "stream.mel":
        return Layout(1, 2, "mel")
    if name == "stream.audio":
        return Layout(None, -1, "wave")
    c, field = parse_chunk(name)
    if field == "tokens":
        return Layout(None, 1, "tokens")
    if field in ("token_offset", "finalize", "streaming"):
        return Layout(None, None, "scalar")
    if field in ("flow_mel_full", "mel"):
        return Layout(1, 2, "mel")
    if field == "audio":
        return Layout(None, -1, "wave")
    return layout(field)


def canonical_session_expected(n_calls: int, step_chunks=(), n_steps: int = 10) -> list[str]:
    """The stages a complete session trace holds (default capture), in order: where a crashed session stopped."""
    out = list(INPUTS)
    for c in range(n_calls):
        out += [chunk_stage(c, f) for f in CHUNK_CONTROL]
        if c in set(step_chunks):
            out += [chunk_stage(c, f) for f in FRONT]
            for k in range(1, n_steps + 1):
                out += [chunk_stage(c, f"step{k}.{f}") for f in STEP_FIELDS]
        out += [chunk_stage(c, "flow_mel_full")] + [chunk_stage(c, f) for f in CHUNK_OUTPUTS]
    return out + list(STREAM_STAGES)


# the single-call stage whose policy rule a session stage reuses (``chunk*.<stage>`` -> ``<stage>``): the
# call's control values are bit-exact like the inputs, a chunk's flow output and appended frames are judged
# like the flow mel, its emitted samples like the audio, the flow's own stages under the chunk prefix by their
# own rules; the stream like the single call's mel and audio
SESSION_RULE_STAGES = {"tokens": "token", "token_offset": "token", "finalize": "token", "streaming": "token",
                       "flow_mel_full": "flow_mel", "mel": "flow_mel", "audio": "audio",
                       "stream.mel": "flow_mel", "stream.audio": "audio"}
# the golden stream trace of the session bundle (fixtures/golden/<bundle>-<mode label>.safetensors): the calls'
# control values, the frames each call appended (stream.mel is their concatenation), the first step's velocity
# and the last state of the recorded chunks, the stream's audio (each call's samples are a slice of it)
SESSION_GOLDEN_PATTERNS = ["token", "prompt_token"] + [f"chunk*.{c}" for c in CHUNK_CONTROL] + [
    "chunk*.mel", "chunk*.step1.v1", "chunk*.step10.x", "stream.audio"]


def session_rule_stage(name: str) -> str | None:
    """The single-call stage whose rule judges the session stage ``name`` (None: not a session stage)."""
    if name in SESSION_RULE_STAGES:
        return SESSION_RULE_STAGES[name]
    ch = parse_chunk(name)
    if ch is None:
        return None
    field = ch[1]
    return SESSION_RULE_STAGES.get(field, field)


def golden_patterns(session: bool = False) -> list[str]:
    """The stages a golden trace of the reference keeps: :data:`GOLDEN_STAGES` for one call,
    :data:`SESSION_GOLDEN_PATTERNS` for a streaming session (globs)."""
    return list(SESSION_GOLDEN_PATTERNS if session else GOLDEN_STAGES)
