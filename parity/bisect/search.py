"""Delta debugging (Zeller & Hildebrandt's ddmin) with memoisation, trial and time budgets and the documented
worst case: the search that ``bisect switches`` and ``bisect precision`` run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

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
