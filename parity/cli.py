"""``parity`` and ``parity-report``: thin command-line wrappers over capture, compare and report.

Exit codes: 0 pass, 1 parity failure, 2 unusable input or user error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reference.errors import InputError, ParityUserError

from .judge.policy import PRECISION_CLASSES


def _write_wav(path: str | Path, audio, sr: int) -> Path:
    import numpy as np
    from scipy.io import wavfile

    from .outputs import output_file

    a = audio.detach().float().reshape(-1).numpy()
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0).clip(-1.0, 1.0)
    path = Path(path)
    with output_file(path) as tmp:
        wavfile.write(str(tmp), sr, (a * 32767.0).round().astype(np.int16))
    return path


# ---------------------------------------------------------------------------------------------
# commands

def cmd_dump(args) -> int:
    from reference.bundle import bundle_dims, load_bundle, negative_token_note

    from .args import run_mode_from_args
    from .capture.progress import Progress
    from .capture.runner import run_pipeline
    from .harness import Harness, ModelSpec
    from .judge.metadata import onnx_findings
    from .judge.spec import ComparisonSpec, Requirements
    from .onnx_options import OnnxOptions, name_suffix
    from .outputs import Output, is_regular_output, prepare_outputs
    from .result import exit_code_for

    prepare_outputs([Output("--out", args.out), Output("--wav", args.wav)])
    if args.embed_floor and not is_regular_output(args.out):
        raise InputError(f"--embed-floor: --out {args.out} is not a regular file (the floor is added to the "
                         f"finished trace, which is read back): give a file name")
    onnx = OnnxOptions.from_args(args)
    overrides = onnx.overrides()  # a missing file or an unknown provider: one line before anything loads
    mode = run_mode_from_args(args)  # before loading anything: a bad combination is exit 2 at once
    requirements = Requirements.from_args(args)
    model = ModelSpec.from_args(args).load()
    inputs = load_bundle(args.inputs, **bundle_dims(model.cfg))
    notes = [n for n in [negative_token_note(inputs, args.inputs)] if n]
    for n in notes:
        print(f"parity dump: note: {n}", file=sys.stderr)
    if args.pipeline == "candidate" or args.profile or args.fault or onnx:
        profile = onnx.profiles([args.profile] if args.profile else None, [None])[0]
        pipe = Harness(spec=ComparisonSpec()).candidate(model, profile, args.fault, args.device,
                                                            label=(profile or "fp32-explicit") + name_suffix(overrides),
                                                            overrides=overrides, port_noise=args.port_noise)
        label = f"candidate[{pipe.profile_name}]"
    else:
        pipe = model
        label = "reference"
    extra = {"inputs": str(args.inputs)}
    if notes:
        extra["input_notes"] = notes
    refusal = getattr(pipe, "session_refusal", None)
    if mode.is_session and callable(refusal) and refusal():
        raise InputError(refusal())
    res = run_pipeline(pipe, inputs, args.out, mode, patterns=args.stages, extra_meta=extra, progress=Progress(label))
    if res.error is not None:
        print(f"parity dump: {label} crashed at {res.crashed_at}: {type(res.error).__name__}: {res.error}; "
              f"partial trace with {len(res.stages)} stages written to {res.trace_path}", file=sys.stderr)
        return exit_code_for("fail")
    # what the capture alone decides: --require-kernel, and --require-provider (recorded in the trace, so a later
    # parity compare reports the same finding)
    unmet = [f for f in requirements.capture_findings(res.metadata) + onnx_findings(res.metadata)
             if f.severity == "failure"]
    for f in unmet:
        print(f"parity dump: {f.message}; trace written to {res.trace_path}", file=sys.stderr)
    if unmet:
        return exit_code_for("fail")
    if args.wav and res.audio is not None:
        _write_wav(args.wav, res.audio, model.cfg.sample_rate)
    print(f"wrote {res.trace_path} ({len(res.stages)} stages, {res.seconds:.2f} s)")
    if args.embed_floor:
        if pipe is not model:
            raise InputError("--embed-floor embeds the reference's own noise floor: dump the reference pipeline")
        _embed_floor(model, inputs, res, args, mode)
    return 0


def _log(msg: str) -> None:
    print(f"parity: {msg}", file=sys.stderr, flush=True)


def _embed_floor(model, inputs, res, args, mode) -> None:
    """Put the reference's fp32 noise floor (shipped, cached or computed now; a streaming session's floor for a
    session trace) into the trace's metadata, so that ``parity compare`` finds it on a machine without the model or
    the cache."""
    import json

    from .floor.store import EMBED_KEY, FloorStore
    from .trace import read_trace, write_trace

    ch = FloorStore(log=_log).for_run(model, inputs, streaming=mode.streaming, finalize=mode.finalize,
                                      bundle_name=Path(args.inputs).stem, reference=res.tensors,
                                      session=mode.kind, options=mode.session)
    if ch.floor is None:
        raise InputError(f"--embed-floor: no floor for this trace: {ch.reason}")
    tr = read_trace(res.trace_path)
    write_trace(res.trace_path, tr.tensors, dict(tr.metadata, **{EMBED_KEY: json.loads(ch.floor.to_json())}))
    print(f"embedded the fp32 noise floor {ch.floor.digest[:12]} (k {ch.floor.k:g}, {ch.source}) in {res.trace_path}")


def cmd_floor(args) -> int:
    from reference.bundle import bundle_dims, load_bundle

    from .floor import EstimateLog, FloorCache, Recipe, estimate_envelope, estimate_floor
    from .floor.store import envelope_spec
    from .outputs import Output, prepare_outputs
    from .harness import ModelSpec

    prepare_outputs([Output("--out", args.out)])  # a floor costs seconds to minutes: a bad path fails first
    model = ModelSpec.from_args(args).load()
    inputs = load_bundle(args.inputs, **bundle_dims(model.cfg))
    recipe = Recipe(patterns=tuple(p for p in args.stages.split(",") if p) if args.stages else None)
    cache = None if args.no_cache else FloorCache()
    log = EstimateLog()
    kw = dict(streaming=args.streaming, finalize=not args.no_finalize, recipe=recipe, cache=cache,
              bundle_name=Path(args.inputs).stem, log=log)
    if args.profile:
        from .project import profile_switches

        sw = profile_switches(args.profile)
        spec, why = envelope_spec(sw)
        if spec is None:
            why = why or "an fp32 profile: use the fp32 noise floor, without --profile"
            raise InputError(f"profile {args.profile!r}: no reduced-precision envelope ({why})")
        _log(f"estimating the {spec.fmt} envelope of profile {args.profile} (emulated rounding; "
             f"{3 + recipe.n_seeds + recipe.n_held_out} runs)")
        floor = estimate_envelope(model, inputs, spec, **kw)
    else:
        from .floor.members import fp32_members

        n = 1 + len(fp32_members(recipe.n_seeds, recipe.n_held_out, recipe.families))
        _log(f"estimating the fp32 noise floor ({n} runs of the reference)")
        floor = estimate_floor(model, inputs, **kw)
    what = "fp32 noise floor" if floor.kind == "fp32" else f"{floor.kind} envelope"
    where = "from the cache" if log.from_cache else f"{len(floor.members) + 1} runs in {log.seconds:.1f} s"
    print(f"{what} of {model.model_id} on {args.inputs} ({'streaming' if args.streaming else 'offline'}): "
          f"k {floor.k:g} (largest held-out ratio {floor.k_basis.get('largest', 0):.3g}), {len(floor.stages)} stages, "
          f"digest {floor.digest[:12]}; {where}")
    if args.verbose:
        print(f"  {'stage':<18}{'max_abs':>11}{'rel_l2':>11}  set by")
        for name, sf in floor.stages.items():
            print(f"  {name:<18}{sf.max_abs:>11.3g}{sf.rel_l2:>11.3g}  {sf.worst.get('max_abs', '')}")
    if cache is not None:
        print(f"cached: {cache.path(floor.digest)}")
    if args.out:
        print(f"wrote {floor.save(args.out)}")
    return 0


def cmd_noise_export(args) -> int:
    from reference.config import config_from_yaml, preset
    from reference.errors import InputError
    from reference.noise import EXPORT_SAMPLES, SharedNoise

    from .outputs import Output, prepare_outputs

    prepare_outputs([Output("--out", args.out)])
    if args.model_dir:  # the noise follows the model's yaml (its module sizes shape the sine noise)
        yaml_path = Path(args.model_dir) / "cosyvoice3.yaml"
        if not yaml_path.exists():
            raise InputError(f"{args.model_dir}: no cosyvoice3.yaml in the model directory")
        cfg = config_from_yaml(yaml_path, name=Path(args.model_dir).name)
    else:
        cfg = preset(args.preset)
    n = SharedNoise.from_config(cfg)
    frames = args.frames or int(n.flow.shape[2])
    samples = args.samples or min(n.sine_available, EXPORT_SAMPLES)
    path = n.save(args.out, frames=frames, samples=samples)
    print(f"wrote {path} for config {cfg.name}: rand_noise [1, 80, {frames}], hift_rand_ini [1, 9], "
          f"hift_sine_noise [1, {samples}, 9]; recipe {n.sizes.recipe()}; "
          f"fingerprint {n.fingerprint()}")
    return 0


def cmd_compare(args) -> int:
    from .aliases import parse_maps
    from .harness import compare_paths
    from .judge.spec import ComparisonSpec
    from .outputs import Output, claim_output, prepare_outputs
    from .present.summary import render
    from .result import sidecar_path, write_json

    files = args.floor or []
    if len(files) > 1:
        raise InputError(f"parity compare: one --floor FILE per comparison (got {len(files)})")
    prepare_outputs([Output("--json", args.json), Output("--report", args.report)])
    json_path = claim_output(args.json, "--json", companions=[sidecar_path]).path if args.json else None
    report_path = claim_output(args.report, "--report").path if args.report else None
    spec = ComparisonSpec.from_args(args, log=_log, one_floor_file=True)
    result = compare_paths(args.ref, args.cand, spec, maps=parse_maps(args.map), local_path=args.local,
                           fp64_path=args.fp64, offline_path=args.offline)
    print(render(result, verbose=args.verbose))
    if json_path:
        write_json(result, json_path)
        print(f"wrote {json_path}")
    if report_path:
        from .present.report import build_report

        path = build_report(result, report_path)
        print(f"report: {path}")
    return result.exit_code


def cmd_profiles(args) -> int:
    from candidate.switches import PROFILE_HELP

    from .ports import PORT_HELP, port_names, port_unavailable
    from .project import profile_switches, project_profiles

    for name in sorted(project_profiles()):
        sw = profile_switches(name)
        desc = PROFILE_HELP.get(name) or "user profile: " + ", ".join(f"{k}={v}" for k, v in sw.differences().items())
        print(f"{name:<18} {sw.precision:<5} {'cuda' if sw.device == 'cuda' else '    '} {desc}")
    print("\nports under test (parity run --profile NAME; --port-noise shared|flow-only|port):")
    for name in port_names():
        why = port_unavailable(name)
        print(f"{name:<18} fp32       {PORT_HELP.get(name, '')}" + (f" [unavailable: {why}]" if why else ""))
    return 0


def cmd_faults(args) -> int:
    from candidate.faults import catalogue

    if args.mode in ("call", "all"):
        for name, f in sorted(catalogue().items()):
            print(f"{name:<22} -> {f.stage():<15} {f.description}")
    if args.mode in ("session", "all"):
        if args.mode == "all":
            print("\nstreaming-session faults (parity run --session streaming; <last> = the final call's chunk):")
        for name, f in sorted(catalogue("session").items()):
            code = f" [{f.expected_code}]" if f.expected_code else ""
            print(f"{name:<30} -> {f.stage(last_chunk='<last>'):<22}{code} {f.description}")
    return 0


def cmd_export_model(args) -> int:
    from reference.export import export_model_dir

    from .outputs import Output, prepare_outputs

    prepare_outputs([Output("--out", args.out, "dir")])
    out = export_model_dir(args.preset, args.out, fmt=args.format)
    print(f"wrote {out} (cosyvoice3.yaml, flow.{args.format}, hift.{args.format}) in the upstream key format")
    return 0


def cmd_run(args) -> int:
    from .run import run_command

    return run_command(args)


def cmd_export_onnx(args) -> int:
    from .outputs import Output, prepare_outputs

    prepare_outputs([Output("--out", args.out)])
    from candidate.backends.onnx_export import ExportOptions, export_from

    info = export_from(args.out, preset=None if args.model_dir else args.preset, model_dir=args.model_dir,
                       options=ExportOptions(mask_input=args.mask_input, exporter=args.exporter))
    ins = ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in info.inputs)
    print(f"wrote {info.path} (opset {info.options.opset}, {info.options.exporter} exporter, onnx.checker ok, "
          f"sha256 {info.file_sha256[:16]}, {info.seconds:.1f} s); inputs: {ins}")
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate_command
    from .outputs import Output, prepare_outputs

    prepare_outputs([Output("--out", args.out)])
    return calibrate_command(args)


def cmd_bisect(args) -> int:
    from .bisect.cli import bisect_command

    return bisect_command(args)


# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import args as A

    p = OneLineParser(prog="parity", description="Numerical parity harness for CosyVoice 3 token2wav ports")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("dump", help="run a pipeline on an input bundle and write its trace",
                       parents=[A.model_parent(), A.streaming_parent(), A.session_parent(), A.capture_parent(),
                                A.fault_parent(), A.onnx_parent(), A.port_parent()])
    d.add_argument("--inputs", required=True, help="input bundle (.safetensors: token, prompt_token, prompt_feat, "
                                                   "embedding)")
    d.add_argument("--out", required=True, help="trace to write (.safetensors)")
    d.add_argument("--no-finalize", action="store_true", help="non-final chunk: lookahead tokens/frames used as context")
    d.add_argument("--wav", help="also write the audio as 16-bit WAV")
    d.add_argument("--pipeline", choices=["reference", "candidate"], default="reference")
    d.add_argument("--profile", help="candidate profile, or a port under test (parity profiles)")
    d.add_argument("--embed-floor", action="store_true",
                   help="put the reference's fp32 noise floor (shipped, cached or computed now) into the trace, so "
                        "parity compare finds it where neither the model nor the floor cache is")
    d.set_defaults(func=cmd_dump)

    fl = sub.add_parser("floor", help="measure the noise floor (or a profile's precision envelope) of a model, bundle "
                                      "and mode", parents=[A.model_parent("tiny"), A.streaming_parent()])
    fl.add_argument("--inputs", required=True, help="input bundle (.safetensors), or a trace holding the inputs")
    fl.add_argument("--no-finalize", action="store_true", help="non-final chunk")
    fl.add_argument("--profile", help="the precision envelope of this (bf16/fp16/int8) candidate profile instead of "
                                      "the fp32 noise floor")
    fl.add_argument("--stages", help="extra stage globs to give floors ('+step*.block*': every DiT block's output)")
    fl.add_argument("--out", help="write the floor here (JSON; .json.gz compressed), for --floor FILE")
    fl.add_argument("--no-cache", action="store_true", help="neither read nor write the floor cache")
    fl.add_argument("-v", "--verbose", action="store_true", help="list every stage's floor")
    fl.set_defaults(func=cmd_floor)

    n = sub.add_parser("noise", help="shared noise")
    nsub = n.add_subparsers(dest="noise_cmd", required=True)
    ne = nsub.add_parser("export", help="write the shared noise for another implementation")
    ne.add_argument("--out", required=True)
    src = ne.add_mutually_exclusive_group()
    src.add_argument("--preset", default="cosyvoice3-0.5b", help="the preset whose noise to write (default: released)")
    src.add_argument("--model-dir", help="write the noise of this model directory's cosyvoice3.yaml")
    ne.add_argument("--frames", type=int, default=None, help="flow noise frames (default 15000)")
    ne.add_argument("--samples", type=int, default=None, help="HiFT sine-noise samples (default 720000 = 30 s)")
    ne.set_defaults(func=cmd_noise_export)

    c = sub.add_parser("compare", help="compare two traces from anywhere",
                       parents=[A.policy_parent(), A.floor_parent(), A.map_parent(), A.trim_parent(),
                                A.output_parent(), A.require_parent(), A.pcm_parent()])
    c.add_argument("ref")
    c.add_argument("cand")
    c.add_argument("--precision", choices=list(PRECISION_CLASSES), help="candidate precision class for the policy")
    c.add_argument("--attention", help="candidate attention kernel for the policy")
    c.add_argument("--local", help="step-local trace of the candidate (driven from the reference's tensors)")
    c.add_argument("--fp64", help="float64 reference trace for the arbiter rules")
    c.add_argument("--no-mask-check", action="store_true",
                   help="streaming traces: skip the chunk-mask check (it loads the reference model the reference "
                        "trace names and runs its estimator twice)")
    c.add_argument("--offline", help="offline reference trace of the same tokens: a streaming-session comparison "
                                     "then quantifies per chunk how far each stream is from it (stream vs offline)")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("run", help="run reference and candidate, compare, report (no arguments: tiny model on the "
                                   "fixtures)",
                       parents=[A.model_parent("tiny"), A.streaming_parent(), A.session_parent(), A.capture_parent(),
                                A.fault_parent(), A.onnx_parent(), A.policy_parent(), A.floor_parent(), A.local_parent(),
                                A.output_parent(), A.require_parent(), A.port_parent()])
    r.add_argument("--inputs", action="append", help="input bundle(s); default: every bundle in fixtures/bundles "
                                                     "(with --session streaming: fixtures/sessions)")
    r.add_argument("--profile", action="append", help="candidate profile(s), or a port under test (parity profiles "
                                                      "lists both); default fp32-sdpa")
    r.add_argument("--keep-traces", help="directory to keep the traces in")
    r.add_argument("--inline-vectors", action="store_true",
                   help="keep the per-frame vectors in the --json file instead of its .vectors.npz sidecar")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    cal = sub.add_parser("calibrate", parents=[A.model_parent("tiny")],
                         help="measure the fp32 noise floor against float64 and write per-stage tolerances")
    cal.add_argument("--inputs", action="append", help="input bundle(s); default: every bundle in fixtures/bundles")
    cal.add_argument("--out", required=True, help="policy TOML to write")
    cal.add_argument("--margin", type=float, default=10.0, help="limit = margin x measured fp32 error + floor")
    cal.add_argument("--floor", type=float, default=1e-6)
    cal.set_defaults(func=cmd_calibrate)

    pr = sub.add_parser("profiles", help="list candidate profiles")
    pr.set_defaults(func=cmd_profiles)
    fa = sub.add_parser("faults", help="list injectable faults and where they must be localised")
    fa.add_argument("--mode", choices=["call", "session", "all"], default="all",
                    help="single-call faults, streaming-session faults, or both (default)")
    fa.set_defaults(func=cmd_faults)

    em = sub.add_parser("export-model", help="write a preset as a model directory in the upstream key format")
    em.add_argument("--preset", default="tiny")
    em.add_argument("--out", required=True)
    em.add_argument("--format", choices=["pt", "safetensors"], default="pt")
    em.set_defaults(func=cmd_export_model)

    eo = sub.add_parser("export-onnx", help="export the DiT estimator to ONNX as upstream's export_onnx.py does")
    g = eo.add_mutually_exclusive_group()
    g.add_argument("--preset", default="tiny", help="built-in model: tiny | cosyvoice3-0.5b (seeded weights)")
    g.add_argument("--model-dir", help="released layout; the file goes there by default")
    eo.add_argument("--out", help="ONNX file (default <model-dir>/flow.decoder.estimator.fp32.onnx)")
    eo.add_argument("--mask-input", action="store_true",
                    help="the attention mask as an input (attn_mask [2,1,T,T] bool): streaming's chunk mask can be fed")
    eo.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                    help="torch.onnx exporter (torchscript: what upstream's pinned torch uses; dynamo needs onnxscript)")
    eo.set_defaults(func=cmd_export_onnx)

    from .kit.cli import add_kit_parser

    add_kit_parser(sub)

    b = sub.add_parser("bisect", help="find the culprit: which switch, which fp32 islands, which commit")
    from .bisect.cli import add_bisect_args

    add_bisect_args(b)
    b.set_defaults(func=cmd_bisect)

    return p


class OneLineParser(argparse.ArgumentParser):
    """argparse with the contract's usage errors: one line on stderr (no usage block), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(exc: BaseException) -> str:
    """An error message on one line (a multi-line message, e.g. a checkpoint's key listing, joined by '; ')."""
    parts = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(parts) if parts else type(exc).__name__


