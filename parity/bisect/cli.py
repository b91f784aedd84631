"""``parity bisect {switches,precision,git}``: the options and the thin commands over the three searches."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..args import (fault_parent, floor_parent, local_parent, map_parent, model_parent, onnx_parent,
                    policy_parent, session_parent, streaming_parent)
from ..onnx_options import DEFAULT_PROFILE, OnnxOptions, check_overrides
from ..harness import ModelSpec
from .git import GitBisectConfig, bisect_git
from .log import BisectResult, BisectUsageError, atomic_write, headline_text
from .precision import bisect_precision
from .switches import bisect_switches, resolve_switches
from .trials import SearchSettings

GIT_DEFAULT_PROFILE = "fp32-sdpa"


def parse_switch(spec: str) -> tuple[str, Any]:
    """``NAME=VALUE`` for one :class:`candidate.switches.Switches` field, typed like its default; an estimator
    backend's option as ``estimator.OPTION=VALUE`` (or its legacy name, ``onnx_fuse=true``), typed like the
    option's default."""
    from candidate.backends import BACKENDS, legacy_option
    from candidate.switches import Switches

    k, eq, v = spec.partition("=")
    k = k.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(Switches) if f.name != "estimator_options"}
    opt = k[len("estimator."):] if k.startswith("estimator.") else (legacy_option(k) or (None, None))[1]
    if eq and opt is not None:
        defaults = [b.options[opt] for b in BACKENDS.values() if opt in b.options]
        if not defaults:
            raise BisectUsageError(f"--switch {spec!r}: no estimator backend has an option {opt!r}")
        return "estimator_options", {opt: _typed(spec, defaults[0], v)}
    if not eq or k not in fields:
        raise BisectUsageError(f"--switch {spec!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))} "
                               f"or estimator.OPTION")
    return k, _typed(spec, getattr(Switches(), k), v)


def _typed(spec: str, default, v: str):
    """``v`` typed like ``default`` (a boolean, a comma-separated tuple, else the string)."""
    if isinstance(default, bool):
        if v.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise BisectUsageError(f"--switch {spec!r}: expected true or false")
        return v.lower() in ("true", "1", "yes", "on")
    if isinstance(default, tuple):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return v


def _start(args):
    """(profile name or Switches to start from, switch overrides) from --profile / --switch / --fault and
    --onnx-estimator / --require-provider (switch overrides too; with a file and no --profile: onnx-cpu)."""
    overrides: dict = {}
    onnx = OnnxOptions.from_args(args)
    for k, v in [parse_switch(s) for s in (args.switch or [])] + list(onnx.overrides().items()):
        if k == "estimator_options":  # a backend's options add up (kept as sorted pairs: hashable)
            v = tuple(sorted({**dict(overrides.get(k) or ()), **dict(v)}.items()))
        overrides[k] = v
    profile = args.profile or (DEFAULT_PROFILE if onnx.estimator else None)
    if not profile and not overrides and not getattr(args, "fault", None):
        raise BisectUsageError("give --profile NAME or --switch NAME=VALUE (and/or --fault) to start from")
    if onnx:
        sw, _ = resolve_switches(profile or None, getattr(args, "pyproject", None), ())
        check_overrides(sw, profile, overrides)
    if profile:
        return profile, overrides
    from candidate.switches import switches_from

    return switches_from(None, (), None, **overrides), {}


def _search_parent(trials_help: str) -> argparse.ArgumentParser:
    q = argparse.ArgumentParser(add_help=False, parents=[streaming_parent(), session_parent(), policy_parent(),
                                                         floor_parent()])
    q.add_argument("--bundle", action="append", help="input bundle(s) (default fixtures/bundles/medium; with "
                                                     "--session streaming fixtures/sessions/stream)")
    q.add_argument("--max-trials", type=int, help=trials_help)
    q.add_argument("--timeout", type=float, help="stop after this many seconds (the log stays resumable)")
    q.add_argument("--log", help="JSON trial log (default <workdir>/bisect-<mode>.json)")
    q.add_argument("--resume", action="store_true", help="reuse the finished trials of --log")
    q.add_argument("--workdir", help="where traces, trial reports and the log go (default reports/bisect-<mode>-<time>)")
    q.add_argument("--report", help="final HTML report (default <workdir>/bisect-<mode>.html)")
    q.add_argument("--trial-reports", action="store_true", help="a parity report for every trial (slow)")
    q.add_argument("--keep-traces", action="store_true", help="keep every trial's traces/dumps")
    q.add_argument("--progress", action="store_true", default=None, help="progress lines even when not a TTY")
    q.add_argument("--json", help="also write the result as JSON")
    return q


