"""``parity bisect``: which switch, which fp32 islands, which commit broke parity.

Three searches share one trial log, one progress line per trial, bounds on trials and time, and a final
HTML report that names the culprit and links the parity report of the trial that established it:

* ``parity bisect switches --profile NAME`` (or ``--switch K=V`` / ``--fault F``): the profile's atomic
  changes against the reference-equivalent ``Switches()`` defaults (each differing scalar switch, each
  fault) are reduced by delta debugging (:func:`ddmin`) to a 1-minimal set that still fails parity.
  ``keep_fp32`` travels with the dtype change it protects; it is not bisected here.
* ``parity bisect precision --profile NAME``: for a failing reduced-precision profile, the components
  (``time_embed``, ``input_embed``, ``block<i>``, ``norm_out``, ``proj_out``, ``euler``, ``time_grid``,
  ``residual``, ``adaln``, and the ``hift.*`` sub-networks when HiFT runs reduced) that must stay in fp32
  for the profile to pass: a 1-minimal, arbitrary subset found by :func:`ddmin` (``--fine`` refines each
  chosen block into ``block<i>.adaln/attn/ff``). Prints a ready-to-paste ``[tool.parity.profiles.*]``.
* ``parity bisect git --good REV --bad REV [--cmd "COMMAND {out}"]``: ``git bisect run`` with the parity
  check as the oracle. The reference trace is computed once, from the current code, and frozen. Each
  commit runs in its own ``git worktree add --detach`` checkout (the user's working tree is never
  touched: ``git bisect start --no-checkout``): either the commit's own ``candidate`` package through
  ``python -m parity.cli dump`` (``PYTHONPATH=<worktree>:<this project>``), or ``--cmd``, any program
  that writes a dump (``{out}``) in a format :mod:`parity.ingest` reads. Oracle exit codes follow
  ``git bisect run``: 0 good, 1 bad, 125 skip (the commit cannot build or run: no dump, import error,
  timeout, unreadable dump), 128 abort (trial or time budget exhausted). ``git bisect reset`` and the
  worktree clean-up run in a ``finally`` (also on SIGINT/SIGTERM), and the repository state (HEAD,
  branch, ``git status``, worktrees, no bisect in progress) is checked against a snapshot afterwards.

Switches and precision trials run in this process through :func:`parity.run.run_case`, step-local errors
included (the verdict ``parity run`` gives; ``--no-local`` is faster), on every bundle until one does not
pass; the reference is computed once per bundle. Each trial's candidate traces live in the work directory
until it is clear they are not needed for the final report.

Design note on the git oracle (POSIX only: a Unix socket and process groups): ``git bisect run`` starts a tiny client (``oracle.py`` in the work
directory, standard library only, run with ``python -S``) for each commit; it asks this process over a
Unix socket and exits with the code it is given. This process owns the frozen reference (loaded once),
the log (one writer), the budget and the clean-up, so a commit costs one candidate run and no second
``import torch``. If this process dies, the client exits 128 and git aborts the run.

Logs are JSON (schema ``tts-parity-bisect/1``), rewritten atomically after every trial; ``--resume``
reuses finished trials (keyed by the subset, or by the commit sha) when the log was written for the same
search. Exit codes of ``parity bisect``: 0 culprit found, 1 nothing established (the start does not fail,
the end does not pass, the budget ran out, git could not decide), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from reference.errors import InputError, ParityUserError

from .result import read_json

SCHEMA = "tts-parity-bisect/1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = PROJECT_ROOT / "fixtures" / "bundles" / "medium.safetensors"
ABORT = 128  # git bisect run: 128..255 aborts the bisection


class BisectUsageError(InputError):
    """A bisect request that cannot be carried out as given (exit 2)."""


# =============================================================================================
# delta debugging

@dataclass
class DDResult:
    """What :func:`ddmin` found. ``items`` always has the property (it was tested, or is the full set)."""

    items: list
    status: str  # "minimal" | "budget_exhausted" | "full_lacks_property" | "empty_has_property"
    trials: int  # distinct oracle calls made by this run (cache hits are not trials)
    cache_hits: int = 0
    reason: str = ""

    @property
    def minimal(self) -> bool:
        return self.status == "minimal"


class _Budget(Exception):
    pass


def ddmin_bound(n: int) -> int:
    """Worst-case number of distinct oracle calls of :func:`ddmin` on ``n`` items, the two boundary checks
    (full set, empty set) included: ``(n*n + 7*n) // 2`` (and 2 for n <= 1).

    ddmin is quadratic in the worst case and logarithmic (about ``2 + 2*log2(n)``) when one item is to
    blame. The bound was checked exhaustively, playing every possible oracle against this implementation, for
    n <= 9: the worst cases are 2, 4, 8, 14, 21, 30, 40, 50, 61 calls (bound 2, 9, 15, 22, 30, 39, 49, 60,
    72), every result 1-minimal; the tests repeat the check for n <= 6, and ``max_trials`` bounds any run.
    """
    return 2 if n <= 1 else (n * n + 7 * n) // 2


def _halves(chunk: list) -> list[list]:
    if len(chunk) < 2:
        return [chunk]
    h = len(chunk) // 2
    return [chunk[:h], chunk[h:]]


def ddmin(items: Sequence, test: Callable[[list], bool], *, max_trials: int | None = None,
          deadline: float | None = None, cache: dict | None = None,
          on_trial: Callable[[int, list, bool, float], None] | None = None, check_bounds: bool = True) -> DDResult:
    """Zeller & Hildebrandt's ddmin: a 1-minimal subset of ``items`` for which ``test`` is still True.

    ``test(subset) -> bool``: True means "still has the property" (still fails parity, or still passes,
    whatever is being minimised). ``items`` order is kept in every subset passed to ``test``.

    The partition is kept between rounds: after removing a chunk, the remaining chunks are reused (their
    subset tests are cache hits), and refining splits every chunk in two, so every subset tested is a node
    of one fixed halving tree. Calls are memoised by ``frozenset`` in ``cache`` (pass a dict to share it
    between runs, e.g. a resumed log); ``trials`` counts distinct oracle calls only.

    With ``check_bounds`` the full set must have the property and the empty set must not (both go through
    the cache and count as trials); otherwise the status says which and nothing is reduced.
    ``max_trials`` / ``deadline`` (an absolute :func:`time.monotonic` value) stop the search with status
    ``budget_exhausted``, returning the smallest set found so far. The worst case is
    :func:`ddmin_bound` ``(len(items))`` trials.
    """
    items = list(items)
    cache = {} if cache is None else cache
    stats = {"trials": 0, "hits": 0}

    def t(subset: list) -> bool:
        key = frozenset(subset)
        if key in cache:
            stats["hits"] += 1
            return bool(cache[key])
        if max_trials is not None and stats["trials"] >= max_trials:
            raise _Budget(f"trial budget of {max_trials} exhausted")
        if deadline is not None and time.monotonic() >= deadline:
            raise _Budget("time budget exhausted")
        t0 = time.monotonic()
        stats["trials"] += 1
        out = bool(test(list(subset)))
        cache[key] = out
        if on_trial is not None:
            on_trial(stats["trials"], list(subset), out, time.monotonic() - t0)
        return out

    c = items
    try:
        if check_bounds:
            if not t(items):
                return DDResult(items, "full_lacks_property", stats["trials"], stats["hits"],
                                "the full set does not have the property")
            if t([]):
                return DDResult([], "empty_has_property", stats["trials"], stats["hits"],
                                "the empty set already has the property")
        parts = _halves(c)
        while len(c) >= 2:
            reduced = False
            for s in parts:  # reduce to a subset
                if t(s):
                    c, parts, reduced = s, _halves(s), True
                    break
            if not reduced and len(parts) > 2:  # reduce to a complement (equal to the subsets when 2 parts)
                for i, s in enumerate(parts):
                    comp = [x for j, p in enumerate(parts) if j != i for x in p]
                    if t(comp):
                        c, parts, reduced = comp, [p for j, p in enumerate(parts) if j != i], True
                        break
            if not reduced:
                if len(parts) >= len(c):
                    break  # every chunk is one item and nothing can go: 1-minimal
                parts = [h for p in parts for h in _halves(p)]
    except _Budget as exc:
        return DDResult(list(c), "budget_exhausted", stats["trials"], stats["hits"], str(exc))
    return DDResult(list(c), "minimal", stats["trials"], stats["hits"])


# =============================================================================================
# trial log, progress, results

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


class TrialLog:
    """The JSON log of one bisection: identity (what must match to resume), every trial, the result."""

    def __init__(self, path: Path, mode: str, identity: dict, *, resume: bool = False, settings: dict | None = None):
        self.path = Path(path)
        self.mode = mode
        self.identity = _jsonable(identity)
        self.data: dict = {}
        if resume and self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise BisectUsageError(f"{self.path}: cannot resume from this log ({exc})") from exc
            if old.get("schema") != SCHEMA or old.get("mode") != mode:
                raise BisectUsageError(f"{self.path}: not a 'bisect {mode}' log; use another --log or drop --resume")
            if old.get("identity") != self.identity:
                diff = sorted(k for k in set(old.get("identity", {})) | set(self.identity)
                              if old.get("identity", {}).get(k) != self.identity.get(k))
                raise BisectUsageError(f"{self.path}: the log was written for a different bisection (differs in "
                                       f"{', '.join(diff)}); use another --log or drop --resume")
            self.data = old
            self.data["resumed"] = self.data.get("resumed", 0) + 1
        else:
            self.data = {"schema": SCHEMA, "mode": mode, "created": _now(), "identity": self.identity, "trials": []}
        self.data["settings"] = _jsonable(settings or {})
        self.data["status"] = "running"
        self.save()

    @property
    def trials(self) -> list[dict]:
        return self.data["trials"]

    @property
    def dir(self) -> Path:
        return self.path.parent

    def rel(self, p: Path | str | None) -> str | None:
        if p is None:
            return None
        p = Path(p)
        try:
            return str(p.resolve().relative_to(self.dir.resolve()))
        except ValueError:
            return str(p)

    def abs(self, p: str | None) -> Path | None:
        if not p:
            return None
        q = Path(p)
        return q if q.is_absolute() else self.dir / q

    @staticmethod
    def norm_key(key: Any) -> Any:
        """Subsets are stored sorted (order does not matter), commits as their sha."""
        if isinstance(key, (list, tuple, set, frozenset)):
            return sorted(str(k) for k in key)
        return str(key)

    def lookup(self, key: Any) -> dict | None:
        k = self.norm_key(key)
        for t in reversed(self.trials):
            if t.get("key") == k:
                return t
        return None

    def add(self, entry: dict) -> dict:
        entry = _jsonable(entry)
        if "key" in entry:
            entry["key"] = self.norm_key(entry["key"])
        entry.setdefault("n", len(self.trials) + 1)
        self.trials.append(entry)
        self.save()
        return entry

    def update(self, **kw) -> None:
        self.data.update(_jsonable(kw))
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        _atomic_write(self.path, json.dumps(self.data, indent=1))


class TrialProgress:
    """One line per trial on stderr; quiet when stderr is not a terminal unless forced."""

    def __init__(self, mode: str, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if enabled is None \
            else enabled
        self.mode = mode

    def trial(self, n: int, bound: int | None, what: str, verdict: str, headline: str | None, seconds: float,
              note: str = "") -> None:
        if not self.enabled:
            return
        b = f"/{bound}" if bound else ""
        h = f" ({headline})" if headline else ""
        self.stream.write(f"[bisect {self.mode}] trial {n}{b} {what}: {verdict}{h} {seconds:.1f} s{note}\n")
        self.stream.flush()

    def note(self, msg: str) -> None:
        if self.enabled:
            self.stream.write(f"[bisect {self.mode}] {msg}\n")
            self.stream.flush()


def headline_text(h: dict | None, limit: int = 140) -> str | None:
    if not h:
        return None
    s = f"{h.get('stage') or '-'}: {h.get('code') or '?'}"
    msg = h.get("message")
    if msg:
        s += f": {msg}"
    return s if len(s) <= limit else s[:limit - 3] + "..."


@dataclass
class BisectResult:
    """The outcome of a bisection (all three modes)."""

    mode: str
    status: str  # found | no_failure | start_fails | end_fails | budget_exhausted | ambiguous | interrupted | error
    culprit: Any = None  # list of switch/component names, or {"sha", "subject"}
    headline: dict | None = None
    message: str = ""
    trials: int = 0  # trials run by this invocation
    total_trials: int = 0  # trials in the log (resumed ones included)
    bound: int | None = None
    seconds: float = 0.0
    log: Path | None = None
    report: Path | None = None  # the bisect report (HTML)
    trial_report: Path | None = None  # the parity report of the trial that established the culprit
    profile_toml: str | None = None  # precision: ready to paste
    keep_fp32: list | None = None  # precision: the profile's keep_fp32 plus the islands found
    skipped: list = field(default_factory=list)  # git: commits skipped ({"sha", "subject", "reason"})
    warnings: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.status == "found"

    @property
    def exit_code(self) -> int:
        return 0 if self.found else 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return _jsonable(d)


# =============================================================================================
# per-trial parity reports and the bisect report

def trial_report(result, path: Path, case=None) -> Path:
    """The parity report of one trial: :func:`parity.report.build_report` when available, otherwise (or if
    it fails) a small fallback page written here."""
    path = Path(path)
    note = None
    try:
        from .report import build_report  # lazily: heavy (matplotlib) and maybe absent
    except ImportError as exc:
        build_report = None
        note = f"parity.report is not available ({exc})"
    if build_report is not None:
        try:
            return Path(build_report(result, path, case=case))
        except Exception as exc:  # noqa: BLE001 - the bisection's result must not be lost to a plotting error
            note = f"parity.report failed ({type(exc).__name__}: {exc})"
    return _fallback_trial_report(result, path, note)


def _fallback_trial_report(result, path: Path, note: str | None) -> Path:
    """FALLBACK REPORT (used only when parity.report is missing or fails): verdict, headline, findings and
    the per-stage table, no plots."""
    e = html.escape
    fd = result.first_divergence.headline_json() if result.first_divergence else {}
    rows = "".join(
        f"<tr><td>{e(str(s.name))}</td><td>{e(str(s.status))}</td><td>{e(str(s.statistic))}"
        f"</td><td>{e(str(s.value))}</td><td>{e(str(s.limit))}</td></tr>"
        for s in result.stages)
    finds = "".join(f"<li><b>{e(str(f.severity))}</b> {e(str(f.code))} at {e(str(f.stage))}: "
                    f"{e(str(f.message))}</li>" for f in result.findings)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>parity trial report (fallback)</title></head>"
            f"<body><p><i>Fallback report written by parity.bisect: {e(note or 'parity.report unavailable')}.</i></p>"
            f"<h1>verdict: {e(str(result.verdict))}</h1>"
            f"<p>first divergence: {e(str(fd.get('stage')))} {e(str(fd.get('code')))}: {e(str(fd.get('message')))}</p>"
            f"<h2>findings</h2><ul>{finds}</ul><h2>stages</h2><table border=1><tr><th>stage</th><th>status</th>"
            f"<th>statistic</th><th>value</th><th>limit</th></tr>{rows}</table></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _rel_link(target: Path | None, page: Path) -> str | None:
    if target is None:
        return None
    try:
        return os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)
    except ValueError:
        return str(target)


def write_bisect_report(res: BisectResult, log: TrialLog, path: Path) -> Path:
    """The final page: what was searched, the culprit, its headline, a link to the failing trial's parity
    report, the pasteable profile (precision) and every trial."""
    e = html.escape
    path = Path(path)
    culprit = res.culprit
    if isinstance(culprit, dict):
        ctext = f"{culprit.get('sha', '')[:12]} {culprit.get('subject', '')}"
    elif isinstance(culprit, list):
        ctext = ", ".join(map(str, culprit)) or "(none)"
    else:
        ctext = str(culprit) if culprit is not None else "(none)"
    link = _rel_link(res.trial_report, path)
    rows = []
    for t in log.trials:
        rep = log.abs(t.get("report"))
        rl = _rel_link(rep, path) if rep else None
        rows.append(f"<tr><td>{t.get('n')}</td><td><code>{e(str(t.get('what')))}</code></td>"
                    f"<td>{e(str(t.get('verdict')))}</td><td>{e(headline_text(t.get('headline')) or '')}"
                    f"{(' ' + e(t['reason'])) if t.get('reason') else ''}</td><td>{t.get('seconds', 0):.1f}</td>"
                    f"<td>{f'<a href={chr(34)}{e(rl)}{chr(34)}>report</a>' if rl else ''}</td></tr>")
    extra = ""
    if res.profile_toml:
        extra += f"<h2>ready-to-paste profile</h2><pre>{e(res.profile_toml)}</pre>"
    if res.skipped:
        extra += "<h2>skipped commits</h2><ul>" + "".join(
            f"<li><code>{e(s['sha'][:12])}</code> {e(s.get('subject', ''))}: {e(s.get('reason', ''))}</li>"
            for s in res.skipped) + "</ul>"
    if res.warnings:
        extra += "<h2>warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in res.warnings) + "</ul>"
    title = f"parity bisect {e(res.mode)}: {e(res.status)}"
    trial_link = f'<a href="{e(link)}">{e(str(res.trial_report.name))}</a>' if link else "(none)"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} td,th{{padding:2px 8px;text-align:left}}
.found{{color:#a00}} pre{{background:#f4f4f4;padding:8px}}</style></head><body>
<h1>{title}</h1>
<p class="found"><b>culprit:</b> <code>{e(ctext)}</code></p>
<p><b>headline:</b> {e(headline_text(res.headline, 400) or '-')}</p>
<p>{e(res.message)}</p>
<p><b>failing trial's parity report:</b> {trial_link}</p>
<p>{res.trials} trial(s) this run, {res.total_trials} in the log{f', bound {res.bound}' if res.bound else ''};
{res.seconds:.1f} s. Log: <code>{e(str(log.path))}</code></p>
{extra}
<h2>trials</h2><table><tr><th>#</th><th>what</th><th>verdict</th><th>headline</th><th>s</th><th></th></tr>
{''.join(rows)}</table></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _finish(res: BisectResult, log: TrialLog, report: Path | None) -> BisectResult:
    res.log = log.path
    res.total_trials = len(log.trials)
    res.report = write_bisect_report(res, log, report or (log.dir / f"bisect-{res.mode}.html"))
    log.update(status=res.status, result=res.to_dict(), report=log.rel(res.report))
    return res


def _workdir(workdir, log, mode: str) -> tuple[Path, Path]:
    if log is not None:
        log = Path(log)
        wd = Path(workdir) if workdir else log.parent
    else:
        wd = Path(workdir) if workdir else Path("reports") / f"bisect-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
        log = wd / f"bisect-{mode}.json"
    wd.mkdir(parents=True, exist_ok=True)
    return wd.resolve(), log.resolve()


# =============================================================================================
# in-process candidate trials (switches, precision)

def _bundles(bundles) -> list[Path]:
    out = [Path(b) for b in (bundles or [DEFAULT_BUNDLE])]
    for b in out:
        if not b.exists():
            raise BisectUsageError(f"{b}: input bundle not found")
    return out


def _model_identity(model) -> dict:
    return {"model": getattr(model, "model_id", None), "weights": dict(getattr(model, "weights", {}) or {})}


@dataclass
class _Outcome:
    verdict: str  # pass | fail | error
    headline: dict | None
    results: list  # (bundle name, result dict, Case)
    seconds: float


class _CandidateTrials:
    """Runs a candidate configuration on every bundle against the (cached) reference."""

    def __init__(self, model, bundles: list[Path], *, streaming: bool, policy, local: bool, trace_dir: Path):
        self.model, self.bundles, self.streaming, self.policy, self.local = model, bundles, streaming, policy, local
        self.trace_dir = trace_dir
        self.ref_cache: dict = {}

    def run(self, sw, label: str) -> _Outcome:
        """Every bundle until the first that does not pass (it decides both "fails" and "passes")."""
        from candidate.pipeline import CandidateToken2Wav

        from .run import run_case

        t0 = time.perf_counter()
        results, headline, verdict = [], None, "pass"
        cand = CandidateToken2Wav(self.model, sw, label)
        for b in self.bundles:
            case = run_case(self.model, cand, b, streaming=self.streaming, policy=self.policy, local=self.local,
                            trace_dir=self.trace_dir, profile_name=label, ref_cache=self.ref_cache)
            # the traces are on disk (trace_dir): do not hold every trial's tensors in memory
            case.ref_tensors, case.cand_tensors, case.local_tensors = {}, {}, {}
            results.append((b.name, case.result, case))
            verdict = case.result.verdict
            if verdict != "pass":
                fd = case.result.first_divergence
                headline = fd.headline_json() if fd else None
                break
        return _Outcome(verdict, headline, results, time.perf_counter() - t0)


class _InProcessSearch:
    """Shared machinery of ``switches`` and ``precision``: log, progress, traces and reports per trial."""

    def __init__(self, mode, model, bundles, *, streaming, policy, local, workdir, log, resume, identity, settings,
                 progress, bound, trial_reports: bool, keep_traces: bool = False):
        from .policy import load_policy

        self.mode = mode
        self.wd, log_path = _workdir(workdir, log, mode)
        pol = load_policy(policy) if policy is None or isinstance(policy, (str, Path)) else policy
        self.runner = _CandidateTrials(model, _bundles(bundles), streaming=streaming, policy=pol, local=local,
                                       trace_dir=self.wd / "traces")
        self.log = TrialLog(log_path, mode, identity, resume=resume, settings=settings)
        self.progress = progress if isinstance(progress, TrialProgress) else TrialProgress(mode, progress)
        self.bound = bound
        self.trial_reports = trial_reports
        self.keep_traces = keep_traces
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
            from .result import write_json

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
            from .result import read_json

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


def _deadline(timeout: float | None) -> float | None:
    return time.monotonic() + float(timeout) if timeout else None


# ---------------------------------------------------------------------------------------------
# switches

@dataclass(frozen=True)
class Change:
    """One atomic change of a profile against the ``Switches()`` defaults."""

    name: str
    field: str
    value: Any


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def atomic_changes(sw) -> list[Change]:
    """Each scalar switch that differs from the defaults, and each fault, as its own change. ``keep_fp32``
    is not a change of its own: it travels with the dtype change it protects (see :func:`apply_changes`)."""
    from candidate.switches import Switches

    base = Switches()
    out = []
    for f in dataclasses.fields(Switches):
        if f.name in ("keep_fp32", "faults"):
            continue
        v = getattr(sw, f.name)
        if v != getattr(base, f.name):
            out.append(Change(f"{f.name}={_fmt_value(v)}", f.name, v))
    for spec in sw.faults:
        out.append(Change(f"fault={spec}", "faults", spec))
    return out


def apply_changes(changes: Iterable[Change], keep_fp32: Sequence[str] = ()):
    """``Switches()`` plus ``changes``; the profile's flow keep_fp32 entries come with a reduced flow dtype,
    its ``hift.*`` entries with a reduced HiFT dtype."""
    from candidate.switches import Switches

    kw: dict = {}
    faults: list = []
    for c in changes:
        if c.field == "faults":
            faults.append(c.value)
        else:
            kw[c.field] = c.value
    flow_red = kw.get("flow_dtype", "fp32") != "fp32"
    hift_red = kw.get("hift_dtype", "fp32") != "fp32"
    keep = tuple(k for k in keep_fp32 if (hift_red if k.startswith("hift.") else flow_red))
    return Switches(**kw, keep_fp32=keep, faults=tuple(faults))


def _resolve_switches(switches_or_profile, pyproject=None, faults=(), overrides: dict | None = None,
                      device: str | None = None):
    """(Switches, profile name or None) from a Switches, a profile name, or None (= defaults + overrides)."""
    from candidate.switches import Switches, switches_from

    if isinstance(switches_or_profile, Switches):
        sw, name = switches_or_profile, None
        if faults:
            sw = sw.with_(faults=tuple(dict.fromkeys(tuple(sw.faults) + tuple(faults))))
        if overrides:
            sw = sw.with_(**overrides)
    else:
        name = switches_or_profile
        sw = switches_from(name, list(faults or ()), pyproject, **(overrides or {}))
    if device and device != "cpu":
        sw = sw.with_(device=device)
    return sw, name


def bisect_switches(model, switches_or_profile, bundles=None, *, pyproject=None, faults=(), streaming: bool = False,
                    policy=None, local: bool = True, max_trials: int | None = None, timeout: float | None = None,
                    workdir=None, log=None, resume: bool = False, report=None, progress: bool | None = None,
                    trial_reports: bool = False, keep_traces: bool = False) -> BisectResult:
    """A 1-minimal set of a failing profile's atomic changes that still fails parity (ddmin).

    ``switches_or_profile``: a :class:`candidate.switches.Switches` or a profile name (built-in or from
    ``pyproject``'s ``[tool.parity.profiles]``). The oracle runs the candidate built from ``Switches()`` plus
    the subset on every bundle (default: the ``medium`` fixture); "fail" on any bundle = the property holds.
    """
    t_start = time.perf_counter()
    sw, pname = _resolve_switches(switches_or_profile, pyproject, faults)
    changes = atomic_changes(sw)
    by_name = {c.name: c for c in changes}
    order = [c.name for c in changes]
    label = pname or "switches"
    bundles = _bundles(bundles)
    bound = ddmin_bound(len(changes))
    identity = {"switches": sw.to_dict(), "bundles": [b.name for b in bundles], "streaming": streaming,
                "local": local, "policy": str(policy) if isinstance(policy, (str, Path)) else None,
                **_model_identity(model)}
    s = _InProcessSearch("switches", model, bundles, streaming=streaming, policy=policy, local=local,
                         workdir=workdir, log=log, resume=resume, identity=identity,
                         settings={"profile": pname, "changes": order, "max_trials": max_trials, "timeout_s": timeout},
                         progress=progress, bound=bound if max_trials is None else min(bound, max_trials),
                         trial_reports=trial_reports, keep_traces=keep_traces)
    res = BisectResult("switches", "error", bound=bound)
    if not changes:
        res.status, res.message = "no_failure", f"{label}: no switch differs from the reference-equivalent defaults"
        return _finish(res, s.log, report)

    def test(names: list[str]) -> bool:
        chosen = [by_name[n] for n in order if n in names]
        what = " + ".join(names) if names else "(defaults)"
        return s.trial(names, apply_changes(chosen, sw.keep_fp32), what, lambda v: v == "fail")

    s.progress.note(f"{label}: {len(changes)} change(s): {', '.join(order)}; ddmin worst case {bound} trials")
    dd = ddmin(order, test, max_trials=max_trials, deadline=_deadline(timeout), cache=s.cache_from_log())
    res.trials = s.run_trials
    res.seconds = time.perf_counter() - t_start
    if dd.status == "full_lacks_property":
        full = s.log.lookup(order) or {}
        if full.get("verdict") == "error":
            res.status, res.headline = "error", full.get("headline")
            res.message = f"the comparison itself is in error for {label}: {headline_text(res.headline)}"
        else:
            res.status = "no_failure"
            res.message = f"{label} passes parity on {', '.join(b.name for b in bundles)}: nothing to bisect"
    elif dd.status == "empty_has_property":
        res.status = "error"
        res.message = "the reference-equivalent defaults already fail parity: the harness or the model is at fault"
        res.headline = (s.log.lookup(sorted([])) or {}).get("headline")
    else:
        key = frozenset(dd.items)
        entry = s.log.lookup(sorted(dd.items)) or {}
        res.culprit = list(dd.items)
        res.headline = entry.get("headline")
        res.trial_report = s.report_for(key, "culprit")
        if dd.status == "minimal":
            res.status = "found"
            res.message = ((f"{dd.items[0]} alone fails parity (the defaults pass)" if len(dd.items) == 1 else
                            f"{' + '.join(dd.items)} fail parity together; removing any one of them passes")
                           + f" (1-minimal; {res.trials} trial(s) this run, ddmin worst case {bound})")
        else:
            res.status = "budget_exhausted"
            res.message = f"{dd.reason}: smallest failing set so far (not proven minimal): {' + '.join(dd.items)}"
        s.prune([key])
    res.extra = {"changes": order, "ddmin_status": dd.status, "cache_hits": dd.cache_hits}
    return _finish(res, s.log, report)


# ---------------------------------------------------------------------------------------------
# precision

FLOW_GLOBAL = ("time_embed", "input_embed")
FLOW_TAIL = ("norm_out", "proj_out", "euler", "time_grid", "residual", "adaln")


def precision_components(sw, depth: int) -> list[str]:
    """The components ``bisect precision`` may keep in fp32 for ``sw``, those it already keeps left out."""
    from candidate.switches import KEEP_FP32_GLOBAL

    comps: list[str] = []
    if sw.flow_dtype != "fp32":
        comps += list(FLOW_GLOBAL) + [f"block{i}" for i in range(depth)] + list(FLOW_TAIL)
    if sw.hift_dtype != "fp32":
        comps += [k for k in KEEP_FP32_GLOBAL if k.startswith("hift.")]
    kept = set(sw.keep_fp32)
    return [c for c in comps if c not in kept]


def _block_parts(block: str, sw_keep: Sequence[str]) -> list[str]:
    parts = ["adaln", "attn", "ff"]
    if "adaln" in sw_keep:  # a global adaln island already covers every block's AdaLN
        parts.remove("adaln")
    return [f"{block}.{p}" for p in parts]


def _canonical_keep(names: Iterable[str], depth: int, sw_keep: Sequence[str]) -> list[str]:
    """Sorted in component order; all of a block's parts become the block."""
    names = set(names)
    for i in range(depth):
        parts = _block_parts(f"block{i}", sw_keep)
        if all(p in names for p in parts):
            names -= set(parts)
            names.add(f"block{i}")
    order = {c: j for j, c in enumerate(
        list(FLOW_GLOBAL) + [x for i in range(depth) for x in [f"block{i}"] + [f"block{i}.{p}" for p in
                                                                              ("adaln", "attn", "ff")]]
        + list(FLOW_TAIL) + [f"hift.{h}" for h in ("f0_predictor", "source", "conv_pre", "ups", "source_fusion",
                                                   "resblocks", "conv_post", "istft")])}
    return sorted(names, key=lambda c: order.get(c, 10_000))


def toml_profile(name: str, base: str | None, sw, keep_fp32: Sequence[str]) -> str:
    """A ``[tool.parity.profiles.NAME]`` table: ``base`` + ``keep_fp32`` when the profile has a name, else
    every switch that differs from the defaults."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(str(v))

    lines = [f"[tool.parity.profiles.{name}]"]
    if base:
        lines.append(f"base = {val(base)}")
    else:
        for k, v in sw.with_(keep_fp32=()).differences().items():
            lines.append(f"{k} = {val(v)}")
    lines.append(f"keep_fp32 = {val(list(keep_fp32))}")
    return "\n".join(lines) + "\n"


def bisect_precision(model, profile, bundles=None, *, pyproject=None, name: str | None = None, fine: bool = False,
                     streaming: bool = False, policy=None, local: bool = True, max_trials: int | None = None,
                     timeout: float | None = None, workdir=None, log=None, resume: bool = False, report=None,
                     progress: bool | None = None, trial_reports: bool = False, keep_traces: bool = False,
                     device: str | None = None) -> BisectResult:
    """A 1-minimal set of components that must stay in fp32 for a failing reduced-precision profile to pass.

    ``profile``: a profile name (built-in or user) or a :class:`candidate.switches.Switches`. The property
    tested is "the profile with keep_fp32 = its own keep_fp32 + subset passes on every bundle"; keeping every
    component must pass and the profile itself must fail. ``fine`` refines each chosen ``block<i>`` into its
    ``adaln``/``attn``/``ff`` parts. The result carries the ready-to-paste TOML (``profile_toml``).
    """
    t_start = time.perf_counter()
    sw, pname = _resolve_switches(profile, pyproject, device=device)
    if sw.flow_dtype == "fp32" and sw.hift_dtype == "fp32":
        raise BisectUsageError(f"{pname or 'profile'}: flow and HiFT already run in fp32 (int8 quantization is not "
                               "governed by keep_fp32): there is no precision to bisect; use bisect switches")
    depth = len(model.flow.decoder.estimator.transformer_blocks)
    comps = precision_components(sw, depth)
    own = list(sw.keep_fp32)
    label = pname or "profile"
    bundles = _bundles(bundles)
    bound = ddmin_bound(len(comps)) + (sum(ddmin_bound(3) for _ in range(depth)) if fine else 0)
    identity = {"switches": sw.to_dict(), "bundles": [b.name for b in bundles], "streaming": streaming,
                "local": local, "policy": str(policy) if isinstance(policy, (str, Path)) else None,
                **_model_identity(model)}
    s = _InProcessSearch("precision", model, bundles, streaming=streaming, policy=policy, local=local,
                         workdir=workdir, log=log, resume=resume, identity=identity,
                         settings={"profile": pname, "components": comps, "fine": fine, "max_trials": max_trials,
                                   "timeout_s": timeout},
                         progress=progress, bound=bound if max_trials is None else min(bound, max_trials),
                         trial_reports=trial_reports, keep_traces=keep_traces)
    res = BisectResult("precision", "error", bound=bound)
    empty_key = frozenset()

    # memo on the canonical keep set (a block == all of its parts), shared by the coarse and --fine passes and
    # pre-filled from a resumed log
    cache = {frozenset(_canonical_keep(k, depth, own)): v for k, v in s.cache_from_log().items()}

    def test(names: list[str]) -> bool:
        keep = _canonical_keep(names, depth, own)
        ck = frozenset(keep)
        if ck in cache:
            return cache[ck]
        sw2 = sw.with_(keep_fp32=tuple(own) + tuple(keep))
        what = "keep +[" + ", ".join(keep) + "]"
        # the profile's own failure is the trial the report links: keep its traces whatever it shows
        cache[ck] = s.trial(keep, sw2, what, lambda v: v == "pass", keep=True if not keep else None)
        return cache[ck]

    s.progress.note(f"{label}: {len(comps)} component(s) to choose from: {', '.join(comps)}; ddmin worst case "
                    f"{ddmin_bound(len(comps))} trials")
    deadline = _deadline(timeout)
    dd = ddmin(comps, test, max_trials=max_trials, deadline=deadline, cache=cache)
    chosen = list(dd.items)
    status = dd.status
    fine_notes = {}
    if fine and dd.status == "minimal":
        for blk in [c for c in chosen if re.fullmatch(r"block\d+", c)]:
            rest = [c for c in chosen if c != blk]
            parts = _block_parts(blk, own)
            used = max_trials - s.run_trials if max_trials is not None else None
            if used is not None and used <= 0:
                status = "budget_exhausted"
                break
            sub = ddmin(parts, lambda ps, rest=rest: test(rest + list(ps)), max_trials=used, deadline=deadline,
                        cache={}, check_bounds=False)
            if sub.status == "budget_exhausted":
                status = "budget_exhausted"
                break
            chosen = [c for c in chosen if c != blk] + list(sub.items)
            fine_notes[blk] = list(sub.items)
    res.trials = s.run_trials
    res.seconds = time.perf_counter() - t_start
    failing_report = s.report_for(empty_key, "profile")
    fail_entry = s.log.lookup([]) or {}
    res.headline = fail_entry.get("headline")
    if dd.status == "full_lacks_property":
        res.status = "end_fails"
        full_entry = s.log.lookup(_canonical_keep(comps, depth, own)) or {}
        res.headline = full_entry.get("headline")
        res.trial_report = s.report_for(frozenset(_canonical_keep(comps, depth, own)), "all-fp32")
        res.message = (f"{label} still fails with every component kept in fp32 ({headline_text(res.headline)}): "
                       "the failure is not a precision island problem (try bisect switches)")
        return _finish(res, s.log, report)
    if dd.status == "empty_has_property":
        res.status = "no_failure"
        res.message = f"{label} passes parity as it is: no fp32 island is needed"
        return _finish(res, s.log, report)
    keep = _canonical_keep(chosen, depth, own)
    new_name = name or f"{pname or 'custom'}-fp32-islands"
    full_keep = own + [k for k in keep if k not in own]
    res.culprit = keep
    res.keep_fp32 = full_keep
    res.profile_toml = toml_profile(new_name, pname, sw, full_keep)
    res.trial_report = failing_report
    final_entry = s.log.lookup(keep) or {}
    res.extra = {"components": comps, "ddmin_status": dd.status, "fine": fine_notes,
                 "final_verdict": final_entry.get("verdict"), "profile_name": new_name}
    if status == "minimal":
        res.status = "found"
        res.message = (f"{label} passes once {', '.join(keep)} stay(s) in fp32; dropping any one of them fails "
                       f"again (1-minimal, {res.trials} trial(s) this run)")
    else:
        res.status = "budget_exhausted"
        res.message = f"{dd.reason or 'budget exhausted'}: {', '.join(keep)} pass(es) but may not be minimal"
    s.prune([empty_key, frozenset(keep)])
    return _finish(res, s.log, report)


# =============================================================================================
# git

def _git(repo: Path, *args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise BisectUsageError(f"git {' '.join(args)}: {_last_line(p.stderr or p.stdout) or 'failed'}")
    return p


def repo_state(repo: Path, ignore: Path | None = None) -> dict:
    """HEAD, branch, ``git status`` (minus ``ignore``), worktrees and whether a bisect is in progress."""
    head = _git(repo, "rev-parse", "HEAD", check=False).stdout.strip()
    branch = _git(repo, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip() or None
    status = _git(repo, "status", "--porcelain", "--untracked-files=all", check=False).stdout.splitlines()
    if ignore is not None:
        top = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip()).resolve()
        try:
            rel = str(Path(ignore).resolve().relative_to(top))
        except ValueError:
            rel = None
        if rel:
            status = [s for s in status if not s[3:].strip('"').startswith(rel)]
    wts = [ln[9:] for ln in _git(repo, "worktree", "list", "--porcelain", check=False).stdout.splitlines()
           if ln.startswith("worktree ")]
    bs = Path(_git(repo, "rev-parse", "--git-path", "BISECT_START").stdout.strip())
    if not bs.is_absolute():
        bs = Path(repo) / bs
    return {"head": head, "branch": branch, "status": status, "worktrees": wts, "bisecting": bs.exists()}


def _kill_group(p: subprocess.Popen, grace: float = 3.0) -> None:
    if p.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_proc(argv, *, cwd, env, timeout: float | None, log_path: Path, shell: bool = False) -> tuple[int | None, str]:
    """Run a trial program in its own process group; (exit code or None on timeout, output tail)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, shell=shell)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            rc = None
        except BaseException:
            _kill_group(p)
            raise
        finally:
            if p.poll() is None:
                _kill_group(p)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    return rc, tail


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _sniff_dump(out: Path) -> Path | None:
    """The dump a program wrote at ``out`` (a file of any supported format, an npy directory, or ``out.npz``
    since ``numpy.savez`` appends that suffix), renamed to the suffix :mod:`parity.ingest` dispatches on."""
    from .trace import journal_path

    if out.is_dir():
        return out
    if out.is_file():
        with open(out, "rb") as f:
            head = f.read(8)
        suffix = ".npz" if head.startswith(b"PK") else (".npy" if head.startswith(b"\x93NUMPY") else ".safetensors")
        if out.suffix != suffix:
            target = out.with_name(out.name + suffix)
            out.rename(target)
            return target
        return out
    if journal_path(out).exists():
        return out
    for cand in sorted(out.parent.glob(out.name + ".*")):
        if cand.suffix in (".npz", ".npy", ".safetensors") and cand.is_file():
            return cand
    return None


