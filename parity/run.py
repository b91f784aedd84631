"""``parity run``: reference and candidate on the same inputs and noise -> traces -> step-local errors ->
comparison -> terminal summary, JSON and HTML report. Also the in-process API the pytest plugin, the
benchmarks and the bisector use (:func:`run_case`)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reference.bundle import load_bundle
from reference.errors import InputError
from reference.probe import Probe

from .capture import Recorder
from .compare import CompareOptions, compare_loaded
from .ingest import Loaded
from .policy import Policy, load_policy
from .result import Comparison, Finding, aggregate_verdict, exit_code_for, write_json, write_matrix_json
from .runner import Progress, run_to_trace
from .trace import now_iso, write_trace

BUNDLE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "bundles"


def default_bundles() -> list[Path]:
    return sorted(BUNDLE_DIR.glob("*.safetensors"))


@dataclass
class Case:
    """One comparison: a bundle x a candidate configuration x a mode."""

    bundle: str
    profile: str
    streaming: bool
    result: Comparison
    ref_meta: dict
    cand_meta: dict
    ref_tensors: dict = field(repr=False, default_factory=dict)
    cand_tensors: dict = field(repr=False, default_factory=dict)
    local_tensors: dict = field(repr=False, default_factory=dict)
    ref_trace: Path | None = None
    cand_trace: Path | None = None
    report: Path | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{Path(self.bundle).stem}-{self.profile}-{'streaming' if self.streaming else 'offline'}"

    @property
    def verdict(self) -> str:
        return self.result.verdict


def step_local(cand, ref: dict, *, streaming: bool, finalize: bool = True) -> dict:
    """Teacher-forced errors: the candidate's solver step driven from the reference's own state
    (x0 or step{k-1}.x, t, dt, mu, spks, cond) and its vocoder fed the reference flow_mel."""
    out: dict = {}
    if "mu" not in ref or "x0" not in ref:
        return out
    mu, spks, cond = ref["mu"], ref["spks"], ref["cond"]
    mask = torch.ones(1, 1, mu.shape[2])
    k = 1
    while f"step{k}.t" in ref and f"step{k}.x" in ref:
        x_prev = ref["x0"] if k == 1 else ref[f"step{k - 1}.x"]
        try:
            x, v1, v2, v_cfg = cand.step(x_prev, ref[f"step{k}.t"], ref[f"step{k}.dt"].reshape(()), mu, mask, spks,
                                         cond, streaming=streaming, k=k)
        except Exception:  # noqa: BLE001 - a crashing step shows as missing local stages
            break
        for n, t in (("v1", v1), ("v2", v2), ("v_cfg", v_cfg), ("x", x)):
            out[f"step{k}.{n}"] = t.detach().float().cpu()
        k += 1
    if "flow_mel" in ref:
        rec = Recorder(["f0", "source", "s_stft", "conv_pre", "magnitude", "phase", "audio_preclamp", "audio"])
        try:
            cand.vocode(ref["flow_mel"], finalize=finalize, probe=Probe(rec))
        except Exception:  # noqa: BLE001
            pass
        out.update(rec.tensors)
    return out


class ModelCache:
    """Reference models and reference traces are computed once per (model, bundle, mode)."""

    def __init__(self):
        self.models: dict = {}
        self.ref_runs: dict = {}

    def model(self, preset: str | None, model_dir: str | None, noise_path: str | None = None):
        from reference.model import Token2Wav
        from reference.noise import SharedNoise

        key = (preset, model_dir, noise_path)
        if key not in self.models:
            noise = SharedNoise.load(noise_path) if noise_path else None
            self.models[key] = Token2Wav.load(None if model_dir else preset, model_dir, noise)
        return self.models[key]


def run_case(model, cand, bundle: str | Path, *, streaming: bool = False, finalize: bool = True, policy: Policy | None = None,
             patterns=None, trace_dir: Path | None = None, local: bool = True, progress: bool = False,
             profile_name: str = "candidate", ref_cache: dict | None = None, allow_trim: bool = False) -> Case:
    bundle = Path(bundle)
    inputs = load_bundle(bundle)
    stem = f"{bundle.stem}-{'streaming' if streaming else 'offline'}"
    ref_path = trace_dir / f"{stem}-reference.safetensors" if trace_dir else None
    cand_path = trace_dir / f"{stem}-{profile_name}.safetensors" if trace_dir else None
    key = (id(model), str(bundle), streaming, finalize, str(patterns))
    t0 = time.perf_counter()
    if ref_cache is not None and key in ref_cache:
        ref_res = ref_cache[key]
        if ref_path is not None and not ref_path.exists():
            write_trace(ref_path, ref_res.tensors, ref_res.metadata)
    else:
        ref_res = run_to_trace(model, inputs, ref_path, patterns=patterns, streaming=streaming, finalize=finalize,
                               extra_meta={"inputs": bundle.name}, progress=Progress("reference", progress or None)
                               if progress else None, raise_errors=True)
        if ref_cache is not None:
            ref_cache[key] = ref_res
    t1 = time.perf_counter()
    cand_res = run_to_trace(cand, inputs, cand_path, patterns=patterns, streaming=streaming, finalize=finalize,
                            extra_meta={"inputs": bundle.name},
                            progress=Progress(f"candidate[{profile_name}]", progress or None) if progress else None)
    t2 = time.perf_counter()
    loc = step_local(cand, ref_res.tensors, streaming=streaming, finalize=finalize) if local else {}
    t3 = time.perf_counter()
    ref_l = Loaded(ref_res.tensors, ref_res.metadata, str(ref_path or f"<reference {stem}>"))
    cand_l = Loaded(cand_res.tensors, cand_res.metadata, str(cand_path or f"<candidate {stem}>"))
    loc_l = Loaded(loc, {"pipeline": "candidate-local"}, "<step-local>") if loc else None
    result = compare_loaded(ref_l, cand_l, policy or load_policy(), CompareOptions(allow_trim=allow_trim), loc_l)
    t4 = time.perf_counter()
    result.case = {"bundle": bundle.name, "profile": profile_name, "streaming": streaming, "finalize": finalize,
                      "expected_stage": getattr(cand, "expected_stage", lambda *_: None)(
                          bool(patterns and "block" in str(patterns)))}
    return Case(bundle.name, profile_name, streaming, result, ref_res.metadata, cand_res.metadata, ref_res.tensors,
                cand_res.tensors, loc, ref_path, cand_path,
                seconds={"reference": t1 - t0, "candidate": t2 - t1, "local": t3 - t2, "compare": t4 - t3})


def run_command(args) -> int:
    """The CLI: every bundle x every profile; one report per case plus a summary page when there are several."""
    from candidate.pipeline import CandidateToken2Wav
    from candidate.switches import switches_from

    from .summary import render

    t_start = time.perf_counter()
    cache = ModelCache()
    model = cache.model(None if args.model_dir else args.preset, args.model_dir, args.noise)
    bundles = [Path(b) for b in (args.inputs or default_bundles())]
    if not bundles:
        raise InputError(f"no input bundles given and none found in {BUNDLE_DIR}")
    for b in bundles:
        if not b.exists():
            raise InputError(f"{b}: input bundle not found")
    profiles = args.profile or ["fp32-sdpa"]
    policy = load_policy(args.policy)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = Path(args.report) if args.report else Path("reports") / f"parity-{stamp}.html"
    trace_dir = Path(args.keep_traces) if args.keep_traces else None
    show_progress = not args.no_progress and sys.stderr.isatty()
    ref_cache: dict = {}
    cases: list[Case] = []
    for prof in profiles:
        sw = switches_from(prof, args.fault or (), device=args.device) if args.device != "cpu" else \
            switches_from(prof, args.fault or ())
        label = prof + ("+" + "+".join(args.fault) if args.fault else "")
        cand = CandidateToken2Wav(model, sw, label)
        for b in bundles:
            case = run_case(model, cand, b, streaming=args.streaming, policy=policy, patterns=args.stages,
                            trace_dir=trace_dir, local=not args.no_local, progress=show_progress, profile_name=label,
                            ref_cache=ref_cache)
            if args.require_kernel:
                from candidate.provenance import check_required_kernel

                msg = check_required_kernel(args.require_kernel, case.cand_meta.get("attention_kernels") or {})
                if msg:
                    case.result.add_finding(Finding("required_kernel_missing", None, "failure", msg))
            cases.append(case)
            print(render(case.result, verbose=args.verbose))
            print()
    from .report import build_report, build_summary_page

    if len(cases) == 1:
        path = build_report(cases[0].result, report, case=cases[0])
        cases[0].report = path
    else:
        case_dir = report.with_suffix("")
        for c in cases:
            c.report = build_report(c.result, case_dir / f"{c.name}.html", case=c)
        path = build_summary_page(cases, report)
    if args.json:
        if len(cases) == 1:
            write_json(cases[0].result, args.json)
        else:
            write_matrix_json([c.result for c in cases], args.json, now_iso(), sidecar=False)
    size = path.stat().st_size
    verdict = aggregate_verdict(c.verdict for c in cases)
    print(f"parity run: {verdict.upper()}: {len(cases)} case(s), {sum(c.verdict == 'pass' for c in cases)} passed; "
          f"report {path} ({size / 1024:.0f} KiB); {time.perf_counter() - t_start:.1f} s")
    return exit_code_for(verdict)
