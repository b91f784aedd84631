"""The session layer: what the CLI, the pytest plugin and the bisector share.

* :class:`ModelSpec`: which reference model (a built-in preset or a released model directory, and the
  shared noise file); it loads the model and says how a child ``parity dump`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """Which reference model: a built-in ``preset``, or a released ``model_dir`` (which wins), with an
    optional shared ``noise`` file (``parity noise export``; default: upstream's recipe)."""

    preset: str | None = "tiny"
    model_dir: str | None = None
    noise: str | None = None

    @classmethod
    def from_args(cls, args) -> "ModelSpec":
        model_dir = getattr(args, "model_dir", None)
        return cls(None if model_dir else getattr(args, "preset", None), model_dir, getattr(args, "noise", None))

    def load(self):
        from reference.model import Token2Wav
        from reference.noise import SharedNoise

        noise = SharedNoise.load(self.noise) if self.noise else None
        return Token2Wav.load(None if self.model_dir else self.preset, self.model_dir, noise)

    def cli_args(self) -> list[str]:
        """The same model for a child ``parity dump`` (absolute paths: the child runs elsewhere)."""
        argv = ["--model-dir", str(Path(self.model_dir).resolve())] if self.model_dir else ["--preset", str(self.preset)]
        if self.noise:
            argv += ["--noise", str(Path(self.noise).resolve())]
        return argv
