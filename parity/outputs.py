"""The command-line contract around outputs: where a command's files go, and what it does when its terminal
goes away. Used by the commands (``parity``, ``parity-report``, ``parity bisect``) and the pytest plugin.

Output paths (``--report``, ``--json``, ``--out``, ``--wav``, ``--log``, ``--workdir``, ...)

* are checked **before any work** (:func:`prepare_outputs`): a parent that is a file (``--report ref.wav/x.html``),
  an output file that is a directory, a directory output that is a file, an unwritable directory, two
  options naming the same file, or a path that cannot be written through (below) is an
  :class:`reference.errors.InputError` (one line, exit 2) naming the option and the path, and nothing has been
  computed yet;
* missing parent directories of a path given explicitly are created before the work, and the command says so
  (one line per directory on stderr: ``parity: created directory X for --json``); nothing is created
  silently. Default locations (``reports/...``) are created without a note.

Report and result names (:func:`claim_output`)

* default names are unique per run: time to the millisecond plus the process id (:func:`unique_stamp`);
* a name in use by another command that is still running (on this machine) is never taken: each command
  holds an advisory lock (``flock``) on every output name it claimed until it exits, and a second command
  asking for the same name gets the next free one (``x-2.html``, ``x-3.html``, ...) and says so on stderr
  before the work; it prints the path it really wrote at the end;
* an existing file left by a command that has finished is replaced only when its name was given explicitly
  (or derived from the inputs, as ``parity-report``'s default); a stamped default name never replaces a file.

Writing (:func:`output_file`, :func:`write_output`: the one mechanism every writer of the harness uses)

* a regular file, or a path that does not exist yet, is written to a temporary name beside it
  (``<name>.<pid>.<n>.tmp``) and renamed onto it: a reader sees the old file or the new one, never half of one;
  a replaced file keeps its permission bits;
* a symbolic link is followed: its target is written (the temporary sits beside the target) and the link stays
  a link; a link to nowhere gets its target created, as a shell's ``>`` does;
* a path that is not a regular file is never unlinked or renamed over: a character device (``--json /dev/null``,
  the usual way to silence an output), a FIFO, ``/dev/stdout``, ``/dev/stderr`` and ``/dev/fd/N`` are written
  through (the bytes are prepared in the temporary directory, then written to the path or descriptor; a FIFO's
  write waits for its reader; a reader that goes away early is no error, as for stdout). Two options may name
  the same device. A block device, a socket, or a descriptor that is not open for writing is refused before the
  work (exit 2, one line naming the option and the path); so is a stream where the output must be a directory
  (``--keep-traces``, ``--workdir``, ``export-model --out``) or is read back (``bisect --log``, which
  ``--resume`` reads; ``dump --embed-floor``, which rewrites the finished trace);
* companions of an output that is not a regular file do not litter its directory: a result JSON sent to a
  stream carries its per-frame vectors inline (no ``.vectors.npz``), a trace sent to a stream keeps its crash
  journal in the temporary directory (``tts-parity-journals-<uid>/``, said on stderr when the capture starts),
  and a summary report sent to a stream (``parity run`` with several cases, ``--parity-report``) has its case
  pages written where they go by default (``reports/parity-<stamp>/``, ``reports/pytest-parity/``), said, and
  linked by absolute path.

On any write error (no space left, quota, I/O error, permission) the command exits 2 with one line naming the
option, the file and the system's reason (:class:`OutputError`), and every temporary it made is removed (the
``.tmp``, a trace's ``.partial`` journal whose own write failed, a sidecar's temporary: a sidecar is renamed
only together with its JSON). A journal that is the only record of computed work (a capture interrupted or
killed) is kept; a pipeline that crashes still closes its trace with the error.

Standard streams (:func:`guarded_stdio`): a closed or broken stdout/stderr (``parity run | head -c 0``,
``parity run >&-``) never raises: the output is discarded and the command runs to its end, writes its files
and exits with the code of its verdict.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from reference.errors import InputError

try:  # advisory locks: POSIX only (elsewhere names are still unique per run, but not guarded)
    import fcntl
except ImportError:  # pragma: no cover - not on the supported platforms
    fcntl = None


def unique_stamp() -> str:
    """``YYYYmmdd-HHMMSS-mmm-<pid>``: unique per run on one machine (a pid is not reused within a millisecond)."""
    t = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(t))}-{int(t * 1000) % 1000:03d}-{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# checking output paths before the work

@dataclass(frozen=True)
class Output:
    """One output of a command: the option that named it, the path, whether it is a file or a directory,
    and whether the user gave it (an explicit path gets its missing parents created with a note)."""

    option: str
    path: Path | None
    kind: str = "file"  # file | dir
    explicit: bool = True


def _missing_parents(out: Output) -> list[Path]:
    """The directories that must be created for ``out`` (outermost first); InputError when it cannot be.
    A file output that exists and is not a regular file (a device, a FIFO, ``/dev/stdout``) needs no directory:
    it is checked for writing through (:func:`output_target`)."""
    p = Path(out.path)
    label = f"{out.option} {out.path}"
    if out.kind == "file":
        if p.is_dir():
            raise InputError(f"{label}: is a directory (expected a file name)")
        if str(out.path).endswith(os.sep):
            raise InputError(f"{label}: names a directory (expected a file name)")
        if os.path.lexists(p) or _fd_number(os.path.abspath(p)) is not None:
            t = output_target(p, out.option)
            if not t.regular:
                return []
            p = t.real  # a symbolic link: its target is what gets written, beside the target
        start = p.parent
    else:
        if p.exists() and not p.is_dir():
            raise InputError(f"{label}: exists and is not a directory")
        start = p
    missing: list[Path] = []
    d = start if str(start) else Path(".")
    while not d.exists():
        if d.is_symlink():  # a dangling link in the way
            raise InputError(f"{label}: {d} is a broken symbolic link")
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    if d.exists() and not d.is_dir():
        raise InputError(f"{label}: {d} is a file, not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise InputError(f"{label}: no permission to write in {d}")
    if out.kind == "dir" and not missing and not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{label}: no permission to write in {p}")
    return list(reversed(missing))


def check_outputs(outputs: list[Output]) -> dict[Output, list[Path]]:
    """Check every output (see the module docstring); returns the directories each needs. Raises InputError.
    Two options may name the same character device or descriptor (``--json /dev/null --report /dev/null``);
    two options naming the same file or FIFO is an error."""
    seen: dict[str, str] = {}
    need: dict[Output, list[Path]] = {}
    for o in outputs:
        if o.path is None or str(o.path) == "":
            continue
        need[o] = _missing_parents(o)
        if o.kind == "file":
            t = output_target(o.path, o.option) if os.path.lexists(o.path) else None
            if t is not None and t.kind in ("device", "fd"):
                continue
            key = os.path.realpath(o.path)
            if key in seen:
                raise InputError(f"{o.option} {o.path}: the same file as {seen[key]}")
            seen[key] = f"{o.option} {o.path}"
    return need


def prepare_outputs(outputs: list[Output], prog: str = "parity") -> None:
    """Check every output before the work, then create the missing directories (a note for each one an
    explicit path needed). Raises InputError (nothing created) when any output is unusable. The option of
    each output is remembered, so that a write error later names it (:func:`output_file`)."""
    need = check_outputs(outputs)
    done: set[Path] = set()
    for o, dirs in need.items():
        _remember(o.path, o.option, within=o.kind == "dir")
        made = []
        for d in dirs:
            if d in done or d.exists():
                continue
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise InputError(f"{o.option} {o.path}: {d} is a file, not a directory") from None
                continue
            except OSError as exc:
                raise InputError(f"{o.option} {o.path}: cannot create directory {d} ({exc.strerror})") from None
            done.add(d)
            made.append(d)
        if made and o.explicit:
            print(f"{prog}: created directory {made[-1]} for {o.option} {o.path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# claiming a name for the duration of the run

_HELD: dict[str, int] = {}  # absolute path -> fd of the lock this process holds on that name


def _lock_dir() -> Path | None:
    d = Path(tempfile.gettempdir()) / f"tts-parity-locks-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return d


def _lock_file(key: str) -> Path | None:
    d = _lock_dir()
    return d / (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40] + ".lock") if d else None


def _try_lock(key: str) -> tuple[bool, str]:
    """(acquired, who holds it). The lock file records the holder's pid and the path."""
    if fcntl is None:
        return True, ""
    lf = _lock_file(key)
    if lf is None:
        return True, ""
    try:
        fd = os.open(lf, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True, ""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.read(fd, 200).decode("utf-8", "replace").split("\n")[0]
        except OSError:
            holder = ""
        os.close(fd)
        return False, holder
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}\n{key}\n".encode("utf-8", "surrogateescape"))
    _HELD[key] = fd
    return True, ""


