"""capture of a streaming session: upstream's chunked token2wav loop (:mod:`reference.session`) run on a pipeline
(reference or candidate) by the one runner (:func:`parity.capture.runner.run_pipeline` with
``RunMode.streaming_session(options)``): the plan of its calls, the stages it records (``chunk{c}.*`` of each call,
the flow's own stages of the chunks that record them, ``stream.*``), its progress lines and where a crash stopped
(which chunk, which stage). Everything recorded before a crash is kept.
"""

from __future__ import annotations

import time

from reference.probe import Probe
from reference.session import SessionOptions, plan_session, session_provenance

from ..stages import SESSION_PATTERNS, canonical_session_expected, parse_chunk, parse_step
from .recorder import Recorder, parse_stage_patterns
from .progress import Progress


def session_patterns(spec=None) -> list[str]:
    """Capture patterns of a session run: ``None`` -> :data:`parity.stages.SESSION_PATTERNS`; ``"+a,+b"`` ->
    those plus a, b; anything else as :func:`parity.capture.recorder.parse_stage_patterns` reads it."""
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


class SessionCalls:
    """The plan of a streaming session: upstream's loop (:func:`reference.session.run_session`, or the pipeline's
    own ``run_session``) with ``mode.session`` options. The trace metadata is the pipeline's provenance for a
    session (:func:`reference.session.session_provenance`: the resolved options), the plan the loop will follow
    (``session_plan``, ``session_deviations``, ``session_step_chunks``: written before the first call, so a crash
    keeps them) and, after the run, :meth:`reference.session.SessionResult.metadata` (the schedule, what each call
    did). A crash inside the loop is placed from the plan: which chunk, which stage."""

    def __init__(self, pipeline, inputs: dict, mode):
        self.options = mode.session
        if not isinstance(self.options, SessionOptions):
            raise TypeError(f"a streaming session needs SessionOptions, got {type(self.options).__name__}")
        self.n_tok = int(inputs["token"].shape[-1]) if "token" in inputs else 0
        self.n_prompt = int(inputs["prompt_token"].shape[-1]) if "prompt_token" in inputs else 0
        self.plan = None

    def provenance(self, pipeline) -> dict:
        meta = dict(session_provenance(pipeline, self.options))  # resolves (and checks) the options
        self.plan = plan_session(pipeline, self.n_tok, self.n_prompt, self.options)
        meta["session_plan"] = self.plan.schedule.to_dict()
        meta["session_deviations"] = dict(self.plan.deviations)
        meta["session_step_chunks"] = list(self.plan.step_chunks)
        return meta

    def patterns(self, patterns) -> list[str]:
        return session_patterns(patterns)

    def progress(self, progress: Progress | None) -> Progress | None:
        if progress is not None and not isinstance(progress, SessionProgress):
            return SessionProgress(progress.label, progress.enabled, progress.stream)
        return progress

    def run(self, pipeline, inputs: dict, probe: Probe) -> tuple:
        run = getattr(pipeline, "run_session", None)
        if run is None:
            from reference.session import run_session

            res = run_session(pipeline, inputs, probe, self.options)
        else:
            res = run(inputs, probe, self.options)
        return res.audio, res.metadata()

    def crash_stage(self, rec: Recorder, meta: dict) -> str | None:
        return next_session_stage(rec, len(self.plan.schedule.chunks), self.plan.step_chunks,
                                  int(meta.get("n_timesteps") or 10))


