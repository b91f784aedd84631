"""Traces: named stage tensors plus provenance metadata, in a safetensors file.

Writing is incremental. Each stage is appended to a journal ``<trace>.partial`` as it is recorded
(a length-prefixed JSON header + the raw bytes, flushed), so a crash -- even a killed process --
keeps everything captured so far. ``close()`` turns the journal into the final safetensors file
(``__metadata__`` holds the provenance as JSON strings) and removes the journal; ``close(error=...)``
does the same and records where and why the run stopped. ``read_trace`` reads a finished trace or,
when only the journal exists, recovers it.

The trace is written through :func:`parity.outputs.output_file` (atomically beside a regular file; through a
device, FIFO or ``/dev/stdout``). A trace that goes to such a stream keeps its journal in the temporary
directory instead (``tts-parity-journals-<uid>/``, said on stderr when the writer opens), never beside the
device. A write that fails (no space, quota, I/O) removes the journal and the temporary and raises an
:class:`parity.outputs.OutputError` naming the file; a pipeline crash still closes the trace with the error.

Journal record: 8-byte little-endian header length, UTF-8 JSON header
``{"kind": "tensor", "name", "dtype", "shape", "nbytes"}`` followed by the tensor bytes, or
``{"kind": "meta", "key", "value"}`` for a metadata entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from reference.errors import InputError

JOURNAL_SUFFIX = ".partial"
TRACE_FORMAT = "tts-parity-trace/1"

_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def journal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def stream_journal_path(path: str | Path) -> Path:
    """Where the journal of a trace written to a device, FIFO or descriptor lives: the temporary directory."""
    from .outputs import unique_stamp

    d = Path(tempfile.gettempdir()) / f"tts-parity-journals-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d / f"{Path(path).name or 'trace'}-{unique_stamp()}{JOURNAL_SUFFIX}"


class TraceWriter:
    """Append stages to a journal as they arrive; ``close`` writes the safetensors trace."""

    def __init__(self, path: str | Path, metadata: dict | None = None):
        from .outputs import is_regular_output, output_label, write_error

        self.path = Path(path)
        self.names: list[str] = []
        self.closed = False
        try:
            if is_regular_output(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.journal = journal_path(self.path)
            else:  # never beside a device (no /dev/null.partial): in the temporary directory, and said
                self.journal = stream_journal_path(self.path)
                print(f"parity: {output_label(self.path)} is not a regular file: the trace is written there when "
                      f"the run ends; until then its journal is {self.journal} (kept if the run is interrupted)",
                      file=sys.stderr)
            self._f = open(self.journal, "wb")
        except OSError as exc:
            raise write_error(self.path, exc, what="its journal") from exc
        for k, v in (metadata or {}).items():
            self.set_metadata(k, v)

    def _abort(self) -> None:
        """A write failed: nothing half-written stays behind (the journal of a failed write is no record)."""
        self.closed = True
        with contextlib.suppress(OSError, ValueError):
            self._f.close()
        with contextlib.suppress(OSError):
            os.remove(self.journal)

    def _append(self, header: dict, payload: bytes = b"") -> None:
        from .outputs import write_error

        if self.closed:
            raise RuntimeError(f"trace {self.path} is closed")
        h = json.dumps(header).encode()
        try:
            self._f.write(struct.pack("<Q", len(h)))
            self._f.write(h)
            if payload:
                self._f.write(payload)
            self._f.flush()
        except OSError as exc:
            self._abort()
            raise write_error(self.path, exc, what=f"its journal {self.journal.name}") from exc

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self.closed:
            raise RuntimeError(f"trace {self.path} is closed")
        t = tensor.detach().to("cpu").contiguous()
        if name in self.names:
            raise ValueError(f"stage {name!r} recorded twice in {self.path}")
        payload = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        self._append({"kind": "tensor", "name": name, "dtype": _dtype_name(t.dtype), "shape": list(t.shape),
                      "nbytes": len(payload)}, payload)
        self.names.append(name)

    def set_metadata(self, key: str, value) -> None:
        self._append({"kind": "meta", "key": key, "value": value})

    def close(self, error: BaseException | None = None, stage: str | None = None) -> Path:
        """Finish the trace. With ``error``, the metadata says the run crashed, at which stage and why."""
        if self.closed:
            return self.path
        if error is not None:
            self.set_metadata("status", "crashed")
            self.set_metadata("error", {"type": type(error).__name__, "message": str(error)[:2000],
                                        "stage": stage, "last_recorded": self.names[-1] if self.names else None})
        else:
            self.set_metadata("status", "complete")
        from .outputs import OutputError, write_error

        try:
            self._f.close()
        except OSError as exc:
            self._abort()
            raise write_error(self.path, exc, what=f"its journal {self.journal.name}") from exc
        self.closed = True
        tensors, meta = _read_journal(self.journal)
        try:
            _write_safetensors(self.path, tensors, meta)
        except OutputError:
            self._abort()
            raise
        os.remove(self.journal)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(error=exc)
        return False


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    meta = dict(meta)
    meta.setdefault("format", TRACE_FORMAT)
    meta["stage_order"] = list(tensors)
    str_meta = {k: json.dumps(v) for k, v in meta.items()}
    from .outputs import write_output

    write_output(path, safetensors_bytes({k: v.contiguous() for k, v in tensors.items()}, metadata=str_meta))


def _read_journal(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {}
    data = path.read_bytes()
    pos = 0
    while pos + 8 <= len(data):
        (hlen,) = struct.unpack_from("<Q", data, pos)
        if pos + 8 + hlen > len(data):
            break  # torn header at the end of a killed run
        try:
            header = json.loads(data[pos + 8: pos + 8 + hlen])
        except ValueError:
            break
        pos += 8 + hlen
        if header.get("kind") == "meta":
            meta[header["key"]] = header["value"]
            continue
        n = header["nbytes"]
        if pos + n > len(data):
            break  # torn payload
        dt = _DTYPES[header["dtype"]]
        buf = np.frombuffer(data, dtype=np.uint8, count=n, offset=pos).copy()
        t = torch.from_numpy(buf).view(dt) if n else torch.empty(0, dtype=dt)
        tensors[header["name"]] = t.reshape(header["shape"])
        pos += n
    return tensors, meta


@dataclass
class Trace:
    """A read trace: tensors in recording order and the decoded metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    @property
    def status(self) -> str:
        return self.metadata.get("status", "unknown")


