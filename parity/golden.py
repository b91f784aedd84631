"""Golden regression of the reference: compact fp32 traces in fixtures/golden, one per (bundle, run mode)
(``<bundle>-<mode label>.safetensors``: ``short-offline``, ``short-streaming``, ``stream-streaming-session``),
checked by the pytest plugin's ``parity_golden`` fixture and rewritten, with the shipped floors beside them, under
``--parity-update-golden`` (a missing golden fails without it: it is never written silently)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


class Golden:
    """Golden regression of the reference: compact fp32 traces in fixtures/golden with their versions, one per
    (bundle, run mode): ``<bundle>-<mode label>.safetensors`` (``short-offline``, ``short-streaming``,
    ``stream-streaming-session``)."""

    # the metadata a golden keeps (a streaming session's also: its options, plan and what its calls did)
    META = ("model", "weights_sha256", "noise", "n_timesteps", "t_scheduler", "cfg_rate", "streaming", "finalize",
            "dtypes", "attention")
    SESSION_META = ("session", "session_options", "session_plan", "session_schedule", "session_chunks",
                    "session_holdback_frames", "session_samples_per_frame", "session_deviations", "sample_rate")

    def __init__(self, ps, update: bool):
        """``ps``: the pytest session's :class:`parity.pytest_plugin.ParityHarness`."""
        self.ps = ps
        self.update = update
        self.dir = ps.pc.rootdir / "fixtures" / "golden"

    @staticmethod
    def mode_of(mode):
        from .capture.runner import RunMode

        return mode if isinstance(mode, RunMode) else RunMode(streaming=bool(mode))

    def path(self, bundle, mode=False) -> Path:
        return self.dir / f"{Path(bundle).stem}-{self.mode_of(mode).label}.safetensors"

    def check(self, bundle, mode=False, model=None):
        """The comparison result of the reference against its golden trace in ``mode`` (a
        :class:`parity.capture.runner.RunMode`, or the ``streaming`` flag of one call), rewriting it first (and the
        shipped floors beside it) under ``--parity-update-golden``. A missing golden fails the test unless the
        option is given: it is never written silently and compared with itself. The golden holds the stages of
        :func:`parity.stages.golden_patterns` (a streaming session's: its calls' control values, appended frames,
        a few ODE states of the recorded chunks and the stream) and is compared as the run is (a session's
        schedule included)."""
        import fnmatch

        from .stages import golden_patterns

        mode = self.mode_of(mode)
        res = self.ps.reference(bundle, model=model, mode=mode)
        pats = golden_patterns(mode.is_session)
        tensors = {k: v for k, v in res.tensors.items() if any(fnmatch.fnmatchcase(k, p) for p in pats)}
        result = self._check(self.path(bundle, mode), tensors, res.metadata,
                             self.SESSION_META if mode.is_session else ())
        if self.update:  # the shipped floors of this bundle and mode beside the golden (a session: its fp32 floor)
            self.update_floors(bundle, mode, model)
        return result

    def _check(self, path: Path, tensors: dict, ref_meta: dict, extra_keys=()):
        from .ingest import Loaded, load
        from .judge.compare import compare_loaded
        from .judge.policy import load_policy
        from .judge.spec import ComparisonSpec
        from .trace import write_trace

        meta = {k: ref_meta.get(k) for k in self.META + tuple(extra_keys)}
        meta["env"] = ref_meta.get("env")
        meta["versions"] = _versions()
        meta["pipeline"] = "reference"
        if not path.exists() and not self.update:
            pytest.fail(f"golden trace {path} is missing: rerun with --parity-update-golden to write it from the "
                        f"current reference (then review and commit it)", pytrace=False)
        if self.update:
            old = load(path) if path.exists() else None
            write_trace(path, tensors, meta)
            if old is not None:
                changed = []
                for k, t in tensors.items():
                    o = old.tensors.get(k)
                    if o is None or o.shape != t.shape:
                        changed.append(f"{k}: new or reshaped")
                    else:
                        d = float((o.double() - t.double()).abs().max())
                        if d:
                            changed.append(f"{k}: max |diff| {d:.3g}")
                print(f"\nparity: golden {path.name} rewritten; "
                      + ("; ".join(changed) if changed else "no tensor changed"))
            else:
                print(f"\nparity: golden {path.name} written")
        gold = load(path)
        cur = Loaded(tensors, dict(meta, env=ref_meta.get("env")), f"<reference {path.stem}>")
        # the golden is the fp32 reference itself: judged by the flat fp32 rules (no floor, no audio section)
        spec = ComparisonSpec(policy=load_policy(None, self.ps.pc.project), precision="fp32", attention="explicit",
                              audio_metrics=False, mask_check=False)
        return compare_loaded(gold, cur, spec)

    def update_floors(self, bundle, mode=False, model=None) -> list[Path]:
        """Rewrite the shipped floors of (bundle, mode) beside the golden: the fp32 noise floor and the envelope of
        each reduced-precision profile of the suite (:func:`parity.floor.store.write_shipped`); a streaming
        session's fp32 floor only."""
        from .floor.store import write_shipped

        mode = self.mode_of(mode)
        model = model or self.ps.model()
        paths = write_shipped(model, bundle, streaming=mode.streaming, profiles=self.ps.pc.profiles, directory=self.dir,
                              log=lambda m: print(f"\nparity: {m}"), session=mode.session, label=mode.label)
        floors = self.ps.harness.floors
        if floors is not None:
            floors.forget()
        return paths


def _versions() -> dict:
    import platform

    import numpy
    import torch

    return {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "written": time.strftime("%Y-%m-%d")}
