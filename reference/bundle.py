"""Input bundles: the four tensors ``CausalMaskedDiffWithDiT.inference`` takes, in one safetensors file.

A bundle holds (batch size 1, upstream's names and layouts):

=================  ===========  ===========================  ==========================================
tensor             dtype        shape                        meaning
=================  ===========  ===========================  ==========================================
``token``          int32        ``[1, N]``, N >= 1           target speech tokens (25 Hz, ids 0..6560)
``prompt_token``   int32        ``[1, P]``, P >= 0           prompt speech tokens
``prompt_feat``    float32      ``[1, 2P, 80]`` time-major   prompt log-mel (``reference.mel`` recipe)
``embedding``      float32      ``[1, 192]``                 speaker x-vector (not normalised)
=================  ===========  ===========================  ==========================================

(the widths and the ``2`` are the released model's: ``bundle_dims(cfg)`` gives another model's vocabulary,
mel width, x-vector width and ``token_mel_ratio``) and string metadata (``__metadata__``) saying how it
was made. Other tensors may ride along (a noise buffer, expected outputs): :func:`load_bundle` returns
them unchecked.

Dtypes on reading: token ids may be stored as int32 (canonical; what :func:`save_bundle` writes) or int64;
either way :func:`load_bundle` returns them as ``torch.int64`` (``long``), the dtype embedding look-ups
index with, so callers never branch on the file's choice. ``prompt_feat`` and ``embedding`` may be stored
in any float dtype and come back as float32. Ids are checked against the vocabulary's upper end only:
upstream clamps negative ids to 0, and so does the reference flow.

:func:`save_bundle` writes the safetensors format itself (8-byte little-endian header length, JSON header,
raw little-endian data; see the safetensors specification) with sorted keys, because the ``safetensors``
package orders ``__metadata__`` keys differently on each run; so the same tensors and metadata always give
the same bytes, and the fixture bundles can be checked bit for bit. Any safetensors reader reads them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from .errors import InputError

BUNDLE_FORMAT = "tts-parity-input-bundle/1"
REQUIRED = ("token", "prompt_token", "prompt_feat", "embedding")
# the released model's sizes: the defaults; bundle_dims(cfg) gives another model's
VOCAB_SIZE = 6561
MEL_DIM = 80
SPK_DIM = 192
TOKEN_MEL_RATIO = 2

# names other dumps use for the same tensors (shared/docs/field-notes.md section 2), for error hints
_ALIASES = {
    "token": ("speech_tokens", "python_speech_tokens", "tokens", "speech_token"),
    "prompt_token": ("prompt_speech_token", "llm_prompt_speech_token", "prompt_speech_tokens",
                     "flow_prompt_speech_token", "prompt_tokens"),
    "prompt_feat": ("speech_feat", "prompt_speech_feat", "python_mel_24k", "prompt_mel", "speaker_feat_16k"),
    "embedding": ("speaker_embedding", "flow_embedding", "llm_embedding", "python_spk_emb", "spk_emb"),
}

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


# ---------------------------------------------------------------------------------------------
# writing


def save_bundle(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                *, validate: bool = True) -> Path:
    """Write ``tensors`` and ``metadata`` to ``path`` as a deterministic safetensors file.

    Tensors are written in name order, metadata keys sorted, values must be strings (use ``json.dumps``
    for structured values). ``metadata['format']`` is set to :data:`BUNDLE_FORMAT` unless given. With
    ``validate`` (default) the four required tensors are checked as :func:`load_bundle` would, before
    anything is written. Returns the path.
    """
    path = Path(path)
    meta = {"format": BUNDLE_FORMAT}
    meta.update(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InputError(f"{path}: bundle metadata must map str to str; {k!r} -> {type(v).__name__}")
    if validate:
        validate_bundle(tensors, source=str(path))
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{path}: tensor '{name}' is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype not in _ST_DTYPES:
            raise InputError(f"{path}: tensor '{name}' has dtype {t.dtype}, which safetensors cannot store")
        t = t.detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the spec allows trailing spaces; 8-byte alignment of the data
    from .files import output_file  # the one way to write a file (atomic, streams)

    with output_file(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    return path


# ---------------------------------------------------------------------------------------------
# reading


def _open(path: Path):
    from safetensors import safe_open

    if not path.exists():
        raise InputError(f"{path}: bundle file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as exc:  # SafetensorError, OSError: header too large/short, bad JSON, truncated data
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from exc
    return handle


def read_bundle_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a bundle (empty dict if it has none)."""
    path = Path(path)
    with _open(path) as f:
        return dict(f.metadata() or {})


