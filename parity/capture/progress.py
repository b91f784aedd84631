"""Progress lines of a capture on a terminal (silent when stderr is not a TTY): per pipeline and per ODE step;
a streaming session's (:class:`parity.capture.session.SessionProgress`) per chunk."""

from __future__ import annotations

import sys
import time

from ..stages import PROGRESS_MARKS, parse_step


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
