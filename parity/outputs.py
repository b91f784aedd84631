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
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from reference.errors import InputError
from reference.files import (OPTION_OF, OutputError, Target, fd_number, is_regular_output, output_file, output_label,
                             output_target, remember_output, write_error, write_output)

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
        if os.path.lexists(p) or fd_number(os.path.abspath(p)) is not None:
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
        remember_output(o.path, o.option, within=o.kind == "dir")
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
    if os.path.lexists(requested) or fd_number(os.path.abspath(requested)) is not None:
        t = output_target(requested, option)
        if not t.regular:  # a device, FIFO or descriptor: written through, nothing to claim or to number
            remember_output(requested, option)
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
        remember_output(cand, option)
        for f in companions:  # a write error in a companion (case pages, vectors sidecar) names the option
            remember_output(Path(f(cand)), option, within=True, named=cand)
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
    options = dict(OPTION_OF)
    try:
        yield out
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = old_out, old_err
        OPTION_OF.clear()  # the options this command named its outputs with are its own
        OPTION_OF.update(options)
        for key in [k for k in _HELD if k not in held]:  # the names claimed within the block
            release(key)


__all__ = ["Output", "check_outputs", "prepare_outputs", "Claim", "claim_output", "release", "release_all",
           "unique_stamp", "guarded_stdio", "SafeStream",
           # the write mechanism (reference.files), part of the contract every command and writer uses
           "OutputError", "Target", "output_target", "output_file", "write_output", "write_error", "is_regular_output",
           "output_label"]
