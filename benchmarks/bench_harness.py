"""What the harness itself costs (issues 5, 6, 7): capture overhead, comparison throughput, report build.

    python benchmarks/bench_harness.py --preset cosyvoice3-0.5b --repeats 5 --json out-full.json
    python benchmarks/bench_harness.py --preset tiny --repeats 7 --json out-tiny.json
    python benchmarks/bench_harness.py --parity-run 3      # also time `parity run` (no arguments) in a child

1. Capture overhead: the reference end to end (25 prompt + 50 target tokens) with probes off, with the
   default stages, and with every stage (per-block DiT outputs and HiFT internals too), interleaved in one
   process; medians of per-round paired ratios (probes / no probes).
2. Comparison throughput: a trace of every stage of that run compared against a perturbed copy of
   itself, (a) in memory (``compare_loaded``: metrics, policy, diagnosis) and (b) from disk, the way
   ``parity compare a.safetensors b.safetensors`` does it (read both traces, then compare). MB/s counts the
   tensor bytes of both sides.
3. Report build: ``build_report`` on that comparison (default stages: plots, audio players) and the file size.
4. ``--parity-run N``: wall time of ``parity run`` with no arguments in a fresh child process (imports,
   tiny model, every fixture bundle, report), N times.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_reference import Interleaver, Task, environment, make_inputs, med, paired_ratio  # noqa: E402
from parity.capture.recorder import Recorder  # noqa: E402
from parity.judge.compare import compare_loaded  # noqa: E402
from parity.judge.spec import ComparisonSpec  # noqa: E402
from parity.ingest import Loaded, load  # noqa: E402
from parity.judge.policy import load_policy  # noqa: E402
from parity.trace import write_trace  # noqa: E402
from reference.model import Token2Wav  # noqa: E402
from reference.probe import Probe  # noqa: E402


def nbytes(tensors: dict) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


def perturbed(tensors: dict, scale: float, seed: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (v + scale * v.abs().mean() * torch.randn(v.shape, generator=g, dtype=v.dtype)
                if v.is_floating_point() and v.numel() else v.clone()) for k, v in tensors.items()}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parity-run", type=int, default=0, help="also time `parity run` (no arguments) N times")
    ap.add_argument("--skip-capture", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    res: dict = {"preset": args.preset, "repeats": args.repeats, "env": environment(args.threads)}
    model = Token2Wav.from_preset(args.preset)
    x = make_inputs(25, 50)

    def e2e(patterns):
        def fn():
            probe = None if patterns == "off" else Probe(Recorder(None if patterns == "default" else patterns))
            return model.run(x, probe)
        return fn

    # 1. capture overhead ------------------------------------------------------------------------------
    if not args.skip_capture:
        tasks = [Task("e2e", p, e2e(p), args.repeats) for p in ("off", "default", "all")]
        il = Interleaver(2048)
        t0 = time.perf_counter()
        il.run(tasks, log=log)
        off = tasks[0]
        res["capture"] = {"wall_s": time.perf_counter() - t0, "mm_gflops_median": med(il.mm_rates), "rows": [
            {"probes": t.impl, "median_s": med([s for s, _, _ in t.samples]),
             "ratio_to_off": None if t is off else paired_ratio(t, off)} for t in tasks]}

    # 2. comparison throughput -------------------------------------------------------------------------
    with torch.inference_mode():
        rec = Recorder("all")
        model.run(x, Probe(rec))
    ref = dict(rec.tensors)
    cand = perturbed(ref, 1e-4)
    mb = (nbytes(ref) + nbytes(cand)) / 1e6
    policy = load_policy()
    log(f"  trace: {len(ref)} tensors, {nbytes(ref) / 1e6:.1f} MB per side")
    mem = timed(lambda: compare_loaded(Loaded(dict(ref), {}, "ref"), Loaded(dict(cand), {}, "cand"), ComparisonSpec(policy=policy)),
                args.repeats)
    with tempfile.TemporaryDirectory() as td:
        ra, cb = Path(td) / "ref.safetensors", Path(td) / "cand.safetensors"
        write_trace(ra, ref, {"side": "reference"})
        write_trace(cb, cand, {"side": "candidate"})
        file_mb = (ra.stat().st_size + cb.stat().st_size) / 1e6
        disk = timed(lambda: compare_loaded(load(ra), load(cb), ComparisonSpec(policy=policy)), args.repeats)
    res["compare"] = {"tensors": len(ref), "megabytes_both_sides": mb, "file_megabytes_both": file_mb,
                      "in_memory_s": mem, "from_disk_s": disk,
                      "in_memory_MB_per_s": mb / statistics.median(mem), "from_disk_MB_per_s": mb / statistics.median(disk)}

    # 3. report build ------------------------------------------------------------------------------------
    from parity.present.report import build_report

    dref = {k: v for k, v in ref.items() if Recorder().wants(k)}
    dcand = {k: cand[k] for k in dref}
    result = compare_loaded(Loaded(dict(dref), {}, "ref"), Loaded(dict(dcand), {}, "cand"), ComparisonSpec(policy=policy))
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "r.html"
        rep = timed(lambda: build_report(result, out, ref_tensors=dref, cand_tensors=dcand),
                    max(3, args.repeats // 2))
        res["report"] = {"stages": len(dref), "build_s": rep, "build_median_s": statistics.median(rep),
                         "bytes": out.stat().st_size}

    # 4. parity run, no arguments, fresh child -----------------------------------------------------------
    if args.parity_run:
        exe = Path(sys.executable).parent / "parity"
        runs = []
        with tempfile.TemporaryDirectory() as td:
            for i in range(args.parity_run):
                t0 = time.perf_counter()
                p = subprocess.run([str(exe), "run", "--report", f"{td}/r{i}.html", "--no-progress"], cwd=ROOT,
                                   capture_output=True, text=True)
                index = Path(f"{td}/r{i}.html")  # an index page; one report per case under r{i}/
                cases = sorted(Path(f"{td}/r{i}").glob("*.html"))
                runs.append({"s": time.perf_counter() - t0, "rc": p.returncode,
                             "report_bytes": index.stat().st_size if index.exists() else None,
                             "case_report_bytes": {c.name: c.stat().st_size for c in cases}})
                log(f"  parity run #{i + 1}: {runs[-1]['s']:.1f} s rc={p.returncode}")
        res["parity_run"] = runs
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def render(res: dict) -> str:
    lines = [f"### {res['preset']} (torch threads {res['env'].get('threads', '?')})", ""]
    if "capture" in res:
        c = res["capture"]
        lines += [f"Capture overhead, reference end to end, {res['repeats']} interleaved rounds "
                  f"(matmul {c['mm_gflops_median']:.0f} GFLOP/s median):", "",
                  "| probes | median s | paired ratio to probes off |", "|---|---|---|"]
        for r in c["rows"]:
            ratio = f"{r['ratio_to_off']:.3f}" if r["ratio_to_off"] else "1"
            lines.append(f"| {r['probes']} | {r['median_s']:.3f} | {ratio} |")
        lines.append("")
    c = res["compare"]
    lines += [f"Comparison of a {c['tensors']}-tensor trace against a perturbed copy, {c['megabytes_both_sides']:.1f} MB "
              f"of tensors on both sides ({c['file_megabytes_both']:.1f} MB of files):", "",
              "| path | median s | MB/s |", "|---|---|---|",
              f"| in memory (`compare_loaded`) | {statistics.median(c['in_memory_s']):.3f} | {c['in_memory_MB_per_s']:.0f} |",
              f"| from disk (read both traces + compare) | {statistics.median(c['from_disk_s']):.3f} | "
              f"{c['from_disk_MB_per_s']:.0f} |", ""]
    r = res["report"]
    lines += [f"Report build: {r['stages']} stages, median {r['build_median_s']:.2f} s, {r['bytes'] / 1024:.0f} KiB.", ""]
    if res.get("parity_run"):
        ss = [x["s"] for x in res["parity_run"]]
        lines += [f"`parity run` (no arguments, fresh process): median {statistics.median(ss):.1f} s over {len(ss)} "
                  f"runs (min {min(ss):.1f}, max {max(ss):.1f}), exit codes {[x['rc'] for x in res['parity_run']]}, "
                  f"index page {statistics.median([x['report_bytes'] or 0 for x in res['parity_run']]) / 1024:.0f} KiB, "
                  "case reports " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in
                                              res['parity_run'][-1]['case_report_bytes'].items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
