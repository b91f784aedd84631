"""Every candidate profile against the reference on CPU: interleaved in one process, medians of paired
ratios (reference time / profile time = speed-up), plus the DiT forward's share of the fp32 matmul rate.

    python benchmarks/bench_profiles.py --preset tiny --repeats 7 --json out-tiny.json
    python benchmarks/bench_profiles.py --preset cosyvoice3-0.5b --repeats 5 --json out-full.json

This CPU drifts in speed by up to 2x within minutes: every round runs every variant (order reversed on
odd rounds) with a 2048^3 matmul measured right before each call, and ratios are medians over rounds of
per-round pairs, never ratios of lone absolute times.

End to end = ``pipeline.run`` on 25 prompt + 50 target tokens (150 mel frames, 2 s of audio). On this
AVX2-only CPU, fp16/bf16 matmuls run at ~1 GFLOP/s: a full-size reduced-precision end-to-end run would take
tens of minutes, so at full size those profiles are timed on one DiT forward (batch 2, 20 frames) against
the reference's DiT forward on the same input, and say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_reference import (Interleaver, Task, dit_forward_flops, environment, make_inputs,
                                        med, paired_ratio)
from candidate.pipeline import CandidateToken2Wav
from candidate.switches import resolve_profile
from parity.project import shipped_profiles
from reference.model import Token2Wav

CPU_PROFILES = shipped_profiles("cpu", include_reference=True)  # from the one registry (candidate.switches)
REDUCED = [p for p in CPU_PROFILES if resolve_profile(p).precision in ("bf16", "fp16")]  # slow on CPU at full size
FP32 = [p for p in CPU_PROFILES if p not in REDUCED]  # fp32 and int8


def dit_inputs(cfg, frames: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 80, frames, generator=g)
    mu = torch.randn(2, 80, frames, generator=g)
    cond = torch.randn(2, 80, frames, generator=g)
    spks = torch.randn(2, 80, generator=g)
    return x, torch.ones(2, 1, frames), mu, torch.tensor([0.3, 0.3]), spks, cond


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profiles", help="comma-separated (default: every CPU profile)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    full = args.preset != "tiny"
    profiles = args.profiles.split(",") if args.profiles else FP32 + REDUCED
    model = Token2Wav.from_preset(args.preset)
    x = make_inputs(25, 50)
    cands = {p: CandidateToken2Wav(model, resolve_profile(p), p) for p in profiles}
    e2e_profiles = [p for p in profiles if not (full and p in REDUCED)]
    dit_profiles = [p for p in profiles if full and p in REDUCED]

    def e2e(pipe):
        return lambda: pipe.run(x)

    est_cfg = model.cfg.flow.decoder.estimator
    dit_T = 150
    fl = dit_forward_flops(est_cfg, 2, dit_T)
    dit_flops = fl["total"]
    dit_flops_cached = fl["total"] - fl["adaln"] - fl["time_mlp"]  # adaln_cache: computed once per solve
    dref_in = dit_inputs(est_cfg, dit_T)
    small_T = 20
    small_in = dit_inputs(est_cfg, small_T)

    tasks = [Task("e2e", "reference", e2e(model), args.repeats)]
    tasks += [Task("e2e", p, e2e(cands[p]), args.repeats) for p in e2e_profiles]
    # DiT forward (batch 2, 150 frames) of the reference and of the fp32 candidates: share of the matmul rate
    ref_dit = model.flow.decoder.estimator
    tasks.append(Task("dit150", "reference", lambda: ref_dit(*dref_in), args.repeats, flops=dit_flops))
    for p in [q for q in ("fp32-sdpa", "compiled", "int8-dynamic") if q in profiles]:
        est = cands[p].flow.estimator
        cached = cands[p].sw.adaln_cache
        if cached:
            # the per-step forward inside a solve: modulations come from the per-solve cache (re-installed
            # before each call, since this candidate's e2e runs clear it at the end of every solve)
            est.cache_modulations([dref_in[3][:1].reshape(())])
        saved = dict(est._mod_cache)

        def fwd(e=est, saved=saved):
            e._mod_cache = saved
            return e(*dref_in)

        tasks.append(Task("dit150", p, fwd, args.repeats, flops=dit_flops_cached if cached else dit_flops))
    if dit_profiles:
        tasks.append(Task("dit20", "reference", lambda: ref_dit(*small_in), max(3, args.repeats // 2)))
        for p in dit_profiles:
            est = cands[p].flow.estimator
            tasks.append(Task("dit20", p, (lambda e: lambda: e(*small_in))(est), max(3, args.repeats // 2)))
    il = Interleaver(2048)
    t0 = time.perf_counter()
    il.run(tasks, log=log)
    wall = time.perf_counter() - t0
    by = {(t.name, t.impl): t for t in tasks}
    rows = []
    for t in tasks:
        if t.impl == "reference":
            continue
        ref = by[(t.name, "reference")]
        r = paired_ratio(ref, t)  # reference / profile: > 1 means the profile is faster
        row = {"task": t.name, "profile": t.impl, "median_s": med([s for s, _, _ in t.samples]),
               "reference_median_s": med([s for s, _, _ in ref.samples]), "speedup": r,
               "speedup_mm_normalized": paired_ratio(ref, t, mm_normalized=True), "n": len(t.samples)}
        if t.flops:
            rates = [t.flops / s / 1e9 for s, _, _ in t.samples]
            fractions = [t.flops / s / 1e9 / m for s, m, _ in t.samples]
            row.update(gflops=med(rates), mm_fraction=med(fractions))
        rows.append(row)
    refdit = by.get(("dit150", "reference"))
    ref_row = None
    if refdit:
        ref_row = {"gflops": med([dit_flops / s / 1e9 for s, _, _ in refdit.samples]),
                   "mm_fraction": med([dit_flops / s / 1e9 / m for s, m, _ in refdit.samples])}
    res = {"preset": args.preset, "repeats": args.repeats, "env": environment(args.threads),
           "mm_gflops_median": med(il.mm_rates), "wall_s": wall, "rows": rows, "reference_dit150": ref_row,
           "dit_flops_150": dit_flops,
           "samples": {f"{t.name}/{t.impl}": t.samples for t in tasks}}
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def render(res: dict) -> str:
    lines = [f"### {res['preset']}: median of {res['repeats']} interleaved rounds, matmul {res['mm_gflops_median']:.1f} "
             f"GFLOP/s median, wall {res['wall_s']:.0f} s", "",
             "| task | profile | median s | reference median s | speed-up (paired) | mm-normalised | GFLOP/s | share of mm rate |",
             "|---|---|---|---|---|---|---|---|"]
    if res.get("reference_dit150"):
        r = res["reference_dit150"]
        lines.append(f"| dit150 | reference | | | | | {r['gflops']:.1f} | {100 * r['mm_fraction']:.0f} % |")
    for r in res["rows"]:
        g = f"{r['gflops']:.1f}" if r.get("gflops") else ""
        f = f"{100 * r['mm_fraction']:.0f} %" if r.get("mm_fraction") else ""
        sp = f"{r['speedup']:.3f}x" if r["speedup"] else "-"
        spn = f"{r['speedup_mm_normalized']:.3f}x" if r["speedup_mm_normalized"] else "-"
        lines.append(f"| {r['task']} | {r['profile']} | {r['median_s']:.3f} | {r['reference_median_s']:.3f} | {sp} | "
                     f"{spn} | {g} | {f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
