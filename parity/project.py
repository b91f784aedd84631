"""The project's ``[tool.parity]`` table, read in one place with one error policy, and the project defaults
(fixture bundles, the shipped profile lists derived from the one registry).

``[tool.parity]`` keys (all optional)::

    preset = "tiny"                 # model for the pytest plugin (or model_dir = "path")
    suite_profiles = ["fp32-sdpa"]  # profiles the parity suite runs (default: every shipped CPU profile, and
                                    # the onnx-* ones when the [onnx] extra is installed)
    device = "cpu"
    report = "reports/ci.html"      # pytest session report
    policy = "my-tolerances.toml"   # extra tolerance policy, relative to the pyproject
    bundles = ["fixtures/bundles/short.safetensors"]
    onnx_estimator = "ckpt/flow.decoder.estimator.fp32.onnx"  # the suite's candidate runs this file (relative
                                    # to the pyproject) under ONNX Runtime; default profile onnx-cpu
    require_provider = "cuda"       # the ONNX Runtime session must run on this provider
    [tool.parity.tolerances]        # [[tool.parity.tolerances.rule]] tables, as in a policy file
    [tool.parity.profiles.NAME]     # user-defined candidate profiles (candidate.switches)

Error policy: no pyproject (or no ``[tool.parity]``) is an empty configuration; a pyproject that cannot be
read or parsed, or a key of the wrong type, is an :class:`reference.errors.InputError` naming the file and
the key (exit code 2 in the CLI, a usage error in pytest). Keys this reader does not know are kept in
``raw`` for other readers.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reference.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLE_DIR = PROJECT_ROOT / "fixtures" / "bundles"


SESSION_BUNDLE_DIR = PROJECT_ROOT / "fixtures" / "sessions"


def default_bundles() -> list[Path]:
    """The shipped fixture bundles (``fixtures/bundles/*.safetensors``), sorted."""
    return sorted(BUNDLE_DIR.glob("*.safetensors"))


def default_session_bundles() -> list[Path]:
    """The shipped streaming-session bundles (``fixtures/sessions/*.safetensors``: long enough for three chunks
    and the final call), sorted."""
    return sorted(SESSION_BUNDLE_DIR.glob("*.safetensors"))


@dataclass(frozen=True)
class ProjectConfig:
    """``[tool.parity]`` of one pyproject.toml (``path`` None: there was none)."""

    path: Path | None = None
    preset: str | None = None
    model_dir: str | None = None
    suite_profiles: list[str] | None = None
    device: str | None = None
    report: str | None = None
    policy: Path | None = None  # resolved against the pyproject's directory
    bundles: list[str] = field(default_factory=list)
    onnx_estimator: Path | None = None  # resolved against the pyproject's directory
    require_provider: str | None = None
    tolerances: list[dict] = field(default_factory=list)  # [[tool.parity.tolerances.rule]]
    profiles: dict[str, dict] = field(default_factory=dict)  # [tool.parity.profiles.*]
    raw: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.path.name if self.path else 'pyproject.toml'} [tool.parity]"


def _typed(tool: dict, key: str, kind, path: Path, what: str):
    v = tool.get(key)
    if v is None:
        return None
    ok = isinstance(v, kind) and (kind is not list or all(isinstance(x, str) for x in v))
    if not ok:
        raise InputError(f"{path}: [tool.parity] {key} must be {what}, got {type(v).__name__} {v!r}")
    return v


def read_project(pyproject: str | Path | None = None) -> ProjectConfig:
    """``[tool.parity]`` of ``pyproject`` (default: ./pyproject.toml)."""
    path = Path(pyproject) if pyproject else Path.cwd() / "pyproject.toml"
    if not path.exists():
        return ProjectConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    tool = data.get("tool", {}).get("parity", {})
    if not isinstance(tool, dict):
        raise InputError(f"{path}: [tool.parity] must be a table")
    tol = tool.get("tolerances", {})
    if not isinstance(tol, dict) or not isinstance(tol.get("rule", []), list):
        raise InputError(f"{path}: [tool.parity.tolerances] must hold [[tool.parity.tolerances.rule]] tables")
    profiles = tool.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise InputError(f"{path}: [tool.parity.profiles] must hold one table per profile")
    policy = _typed(tool, "policy", str, path, "a path (string)")
    onnx_estimator = _typed(tool, "onnx_estimator", str, path, "a path (string)")
    return ProjectConfig(path=path, preset=_typed(tool, "preset", str, path, "a preset name"),
                         model_dir=_typed(tool, "model_dir", str, path, "a path (string)"),
                         suite_profiles=_typed(tool, "suite_profiles", list, path, "a list of profile names"),
                         device=_typed(tool, "device", str, path, "cpu or cuda"),
                         report=_typed(tool, "report", str, path, "a path (string)"),
                         policy=(path.parent / policy).resolve() if policy else None,
                         bundles=list(_typed(tool, "bundles", list, path, "a list of paths") or []),
                         onnx_estimator=(path.parent / onnx_estimator).resolve() if onnx_estimator else None,
                         require_provider=_typed(tool, "require_provider", str, path, "a provider name (string)"),
                         tolerances=list(tol.get("rule", [])), profiles=dict(profiles), raw=dict(tool))


# ---------------------------------------------------------------------------------------------
# candidate profiles: the shipped registry (candidate.switches) plus the project's [tool.parity.profiles]

def project_profiles(pyproject: str | Path | None = None) -> dict[str, dict]:
    """Every profile a project can name: the shipped ones and its ``[tool.parity.profiles]`` tables."""
    from candidate.switches import all_profiles

    return all_profiles(read_project(pyproject).profiles)


def profile_switches(profile: str | None = None, faults=(), pyproject: str | Path | None = None,
                     **overrides):
    """The :class:`candidate.switches.Switches` of ``profile`` (shipped, a port under test, or the project's own;
    None: the defaults) plus ``faults`` and switch ``overrides``: how every command resolves a profile name."""
    from candidate.switches import switches_from

    from .ports import port_profiles

    return switches_from(profile, faults, {**port_profiles(), **read_project(pyproject).profiles}, **overrides)


def shipped_profiles(device: str | None = "cpu", include_reference: bool = False,
                     include_onnx: bool = False) -> list[str]:
    """The shipped candidate profiles (:data:`candidate.switches.PROFILES`, the one registry) that run on
    ``device`` (None: any), in registry order; the reference-equivalent one (no switch differs from the
    defaults: the reference run again) only with ``include_reference``; the ONNX Runtime estimator profiles
    (an optional extra, some providers GPU-only) only with ``include_onnx``."""
    from candidate.switches import PROFILES, Switches

    out = []
    for name, spec in PROFILES.items():
        sw = Switches(**spec)
        if sw.estimator_backend != "torch" and not include_onnx:  # an optional backend (ONNX Runtime)
            continue
        if (include_reference or sw.differences()) and (device is None or sw.device == device):
            out.append(name)
    return out


def suite_profiles(device: str | None = "cpu") -> list[str]:
    """The parity suite's default profiles: the shipped profiles for ``device`` and, when the ``[onnx]`` extra is
    installed (:func:`candidate.backends.onnx_graph.onnx_available` is None), the ONNX Runtime estimator profiles
    too. Those whose provider this onnxruntime build lacks (onnx-cuda, onnx-tensorrt on CPU) stay in the list: the
    suite collects them and skips them with the reason (:meth:`candidate.backends.Backend.unavailable`)."""
    from candidate.backends.onnx_graph import onnx_available

    return shipped_profiles(device, include_onnx=onnx_available() is None)
