"""``bisect precision``: which components must stay in fp32 for a failing reduced-precision profile to pass
(a 1-minimal set of fp32 islands, found by ddmin; ``--fine`` splits a chosen block into its AdaLN, attention
and feed-forward parts), with a ready-to-paste ``[tool.parity.profiles.*]`` table."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Iterable, Sequence

from .log import BisectResult, BisectUsageError, deadline_after, headline_text
from .page import finish
from .search import ddmin, ddmin_bound
from .switches import resolve_switches
from .trials import InProcessSearch, SearchSettings, check_bundles, model_identity

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
                     device: str | None = None, settings: SearchSettings | None = None, **overrides) -> BisectResult:
    """A 1-minimal set of components that must stay in fp32 for a failing reduced-precision profile to pass.

    ``profile``: a profile name (built-in or user) or a :class:`candidate.switches.Switches`. The property
    tested is "the profile with keep_fp32 = its own keep_fp32 + subset passes on every bundle"; keeping every
    component must pass and the profile itself must fail. ``fine`` refines each chosen ``block<i>`` into its
    ``adaln``/``attn``/``ff`` parts. The result carries the ready-to-paste TOML (``profile_toml``).
    ``settings`` (or its fields as keywords): mode, policy, budgets, work directory, log, report.
    """
    st = dataclasses.replace(settings or SearchSettings(), **overrides)
    max_trials = st.max_trials
    t_start = time.perf_counter()
    sw, pname = resolve_switches(profile, pyproject, device=device)
    if sw.flow_dtype == "fp32" and sw.hift_dtype == "fp32":
        raise BisectUsageError(f"{pname or 'profile'}: flow and HiFT already run in fp32 (int8 quantization is not "
                               "governed by keep_fp32): there is no precision to bisect; use bisect switches")
    depth = len(model.flow.decoder.estimator.transformer_blocks)
    comps = precision_components(sw, depth)
    own = list(sw.keep_fp32)
    label = pname or "profile"
    bundles = check_bundles(bundles)
    bound = ddmin_bound(len(comps)) + (sum(ddmin_bound(3) for _ in range(depth)) if fine else 0)
    identity = {"switches": sw.to_dict(), "bundles": [b.name for b in bundles], **st.identity(),
                **model_identity(model)}
    s = InProcessSearch("precision", model, bundles, st, identity=identity, bound=bound,
                        log_settings={"profile": pname, "components": comps, "fine": fine,
                                      "max_trials": max_trials, "timeout_s": st.timeout})
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
    deadline = deadline_after(st.timeout)
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
        return finish(res, s.log, st.report)
    if dd.status == "empty_has_property":
        res.status = "no_failure"
        res.message = f"{label} passes parity as it is: no fp32 island is needed"
        return finish(res, s.log, st.report)
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
    return finish(res, s.log, st.report)