def _decode_meta(raw: dict[str, str]) -> dict:
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (ValueError, TypeError):
            out[k] = v  # foreign traces store plain strings
    return out


def read_trace(path: str | Path) -> Trace:
    """Read a trace written by :class:`TraceWriter` (or any safetensors file), recovering a journal
    left behind by a killed run."""
    path = Path(path)
    if not path.exists():
        j = journal_path(path)
        if j.exists():
            tensors, meta = _read_journal(j)
            meta.setdefault("status", "incomplete")
            meta["recovered_from_journal"] = str(j.name)
            return Trace(tensors, meta, path)
        raise InputError(f"{path}: trace file not found")
    if path.name.endswith(JOURNAL_SUFFIX):
        tensors, meta = _read_journal(path)
        meta.setdefault("status", "incomplete")
        return Trace(tensors, meta, path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            meta = _decode_meta(raw)
            order = meta.get("stage_order") if isinstance(meta.get("stage_order"), list) else None
            keys = list(f.keys())
            names = [n for n in order if n in keys] + [n for n in keys if n not in order] if order else keys
            tensors = {n: f.get_tensor(n) for n in names}
    except Exception as exc:
        raise InputError(f"{path}: not a readable safetensors trace ({type(exc).__name__}: {exc})") from exc
    return Trace(tensors, meta, path)


def write_trace(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Write a complete trace in one go (used for derived traces, goldens and tests)."""
    path = Path(path)
    meta = dict(metadata or {})
    meta.setdefault("status", "complete")
    _write_safetensors(path, {k: v.detach().cpu() for k, v in tensors.items()}, meta)
    return path


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")



def sample_rate_of(meta: dict | None) -> int:
    """The audio sample rate a trace's metadata records (``sample_rate``, from the model's configuration), else
    the configuration's default (:data:`reference.config.SAMPLE_RATE`): the one place a trace's rate is read."""
    from reference.config import SAMPLE_RATE

    v = (meta or {}).get("sample_rate") if isinstance(meta, dict) else None
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else SAMPLE_RATE
