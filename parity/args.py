"""Command-line options shared by several commands, declared once as argparse parent parsers
(``argparse.ArgumentParser(parents=[...])``): ``parity`` and its subcommands, ``parity bisect``,
``parity-report``."""

from __future__ import annotations

import argparse

from .stages import KEY_STAGES, SESSION_KEY_STAGES


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_parent(default_preset: str | None = None) -> argparse.ArgumentParser:
    """``--preset`` | ``--model-dir`` (required unless there is a default preset), ``--noise``, ``--device``."""
    p = _parent()
    g = p.add_mutually_exclusive_group(required=default_preset is None)
    g.add_argument("--preset", default=default_preset, help="built-in model: tiny | cosyvoice3-0.5b (seeded weights)")
    g.add_argument("--model-dir", help="released layout: cosyvoice3.yaml + flow.pt/.safetensors + hift.pt/.safetensors")
    p.add_argument("--noise", help="shared noise file (parity noise export); default: rebuilt by upstream's recipe")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p


def streaming_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--streaming", action="store_true",
                   help="single-call streaming: ONE token2wav call with the static chunk attention mask "
                        "(static_chunk_size frames, 50 released); the chunked loop servers run is --session streaming")
    return p


def session_parent() -> argparse.ArgumentParser:
    """``--session single|streaming`` and the streaming session's options (:class:`reference.session.SessionOptions`;
    unset = upstream's value from the model config)."""
    from reference.session import FINAL_MASKS, HOP_STATES

    p = _parent()
    g = p.add_argument_group("streaming session (upstream's chunked token2wav loop: --session streaming)")
    g.add_argument("--session", choices=["single", "streaming"], default=None,
                   help="single: one token2wav call (default; --streaming adds the chunk mask); streaming: upstream's "
                        "session loop (chunks of 25, 50, 100 tokens + lookahead, the flow re-run on all tokens so far, "
                        "HiFT on the cumulative mel, a final call), stages chunk{c}.*, stream.mel, stream.audio")
    g.add_argument("--initial-hop", type=int, metavar="N", help="tokens per chunk at the start (default: the yaml's "
                                                                "chunk_size, 25 released)")
    g.add_argument("--max-hop", type=int, metavar="N", help="largest hop (default 4 x initial)")
    g.add_argument("--growth", type=int, metavar="N", help="hop multiplier after each chunk (default 2; 1 = fixed hop)")
    g.add_argument("--final-mask", choices=list(FINAL_MASKS),
                   help="the final call's flow: upstream = without the chunk mask (as upstream does), streaming = with it")
    g.add_argument("--hop-state", choices=list(HOP_STATES),
                   help="fresh: the hop starts at --initial-hop; carried: the hop a previous request left on the "
                        "instance (upstream keeps it across requests; --carried-hop, default the max hop)")
    g.add_argument("--carried-hop", type=int, metavar="N", help="the hop a carried request starts from")
    g.add_argument("--step-chunks", metavar="LIST",
                   help="which calls record the flow's stages (ODE steps): first,last (default), all, none, or indices "
                        "(-1 = the final call)")
    return p


def capture_parent() -> argparse.ArgumentParser:
    """What a candidate run captures and must have run: ``--stages``, ``--require-kernel``."""
    p = _parent()
    p.add_argument("--stages", help="stage globs to capture: 'a,b' only these, '+a' defaults plus a, 'all'")
    p.add_argument("--require-kernel", help="fail unless every candidate attention call ran this kernel (flash, "
                                            "math, ...)")
    return p


def fault_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--fault", action="append", help="inject a catalogue fault into the candidate (parity faults; "
                                                    "repeatable)")
    return p


def policy_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--policy", help="tolerance policy TOML (added on top of the defaults)")
    return p


def map_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--map", action="append", help="extra alias NAME=CANONICAL for foreign dumps (repeatable)")
    return p


def trim_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--allow-trim", action="store_true", help="trim length mismatches instead of failing them")
    return p


def local_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--no-local", action="store_true", help="skip the step-local (teacher-forced) errors: faster, "
                                                           "but a vocoder_local_mismatch then goes unseen")
    return p


