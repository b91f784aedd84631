"""Why would the ``shape-crash`` case be slower than a normal run (seen once: 65 s against 23 s)? Time it.

    python benchmarks/bench_crash_case.py --rounds 3 --json out.json          # in-process phases, interleaved
    python benchmarks/bench_crash_case.py --rounds 3 --parity-run 2          # + `parity run` in fresh children

1. In-process, interleaved (normal, crash, normal, crash, ...), each variant in a fresh
   :class:`parity.harness.Harness` (so its reference runs are computed, as in one ``parity run``), on every
   fixture bundle: the phases :func:`parity.harness.run_case` records (reference, candidate, step-local,
   compare) plus the report build, summed over the bundles; medians over rounds and the median of per-round
   paired ratios crash / normal. A cProfile of one crash case lists its ten most expensive functions
   (``--profile-crash``).
2. ``--parity-run N``: wall time of ``parity run`` and ``parity run --fault shape-crash`` (no other argument:
   the tiny preset on every fixture bundle, fp32-sdpa) in fresh child processes, interleaved, N pairs; with
   ``--cli-threads default,1`` each pair runs once per OMP_NUM_THREADS setting (``default``: unset, torch's
   one thread per core), to separate the crash from the machine's thread contention.

Finding (docs/benchmarks.md "The shape-crash case"): the crash case is not slower (it does less: the
candidate stops at ``source``); ``parity run`` wall times on a shared 2-core machine swing 6x with torch's
default two threads and stay flat with one, which is where "65 s against 23 s" came from.

The machine this runs on may be shared: read ratios of interleaved runs, not lone absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parity.project import default_bundles  # noqa: E402
from parity.present.report import build_report  # noqa: E402
from parity.capture.runner import RunMode  # noqa: E402
from parity.harness import Harness, ModelSpec  # noqa: E402

VARIANTS = {"normal": (), "shape-crash": ("shape-crash",)}
PHASES = ("reference", "candidate", "local", "compare", "report")


def one_run(faults: tuple, bundles: list[Path], out_dir: Path) -> dict:
    """One ``parity run``'s work in-process: fresh session, every bundle, the case reports."""
    s = Harness()
    model = s.model(ModelSpec("tiny"))
    cand = s.candidate(model, "fp32-sdpa", faults)
    tot = dict.fromkeys(PHASES, 0.0)
    verdicts = []
    for b in bundles:
        case = s.run(model, cand, b, RunMode())
        for k in ("reference", "candidate", "local", "compare"):
            tot[k] += case.seconds[k]
        t0 = time.perf_counter()
        build_report(case.result, out_dir / f"{case.name}.html", case=case)
        tot["report"] += time.perf_counter() - t0
        verdicts.append(case.verdict)
    tot["total"] = sum(tot[k] for k in PHASES)
    tot["verdicts"] = verdicts
    return tot


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parity-run", type=int, default=0, help="also time N pairs of `parity run` children")
    ap.add_argument("--profile-crash", action="store_true", help="cProfile one crash run (top 10 by cumulative time)")
    ap.add_argument("--cli-threads", default="default",
                    help="comma list of OMP_NUM_THREADS settings for --parity-run (default: unset)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundles = default_bundles()
    res: dict = {"threads": args.threads, "bundles": [b.name for b in bundles], "rounds": []}
    with tempfile.TemporaryDirectory() as td:
        one_run((), bundles[:1], Path(td))  # warm-up: imports, first-call allocations
        for r in range(args.rounds):
            row = {}
            for name, faults in (VARIANTS.items() if r % 2 == 0 else reversed(list(VARIANTS.items()))):
                row[name] = one_run(faults, bundles, Path(td))
            res["rounds"].append(row)
            print(f"round {r + 1}: " + "; ".join(f"{n} {v['total']:.2f} s" for n, v in row.items()), file=sys.stderr)
        if args.profile_crash:
            pr = cProfile.Profile()
            pr.enable()
            one_run(VARIANTS["shape-crash"], bundles, Path(td))
            pr.disable()
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(12)
            res["crash_profile_top"] = buf.getvalue().splitlines()[:40]
    summary = {}
    for name in VARIANTS:
        summary[name] = {k: statistics.median(rw[name][k] for rw in res["rounds"]) for k in PHASES + ("total",)}
    summary["ratio_crash_over_normal"] = {
        k: statistics.median(rw["shape-crash"][k] / rw["normal"][k] for rw in res["rounds"] if rw["normal"][k] > 0)
        for k in PHASES + ("total",)}
    res["median_s"] = summary

    if args.parity_run:
        exe = Path(sys.executable).parent / "parity"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "parity.cli"]
        settings = [s.strip() for s in args.cli_threads.split(",") if s.strip()]
        pairs: dict[str, list] = {s: [] for s in settings}
        with tempfile.TemporaryDirectory() as td:
            for i in range(args.parity_run):
                for setting in settings:
                    env = dict(os.environ)
                    env.pop("OMP_NUM_THREADS", None)
                    if setting != "default":
                        env["OMP_NUM_THREADS"] = setting
                    pair = {}
                    order = list(VARIANTS.items()) if i % 2 == 0 else list(reversed(list(VARIANTS.items())))
                    for name, faults in order:
                        extra = [a for f in faults for a in ("--fault", f)]
                        t0 = time.perf_counter()
                        p = subprocess.run(cmd + ["run", "--no-progress", "--report", f"{td}/{name}{i}{setting}.html"]
                                           + extra, cwd=ROOT, capture_output=True, text=True, env=env)
                        pair[name] = {"seconds": time.perf_counter() - t0, "exit": p.returncode,
                                      "load": os.getloadavg()[0]}
                    pairs[setting].append(pair)
                    print(f"parity run pair {i + 1} (threads {setting}): " + "; ".join(
                        f"{n} {v['seconds']:.1f} s (exit {v['exit']}, load {v['load']:.1f})" for n, v in pair.items()),
                        file=sys.stderr)
        res["parity_run"] = {s: {"pairs": ps, "median_ratio_crash_over_normal": statistics.median(
            p["shape-crash"]["seconds"] / p["normal"]["seconds"] for p in ps),
            "normal_s": [p["normal"]["seconds"] for p in ps], "crash_s": [p["shape-crash"]["seconds"] for p in ps]}
            for s, ps in pairs.items()}
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(json.dumps({"median_s": res["median_s"], **({"parity_run": {
        s: {k: v for k, v in r.items() if k != "pairs"} for s, r in res["parity_run"].items()}}
        if "parity_run" in res else {})}, indent=1))
    return res


if __name__ == "__main__":
    main()
