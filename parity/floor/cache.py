"""Cache keys and the on-disk floor cache.

A floor is a function of (model, bundle, mode, torch version, kind, recipe). The key is built from what a
reference trace records about itself, so that the verdict can find the floor of ``parity compare ref.safetensors
port.safetensors`` from the reference trace alone:

* model: the weights hashes over the released key format (``weights.flow_sha256``, ``weights.hift_sha256``
  of the trace metadata), the shared-noise fingerprint, and the numerics the metadata names
  (``n_timesteps``, ``t_scheduler``, ``cfg_rate``);
* bundle: SHA-256 of the four input tensors (``token``, ``prompt_token``, ``prompt_feat``, ``embedding``:
  name, shape and bytes, ids as int64, features as float32), which every trace records as stages;
* mode: ``streaming`` and ``finalize``; the torch version; the floor kind (fp32 / bf16 / fp16 / int8,
  with the emulation's precision spec); the recipe (members, seeds, margins, format version).

Not in the key: the CPU. Floors are statistics, not bits; a floor computed on an AVX-512 machine judges an
AVX2 run equally well (the thread and kernel members already move the last bits).

Cache layout: ``<dir>/<digest[:2]>/<digest>.json`` (one :class:`~parity.floor.types.Floor` JSON per key),
written atomically; ``dir`` is ``$PARITY_FLOOR_CACHE``, else ``$XDG_CACHE_HOME/tts-parity/floors``, else
``~/.cache/tts-parity/floors``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from reference.errors import InputError

from .types import Floor

INPUT_NAMES = ("token", "prompt_token", "prompt_feat", "embedding")


def bundle_hash(inputs: dict) -> str:
    """SHA-256 over the four input tensors (canonical dtypes), hex."""
    h = hashlib.sha256()
    for name in INPUT_NAMES:
        if name not in inputs:
            raise InputError(f"bundle: tensor '{name}' is missing (needed for the floor's cache key)")
        t = inputs[name].detach().cpu()
        t = t.to(torch.int64) if name in ("token", "prompt_token") else t.to(torch.float32)
        h.update(f"{name}:{list(t.shape)}:{t.dtype}|".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fields(meta: dict) -> dict:
    """The model part of the key from trace metadata (or ``Token2Wav.provenance()``)."""
    w = meta.get("weights") or {}
    noise = meta.get("noise") or {}
    missing = [k for k, v in (("weights.flow_sha256", w.get("flow_sha256")), ("weights.hift_sha256", w.get("hift_sha256")),
                              ("noise.fingerprint", noise.get("fingerprint"))) if not v]
    if missing:
        raise InputError(f"trace metadata lacks {', '.join(missing)}: the floor's model cannot be identified "
                         "(give the floor explicitly)")
    return {"flow_sha256": w["flow_sha256"], "hift_sha256": w["hift_sha256"], "noise": noise["fingerprint"],
            "n_timesteps": meta.get("n_timesteps"), "t_scheduler": meta.get("t_scheduler"),
            "cfg_rate": meta.get("cfg_rate")}


def make_key(meta: dict, inputs: dict, *, streaming: bool, finalize: bool, kind: str, recipe: dict,
             torch_version: str | None = None, session: dict | None = None) -> tuple[dict, str]:
    """(key fields, hex digest). ``session``: a multi-call session's kind and resolved options (``{"kind":
    "streaming", "options": {...}}``: the calls it makes and the stages it records); absent for a single call."""
    key = {"model": model_fields(meta), "bundle": bundle_hash(inputs), "streaming": bool(streaming),
           "finalize": bool(finalize), "torch": torch_version or torch.__version__, "kind": kind,
           "recipe": recipe}
    if session is not None:
        key["session"] = session
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return key, digest


def family_digest(key: dict) -> str:
    """The digest of a key without its bundle: the floors of one model, mode, torch, kind and recipe on any bundle
    (those a transferred floor may be calibrated on, :mod:`parity.floor.transfer`)."""
    rest = {k: v for k, v in key.items() if k != "bundle"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def key_from_trace(meta: dict, tensors: dict, *, kind: str, recipe: dict) -> tuple[dict, str]:
    """The key of the floor a reference trace needs (its metadata and its recorded input stages)."""
    streaming = bool(meta.get("streaming", False))
    finalize = bool(meta.get("finalize", True))
    torch_version = (meta.get("env") or {}).get("torch")
    return make_key(meta, tensors, streaming=streaming, finalize=finalize, kind=kind, recipe=recipe,
                    torch_version=torch_version, session=session_of(meta))


def session_of(meta: dict) -> dict | None:
    """The session part of a trace's key: its kind and resolved options (None for a single call). InputError for a
    session trace without its options."""
    kind = meta.get("session") if isinstance(meta, dict) else None
    if kind in (None, "single"):
        return None
    opts = meta.get("session_options")
    if not isinstance(opts, dict):
        raise InputError(f"the {kind} session trace lacks its session_options metadata: its floor cannot be identified")
    return {"kind": kind, "options": dict(opts)}


def default_cache_dir() -> Path:
    env = os.environ.get("PARITY_FLOOR_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tts-parity" / "floors"


class FloorCache:
    """Floors on disk by digest. ``hits``/``misses`` count lookups in this object's life."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> Floor | None:
        p = self.path(digest)
        if not p.exists():
            self.misses += 1
            return None
        try:
            floor = Floor.load(p)
        except InputError:
            self.misses += 1  # a damaged entry is recomputed and overwritten
            return None
        if floor.digest != digest:
            self.misses += 1
            return None
        self.hits += 1
        return floor

    def put(self, floor: Floor) -> Path:
        out = floor.save(self.path(floor.digest))
        self._index_calibration(floor)
        return out

    # -- calibrations of transferred floors: <dir>/calibrations/<family digest>.cal (JSON), {digest: calibration}
    def _calibration_path(self, family: str) -> Path:
        return self.dir / "calibrations" / f"{family}.cal"

    def _index_calibration(self, floor: Floor) -> None:
        from .calibrate import calibration

        if floor.kind != "fp32" or floor.recipe.get("method") == "transfer" or not floor.calibration:
            return
        try:
            cal = calibration(floor)
        except ValueError:
            return
        p = self._calibration_path(family_digest(floor.key))
        cur = self.calibrations(family_digest(floor.key))
        cur[floor.digest] = cal
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cur, sort_keys=True))
        os.replace(tmp, p)

    def calibrations(self, family: str) -> dict:
        """{digest: calibration} of the full fp32 floors cached for one model, mode and recipe (any bundle)."""
        p = self._calibration_path(family)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) else {}