def output_parent() -> argparse.ArgumentParser:
    """Where a comparison goes besides the terminal: ``--json``, ``--report``, ``-v``."""
    p = _parent()
    p.add_argument("--json", help="write the result as JSON")
    p.add_argument("--report", help="write the HTML report here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def floor_parent() -> argparse.ArgumentParser:
    """Which floor judges: ``--floor FILE`` (a floor from ``parity floor``), ``--no-floor`` (flat tolerances only)."""
    p = _parent()
    g = p.add_mutually_exclusive_group()
    g.add_argument("--floor", action="append", metavar="FILE",
                   help="noise floor or precision envelope to judge against (parity floor --out FILE); default: the "
                        "reference's own floor from the shipped floors, the cache, or computed")
    g.add_argument("--no-floor", action="store_true",
                   help="judge every stage by the flat tolerances of the policy (no measured floor)")
    p.add_argument("--precision-layout", metavar="PROFILE",
                   help="the reduced-precision layout of a foreign dump, as the candidate profile that has it "
                        "(fp16-flow, fp16-all, bf16-flow, ...): its envelope judges; default: read from the dump's "
                        "dtypes metadata or the dtypes its stages are stored in")
    return p


def require_parent() -> argparse.ArgumentParser:
    """``--require-stages`` (flow_mel and audio) and ``--require-stage NAME``: stages the candidate must hold;
    one that is absent is a failure (exit 1). Without them a candidate lacking flow_mel or audio passes with a
    warning in the headline."""
    p = _parent()
    p.add_argument("--require-stages", action="store_true",
                   help=f"fail (exit 1) when the candidate lacks {' or '.join(KEY_STAGES)} (a streaming session: "
                        f"{' or '.join(SESSION_KEY_STAGES.values())}; without it: a warning)")
    p.add_argument("--require-stage", action="append", metavar="NAME",
                   help="fail (exit 1) when the candidate lacks this stage (repeatable)")
    return p


def required_stages(args) -> list[str]:
    """The stages ``--require-stages``/``--require-stage`` ask for, in order, without repeats."""
    names = list(KEY_STAGES) if getattr(args, "require_stages", False) else []
    names += list(getattr(args, "require_stage", None) or [])
    return list(dict.fromkeys(names))


def pcm_parent() -> argparse.ArgumentParser:
    """``--no-pcm-scale``: integer PCM audio is a failure to fix instead of being scaled to [-1, 1]."""
    p = _parent()
    p.add_argument("--no-pcm-scale", action="store_true",
                   help="do not scale integer PCM audio (int16/int32) to [-1, 1]: report it as a failure instead")
    return p


def onnx_parent() -> argparse.ArgumentParser:
    """The estimator under ONNX Runtime: ``--onnx-estimator FILE``, ``--require-provider NAME``. They become
    switch overrides of the candidate (:meth:`parity.harness.Harness.candidate`, ``overrides``), on top of its profile."""
    p = _parent()
    p.add_argument("--onnx-estimator", metavar="FILE",
                   help="run this exported DiT estimator (x, mask, mu, t, spks, cond -> estimator_out) under ONNX "
                        "Runtime in the candidate (default profile onnx-cpu)")
    p.add_argument("--require-provider", metavar="NAME",
                   help="the ONNX Runtime session must run on this provider (cpu, cuda, tensorrt); a fallback to "
                        "another is a failing finding (required_provider_missing)")
    return p


def port_parent() -> argparse.ArgumentParser:
    """``--port-noise``: what noise a port under test (``--profile <port>``, :mod:`parity.ports`) is given."""
    from .ports import NOISE_MODES

    p = _parent()
    p.add_argument("--port-noise", choices=list(NOISE_MODES), default="shared",
                   help="a port profile (parity profiles): shared = the reference's flow noise and HiFT noise are "
                        "injected into the port (default), flow-only = only the flow's rand_noise (what a port's "
                        "own loader takes), port = the port draws all its noise itself")
    return p


# ---------------------------------------------------------------------------------------------
# the run mode of the options: one call (offline, --streaming, --no-finalize) or the streaming session


def run_mode_from_args(args):
    """The :class:`parity.capture.runner.RunMode` of a command's options: ``--session streaming`` and its options
    (:func:`session_parent`), else one call with ``--streaming`` / ``--no-finalize``. Session options without
    ``--session streaming``, or ``--no-finalize`` with it, are an error (exit 2)."""
    from reference.errors import InputError
    from reference.session import SessionOptions

    from .capture.runner import RunMode

    given = {k: getattr(args, k, None) for k in ("initial_hop", "max_hop", "growth", "final_mask", "hop_state",
                                                 "carried_hop", "step_chunks")}
    if (getattr(args, "session", None) or "single") != "streaming":
        used = [k.replace("_", "-") for k, v in given.items() if v is not None]
        if used:
            raise InputError(f"--{', --'.join(used)}: session options need --session streaming")
        return RunMode(streaming=bool(getattr(args, "streaming", False)),
                       finalize=not getattr(args, "no_finalize", False))
    if getattr(args, "no_finalize", False):
        raise InputError("--no-finalize has no meaning in a streaming session (every call but the last is "
                         "non-final; the loop decides)")
    kw = {k: v for k, v in given.items() if v is not None}
    if "step_chunks" in kw:
        kw["step_chunks"] = parse_step_chunks(kw["step_chunks"])
    return RunMode.streaming_session(SessionOptions(**kw))


def parse_step_chunks(spec: str) -> tuple:
    """``first,last`` | ``all`` | ``0,2,-1`` | ``none`` -> the ``step_chunks`` tuple."""
    from reference.errors import InputError

    out: list = []
    for s in (x.strip() for x in str(spec).split(",")):
        if not s or s == "none":
            continue
        if s in ("first", "last", "all"):
            out.append(s)
            continue
        try:
            out.append(int(s))
        except ValueError:
            raise InputError(f"--step-chunks {spec!r}: expected chunk indices, first, last, all or none") from None
    return tuple(out)


def run_mode_cli_args(mode) -> list[str]:
    """The ``parity dump`` arguments of ``mode`` (for a child process: ``bisect git``)."""
    if mode.session is None:
        return (["--streaming"] if mode.streaming else []) + ([] if mode.finalize else ["--no-finalize"])
    o = mode.session
    argv = ["--session", "streaming"]
    for flag, v, default in (("--initial-hop", o.initial_hop, None), ("--max-hop", o.max_hop, None),
                             ("--growth", o.growth, 2), ("--final-mask", o.final_mask, "upstream"),
                             ("--hop-state", o.hop_state, "fresh"), ("--carried-hop", o.carried_hop, None)):
        if v != default:
            argv += [flag, str(v)]
    steps = (o.step_chunks,) if isinstance(o.step_chunks, (str, int)) else tuple(o.step_chunks)
    if steps != ("first", "last"):
        argv += ["--step-chunks", ",".join(str(s) for s in steps) or "none"]
    return argv
