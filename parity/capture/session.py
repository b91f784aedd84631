"""capture for the streaming session kind: upstream's chunked token2wav loop (:mod:`reference.session`) run on a
pipeline (reference or candidate), every stage recorded into an incremental trace.

Registered as session kind ``"streaming"`` (:func:`parity.session.register_session_kind`), so
``RunMode(streaming=True, session="streaming", options=SessionOptions(...))`` runs through the same
:func:`parity.session.run_case`, reference cache, CLI, pytest plugin and bisector as a single call.

The trace metadata is the pipeline's provenance for a session (:func:`reference.session.session_provenance`:
the resolved options), the plan the loop will follow (``session_plan``, ``session_deviations``: written before
the first call, so a crash keeps them) and, after the run, :meth:`reference.session.SessionResult.metadata`
(the schedule, what each call did). A crash inside the loop closes the trace with the stage being computed,
found from the plan (which chunk, which stage): everything recorded before it is kept.
"""

from __future__ import annotations

import time
from pathlib import Path

from reference.errors import ParityUserError
from reference.probe import Probe
from reference.session import SessionOptions, plan_session, session_provenance

from .recorder import Recorder, parse_stage_patterns
from .runner import Progress, RunResult, finish_run
from ..stages import SESSION_PATTERNS, canonical_session_expected, parse_chunk, parse_step
from ..trace import TraceWriter, now_iso

SESSION_KIND = "streaming"


def session_patterns(spec=None) -> list[str]:
    """Capture patterns of a session run: ``None`` -> :data:`parity.stages.SESSION_PATTERNS`; ``"+a,+b"`` ->
    those plus a, b; anything else as :func:`parity.capture.parse_stage_patterns` reads it."""
    if spec is None:
        return list(SESSION_PATTERNS)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if items and all(i.startswith("+") for i in items):
        return list(SESSION_PATTERNS) + [i[1:] for i in items]
    return parse_stage_patterns(items)


class SessionProgress(Progress):
    """Progress lines of a session: each chunk's ODE steps (when recorded) and each call's emitted audio."""

    def stage(self, name: str, _t=None) -> None:
        if not self.enabled:
            return
        ch = parse_chunk(name)
        if ch is None:
            return
        c, field = ch
        st = parse_step(field)
        if st and st[1] == "x":
            msg = f"chunk {c}: ODE step {st[0]}"
        elif field == "audio":
            msg = f"chunk {c} emitted"
        else:
            return
        self.stream.write(f"\r\x1b[K{self.label}: {msg} ({time.perf_counter() - self.t0:.1f} s)")
        self.stream.flush()


def next_session_stage(rec: Recorder, n_calls: int, step_chunks, n_steps: int) -> str | None:
    """The canonical session stage after the last one recorded (among those the recorder keeps): where a
    crashed session stopped -- its chunk and its stage."""
    done = set(rec.order)
    for name in canonical_session_expected(n_calls, step_chunks, n_steps):
        if name not in done and rec.wants(name):
            return name
    return None


