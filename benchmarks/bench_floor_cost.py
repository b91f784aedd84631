"""What a floor costs against one reference run of the same bundle, measured interleaved (the machine's speed
drifts within minutes): rounds of [plain, variant, plain, variant, plain, ...] in one process, one torch thread,
nothing cached; each variant's ratio to the mean of the two plain runs around it, medians over rounds (the order
of the variants alternates between rounds).

Variants (``--variants``):

* ``full-seq``: the full fp32 ensemble (28 runs: plain, 2 threads, SDPA math and default, 12 module-MCA and
  12 op-MCA seeds), one member at a time (``Recipe(batch=1)``);
* ``full-batched``: the same ensemble with the seeded members 12 to a forward (the default);
* ``transfer``: the floor transferred from a full floor of another bundle (``--calibrate-on``; computed once
  before the rounds, not timed): 3 op-MCA members on the batch axis, the plain run reused from the comparison
  (what ``parity run`` pays);
* ``transfer+plain``: the same with its own plain run (a comparison of two saved traces).

    python benchmarks/bench_floor_cost.py --bundle short --rounds 3 --json benchmarks/results/floor-cost-tiny.json
    OMP_NUM_THREADS=1 nice python benchmarks/bench_floor_cost.py --preset cosyvoice3-0.5b --bundle medium \\
        --calibrate-on short --variants transfer,transfer+plain --rounds 3 --cache-dir /tmp/floors \\
        --json benchmarks/results/floor-cost-full.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parity.floor import EstimateLog, FloorCache, Recipe, estimate_floor
from parity.floor.members import run_reference
from parity.floor.transfer import calibration, transferred_floor
from reference.bundle import bundle_dims, load_bundle
from reference.model import Token2Wav

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--bundle", default="short")
    ap.add_argument("--calibrate-on", default="medium", help="the bundle whose full floor calibrates the transfer")
    ap.add_argument("--variants", default="full-seq,full-batched,transfer,transfer+plain")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streaming", action="store_true")
    ap.add_argument("--cache-dir", help="where the calibrating full floor is cached (it is computed once if missing)")
    ap.add_argument("--default-stages", action="store_true",
                    help="floors of the default capture only (no DiT blocks or HiFT internals; less memory at full size)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    model = Token2Wav.from_preset(args.preset)
    dims = bundle_dims(model.cfg)
    inputs = load_bundle(ROOT / "fixtures" / "bundles" / f"{args.bundle}.safetensors", **dims)
    variants = args.variants.split(",")
    from parity.floor.estimate import recipe_patterns
    from parity.stages import DEFAULT_PATTERNS

    recipe = Recipe(patterns=tuple(DEFAULT_PATTERNS)) if args.default_stages else Recipe()
    pats = recipe_patterns(recipe)
    cal = None
    if any(v.startswith("transfer") for v in variants):
        src = load_bundle(ROOT / "fixtures" / "bundles" / f"{args.calibrate_on}.safetensors", **dims)
        el = EstimateLog()
        full = estimate_floor(model, src, streaming=args.streaming, bundle_name=args.calibrate_on, log=el,
                              cache=FloorCache(args.cache_dir) if args.cache_dir else None, recipe=recipe)
        log(f"calibrating floor ({args.calibrate_on}): {'cached' if el.from_cache else f'{el.seconds:.1f} s'}")
        cal = calibration(full)
    out = {"preset": args.preset, "bundle": args.bundle, "streaming": args.streaming, "torch": torch.__version__,
           "calibrate_on": args.calibrate_on if cal else None, "rounds": []}
    for r in range(args.rounds):
        row = {"plain_runs": []}
        order = ["plain"]
        for v in (variants if r % 2 == 0 else variants[::-1]):
            order += [v, "plain"]  # every variant between two plain runs: its ratio to their mean
        for v in order:
            t0 = time.perf_counter()
            if v == "plain":
                base, _ = run_reference(model, inputs, streaming=args.streaming, patterns=pats)
            elif v == "full-seq":
                estimate_floor(model, inputs, streaming=args.streaming,
                               recipe=Recipe(batch=1, patterns=recipe.patterns))
            elif v == "full-batched":
                estimate_floor(model, inputs, streaming=args.streaming,
                               recipe=Recipe(batch=12, patterns=recipe.patterns))
            elif v == "transfer":
                transferred_floor(model, inputs, [cal], streaming=args.streaming, base=base, recipe=recipe)
            elif v == "transfer+plain":
                transferred_floor(model, inputs, [cal], streaming=args.streaming, recipe=recipe)
            else:
                ap.error(f"unknown variant {v}")
            dt = time.perf_counter() - t0
            if v == "plain":
                row["plain_runs"].append(dt)
            else:
                row[v] = dt
                row[f"{v}_plain_around"] = None  # filled once the next plain run is timed
                pending = v
            if v == "plain" and len(row["plain_runs"]) > 1:
                a, b = row["plain_runs"][-2:]
                row[f"{pending}_plain_around"] = (a + b) / 2
            log(f"round {r + 1}: {v} {dt:.2f} s")
        row["plain"] = statistics.median(row["plain_runs"])
        out["rounds"].append(row)
    med = {v: statistics.median(rw[v] for rw in out["rounds"]) for v in ["plain"] + variants}
    ratio = {v: statistics.median(rw[v] / rw[f"{v}_plain_around"] for rw in out["rounds"]) for v in variants}
    out["median_seconds"] = {k: round(x, 3) for k, x in med.items()}
    out["median_ratio_to_plain"] = {k: round(x, 2) for k, x in ratio.items()}
    log(json.dumps({"median_seconds": out["median_seconds"], "ratio": out["median_ratio_to_plain"]}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
