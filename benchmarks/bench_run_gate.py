"""What the floor gate costs ``parity run``: the CLI with no arguments (tiny preset, the three fixture bundles,
fp32-sdpa, offline: the shipped floors judge) against ``parity run --no-floor`` (the flat tolerances alone),
interleaved round by round so that a shared machine's drift hits both alike; medians and their ratio.

Then, in one process, where the difference goes per case: the floor lookup (the shipped file: index, gunzip,
parse) and the comparison (error / floor per statistic and block on top of the metrics), floor store vs none.

    python benchmarks/bench_run_gate.py                    # 5 rounds of each, then the per-case split
    python benchmarks/bench_run_gate.py --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cli_round(extra: list[str], tmp: Path, i: int) -> float:
    """One ``parity run`` as a user runs it (a fresh process: imports and the model build included)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "parity.cli", "run", "--no-progress", "--report", str(tmp / f"r{i}.html"), *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt


def split(rounds: int) -> dict:
    """Per case, in one process: the floor lookup and the comparison with the floor store, and the comparison
    without it (the same reference and candidate traces judged both ways)."""
    import torch

    from parity.judge.compare import compare_loaded
    from parity.judge.spec import ComparisonSpec
    from parity.floor.store import FloorStore
    from parity.ingest import Loaded
    from parity.judge.policy import load_policy
    from parity.project import default_bundles
    from parity.capture.runner import RunMode
    from parity.harness import Harness, ModelSpec
    from reference.bundle import bundle_dims, load_bundle

    torch.set_num_threads(1)
    s = Harness(spec=ComparisonSpec(floors=None))
    model = s.model(ModelSpec(preset="tiny"))
    cand = s.candidate(model, "fp32-sdpa")
    pol = load_policy()
    out = {}
    for b in default_bundles():
        case = s.run(model, cand, b, RunMode(False), local=True)
        inputs = load_bundle(b, **bundle_dims(model.cfg))
        ref = Loaded(case.ref_tensors, case.ref_meta, "ref")
        cd = Loaded(case.cand_tensors, case.cand_meta, "cand")
        loc = Loaded(case.local_tensors, {"pipeline": "candidate-local"}, "local") if case.local_tensors else None
        look, with_f, without = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ch = FloorStore(cache=None, compute=False).for_run(model, inputs, switches=cand.sw)  # a fresh store: no memory
            t1 = time.perf_counter()
            r1 = compare_loaded(ref, cd, ComparisonSpec(policy=pol), loc, floor=ch)
            t2 = time.perf_counter()
            compare_loaded(ref, cd, ComparisonSpec(policy=pol), loc, floor=None)
            t3 = time.perf_counter()
            look.append(t1 - t0)
            with_f.append(t2 - t1)
            without.append(t3 - t2)
            assert ch.source == "shipped" and r1.gates.get("floor"), (ch.source, ch.reason)
        out[Path(b).stem] = {"floor_lookup_s": statistics.median(look), "compare_with_floor_s": statistics.median(with_f),
                             "compare_flat_s": statistics.median(without),
                             "reference_s": case.seconds["reference"], "candidate_s": case.seconds["candidate"],
                             "local_s": case.seconds["local"]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-split", action="store_true", help="only the CLI rounds")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    walls: dict[str, list[float]] = {"floor": [], "no-floor": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(args.rounds):
            order = [("floor", []), ("no-floor", ["--no-floor"])]
            if i % 2:
                order.reverse()  # alternate which goes first
            for name, extra in order:
                walls[name].append(cli_round(extra, tmp, len(walls["floor"]) + len(walls["no-floor"])))
                print(f"round {i + 1}: {name:9} {walls[name][-1]:6.1f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratios = sorted(a / b for a, b in zip(walls["floor"], walls["no-floor"]))
    out = {"rounds": args.rounds, "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2),
           "wall_s": walls, "median_s": med, "median_ratio_floor_over_no_floor": statistics.median(ratios),
           "ratios": ratios}
    print(f"parity run (no arguments): median {med['floor']:.1f} s with floors, {med['no-floor']:.1f} s with "
          f"--no-floor; median per-round ratio {out['median_ratio_floor_over_no_floor']:.3f} "
          f"(load {out['load_start']} -> {out['load_end']})")
    if not args.no_split:
        out["per_case"] = split(args.rounds)
        for b, v in out["per_case"].items():
            print(f"  {b:7} floor lookup {v['floor_lookup_s'] * 1e3:6.1f} ms; compare {v['compare_with_floor_s'] * 1e3:6.1f}"
                  f" ms with the floor vs {v['compare_flat_s'] * 1e3:6.1f} ms flat; (reference {v['reference_s']:.2f} s, "
                  f"candidate {v['candidate_s']:.2f} s, step-local {v['local_s']:.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
