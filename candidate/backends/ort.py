"""The ``onnxruntime`` backend (:class:`OrtBackend`): the DiT estimator under ONNX Runtime, a drop-in for
:class:`candidate.dit.CandidateDiT` inside the candidate flow (same call signature), so only the estimator calls go
to ONNX Runtime while the solver, CFG, the rest of the flow and the vocoder stay the candidate's and every
per-step stage is captured as before.

What it runs: the model's own estimator exported as upstream does (:mod:`candidate.backends.onnx_export`,
cached), or a user's file (option ``file``), optionally after the ``onnxruntime.transformers`` fusions (``fuse``)
and/or the fp16 conversion (``fp16``), on the requested execution provider and optimization level. It records what
ran: onnxruntime version, providers requested and used, optimization level, threads, the op-type counts of the
graph it loaded and of the session's optimized graph, fusion report, fp16 settings, and how often streaming
was requested from a graph that has no attention-mask input (the TensorRT-path blind spot, spec 11.2).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from reference.dit import static_chunk_mask
from reference.errors import InputError
from reference.probe import NO_PROBE, Probe

from .onnx_export import (INPUT_NAMES, MASK_INPUT, ExportOptions, cache_dir, cached_export,
                          default_heads, fp16_graph, fused_graph)
from .base import Backend
from .onnx_graph import (NP_DTYPE, BackendUnavailable, _need_ort, inspect_onnx, onnx_available,
                         validate_io)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# what a provider falls back to, in ONNX Runtime's order of preference
PROVIDER_CHAIN = {"cpu": ["CPUExecutionProvider"],
                  "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                  "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
# op types that are fusions (ONNX Runtime contrib ops or fused ONNX ops), counted in the provenance
FUSED_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "RotaryEmbedding", "LayerNormalization",
             "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
             "EmbedLayerNormalization", "Gelu", "FastGelu", "BiasGelu", "BiasFastGelu", "QuickGelu", "GemmFastGelu",
             "FusedMatMul", "FusedConv", "FusedGemm", "MatMulNBits", "BiasSplitGelu", "Mish")
# faults that act inside the PyTorch estimator (candidate/dit.py): an ONNX graph cannot carry them
_ESTIMATOR_OVERRIDES = ("time_scale", "rope_mode", "mask_mode")
_ESTIMATOR_HOOKS = ("block",)


class ProviderFallback(InputError):
    """``onnx_require_provider`` names the requested GPU provider and ONNX Runtime cannot build a session on it
    alone (no node may fall back): no candidate can run. (A session that did build but runs on another provider
    is not an error: it is recorded and becomes the ``required_provider_missing`` finding.)"""


def provider_unavailable(provider: str) -> str | None:
    """None when ``provider`` (cpu, cuda, tensorrt or an ONNX Runtime provider name) is in this onnxruntime
    build; otherwise the reason, for skipping the profile."""
    why = onnx_available()
    if why:
        return why
    import onnxruntime as ort

    name = PROVIDERS.get(provider, provider)
    have = ort.get_available_providers()
    if name in have:
        return None
    hint = {"CUDAExecutionProvider": "the onnxruntime-gpu package and a CUDA device",
            "TensorrtExecutionProvider": "the onnxruntime-gpu package with TensorRT libraries and a CUDA device"}
    return (f"{name} is not available in this onnxruntime {ort.__version__} build (available: {', '.join(have)})"
            + (f"; it needs {hint[name]}" if name in hint else ""))


def profile_unavailable(sw) -> str | None:
    """Why a candidate's backend cannot run here (None when it can): the backend's own reason
    (:meth:`candidate.backends.Backend.unavailable`)."""
    from . import backend_of

    return backend_of(sw).unavailable(sw)


def fused_counts(op_counts: dict) -> dict:
    """The fused-operator counts out of an op-type histogram."""
    return {k: int(op_counts[k]) for k in FUSED_OPS if op_counts.get(k)}


def _optimized_op_counts(path: Path, so_factory, providers, ident: dict | None = None) -> dict:
    """Op-type counts of the session's optimized graph: the same graph a session builds, serialized once
    (initializers written externally, so the file read back is the graph alone). Cached in the export cache
    directory under ``ident`` (file sha256, level, providers, onnxruntime version)."""
    import onnx
    import onnxruntime as ort

    memo = None
    if ident is not None:
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
        memo = cache_dir() / f"opcounts-{key}.json"
        try:
            saved = json.loads(memo.read_text())
            if saved.get("ident") == ident:
                return saved["op_counts"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    with tempfile.TemporaryDirectory(prefix="parity-ort-") as d:
        so = so_factory()
        out = Path(d) / "optimized.onnx"
        so.optimized_model_filepath = str(out)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(path), so, providers=providers)
        m = onnx.load(str(out), load_external_data=False)
        counts = dict(Counter(n.op_type for n in m.graph.node).most_common())
    if memo is not None:
        from reference.files import OutputError, write_output

        try:  # a memo only: a cache that cannot be written costs the next run a second count
            write_output(memo, json.dumps({"ident": ident, "op_counts": counts}))
        except (OSError, OutputError):
            pass
    return counts


class OrtEstimator:
    """The estimator as an ONNX Runtime session, called like :class:`candidate.dit.CandidateDiT`:
    ``est(x, mask, mu, t, spks, cond, streaming, probe, step) -> v`` on batch-2 torch tensors."""

    def __init__(self, path: str | Path, *, provider: str = "cpu", opt_level: str = "all", threads: int | None = None,
                 require_provider: str = "", allow_spinning: bool = False, channels: int | None = None,
                 chunk_size: int = 50, origin: dict | None = None):
        _need_ort()
        import onnxruntime as ort

        self.path = Path(path)
        self.chunk_size = chunk_size
        self.file = inspect_onnx(self.path)
        validate_io(self.file, self.path, channels)
        self.mask_input = self.file["mask_input"]
        self.input_dtypes = {i["name"]: i["dtype"] for i in self.file["inputs"]}
        self.output_name = self.file["outputs"][0]["name"]
        if provider not in PROVIDERS:
            raise InputError(f"onnx provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        why = provider_unavailable(provider)
        if why:
            raise BackendUnavailable(why)
        self.provider = provider
        self.threads = int(threads or torch.get_num_threads())
        self.opt_level = opt_level
        self.allow_spinning = allow_spinning
        self.providers_requested = [p for p in PROVIDER_CHAIN[provider] if p in ort.get_available_providers()]
        required = PROVIDERS.get(require_provider, require_provider) if require_provider else ""
        # a required GPU provider that is also the requested one: that provider alone, and no node may silently
        # fall back to another (ONNX Runtime refuses the session instead)
        strict = bool(required) and required == PROVIDERS[provider] and required != "CPUExecutionProvider"
        if strict:
            self.providers_requested = [required]

        def options():
            so = ort.SessionOptions()
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3  # errors only: what ran is recorded below, not printed
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
            if strict:
                so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            return so

        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(self.path), options(), providers=self.providers_requested)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise (ProviderFallback if strict else InputError)(
                f"{self.path}: ONNX Runtime cannot build a session on {', '.join(self.providers_requested)}: {first}"
            ) from exc
        self.session_seconds = time.perf_counter() - t0
        self.providers_used = list(self.session.get_providers())
        self.optimized_op_counts = None
        self.optimized_note = None
        if self.providers_used[:1] == ["CPUExecutionProvider"]:
            ident = {"sha256": self.file["sha256"], "level": opt_level, "providers": self.providers_requested,
                     "onnxruntime": ort.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}  # NCHWc rewrites
            self.optimized_op_counts = _optimized_op_counts(self.path, options, self.providers_requested, ident)
        else:
            self.optimized_note = ("not serialized: a session with a compiled GPU provider cannot write its "
                                   "optimized graph; op counts are of the graph file")
        self.origin = dict(origin or {})
        self.calls = 0
        self.streaming_calls = 0
        self.streaming_calls_unmasked = 0
        self.required = require_provider
        # a session that fell back to another provider still runs (its numbers are real); the harness turns the
        # recorded requirement into a failing finding (required_provider_missing), as it does for a kernel
        # that did not run (--require-kernel). Only a session ONNX Runtime refuses to build is an error above.
        self.required_message = (check_required_provider(require_provider, self.providers_used)
                                 if require_provider else None)

    # -- the CandidateDiT interface ---------------------------------------------------------------
    def cache_modulations(self, ts) -> None:  # the AdaLN cache lives inside the graph's own constant folding
        pass

    def clear_modulations(self) -> None:
        pass

    def feed(self, x, mask, mu, t, spks, cond, streaming: bool = False) -> dict:
        """The session's inputs (numpy, in the graph's input dtypes) for one estimator call."""
        T = x.shape[2]
        if t.ndim == 0:
            t = t.repeat(x.shape[0])
        feed = {}
        for name, v in zip(INPUT_NAMES, (x, mask, mu, t, spks, cond)):
            feed[name] = v.detach().to("cpu", torch.float32).numpy().astype(NP_DTYPE[self.input_dtypes[name]],
                                                                             copy=False)
        if self.mask_input:
            if streaming:
                am = static_chunk_mask(T, self.chunk_size)[None, None].expand(x.shape[0], 1, T, T)
            else:
                am = torch.ones(x.shape[0], 1, T, T, dtype=torch.bool)
            feed[MASK_INPUT] = np.ascontiguousarray(am.numpy()).astype(NP_DTYPE[self.input_dtypes[MASK_INPUT]],
                                                                         copy=False)
        return feed

    def __call__(self, x, mask, mu, t, spks, cond, streaming: bool = False, probe: Probe = NO_PROBE, step: int = 0):
        if x.shape[0] != 2:
            raise InputError(f"{self.path}: the exported estimator takes the CFG pair (batch 2), "
                             f"got batch {x.shape[0]}")
        self.calls += 1
        if streaming:
            self.streaming_calls += 1
            if not self.mask_input:  # upstream's TensorRT path: the chunk mask is silently dropped
                self.streaming_calls_unmasked += 1
        out = self.session.run([self.output_name], self.feed(x, mask, mu, t, spks, cond, streaming))[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(device=x.device, dtype=x.dtype)

    # -- provenance -------------------------------------------------------------------------------
    def provenance(self) -> dict:
        import onnxruntime as ort

        counts = self.optimized_op_counts if self.optimized_op_counts is not None else self.file["op_counts"]
        return {
            "onnxruntime": ort.__version__,
            "file": {k: self.file[k] for k in ("path", "sha256", "bytes", "opset", "opsets", "producer",
                                               "producer_version", "ir_version", "inputs", "outputs", "mask_input")},
            **self.origin,
            "session": {"providers_requested": list(self.providers_requested), "providers_used": self.providers_used,
                        "graph_optimization_level": OPT_LEVELS[self.opt_level], "intra_op_threads": self.threads,
                        "inter_op_threads": 1, "execution_mode": "sequential", "allow_spinning": self.allow_spinning,
                        "require_provider": self.required or None,
                        "required_provider_missing": self.required_message,
                        "seconds_to_build": round(self.session_seconds, 3)},
            "graph_op_counts": self.file["op_counts"],
            "optimized_op_counts": self.optimized_op_counts,
            "optimized_note": self.optimized_note,
            "fused_nodes": fused_counts(counts),
        }

    def reset_run_counts(self) -> None:
        """Start counting a new run (the pipeline calls this at the start of each run or session)."""
        self.calls = self.streaming_calls = self.streaming_calls_unmasked = 0

    def run_metadata(self) -> dict:
        """What the calls since the last :meth:`reset_run_counts` did (the current run)."""
        return {"calls": self.calls, "streaming_calls": self.streaming_calls,
                "streaming_calls_without_mask_input": self.streaming_calls_unmasked,
                "providers_used": self.providers_used}


def check_required_provider(required: str, providers_used: list[str] | dict) -> str | None:
    """None when the session's first (preferred) provider is ``required`` (cpu, cuda, tensorrt or a provider
    name); otherwise the message to fail with. ``providers_used`` may be the ``onnx`` provenance dict."""
    if isinstance(providers_used, dict):
        providers_used = (providers_used.get("session") or {}).get("providers_used") or []
    name = PROVIDERS.get(required, required)
    if providers_used and providers_used[0] == name:
        return None
    return (f"required ONNX Runtime provider {name} is not the one the session runs on "
            f"(providers used: {', '.join(providers_used) or 'none'})")


def build_estimator(ref_dit, sw, faults=None, cache: str | Path | None = None) -> OrtEstimator:
    """The :class:`OrtEstimator` a candidate's switches describe (its ``onnxruntime`` options), for the reference
    estimator ``ref_dit``: the user's ``file`` or the cached export of ``ref_dit`` (with ``mask_input``), then the
    fusions (``fuse``) and the fp16 conversion (``fp16``), on ``provider`` at ``opt_level``."""
    _need_ort()
    if faults is not None:
        inside = [f.name for f, _ in faults.items if any(k in f.overrides for k in _ESTIMATOR_OVERRIDES)
                  or any(k in f.hooks for k in _ESTIMATOR_HOOKS)]
        if inside:
            raise InputError(f"fault(s) {', '.join(inside)} act inside the PyTorch estimator and cannot apply to an "
                             f"ONNX Runtime estimator (estimator_backend=onnxruntime)")
    o = sw.option
    why = provider_unavailable(o("provider"))
    if why:
        raise BackendUnavailable(why)
    origin: dict = {}
    if o("file"):
        path = Path(o("file")).expanduser()
        origin["source"] = "user file"
        if o("mask_input"):
            origin["note"] = "the mask_input option is ignored with a user file: the file's own inputs decide"
    else:
        info = cached_export(ref_dit, ExportOptions(mask_input=o("mask_input")), cache)
        path = info.path
        origin["source"] = "export"
        origin["export"] = info.to_dict()
    cfg = ref_dit.cfg
    if o("fuse"):
        heads, hidden = default_heads(ref_dit) if not o("file") else (0, 0)
        path, report = fused_graph(path, heads, hidden, cache)
        origin["fusion"] = report
    if o("fp16"):
        path, settings = fp16_graph(path, cache)
        origin["fp16"] = settings
    return OrtEstimator(path, provider=o("provider"), opt_level=o("opt_level"), require_provider=o("require_provider"),
                        channels=cfg.mel_dim, chunk_size=cfg.static_chunk_size, origin=origin)


class OrtBackend(Backend):
    """``onnxruntime``: the estimator exported as upstream does (cached) or a user's ``file``, optionally fused
    (``fuse``) or converted to fp16 (``fp16``), run by ONNX Runtime on ``provider`` at ``opt_level``;
    ``require_provider`` makes a session that runs on another provider a failure finding."""

    name = "onnxruntime"
    description = "the exported estimator under ONNX Runtime"
    options = {"file": "", "mask_input": False, "fuse": False, "fp16": False, "opt_level": "all",
               "provider": "cpu", "require_provider": ""}
    choices = {"opt_level": tuple(OPT_LEVELS), "provider": tuple(PROVIDERS), "mask_input": (False, True),
               "fuse": (False, True), "fp16": (False, True)}
    legacy_prefix = "onnx_"

    def validate(self, sw) -> None:
        if sw.cfg_mode != "batch2":
            raise InputError("switch estimator_backend=onnxruntime needs cfg_mode=batch2: the exported estimator "
                             "has a fixed batch of 2 (the CFG pair), as upstream's export")

    def unavailable(self, sw) -> str | None:
        return provider_unavailable(sw.option("provider"))

    def precision(self, sw) -> str | None:
        return "fp16" if sw.option("fp16") else None

    def attention(self, sw) -> str | None:
        return "onnxruntime"

    def provenance(self, estimator) -> dict:
        return {"onnx": estimator.provenance()}  # what the session is and how it runs

    def run_metadata(self, estimator) -> dict:
        return {"onnx_run": estimator.run_metadata()}

    def build_estimator(self, ref_estimator, sw, faults, kernels, device: str):
        return build_estimator(ref_estimator, sw, faults)


__all__ = ["OrtEstimator", "build_estimator", "inspect_onnx", "validate_io", "check_required_provider",
           "provider_unavailable", "profile_unavailable", "onnx_available", "fused_counts", "BackendUnavailable",
           "ProviderFallback", "PROVIDERS", "OrtBackend"]
