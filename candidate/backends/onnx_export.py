"""Export of the DiT estimator to ONNX, as upstream's ``cosyvoice/bin/export_onnx.py`` does, and the derived
graphs the ONNX candidate profiles run (fused by the ``onnxruntime.transformers`` optimizer, fp16).

Upstream's export (read at ace7c47, spec section 11.2): ``torch.onnx.export(estimator, (x, mask, mu, t, spks,
cond), 'flow.decoder.estimator.fp32.onnx', export_params=True, opset_version=18, do_constant_folding=True,
input_names=['x', 'mask', 'mu', 't', 'spks', 'cond'], output_names=['estimator_out'], dynamic_axes=` axis 2
(``seq_len``) of x, mask, mu, cond and estimator_out ``)`` on batch-2 dummy inputs of 256 frames
(``torch.rand``; mask all ones). The module's ``forward`` runs with ``streaming=False``, so the graph has no
streaming input and always attends over the whole sequence: the blind spot of the TensorRT path.
``mask_input=True`` adds the attention mask as an explicit input ``attn_mask`` (bool [2, 1, T, T], True =
attend), which lets one graph serve the offline and the streaming (50-frame chunk) modes.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. That is the exporter that wrote the
files users ship (upstream pins torch 2.3.1, where it is the default), it accepts upstream's ``dynamic_axes``
as they are and names the axis ``seq_len``, and it needs nothing beyond ``onnx``. In torch 2.13 the default is
the torch.export-based exporter (needs ``onnxscript``): given upstream's arguments as they are it fails
("tracing inferred a static shape of 256"), it works only with ``dynamic_shapes`` (``exporter="dynamo"``
here, optional), and it writes a different decomposition (Mish, IsNaN guards, axis named ``s3``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reference.dit import DiT, apply_rotary_pos_emb
from reference.files import write_output
from reference.errors import InputError

from .onnx_graph import INPUT_NAMES, MASK_INPUT, OUTPUT_NAME, file_sha256
OPSET = 18
BATCH = 2  # the CFG pair
DUMMY_SEQ_LEN = 256  # upstream's export traces 256 frames
EXPORTERS = ("torchscript", "dynamo")


def _need_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise InputError("the ONNX backend needs the optional extra: pip install -e \".[onnx]\" "
                         "(onnx, onnxruntime)") from exc


class EstimatorGraph(nn.Module):
    """Upstream's ``DiT.forward(x, mask, mu, t, spks, cond)`` with ``streaming=False`` over the reference DiT's
    modules, as it traces: SDPA with the boolean padding mask repeated to [B, 1, T, T] and the attention output
    rows zeroed where ``attn_mask[:, 0, -1]`` is False. With ``mask_input`` the [B, 1, T, T] attention mask is
    an input of its own (ANDed with the padding mask), so the chunk mask of streaming can be fed."""

    def __init__(self, dit: DiT, mask_input: bool = False):
        super().__init__()
        self.net = dit
        self.mask_input = mask_input

    def forward(self, x, mask, mu, t, spks, cond, attn_mask=None):
        n = self.net
        x, mu, cond = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2)
        c = n.time_embed(t)
        h = n.input_embed(x, cond, mu, spks)
        T = h.shape[1]
        rope = n.rotary_embed.forward_from_seq_len(T)
        pad = mask.bool().repeat(1, T, 1).unsqueeze(1)  # [B, 1, T, T]: the padding mask for every query
        am = pad if attn_mask is None else (attn_mask.bool() & pad)
        keep = am[:, 0, -1].unsqueeze(-1)  # [B, T, 1]: rows the last query may see (upstream's output mask)
        for blk in n.transformer_blocks:
            norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = blk.attn_norm(h, emb=c)
            a = blk.attn
            B = norm.shape[0]
            q, k, v = a.to_q(norm), a.to_k(norm), a.to_v(norm)
            q, k = apply_rotary_pos_emb(q, rope), apply_rotary_pos_emb(k, rope)
            q, k, v = (z.view(B, -1, a.heads, a.dim_head).transpose(1, 2) for z in (q, k, v))
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=am, dropout_p=0.0)
            o = a.to_out[0](o.transpose(1, 2).reshape(B, -1, a.heads * a.dim_head))
            o = o.masked_fill(~keep, 0.0)
            h = h + gate_msa.unsqueeze(1) * o
            ff_in = blk.ff_norm(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            h = h + gate_mlp.unsqueeze(1) * blk.ff(ff_in)
        h = n.norm_out(h, c)
        return n.proj_out(h).transpose(1, 2)


@dataclass(frozen=True)
class ExportOptions:
    mask_input: bool = False
    opset: int = OPSET
    exporter: str = "torchscript"
    seq_len: int = DUMMY_SEQ_LEN  # dummy trace length (the graph is dynamic in it)
    constant_folding: bool = True

    def __post_init__(self):
        if self.exporter not in EXPORTERS:
            raise InputError(f"exporter {self.exporter!r} is not one of {', '.join(EXPORTERS)}")

    def key(self) -> dict:
        return asdict(self)


@dataclass
class ExportInfo:
    path: Path
    options: ExportOptions
    weights_sha256: str
    file_sha256: str
    seconds: float
    cached: bool
    torch_version: str
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "options": self.options.key(), "weights_sha256": self.weights_sha256,
                "file_sha256": self.file_sha256, "export_seconds": round(self.seconds, 3), "cached": self.cached,
                "torch": self.torch_version, "inputs": self.inputs, "outputs": self.outputs}


def dummy_inputs(dit: DiT, seq_len: int = DUMMY_SEQ_LEN, mask_input: bool = False, seed: int = 0) -> tuple:
    """Upstream's ``get_dummy_input``: uniform [0, 1) x, mu, t, spks, cond and an all-ones mask, batch 2."""
    cfg = dit.cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, cfg.mel_dim, seq_len, generator=g)
    mask = torch.ones(BATCH, 1, seq_len)
    mu = torch.rand(BATCH, cfg.mu_dim, seq_len, generator=g)
    t = torch.rand(BATCH, generator=g)
    spks = torch.rand(BATCH, cfg.spk_dim, generator=g)
    cond = torch.rand(BATCH, cfg.mel_dim, seq_len, generator=g)
    args = (x, mask, mu, t, spks, cond)
    if mask_input:
        args += (torch.ones(BATCH, 1, seq_len, seq_len, dtype=torch.bool),)
    return args


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def weights_sha256(dit: nn.Module) -> str:
    """sha256 over the estimator's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for k, v in sorted(dit.state_dict().items()):
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}\n".encode())
        h.update(_tensor_bytes(v))
    return h.hexdigest()


def cache_dir() -> Path:
    """``$PARITY_ONNX_CACHE``, else ``$XDG_CACHE_HOME/tts-parity/onnx`` (default ``~/.cache/tts-parity/onnx``)."""
    env = os.environ.get("PARITY_ONNX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts-parity" / "onnx"


def _atomic_save(write, out: Path) -> None:
    """``write(tmp_path)``, then the file goes to ``out`` through :func:`parity.outputs.output_file` (renamed
    onto a regular file, written through a device or FIFO; a crash never leaves a half-written file)."""
    from reference.files import output_file

    with output_file(out) as tmp:
        write(Path(tmp))


def _torch_export(module: nn.Module, args: tuple, path: Path, opts: ExportOptions) -> None:
    names = list(INPUT_NAMES) + ([MASK_INPUT] if opts.mask_input else [])
    if opts.exporter == "torchscript":
        axes = {k: {2: "seq_len"} for k in ("x", "mask", "mu", "cond", OUTPUT_NAME)}
        if opts.mask_input:
            axes[MASK_INPUT] = {2: "seq_len", 3: "seq_len"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and constant-folding remarks
            torch.onnx.export(module, args, str(path), export_params=True, opset_version=opts.opset,
                              do_constant_folding=opts.constant_folding, input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, dynamo=False)
        return
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise InputError("exporter 'dynamo' needs onnxscript (pip install onnxscript); "
                         "the default exporter is 'torchscript'") from exc
    from torch.export import Dim

    seq = Dim("seq_len", min=2)
    shapes = {"x": {2: seq}, "mask": {2: seq}, "mu": {2: seq}, "t": None, "spks": None, "cond": {2: seq}}
    if opts.mask_input:
        shapes["attn_mask"] = {2: seq, 3: seq}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, input_names=names, output_names=[OUTPUT_NAME],
                                 opset_version=opts.opset, dynamic_shapes=shapes, dynamo=True, optimize=True,
                                 verbose=False)
    prog.save(str(path))


def export_estimator(dit: DiT, out: str | Path, options: ExportOptions | None = None) -> ExportInfo:
    """Export ``dit`` (the reference estimator) to ``out`` as upstream does; validated with ``onnx.checker``
    (full check, with shape inference) and against the expected graph inputs and output."""
    _need_onnx()
    opts = options or ExportOptions()
    out = Path(out)
    t0 = time.perf_counter()
    module = EstimatorGraph(dit, opts.mask_input).eval()
    args = dummy_inputs(dit, opts.seq_len, opts.mask_input)
    from reference.files import output_file

    with torch.no_grad(), output_file(out) as tmp:  # checked before it reaches ``out`` (which may be a stream)
        _torch_export(module, args, tmp, opts)
        try:
            info = check_exported(tmp, mask_input=opts.mask_input)
        except InputError as exc:
            raise InputError(str(exc).replace(str(tmp), str(out))) from exc
        sha = file_sha256(tmp)
    return ExportInfo(out, opts, weights_sha256(dit), sha, time.perf_counter() - t0, False,
                      torch.__version__, info["inputs"], info["outputs"])


def check_exported(path: str | Path, mask_input: bool | None = None) -> dict:
    """``onnx.checker.check_model(full_check=True)`` and the estimator's input/output contract."""
    import onnx

    from .onnx_graph import inspect_onnx, validate_io

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: the ONNX checker rejects the graph: {msg}") from exc
    info = inspect_onnx(path)
    validate_io(info, path)
    if mask_input is not None and info["mask_input"] != mask_input:
        raise InputError(f"{path}: expected {'an' if mask_input else 'no'} {MASK_INPUT} input")
    return info


