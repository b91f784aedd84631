"""``--onnx-estimator FILE`` and ``--require-provider NAME`` (CLI, bisect, pytest plugin) as switch overrides.

Both are switches of the candidate (:class:`candidate.switches.Switches`: ``estimator_backend`` and the
``onnxruntime`` backend's options ``file`` and ``require_provider``); this module turns the two options into those
overrides, once, for every command:
they go on top of the candidate's profile through :meth:`parity.harness.Harness.candidate` (``overrides``).
Without ``--profile`` the profile is ``onnx-cpu`` (the CPU provider, all graph optimizations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reference.errors import InputError

DEFAULT_PROFILE = "onnx-cpu"
PROVIDER_NAMES = ("cpu", "cuda", "tensorrt")


@dataclass(frozen=True)
class OnnxOptions:
    """The two options as given (``estimator``: a path; ``require_provider``: cpu, cuda, tensorrt or an ONNX
    Runtime provider name such as ``CUDAExecutionProvider``)."""

    estimator: str | None = None
    require_provider: str | None = None

    @classmethod
    def from_args(cls, args) -> "OnnxOptions":
        return cls(getattr(args, "onnx_estimator", None) or None, getattr(args, "require_provider", None) or None)

    def __bool__(self) -> bool:
        return bool(self.estimator or self.require_provider)

    def overrides(self) -> dict:
        """The switch overrides (``{}`` when neither option is given). The file must exist; the provider must
        be one ONNX Runtime knows by that name. Both raise a one-line :class:`InputError` naming the value."""
        out: dict = {}
        options: dict = {}
        if self.estimator:
            path = Path(self.estimator).expanduser()
            if not path.is_file():
                raise InputError(f"{path}: ONNX file not found (--onnx-estimator)")
            out["estimator_backend"] = "onnxruntime"
            options["file"] = str(path.resolve())
        if self.require_provider:
            name = self.require_provider
            if name not in PROVIDER_NAMES and not name.endswith("ExecutionProvider"):
                raise InputError(f"--require-provider {name!r}: expected one of {', '.join(PROVIDER_NAMES)} or an "
                                 f"ONNX Runtime provider name (e.g. CUDAExecutionProvider)")
            options["require_provider"] = name
        if options:
            out["estimator_options"] = tuple(sorted(options.items()))  # hashable: part of a candidate's cache key
        return out

    def profiles(self, profiles: list[str] | None, default: list[str]) -> list[str]:
        """The profiles to run: the given ones, else ``onnx-cpu`` with ``--onnx-estimator`` (a user's file), else
        ``default``."""
        if profiles:
            return list(profiles)
        return [DEFAULT_PROFILE] if self.estimator else list(default)

    def cli_args(self) -> list[str]:
        """The same options for a child ``parity dump`` (absolute path: the child runs elsewhere)."""
        argv: list[str] = []
        if self.estimator:
            argv += ["--onnx-estimator", str(Path(self.estimator).expanduser().resolve())]
        if self.require_provider:
            argv += ["--require-provider", self.require_provider]
        return argv


def name_suffix(overrides: dict) -> str:
    """What the overrides add to a candidate's name (case names, reports): ``+<file stem>`` for a user's ONNX
    file, ``+require-<provider>``."""
    out = ""
    options = dict(overrides.get("estimator_options") or ())
    if options.get("file"):
        out += f"+{Path(options['file']).stem}"
    if options.get("require_provider"):
        out += f"+require-{options['require_provider']}"
    return out


def check_overrides(sw, profile: str | None, overrides: dict) -> None:
    """``--require-provider`` needs the estimator under ONNX Runtime (an onnx-* profile or ``--onnx-estimator``):
    on a PyTorch estimator it would be silently meaningless. ``sw``: the profile's switches, before the
    overrides."""
    backend = overrides.get("estimator_backend", sw.estimator_backend)
    if dict(overrides.get("estimator_options") or ()).get("require_provider") and backend != "onnxruntime":
        raise InputError(f"--require-provider needs an ONNX Runtime profile (onnx-*) or --onnx-estimator FILE; "
                         f"profile {profile or 'fp32-explicit'!r} runs the estimator in PyTorch")