def run_streaming_session(pipeline, inputs: dict, out: str | Path | None, *, mode, patterns=None,
                          extra_meta: dict | None = None, progress: Progress | None = None,
                          raise_errors: bool = False) -> RunResult:
    """Run upstream's streaming loop with ``mode.options`` (a :class:`SessionOptions`, None = upstream's
    defaults) on ``pipeline``, recording every wanted stage into the trace at ``out`` (None: in memory).

    User errors (bad inputs or options) are re-raised; any other exception is recorded in the trace (status
    ``crashed``, with the chunk stage being computed) and returned, unless ``raise_errors``."""
    options = mode.options if mode.options is not None else SessionOptions()
    if not isinstance(options, SessionOptions):
        raise TypeError(f"session kind {SESSION_KIND!r} needs SessionOptions, got {type(options).__name__}")
    meta = dict(session_provenance(pipeline, options))  # resolves (and checks) the options
    meta.update(extra_meta or {})
    n_tok = int(inputs["token"].shape[-1]) if "token" in inputs else 0
    n_prompt = int(inputs["prompt_token"].shape[-1]) if "prompt_token" in inputs else 0
    plan = plan_session(pipeline, n_tok, n_prompt, options)
    meta["session_plan"] = plan.schedule.to_dict()
    meta["session_deviations"] = dict(plan.deviations)
    meta["session_step_chunks"] = list(plan.step_chunks)
    meta["started"] = now_iso()
    writer = TraceWriter(out, meta) if out is not None else None
    if progress is not None and not isinstance(progress, SessionProgress):
        progress = SessionProgress(progress.label, progress.enabled, progress.stream)
    rec = Recorder(session_patterns(patterns), writer=writer, on_record=progress.stage if progress else None)
    t0 = time.perf_counter()
    res, err, at = None, None, None
    run = getattr(pipeline, "run_session", None)
    try:
        if run is None:
            from reference.session import run_session

            res = run_session(pipeline, inputs, Probe(rec), options)
        else:
            res = run(inputs, Probe(rec), options)
    except ParityUserError as exc:
        if writer is not None:
            writer.close(error=exc, stage=None)
        raise
    except Exception as exc:  # a crashing candidate is a finding, not a traceback (re-raised on request)
        err = exc
        at = next_session_stage(rec, len(plan.schedule.chunks), plan.step_chunks, int(meta.get("n_timesteps") or 10))
        if raise_errors:
            if writer is not None:
                writer.close(error=exc, stage=at)
            raise
    seconds = time.perf_counter() - t0
    post = {}
    if res is not None:
        post.update(res.metadata())
    run_meta = getattr(pipeline, "run_metadata", None)
    if callable(run_meta):
        post.update(run_meta())
    return finish_run(out, rec, meta, writer, progress, post, res.audio if res is not None else None, err, at,
                      seconds)


def session_mode(options: SessionOptions | None = None):
    """The :class:`parity.session.RunMode` of a streaming session with ``options``."""
    from ..harness import RunMode

    return RunMode(streaming=True, finalize=True, session=SESSION_KIND, options=options)


def options_from_args(args) -> SessionOptions | None:
    """``SessionOptions`` from the CLI's session options (:func:`parity.args.session_parent`), or None when
    ``--session`` is not ``streaming``; session options without it are an error (exit 2)."""
    from reference.errors import InputError

    given = {k: getattr(args, k, None) for k in ("initial_hop", "max_hop", "growth", "final_mask", "hop_state",
                                                 "carried_hop", "step_chunks")}
    kind = getattr(args, "session", None) or "single"
    if kind != SESSION_KIND:
        used = [k.replace("_", "-") for k, v in given.items() if v is not None]
        if used:
            raise InputError(f"--{', --'.join(used)}: session options need --session streaming")
        return None
    if getattr(args, "no_finalize", False):
        raise InputError("--no-finalize has no meaning in a streaming session (every call but the last is "
                         "non-final; the loop decides)")
    kw = {k: v for k, v in given.items() if v is not None}
    if "step_chunks" in kw:
        kw["step_chunks"] = parse_step_chunks(kw["step_chunks"])
    opts = SessionOptions(**kw)
    return opts


def parse_step_chunks(spec: str) -> tuple:
    """``first,last`` | ``all`` | ``0,2,-1`` | ``none`` -> the ``step_chunks`` tuple."""
    from reference.errors import InputError

    out: list = []
    for s in (x.strip() for x in str(spec).split(",")):
        if not s or s == "none":
            continue
        if s in ("first", "last", "all"):
            out.append(s)
            continue
        try:
            out.append(int(s))
        except ValueError:
            raise InputError(f"--step-chunks {spec!r}: expected chunk indices, first, last, all or none") from None
    return tuple(out)


def session_cli_args(options: SessionOptions | None = None) -> list[str]:
    """The ``parity dump`` arguments of a streaming session with ``options`` (for a child process: ``bisect git``)."""
    o = options or SessionOptions()
    argv = ["--session", SESSION_KIND]
    for flag, v, default in (("--initial-hop", o.initial_hop, None), ("--max-hop", o.max_hop, None),
                             ("--growth", o.growth, 2), ("--final-mask", o.final_mask, "upstream"),
                             ("--hop-state", o.hop_state, "fresh"), ("--carried-hop", o.carried_hop, None)):
        if v != default:
            argv += [flag, str(v)]
    steps = (o.step_chunks,) if isinstance(o.step_chunks, (str, int)) else tuple(o.step_chunks)
    if steps != ("first", "last"):
        argv += ["--step-chunks", ",".join(str(s) for s in steps) or "none"]
    return argv
