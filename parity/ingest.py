"""Reading traces from anywhere: this project's safetensors traces, other implementations' safetensors,
``.npz`` archives and directories of ``.npy`` files (with an optional ``metadata.json``/``meta.json``).

Names are mapped to canonical stages through :mod:`parity.aliases`; every rename and every
combination is returned as a normalisation so the result can list it.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reference.errors import InputError

from .aliases import ASSUMPTIONS, COMBINE, canonical_meta_key, canonical_name, session_assumption
from .stages import parse_chunk
from .trace import JOURNAL_SUFFIX, journal_path, read_trace


@dataclass
class Loaded:
    """A trace with canonical names: tensors (original dtypes kept), metadata, and what was done."""

    tensors: dict[str, torch.Tensor]
    metadata: dict
    path: str
    original_names: dict[str, str] = field(default_factory=dict)  # canonical -> name in the file
    normalisations: list[dict] = field(default_factory=list)
    dialect: str = "canonical"


# what a canonical metadata key must hold for an alias to fill it (a dump's "steps" may be a per-step table)
META_KINDS = {"n_timesteps": (lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool)
                              and _is_int_like(v), "a step count"),
              "cfg_rate": (lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool) and _is_float(v),
                           "a number"),
              "t_scheduler": (lambda v: isinstance(v, str), "a scheduler name")}


def _is_float(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_int_like(v) -> bool:
    return _is_float(v) and float(v) == int(float(v))


def _kind_of(v) -> str:
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)} entries"
    if isinstance(v, dict):
        return f"a table of {len(v)} keys"
    return f"a {type(v).__name__}"


def meta_value_fits(key: str, value) -> bool:
    """``value`` is of the kind the canonical metadata ``key`` holds (keys without a kind take anything)."""
    kind = META_KINDS.get(key)
    return kind is None or bool(kind[0](value))


def _np_to_torch(a: np.ndarray, name: str, path: Path) -> torch.Tensor:
    if a.dtype == object or a.dtype.kind in "USV":
        raise InputError(f"{path}: array {name!r} has dtype {a.dtype}, expected a numeric tensor")
    if a.dtype == np.uint16:  # raw bf16 bits written by some ports
        return torch.from_numpy(a.astype(np.int32)).to(torch.int32)
    return torch.from_numpy(np.ascontiguousarray(a))


def _read_meta_file(d: Path) -> dict:
    for n in ("metadata.json", "meta.json", "__metadata__.json"):
        if (d / n).exists():
            try:
                return json.loads((d / n).read_text())
            except ValueError as exc:
                raise InputError(f"{d / n}: not valid JSON ({exc})") from exc
    return {}


def read_any(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors (file names) and metadata from a safetensors file, an npz, or an npy directory."""
    path = Path(path)
    if not path.exists() and not journal_path(path).exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        chunked = _chunk_dir_tensors(path)
        if not files and chunked:
            return chunked, _read_meta_file(path)
        if not files:
            sts = sorted(path.glob("*.safetensors"))
            if len(sts) == 1:
                return read_any(sts[0])
            raise InputError(f"{path}: directory holds no .npy files (expected one file per tensor)")
        tensors = {}
        for f in files:
            try:
                tensors[f.stem] = _np_to_torch(np.load(f, allow_pickle=False), f.stem, f)
            except (ValueError, OSError) as exc:
                raise InputError(f"{f}: not a readable .npy file ({exc})") from exc
        tensors.update(chunked)
        return tensors, _read_meta_file(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                tensors = {k: _np_to_torch(z[k], k, path) for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a readable .npz archive ({exc})") from exc
        meta = {}
        side = path.with_suffix(".json")
        if side.exists():
            meta = json.loads(side.read_text())
        return tensors, meta
    if path.suffix == ".npy":
        try:
            return {path.stem: _np_to_torch(np.load(path, allow_pickle=False), path.stem, path)}, {}
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
    tr = read_trace(path)  # safetensors (ours or foreign), or a journal left by a crash
    return tr.tensors, tr.metadata


_CHUNK_DIR = re.compile(r"^(?:chunk[_-]?)?(\d+)$")


def _chunk_dir_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Chunked dumps: one folder of .npy files per chunk (``chunk_0/``, ``chunk1/``, ``2/``, also under a
    ``chunks/`` folder); each tensor is named ``<folder>/<file stem>`` for the alias table to map."""
    out: dict[str, torch.Tensor] = {}
    roots = [path] + ([path / "chunks"] if (path / "chunks").is_dir() else [])
    for root in roots:
        for d in sorted(p for p in root.iterdir() if p.is_dir() and _CHUNK_DIR.match(p.name)):
            for f in sorted(d.glob("*.npy")):
                try:
                    out[f"{d.name}/{f.stem}"] = _np_to_torch(np.load(f, allow_pickle=False), f.stem, f)
                except (ValueError, OSError) as exc:
                    raise InputError(f"{f}: not a readable .npy file ({exc})") from exc
    return out


def load(path: str | Path, extra_map: dict[str, str] | None = None) -> Loaded:
    raw, meta = read_any(path)
    out: dict[str, torch.Tensor] = {}
    orig: dict[str, str] = {}
    norms: list[dict] = []
    dialect = "canonical"
    # two-part tensors first
    for canon, (a, b) in COMBINE.items():
        if a in raw and b in raw and canon not in raw:
            ra, rb = raw.pop(a), raw.pop(b)
            if ra.shape != rb.shape:
                raise InputError(f"{path}: {a} {list(ra.shape)} and {b} {list(rb.shape)} differ in shape")
            out[canon] = torch.cat([ra.reshape(1, -1, ra.shape[-1]) if ra.dim() < 3 else ra,
                                    rb.reshape(1, -1, rb.shape[-1]) if rb.dim() < 3 else rb], dim=1)
            orig[canon] = f"{a}+{b}"
            norms.append({"stage": canon, "kind": "combine", "detail": f"concatenated {a} and {b} along channels"})
    for name, t in raw.items():
        canon = canonical_name(name, extra_map)
        if canon != name:
            dialect = "aliased"
        if canon in out:
            # an exact canonical name beats an alias
            if orig.get(canon) == canon:
                norms.append({"stage": canon, "kind": "alias-collision",
                              "detail": f"{name!r} also maps to {canon!r}; kept {orig[canon]!r}"})
                continue
            if name == canon:
                norms.append({"stage": canon, "kind": "alias-collision",
                              "detail": f"{orig[canon]!r} also maps to {canon!r}; kept {name!r}"})
            else:
                norms.append({"stage": canon, "kind": "alias-collision",
                              "detail": f"{name!r} also maps to {canon!r}; kept {orig[canon]!r}"})
                continue
        out[canon] = t
        orig[canon] = name
        if canon != name:
            note = {"stage": canon, "kind": "rename", "detail": f"{name!r} -> {canon!r}"}
            if name in ASSUMPTIONS or session_assumption(name):
                note["assumption"] = ASSUMPTIONS.get(name) or session_assumption(name)
            norms.append(note)
    meta2 = dict(meta)  # exact keys win; aliases only fill canonical keys that are absent, with a value that fits
    for k, v in meta.items():
        ck = canonical_meta_key(k)
        if ck != k and ck not in meta:
            if meta_value_fits(ck, v):
                meta2.setdefault(ck, v)
            else:
                norms.append({"stage": None, "kind": "metadata",
                              "detail": f"metadata {k!r} holds {_kind_of(v)}, not {META_KINDS[ck][1]}: not read as "
                                        f"{ck!r}"})
    if one_call_dump(out, meta2):
        out, orig, norms, dialect = as_one_call(out, orig, norms)
    return Loaded(out, meta2, str(path), orig, norms, dialect)


# a call's control values: what a session passes to each call (a single call has none to compare)
_CALL_CONTROL = {"tokens", "token_offset", "finalize", "streaming"}
# a call's outputs under the single-call names they are for N = 1: the frames it appended are its flow output
_CALL_AS_ONE = {"mel": "flow_mel", "flow_mel_full": "flow_mel"}


def one_call_dump(tensors: dict, meta: dict) -> bool:
    """A dump of ONE call written with chunk-scoped names (``chunk0.mu``, ``chunk_0_mel``, ...): every chunk stage
    is call 0's, no ``stream.*`` stage, and no session metadata (a streaming session's trace keeps its names,
    however many calls it made)."""
    if meta.get("session") or any(n.startswith("stream.") for n in tensors):
        return False
    calls = {c[0] for c in (parse_chunk(n) for n in tensors) if c is not None}
    return calls == {0}


def as_one_call(tensors: dict, orig: dict, norms: list) -> tuple[dict, dict, list, str]:
    """The chunk-scoped names of a one-call dump as the single-call names they alias for N = 1: ``chunk0.<stage>``
    is ``<stage>``, the call's appended frames (``mel``; else its flow output ``flow_mel_full``) are ``flow_mel``;
    its control values have no single-call counterpart and are left out. Every renaming is listed."""
    out: dict = {n: t for n, t in tensors.items() if parse_chunk(n) is None}
    o2 = {n: orig.get(n, n) for n in out}
    notes = list(norms)
    for name in sorted(tensors, key=lambda n: (parse_chunk(n) or (0, ""))[1] == "flow_mel_full"):
        ch = parse_chunk(name)
        if ch is None:
            continue
        field = ch[1]
        if field in _CALL_CONTROL:
            notes.append({"stage": name, "kind": "one-call", "detail": f"{name!r}: a call's control value, left out "
                                                                       f"(a single call has none)"})
            continue
        canon = _CALL_AS_ONE.get(field, field)
        if canon in out:
            notes.append({"stage": canon, "kind": "alias-collision", "detail": f"{name!r} also maps to {canon!r}; "
                                                                               f"kept {o2[canon]!r}"})
            continue
        out[canon], o2[canon] = tensors[name], orig.get(name, name)
        notes.append({"stage": canon, "kind": "one-call", "detail": f"{name!r} -> {canon!r} (a dump of one call: "
                                                                    f"the chunk-scoped name of call 0)"})
    return out, o2, notes, "aliased"


def tensors_from_sources(result) -> tuple[dict | None, dict | None, str | None]:
    """The tensors of the two traces a comparison result names (``result.sources``), when they still exist:
    ``(ref tensors or None, cand tensors or None, note or None)``; the note says what could not be read."""
    src = result.sources
    r, c = src.get("ref"), src.get("cand")
    if not (isinstance(r, str) and isinstance(c, str)):
        return None, None, None
    out, notes = [], []
    for p in (r, c):
        if not Path(p).exists():
            out.append(None)
            continue
        try:
            out.append(load(p).tensors)
        except Exception as exc:  # noqa: BLE001 - the result is still worth a report
            out.append(None)
            notes.append(f"{p}: {exc}")
    if out[0] is None and out[1] is None:
        return None, None, ("the traces named in the result (" + ", ".join(notes or [r, c]) +
                            ") could not be read: plots omitted") if notes else None
    return out[0], out[1], ("; ".join(notes) if notes else None)


__all__ = ["Loaded", "load", "read_any", "tensors_from_sources", "JOURNAL_SUFFIX"]