def bundle_dims(cfg) -> dict[str, int]:
    """The keyword arguments of :func:`load_bundle` / :func:`validate_bundle` for the model a
    :class:`reference.config.ModelConfig` describes (vocabulary, mel width, x-vector width, mel frames
    per token)."""
    f = cfg.flow
    return {"vocab": f.vocab_size, "mel_dim": f.output_size, "spk_dim": f.spk_embed_dim,
            "token_mel_ratio": f.token_mel_ratio}


def load_bundle(path: str | Path, *, vocab: int = VOCAB_SIZE, mel_dim: int = MEL_DIM,
                spk_dim: int = SPK_DIM, token_mel_ratio: int = TOKEN_MEL_RATIO) -> dict[str, torch.Tensor]:
    """Read and validate an input bundle; returns ``{name: tensor}`` for every tensor in the file.

    ``token``/``prompt_token`` come back as ``torch.int64``, ``prompt_feat``/``embedding`` as float32 (see
    the module docstring); other tensors are returned as stored. Every problem raises
    :class:`InputError` naming the file, the tensor and what was expected: a missing file, a file that is
    not safetensors (or is truncated), a missing tensor (with a hint when another dump's name for it is
    present), a wrong dtype, rank or shape, ``prompt_feat`` stored channel-major ``[1, 80, 2P]``, a
    ``prompt_feat`` whose length is not ``token_mel_ratio * P``, NaN/Inf values, or token ids past the
    vocabulary. The sizes default to the released model's; pass ``**bundle_dims(cfg)`` for another model.
    """
    path = Path(path)
    with _open(path) as f:
        names = list(f.keys())
        tensors = {}
        for name in names:
            try:
                tensors[name] = f.get_tensor(name)
            except Exception as exc:
                raise InputError(f"{path}: tensor '{name}' cannot be read ({exc})") from exc
    return validate_bundle(tensors, source=str(path), vocab=vocab, mel_dim=mel_dim, spk_dim=spk_dim,
                           token_mel_ratio=token_mel_ratio)


def negative_token_note(tensors: dict[str, torch.Tensor], source: str | Path = "bundle") -> str | None:
    """One sentence when the bundle holds negative token ids (upstream's flow clamps them to 0, and so does
    the reference): how many, where, and what happens to them; None when there are none."""
    parts = []
    for name in ("token", "prompt_token"):
        t = tensors.get(name)
        if t is not None and not t.is_floating_point() and t.numel():
            n = int((t < 0).sum())
            if n:
                parts.append(f"{n} in '{name}' (min {int(t.min())})")
    if not parts:
        return None
    total = sum(int(p.split(" ", 1)[0]) for p in parts)
    return (f"{source}: {total} negative token id{'s' if total > 1 else ''} ({', '.join(parts)}) clamped to 0 "
            f"before the embedding, as upstream does")