def _profile_parent() -> argparse.ArgumentParser:
    q = argparse.ArgumentParser(add_help=False)
    q.add_argument("--switch", action="append", help="NAME=VALUE switch (repeatable; on top of --profile)")
    q.add_argument("--pyproject", help="pyproject.toml with user profiles (default ./pyproject.toml)")
    return q


def add_bisect_args(p: argparse.ArgumentParser) -> None:
    """``parity bisect {switches,precision,git}``."""
    sub = p.add_subparsers(dest="bisect_cmd", required=True)
    in_process = [model_parent("tiny"), _profile_parent(), local_parent(), onnx_parent(),
                  _search_parent("bound on the trials (default: ddmin's worst case)")]

    s = sub.add_parser("switches", parents=in_process + [fault_parent()],
                       help="which switch(es) of a failing profile break parity (delta debugging)")
    s.add_argument("--profile", help="failing profile (built-in or [tool.parity.profiles] of --pyproject)")
    s.set_defaults(bisect_func=_cmd_switches)

    pr = sub.add_parser("precision", parents=in_process,
                        help="which components must stay fp32 for a reduced-precision profile to pass")
    pr.add_argument("--profile", help="failing reduced-precision profile")
    pr.add_argument("--fine", action="store_true", help="refine each chosen block into block<i>.adaln/attn/ff")
    pr.add_argument("--name", help="name of the profile to paste (default <profile>-fp32-islands)")
    pr.set_defaults(bisect_func=_cmd_precision)

    g = sub.add_parser("git", parents=[model_parent("tiny"), fault_parent(), map_parent(), onnx_parent(),
                                       _search_parent("bound on the commits run (default: every commit in the range)")],
                       help="which commit broke parity (git bisect run with a frozen reference)")
    g.add_argument("--good", required=True, help="a revision that passes")
    g.add_argument("--bad", required=True, help="a later revision that fails")
    g.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    g.add_argument("--cmd", help="shell command that writes a dump at {out} (also {ref}, {bundle}); run in a "
                                 "worktree of each commit. Without it: the commit's candidate package in-process")
    g.add_argument("--profile",
                   help=f"candidate profile for the in-process mode (default {GIT_DEFAULT_PROFILE}; onnx-cpu with "
                        f"--onnx-estimator)")
    g.add_argument("--ref-trace", action="append", help="frozen reference trace(s) to use instead of computing one")
    g.add_argument("--trial-timeout", type=float, default=600.0, help="seconds per commit before it is skipped")
    g.add_argument("--no-verify", action="store_true", help="do not check first that --bad fails and --good passes")
    g.set_defaults(bisect_func=_cmd_git)


def _mode(args):
    """The run mode of ``--streaming`` / ``--session streaming`` and its options."""
    from ..args import run_mode_from_args

    return run_mode_from_args(args)


def _spec(args):
    """The comparison spec of the search options, as ``parity run`` builds it (policy, ``--floor`` /
    ``--no-floor``): trials are judged with the floor where one is measured."""
    from ..judge.spec import ComparisonSpec

    return ComparisonSpec.from_args(args, log=lambda m: print(f"parity bisect: {m}", file=sys.stderr, flush=True))


def _settings(args) -> SearchSettings:
    return SearchSettings(streaming=args.streaming, mode=_mode(args), policy=args.policy, spec=_spec(args),
                          local=not args.no_local,
                          max_trials=args.max_trials, timeout=args.timeout, workdir=args.workdir, log=args.log,
                          resume=args.resume, report=args.report, progress=args.progress,
                          trial_reports=args.trial_reports, keep_traces=args.keep_traces)


