"""Measure the three numbers diagnose's audio and flow-output messages compare against (parity/diagnose.py):

* ``AUDIO_DC_STEP`` (0.01): |DC offset of the candidate audio - DC offset of the reference audio|;
* ``AUDIO_CLICK_RATIO`` (10): the click detector's worst high-frequency burst ratio (candidate over reference,
  :func:`parity.measure.audio_metrics.click_detector`, ``clicks.ratio_max``);
* ``FLOW_MEL_CARRIES_X`` (0.05): |flow_mel max |diff| - last step x max |diff|| / last step x max |diff|: how
  far the flow output's worst error is from the last ODE state's (the flow output is that state's target frames).

    python benchmarks/measure_diagnose_thresholds.py [--out benchmarks/results/diagnose_thresholds.json]

Sources: every shipped CPU profile (the legitimate candidates: fp32, bf16, fp16, int8, ONNX Runtime) on every
fixture bundle, offline and streaming, and every single-call fault of the catalogue on the same bundles (the
regressions), tiny preset, judged as ``parity run`` judges. Prints the largest value over the legitimate
candidates and the values of the faults, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def measure(case) -> dict:
    r = case.result
    a = r.audio or {}
    out: dict = {"verdict": r.verdict}
    if a.get("comparable"):
        dr, dc = _num((a.get("ref") or {}).get("dc_offset")), _num((a.get("cand") or {}).get("dc_offset"))
        out["dc_step"] = abs(dc - dr) if dr is not None and dc is not None else None
        out["click_ratio"] = _num((a.get("clicks") or {}).get("ratio_max"))
    by = {s.name: s for s in r.stages}
    last = max((int(n[4:n.index(".")]) for n in by if n.startswith("step") and n.endswith(".x")), default=None)
    fm, xe = by.get("flow_mel"), by.get(f"step{last}.x") if last else None
    f = _num((fm.metrics or {}).get("max_abs_err")) if fm is not None else None
    x = _num((xe.metrics or {}).get("max_abs_err")) if xe is not None else None
    out["flow_mel_vs_x"] = abs(f - x) / x if f is not None and x else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diagnose_thresholds.json"))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from candidate.faults import catalogue
    from candidate.backends.ort import profile_unavailable
    from parity.project import default_bundles, profile_switches, suite_profiles
    from parity.capture.runner import RunMode
    from parity.harness import Harness, ModelSpec

    s = Harness()
    model = s.model(ModelSpec("tiny"))
    rows = []
    t0 = time.perf_counter()
    runs = [("legitimate", p, ()) for p in suite_profiles("cpu") if not profile_unavailable(profile_switches(p))]
    runs += [("fault", "fp32-explicit", (f,)) for f in sorted(catalogue())]
    for kind, prof, faults in runs:
        cand = s.candidate(model, prof, faults)
        for b in default_bundles():
            for streaming in (False, True):
                case = s.run(model, cand, b, RunMode(streaming=streaming), local=False)
                rows.append({"kind": kind, "case": case.name, **measure(case)})
    summary = {}
    for key in ("dc_step", "click_ratio", "flow_mel_vs_x"):
        legit = [r[key] for r in rows if r["kind"] == "legitimate" and r.get(key) is not None]
        faults = {r["case"]: r[key] for r in rows if r["kind"] == "fault" and r.get(key) is not None}
        summary[key] = {"legitimate_max": max(legit) if legit else None, "legitimate_n": len(legit),
                        "faults": faults}
        print(f"{key}: largest over {len(legit)} legitimate cases {summary[key]['legitimate_max']!r}")
        for name, v in sorted(faults.items(), key=lambda kv: -kv[1])[:8]:
            print(f"    {name}: {v:.4g}")
    Path(a.out).write_text(json.dumps({"summary": summary, "rows": rows, "seconds": time.perf_counter() - t0},
                                      indent=1) + "\n")
    print(f"wrote {a.out} ({len(rows)} cases, {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