def _numbered(path: Path, n: int) -> Path:
    return path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")


@dataclass
class Claim:
    """A name this process writes to (``path``), possibly not the one asked for (``requested``)."""

    option: str
    requested: Path
    path: Path
    holder: str = ""

    @property
    def moved(self) -> bool:
        return self.path != self.requested

    def note(self, prog: str = "parity") -> str | None:
        if not self.moved:
            return None
        who = f" ({self.holder})" if self.holder else ""
        return (f"{prog}: {self.option} {self.requested} is in use by another running command{who}: "
                f"this run writes {self.path}")

    def release(self) -> None:
        release(self.path)


def claim_output(path, option: str, *, replace_existing: bool = True, companions=(), prog: str | None = "parity",
                 limit: int = 1000) -> Claim:
    """Claim ``path`` (or the next free ``<stem>-N<suffix>``) for this process until it exits or releases it.

    ``replace_existing``: an existing file (left by a finished command) may be replaced: explicit and
    input-derived names; False for stamped default names, which never replace anything. ``companions``:
    functions of a candidate path giving files/directories that belong to it (a report's case directory, a
    result's vectors sidecar); with ``replace_existing`` False they must not exist either. With ``prog``
    the note about a moved name goes to stderr."""
    requested = Path(path)
    if os.path.lexists(requested) or _fd_number(os.path.abspath(requested)) is not None:
        t = output_target(requested, option)
        if not t.regular:  # a device, FIFO or descriptor: written through, nothing to claim or to number
            _remember(requested, option)
            return Claim(option, requested, requested)
    holder = ""
    for n in range(1, limit + 1):
        cand = _numbered(requested, n)
        key = os.path.abspath(cand)
        if key in _HELD:  # this process already writes there (a second output of the same run)
            continue
        if not replace_existing and (cand.exists() or any(Path(f(cand)).exists() for f in companions)):
            continue
        ok, who = _try_lock(key)
        if not ok:
            holder = holder or who
            continue
        claim = Claim(option, requested, cand, holder)
        _remember(cand, option)
        for f in companions:  # a write error in a companion (case pages, vectors sidecar) names the option
            _remember(Path(f(cand)), option, within=True, named=cand)
        if prog and claim.moved:
            print(claim.note(prog), file=sys.stderr)
        return claim
    raise InputError(f"{option} {requested}: no free name after {limit} tries")


