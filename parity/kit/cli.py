"""``parity kit``: make a port kit, check a port's outputs against one, run the reference as a port of itself.

::

    parity kit --preset tiny | --model-dir M --inputs B --out KIT/ [--streaming [--chunk C]] [--step S]
    parity kit check KIT/ PORT_OUTPUTS [--json J] [--report R] [--require-all] [-v]
    parity kit run KIT/ --preset tiny | --model-dir M --out OUT.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

from reference.errors import InputError


def _log(msg: str) -> None:
    print(f"parity kit: {msg}", file=sys.stderr, flush=True)


def _ids(spec: str | None) -> list[str] | None:
    return [s.strip() for s in spec.split(",") if s.strip()] if spec else None


def cmd_kit(args) -> int:
    if getattr(args, "device", "cpu") != "cpu":
        raise InputError(f"--device {args.device}: a kit is made and run on the CPU (its tolerances are the CPU "
                         f"reference's floor)")
    if args.kit_cmd == "check":
        return cmd_check(args)
    if args.kit_cmd == "run":
        return cmd_run(args)
    return cmd_build(args)


def cmd_build(args) -> int:
    from reference.bundle import bundle_dims, load_bundle
    from reference.session import SessionOptions

    from ..floor.estimate import Recipe
    from ..outputs import Output, prepare_outputs
    from ..harness import ModelSpec
    from .build import BuildOptions, build_kit, check_out_dir

    if not args.inputs or not args.out:
        raise InputError("parity kit: --inputs BUNDLE and --out KIT_DIR are required to make a kit "
                         "(to check a port: parity kit check KIT PORT_OUTPUTS)")
    if args.chunk is not None and not args.streaming:
        raise InputError("--chunk: only with --streaming (the session call the streaming kit captures)")
    if (args.initial_hop or args.growth) and not args.streaming:
        raise InputError("--initial-hop/--growth: only with --streaming")
    out = Path(args.out)
    check_out_dir(out)  # before the directory check creates it: a non-kit directory is refused as it is
    prepare_outputs([Output("--out", out, "dir")])
    model = ModelSpec.from_args(args).load()
    inputs = load_bundle(args.inputs, **bundle_dims(model.cfg))
    recipe = Recipe(n_seeds=args.seeds, n_held_out=args.held_out)
    session = None
    if args.streaming:
        kw = {k: v for k, v in (("initial_hop", args.initial_hop), ("growth", args.growth)) if v is not None}
        session = SessionOptions(**kw)
    opts = BuildOptions(step=args.step, streaming=args.streaming, chunk=args.chunk, recipe=recipe,
                        units=tuple(_ids(args.units) or ()) or None, bundle_name=Path(args.inputs).stem,
                        session_options=session)
    rep = build_kit(model, inputs, out, opts, log=None if args.quiet else _log, bundle_path=args.inputs)
    print(f"wrote kit {rep.path}: {rep.vectors} vectors, {rep.bytes / 2**20:.1f} MiB, {rep.seconds:.1f} s "
          f"(capture {rep.capture_seconds:.1f} s, tolerances {rep.floor_seconds:.1f} s, files {rep.write_seconds:.1f} s)")
    return 0


def cmd_check(args) -> int:
    from ..outputs import Output, claim_output, prepare_outputs
    from .check import check_kit
    from .report import terminal, write_html, write_json

    prepare_outputs([Output("--json", args.json), Output("--report", args.report)])
    json_path = claim_output(args.json, "--json").path if args.json else None
    report_path = claim_output(args.report, "--report").path if args.report else None
    res = check_kit(args.kit, args.port, require_all=args.require_all, only=_ids(args.units))
    print(terminal(res, verbose=args.verbose))
    if json_path:
        print(f"wrote {write_json(res, json_path)}")
    if report_path:
        print(f"report: {write_html(res, report_path)}")
    return res.exit_code


def cmd_run(args) -> int:
    from ..outputs import Output, prepare_outputs
    from ..harness import ModelSpec
    from .port import run_port

    prepare_outputs([Output("--out", args.out)])
    model = ModelSpec.from_args(args).load()
    res = run_port(model, args.kit, args.out, only=_ids(args.units))
    print(f"wrote {args.out}: {len(res)} outputs of {model.model_id} run on the kit's inputs")
    return 0


def add_kit_parser(sub) -> None:
    from .. import args as A

    k = sub.add_parser("kit", parents=[A.model_parent("tiny")],
                       help="port kit: per-module golden vectors with measured tolerances (make / check / run)",
                       description="Make a port kit: for every module of the flow and the vocoder, the reference's own "
                                   "inputs on a real run of the bundle, its outputs, and the tolerance measured from "
                                   "the module-level noise floor. 'parity kit check KIT PORT' judges a port's outputs.")
    k.add_argument("--inputs", help="input bundle (.safetensors)")
    k.add_argument("--out", help="kit directory to write (new, empty, or an earlier kit, replaced when done)")
    k.add_argument("--streaming", action="store_true",
                   help="the chunked call: upstream's streaming session loop, captured at one non-final call (the "
                        "DiT's chunk mask, finalize=False, the vocoder on the cumulative mel)")
    k.add_argument("--chunk", type=int, help="--streaming: the session call to capture (default 1 when it is a "
                                             "non-final call, else 0)")
    k.add_argument("--initial-hop", type=int, metavar="N", help="--streaming: the session's first hop in tokens "
                                                                "(default: the yaml's chunk_size)")
    k.add_argument("--growth", type=int, metavar="N", help="--streaming: hop multiplier after each call (default 2)")
    k.add_argument("--step", type=int, default=5, help="the ODE step whose estimator calls are captured (default 5)")
    k.add_argument("--units", metavar="IDS", help="only these vector ids (comma-separated)")
    k.add_argument("--seeds", type=int, default=8, help="fit seeds per Monte-Carlo family (default 8, as the floor)")
    k.add_argument("--held-out", type=int, default=4, help="held-out seeds per family (default 4, as the floor)")
    k.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    ks = k.add_subparsers(dest="kit_cmd", required=False, metavar="{check,run}")
    c = ks.add_parser("check", help="judge a port's outputs against a kit: per-module verdict (pass / N x floor)")
    c.add_argument("kit", help="kit directory (or its manifest.json)")
    c.add_argument("port", help="the port's outputs: one .safetensors/.npz with keys '<vector id>/<output>', or a "
                                "directory of <vector id>.safetensors|.npz files and <vector id>/<output>.npy files")
    c.add_argument("--json", help="write the result (schema tts-parity-kit-check/1)")
    c.add_argument("--report", help="write the HTML report")
    c.add_argument("--require-all", action="store_true", help="a vector without port outputs is a failure")
    c.add_argument("--units", metavar="IDS", help="only these vector ids (comma-separated)")
    c.add_argument("-v", "--verbose", action="store_true", help="every vector and every finding")
    r = ks.add_parser("run", parents=[A.model_parent("tiny")],
                      help="run the reference (a model) on every vector's inputs: the reference as a port of itself")
    r.add_argument("kit", help="kit directory")
    r.add_argument("--out", required=True, help="outputs file to write (.safetensors, keys '<vector id>/<output>')")
    r.add_argument("--units", metavar="IDS", help="only these vector ids (comma-separated)")
    k.set_defaults(func=cmd_kit)
