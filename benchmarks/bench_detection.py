"""Detection power of parity's verdict at the noise floor: the mutation suite (``benchmarks/mutations.py``:
slips a port makes, none in the fault catalogue) and the legitimate changes, each run through the REAL
verdict: ``parity.harness.run_case`` (reference, candidate, step-local errors, compare -> diagnose) with the
session's floor store (the shipped floor of a fixture bundle on the tiny model; computed and cached for
the full-size one), exactly what ``parity run`` decides. For contrast the same traces are compared again
with the flat tolerances alone (``fixtures/tolerances.toml``, no floor: ``parity run --no-floor``).

    python benchmarks/bench_detection.py                                   # tiny, short bundle, both modes
    python benchmarks/bench_detection.py --modes offline --only gelu-exact,cfg-sign
    python benchmarks/bench_detection.py --preset cosyvoice3-0.5b --json out.json   # full size (slow)
    python benchmarks/bench_detection.py --modes session                   # streaming sessions (session bundle)
    python benchmarks/bench_detection.py --modes fp16-dump                 # foreign fp16 dumps (the FP16 suite)

``session``: every case runs upstream's streaming loop (``fixtures/sessions/stream.safetensors``, upstream's
options) and is judged as a session, with the session's floor (shipped beside the session golden) and, for
contrast, the flat rules. ``fp16-dump``: the fp16 suite (``mutations.FP16``: ports missing one of the upstream fp16
fixes, accumulating in fp16, folding weight norm in fp16; and legitimate fp16 variants), each dumped without its
switches or dtypes metadata and compared as ``parity compare ref port --precision fp16`` does: the envelope of the
layout its stored dtypes show, against the flat fp16 rules. There ``first_changed`` is the first stage the envelope
judges where the port differs from the same layout without its slip (a port whose solver runs in fp16 stores the
noise and the time grid rounded; the flat rules judge those).

Per case:

* ``first_changed``: the first stage (pipeline order) where the candidate differs from the reference at
  all, bit for bit: where the change really acts (the declared stage is the intent);
* ``effect``: the candidate's error at that stage in floor units: the ratio the verdict itself recorded
  there (``StageResult.ratio``);
* floor verdict: ``caught`` (verdict fail), ``first`` (the headline's stage) and ``localized`` (the
  headline's stage is ``first_changed``); for legitimate changes a catch is a false alarm;
* flat tolerances: the verdict and the headline stage of the same comparison without a floor.

The target: every mutation whose effect is at least 10x its floor is caught and localised, and
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

from benchmarks.mutations import ALL, CONTROLS, FP16, LEGIT, MUTATIONS
from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.capture.runner import RunMode
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.floor import FloorCache, Recipe
from parity.floor.store import SHIPPED_DIR, FloorStore
from parity.ingest import Loaded
from parity.judge.policy import load_policy
from parity.harness import ReferenceCache, run_case
from parity.stages import sort_stages
from reference.bundle import bundle_dims, load_bundle
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


def run_mode(model, bundle: Path, streaming: bool, cases, floors: FloorStore, log, session: bool = False,
             patterns=None) -> dict:
    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    mode = "session" if session else ("streaming" if streaming else "offline")
    run_mode_ = RunMode.streaming_session() if session else RunMode(streaming=streaming)
    t0 = time.perf_counter()
    choice = floors.for_run(model, inputs, streaming=streaming, bundle_name=bundle.stem,
                            session="streaming" if session else "single")
    if choice.floor is None:
        raise RuntimeError(f"no floor for {bundle.name} ({mode}): {choice.reason}")
    floor = choice.floor
    log(f"[{mode}] floor {floor.digest[:12]}: k = {floor.k:g} ({choice.source}, {time.perf_counter() - t0:.1f} s)")
    policy = load_policy()
    refs = ReferenceCache()
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        cand = CandidateToken2Wav(model, switches_from(case.profile, list(case.faults), **case.switches), case.name)
        case.patch(cand, inputs)
        with threads(case.threads):
            res = run_case(model, cand, bundle, run_mode_, ComparisonSpec(policy=policy, floors=floors), refs=refs,
                           local=not session, profile_name=case.name, patterns=patterns)
        ref, ct = res.ref_tensors, res.cand_tensors
        fc = first_changed(ref, ct)
        if case.kind == "control" and fc is not None:
            raise RuntimeError(f"{case.name}: the rewrite is not bit-identical to the candidate (first at {fc})")
        r = res.result
        if r.floor.get("digest") != floor.digest:
            raise RuntimeError(f"{case.name}: judged against another floor ({r.floor.get('digest')})")
        # the same traces through the flat tolerances alone (no floor): what parity run --no-floor decides
        flat = compare_loaded(Loaded(ref, res.ref_meta, "ref"), Loaded(ct, res.cand_meta, "cand"),
                              ComparisonSpec(policy=policy), Loaded(res.local_tensors, {"pipeline": "candidate-local"},
                                                                    "local") if res.local_tensors else None)
        rows.append(_row(case, fc, r, flat, res.cand_meta.get("status") == "crashed", t0))
        log(_line(rows[-1]))
    used = sorted({r["floor"]["k"] for r in rows if r["floor"]["k"] is not None})  # the k the verdicts applied
    return {"mode": mode, "bundle": bundle.name, "floor": {"digest": floor.digest, "k": used[-1] if used else floor.k,
                                                            "k_all_stages": floor.k, "source": choice.source,
                                                            "seconds": round(choice.seconds, 2),
                                                            "k_basis": {k: v for k, v in floor.k_basis.items()
                                                                        if k != "samples"}},
            "cases": rows, "summary": summarize(rows)}


def _row(case, fc, r, flat, crashed, t0) -> dict:
    fd = r.first_divergence
    st = r.stage(fc) if fc else None
    eff = None
    if st is not None and st.gate == "floor":
        eff = st.ratio if st.ratio is not None else (float("inf") if st.status == "fail" else None)
    ffd = flat.first_divergence
    return {
        "name": case.name, "kind": case.kind, "group": case.group, "declared": case.stage,
        "description": case.description, "first_changed": fc, "crashed": crashed,
        "effect": eff,
        "floor": {"caught": r.verdict != "pass", "first": fd.stage if fd else None,
                  "code": fd.code if fd else None, "gate": r.stage(fd.stage).gate
                  if fd and fd.stage and r.stage(fd.stage) else None,
                  "localized": bool(fd is not None and fd.stage == fc),
                  "max_ratio": max((x.ratio for x in r.stages if x.ratio is not None), default=0.0),
                  "k": r.floor.get("k"), "layout": (r.floor.get("layout") or {}).get("name"),
                  "message": fd.message if fd else None},
        "flat": {"verdict": flat.verdict, "first": ffd.stage if ffd else None, "code": ffd.code if ffd else None,
                 "localized": bool(ffd is not None and ffd.stage == fc)},
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _line(row) -> str:
    eff = row["effect"]
    return (f"  {row['name']:26} {row['kind']:8} changed@{str(row['first_changed']):15} effect "
            f"{'-' if eff is None else f'{eff:9.3g}'}  floor:{'CAUGHT' if row['floor']['caught'] else 'pass':6} "
            f"@{str(row['floor']['first']):15} flat:{row['flat']['verdict']:5} @{row['flat']['first']}"
            + (f" (layout {row['floor']['layout']})" if row["floor"].get("layout") else ""))


def _first_changed_fp16(twin: dict, cand: dict, result) -> str | None:
    """The first stage where the port differs from its layout twin, among the stages the envelope judges (a port
    whose solver runs in fp16 stores the noise and the time grid rounded: the flat rules judge those)."""
    for n in sort_stages(set(twin) | set(cand)):
        st = result.stage(n)
        if st is None or st.gate != "floor":
            continue
        if n not in twin or n not in cand:
            return n
        a, b = twin[n], cand[n]  # values, not storage: an fp32-stored stage equal to the fp16 one is unchanged
        if a.shape != b.shape or not torch.equal(a.double(), b.double()):
            return n
    return None


def run_fp16_dumps(model, bundle: Path, cases, floors: FloorStore, log) -> dict:
    """The fp16 suite as foreign dumps judged by the envelope of the layout their stored dtypes show."""
    from parity.capture.recorder import Recorder
    from reference.probe import Probe

    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    rec = Recorder()
    model.run(inputs, Probe(rec))
    ref = Loaded(rec.tensors, dict(model.provenance(streaming=False), inputs=bundle.name), "ref")
    spec = ComparisonSpec(policy=load_policy(), precision="fp16")
    twins: dict = {}
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        sw = switches_from(case.profile, list(case.faults), **case.switches)
        cand = CandidateToken2Wav(model, sw, case.name)
        case.patch(cand, inputs)
        crec = Recorder()
        with threads(case.threads):
            cand.run(inputs, Probe(crec))
        meta = {k: v for k, v in cand.provenance(streaming=False).items()
                if k not in ("switches", "profile", "precision", "dtypes")}
        dump = Loaded(crec.tensors, meta, f"<{case.name} dump>")
        if case.profile not in twins:
            trec = Recorder()
            CandidateToken2Wav(model, switches_from(case.profile), case.profile).run(inputs, Probe(trec))
            twins[case.profile] = trec.tensors
        choice = floors.for_trace(ref.metadata, ref.tensors, cand_meta=meta, precision="fp16",
                                  cand_tensors=dump.tensors)
        r = compare_loaded(ref, dump, spec, floor=choice)
        fc = _first_changed_fp16(twins[case.profile], dump.tensors, r) if case.kind == "mutation" else None
        flat = compare_loaded(ref, dump, spec, floor=None)
        rows.append(_row(case, fc, r, flat, False, t0))
        log(_line(rows[-1]))
    return {"mode": "fp16-dump", "bundle": bundle.name, "floor": {"digest": None, "k": None, "source": "per layout"},
            "cases": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict:
    mut = [r for r in rows if r["kind"] == "mutation"]
    legit = [r for r in rows if r["kind"] == "legit"]
    visible = [r for r in mut if r["first_changed"] is not None]
    strong = [r for r in visible if r["effect"] is not None and r["effect"] >= TARGET]
    return {
        "mutations": len(mut), "with_effect": len(visible),
        "floor_caught": sum(r["floor"]["caught"] for r in visible),
        "floor_caught_not_visible": [r["name"] for r in mut if r["first_changed"] is None and r["floor"]["caught"]],
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
    k = result["floor"]["k"]
    lines = [f"### {result['mode']}, bundle {result['bundle']}, k = {'per layout' if k is None else f'{k:g}'} "
             f"(floor: {result['floor']['source']})", "",
             "| case | kind | group | first changed | effect (x floor) | verdict (floor) | headline | localized | "
             "flat tolerances | flat headline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["cases"]:
        eff = "-" if r["effect"] is None else ("inf" if r["effect"] == float("inf") else f"{r['effect']:.3g}")
        f = r["floor"]
        lines.append(f"| {r['name']} | {r['kind']} | {r['group']} | "
                     f"{r['first_changed'] or ('none (bit-identical)' if r['kind'] != 'legit' else '-')} | "
                     f"{eff} | {'**caught**' if f['caught'] else 'pass'}{' (' + f['layout'] + ')' if f.get('layout') else ''} | "
                     f"{f['first'] or '-'} | "
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
    ap.add_argument("--modes", default="offline,streaming", help="offline, streaming, session, fp16-dump")
    ap.add_argument("--session-bundle", default=str(ROOT / "fixtures" / "sessions" / "stream.safetensors"))
    ap.add_argument("--stages", help="capture patterns of the single-call modes (e.g. '+step*.block*,+hift.*': the "
                                     "DiT blocks and the HiFT internals, judged by the floor there)")
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
    recipe = Recipe(n_seeds=3, n_held_out=2, families=("attention", "mca-modules", "mca-ops")) if args.quick else None
    # the session's floor store: the shipped floors (fixture bundles, default recipe), the cache, else computed
    floors = FloorStore(cache=FloorCache(args.cache_dir) if args.cache_dir else None,
                        shipped=None if args.quick else SHIPPED_DIR, recipe=recipe, log=log)
    out = {"preset": args.preset, "model_dir": args.model_dir, "torch": torch.__version__, "quick": args.quick,
           "target_effect": TARGET, "modes": []}
    t0 = time.perf_counter()
    for mode in args.modes.split(","):
        if mode == "fp16-dump":
            fp16 = [c for c in cases if c.name in {x.name for x in FP16}] if names else FP16
            out["modes"].append(run_fp16_dumps(model, bundle, fp16, floors, log))
            continue
        mine = [c for c in cases if c.name not in {x.name for x in FP16}]
        if mode == "session":
            sb = Path(args.session_bundle)
            out["modes"].append(run_mode(model, sb, True, mine, floors, log, session=True))
        else:
            out["modes"].append(run_mode(model, bundle, mode == "streaming", mine, floors, log,
                                         patterns=args.stages))
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