def _os_error_text(exc: OSError) -> str:
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or one_line(exc)}"


def guarded_command(prog: str, body) -> int:
    """Run a command body under the exit-code contract: 0 pass, 1 parity failure, 2 unusable input or an
    output that cannot be written (one line on stderr, no traceback), 130 interrupted (Ctrl-C, SIGINT); a
    closed stdout is no error (:func:`parity.outputs.guarded_stdio`)."""
    import signal

    from .outputs import guarded_stdio

    interrupted = []
    previous = None
    try:  # note every SIGINT: one that lands inside a library's import can surface as another error
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            interrupted.append(signum)
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = None
    try:
        with guarded_stdio():
            try:
                return int(body() or 0)
            except ParityUserError as exc:
                print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except OSError as exc:  # the file system refused a write no check could foresee (disk full, ...)
                print(f"{prog}: error: {_os_error_text(exc)}", file=sys.stderr)
                return 2
            except Exception as exc:
                # Ctrl-C inside an import (scipy's lazy loader) leaves a half-initialised module whose next use
                # fails (RecursionError): that failure is the interruption's, not a bug of the command
                if interrupted:
                    print(f"{prog}: interrupted ({type(exc).__name__} in a library interrupted mid-import)",
                          file=sys.stderr)
                    return 130
                raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)  # inside the guard: Ctrl-C while the parser imports is clean
        return args.func(args)

    return guarded_command("parity", body)


