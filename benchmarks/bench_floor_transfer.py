"""Does a model's floor transfer across bundles? Two notions of a relative floor, measured on every ordered pair
(source bundle S, target bundle T) of one model and mode against T's own full ensemble floor:

* scale-relative: T's floor predicted as S's floor / S's reference scale x T's reference scale (``max_abs``;
  ``rel_l2`` as it is);
* ensemble-relative (what :func:`parity.floor.transfer.transferred_floor` uses): S's full floor / the largest of
  its first few op-level MCA members, times what those few members reach on T (run here, on the batch axis).

Per pair and statistic the ratio full / predicted (> 1: the prediction is below the real floor, a false-alarm
risk) over every stage (the envelope: its worst block); then T's held-out op-MCA seeds (never in any floor)
judged against the transferred floor with its factor and k: the largest ratio, which must stay below k.

    python benchmarks/bench_floor_transfer.py --json benchmarks/results/floor-transfer-tiny.json
    python benchmarks/bench_floor_transfer.py --preset cosyvoice3-0.5b --bundles short,medium --modes offline \\
        --cache-dir /tmp/floors --json benchmarks/results/floor-transfer-full.json       # full floors: slow

The source and target full floors are the shipped ones (``fixtures/golden``, tiny) or computed (and cached with
``--cache-dir``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parity.floor import EstimateLog, FloorCache, judge
from parity.floor.members import Member, run_members, run_reference
from parity.floor.store import SHIPPED_DIR, FloorStore
from parity.floor.transfer import CHEAP_SEEDS, calibration, transferred_floor
from reference.bundle import bundle_dims, load_bundle
from reference.model import Token2Wav

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = (8, 9, 10, 11)  # the default recipe's held-out op-MCA seeds


def full_floor(model, inputs, bundle, streaming, store, log):
    ch = store.for_run(model, inputs, streaming=streaming, bundle_name=bundle)
    if ch.floor is None:
        raise RuntimeError(f"no full floor for {bundle}: {ch.reason}")
    log(f"  full floor {bundle}: {ch.source} ({ch.seconds:.1f} s), k {ch.floor.k:g}")
    return ch.floor


def ratios(full, pred) -> dict:
    """Per statistic: (largest full / predicted, its stage), (smallest, its stage), and the median."""
    out = {}
    for st in ("max_abs", "rel_l2", "envelope"):
        rs = []
        for n, sf in full.stages.items():
            if n not in pred.stages:
                continue
            pf = pred.stages[n]
            if st == "envelope":
                pairs = [(a / b) if b > 0 else (math.inf if a > 0 else 1.0) for a, b in zip(sf.envelope, pf.envelope)]
                if len(sf.envelope) != len(pf.envelope) or not pairs:
                    continue
                r = max(pairs)
            else:
                a, b = sf.value(st), pf.value(st)
                if a == 0 and b == 0:
                    continue
                r = a / b if b > 0 else math.inf
            rs.append((r, n))
        rs.sort()
        out[st] = {"max": rs[-1], "min": rs[0], "median": rs[len(rs) // 2][0]} if rs else None
    return out


def scale_relative(full_s, full_t) -> dict:
    rs = []
    for n, sf in full_t.stages.items():
        ss = full_s.stages.get(n)
        if ss is None or ss.scale == 0:
            continue
        for st in ("max_abs", "rel_l2"):
            pred = ss.value(st) / ss.scale * sf.scale if st == "max_abs" else ss.value(st)
            a = sf.value(st)
            if a == 0 and pred == 0:
                continue
            rs.append((a / pred if pred > 0 else math.inf, n, st))
    rs.sort()
    return {"max": rs[-1], "min": rs[0], "median": rs[len(rs) // 2][0]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--bundles", default="short,medium,long")
    ap.add_argument("--modes", default="offline,streaming")
    ap.add_argument("--cache-dir", help="floor cache for the full floors (default: none)")
    ap.add_argument("--no-shipped", action="store_true", help="compute the full floors instead of reading the shipped ones")
    ap.add_argument("--factor", type=float, default=None, help="the factor judged with (default TRANSFER_FACTOR)")
    ap.add_argument("--default-stages", action="store_true",
                    help="floors of the default capture only (no DiT blocks, no HiFT internals: less memory at full size)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    from parity.floor.transfer import TRANSFER_FACTOR

    factor = args.factor or TRANSFER_FACTOR
    model = Token2Wav.from_preset(args.preset)
    from parity.floor import Recipe
    from parity.floor.estimate import recipe_patterns
    from parity.stages import DEFAULT_PATTERNS

    recipe = Recipe(patterns=tuple(DEFAULT_PATTERNS)) if args.default_stages else Recipe()
    store = FloorStore(cache=FloorCache(args.cache_dir) if args.cache_dir else None,
                       shipped=None if args.no_shipped else SHIPPED_DIR, log=log, recipe=recipe, method="full")
    bundles = args.bundles.split(",")
    out = {"preset": args.preset, "torch": torch.__version__, "cheap_seeds": list(CHEAP_SEEDS), "factor": factor,
           "pairs": []}
    for mode in args.modes.split(","):
        streaming = mode == "streaming"
        inputs = {b: load_bundle(ROOT / "fixtures" / "bundles" / f"{b}.safetensors", **bundle_dims(model.cfg))
                  for b in bundles}
        fulls = {b: full_floor(model, inputs[b], b, streaming, store, log) for b in bundles}
        for t in bundles:
            base, t_plain = run_reference(model, inputs[t], streaming=streaming, patterns=recipe_patterns(recipe))
            held = [Member(f"mca-ops#{s}", "mca-ops", role="held-out", seed=s) for s in HELD_OUT]
            held_t, _ = run_members(model, inputs[t], held, base, streaming=streaming)
            for s in bundles:
                if s == t:
                    continue
                cal = calibration(fulls[s])
                el = EstimateLog()
                raw = transferred_floor(model, inputs[t], [cal], streaming=streaming, base=base, factor=1.0, log=el,
                                        recipe=recipe)
                tf = transferred_floor(model, inputs[t], [cal], streaming=streaming, base=base, factor=factor,
                                       recipe=recipe)
                worst = max((judge(tf, base, h).max_ratio, m.name) for m, h in zip(held, held_t))
                worst_full = max((judge(fulls[t], base, h).max_ratio, m.name) for m, h in zip(held, held_t))
                row = {"mode": mode, "source": s, "target": t, "ensemble_relative": ratios(fulls[t], raw),
                       "scale_relative": scale_relative(fulls[s], fulls[t]), "k": tf.k,
                       "held_out_vs_transferred": worst, "held_out_vs_full": worst_full,
                       "seconds": {"transfer": round(el.seconds, 2), "plain": round(t_plain, 2)}}
                out["pairs"].append(row)
                er = row["ensemble_relative"]
                log(f"[{mode}] {s:>6} -> {t:<6}: full/predicted max_abs {er['max_abs']['max'][0]:.2f} "
                    f"({er['max_abs']['max'][1]}) rel_l2 {er['rel_l2']['max'][0]:.2f} ({er['rel_l2']['max'][1]}) "
                    f"envelope {er['envelope']['max'][0]:.2f} ({er['envelope']['max'][1]}); min "
                    f"{min(er[x]['min'][0] for x in er):.2f}; scale-relative {row['scale_relative']['min'][0]:.2f}-"
                    f"{row['scale_relative']['max'][0]:.3g} ({row['scale_relative']['max'][1]}); held-out "
                    f"{worst[0]:.2f} vs k {tf.k:g} (full floor: {worst_full[0]:.2f}); transfer {el.seconds:.1f} s, "
                    f"plain {t_plain:.2f} s")
    er_all = [p["ensemble_relative"] for p in out["pairs"]]
    out["summary"] = {
        "ensemble_relative_worst": max((e[st]["max"][0], st, e[st]["max"][1]) for e in er_all for st in e if e[st]),
        "ensemble_relative_lowest": min((e[st]["min"][0], st, e[st]["min"][1]) for e in er_all for st in e if e[st]),
        "scale_relative_range": [min(p["scale_relative"]["min"][0] for p in out["pairs"]),
                                 max(p["scale_relative"]["max"][0] for p in out["pairs"])],
        "held_out_worst": max(p["held_out_vs_transferred"][0] / p["k"] for p in out["pairs"]),
    }
    log(json.dumps(out["summary"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, allow_nan=True))
    return out


if __name__ == "__main__":
    main()
