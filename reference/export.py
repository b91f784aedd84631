"""Write a model directory in the released layout and key format (``cosyvoice3.yaml``, ``flow.pt`` /
``hift.pt`` or ``.safetensors``), so the real loading code is exercised on checkpoints we generate."""

from __future__ import annotations

from pathlib import Path

import torch

from .hift import hift_state_dict_upstream
from .model import Token2Wav

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"
_YAML = {"tiny": "tiny.yaml", "cosyvoice3-0.5b": "cosyvoice3.yaml"}


def export_model_dir(preset_name: str, out: str | Path, fmt: str = "pt") -> Path:
    """A preset as a model directory (its yaml from ``fixtures/configs``)."""
    if preset_name not in _YAML:
        raise ValueError(f"no yaml for preset {preset_name!r}")
    return write_model_dir(Token2Wav.from_preset(preset_name), (CONFIGS / _YAML[preset_name]).read_text(), out, fmt)


def write_model_dir(model: Token2Wav, yaml_text: str, out: str | Path, fmt: str = "pt") -> Path:
    """Write ``model``'s weights in the upstream key format next to ``yaml_text`` (which must describe the
    same configuration: loading the directory builds the modules from the yaml)."""
    from .files import output_file, write_output  # the one way to write a file (atomic, streams)

    if fmt not in ("pt", "safetensors"):
        raise ValueError(f"format must be pt or safetensors, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_output(out / "cosyvoice3.yaml", yaml_text)
    flow_sd = {k: v.detach().clone().contiguous() for k, v in model.flow.state_dict().items()}
    hift_sd = {k: v.contiguous() for k, v in hift_state_dict_upstream(model.hift).items()}
    for name, sd in (("flow", flow_sd), ("hift", hift_sd)):
        if fmt == "pt":
            with output_file(out / f"{name}.pt") as tmp, open(tmp, "wb") as f:
                torch.save(sd, f)  # through a file object: a full disk is an OSError naming the file
        else:
            from safetensors.torch import save as safetensors_bytes

            write_output(out / f"{name}.safetensors", safetensors_bytes(sd))
    return out
