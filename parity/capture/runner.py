"""capture: run a pipeline (reference or candidate) on one input bundle and write its trace.

The trace is written incrementally; if the pipeline raises, the trace is closed with the error and
the stage it was computing, so a crash mid-pipeline still leaves everything captured before it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reference.errors import ParityUserError
from reference.probe import Probe

from .recorder import Recorder
from ..stages import PROGRESS_MARKS, canonical_expected, parse_step
from ..trace import TraceWriter, now_iso


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


class Progress:
    """Per-pipeline and per-ODE-step progress on a terminal; silent when stderr is not a TTY."""

    def __init__(self, label: str, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.t0 = time.perf_counter()

    def stage(self, name: str, _t=None) -> None:
        if not self.enabled:
            return
        st = parse_step(name)
        if st and st[1] == "x":
            msg = f"ODE step {st[0]}"
        elif name in PROGRESS_MARKS:
            msg = PROGRESS_MARKS[name]
        else:
            return
        self.stream.write(f"\r\x1b[K{self.label}: {msg} ({time.perf_counter() - self.t0:.1f} s)")
        self.stream.flush()

    def done(self, ok: bool = True) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[K{self.label}: {'done' if ok else 'FAILED'} in "
                              f"{time.perf_counter() - self.t0:.1f} s\n")
            self.stream.flush()


def next_expected(recorded: list[str], n_steps: int, blocks: int = 0) -> str | None:
    """The canonical stage after the last one recorded: where a crash happened."""
    expected = canonical_expected(n_steps, blocks)
    done = set(recorded)
    for name in expected:
        if name not in done:
            return name
    return None


def run_to_trace(pipeline, inputs: dict, out: str | Path | None, *, patterns=None, streaming: bool = False,
                 finalize: bool = True, extra_meta: dict | None = None, progress: Progress | None = None,
                 raise_errors: bool = False) -> RunResult:
    """Run ``pipeline.run(inputs, probe, streaming=, finalize=)`` recording every wanted stage.

    User errors (bad inputs) are re-raised; any other exception is recorded in the trace (status
    ``crashed``, with the stage being computed) and returned, unless ``raise_errors``.
    """
    meta = dict(pipeline.provenance(streaming=streaming, finalize=finalize))
    meta.update(extra_meta or {})
    meta["started"] = now_iso()
    writer = TraceWriter(out, meta) if out is not None else None
    on_rec = progress.stage if progress else None
    rec = Recorder(patterns, writer=writer, on_record=on_rec)
    t0 = time.perf_counter()
    audio, err, at = None, None, None
    try:
        audio = pipeline.run(inputs, Probe(rec), streaming=streaming, finalize=finalize)
    except ParityUserError as exc:
        if writer is not None:
            writer.close(error=exc, stage=None)
        raise
    except Exception as exc:  # a crashing candidate is a finding, not a traceback (re-raised on request)
        err = exc
        n_steps = int(meta.get("n_timesteps") or 10)
        at = next_expected(rec.order, n_steps)
        if raise_errors:
            if writer is not None:
                writer.close(error=exc, stage=at)
            raise
    seconds = time.perf_counter() - t0
    # what the run learned about itself (kernels that actually ran, ...)
    post = getattr(pipeline, "run_metadata", None)
    return finish_run(out, rec, meta, writer, progress, post() if callable(post) else {}, audio, err, at, seconds)


def finish_run(out, rec, meta: dict, writer, progress, post: dict, audio, err, at, seconds: float) -> "RunResult":
    """The end of every capture (single call or session): ``post`` metadata into the trace, the trace closed
    (with the crash stage), the status and error recorded; the :class:`RunResult`."""
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