def _cache_key(weights: str, opts: ExportOptions) -> str:
    ident = {"weights_sha256": weights, "options": opts.key(), "torch": torch.__version__}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def cached_export(dit: DiT, options: ExportOptions | None = None, directory: str | Path | None = None) -> ExportInfo:
    """The exported estimator from the cache (keyed by the weights' sha256, the export options and the torch
    version), exporting it on a miss."""
    opts = options or ExportOptions()
    weights = weights_sha256(dit)
    d = Path(directory) if directory else cache_dir()
    key = _cache_key(weights, opts)
    path = d / f"estimator-{key[:20]}{'-mask' if opts.mask_input else ''}.fp32.onnx"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        try:
            saved = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("cache_key") == key and saved.get("file_sha256"):
            return ExportInfo(path, opts, weights, saved["file_sha256"], 0.0, True, saved.get("torch", ""),
                              saved.get("inputs", []), saved.get("outputs", []))
    info = export_estimator(dit, path, opts)
    write_output(meta, json.dumps({**info.to_dict(), "cache_key": key}, indent=1))
    return info


# ---------------------------------------------------------------------------------------------
# derived graphs: onnxruntime.transformers fusions, fp16 conversion

FUSION_MODEL_TYPE = "bert"  # the optimizer's generic transformer fusions (Attention, LayerNorm, (Fast)Gelu, ...)
FP16_SETTINGS = {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
                 "op_block_list": None, "min_positive_val": 5.96e-08, "max_finite_val": 65504.0}


