"""In-process trials of candidate configurations (``bisect switches``, ``bisect precision``): each trial runs
the candidate built from a :class:`candidate.switches.Switches` on every bundle, against the reference
computed once per bundle, through the same :func:`parity.harness.run_case` and the same comparison spec as
``parity run`` (the floor store included: a stage only the floor gate sees failing fails a trial too; step-local
errors unless ``local`` is off), and is logged with its verdict, headline, results and report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..project import BUNDLE_DIR, SESSION_BUNDLE_DIR
from ..capture.runner import RunMode
from ..harness import ReferenceCache, run_case
from ..result import Comparison, read_json, write_json
from .log import BisectUsageError, TrialLog, TrialProgress, headline_text, make_workdir
from .page import trial_report

DEFAULT_BUNDLE = BUNDLE_DIR / "medium.safetensors"
DEFAULT_SESSION_BUNDLE = SESSION_BUNDLE_DIR / "stream.safetensors"  # streaming sessions: three chunks + the final call


@dataclass
class SearchSettings:
    """How an in-process search runs: on what (mode, policy, step-local errors), within which budget (trials,
    seconds), and where its log, traces and reports go."""

    streaming: bool = False
    mode: Any = None  # a parity.capture.runner.RunMode; None: the single call ``streaming`` says
    policy: Any = None  # a parity.judge.policy.Policy, a policy TOML file, or None (the defaults); when no spec
    spec: Any = None  # the parity.judge.spec.ComparisonSpec (None: ``policy`` and the default floor store)
    local: bool = True
    max_trials: int | None = None
    timeout: float | None = None
    workdir: str | Path | None = None
    log: str | Path | None = None
    resume: bool = False
    report: str | Path | None = None
    progress: bool | TrialProgress | None = None
    trial_reports: bool = False
    keep_traces: bool = False

    def identity(self) -> dict:
        """What must match for a log to be resumed (besides the searched configuration)."""
        ident = {"streaming": self.streaming, "local": self.local,
                 "policy": str(self.policy) if isinstance(self.policy, (str, Path)) else None,
                 "gate": "flat" if self.spec is not None and self.spec.floors is None else "floor"}
        if self.mode is not None and getattr(self.mode, "is_session", False):
            ident["mode"] = self.mode.label
        return ident

    @property
    def is_session(self) -> bool:
        return self.mode is not None and getattr(self.mode, "is_session", False)

    @property
    def run_mode(self) -> RunMode:
        return self.mode if self.mode is not None else RunMode(streaming=self.streaming)

    def comparison_spec(self):
        """The spec trials are judged by: the given one, else ``policy`` with the default floor store (as
        ``parity run`` judges)."""
        if self.spec is not None:
            return self.spec
        from ..floor.store import FloorStore
        from ..judge.policy import Policy, load_policy
        from ..judge.spec import ComparisonSpec

        pol = self.policy if isinstance(self.policy, Policy) else load_policy(self.policy)
        return ComparisonSpec(policy=pol, floors=FloorStore())


def check_bundles(bundles, session: bool = False) -> list[Path]:
    """The bundles a search runs on (default: the ``medium`` fixture; for a streaming session the session bundle)."""
    out = [Path(b) for b in (bundles or [DEFAULT_SESSION_BUNDLE if session else DEFAULT_BUNDLE])]
    for b in out:
        if not b.exists():
            raise BisectUsageError(f"{b}: input bundle not found")
    return out


def model_identity(model) -> dict:
    return {"model": getattr(model, "model_id", None), "weights": dict(getattr(model, "weights", {}) or {})}


@dataclass
class TrialOutcome:
    verdict: str  # pass | fail | error
    headline: dict | None
    results: list[tuple[str, Comparison, Any]]  # (bundle name, result, Case)
    seconds: float


class CandidateTrials:
    """Runs a candidate configuration on every bundle against the (cached) reference."""

    def __init__(self, model, bundles: list[Path], *, mode: RunMode, spec, local: bool, trace_dir: Path):
        self.model, self.bundles, self.mode, self.spec, self.local = model, bundles, mode, spec, local
        self.trace_dir = trace_dir
        self.refs = ReferenceCache()

    def run(self, sw, label: str) -> TrialOutcome:
        """Every bundle until the first that does not pass (it decides both "fails" and "passes")."""
        import time

        from candidate.pipeline import build_candidate

        t0 = time.perf_counter()
        results, headline, verdict = [], None, "pass"
        cand = build_candidate(self.model, sw, label)
        for b in self.bundles:
            case = run_case(self.model, cand, b, self.mode, self.spec, local=self.local, trace_dir=self.trace_dir,
                            profile_name=label, refs=self.refs)
            # the traces are on disk (trace_dir): do not hold every trial's tensors in memory
            case.ref_tensors, case.cand_tensors, case.local_tensors = {}, {}, {}
            results.append((b.name, case.result, case))
            verdict = case.result.verdict
            if verdict != "pass":
                fd = case.result.first_divergence
                headline = fd.headline_json() if fd else None
                break
        return TrialOutcome(verdict, headline, results, time.perf_counter() - t0)


class InProcessSearch:
    """Shared machinery of ``switches`` and ``precision``: log, progress, traces and reports per trial."""

    def __init__(self, mode: str, model, bundles, settings: SearchSettings, *, identity: dict, log_settings: dict,
                 bound: int):
        self.mode = mode
        self.settings = settings
        self.wd, log_path = make_workdir(settings.workdir, settings.log, mode)
        self.runner = CandidateTrials(model, check_bundles(bundles, settings.is_session), mode=settings.run_mode,
                                      spec=settings.comparison_spec(), local=settings.local,
                                      trace_dir=self.wd / "traces")
        self.log = TrialLog(log_path, mode, identity, resume=settings.resume, settings=log_settings)
        progress = settings.progress
        self.progress = progress if isinstance(progress, TrialProgress) else TrialProgress(mode, progress)
        self.bound = bound if settings.max_trials is None else min(bound, settings.max_trials)
        self.trial_reports = settings.trial_reports
        self.keep_traces = settings.keep_traces
        self.run_trials = 0
        self.kept: dict[frozenset, dict] = {}  # key -> {"entry", "results"}: trials whose traces/results are kept

    def cache_from_log(self) -> dict:
        cache = {}
        for t in self.log.trials:
            if "property" in t and isinstance(t.get("key"), list):
                cache[frozenset(t["key"])] = bool(t["property"])
                if t.get("result_files"):
                    self.kept[frozenset(t["key"])] = {"entry": t}
        return cache

    def trial(self, key: Iterable[str], sw, what: str, prop_of: Callable[[str], bool],
              keep: bool | None = None) -> bool:
        """Run one configuration, log it, and return the property. ``keep``: keep its traces/result (None:
        keep when the property holds)."""
        n = len(self.log.trials) + 1
        label = f"t{n:03d}"
        out = self.runner.run(sw, label)
        prop = prop_of(out.verdict)
        self.run_trials += 1
        keep = prop if keep is None else keep
        files = []
        if keep:
            for bname, result, _case in out.results:
                files.append(self.log.rel(write_json(result, self.wd / "trials" / f"{label}-{Path(bname).stem}.json")))
        elif not self.keep_traces:
            self._drop_traces(out.results)
        rep = None
        if self.trial_reports:
            bname, result, case = next(((b, r, c) for b, r, c in out.results if r.verdict != "pass"),
                                       out.results[-1])
            rep = trial_report(result, self.wd / "trials" / f"{label}-{Path(bname).stem}.html", case=case)
        entry = self.log.add({"n": n, "key": sorted(key), "what": what, "label": label, "verdict": out.verdict,
                              "property": prop, "headline": out.headline, "seconds": round(out.seconds, 3),
                              "bundles": {b: r.verdict for b, r, _ in out.results}, "result_files": files,
                              "report": self.log.rel(rep) if rep else None})
        if keep:
            self.kept[frozenset(key)] = {"entry": entry, "results": out.results}
        self.progress.trial(n, self.bound, what, out.verdict, headline_text(out.headline, 100), out.seconds)
        return prop

    def _drop_traces(self, results) -> None:
        for _b, result, case in results:
            p = getattr(case, "cand_trace", None)
            if p is not None:
                Path(p).unlink(missing_ok=True)

    def report_for(self, key: frozenset, name: str) -> Path | None:
        """The parity report of the (kept) trial with ``key``: its first non-passing bundle, else its first."""
        k = self.kept.get(frozenset(key))
        if not k:
            return None
        entry = k["entry"]
        if entry.get("report"):
            return self.log.abs(entry["report"])
        results = k.get("results")
        if results:
            bname, result, case = next(((b, r, c) for b, r, c in results if r.verdict != "pass"), results[0])
        else:  # from a resumed log: the saved result (its traces, if kept, give the plots)
            files = [self.log.abs(f) for f in entry.get("result_files") or []]
            files = [f for f in files if f and f.exists()]
            if not files:
                return None
            loaded = [read_json(f) for f in files]
            result = next((r for r in loaded if r.verdict != "pass"), loaded[0])
            bname, case = (result.case or {}).get("bundle", "bundle"), None
        rep = trial_report(result, self.wd / "trials" / f"{name}-{entry['label']}-{Path(bname).stem}.html", case=case)
        entry["report"] = self.log.rel(rep)
        self.log.save()
        return rep

    def prune(self, keep_keys: Iterable[frozenset]) -> None:
        """Delete the traces of kept trials that did not end up in the result."""
        if self.keep_traces:
            return
        wanted = {frozenset(k) for k in keep_keys}
        for key, k in list(self.kept.items()):
            if key in wanted:
                continue
            self._drop_traces(k.get("results") or [])
