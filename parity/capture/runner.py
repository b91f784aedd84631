"""capture: run a pipeline (reference or candidate) on one input bundle and write its trace.

A run is N calls of the pipeline: one token2wav call (N = 1, stage names without a prefix: ``mu``,
``step3.v1``, ``audio``), or upstream's streaming session (a call per chunk, stages under ``chunk{c}.`` and the
stream's ``stream.*``). :class:`RunMode` says which; :func:`run_pipeline` is the one runner for both: the
provenance and the plan of the calls go into the trace before the first call, every wanted stage is appended
as it is recorded, and if the pipeline raises, the trace is closed with the error and the stage it was
computing (found from the plan), so a crash mid-pipeline still leaves everything captured before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reference.errors import ParityUserError
from reference.probe import Probe
from reference.session import SessionOptions

from ..stages import canonical_expected
from ..trace import TraceWriter, now_iso
from .progress import Progress
from .recorder import Recorder


@dataclass(frozen=True)
class RunMode:
    """How a pipeline is driven on one bundle: ``streaming`` (the static chunk mask), ``finalize``, and
    ``session``: None for one call, or the options of upstream's streaming session loop
    (:class:`reference.session.SessionOptions`; its calls run with the chunk mask but the final one, and
    finalize only on the last). Hashable: part of every cache key and, through :attr:`label`, of case and trace
    names."""

    streaming: bool = False
    finalize: bool = True
    session: SessionOptions | None = None

    def __post_init__(self):
        if self.session is not None and not (self.streaming and self.finalize):
            raise ValueError("a streaming session is streaming (its calls use the chunk mask) and finalizes itself "
                             "(only its last call is final): RunMode.streaming_session(options)")

    @classmethod
    def streaming_session(cls, options: SessionOptions | None = None) -> "RunMode":
        """Upstream's streaming session loop with ``options`` (None: upstream's defaults)."""
        return cls(streaming=True, finalize=True, session=options if options is not None else SessionOptions())

    @property
    def is_session(self) -> bool:
        """More than one call: upstream's streaming session loop."""
        return self.session is not None

    @property
    def kind(self) -> str:
        """What the trace's ``session`` metadata records: ``single`` (one call) or ``streaming`` (the loop)."""
        return "streaming" if self.session is not None else "single"

    @property
    def label(self) -> str:
        """``offline`` | ``streaming`` (one call), ``streaming-session`` (the loop) + ``-<options tag>`` when its
        options are not upstream's: case names, trace names, golden names."""
        if self.session is None:
            return "streaming" if self.streaming else "offline"
        tag = self.session.tag()
        return f"streaming-session-{tag}" if tag else "streaming-session"


@dataclass
class RunResult:
    trace_path: Path | None
    tensors: dict
    metadata: dict
    audio: torch.Tensor | None = None
    error: BaseException | None = None
    crashed_at: str | None = None
    seconds: float = 0.0
    stages: list = field(default_factory=list)


def next_expected(recorded: list[str], n_steps: int, blocks: int = 0) -> str | None:
    """The canonical stage after the last one recorded: where a crash happened."""
    expected = canonical_expected(n_steps, blocks)
    done = set(recorded)
    for name in expected:
        if name not in done:
            return name
    return None


class OneCall:
    """The plan of a single token2wav call (``pipeline.run(inputs, probe, streaming=, finalize=)``)."""

    def __init__(self, pipeline, inputs: dict, mode: RunMode):
        self.mode = mode

    def provenance(self, pipeline) -> dict:
        return dict(pipeline.provenance(streaming=self.mode.streaming, finalize=self.mode.finalize))

    def patterns(self, patterns):
        return patterns

    def progress(self, progress: "Progress | None") -> "Progress | None":
        return progress

    def run(self, pipeline, inputs: dict, probe: Probe) -> tuple:
        """(audio, metadata the run adds)."""
        return pipeline.run(inputs, probe, streaming=self.mode.streaming, finalize=self.mode.finalize), {}

    def crash_stage(self, rec: Recorder, meta: dict) -> str | None:
        return next_expected(rec.order, int(meta.get("n_timesteps") or 10))


def plan_calls(pipeline, inputs: dict, mode: RunMode):
    """The plan of the calls ``mode`` makes: one call, or the streaming session's (:mod:`.session`)."""
    if mode.session is None:
        return OneCall(pipeline, inputs, mode)
    from .session import SessionCalls

    return SessionCalls(pipeline, inputs, mode)


def run_pipeline(pipeline, inputs: dict, out: str | Path | None, mode: RunMode = RunMode(), *, patterns=None,
                 extra_meta: dict | None = None, progress: "Progress | None" = None,
                 raise_errors: bool = False) -> RunResult:
    """Run ``pipeline`` on ``inputs`` as ``mode`` says, recording every wanted stage (``patterns``, see
    :func:`parity.capture.recorder.parse_stage_patterns`) into the trace at ``out`` (None: in memory).

    User errors (bad inputs or options) are re-raised; any other exception is recorded in the trace (status
    ``crashed``, with the stage being computed) and returned, unless ``raise_errors``.
    """
    plan = plan_calls(pipeline, inputs, mode)
    meta = plan.provenance(pipeline)  # resolves (and checks) the mode's options before anything is written
    meta.update(extra_meta or {})
    meta["started"] = now_iso()
    writer = TraceWriter(out, meta) if out is not None else None
    progress = plan.progress(progress)
    rec = Recorder(plan.patterns(patterns), writer=writer, on_record=progress.stage if progress else None)
    t0 = time.perf_counter()
    audio, post, err, at = None, {}, None, None
    try:
        audio, post = plan.run(pipeline, inputs, Probe(rec))
    except ParityUserError as exc:
        if writer is not None:
            writer.close(error=exc, stage=None)
        raise
    except Exception as exc:  # a crashing candidate is a finding, not a traceback (re-raised on request)
        err = exc
        at = plan.crash_stage(rec, meta)
        if raise_errors:
            if writer is not None:
                writer.close(error=exc, stage=at)
            raise
    seconds = time.perf_counter() - t0
    # what the run learned about itself (kernels that actually ran, ...)
    run_meta = getattr(pipeline, "run_metadata", None)
    post = dict(post, **(run_meta() if callable(run_meta) else {}))
    return finish_run(out, rec, meta, writer, progress, post, audio, err, at, seconds)


def finish_run(out, rec, meta: dict, writer, progress, post: dict, audio, err, at, seconds: float) -> "RunResult":
    """The end of a capture: ``post`` metadata into the trace, the trace closed (with the crash stage), the
    status and error recorded; the :class:`RunResult`."""
    for k, v in post.items():
        meta[k] = v
        if writer is not None:
            writer.set_metadata(k, v)
    if writer is not None:
        writer.set_metadata("seconds", round(seconds, 4))
        writer.close(error=err, stage=at)
    if progress:
        progress.done(err is None)
    meta["seconds"] = seconds
    if err is not None:
        meta["status"] = "crashed"
        meta["error"] = {"type": type(err).__name__, "message": str(err)[:2000], "stage": at,
                         "last_recorded": rec.last}
    else:
        meta["status"] = "complete"
    return RunResult(Path(out) if out is not None else None, rec.tensors, meta, audio, err, at, seconds, rec.order)