def _derived_path(src: Path, tag: str, ident: dict, directory: Path | None) -> Path:
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    d = directory or cache_dir()  # never next to a user's file
    return d / f"{src.stem.split('.')[0]}-{key}.{tag}.onnx"


def fused_graph(src: str | Path, num_heads: int = 0, hidden_size: int = 0,
                directory: str | Path | None = None) -> tuple[Path, dict]:
    """The graph after ``onnxruntime.transformers.optimizer.optimize_model`` (python fusions only,
    ``opt_level=0``: the session applies its own level afterwards). Returns (path, report) where the report
    names the model type, the heads/hidden size given and the fused-operator counts. Cached next to ``src``
    (in the cache directory), keyed by the source file's sha256 and the settings."""
    _need_onnx()
    import onnxruntime

    src = Path(src)
    settings = {"model_type": FUSION_MODEL_TYPE, "num_heads": num_heads, "hidden_size": hidden_size,
                "opt_level": 0, "use_gpu": False}
    ident = {"src": file_sha256(src), "settings": settings, "onnxruntime": onnxruntime.__version__}
    out = _derived_path(src, "fused", ident, Path(directory) if directory else None)
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        try:
            rep = json.loads(meta.read_text())
            if rep.get("ident") == ident:
                return out, rep["report"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    import logging

    from onnxruntime.transformers import optimizer

    t0 = time.perf_counter()
    # its modules log under top-level names and print ("symbolic shape inference ... failed": the fusions that
    # need it are skipped, which the report's not_fused list shows)
    logging.disable(logging.WARNING)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            m = optimizer.optimize_model(str(src), model_type=FUSION_MODEL_TYPE, num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=0, use_gpu=False)
    finally:
        logging.disable(logging.NOTSET)
    stats = {k: int(v) for k, v in m.get_fused_operator_statistics().items()}
    _atomic_save(lambda p: m.save_model_to_file(str(p)), out)
    report = {**settings, "onnxruntime": onnxruntime.__version__, "fused": {k: v for k, v in stats.items() if v},
              "not_fused": sorted(k for k, v in stats.items() if not v),
              "optimizer_printed": [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()][:5],
              "seconds": round(time.perf_counter() - t0, 3),
              "source_sha256": ident["src"]}
    write_output(meta, json.dumps({"ident": ident, "report": report}, indent=1))
    return out, report


def fp16_graph(src: str | Path, directory: str | Path | None = None) -> tuple[Path, dict]:
    """The graph converted to fp16 with fp32 inputs and outputs (Cast nodes at the boundary), as
    ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``. Cached like
    :func:`fused_graph`. Returns (path, settings)."""
    _need_onnx()
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = Path(src)
    ident = {"src": file_sha256(src), "settings": FP16_SETTINGS, "onnxruntime": onnxruntime.__version__}
    out = _derived_path(src, "fp16", ident, Path(directory) if directory else None)
    settings = {**FP16_SETTINGS, "source_sha256": ident["src"]}
    if out.exists():
        return out, settings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 value ... will be truncated"
        m16 = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                       min_positive_val=FP16_SETTINGS["min_positive_val"],
                                       max_finite_val=FP16_SETTINGS["max_finite_val"])
    _atomic_save(lambda p: onnx.save(m16, str(p)), out)
    return out, settings


