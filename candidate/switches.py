"""Switches and profiles of the candidate pipeline.

A profile is only a named set of switches. Shipped profiles live in :data:`PROFILES`; users add
their own in ``pyproject.toml`` (read by the harness, :func:`parity.project.project_profiles`, and passed here
as ``user_profiles``)::

    [tool.parity.profiles.my-fp16]
    base = "fp16-flow"              # optional: start from another profile
    attention = "sdpa-math"
    keep_fp32 = ["residual", "adaln", "block3"]
    faults = ["istft-gain"]         # faults are switches too (for self-tests and bisecting)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from reference.errors import InputError

ATTENTION = ("explicit", "sdpa", "sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "flash-attn")
DTYPES = ("fp32", "bf16", "fp16")
PRECISION_MODES = ("autocast", "cast")
CFG_MODES = ("batch2", "two-calls")
DEVICES = ("cpu", "cuda")
# keep-in-fp32 islands: the upstream fp16 fixes plus every component `parity bisect precision` can pick
KEEP_FP32_GLOBAL = ("residual", "adaln", "time_grid", "euler", "time_embed", "input_embed", "norm_out", "proj_out",
                    "hift.f0_predictor", "hift.source", "hift.conv_pre", "hift.ups", "hift.source_fusion",
                    "hift.resblocks", "hift.conv_post", "hift.istft")
KEEP_FP32_BLOCK_PARTS = ("adaln", "attn", "ff")  # block{i} or block{i}.{part}


@dataclass(frozen=True)
class Switches:
    attention: str = "explicit"
    attention_fallback: bool = True  # on a kernel error, fall back to the explicit path (and record it)
    flow_dtype: str = "fp32"
    hift_dtype: str = "fp32"
    precision_mode: str = "autocast"  # autocast (upstream's eager AMP) or cast (weights and activations cast)
    keep_fp32: tuple[str, ...] = ()
    fused_rope: bool = False  # cached cos/sin applied to the rotated slice only
    fused_adaln: bool = False  # all blocks' AdaLN modulations in one matmul per step
    adaln_cache: bool = False  # AdaLN modulations of every solver step in one batched matmul before the solve
    fold_weightnorm_once: bool = True  # False: re-fold g*v/||v|| on every call (as parametrizations do)
    cfg_mode: str = "batch2"
    compile: bool = False
    int8_dynamic: bool = False
    device: str = "cpu"
    tf32: bool = False  # allow TF32 matmuls/convs on CUDA (off for parity, like vllm-omni)
    # what computes the DiT estimator (candidate.backends: torch, onnxruntime, a port under test) and the options
    # that backend declares (only those that differ from its defaults are kept; a dict is accepted)
    estimator_backend: str = "torch"
    estimator_options: tuple = ()
    faults: tuple[str, ...] = ()

    def __post_init__(self):
        check = [("attention", ATTENTION), ("flow_dtype", DTYPES), ("hift_dtype", DTYPES),
                 ("precision_mode", PRECISION_MODES), ("cfg_mode", CFG_MODES), ("device", DEVICES)]
        for name, allowed in check:
            if getattr(self, name) not in allowed:
                raise InputError(f"switch {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        from .backends import backend_named

        backend = backend_named(self.estimator_backend)
        given = dict(self.estimator_options or ())
        backend.check_options(given)
        kept = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in given.items()
                            if v != backend.options[k]))
        object.__setattr__(self, "estimator_options", kept)
        backend.validate(self)
        for k in self.keep_fp32:
            if not is_keep_fp32_name(k):
                raise InputError(f"switch keep_fp32 entry {k!r} is not a known component (expected one of "
                                 f"{', '.join(KEEP_FP32_GLOBAL)}, block<i> or block<i>.<adaln|attn|ff>)")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def backend(self):
        """The :class:`candidate.backends.Backend` that computes the estimator."""
        from .backends import backend_named

        return backend_named(self.estimator_backend)

    def option(self, name: str):
        """An estimator-backend option: its value, else the backend's default."""
        given = dict(self.estimator_options)
        return given[name] if name in given else self.backend.options[name]

    @property
    def onnx(self) -> bool:
        """The estimator runs under ONNX Runtime (what the floor store asks of a candidate)."""
        return self.estimator_backend == "onnxruntime"

    @property
    def onnx_fp16(self) -> bool:
        """The ONNX Runtime graph is converted to fp16 (what the floor store asks of a candidate)."""
        return self.onnx and bool(self.option("fp16"))

    @property
    def precision(self) -> str:
        """The precision class used to pick tolerance rules: the lowest float dtype anywhere, or int8 (or the
        one the estimator backend imposes: an fp16 ONNX graph)."""
        if self.int8_dynamic:
            return "int8"
        imposed = self.backend.precision(self)
        if imposed:
            return imposed
        for d in ("fp16", "bf16"):
            if d in (self.flow_dtype, self.hift_dtype):
                return d
        return "fp32"

    def keeps(self, component: str) -> bool:
        if component in self.keep_fp32:
            return True
        # block3.attn is kept when block3 is
        return "." in component and component.split(".")[0] in self.keep_fp32 and component.startswith("block")

    def with_(self, **changes) -> "Switches":
        """These switches with ``changes`` (a backend's options merge with those held for the same backend)."""
        return _apply(self, _coerce(changes, "switches"))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep_fp32"] = list(self.keep_fp32)
        d["faults"] = list(self.faults)
        d["estimator_options"] = dict(self.estimator_options)
        return d

    def differences(self, other: "Switches | None" = None) -> dict:
        """Switches that differ from ``other`` (default: the all-defaults reference-equivalent set)."""
        base = (other or Switches()).to_dict()
        return {k: v for k, v in self.to_dict().items() if base[k] != v}