def print_result(res: BisectResult, args) -> int:
    head = headline_text(res.headline, 200)
    if res.mode == "git":
        if res.found:
            c = res.culprit
            line = f"first bad commit {c['sha'][:12]} \"{c['subject']}\""
        else:
            line = res.message
    elif res.mode == "switches":
        line = f"culprit: {' + '.join(res.culprit)}" if res.culprit else res.message
    else:
        line = f"keep in fp32: {', '.join(res.culprit)}" if res.culprit else res.message
    extra = ""
    if res.mode == "git" and res.skipped:
        extra = "; skipped: " + ", ".join(f"{s['sha'][:10]} ({s['reason'][:60]})" for s in res.skipped)
    print(f"parity bisect {res.mode}: {res.status.upper()}: {line}"
          + (f" [{head}]" if head else "") + f"; {res.trials} trial(s)"
          + (f" (bound {res.bound})" if res.bound else "") + f", {res.seconds:.1f} s{extra}")
    if res.found and res.message and res.mode != "git":
        print(f"  {res.message}")
    if res.profile_toml:
        print("\n" + res.profile_toml)
    if res.trial_report:
        print(f"trial report: {res.trial_report}")
    if res.report:
        print(f"report: {res.report}")
    if res.log:
        print(f"log: {res.log}")
    if getattr(args, "json", None):
        atomic_write(Path(args.json), json.dumps(res.to_dict(), indent=1))
    return res.exit_code


def _cmd_switches(args) -> int:
    if args.device != "cpu":
        raise BisectUsageError("bisect switches: the device is one of the profile's switches (device = \"cuda\" in "
                               "the profile, or --switch device=cuda), not a --device option")
    start, overrides = _start(args)
    model = ModelSpec.from_args(args).load()
    if overrides:
        start, _ = resolve_switches(start, args.pyproject, args.fault or (), overrides)
        faults = ()
    else:
        faults = args.fault or ()
    res = bisect_switches(model, start, args.bundle, pyproject=args.pyproject, faults=faults, settings=_settings(args))
    return print_result(res, args)


def _cmd_precision(args) -> int:
    start, overrides = _start(args)
    model = ModelSpec.from_args(args).load()
    if overrides:
        start, _ = resolve_switches(start, args.pyproject, (), overrides)
    res = bisect_precision(model, start, args.bundle, pyproject=args.pyproject, name=args.name, fine=args.fine,
                           device=args.device, settings=_settings(args))
    return print_result(res, args)


def _cmd_git(args) -> int:
    from ..aliases import parse_maps

    onnx = OnnxOptions.from_args(args)
    if onnx and args.cmd:
        raise BisectUsageError("--onnx-estimator / --require-provider apply to the in-process mode (the commit's "
                               "candidate package); with --cmd your command decides what runs")
    onnx.overrides()  # a missing file or an unknown provider: one line before the bisection starts
    profile = args.profile or (DEFAULT_PROFILE if onnx.estimator else GIT_DEFAULT_PROFILE)
    cfg = GitBisectConfig(cmd=args.cmd, profile=profile, faults=args.fault or (), model=ModelSpec.from_args(args),
                          onnx=onnx,
                          device=args.device, bundles=args.bundle, ref_traces=args.ref_trace, streaming=args.streaming,
                          mode=_mode(args), policy=args.policy, spec=_spec(args), maps=parse_maps(args.map), max_trials=args.max_trials,
                          timeout=args.timeout, trial_timeout=args.trial_timeout, workdir=args.workdir, log=args.log,
                          resume=args.resume, verify=not args.no_verify, keep_traces=args.keep_traces,
                          report=args.report, progress=args.progress, trial_reports=args.trial_reports)
    try:
        res = bisect_git(args.repo, args.good, args.bad, cfg)
    except KeyboardInterrupt:
        print("parity bisect git: interrupted; the repository was restored (git bisect reset, worktrees removed); "
              "rerun with --resume --log LOG to continue", file=sys.stderr)
        raise
    return print_result(res, args)


def bisect_command(args) -> int:
    """Entry point of ``parity bisect`` (called by :func:`parity.cli.cmd_bisect`). Its outputs are checked
    before the first trial."""
    from ..outputs import Output, is_regular_output, prepare_outputs

    prepare_outputs([Output("--report", args.report), Output("--json", args.json), Output("--log", args.log),
                     Output("--workdir", args.workdir, "dir")], prog="parity bisect")
    if args.log and not is_regular_output(args.log):
        raise BisectUsageError(f"--log {args.log}: not a regular file: the trial log is rewritten after every "
                               f"trial and read back by --resume (give a file name, or leave --log out for "
                               f"<workdir>/bisect-<mode>.json)")
    return int(args.bisect_func(args))
