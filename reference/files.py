"""How every file of the project is written (traces, results, reports, floors, WAVs, noise, models, ONNX graphs,
bisect files): the one write mechanism, for the harness's commands (:mod:`parity.outputs` checks and claims the
paths first; see its docstring for the contract) and for the model code that writes files (checkpoints, noise,
bundles, exported graphs).

* a regular file, or a path that does not exist yet, is written to a temporary name beside it and renamed onto
  it (a reader sees the old file or the new one, never half of one; a replaced file keeps its permission bits);
* a symbolic link is followed: its target is written and the link stays a link;
* a path that is not a regular file is never unlinked or renamed over: a character device, a FIFO,
  ``/dev/stdout``, ``/dev/stderr`` and ``/dev/fd/N`` are written through; a block device, a socket or a
  descriptor not open for writing is refused (:class:`OutputError`);
* on any write error the temporaries are removed and the error names the option (remembered from the command's
  checks, :func:`remember_output`), the file and the operating system's reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

try:  # descriptors' access modes: POSIX only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class OutputError(InputError):
    """An output that cannot be written (refused before the work, or a write the file system failed): one
    line naming the option and the file, exit 2."""


OPTION_OF: dict[str, tuple[str, str, bool]] = {}  # real path -> (option, the path it named, names it whole)


def remember_output(path, option: str, *, within: bool = False, named=None) -> None:
    """Note which option named ``path``, so that a write error names it. ``within``: ``path`` is a directory
    output, or a companion of the output ``named`` (a result's vectors sidecar, a report's case directory):
    a file there is named as part of that option's output. Two options may name one device (``--out/--wav``)."""
    if path is None or not str(path):
        return
    key = os.path.realpath(path)
    old = OPTION_OF.get(key)
    if old is not None and old[2] and not within and option not in old[0].split("/"):
        option = f"{old[0]}/{option}"
    OPTION_OF[key] = (option, str(named if named is not None else path), not within)


def _label(path, option: str | None = None) -> tuple[str, str]:
    """(who, inner): the option and path a message names, and the file within that output (empty when the
    file is the output itself). ``--json x.json`` -> ("--json x.json", ""); its sidecar -> ("--json x.json",
    "x.vectors.npz"); a case page -> ("--report r.html", "r/a.html")."""
    if option:
        return f"{option} {path}", ""
    d = os.path.realpath(path)
    first = True
    while d:
        hit = OPTION_OF.get(d)
        if hit is not None and (not first or not hit[2]):
            return f"{hit[0]} {hit[1]}", str(path)
        if hit is not None:
            return f"{hit[0]} {path}", ""
        if d == os.path.dirname(d):
            break
        d, first = os.path.dirname(d), False
    return str(path), ""


def output_label(path) -> str:
    """How a message names an output: ``--out x.safetensors`` when an option named it, else the path."""
    who, inner = _label(path)
    return f"{who} ({inner})" if inner else who


_FD_PATH = re.compile(r"^/(?:dev/fd|proc/(?:self|thread-self|(\d+))/fd)/(\d+)$")
_STD_PATH = {"/dev/stdout": 1, "/dev/stderr": 2}


def fd_number(abspath: str) -> int | None:
    """The descriptor a path names: ``/dev/stdout`` 1, ``/dev/stderr`` 2, ``/dev/fd/N`` and
    ``/proc/self/fd/N`` (this process's) N; None for any other path."""
    if abspath in _STD_PATH:
        return _STD_PATH[abspath]
    m = _FD_PATH.match(abspath)
    if m and (m.group(1) is None or int(m.group(1)) == os.getpid()):
        return int(m.group(2))
    return None


@dataclass(frozen=True)
class Target:
    """Where an output really goes. ``kind``: ``file`` (a regular file or a missing path: written to a
    temporary name beside ``real`` and renamed onto it), ``device`` (a character device such as /dev/null),
    ``fifo`` (a named pipe) or ``fd`` (a descriptor of this process: /dev/stdout, /dev/fd/N). Devices, FIFOs
    and descriptors are written through, never unlinked or renamed over."""

    path: Path
    kind: str
    real: Path | None = None
    fd: int | None = None

    @property
    def regular(self) -> bool:
        return self.kind == "file"


def output_target(path, option: str | None = None) -> Target:
    """Classify an output path (symbolic links followed: a link is never replaced, its target is written).
    Raises :class:`OutputError` for what cannot be written through: a block device, a socket, a directory,
    a descriptor that is not open for writing, a device or FIFO without write permission."""
    who = f"{option} {path}" if option else str(path)
    p = os.path.abspath(path)
    for _ in range(40):  # follow links one hop at a time: a link to /dev/stdout is stdout, not its target
        n = fd_number(p)
        if n is not None:
            return Target(Path(path), "fd", None, _writable_fd(n, who))
        if not os.path.islink(p):
            break
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    real = os.path.realpath(p)
    n = fd_number(real)
    if n is not None:  # through a linked directory (/dev/fd -> /proc/self/fd)
        return Target(Path(path), "fd", None, _writable_fd(n, who))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return Target(Path(path), "file", Path(real))
    except OSError as exc:
        raise OutputError(f"{who}: cannot be checked ({exc.strerror})") from None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return Target(Path(path), "file", Path(real))
    if stat.S_ISDIR(mode):
        raise OutputError(f"{who}: is a directory (expected a file name)")
    if stat.S_ISBLK(mode):
        raise OutputError(f"{who}: is a block device; refusing to write over it (give a file name)")
    if stat.S_ISSOCK(mode):
        raise OutputError(f"{who}: is a socket, which cannot be opened as a file (give a file name or a FIFO)")
    kind = "fifo" if stat.S_ISFIFO(mode) else "device" if stat.S_ISCHR(mode) else None
    if kind is None:
        raise OutputError(f"{who}: is not a file, device or FIFO that can be written")
    if not os.access(real, os.W_OK):
        raise OutputError(f"{who}: no permission to write to this {'FIFO' if kind == 'fifo' else 'device'}")
    return Target(Path(path), kind, Path(real))