def is_keep_fp32_name(k: str) -> bool:
    if k in KEEP_FP32_GLOBAL:
        return True
    if k.startswith("block"):
        head, _, part = k.partition(".")
        return head[5:].isdigit() and (part == "" or part in KEEP_FP32_BLOCK_PARTS)
    return False


UPSTREAM_FP16_FIXES = ("residual", "adaln", "time_grid", "euler")

PROFILES: dict[str, dict] = {
    "fp32-explicit": dict(),
    "fp32-sdpa": dict(attention="sdpa", fused_rope=True, fused_adaln=True, adaln_cache=True, cfg_mode="batch2",
                      fold_weightnorm_once=True),
    "fp32-sdpa-math": dict(attention="sdpa-math"),
    "fp32-two-calls": dict(attention="sdpa", cfg_mode="two-calls"),
    "bf16-flow": dict(attention="sdpa", flow_dtype="bf16", keep_fp32=UPSTREAM_FP16_FIXES),
    "fp16-flow": dict(attention="sdpa", flow_dtype="fp16", keep_fp32=UPSTREAM_FP16_FIXES),
    "fp16-all": dict(attention="sdpa", flow_dtype="fp16", hift_dtype="fp16",
                     keep_fp32=UPSTREAM_FP16_FIXES + ("hift.f0_predictor", "hift.istft")),
    "compiled": dict(attention="sdpa", fused_rope=True, fused_adaln=True, adaln_cache=True, compile=True),
    "int8-dynamic": dict(attention="sdpa", fused_rope=True, fused_adaln=True, adaln_cache=True, int8_dynamic=True),
    "fp16-flash-cuda": dict(attention="sdpa-flash", flow_dtype="fp16", keep_fp32=UPSTREAM_FP16_FIXES, device="cuda"),
    "bf16-flash-cuda": dict(attention="sdpa-flash", flow_dtype="bf16", keep_fp32=UPSTREAM_FP16_FIXES, device="cuda"),
    # the estimator under ONNX Runtime (export as upstream's cosyvoice/bin/export_onnx.py); solver, CFG, the rest
    # of the flow and the vocoder stay the candidate's
    "onnx-cpu": dict(estimator_backend="onnxruntime"),
    "onnx-cpu-basic": dict(estimator_backend="onnxruntime", estimator_options={"opt_level": "basic"}),
    "onnx-cpu-mask": dict(estimator_backend="onnxruntime", estimator_options={"mask_input": True}),
    "onnx-fused": dict(estimator_backend="onnxruntime", estimator_options={"fuse": True}),
    "onnx-fp16": dict(estimator_backend="onnxruntime", estimator_options={"fp16": True}),
    "onnx-cuda": dict(estimator_backend="onnxruntime", estimator_options={"provider": "cuda"}),
    "onnx-tensorrt": dict(estimator_backend="onnxruntime", estimator_options={"provider": "tensorrt"}),
}
PROFILE_HELP = {
    "fp32-explicit": "the reference's own code path through the candidate (sanity: must be bit-identical)",
    "fp32-sdpa": "fp32 with PyTorch SDPA and every fusion on (cached RoPE, fused and per-solve cached AdaLN, weight norm folded once)",
    "fp32-sdpa-math": "fp32 with SDPA forced to the math kernel",
    "fp32-two-calls": "fp32 SDPA, CFG as two estimator calls instead of one batch of 2",
    "bf16-flow": "DiT under bf16 autocast, with residual/AdaLN/time grid/Euler kept in fp32",
    "fp16-flow": "DiT under fp16 autocast, with the upstream fp16 fixes (residual/AdaLN/time grid/Euler in fp32)",
    "fp16-all": "fp16 DiT (with fixes) and fp16 HiFT (F0 predictor and iSTFT kept in fp32)",
    "compiled": "fp32 SDPA with the DiT under torch.compile (inductor)",
    "int8-dynamic": "dynamic int8 quantization of the DiT's linear layers (the reduced precision that pays on CPU)",
    "fp16-flash-cuda": "CUDA: SDPA flash kernel in fp16 with the upstream fixes",
    "bf16-flash-cuda": "CUDA: SDPA flash kernel in bf16 with the upstream fixes",
    "onnx-cpu": "the exported estimator under ONNX Runtime, CPU provider, all graph optimizations",
    "onnx-cpu-basic": "the exported estimator under ONNX Runtime, CPU provider, basic graph optimizations only",
    "onnx-cpu-mask": "onnx-cpu exported with the attention mask as an input: streaming feeds the chunk mask",
    "onnx-fused": "the exported estimator after the onnxruntime.transformers fusions (attention/LayerNorm/GELU)",
    "onnx-fp16": "the exported estimator converted to fp16 (fp32 inputs/outputs), ONNX Runtime CPU",
    "onnx-cuda": "the exported estimator under ONNX Runtime's CUDA provider (skipped where it is not available)",
    "onnx-tensorrt": "the exported estimator under ONNX Runtime's TensorRT provider (skipped where not available)",
}
ONNX_PROFILES = {"onnx-cpu", "onnx-cpu-basic", "onnx-cpu-mask", "onnx-fused", "onnx-fp16", "onnx-cuda",
                 "onnx-tensorrt"}