ORACLE_CLIENT = '''\
"""parity bisect oracle client (written by parity.bisect): asks the bisect driver to judge BISECT_HEAD
and exits with its answer (0 good, 1 bad, 125 skip, 128 abort)."""
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(b"trial\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    sys.exit(int(data.strip()))
except (OSError, ValueError) as exc:
    sys.stderr.write("parity bisect oracle: the bisect driver is gone (%s); aborting\\n" % exc)
    sys.exit(128)
'''


class _GitBisect:
    def __init__(self, repo: Path, good: str, bad: str, *, cmd, profile, faults, preset, model_dir, noise, device,
                 bundles, ref_traces, ref_model, streaming, policy, maps, max_trials, timeout, trial_timeout,
                 workdir, log, resume, verify, keep_traces, progress, python, trial_reports):
        self.repo = repo
        self.cmd, self.profile, self.faults = cmd, profile, list(faults or ())
        self.preset, self.model_dir, self.noise, self.device = preset, model_dir, noise, device
        self.streaming, self.policy_arg, self.maps = streaming, policy, maps
        self.max_trials, self.trial_timeout = max_trials, trial_timeout
        self.deadline = _deadline(timeout)
        self.verify, self.keep_traces, self.python = verify, keep_traces, python or sys.executable
        self.trial_reports = trial_reports
        self.good_sha = self._commit(good, "--good")
        self.bad_sha = self._commit(bad, "--bad")
        if self.good_sha == self.bad_sha:
            raise BisectUsageError("--good and --bad are the same commit")
        if _git(repo, "merge-base", "--is-ancestor", self.good_sha, self.bad_sha, check=False).returncode != 0:
            raise BisectUsageError(f"--good {good} is not an ancestor of --bad {bad}")
        self.n_commits = int(_git(repo, "rev-list", "--count", f"{self.good_sha}..{self.bad_sha}").stdout.strip())
        self.bundles = [Path(b) for b in (bundles or ([] if ref_traces else [DEFAULT_BUNDLE]))]
        if ref_traces:
            self.ref_paths = [Path(r) for r in ref_traces]
            for r in self.ref_paths:
                if not r.exists():
                    raise BisectUsageError(f"{r}: reference trace not found")
            if self.bundles and len(self.bundles) != len(self.ref_paths):
                raise BisectUsageError("give one --bundle per --ref-trace (or none with --cmd)")
        else:
            self.ref_paths = None
        for b in self.bundles:
            if not b.exists():
                raise BisectUsageError(f"{b}: input bundle not found")
        if cmd is None and not self.bundles:
            raise BisectUsageError("the in-process mode (no --cmd) needs --bundle to run the candidate on")
        if cmd is None and not (preset or model_dir):
            raise BisectUsageError("the in-process mode needs --preset or --model-dir")
        self.wd, log_path = _workdir(workdir, log, "git")
        bound = self.n_commits + 1 + (2 if verify else 0)
        self.bound = bound if max_trials is None else min(bound, max_trials)
        names = [b.name for b in self.bundles] or [r.name for r in self.ref_paths]
        identity = {"repo": str(repo), "good": self.good_sha, "bad": self.bad_sha, "cmd": cmd,
                    "profile": None if cmd else profile, "faults": None if cmd else self.faults,
                    "model": None if cmd else (preset or str(model_dir)), "bundles": names, "streaming": streaming,
                    "policy": str(policy) if policy else None, "maps": maps or None}
        self.log = TrialLog(log_path, "git", identity, resume=resume,
                            settings={"max_trials": max_trials, "timeout_s": timeout, "trial_timeout_s": trial_timeout,
                                      "verify": verify})
        self.progress = progress if isinstance(progress, TrialProgress) else TrialProgress("git", progress)
        self.run_trials = 0
        self.exhausted: str | None = None
        self.ref_model = ref_model
        self.refs: list = []  # Loaded, per bundle
        self.policy = None
        self.wt_root: Path | None = None
        self._subjects: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def _commit(self, rev: str, what: str) -> str:
        p = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if p.returncode != 0 or not p.stdout.strip():
            raise BisectUsageError(f"{what} {rev!r} is not a commit of {self.repo}")
        return p.stdout.strip()

    def subject(self, sha: str) -> str:
        if sha not in self._subjects:
            self._subjects[sha] = _git(self.repo, "log", "-1", "--format=%s", sha, check=False).stdout.strip()
        return self._subjects[sha]

    def frozen_reference(self) -> None:
        """The reference traces: given, found in the work directory (resume), or computed now, once."""
        from .ingest import load
        from .policy import load_policy

        self.policy = load_policy(self.policy_arg)
        paths = []
        if self.ref_paths:
            paths = self.ref_paths
        else:
            from .runner import run_to_trace
            from reference.bundle import load_bundle

            model = self.ref_model
            for b in self.bundles:
                mode = "streaming" if self.streaming else "offline"
                p = self.wd / "reference" / f"{b.stem}-{mode}-reference.safetensors"
                if not p.exists():
                    if model is None:
                        from reference.model import Token2Wav
                        from reference.noise import SharedNoise

                        noise = SharedNoise.load(self.noise) if self.noise else None
                        model = Token2Wav.load(None if self.model_dir else self.preset, self.model_dir, noise)
                    self.progress.note(f"computing the frozen reference trace for {b.name}")
                    run_to_trace(model, load_bundle(b), p, streaming=self.streaming,
                                 extra_meta={"inputs": b.name, "frozen_for": "parity bisect git"}, raise_errors=True)
                paths.append(p)
        self.ref_paths = paths
        self.refs = [load(p, self.maps) for p in paths]
        self.log.update(reference=[self.log.rel(p) for p in paths])

    def _budget_left(self) -> str | None:
        if self.max_trials is not None and self.run_trials >= self.max_trials:
            return f"trial budget of {self.max_trials} exhausted"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time budget exhausted"
        return None

    # -- one commit ----------------------------------------------------------------------------------
    def judge(self, sha: str, role: str = "") -> int:
        """0 good, 1 bad, 125 skip, 128 abort (budget). Finished commits come from the log."""
        entry = self.log.lookup(sha)
        if entry is not None:
            self.progress.trial(entry["n"], self.bound, f"{sha[:10]} {self.subject(sha)[:50]}", entry["verdict"],
                                headline_text(entry.get("headline"), 100) or entry.get("reason"), 0.0,
                                " (from the log)")
            return int(entry["code"])
        why = self._budget_left()
        if why:
            self.exhausted = why
            self.progress.note(f"{why}: aborting")
            return ABORT
        n = len(self.log.trials) + 1
        self.run_trials += 1
        t0 = time.perf_counter()
        tdir = self.wd / "trials" / sha[:12]
        code, reason, headline, result_file, dump_files = self._trial(sha, tdir)
        if code == ABORT:  # the time budget ran out inside the trial
            self.exhausted = reason
            self.progress.note(f"{reason}: aborting")
            return ABORT
        verdict = {0: "good", 1: "bad", 125: "skip"}[code]
        rep = None
        if self.trial_reports and result_file is not None:
            rep = trial_report(read_json(result_file), tdir / "report.html")
        self.log.add({"n": n, "key": sha, "what": f"{sha[:10]} {self.subject(sha)}", "commit": sha,
                      "subject": self.subject(sha), "role": role or None, "code": code, "verdict": verdict,
                      "headline": headline, "reason": reason, "seconds": round(time.perf_counter() - t0, 3),
                      "result": self.log.rel(result_file) if result_file else None,
                      "dumps": [self.log.rel(d) for d in dump_files], "report": self.log.rel(rep) if rep else None,
                      "log_dir": self.log.rel(tdir)})
        self.progress.trial(n, self.bound, f"{sha[:10]} {self.subject(sha)[:50]}", verdict,
                            headline_text(headline, 100) or reason, time.perf_counter() - t0)
        return code

    def _timeout(self) -> tuple[float | None, bool]:
        """(timeout for the next program, whether it is the global deadline that bounds it)."""
        t = self.trial_timeout
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.01)
            if t is None or left < t:
                return left, True
        return t, False

    def _trial(self, sha: str, tdir: Path):
        from .compare import compare_loaded
        from .ingest import load
        from .result import write_json

        if tdir.exists():
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True)
        wt = self.wt_root / sha[:12]
        p = _git(self.repo, "worktree", "add", "--detach", "--force", str(wt), sha, check=False)
        if p.returncode != 0:
            return 125, f"git worktree add failed: {_last_line(p.stderr)}", None, None, []
        dumps: list[Path] = []
        try:
            for i in range(len(self.refs)):
                bundle = self.bundles[i] if i < len(self.bundles) else None
                stem = (bundle.stem if bundle else Path(self.ref_paths[i]).stem)
                out = tdir / f"{stem}-dump" if self.cmd else tdir / f"{stem}.safetensors"
                env = dict(os.environ)
                env.update({"PARITY_BISECT_COMMIT": sha, "PARITY_REF_TRACE": str(self.ref_paths[i]),
                            "PARITY_OUT": str(out), "PARITY_BUNDLE": str(bundle.resolve()) if bundle else ""})
                if self.cmd:
                    command = (self.cmd.replace("{out}", shlex.quote(str(out)))
                               .replace("{ref}", shlex.quote(str(self.ref_paths[i])))
                               .replace("{bundle}", shlex.quote(str(bundle.resolve())) if bundle else "''"))
                    argv, shell = command, True
                else:
                    env["PYTHONPATH"] = os.pathsep.join([str(wt), str(PROJECT_ROOT)]
                                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
                    argv = [self.python, "-m", "parity.cli", "dump", "--pipeline", "candidate",
                            "--profile", self.profile, "--inputs", str(bundle.resolve()), "--out", str(out)]
                    argv += ["--model-dir", str(Path(self.model_dir).resolve())] if self.model_dir else \
                        ["--preset", self.preset]
                    if self.noise:
                        argv += ["--noise", str(Path(self.noise).resolve())]
                    if self.device and self.device != "cpu":
                        argv += ["--device", self.device]
                    if self.streaming:
                        argv.append("--streaming")
                    for f in self.faults:
                        argv += ["--fault", f]
                    shell = False
                timeout, global_bound = self._timeout()
                rc, tail = _run_proc(argv, cwd=str(wt), env=env, timeout=timeout, log_path=tdir / f"{stem}.log",
                                     shell=shell)
                if rc is None:
                    if global_bound:
                        return ABORT, "time budget exhausted", None, None, []
                    return 125, f"timed out after {timeout:.0f} s", None, None, []
                dump = _sniff_dump(out)
                if dump is None:
                    return 125, f"exit {rc} and no dump (cannot build or run): {_last_line(tail)}", None, None, []
                dumps.append(dump)
                try:
                    cand = load(dump, self.maps)
                    result = compare_loaded(self.refs[i], cand, self.policy)
                except ParityUserError as exc:
                    return 125, f"unreadable dump: {exc}", None, None, dumps
                except Exception as exc:  # noqa: BLE001 - a dump the comparison cannot digest: skip, say why
                    return 125, f"comparison failed on this dump: {type(exc).__name__}: {exc}", None, None, dumps
                result.case = {"bundle": bundle.name if bundle else stem, "commit": sha,
                               "subject": self.subject(sha), "profile": None if self.cmd else self.profile}
                v = result.verdict
                fd = result.first_divergence.headline_json() if result.first_divergence else None
                if v == "error":
                    return 125, f"comparison not possible: {headline_text(fd)}", fd, None, dumps
                if v == "fail":
                    rf = write_json(result, tdir / f"{stem}-result.json")
                    return 1, (f"exit {rc}" if rc else ""), fd, rf, dumps
            return 0, "", None, None, dumps
        finally:
            _git(self.repo, "worktree", "remove", "--force", str(wt), check=False)
            if wt.exists():
                shutil.rmtree(wt, ignore_errors=True)
                _git(self.repo, "worktree", "prune", check=False)

    # -- driving git bisect run ------------------------------------------------------------------------
    def serve(self, sock_path: Path) -> tuple[int, str]:
        client = self.wd / "oracle.py"
        client.write_text(ORACLE_CLIENT)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(sock_path))
        srv.listen(1)
        srv.settimeout(0.2)
        run_log = self.wd / "git-bisect-run.log"
        self.git_proc = None
        try:
            with open(run_log, "wb") as out:
                self.git_proc = subprocess.Popen(
                    ["git", "-C", str(self.repo), "bisect", "run", self.python, "-S", str(client), str(sock_path)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                while True:
                    try:
                        conn, _ = srv.accept()
                    except socket.timeout:
                        if self.git_proc.poll() is not None:
                            break
                        continue
                    with conn:
                        conn.settimeout(30)
                        try:
                            conn.recv(64)
                        except OSError:
                            pass
                        sha = _git(self.repo, "rev-parse", "BISECT_HEAD").stdout.strip()
                        code = self.judge(sha)
                        try:
                            conn.sendall(f"{code}\n".encode())
                        except OSError:
                            pass
                rc = self.git_proc.wait()
        finally:
            srv.close()
            if self.git_proc is not None and self.git_proc.poll() is None:
                _kill_group(self.git_proc)
        return rc, run_log.read_text(errors="replace")

    def cleanup(self) -> None:
        if getattr(self, "git_proc", None) is not None and self.git_proc.poll() is None:
            _kill_group(self.git_proc)
        _git(self.repo, "bisect", "reset", check=False)
        if self.wt_root is not None:
            for ln in _git(self.repo, "worktree", "list", "--porcelain", check=False).stdout.splitlines():
                if ln.startswith("worktree ") and Path(ln[9:]).resolve().is_relative_to(self.wt_root.resolve()):
                    _git(self.repo, "worktree", "remove", "--force", ln[9:], check=False)
            shutil.rmtree(self.wt_root, ignore_errors=True)
        _git(self.repo, "worktree", "prune", check=False)


def _default_git_workdir(repo: Path) -> Path:
    """reports/bisect-git-<time> under the current directory, unless that lands in the repository under test
    where git does not ignore it: then <git dir>/parity-bisect/git-<time> (never shows in git status)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    wd = (Path("reports") / f"bisect-git-{stamp}").resolve()
    try:
        wd.relative_to(repo.resolve())
    except ValueError:
        return wd
    if _git(repo, "check-ignore", "-q", "--no-index", str(wd), check=False).returncode == 0:
        return wd
    gd = Path(_git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())
    return gd / "parity-bisect" / f"git-{stamp}"


def _protect_signals():
    """SIGTERM raises KeyboardInterrupt (so ``finally`` clean-up runs); returns a restore function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, _term)
    return lambda: signal.signal(signal.SIGTERM, old)


def _quiet_signals():
    """Ignore SIGINT/SIGTERM during clean-up; returns a restore function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def bisect_git(repo, good: str, bad: str, *, cmd: str | None = None, profile: str = "fp32-sdpa", faults=(),
               preset: str | None = "tiny", model_dir=None, noise=None, device: str = "cpu", bundles=None,
               ref_traces=None, ref_model=None, streaming: bool = False, policy=None, maps: dict | None = None,
               max_trials: int | None = None, timeout: float | None = None, trial_timeout: float | None = 600.0,
               workdir=None, log=None, resume: bool = False, verify: bool = True, keep_traces: bool = False,
               report=None, progress: bool | None = None, python: str | None = None,
               trial_reports: bool = False) -> BisectResult:
    """``git bisect run`` over ``good..bad`` of ``repo`` with the parity check against a frozen reference.

    In-process mode (no ``cmd``): each commit's own ``candidate`` package runs through
    ``python -m parity.cli dump --pipeline candidate --profile PROFILE`` in a worktree of that commit, with
    ``PYTHONPATH=<worktree>:<this project>``. With ``cmd``: the shell command runs in the worktree with
    ``{out}`` (the dump to write), ``{ref}`` (the frozen reference trace) and ``{bundle}`` replaced, also
    given as ``PARITY_OUT``, ``PARITY_REF_TRACE``, ``PARITY_BUNDLE`` and ``PARITY_BISECT_COMMIT``.

    The reference is computed once (``ref_model``, or ``preset``/``model_dir``) unless ``ref_traces`` are
    given, and frozen in the work directory (a resumed run reuses it). ``verify`` first checks that ``bad``
    fails and ``good`` passes. The repository is restored (``git bisect reset``, worktrees removed) in every
    case, including KeyboardInterrupt and SIGTERM; the result's ``warnings`` say if its state differs from
    before.
    """
    t_start = time.perf_counter()
    repo = Path(repo).resolve()
    top = _git(repo, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise BisectUsageError(f"{repo}: not a git repository")
    repo = Path(top.stdout.strip())
    if repo_state(repo)["bisecting"]:
        raise BisectUsageError(f"{repo}: a git bisect is already in progress (finish it with 'git bisect reset')")
    if workdir is None and log is None:
        workdir = _default_git_workdir(repo)
    g = _GitBisect(repo, good, bad, cmd=cmd, profile=profile, faults=faults, preset=preset, model_dir=model_dir,
                   noise=noise, device=device, bundles=bundles, ref_traces=ref_traces, ref_model=ref_model,
                   streaming=streaming, policy=policy, maps=maps, max_trials=max_trials, timeout=timeout,
                   trial_timeout=trial_timeout, workdir=workdir, log=log, resume=resume, verify=verify,
                   keep_traces=keep_traces, progress=progress, python=python, trial_reports=trial_reports)
    before = repo_state(repo, ignore=g.wd)
    res = BisectResult("git", "error", bound=g.bound)
    restore_term = _protect_signals()
    tmp = Path(tempfile.mkdtemp(prefix="parity-bisect-"))
    g.wt_root = tmp / "wt"
    g.wt_root.mkdir()
    interrupted = False
    try:
        g.frozen_reference()
        g.progress.note(f"{g.n_commits} commit(s) in {g.good_sha[:10]}..{g.bad_sha[:10]}; "
                        f"{'--cmd ' + repr(cmd) if cmd else 'candidate profile ' + profile}")
        ok = True
        if verify:
            cb = g.judge(g.bad_sha, "bad endpoint")
            if cb != 1:
                ok = False
                res.status = {0: "no_failure", 125: "error", ABORT: "budget_exhausted"}[cb]
                res.message = {0: f"--bad {bad} passes the parity check: nothing to bisect",
                               125: f"--bad {bad} cannot be built or run: "
                                    f"{(g.log.lookup(g.bad_sha) or {}).get('reason')}",
                               ABORT: g.exhausted or "budget exhausted"}[cb]
            else:
                cg = g.judge(g.good_sha, "good endpoint")
                if cg != 0:
                    ok = False
                    e = g.log.lookup(g.good_sha) or {}
                    res.status = {1: "start_fails", 125: "error", ABORT: "budget_exhausted"}[cg]
                    res.message = {1: f"--good {good} already fails the parity check "
                                      f"({headline_text(e.get('headline'))}): pick an older good revision",
                                   125: f"--good {good} cannot be built or run: {e.get('reason')}",
                                   ABORT: g.exhausted or "budget exhausted"}[cg]
        if ok:
            _git(repo, "bisect", "start", "--no-checkout", g.bad_sha, g.good_sha)
            sock_dir = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp" if Path("/tmp").is_dir() else None))
            try:
                rc, out = g.serve(sock_dir / "oracle.sock")
            finally:
                shutil.rmtree(sock_dir, ignore_errors=True)
            m = re.search(r"^([0-9a-f]{40}) is the first bad commit", out, re.M)
            sha = m.group(1) if m else None
            if sha is None and "first bad commit" in out:  # other wording: refs/bisect/bad is the answer
                sha = _git(repo, "rev-parse", "--verify", "-q", "refs/bisect/bad", check=False).stdout.strip() or None
            if sha:
                res.status = "found"
                res.culprit = {"sha": sha, "subject": g.subject(sha)}
                if g.log.lookup(sha) is None:  # git never ran it (it is --bad, and verify was off)
                    g.judge(sha, "first bad commit")
                e = g.log.lookup(sha) or {}
                res.headline = e.get("headline")
                res.message = f"first bad commit {sha[:12]} \"{g.subject(sha)}\""
                if e.get("result"):
                    rp = g.log.abs(e["result"])
                    res.trial_report = trial_report(read_json(rp),
                                                    g.wd / "trials" / sha[:12] / "report.html") \
                        if not e.get("report") else g.log.abs(e["report"])
                    e["report"] = g.log.rel(res.trial_report)
                    g.log.save()
            elif "only 'skip'ped commits left" in out:
                res.status = "ambiguous"
                cands = re.findall(r"^([0-9a-f]{40})$", out.split("could be any of:")[-1], re.M)
                res.culprit = [{"sha": c, "subject": g.subject(c)} for c in cands]
                res.message = ("only skipped commits are left: the first bad commit is one of "
                               + ", ".join(f"{c[:10]} {g.subject(c)!r}" for c in cands))
            elif g.exhausted:
                res.status = "budget_exhausted"
                res.message = f"{g.exhausted}; resume with --resume --log {g.log.path}"
            else:
                res.status = "error"
                res.message = f"git bisect run ended (exit {rc}) without a first bad commit: {_last_line(out)}"
            res.extra["git_bisect_run"] = out[-4000:]
    except KeyboardInterrupt:
        interrupted = True
        res.status = "interrupted"
        res.message = f"interrupted; the repository was restored; resume with --resume --log {g.log.path}"
        raise
    finally:
        restore_quiet = _quiet_signals()
        try:
            g.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)
            after = repo_state(repo, ignore=g.wd)
            for k in ("head", "branch", "status", "worktrees", "bisecting"):
                if after[k] != before[k]:
                    res.warnings.append(f"repository {k} differs after the bisection: before {before[k]!r}, "
                                        f"after {after[k]!r}")
            for w in res.warnings:
                print(f"parity bisect: warning: {w}", file=sys.stderr)
            res.trials = g.run_trials
            res.seconds = time.perf_counter() - t_start
            res.skipped = [{"sha": t["commit"], "subject": t.get("subject", ""), "reason": t.get("reason", "")}
                           for t in g.log.trials if t.get("code") == 125]
            if not g.keep_traces:  # keep the culprit's dump (and, unfinished, every bad one: --resume may need it)
                keep = res.culprit.get("sha") if isinstance(res.culprit, dict) else None
                for t in g.log.trials:
                    if t.get("commit") != keep and (res.found or t.get("verdict") != "bad"):
                        for d in t.get("dumps") or []:
                            p = g.log.abs(d)
                            if p and p.exists():
                                shutil.rmtree(p) if p.is_dir() else p.unlink()
            if interrupted:
                g.log.update(status="interrupted")
                res.log = g.log.path
                res.total_trials = len(g.log.trials)
            else:
                _finish(res, g.log, report)
        finally:
            restore_quiet()
            restore_term()
    return res


# =============================================================================================
# command line

def _parse_switch(spec: str) -> tuple[str, Any]:
    from candidate.switches import Switches

    k, eq, v = spec.partition("=")
    k = k.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(Switches)}
    if not eq or k not in fields:
        raise BisectUsageError(f"--switch {spec!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))}")
    default = getattr(Switches(), k)
    if isinstance(default, bool):
        if v.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise BisectUsageError(f"--switch {spec!r}: expected true or false")
        return k, v.lower() in ("true", "1", "yes", "on")
    if isinstance(default, tuple):
        return k, tuple(x.strip() for x in v.split(",") if x.strip())
    return k, v


def _switches_arg(args):
    overrides = dict(_parse_switch(s) for s in (args.switch or []))
    if not args.profile and not overrides and not getattr(args, "fault", None):
        raise BisectUsageError("give --profile NAME or --switch NAME=VALUE (and/or --fault) to start from")
    if args.profile:
        return args.profile, overrides
    from candidate.switches import Switches

    return Switches(**overrides), {}


def add_bisect_args(p: argparse.ArgumentParser) -> None:
    """``parity bisect {switches,precision,git}``."""
    from .cli import _add_model_args

    sub = p.add_subparsers(dest="bisect_cmd", required=True)

    def common(q, trials_help: str):
        q.add_argument("--bundle", action="append", help="input bundle(s) (default fixtures/bundles/medium)")
        q.add_argument("--streaming", action="store_true")
        q.add_argument("--policy", help="tolerance policy TOML (added on top of the defaults)")
        q.add_argument("--max-trials", type=int, help=trials_help)
        q.add_argument("--timeout", type=float, help="stop after this many seconds (the log stays resumable)")
        q.add_argument("--log", help="JSON trial log (default <workdir>/bisect-<mode>.json)")
        q.add_argument("--resume", action="store_true", help="reuse the finished trials of --log")
        q.add_argument("--workdir",
                       help="where traces, trial reports and the log go (default reports/bisect-<mode>-<time>)")
        q.add_argument("--report", help="final HTML report (default <workdir>/bisect-<mode>.html)")
        q.add_argument("--trial-reports", action="store_true", help="a parity report for every trial (slow)")
        q.add_argument("--keep-traces", action="store_true", help="keep every trial's traces/dumps")
        q.add_argument("--progress", action="store_true", default=None, help="progress lines even when not a TTY")
        q.add_argument("--json", help="also write the result as JSON")

    s = sub.add_parser("switches", help="which switch(es) of a failing profile break parity (delta debugging)")
    _add_model_args(s, default_preset="tiny")
    s.add_argument("--profile", help="failing profile (built-in or [tool.parity.profiles] of --pyproject)")
    s.add_argument("--switch", action="append", help="NAME=VALUE switch (repeatable; on top of --profile)")
    s.add_argument("--fault", action="append", help="a catalogue fault as one more switch")
    s.add_argument("--pyproject", help="pyproject.toml with user profiles (default ./pyproject.toml)")
    s.add_argument("--no-local", action="store_true",
                   help="skip the step-local (teacher-forced) errors: faster, but a vocoder_local_mismatch "
                        "then goes unseen")
    common(s, "bound on the trials (default: ddmin's worst case)")
    s.set_defaults(bisect_func=_cmd_switches)

    pr = sub.add_parser("precision", help="which components must stay fp32 for a reduced-precision profile to pass")
    _add_model_args(pr, default_preset="tiny")
    pr.add_argument("--profile", help="failing reduced-precision profile")
    pr.add_argument("--switch", action="append", help="NAME=VALUE switch (repeatable; on top of --profile)")
    pr.add_argument("--pyproject", help="pyproject.toml with user profiles (default ./pyproject.toml)")
    pr.add_argument("--fine", action="store_true", help="refine each chosen block into block<i>.adaln/attn/ff")
    pr.add_argument("--name", help="name of the profile to paste (default <profile>-fp32-islands)")
    pr.add_argument("--no-local", action="store_true", help="skip the step-local (teacher-forced) errors")
    common(pr, "bound on the trials (default: ddmin's worst case)")
    pr.set_defaults(bisect_func=_cmd_precision)

    g = sub.add_parser("git", help="which commit broke parity (git bisect run with a frozen reference)")
    g.add_argument("--good", required=True, help="a revision that passes")
    g.add_argument("--bad", required=True, help="a later revision that fails")
    g.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    g.add_argument("--cmd", help="shell command that writes a dump at {out} (also {ref}, {bundle}); run in a "
                                 "worktree of each commit. Without it: the commit's candidate package in-process")
    g.add_argument("--profile", default="fp32-sdpa", help="candidate profile for the in-process mode")
    g.add_argument("--fault", action="append", help="fault to inject in the in-process mode")
    _add_model_args(g, default_preset="tiny")
    g.add_argument("--ref-trace", action="append", help="frozen reference trace(s) to use instead of computing one")
    g.add_argument("--map", action="append", help="extra alias NAME=CANONICAL for the dumps (repeatable)")
    g.add_argument("--trial-timeout", type=float, default=600.0, help="seconds per commit before it is skipped")
    g.add_argument("--no-verify", action="store_true", help="do not check first that --bad fails and --good passes")
    common(g, "bound on the commits run (default: every commit in the range)")
    g.set_defaults(bisect_func=_cmd_git)


def _load_model_args(args):
    from .cli import _load_model

    return _load_model(args)


def _print_result(res: BisectResult, args) -> int:
    head = headline_text(res.headline, 200)
    if res.mode == "git":
        if res.found:
            c = res.culprit
            line = f"first bad commit {c['sha'][:12]} \"{c['subject']}\""
        else:
            line = res.message
    elif res.mode == "switches":
        line = f"culprit: {' + '.join(res.culprit)}" if res.culprit else res.message
    else:
        line = f"keep in fp32: {', '.join(res.culprit)}" if res.culprit else res.message
    extra = ""
    if res.mode == "git" and res.skipped:
        extra = "; skipped: " + ", ".join(f"{s['sha'][:10]} ({s['reason'][:60]})" for s in res.skipped)
    print(f"parity bisect {res.mode}: {res.status.upper()}: {line}"
          + (f" [{head}]" if head else "") + f"; {res.trials} trial(s)"
          + (f" (bound {res.bound})" if res.bound else "") + f", {res.seconds:.1f} s{extra}")
    if res.found and res.message and res.mode != "git":
        print(f"  {res.message}")
    if res.profile_toml:
        print("\n" + res.profile_toml)
    if res.trial_report:
        print(f"trial report: {res.trial_report}")
    if res.report:
        print(f"report: {res.report}")
    if res.log:
        print(f"log: {res.log}")
    if getattr(args, "json", None):
        _atomic_write(Path(args.json), json.dumps(res.to_dict(), indent=1))
    return res.exit_code


def _cmd_switches(args) -> int:
    if args.device != "cpu":
        raise BisectUsageError("bisect switches: the device is one of the profile's switches (device = \"cuda\" in "
                               "the profile, or --switch device=cuda), not a --device option")
    start, overrides = _switches_arg(args)
    model = _load_model_args(args)
    if overrides:
        start, _ = _resolve_switches(start, args.pyproject, args.fault or (), overrides)
        faults = ()
    else:
        faults = args.fault or ()
    res = bisect_switches(model, start, args.bundle, pyproject=args.pyproject, faults=faults,
                          streaming=args.streaming, policy=args.policy, local=not args.no_local,
                          max_trials=args.max_trials,
                          timeout=args.timeout, workdir=args.workdir, log=args.log, resume=args.resume,
                          report=args.report, progress=args.progress, trial_reports=args.trial_reports,
                          keep_traces=args.keep_traces)
    return _print_result(res, args)


def _cmd_precision(args) -> int:
    start, overrides = _switches_arg(args)
    model = _load_model_args(args)
    if overrides:
        start, _ = _resolve_switches(start, args.pyproject, (), overrides)
    res = bisect_precision(model, start, args.bundle, pyproject=args.pyproject, name=args.name, fine=args.fine,
                           streaming=args.streaming, policy=args.policy, local=not args.no_local,
                           max_trials=args.max_trials, timeout=args.timeout, workdir=args.workdir, log=args.log,
                           resume=args.resume, report=args.report, progress=args.progress,
                           trial_reports=args.trial_reports, keep_traces=args.keep_traces, device=args.device)
    return _print_result(res, args)


def _cmd_git(args) -> int:
    from .aliases import parse_maps

    try:
        res = bisect_git(args.repo, args.good, args.bad, cmd=args.cmd, profile=args.profile, faults=args.fault or (),
                         preset=None if args.model_dir else args.preset, model_dir=args.model_dir, noise=args.noise,
                         device=args.device, bundles=args.bundle, ref_traces=args.ref_trace,
                         streaming=args.streaming, policy=args.policy, maps=parse_maps(args.map),
                         max_trials=args.max_trials, timeout=args.timeout, trial_timeout=args.trial_timeout,
                         workdir=args.workdir, log=args.log, resume=args.resume, verify=not args.no_verify,
                         keep_traces=args.keep_traces, report=args.report, progress=args.progress,
                         trial_reports=args.trial_reports)
    except KeyboardInterrupt:
        print("parity bisect git: interrupted; the repository was restored (git bisect reset, worktrees removed); "
              "rerun with --resume --log LOG to continue", file=sys.stderr)
        raise
    return _print_result(res, args)


def bisect_command(args) -> int:
    """Entry point of ``parity bisect`` (called by :func:`parity.cli.cmd_bisect`)."""
    return int(args.bisect_func(args))


def _main(argv: list[str]) -> int:
    """``python -m parity.bisect _oracle SOCKET``: the oracle client (what ``git bisect run`` runs)."""
    if len(argv) >= 2 and argv[0] == "_oracle":
        sock = argv[-1]
        ns = {"__name__": "__oracle__"}
        sys.argv = ["oracle", sock]
        try:
            exec(compile(ORACLE_CLIENT, "oracle.py", "exec"), ns)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    from .cli import main

    return main(["bisect", *argv])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