def _writable_fd(n: int, who: str) -> int:
    try:
        flags = fcntl.fcntl(n, fcntl.F_GETFL) if fcntl is not None else os.O_WRONLY
    except OSError:
        raise OutputError(f"{who}: descriptor {n} is not open") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OutputError(f"{who}: descriptor {n} is open for reading only")
    return n


def is_regular_output(path) -> bool:
    """Whether ``path`` is written as a regular file (atomically, with companions beside it) rather than
    through a device, FIFO or descriptor. A path that cannot be written at all counts as regular here (the
    write names the problem)."""
    if path is None:
        return True
    try:
        return output_target(path).regular
    except OutputError:
        return True


_SEQ = iter(range(1, 1 << 62))


def _fresh_temp(directory: Path, name: str, suffix: str) -> Path:
    """A new empty file ``<name>.<pid>.<n>.tmp<suffix>`` in ``directory``, created with the permissions a new
    file gets (0666 less the umask), never an existing one."""
    while True:
        tmp = directory / f"{name}.{os.getpid()}.{next(_SEQ)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _reason(exc: BaseException) -> str | None:
    """The operating system's reason inside ``exc`` (an OSError in its chain), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        m = re.search(r"\(os error (\d+)\)", str(exc))  # a native library's wrapped error (safetensors, ...)
        if m:
            return os.strerror(int(m.group(1)))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def write_error(path, exc: BaseException, option: str | None = None, what: str = "") -> OutputError:
    """The one-line error of a failed write: the option and file, what was written, the system's reason."""
    who, inner = _label(path, option)
    reason = _reason(exc) or f"{type(exc).__name__}: {exc}"
    target = f" {inner}" if inner else ""
    return OutputError(f"{who}: cannot write{target}{f' ({what})' if what else ''}: {reason}")


def _copy_through(src: Path, t: Target) -> None:
    """Write the bytes of ``src`` through a device, FIFO or descriptor. A reader that went away (a closed
    pipe on stdout or a FIFO) is no error: the rest is discarded, as for the command's own stdout."""
    if t.kind == "fd":
        if t.fd == 1:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
        elif t.fd == 2:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        fd, close = t.fd, False
    else:
        fd, close = os.open(t.real, os.O_WRONLY | getattr(os, "O_NOCTTY", 0)), True  # a FIFO waits for its reader
    try:
        with open(src, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    try:
                        n = os.write(fd, view)
                    except BrokenPipeError:
                        return
                    view = view[n:]
    finally:
        if close:
            os.close(fd)


@contextlib.contextmanager
def output_file(path, option: str | None = None, *, keep_suffix: bool = False, what: str = ""):
    """The one way the harness writes a file (reports, results and their sidecars, traces, floors, WAVs,
    policies, noise, models, ONNX graphs, bisect logs). Yields a fresh temporary path for the writer to fill;
    when the block ends without an exception the content goes to ``path``:

    * a regular file or a missing path: the temporary sits beside it and is renamed onto it (a reader sees
      the old file or the new one, never half of one); an existing file keeps its permission bits;
    * a symbolic link is followed: its target is written (beside the target), the link stays;
    * a character device (/dev/null), a FIFO, /dev/stdout, /dev/stderr, /dev/fd/N: the temporary sits in the
      temporary directory and its bytes are written through the path (opened for writing, never unlinked or
      renamed over); a FIFO's write waits for its reader, as a shell's ``>`` does;
    * a block device, a socket or a descriptor that is not open for writing: :class:`OutputError`.

    On any error the temporary is removed; an OS error (no space, quota, I/O, permission) becomes an
    :class:`OutputError` naming the option (remembered from :func:`prepare_outputs`/:func:`claim_output`)
    and the file with the system's reason. ``keep_suffix``: the temporary ends in the path's suffix (writers
    that append one, such as numpy's ``savez``)."""
    path = Path(path)
    if option is None:  # the option that named this very file (not a file inside its directory)
        hit = OPTION_OF.get(os.path.realpath(path))
        option = hit[0] if hit is not None and hit[2] else None
    t = output_target(path, option)
    suffix = path.suffix if keep_suffix else ""
    tmp: Path | None = None
    try:
        if t.regular:
            t.real.parent.mkdir(parents=True, exist_ok=True)
            tmp = _fresh_temp(t.real.parent, t.real.name, suffix)
        else:
            fd, name = tempfile.mkstemp(prefix=f"tts-parity-{path.name}.", suffix=".tmp" + suffix)
            os.close(fd)
            tmp = Path(name)
        yield tmp
        if t.regular:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(t.real).st_mode))
            os.replace(tmp, t.real)
            tmp = None
        else:
            _copy_through(tmp, t)
    except OutputError:
        raise
    except Exception as exc:  # an interruption (KeyboardInterrupt) passes as it is, the temporary removed
        if _reason(exc) is not None:
            raise write_error(path, exc, option, what) from exc
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_output(path, data: bytes | str, option: str | None = None, *, what: str = "") -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`output_file`; returns ``path``."""
    with output_file(path, option, what=what) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