def validate_bundle(tensors: dict[str, torch.Tensor], *, source: str = "bundle", vocab: int = VOCAB_SIZE,
                    mel_dim: int = MEL_DIM, spk_dim: int = SPK_DIM,
                    token_mel_ratio: int = TOKEN_MEL_RATIO) -> dict[str, torch.Tensor]:
    """Check the four bundle tensors (rules of :func:`load_bundle`); returns a new dict with token tensors
    as int64 and float tensors as float32, other entries unchanged. ``source`` starts every message."""

    def fail(msg: str):
        raise InputError(f"{source}: {msg}")

    out = dict(tensors)
    for name in REQUIRED:
        if name not in tensors:
            present = sorted(tensors)
            hint = [a for a in _ALIASES.get(name, ()) if a in tensors]
            msg = f"tensor '{name}' is missing (the file has: {', '.join(present) if present else 'no tensors'})"
            if hint:
                msg += f"; '{hint[0]}' looks like the same data under another dump's name: rename it to '{name}'"
            fail(msg)

    # token ids
    for name, min_len in (("token", 1), ("prompt_token", 0)):
        t = tensors[name]
        if t.dtype not in (torch.int32, torch.int64):
            kind = "floating point" if t.is_floating_point() else str(t.dtype)
            fail(f"tensor '{name}' must hold int32 (or int64) token ids, got {kind} ({t.dtype})")
        if t.dim() != 2 or t.shape[0] != 1:
            hint = " (add the batch axis: unsqueeze(0))" if t.dim() == 1 else ""
            fail(f"tensor '{name}' must have shape [1, {'N' if name == 'token' else 'P'}], "
                 f"got {list(t.shape)}{hint}")
        if t.shape[1] < min_len:
            fail(f"tensor '{name}' is empty; at least one target token is needed")
        if t.numel() and int(t.max()) >= vocab:
            fail(f"tensor '{name}' holds token id {int(t.max())}, outside the vocabulary 0..{vocab - 1}")
        out[name] = t.to(torch.int64)
    n_prompt = tensors["prompt_token"].shape[1]

    # prompt_feat: [1, 2P, mel_dim] time-major
    feat = tensors["prompt_feat"]
    if not feat.is_floating_point():
        fail(f"tensor 'prompt_feat' must be float32 log-mel, got {feat.dtype}")
    r = token_mel_ratio
    if feat.dim() != 3 or feat.shape[0] != 1:
        hint = " (add the batch axis: unsqueeze(0))" if feat.dim() == 2 else ""
        fail(f"tensor 'prompt_feat' must have shape [1, {r}*P, {mel_dim}] (time-major), got {list(feat.shape)}{hint}")
    if feat.shape[2] != mel_dim:
        if feat.shape[1] == mel_dim:
            fail(f"tensor 'prompt_feat' has shape {list(feat.shape)}: it looks channel-major [1, {mel_dim}, frames]; "
                 f"bundles store it time-major [1, frames, {mel_dim}] as upstream's flow.inference takes it: "
                 f"transpose(1, 2) it")
        fail(f"tensor 'prompt_feat' must have shape [1, {r}*P, {mel_dim}] (time-major), got {list(feat.shape)}")
    if feat.shape[1] != r * n_prompt:
        fail(f"tensor 'prompt_feat' has {feat.shape[1]} frames, expected {r} * P = {r * n_prompt} for the "
             f"{n_prompt} prompt tokens (upstream's zero-shot front end cuts both to L = min(frames // {r}, P): "
             f"prompt_feat[:, :{r}L], prompt_token[:, :L])")

    # embedding: [1, spk_dim]
    emb = tensors["embedding"]
    if not emb.is_floating_point():
        fail(f"tensor 'embedding' must be a float32 speaker embedding, got {emb.dtype}")
    if tuple(emb.shape) != (1, spk_dim):
        hint = " (add the batch axis: unsqueeze(0))" if tuple(emb.shape) == (spk_dim,) else ""
        fail(f"tensor 'embedding' must have shape [1, {spk_dim}], got {list(emb.shape)}{hint}")

    for name, t in (("prompt_feat", feat), ("embedding", emb)):
        t32 = t.to(torch.float32)
        bad = ~torch.isfinite(t32)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t32).sum())
            first = [int(i) for i in bad.nonzero()[0]]
            fail(f"tensor '{name}' holds {n_nan} NaN and {int(bad.sum()) - n_nan} Inf values "
                 f"(first at index {first})")
        out[name] = t32
    return out
