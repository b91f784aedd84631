"""Command-line options shared by several commands, as argparse parent parsers (declared once)."""

from __future__ import annotations

import argparse


def model_parent(default_preset: str | None = None) -> argparse.ArgumentParser:
    """``--preset`` | ``--model-dir`` (required unless there is a default preset), ``--noise``, ``--device``."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_mutually_exclusive_group(required=default_preset is None)
    g.add_argument("--preset", default=default_preset, help="built-in model: tiny | cosyvoice3-0.5b (seeded weights)")
    g.add_argument("--model-dir", help="released layout: cosyvoice3.yaml + flow.pt/.safetensors + hift.pt/.safetensors")
    p.add_argument("--noise", help="shared noise file (parity noise export); default: rebuilt by upstream's recipe")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p
