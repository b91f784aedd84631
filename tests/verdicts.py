"""The verdicts the harness gives on its own self-tests, recorded so that a change of structure can be shown not
to change them: the fault catalogue (``catalogue()``: each single-call fault injected into ``fp32-explicit``),
the profile matrix (the shipped candidate profiles on the fixture bundles, offline and streaming) and the
streaming-session faults (``catalogue("session")``) with the fp32 profiles' sessions.

Each case is recorded as its verdict, its headline finding's code and its headline stage, and whether a measured
floor judged it (else the flat tolerances did), judged the way ``parity run`` judges (the session's floor store:
shipped floors, else computed). The recorded file is
``tests/data/verdicts.json``; ``tests/test_verdicts_unchanged.py`` recomputes and compares.

    python -m tests.verdicts --write            # record every group (the tiny preset; about 3 minutes)
    python -m tests.verdicts --group faults     # print one group, compare with the record

A change that is meant to change a verdict (a new finding, a floor where there was none) re-records the file
in the same commit and says which cases changed and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = Path(__file__).resolve().parent / "data" / "verdicts.json"
BUNDLES = ROOT / "fixtures" / "bundles"
SESSION_BUNDLE = ROOT / "fixtures" / "sessions" / "stream.safetensors"
MATRIX_BUNDLES = ("short", "medium")  # the long bundle adds time, not paths: every profile runs on these two
FAULT_BUNDLE = "medium"  # the parity suite's fault bundle (130 frames: three chunks in streaming mode)


def _outcome(case) -> dict:
    r = case.result
    fd = r.first_divergence
    return {"verdict": r.verdict, "code": fd.code if fd else None, "stage": fd.stage if fd else None,
            "floor": bool((r.floor or {}).get("applies"))}


def case_ids(group: str) -> list[str]:
    """The case ids of one group, in a stable order (the test parametrises over them)."""
    from candidate.faults import catalogue
    from parity.project import suite_profiles

    if group == "faults":
        out = []
        for name in sorted(catalogue()):
            out += [f"{name}/{FAULT_BUNDLE}-offline", f"{name}/short-streaming"]
            if catalogue()[name].expected_stage_blocks:
                out.append(f"{name}/{FAULT_BUNDLE}-offline-blocks")
        return out
    if group == "matrix":
        return [f"{p}/{b}-{m}" for p in suite_profiles("cpu") for b in MATRIX_BUNDLES for m in ("offline", "streaming")]
    if group == "session":
        return ([f"{f}/stream-session" for f in sorted(catalogue("session"))]
                + [f"{p}/stream-session" for p in ("fp32-explicit", "fp32-sdpa", "fp32-sdpa-math", "fp32-two-calls")])
    raise ValueError(group)


GROUPS = ("faults", "matrix", "session")


class Runner:
    """One harness session for every case (the reference runs and floors are shared, as in ``parity run``)."""

    def __init__(self):
        from parity.harness import Harness, ModelSpec

        self.harness = Harness()
        self.model = self.harness.model(ModelSpec("tiny"))

    def run(self, group: str, case_id: str) -> dict:
        from candidate.faults import catalogue
        from parity.capture.runner import RunMode

        what, where = case_id.split("/")
        s = self.harness
        if group == "session":
            faults = (what,) if what in catalogue("session") else ()
            cand = s.candidate(self.model, "fp32-explicit" if faults else what, faults)
            case = s.run(self.model, cand, SESSION_BUNDLE, RunMode.streaming_session(), local=False)
            return _outcome(case)
        parts = where.split("-")
        bundle, mode, blocks = parts[0], parts[1], parts[2:] == ["blocks"]
        if group == "faults":
            cand = s.candidate(self.model, "fp32-explicit", (what,))
        else:
            cand = s.candidate(self.model, what)
        case = s.run(self.model, cand, BUNDLES / f"{bundle}.safetensors", RunMode(streaming=mode == "streaming"),
                     patterns="+step*.block*" if blocks else None)
        return _outcome(case)


def unavailable(group: str, case_id: str) -> str | None:
    """Why a case cannot run here (a profile whose provider is missing); None when it can."""
    if group != "matrix":
        return None
    from candidate.backends.ort import profile_unavailable
    from candidate.switches import switches_from

    return profile_unavailable(switches_from(case_id.split("/")[0]))


def compute(groups=GROUPS, log=None) -> dict:
    import time

    runner = Runner()
    out: dict = {}
    for g in groups:
        out[g] = {}
        for cid in case_ids(g):
            if unavailable(g, cid):
                continue
            t0 = time.perf_counter()
            out[g][cid] = runner.run(g, cid)
            if log:
                log(f"{g} {cid}: {out[g][cid]} ({time.perf_counter() - t0:.1f} s)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.verdicts")
    p.add_argument("--group", action="append", choices=GROUPS)
    p.add_argument("--write", action="store_true", help=f"record into {RECORD.relative_to(ROOT)}")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    groups = a.group or list(GROUPS)
    got = compute(groups, log=lambda m: print(m, file=sys.stderr, flush=True))
    old = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    changed = [(g, c, old.get(g, {}).get(c), v) for g in got for c, v in got[g].items() if old.get(g, {}).get(c) != v]
    for g, c, was, now in changed:
        print(f"{g} {c}: {was} -> {now}")
    print(f"{sum(len(v) for v in got.values())} cases, {len(changed)} differ from the record")
    if a.write:
        old.update(got)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