def release(path) -> None:
    fd = _HELD.pop(os.path.abspath(path), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the flock


def release_all() -> None:
    for key in list(_HELD):
        release(key)


# ---------------------------------------------------------------------------------------------
# writing an output: the one mechanism every writer uses

class OutputError(InputError):
    """An output that cannot be written (refused before the work, or a write the file system failed): one
    line naming the option and the file, exit 2."""


_OPTION_OF: dict[str, tuple[str, str, bool]] = {}  # real path -> (option, the path it named, names it whole)


def _remember(path, option: str, *, within: bool = False, named=None) -> None:
    """Note which option named ``path``, so that a write error names it. ``within``: ``path`` is a directory
    output, or a companion of the output ``named`` (a result's vectors sidecar, a report's case directory):
    a file there is named as part of that option's output. Two options may name one device (``--out/--wav``)."""
    if path is None or not str(path):
        return
    key = os.path.realpath(path)
    old = _OPTION_OF.get(key)
    if old is not None and old[2] and not within and option not in old[0].split("/"):
        option = f"{old[0]}/{option}"
    _OPTION_OF[key] = (option, str(named if named is not None else path), not within)


def _label(path, option: str | None = None) -> tuple[str, str]:
    """(who, inner): the option and path a message names, and the file within that output (empty when the
    file is the output itself). ``--json x.json`` -> ("--json x.json", ""); its sidecar -> ("--json x.json",
    "x.vectors.npz"); a case page -> ("--report r.html", "r/a.html")."""
    if option:
        return f"{option} {path}", ""
    d = os.path.realpath(path)
    first = True
    while d:
        hit = _OPTION_OF.get(d)
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


def _fd_number(abspath: str) -> int | None:
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
        n = _fd_number(p)
        if n is not None:
            return Target(Path(path), "fd", None, _writable_fd(n, who))
        if not os.path.islink(p):
            break
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    real = os.path.realpath(p)
    n = _fd_number(real)
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
        hit = _OPTION_OF.get(os.path.realpath(path))
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


# ---------------------------------------------------------------------------------------------
# standard streams that may be closed

_GONE = (BrokenPipeError, ConnectionResetError)


def _is_gone(exc: BaseException) -> bool:
    if isinstance(exc, _GONE):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
        return True
    return isinstance(exc, ValueError) and "closed file" in str(exc)


class SafeStream:
    """A text stream whose reader may go away: writes after a broken pipe (or to a closed descriptor) are
    discarded instead of raising; the descriptor is pointed at /dev/null so the interpreter's last flush
    cannot fail either. Everything else is the wrapped stream's."""

    def __init__(self, stream, fd: int | None):
        self._stream = stream
        self._fd = fd
        self.broken = stream is None

    def _gone(self) -> None:
        self.broken = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._fd)
                os.close(null)

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:
            if not _is_gone(exc):
                raise
            self._gone()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            if not _is_gone(exc):
                raise
            self._gone()

    def isatty(self) -> bool:
        if self.broken:
            return False
        try:
            return bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def __getattr__(self, name):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _real_fd(stream, fd: int) -> int | None:
    """``fd`` when ``stream`` writes to that descriptor of this process (not a test's capture object)."""
    try:
        return fd if stream is not None and stream.fileno() == fd else None
    except (OSError, ValueError, AttributeError):
        return None


