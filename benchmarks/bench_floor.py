"""What a noise floor costs and what it holds: the fp32 floor of every fixture bundle in both modes, and
the reduced-precision envelopes of the shipped low-precision profiles, each judging its own profile.

    python benchmarks/bench_floor.py --json benchmarks/results/floor-tiny.json --markdown benchmarks/results/floor-tiny.md
    python benchmarks/bench_floor.py --bundles short --modes offline --no-envelopes      # one floor

Per floor: seconds (one process, one torch thread, nothing cached; the machine's load is not controlled,
see docs/benchmarks.md), k and its basis, the seconds of each member, and per stage the floor's max_abs,
rel_l2 and what each member family reached there. Per envelope: the same, plus the ratio of its own
candidate profile (a legitimate reduced-precision build must stay within k).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.capture.recorder import Recorder
from parity.floor import EstimateLog, estimate_envelope, estimate_floor, judge, run_reference, spec_from_switches
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.probe import Probe

ROOT = Path(__file__).resolve().parent.parent
ENVELOPE_PROFILES = ["fp16-flow", "bf16-flow", "fp16-all", "int8-dynamic"]
SHOWN = ["mu", "spks", "step1.v1", "step1.v_cfg", "step1.x", "step5.v1", "step10.v1", "step10.v_cfg", "step10.x",
         "flow_mel", "f0", "source", "s_stft", "conv_pre", "magnitude", "phase", "audio_preclamp", "audio"]


def summarize(floor, log: EstimateLog) -> dict:
    contrib = floor.contributions()
    return {"digest": floor.digest, "kind": floor.kind, "k": floor.k,
            "k_basis": {k: v for k, v in floor.k_basis.items() if k != "samples"},
            "seconds": round(log.seconds, 2), "member_seconds": {k: round(v, 3) for k, v in log.member_seconds.items()},
            "stages": {n: {"max_abs": sf.max_abs, "rel_l2": sf.rel_l2, "gate": list(sf.gate), "extra": sf.extra,
                           "margin": sf.margin, "worst": sf.worst,
                           "families": {f: contrib[f].get(n) for f in contrib}} for n, sf in floor.stages.items()}}


def table(title: str, s: dict, candidate: dict | None = None) -> str:
    fams = sorted({f for st in s["stages"].values() for f in st["families"]})
    lines = [f"### {title}", "", f"k = {s['k']:g} ({s['k_basis']['rule']}; largest held-out ratio "
                                 f"{s['k_basis']['largest']:.3g}, Gumbel quantile {s['k_basis']['gumbel_quantile']:.3g}); "
                                 f"{s['seconds']:.1f} s"]
    if candidate:
        lines[-1] += (f"; profile `{candidate['profile']}`: max ratio {candidate['max_ratio']:.3g} "
                      f"({'within k' if candidate['passed'] else 'OVER k at ' + str(candidate['first_over'])})")
    lines += ["", "| stage | floor max_abs | floor rel_l2 | " + " | ".join(f"{f} max_abs" for f in fams) + " |",
              "|---|---|---|" + "---|" * len(fams)]
    for n in SHOWN:
        st = s["stages"].get(n)
        if st is None:
            continue
        cells = [f"{st['families'][f][0]:.2g}" if st["families"].get(f) else "-" for f in fams]
        extra = "".join(f"; {k} {v:.3g}" for k, v in st["extra"].items() if k in st["gate"])
        lines.append(f"| {n} | {st['max_abs']:.3g}{extra} | {st['rel_l2']:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--bundles", default="short,medium,long")
    ap.add_argument("--modes", default="offline,streaming")
    ap.add_argument("--no-envelopes", action="store_true")
    ap.add_argument("--envelope-bundle", default="short")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    model = Token2Wav.from_preset(args.preset)
    out = {"preset": args.preset, "torch": torch.__version__, "floors": [], "envelopes": []}
    md = []
    for b in args.bundles.split(","):
        inputs = load_bundle(ROOT / "fixtures" / "bundles" / f"{b}.safetensors")
        for mode in args.modes.split(","):
            el = EstimateLog()
            f = estimate_floor(model, inputs, streaming=mode == "streaming", bundle_name=b, log=el)
            s = summarize(f, el)
            s.update(bundle=b, mode=mode)
            out["floors"].append(s)
            log(f"fp32 floor {b} {mode}: k {f.k:g}, {el.seconds:.1f} s")
            md.append(table(f"fp32 noise floor, {b}, {mode}", s))
    if not args.no_envelopes:
        b = args.envelope_bundle
        inputs = load_bundle(ROOT / "fixtures" / "bundles" / f"{b}.safetensors")
        base = run_reference(model, inputs, streaming=False)[0]
        for prof in ENVELOPE_PROFILES:
            sw = switches_from(prof)
            el = EstimateLog()
            t0 = time.perf_counter()
            env = estimate_envelope(model, inputs, spec_from_switches(sw), bundle_name=b, log=el)
            rec = Recorder()
            CandidateToken2Wav(model, sw, prof).run(inputs, Probe(rec))
            v = judge(env, base, rec.tensors)
            fo = v.first_over
            cand = {"profile": prof, "passed": v.passed, "max_ratio": v.max_ratio,
                    "first_over": fo.stage if fo else None,
                    "top": sorted([(s.stage, s.statistic, s.ratio) for s in v.stages if s.ratio is not None],
                                  key=lambda x: -x[2])[:5]}
            s = summarize(env, el)
            s.update(bundle=b, mode="offline", profile=prof, candidate=cand, spec=env.provenance.get("precision"))
            out["envelopes"].append(s)
            log(f"envelope {prof}: k {env.k:g}, {el.seconds:.1f} s; candidate max ratio {v.max_ratio:.3g} "
                f"({time.perf_counter() - t0:.1f} s)")
            md.append(table(f"{env.kind} envelope of `{prof}`, {b}, offline", s, cand))
    text = "\n\n".join(md)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, allow_nan=False))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
