"""Measure the glitch detectors of parity/streaming_metrics.py: where legitimate streams sit and where clicks sit.

    python benchmarks/measure_glitch_thresholds.py [--quick] [--out benchmarks/results/glitch_thresholds.json]

Two sources of evidence:

1. **Sessions of the tiny preset** (reference/session.py): the reference stream against candidates that are
   legitimate (fp32 profiles; reduced-precision profiles listed apart) and against every streaming fault, on
   the session bundle (P=12, three chunks + final) and, unless ``--quick``, the ``long`` and ``medium``
   bundles and the ``final_mask=streaming`` / ``hop_state=carried`` options. For every candidate boundary:
   each detector's score over the reference's local ceiling (the ratio the thresholds apply to).
2. **A real speech recording** (fixtures/audio/arctic_a0007_24k.wav, 4 s) as the "reference stream", with
   boundaries every 0.6 s: legitimate copies (the recording plus white noise 100 dB and 60 dB below full scale)
   and spliced copies that model the loop's failure modes (a frame's samples dropped at each boundary, a
   vocoder restart (5 ms fade-in from silence), 6 frames duplicated, a 10 ms skip, a DC offset of 0.02).
   The seeded tiny vocoder's output is noise-like (a strong 6 kHz iSTFT pattern), which hides sample-level
   discontinuities; speech shows what the detectors do on the signals they are meant for.

Prints a table and writes the JSON (the maxima over legitimate streams and the minima over clicks per detector).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from candidate.faults import catalogue  # noqa: E402
from candidate.pipeline import CandidateToken2Wav  # noqa: E402
from candidate.switches import switches_from  # noqa: E402
from parity.measure.streaming_metrics import detect_glitches, expected_chunk_samples  # noqa: E402
from reference.bundle import load_bundle  # noqa: E402
from reference.mel import load_wav  # noqa: E402
from reference.model import Token2Wav  # noqa: E402
from reference.session import SessionOptions  # noqa: E402

LEGIT_FP32 = ["fp32-explicit", "fp32-sdpa", "fp32-sdpa-math", "fp32-two-calls"]
LEGIT_REDUCED = ["bf16-flow", "fp16-flow", "int8-dynamic"]
DETECTORS = ["d1", "d2", "flux", "dc"]


def _expected(res) -> list[int]:
    offsets = [c.token_offset for c in res.schedule.chunks]
    return expected_chunk_samples(offsets, res.schedule.n_tokens, token_mel_ratio=res.options.token_mel_ratio,
                                  samples_per_frame=res.samples_per_frame, holdback_frames=res.holdback_frames)


def _rows(report) -> list[dict]:
    return [{"chunk": b.chunk, "sample": b.sample, **{k: round(v, 4) for k, v in b.ratios().items()},
             "raw": {k: float(f"{getattr(b, k):.4g}") for k in ("d1", "d2", "flux", "dc")},
             "ceiling": {k: float(f"{getattr(b, 'ref_' + k):.4g}") for k in ("d1", "d2", "flux", "dc")}}
            for b in report.boundaries]


def sessions(quick: bool) -> dict:
    torch.set_num_threads(1)
    model = Token2Wav.from_preset("tiny")
    cases = [("stream", ROOT / "fixtures" / "sessions" / "stream.safetensors", SessionOptions())]
    if not quick:
        cases += [("long", ROOT / "fixtures" / "bundles" / "long.safetensors", SessionOptions()),
                  ("medium", ROOT / "fixtures" / "bundles" / "medium.safetensors", SessionOptions()),
                  ("stream/final_mask=streaming", ROOT / "fixtures" / "sessions" / "stream.safetensors",
                   SessionOptions(final_mask="streaming")),
                  ("stream/hop_state=carried", ROOT / "fixtures" / "sessions" / "stream.safetensors",
                   SessionOptions(hop_state="carried"))]
    profiles = LEGIT_FP32[:2] if quick else LEGIT_FP32 + LEGIT_REDUCED
    out = {}
    for label, bundle, opts in cases:
        inputs = load_bundle(bundle)
        ref = model.run_session(inputs, options=opts)
        runs = [(p, switches_from(p)) for p in profiles]
        runs += [(f, switches_from("fp32-explicit", (f,))) for f in sorted(catalogue("session"))]
        for name, sw in runs:
            res = CandidateToken2Wav(model, sw, name).run_session(inputs, options=opts)
            rep = detect_glitches(res.audio, [c.samples for c in res.chunks], ref.audio, expected_samples=_expected(res))
            kind = ("legit-fp32" if name in LEGIT_FP32 else "legit-reduced" if name in LEGIT_REDUCED else "fault")
            out[f"{label}|{name}"] = {"case": label, "candidate": name, "kind": kind, "boundaries": _rows(rep),
                                      "findings": sorted({f.kind for f in rep.findings})}
    return out


def speech() -> dict:
    x, sr = load_wav(ROOT / "fixtures" / "audio" / "arctic_a0007_24k.wav")
    x = x.astype(np.float64)
    bounds = list(range(int(0.6 * sr), len(x) - int(0.3 * sr), int(0.6 * sr)))
    rng = np.random.default_rng(20250105)

    def split(y):
        pieces = [y[a:b] for a, b in zip([0] + bounds, bounds + [len(y)])]
        return pieces

    def join(pieces):
        y = np.concatenate(pieces)
        return y, [len(p) for p in pieces]

    variants = {}
    for db in (100, 60):
        y = x + rng.standard_normal(len(x)) * 10 ** (-db / 20)
        variants[f"noise-{db}dB"] = ("legit", *join(split(y)))
    p = split(x)
    variants["drop-frame"] = ("click", *join([q if i == 0 else q[480:] for i, q in enumerate(p)]))
    ramp = np.minimum(np.arange(len(x)) / (0.005 * sr), 1.0)
    variants["restart-fade-in"] = ("click", *join([q if i == 0 else q * ramp[:len(q)] for i, q in enumerate(p)]))
    variants["duplicate-6-frames"] = ("click", *join([q if i == 0 else np.concatenate([x[bounds[i - 1] - 2880:bounds[i - 1]], q])
                                                      for i, q in enumerate(p)]))
    variants["skip-10ms"] = ("click", *join([q if i == 0 else q[240:] for i, q in enumerate(p)]))
    variants["dc-offset-0.02"] = ("click", *join([q if i == 0 else q + 0.02 * (-1) ** i for i, q in enumerate(p)]))
    out = {}
    for name, (kind, y, counts) in variants.items():
        rep = detect_glitches(y, counts, x, sample_rate=sr)
        out[f"speech|{name}"] = {"case": "speech", "candidate": name, "kind": "legit-fp32" if kind == "legit" else "click",
                                 "boundaries": _rows(rep), "findings": sorted({f.kind for f in rep.findings})}
    return out


def summarise(rows: dict) -> dict:
    """Per kind of stream: the largest ratio of each detector over all boundaries, and for the DC step (which
    also needs an absolute floor) the largest raw value."""
    summ = {}
    for kind in ("legit-fp32", "legit-reduced", "fault", "click"):
        sel = [r for r in rows.values() if r["kind"] == kind]
        if sel:
            summ[kind] = {d: max((b[d] for r in sel for b in r["boundaries"] if np.isfinite(b[d])), default=None)
                          for d in DETECTORS}
            summ[kind]["dc_raw"] = max((b["raw"]["dc"] for r in sel for b in r["boundaries"]
                                        if np.isfinite(b["raw"]["dc"])), default=None)
    return summ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="session bundle only, two fp32 candidates")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = {**sessions(args.quick), **speech()}
    for key, r in rows.items():
        worst = {d: max((b[d] for b in r["boundaries"] if np.isfinite(b[d])), default=float("nan")) for d in DETECTORS}
        print(f"{key:60s} {r['kind']:13s} " + " ".join(f"{d}={worst[d]:7.3f}" for d in DETECTORS)
              + f"  findings={','.join(r['findings']) or '-'}")
    summ = summarise(rows)
    print(json.dumps(summ, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary_max_ratio": summ, "rows": rows, "quick": args.quick,
                                        "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 1)},
                                       indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