def _report_target(out, default: Path) -> Path:
    """The report path of ``parity-report``: ``-o`` or the default, checked and claimed before the work."""
    from .outputs import Output, claim_output, prepare_outputs

    target = Path(out) if out else default
    prepare_outputs([Output("-o", target, explicit=bool(out))], prog="parity-report")
    return claim_output(target, "-o", prog="parity-report").path  # both are the user's (or derived from the inputs)


def report_from_saved(inputs: list[str], out=None, spec=None, maps=None):
    """``parity-report``: REF_TRACE CAND_TRACE (compared as ``parity compare`` compares, with the same
    :class:`parity.judge.spec.ComparisonSpec`: floor, chunk-mask check, requirements), then the report; or
    RESULT.json [REF_TRACE CAND_TRACE] (the saved result, with the spec's requirements added; plots from the given
    traces or from the result's sources when they exist). Returns ``(path, result)``."""
    from .aliases import parse_maps
    from .ingest import load, tensors_from_sources
    from .judge.spec import ComparisonSpec
    from .present.report import build_report
    from .result import read_json
    from .trace import journal_path

    spec = spec or ComparisonSpec()
    inputs = [str(i) for i in inputs or []]
    mp = maps if isinstance(maps, dict) else parse_maps(maps)
    is_json = bool(inputs) and inputs[0].lower().endswith(".json")
    if not ((is_json and len(inputs) in (1, 3)) or (len(inputs) == 2 and not any(i.lower().endswith(".json")
                                                                                 for i in inputs))):
        raise InputError("parity-report: expected REF_TRACE CAND_TRACE, or RESULT.json [REF_TRACE CAND_TRACE] "
                         f"(got {len(inputs)} argument(s): {' '.join(inputs) or 'none'})")
    for i in inputs:  # cheap checks first: a missing input is reported before anything is created
        if not Path(i).exists() and not journal_path(i).exists():
            raise InputError(f"{i}: file not found")
    if is_json and len(inputs) in (1, 3):
        result = read_json(Path(inputs[0]))
        src = result.sources
        if len(inputs) == 3:
            ref_name, cand_name = inputs[1], inputs[2]
        else:
            ref_name = str(src.get("ref") or "reference")
            cand_name = str(src.get("cand") or Path(inputs[0]).stem)
        target = _report_target(out, Path("reports") / f"{Path(cand_name).stem}-vs-{Path(ref_name).stem}.html")
        notes = []
        if len(inputs) == 3:
            rl, cl = load(inputs[1], mp), load(inputs[2], mp)
            rt, ct = rl.tensors, cl.tensors
            for side, given in (("ref", inputs[1]), ("cand", inputs[2])):
                if src.get(side) and Path(str(src[side])).name != Path(given).name:
                    notes.append(f"the {side} trace given ({given}) is not the one the result was computed from "
                                 f"({src[side]})")
        else:
            rt, ct, tn = tensors_from_sources(result)
            if tn:
                notes.append(tn)
            if not rt and not ct:
                notes.append("no traces given and none found at the result's sources: plots omitted")
        spec.requirements.apply(result)
        path = build_report(result, target, ref_tensors=rt or {}, cand_tensors=ct or {}, notes=notes)
        return path, result
    if len(inputs) == 2 and not any(i.lower().endswith(".json") for i in inputs):
        from .harness import compare_saved

        target = _report_target(out, Path("reports") / f"{Path(inputs[1]).stem}-vs-{Path(inputs[0]).stem}.html")
        rl, cl = load(inputs[0], mp), load(inputs[1], mp)
        result = compare_saved(rl, cl, spec)
        path = build_report(result, target, ref_tensors=rl.tensors, cand_tensors=cl.tensors)
        return path, result
    raise InputError("parity-report: expected REF_TRACE CAND_TRACE, or RESULT.json [REF_TRACE CAND_TRACE] "
                     f"(got {len(inputs)} argument(s): {' '.join(inputs) or 'none'})")


