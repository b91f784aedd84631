"""``parity run``: every bundle x every candidate profile through the harness (reference once per bundle,
candidate, step-local errors, comparison as the command's :class:`parity.judge.spec.ComparisonSpec` says), then
the terminal summary, the HTML reports and the JSON. This is command-layer orchestration; the capture/judge work
is :func:`parity.harness.run_case`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reference.errors import InputError

from .project import BUNDLE_DIR, SESSION_BUNDLE_DIR, default_bundles, default_session_bundles
from .harness import Case, CaseSummary, Harness, ModelSpec
from .result import aggregate_verdict, exit_code_for, write_json, write_matrix_json
from .trace import now_iso


def run_command(args) -> int:
    """The CLI: every bundle x every profile; one report per case plus a summary page when there are several.
    Inputs and outputs are checked before any work; the report and JSON names are claimed for the run
    (:mod:`parity.outputs`), so a concurrent run never writes over them."""
    from reference.bundle import bundle_dims, load_bundle, negative_token_note

    from .args import run_mode_from_args
    from .judge.spec import ComparisonSpec
    from .onnx_options import OnnxOptions
    from .outputs import Output, claim_output, is_regular_output, prepare_outputs, unique_stamp
    from .present.summary import render
    from .result import sidecar_path

    t_start = time.perf_counter()
    onnx = OnnxOptions.from_args(args)
    overrides = onnx.overrides()  # --onnx-estimator / --require-provider: switches on top of each profile
    mode = run_mode_from_args(args)
    spec = ComparisonSpec.from_args(args, log=lambda m: print(f"parity: {m}", file=sys.stderr, flush=True))
    floors = spec.floors
    defaults = default_session_bundles() if mode.is_session else default_bundles()
    bundles = [Path(b) for b in (args.inputs or defaults)]
    if not bundles:
        raise InputError(f"no input bundles given and none found in "
                         f"{SESSION_BUNDLE_DIR if mode.is_session else BUNDLE_DIR}")
    for b in bundles:
        if not b.exists():
            raise InputError(f"{b}: input bundle not found")
    profiles = onnx.profiles(args.profile, ["fp32-sdpa"])
    explicit = bool(args.report)
    report = Path(args.report) if explicit else Path("reports") / f"parity-{unique_stamp()}.html"
    prepare_outputs([Output("--report", report, explicit=explicit), Output("--json", args.json),
                     Output("--keep-traces", args.keep_traces, "dir")])
    report = claim_output(report, "--report", replace_existing=explicit, companions=[lambda p: p.with_suffix("")]).path
    json_path = claim_output(args.json, "--json", companions=[sidecar_path]).path if args.json else None
    harness = Harness(spec=spec)
    model = harness.model(ModelSpec.from_args(args))
    for b in bundles:  # said once per bundle, however many profiles run on it
        note = negative_token_note(load_bundle(b, **bundle_dims(model.cfg)), b)
        if note:
            print(f"parity run: note: {note}", file=sys.stderr)
    trace_dir = Path(args.keep_traces) if args.keep_traces else None
    show_progress = not args.no_progress and sys.stderr.isatty()
    cases: list[Case] = []
    for prof in profiles:
        cand = harness.candidate(model, prof, args.fault or (), device=args.device, overrides=overrides,
                                 port_noise=getattr(args, "port_noise", "shared"))
        refusal = getattr(cand, "session_refusal", None)
        if mode.is_session and callable(refusal) and refusal():
            raise InputError(refusal())
        for b in bundles:
            cases.append(harness.run(model, cand, b, mode, patterns=args.stages, trace_dir=trace_dir,
                                     local=not args.no_local, progress=show_progress))
            case = cases[-1]
            print(render(case.result, verbose=args.verbose))
            print()
    if floors is not None and floors.files:  # a --floor FILE that judged no case is worth a line
        from .floor import Floor

        used = {(c.result.floor or {}).get("digest") for c in cases}
        for f in floors.files:
            if Floor.load(f).digest not in used:
                print(f"parity: --floor {f} judged no case (its key is none of these bundles, modes and precisions)",
                      file=sys.stderr)
    from .present.report import build_report, build_summary_page

    if len(cases) == 1:
        path = build_report(cases[0].result, report, case=cases[0])
        cases[0].report = path
    else:
        case_dir = report.with_suffix("")
        if not is_regular_output(report):  # no directory beside a device or a pipe: the default place, said
            case_dir = Path("reports") / f"parity-{unique_stamp()}"
            print(f"parity run: --report {report} is not a regular file: the summary page goes there, its "
                  f"{len(cases)} case pages to {case_dir}/", file=sys.stderr)
        for c in cases:
            c.report = build_report(c.result, case_dir / f"{c.name}.html", case=c)
        path = build_summary_page([CaseSummary.of(c) for c in cases], report)
    if json_path:  # per-frame vectors in a <name>.vectors.npz sidecar unless --inline-vectors
        if len(cases) == 1:
            write_json(cases[0].result, json_path, sidecar=not args.inline_vectors)
        else:
            write_matrix_json([c.result for c in cases], json_path, now_iso(), sidecar=not args.inline_vectors)
        print(f"wrote {json_path}")
    size = path.stat().st_size if is_regular_output(path) else None
    verdict = aggregate_verdict(c.verdict for c in cases)
    print(f"parity run: {verdict.upper()}: {len(cases)} case(s), {sum(c.verdict == 'pass' for c in cases)} passed; "
          f"report {path}{f' ({size / 1024:.0f} KiB)' if size is not None else ''}; "
          f"{time.perf_counter() - t_start:.1f} s")
    return exit_code_for(verdict)
