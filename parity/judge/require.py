"""Stages a candidate must hold (``--require-stages``, ``--require-stage NAME``): a requirement of the command,
added to a comparison result as a failure finding after the diagnosis (like ``--require-kernel``), so the
verdict, the headline and the exit code follow from the findings as always."""

from __future__ import annotations

from ..result import Comparison, Finding
from ..stages import SESSION_KEY_STAGES, is_session_stage, position


def absent_stages(result: Comparison, stages) -> list[str]:
    """The stages of ``stages`` the candidate side of ``result`` does not hold. In a streaming session the key
    stages are the stream's: ``flow_mel`` is ``stream.mel``, ``audio`` is ``stream.audio``."""
    out = []
    session = bool(result.session) or any(is_session_stage(s.name) for s in result.stages)
    for name in stages:
        if session:
            name = SESSION_KEY_STAGES.get(name, name)
        s = result.stage(name)
        held = s is not None and s.status != "missing" and (s.cand_stats is not None or s.status == "extra")
        if not held:
            out.append(name)
    return out


def require_stages(result: Comparison, stages) -> Finding | None:
    """Add the failure ``stage_missing_required`` when the candidate lacks any of ``stages``; returns it."""
    absent = absent_stages(result, stages or ())
    if not absent:
        return None
    return result.add_finding(Finding("stage_missing_required", absent[0], "failure",
                                      f"required stages absent: {', '.join(absent)} (the candidate does not hold "
                                      f"them; required by --require-stages)", {"stages": absent},
                                      list(position(absent[0]))))