def _occupy_if_closed(fd: int) -> None:
    """A descriptor closed at start (``>&-``) is pointed at /dev/null, so that no file this process opens
    later takes its number (and child processes do not write into it)."""
    try:
        os.fstat(fd)
    except OSError:
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


@contextlib.contextmanager
def guarded_stdio():
    """Within the block, ``sys.stdout``/``sys.stderr`` never raise for a reader that went away; on leaving,
    stdout is flushed (a pipe closed before the first flush would otherwise fail at interpreter exit), and
    the output names claimed within the block are released (and the options remembered for them forgotten)."""
    old_out, old_err = sys.stdout, sys.stderr
    for fd in (1, 2):
        _occupy_if_closed(fd)
    out = SafeStream(old_out, _real_fd(old_out, 1))
    err = SafeStream(old_err, _real_fd(old_err, 2))
    sys.stdout, sys.stderr = out, err
    held = set(_HELD)
    options = dict(_OPTION_OF)
    try:
        yield out
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = old_out, old_err
        _OPTION_OF.clear()  # the options this command named its outputs with are its own
        _OPTION_OF.update(options)
        for key in [k for k in _HELD if k not in held]:  # the names claimed within the block
            release(key)


__all__ = ["Output", "check_outputs", "prepare_outputs", "Claim", "claim_output", "release", "release_all",
           "unique_stamp", "guarded_stdio", "SafeStream", "OutputError", "Target", "output_target", "output_file",
           "write_output", "write_error", "is_regular_output", "output_label"]
