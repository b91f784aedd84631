"""Command-line options shared by several commands, declared once as argparse parent parsers
(``argparse.ArgumentParser(parents=[...])``): ``parity`` and its subcommands, ``parity bisect``,
``parity-report``."""

from __future__ import annotations

import argparse

from .stages import KEY_STAGES


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
    p.add_argument("--streaming", action="store_true", help="streaming: static chunk attention mask (static_chunk_size frames, 50 released)")
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


def require_parent() -> argparse.ArgumentParser:
    """``--require-stages`` (flow_mel and audio) and ``--require-stage NAME``: stages the candidate must hold;
    one that is absent is a failure (exit 1). Without them a candidate lacking flow_mel or audio passes with a
    warning in the headline."""
    p = _parent()
    p.add_argument("--require-stages", action="store_true",
                   help=f"fail (exit 1) when the candidate lacks {' or '.join(KEY_STAGES)} (without it: a warning)")
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