def default_heads(dit: DiT) -> tuple[int, int]:
    """(num_heads, hidden_size) for the fusion optimizer: the estimator's attention geometry."""
    return int(dit.cfg.heads), int(dit.cfg.heads * dit.cfg.dim_head)


__all__ = ["EstimatorGraph", "ExportOptions", "ExportInfo", "export_estimator", "cached_export", "check_exported",
           "fused_graph", "fp16_graph", "weights_sha256", "file_sha256", "cache_dir", "INPUT_NAMES", "MASK_INPUT",
           "OUTPUT_NAME", "OPSET"]


def export_from(out: str | Path | None = None, *, preset: str | None = None, model_dir: str | Path | None = None,
                options: ExportOptions | None = None) -> ExportInfo:
    """``parity export-onnx``: load a preset or a model directory (released layout) and export its estimator.
    ``out`` defaults to ``<model_dir>/flow.decoder.estimator.fp32.onnx`` (upstream's name and place)."""
    from reference.model import Token2Wav

    if out is None:
        if not model_dir:
            raise InputError("--out is required with --preset (a model directory gets "
                             "flow.decoder.estimator.fp32.onnx by default)")
        out = Path(model_dir) / ("flow.decoder.estimator.fp32" + ("-mask" if options and options.mask_input else "")
                                 + ".onnx")
    model = Token2Wav.load(None if model_dir else preset, model_dir)
    return export_estimator(model.flow.decoder.estimator.eval(), out, options)
