"""The bookkeeping every bisection shares: the JSON trial log (atomic rewrites, resumable), the progress lines,
the result, the work directory and the budgets."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference.errors import InputError

from ..outputs import unique_stamp, write_output

SCHEMA = "tts-parity-bisect/1"
# the exit code of each outcome (see BisectResult.exit_code); anything else: 1
EXIT_CODES = {"found": 0, "no_failure": 0, "interrupted": 130}


class BisectUsageError(InputError):
    """A bisect request that cannot be carried out as given (exit 2)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def atomic_write(path: Path, text: str) -> None:
    """The bisector's files (log, result JSON) through :func:`parity.outputs.write_output`."""
    write_output(path, text)


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
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
        self.identity = jsonable(identity)
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
            self.data = {"schema": SCHEMA, "mode": mode, "created": now(), "identity": self.identity, "trials": []}
        self.data["settings"] = jsonable(settings or {})
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
        entry = jsonable(entry)
        if "key" in entry:
            entry["key"] = self.norm_key(entry["key"])
        entry.setdefault("n", len(self.trials) + 1)
        self.trials.append(entry)
        self.save()
        return entry

    def update(self, **kw) -> None:
        self.data.update(jsonable(kw))
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write(self.path, json.dumps(self.data, indent=1))


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
        """0: the question has an answer (``found``: the culprit; ``no_failure``: nothing fails, so nothing
        needs bisecting); 1: parity fails and the search named no proven culprit (``start_fails``,
        ``end_fails``, ``budget_exhausted``, ``ambiguous``, ``error``); 130: ``interrupted``. Unusable input
        exits 2 before any trial (:class:`BisectUsageError`)."""
        return EXIT_CODES.get(self.status, 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return jsonable(d)


def make_workdir(workdir, log, mode: str) -> tuple[Path, Path]:
    """(work directory, log path): from --log, --workdir, or reports/bisect-<mode>-<time ms>-<pid>."""
    if log is not None:
        log = Path(log)
        wd = Path(workdir) if workdir else log.parent
    else:
        wd = Path(workdir) if workdir else Path("reports") / f"bisect-{mode}-{unique_stamp()}"
        log = wd / f"bisect-{mode}.json"
    wd.mkdir(parents=True, exist_ok=True)
    return wd.resolve(), log.resolve()


def deadline_after(timeout: float | None) -> float | None:
    """An absolute :func:`time.monotonic` deadline ``timeout`` seconds from now (None: no deadline)."""
    return time.monotonic() + float(timeout) if timeout else None
