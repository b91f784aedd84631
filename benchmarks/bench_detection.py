"""Detection power of the noise-floor gate: the mutation suite (``benchmarks/mutations.py``: slips a port
makes, none in the fault catalogue) and the legitimate changes, judged against the fp32 noise floor of the
same model, bundle and mode, and, for contrast, by the flat tolerances (``fixtures/tolerances.toml``
through the existing ``parity run`` machinery: ``parity.session.run_case``, step-local errors included).

    python benchmarks/bench_detection.py                                   # tiny, short bundle, both modes
    python benchmarks/bench_detection.py --modes offline --only gelu-exact,cfg-sign
    python benchmarks/bench_detection.py --preset cosyvoice3-0.5b --json out.json   # full size (slow)

Per case:

* ``first_changed``: the first stage (pipeline order) where the candidate differs from the reference at
  all, bit for bit: where the change really acts (the declared stage is the intent);
* ``effect``: the candidate's error at that stage in floor units (the judge's ratio there);
* floor gate: ``caught`` (some stage over k x floor), ``first_over`` and ``localized`` (first_over ==
  first_changed); for legitimate changes a catch is a false alarm;
* flat tolerances: the verdict and the headline stage of ``parity run``'s comparison.

The target (issue 14): every mutation whose effect is at least 10x its floor is caught and localised, and
no legitimate change is flagged. Controls (each rewrite the mutations patch in, with default knobs) must
be bit-identical to the candidate, or the run stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mutations import ALL, CONTROLS, LEGIT, MUTATIONS
from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.floor import EstimateLog, FloorCache, Recipe, estimate_floor, judge, run_reference
from parity.policy import load_policy
from parity.session import ReferenceCache, run_case
from parity.stages import sort_stages
from reference.bundle import load_bundle
from reference.model import Token2Wav

ROOT = Path(__file__).resolve().parent.parent
TARGET = 10.0


@contextlib.contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def first_changed(ref: dict, cand: dict) -> str | None:
    for n in sort_stages(set(ref) | set(cand)):
        if n not in ref or n not in cand:
            return n
        a, b = ref[n], cand[n]
        if a.shape != b.shape or not torch.equal(a, b):
            return n
    return None


def run_mode(model, bundle: Path, streaming: bool, cases, cache: FloorCache | None, log, recipe=None) -> dict:
    inputs = load_bundle(bundle)
    mode = "streaming" if streaming else "offline"
    elog = EstimateLog()
    floor = estimate_floor(model, inputs, streaming=streaming, cache=cache, bundle_name=bundle.stem, log=elog,
                           recipe=recipe)
    log(f"[{mode}] floor {floor.digest[:12]}: k = {floor.k:g} ({elog.seconds:.1f} s{', cached' if elog.from_cache else ''})")
    base, _ = run_reference(model, inputs, streaming=streaming)
    policy = load_policy()
    refs = ReferenceCache()
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        cand = CandidateToken2Wav(model, switches_from("fp32-explicit", **case.switches), case.name)
        case.patch(cand, inputs)
        with threads(case.threads):
            res = run_case(model, cand, bundle, streaming=streaming, policy=policy, refs=refs, local=True,
                           profile_name=case.name)
        ref, ct = res.ref_tensors, res.cand_tensors
        if not torch.equal(ref["audio"], base["audio"]):
            raise RuntimeError("parity run's reference differs from the floor's baseline")
        fc = first_changed(ref, ct)
        if case.kind == "control" and fc is not None:
            raise RuntimeError(f"{case.name}: the rewrite is not bit-identical to the candidate (first at {fc})")
        v = judge(floor, ref, ct)
        fo = v.first_over
        eff = None
        if fc is not None and fc in floor.stages and fc in ct:
            sv = v[fc]
            eff = sv.ratio if sv.status not in ("nonfinite", "shape") else float("inf")
        fd = res.result.first_divergence
        flat_fd = {"stage": fd.stage, "code": fd.code} if fd is not None else {}
        crashed = res.cand_meta.get("status") == "crashed"
        row = {
            "name": case.name, "kind": case.kind, "group": case.group, "declared": case.stage,
            "description": case.description, "first_changed": fc, "crashed": crashed,
            "effect": eff,
            "floor": {"caught": not v.passed, "first_over": fo.stage if fo else None,
                      "first_over_ratio": fo.ratio if fo else None, "statistic": fo.statistic if fo else None,
                      "localized": bool(fo is not None and fo.stage == fc), "max_ratio": v.max_ratio},
            "flat": {"verdict": res.result.verdict, "first": flat_fd.get("stage"), "code": flat_fd.get("code"),
                     "localized": flat_fd.get("stage") == fc if res.result.verdict != "pass" else False},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        rows.append(row)
        log(f"  {case.name:26} {case.kind:8} changed@{str(fc):15} effect "
            f"{'-' if eff is None else f'{eff:9.3g}'}  floor:{'CAUGHT' if row['floor']['caught'] else 'pass':6} "
            f"@{str(row['floor']['first_over']):15} flat:{row['flat']['verdict']:5} @{row['flat']['first']}")
    return {"mode": mode, "bundle": bundle.name, "floor": {"digest": floor.digest, "k": floor.k,
                                                            "seconds": round(elog.seconds, 2),
                                                            "from_cache": elog.from_cache,
                                                            "k_basis": {k: v for k, v in floor.k_basis.items()
                                                                        if k != "samples"}},
            "cases": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict:
    mut = [r for r in rows if r["kind"] == "mutation"]
    legit = [r for r in rows if r["kind"] == "legit"]
    visible = [r for r in mut if r["first_changed"] is not None]
    strong = [r for r in visible if r["effect"] is not None and r["effect"] >= TARGET]
    return {
        "mutations": len(mut), "with_effect": len(visible),
        "floor_caught": sum(r["floor"]["caught"] for r in visible),
        "floor_localized": sum(r["floor"]["localized"] for r in visible),
        "flat_caught": sum(r["flat"]["verdict"] != "pass" for r in visible),
        "flat_localized": sum(r["flat"]["localized"] for r in visible),
        "effect_ge_10": len(strong),
        "effect_ge_10_caught_and_localized": sum(r["floor"]["caught"] and r["floor"]["localized"] for r in strong),
        "target_misses": [r["name"] for r in strong if not (r["floor"]["caught"] and r["floor"]["localized"])],
        "legit": len(legit), "floor_false_alarms": [r["name"] for r in legit if r["floor"]["caught"]],
        "flat_false_alarms": [r["name"] for r in legit if r["flat"]["verdict"] != "pass"],
    }


def table(result: dict) -> str:
    lines = [f"### {result['mode']}, bundle {result['bundle']}, k = {result['floor']['k']:g}", "",
             "| case | kind | group | first changed | effect (x floor) | floor gate | first over | localized | "
             "flat tolerances | flat first |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["cases"]:
        eff = "-" if r["effect"] is None else ("inf" if r["effect"] == float("inf") else f"{r['effect']:.3g}")
        f = r["floor"]
        lines.append(f"| {r['name']} | {r['kind']} | {r['group']} | {r['first_changed'] or 'none (bit-identical)'} | "
                     f"{eff} | {'**caught**' if f['caught'] else 'pass'} | {f['first_over'] or '-'} | "
                     f"{'yes' if f['localized'] else ('-' if not f['caught'] else 'no')} | "
                     f"{r['flat']['verdict']} | {r['flat']['first'] or '-'} |")
    s = result["summary"]
    lines += ["", f"Mutations with an effect: {s['with_effect']}/{s['mutations']}; floor gate caught "
                  f"{s['floor_caught']}, localised {s['floor_localized']}; flat tolerances caught {s['flat_caught']}, "
                  f"localised {s['flat_localized']}. Effect >= 10x floor: {s['effect_ge_10']}, caught and localised "
                  f"{s['effect_ge_10_caught_and_localized']} (misses: {', '.join(s['target_misses']) or 'none'}). "
                  f"Legitimate changes: {s['legit']}, floor false alarms: "
                  f"{', '.join(s['floor_false_alarms']) or 'none'}; flat false alarms: "
                  f"{', '.join(s['flat_false_alarms']) or 'none'}."]
    return "\n".join(lines)


def _clean(obj):
    """JSON-safe: an infinite ratio (NaN in the candidate) is written as the string "inf"."""
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return "inf" if obj == obj else "nan"
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-dir")
    ap.add_argument("--bundle", default="short", help="fixture bundle name or a bundle path")
    ap.add_argument("--modes", default="offline,streaming")
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--no-controls", action="store_true")
    ap.add_argument("--cache-dir", help="floor cache directory (default: none, always recompute)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a small floor recipe (3 + 2 seeds, no 2-thread member); numbers not for reporting")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the tables here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the floor's baseline and parity run's reference: one thread
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    model = Token2Wav.load(None if args.model_dir else args.preset, args.model_dir)
    bundle = Path(args.bundle)
    if not bundle.exists():
        bundle = ROOT / "fixtures" / "bundles" / f"{args.bundle}.safetensors"
    names = args.only.split(",") if args.only else None
    if names:
        unknown = [n for n in names if n not in ALL]
        if unknown:
            ap.error(f"unknown case(s): {', '.join(unknown)}")
        cases = [ALL[n] for n in names]
    else:
        cases = MUTATIONS + LEGIT
    if not args.no_controls:
        cases = list(CONTROLS) + [c for c in cases if c.kind != "control"]
    cache = FloorCache(args.cache_dir) if args.cache_dir else None
    recipe = Recipe(n_seeds=3, n_held_out=2, families=("attention", "mca-modules", "mca-ops")) if args.quick else None
    out = {"preset": args.preset, "model_dir": args.model_dir, "torch": torch.__version__, "quick": args.quick,
           "target_effect": TARGET, "modes": []}
    t0 = time.perf_counter()
    for mode in args.modes.split(","):
        out["modes"].append(run_mode(model, bundle, mode == "streaming", cases, cache, log, recipe))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = "\n\n".join(table(m) for m in out["modes"])
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_clean(out), indent=1, allow_nan=False))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