def report_main(argv: list[str] | None = None) -> int:
    """``parity-report``: the HTML report from saved inputs (two traces, or a comparison JSON + traces)."""

    def body():
        from . import args as A
        from .judge.spec import ComparisonSpec

        p = OneLineParser(prog="parity-report", description="build the HTML parity report from saved inputs",
                          parents=[A.policy_parent(), A.floor_parent(), A.map_parent(), A.trim_parent(),
                                   A.require_parent(), A.pcm_parent()])
        p.add_argument("inputs", nargs="+", help="REF_TRACE CAND_TRACE, or RESULT.json [REF_TRACE CAND_TRACE]")
        p.add_argument("-o", "--out", help="report path (default reports/<name>.html)")
        p.add_argument("--no-mask-check", action="store_true",
                       help="two streaming traces: skip the chunk-mask check (it loads the model the reference names)")
        args = p.parse_args(argv)
        path, result = report_from_saved(args.inputs, args.out, ComparisonSpec.from_args(args, log=_log),
                                         maps=args.map)
        from .outputs import is_regular_output

        size = f" ({Path(path).stat().st_size / 1024:.0f} KiB)" if is_regular_output(path) else ""
        print(f"report: {path}{size}, verdict {result.verdict}")
        return result.exit_code

    return guarded_command("parity-report", body)


if __name__ == "__main__":
    sys.exit(main())
