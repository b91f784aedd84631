"""The DiT estimator under ONNX Runtime against the PyTorch reference, CPU: one DiT forward (the CFG batch of 2,
150 frames) and the end-to-end flow (25 prompt + 50 target tokens, 10 Euler/CFG steps), interleaved in one
process, medians of paired ratios (reference time / ONNX time = speed-up), with the fused node counts of each
session's optimized graph and the agreement of each profile with the reference (max |diff| and rel_l2 of the
DiT output and of flow_mel; untimed).

    python benchmarks/bench_onnx.py --preset tiny --repeats 5                       # seconds
    python benchmarks/bench_onnx.py --preset cosyvoice3-0.5b --repeats 5 --json out.json --op-profile

Target: ``onnx-fused`` at least 1.2x the reference's DiT forward on this CPU, or the measured reason
it cannot be: ``--op-profile`` adds one profiled forward of each side (ONNX Runtime's profiler per op type,
``torch.profiler`` per aten op) and the share of time in matrix products.

The exports go to ``--cache`` (default: the harness cache, ``$PARITY_ONNX_CACHE`` or ~/.cache/tts-parity/onnx);
the first full-size run exports (about a minute) and later runs reuse the file. ONNX Runtime gets as many
intra-op threads as torch (``--threads``) and does not spin between calls, so it does not steal the cores of
the PyTorch call that follows it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_profiles import dit_inputs
from benchmarks.bench_reference import (Interleaver, Task, dit_forward_flops, environment, make_inputs,
                                        med, paired_ratio)
from candidate.mask_check import rel_l2
from candidate.pipeline import CandidateToken2Wav
from candidate.switches import resolve_profile
from parity.capture.recorder import Recorder
from reference.model import Token2Wav
from reference.probe import Probe

PROFILES = ["onnx-cpu", "onnx-fused"]
MATMUL_ORT = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "Attention", "MultiHeadAttention"}
MATMUL_TORCH = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}


def ort_op_profile(est, args) -> dict:
    """Seconds per op type of one estimator call, from ONNX Runtime's own profiler (a fresh session with
    profiling on, same graph and settings)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, {"all": "ORT_ENABLE_ALL", "basic":
                                          "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                                          "disabled": "ORT_DISABLE_ALL"}[est.opt_level])
    so.intra_op_num_threads = est.threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as d:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "ort")
        s = ort.InferenceSession(str(est.path), so, providers=est.providers_requested)
        feed = est.feed(*args)
        s.run(None, feed)  # warm-up (kernel selection, pre-packing)
        s.run(None, feed)
        prof = s.end_profiling()
        events = json.loads(Path(prof).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    by = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= last_start:
            by[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1e6
    total = sum(by.values())
    mm = sum(v for k, v in by.items() if k in MATMUL_ORT)
    return {"total_s": total, "matmul_s": mm, "matmul_share": mm / total if total else None,
            "top": sorted(((k, round(v, 4)) for k, v in by.items()), key=lambda kv: -kv[1])[:12]}


def torch_op_profile(fn) -> dict:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    rows = [(e.key, e.self_cpu_time_total / 1e6) for e in p.key_averages()]
    total = sum(v for _, v in rows)
    mm = sum(v for k, v in rows if k in MATMUL_TORCH)
    return {"total_s": total, "matmul_s": mm, "matmul_share": mm / total if total else None,
            "top": sorted(((k, round(v, 4)) for k, v in rows), key=lambda kv: -kv[1])[:12]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profiles", help=f"comma-separated (default {','.join(PROFILES)}; onnx-fp16 and "
                                       f"onnx-cpu-basic also work)")
    ap.add_argument("--frames", type=int, default=150, help="DiT forward length (default 150 = 25 + 50 tokens)")
    ap.add_argument("--no-flow", action="store_true", help="DiT forward only")
    ap.add_argument("--op-profile", action="store_true", help="per-op time shares of one forward on each side")
    ap.add_argument("--cache", help="export cache directory")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.cache:
        os.environ["PARITY_ONNX_CACHE"] = args.cache
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    profiles = args.profiles.split(",") if args.profiles else PROFILES
    model = Token2Wav.from_preset(args.preset)
    ref_dit = model.flow.decoder.estimator
    x = make_inputs(25, 50)
    build = {}
    cands = {}
    for p in profiles:
        t0 = time.perf_counter()
        cands[p] = CandidateToken2Wav(model, resolve_profile(p), p)
        build[p] = time.perf_counter() - t0
        log(f"built {p} in {build[p]:.1f} s")
    est_cfg = model.cfg.flow.decoder.estimator
    din = dit_inputs(est_cfg, args.frames)
    flops = dit_forward_flops(est_cfg, 2, args.frames)["total"]

    # agreement (untimed): one DiT forward, and the flow's step1.v1 and flow_mel
    agree = {}
    with torch.inference_mode():
        ref_v = ref_dit(*din)
        rec = Recorder(["step1.v1", "flow_mel"])
        if not args.no_flow:
            model.flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], model.noise,
                                 probe=Probe(rec))
        for p, c in cands.items():
            v = c.flow.estimator(*din)
            a = {"dit_max_abs": float((v.double() - ref_v.double()).abs().max()), "dit_rel_l2": rel_l2(v, ref_v)}
            if not args.no_flow:
                r2 = Recorder(["step1.v1", "flow_mel"])
                c.flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], c.noise,
                                 probe=Probe(r2))
                for n in ("step1.v1", "flow_mel"):
                    a[f"{n}_max_abs"] = float((r2.tensors[n].double() - rec.tensors[n].double()).abs().max())
                    a[f"{n}_rel_l2"] = rel_l2(r2.tensors[n], rec.tensors[n])
            agree[p] = a
            log(f"agreement {p}: {a}")

    def flow_call(f, noise):
        return lambda: f.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], noise)

    tasks = [Task(f"dit{args.frames}", "reference", lambda: ref_dit(*din), args.repeats, flops=flops)]
    tasks += [Task(f"dit{args.frames}", p, (lambda e: lambda: e(*din))(c.flow.estimator), args.repeats, flops=flops)
              for p, c in cands.items()]
    if not args.no_flow:
        tasks.append(Task("flow", "reference", flow_call(model.flow, model.noise), args.repeats))
        tasks += [Task("flow", p, flow_call(c.flow, c.noise), args.repeats) for p, c in cands.items()]
    il = Interleaver(2048)
    t0 = time.perf_counter()
    il.run(tasks, log=log)
    wall = time.perf_counter() - t0
    by = {(t.name, t.impl): t for t in tasks}
    rows = []
    for t in tasks:
        ref = by[(t.name, "reference")]
        times = [s for s, _, _ in t.samples]
        row = {"task": t.name, "impl": t.impl, "median_s": med(times), "n": len(times)}
        if t.impl != "reference":
            row["speedup"] = paired_ratio(ref, t)
            row["speedup_mm_normalized"] = paired_ratio(ref, t, mm_normalized=True)
        if t.flops:
            row["gflops"] = med([t.flops / s / 1e9 for s, _, _ in t.samples])
            row["mm_fraction"] = med([t.flops / s / 1e9 / m for s, m, _ in t.samples])
        rows.append(row)
    prov = {p: c.provenance(streaming=False)["onnx"] for p, c in cands.items()}
    res = {"preset": args.preset, "repeats": args.repeats, "frames": args.frames, "env": environment(args.threads),
           "onnxruntime": next(iter(prov.values()))["onnxruntime"] if prov else None,
           "mm_gflops_median": med(il.mm_rates), "wall_s": wall, "rows": rows, "agreement": agree,
           "build_s": build,
           "fused_nodes": {p: v["fused_nodes"] for p, v in prov.items()},
           "fusion": {p: v.get("fusion") for p, v in prov.items()},
           "export": {p: {k: (v.get("export") or {}).get(k) for k in ("export_seconds", "cached", "file_sha256")}
                      for p, v in prov.items()},
           "samples": {f"{t.name}/{t.impl}": t.samples for t in tasks}}
    if args.op_profile:
        with torch.inference_mode():
            res["op_profile"] = {"reference": torch_op_profile(lambda: ref_dit(*din))}
            for p, c in cands.items():
                res["op_profile"][p] = ort_op_profile(c.flow.estimator, din)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def render(res: dict) -> str:
    lines = [f"### {res['preset']}: ONNX Runtime {res['onnxruntime']} vs the PyTorch reference, "
             f"{res['env'].get('threads', '?')} threads, median of {res['repeats']} interleaved rounds, matmul "
             f"{res['mm_gflops_median']:.1f} GFLOP/s median, wall {res['wall_s']:.0f} s", "",
             "| task | impl | median s | speed-up vs reference (paired) | mm-normalised | GFLOP/s | share of mm rate |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        sp = f"{r['speedup']:.3f}x" if r.get("speedup") else ""
        spn = f"{r['speedup_mm_normalized']:.3f}x" if r.get("speedup_mm_normalized") else ""
        g = f"{r['gflops']:.1f}" if r.get("gflops") else ""
        f = f"{100 * r['mm_fraction']:.0f} %" if r.get("mm_fraction") else ""
        lines.append(f"| {r['task']} | {r['impl']} | {r['median_s']:.4f} | {sp} | {spn} | {g} | {f} |")
    lines += ["", "| profile | fused nodes (session graph) | DiT max abs | DiT rel_l2 | step1.v1 max abs | "
              "flow_mel max abs | flow_mel rel_l2 |", "|---|---|---|---|---|---|---|"]
    for p, a in res["agreement"].items():
        fn = ", ".join(f"{k} {v}" for k, v in res["fused_nodes"][p].items()) or "none"
        lines.append(f"| {p} | {fn} | {a['dit_max_abs']:.2e} | {a['dit_rel_l2']:.2e} | "
                     f"{a.get('step1.v1_max_abs', float('nan')):.2e} | {a.get('flow_mel_max_abs', float('nan')):.2e} | "
                     f"{a.get('flow_mel_rel_l2', float('nan')):.2e} |")
    if res.get("op_profile"):
        lines += ["", "| impl | profiled forward s | in matrix products | share | top ops |", "|---|---|---|---|---|"]
        for k, v in res["op_profile"].items():
            top = ", ".join(f"{n} {s:.3f}" for n, s in v["top"][:5])
            lines.append(f"| {k} | {v['total_s']:.3f} | {v['matmul_s']:.3f} | "
                         f"{100 * (v['matmul_share'] or 0):.0f} % | {top} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