def _coerce(d: dict, source: str) -> dict:
    """Switch values as a profile, an override or a trace's metadata gives them: ``-`` spelled ``_``, lists as
    tuples, the backend's options as ``estimator_options`` (a table), ``estimator.<option>``, or the legacy
    prefixed names (``onnx_fuse`` is option ``fuse`` of the ``onnxruntime`` backend)."""
    from .backends import legacy_option

    fields = {f.name for f in dataclasses.fields(Switches)}
    out: dict = {}
    options: dict = {}
    for k, v in d.items():
        k2 = k.replace("-", "_")
        if k2 in ("base", "description"):
            continue
        if k2 == "estimator_options":
            options.update(dict(v or ()))
            continue
        if k2.startswith("estimator."):
            options[k2[len("estimator."):]] = v
            continue
        legacy = legacy_option(k2) if k2 not in fields else None
        if legacy is not None:  # the backend must be that one (its profile's, or set beside it)
            options[legacy[1]] = v
            continue
        if k2 not in fields:
            raise InputError(f"{source}: unknown switch {k!r} (known: {', '.join(sorted(fields))})")
        out[k2] = tuple(v) if isinstance(v, list) else v
    if options:
        out["estimator_options"] = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return out


def _apply(sw: Switches, changes: dict) -> Switches:
    """``sw`` with ``changes`` (coerced): a backend's options merge with those ``sw`` holds for the same backend."""
    changes = dict(changes)
    if "estimator_options" in changes:
        same = changes.get("estimator_backend", sw.estimator_backend) == sw.estimator_backend
        changes["estimator_options"] = {**(dict(sw.estimator_options) if same else {}),
                                        **dict(changes["estimator_options"])}
    elif changes.get("estimator_backend", sw.estimator_backend) != sw.estimator_backend:
        changes["estimator_options"] = ()  # another backend: the previous one's options do not apply
    return dataclasses.replace(sw, **changes)


def all_profiles(user_profiles: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """The shipped profiles plus ``user_profiles`` (the ``[tool.parity.profiles]`` tables a project defines; the
    harness reads them: :func:`parity.project.project_profiles`)."""
    profiles = dict(PROFILES)
    profiles.update(user_profiles or {})
    return profiles


def resolve_profile(name: str, user_profiles: Mapping[str, dict] | None = None, _seen: tuple = ()) -> Switches:
    """The switches of profile ``name`` (shipped, or one of ``user_profiles``, following ``base`` chains)."""
    profiles = all_profiles(user_profiles)
    if name not in profiles:
        raise InputError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(profiles))} "
                         f"(user profiles go in [tool.parity.profiles] of pyproject.toml)")
    if name in _seen:
        raise InputError(f"profile {name!r}: circular 'base' chain {' -> '.join(_seen + (name,))}")
    spec = dict(profiles[name])
    base = spec.get("base")
    src = f"profile {name!r}"
    if base:
        parent = resolve_profile(base, user_profiles, _seen + (name,))
        return _apply(parent, _coerce(spec, src))
    return Switches(**_coerce(spec, src))


def switches_from(profile: str | None = None, faults: list[str] | tuple = (),
                  user_profiles: Mapping[str, dict] | None = None, **overrides) -> Switches:
    """The switches of ``profile`` (None: the defaults) plus ``faults`` and switch ``overrides``."""
    sw = resolve_profile(profile, user_profiles) if profile else Switches()
    if faults:
        sw = sw.with_(faults=tuple(dict.fromkeys(tuple(sw.faults) + tuple(faults))))
    if overrides:
        sw = _apply(sw, _coerce(overrides, "overrides"))
    return sw
