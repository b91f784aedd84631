"""``bisect switches``: which of a failing profile's changes against the reference-equivalent defaults break
parity. Each differing scalar switch and each fault is one atomic change; ``keep_fp32`` travels with the
dtype change it protects. Delta debugging finds a 1-minimal failing set."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .log import BisectResult, deadline_after, headline_text
from .page import finish
from .search import ddmin, ddmin_bound
from .trials import InProcessSearch, SearchSettings, check_bundles, model_identity

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
    """Each scalar switch that differs from the defaults, each option of the estimator backend
    (``estimator.<option>=<value>``) and each fault, as its own change. ``keep_fp32`` is not a change of its own:
    it travels with the dtype change it protects, and a backend's options with the backend (see
    :func:`apply_changes`)."""
    from candidate.switches import Switches

    base = Switches()
    out = []
    for f in dataclasses.fields(Switches):
        if f.name in ("keep_fp32", "faults", "estimator_options"):
            continue
        v = getattr(sw, f.name)
        if v != getattr(base, f.name):
            out.append(Change(f"{f.name}={_fmt_value(v)}", f.name, v))
    for k, v in sw.estimator_options:
        out.append(Change(f"estimator.{k}={_fmt_value(v)}", "estimator_options", (k, v)))
    for spec in sw.faults:
        out.append(Change(f"fault={spec}", "faults", spec))
    return out


def apply_changes(changes: Iterable[Change], keep_fp32: Sequence[str] = ()):
    """``Switches()`` plus ``changes``; the profile's flow keep_fp32 entries come with a reduced flow dtype,
    its ``hift.*`` entries with a reduced HiFT dtype."""
    from candidate.switches import Switches

    kw: dict = {}
    faults: list = []
    options: dict = {}
    for c in changes:
        if c.field == "faults":
            faults.append(c.value)
        elif c.field == "estimator_options":
            options[c.value[0]] = c.value[1]
        else:
            kw[c.field] = c.value
    flow_red = kw.get("flow_dtype", "fp32") != "fp32"
    hift_red = kw.get("hift_dtype", "fp32") != "fp32"
    keep = tuple(k for k in keep_fp32 if (hift_red if k.startswith("hift.") else flow_red))
    if "estimator_backend" in kw:  # a backend's options travel with it (without it they mean nothing)
        kw["estimator_options"] = options
    return Switches(**kw, keep_fp32=keep, faults=tuple(faults))


def resolve_switches(switches_or_profile, pyproject=None, faults=(), overrides: dict | None = None,
                      device: str | None = None):
    """(Switches, profile name or None) from a Switches, a profile name, or None (= defaults + overrides)."""
    from candidate.switches import Switches

    from ..project import profile_switches

    if isinstance(switches_or_profile, Switches):
        sw, name = switches_or_profile, None
        if faults:
            sw = sw.with_(faults=tuple(dict.fromkeys(tuple(sw.faults) + tuple(faults))))
        if overrides:
            sw = sw.with_(**overrides)
    else:
        name = switches_or_profile
        sw = profile_switches(name, list(faults or ()), pyproject, **(overrides or {}))
    if device and device != "cpu":
        sw = sw.with_(device=device)
    return sw, name


def bisect_switches(model, switches_or_profile, bundles=None, *, pyproject=None, faults=(),
                    settings: SearchSettings | None = None, **overrides) -> BisectResult:
    """A 1-minimal set of a failing profile's atomic changes that still fails parity (ddmin).

    ``switches_or_profile``: a :class:`candidate.switches.Switches` or a profile name (built-in or from
    ``pyproject``'s ``[tool.parity.profiles]``). The oracle runs the candidate built from ``Switches()`` plus
    the subset on every bundle (default: the ``medium`` fixture); "fail" on any bundle = the property holds.
    ``settings`` (or its fields as keywords): mode, policy, budgets, work directory, log, report.
    """
    st = dataclasses.replace(settings or SearchSettings(), **overrides)
    t_start = time.perf_counter()
    sw, pname = resolve_switches(switches_or_profile, pyproject, faults)
    changes = atomic_changes(sw)
    by_name = {c.name: c for c in changes}
    order = [c.name for c in changes]
    label = pname or "switches"
    bundles = check_bundles(bundles, st.is_session)
    bound = ddmin_bound(len(changes))
    identity = {"switches": sw.to_dict(), "bundles": [b.name for b in bundles], **st.identity(),
                **model_identity(model)}
    s = InProcessSearch("switches", model, bundles, st, identity=identity, bound=bound,
                        log_settings={"profile": pname, "changes": order, "max_trials": st.max_trials,
                                      "timeout_s": st.timeout})
    res = BisectResult("switches", "error", bound=bound)
    if not changes:
        res.status, res.message = "no_failure", f"{label}: no switch differs from the reference-equivalent defaults"
        return finish(res, s.log, st.report)

    def test(names: list[str]) -> bool:
        chosen = [by_name[n] for n in order if n in names]
        what = " + ".join(names) if names else "(defaults)"
        return s.trial(names, apply_changes(chosen, sw.keep_fp32), what, lambda v: v == "fail")

    s.progress.note(f"{label}: {len(changes)} change(s): {', '.join(order)}; ddmin worst case {bound} trials")
    dd = ddmin(order, test, max_trials=st.max_trials, deadline=deadline_after(st.timeout), cache=s.cache_from_log())
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
    return finish(res, s.log, st.report)
