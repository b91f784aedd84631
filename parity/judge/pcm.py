"""Integer PCM audio in a dump (int16 / int32 samples where the pipeline produces float audio in [-1, 1]):
found before the comparison and, unless refused, scaled to float with the scale named as a normalisation,
so it is judged as audio and not as a -90 dB "vocoder divergence" with a DC offset in the hundreds.

Full scale is the dtype's: int16 / 32768, int32 / 2147483648 (left-justified 24-bit audio in 32-bit words
is the same scale; right-justified 24-bit samples would look 256x too quiet, and the finding says so).
"""

from __future__ import annotations

import dataclasses

import torch

from ..ingest import Loaded
from ..result import Finding
from ..stages import position

AUDIO_STAGES = ("audio_preclamp", "audio")
FULL_SCALE = {torch.int16: 32768, torch.int32: 2147483648}
SIDE_NAME = {"ref": "reference", "cand": "candidate"}


@dataclasses.dataclass(frozen=True)
class IntegerAudio:
    side: str  # ref | cand
    stage: str
    dtype: str
    scale: int  # full scale: the divisor
    quiet: float | None = None  # scaled peak / the other side's peak, when the other side holds float audio

    def what(self) -> str:
        return f"the {SIDE_NAME[self.side]}'s {self.stage} is integer PCM ({self.dtype})"

    def quiet_hint(self) -> str:
        if self.quiet is None or self.quiet >= 1 / 64:
            return ""
        return (f"; scaled, its peak is {self.quiet:.3g} of the other side's: 24-bit samples in 32-bit words? "
                f"(full scale 8388608)" if self.dtype == "int32" else
                f"; scaled, its peak is {self.quiet:.3g} of the other side's")


def find_integer_audio(ref: Loaded, cand: Loaded) -> list[IntegerAudio]:
    """The audio stages stored as integer PCM, on either side."""
    out = []
    for side, tr, other in (("ref", ref, cand), ("cand", cand, ref)):
        for name in AUDIO_STAGES:
            t = tr.tensors.get(name)
            if t is None or t.dtype not in FULL_SCALE:
                continue
            scale = FULL_SCALE[t.dtype]
            o = other.tensors.get(name)
            quiet = None
            if o is not None and o.is_floating_point() and o.numel() and t.numel():
                po = float(o.detach().double().abs().max())
                pt = float(t.detach().double().abs().max()) / scale
                quiet = pt / po if po > 0 else None
            out.append(IntegerAudio(side, name, str(t.dtype).replace("torch.", ""), scale, quiet))
    return out


def scale_integer_audio(ref: Loaded, cand: Loaded, found: list[IntegerAudio]) -> tuple[Loaded, Loaded, list[Finding]]:
    """Copies of the two traces with each integer audio stage divided by its full scale (float32), a
    normalisation on each, and one warning finding per stage that says what was done."""
    sides = {"ref": ref, "cand": cand}
    findings = []
    for ia in found:
        tr = sides[ia.side]
        scaled = (tr.tensors[ia.stage].detach().double() / ia.scale).to(torch.float32)
        note = {"stage": ia.stage, "kind": "pcm-scale",
                "detail": f"{SIDE_NAME[ia.side]} {ia.stage} stored as {ia.dtype} PCM; divided by {ia.scale} "
                          f"(full scale) to float in [-1, 1)"}
        sides[ia.side] = dataclasses.replace(tr, tensors={**tr.tensors, ia.stage: scaled},
                                             normalisations=tr.normalisations + [note])
        findings.append(Finding("audio_integer_pcm", ia.stage, "warning",
                                f"{ia.what()}: scaled by 1/{ia.scale} to compare it as float audio (a "
                                f"normalisation; --no-pcm-scale refuses it){ia.quiet_hint()}",
                                {"key": "dtype", "side": ia.side, "dtype": ia.dtype, "scale": ia.scale,
                                 "peak_ratio": ia.quiet}, list(position(ia.stage))))
    return sides["ref"], sides["cand"], findings


def refusal_problem(ia: IntegerAudio) -> dict:
    """The stage problem of an integer audio stage that was not to be scaled (``--no-pcm-scale``)."""
    return {"code": "audio_integer_pcm",
            "message": f"{ia.what()}, not float audio in [-1, 1]: scale it by 1/{ia.scale} in the dump, or drop "
                       f"--no-pcm-scale to let parity do it{ia.quiet_hint()}"}
