"""What ``bisect git`` does with git and with processes: git commands, the repository's state (checked before and
after a bisection), trial programs run in their own process group with a timeout, the dump a program wrote, the
tiny oracle client ``git bisect run`` starts, the default work directory and the signal handling around the
clean-up (POSIX only)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from ..outputs import unique_stamp
from .log import BisectUsageError


def git(repo: Path, *args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise BisectUsageError(f"git {' '.join(args)}: {last_line(p.stderr or p.stdout) or 'failed'}")
    return p


def repo_state(repo: Path, ignore: Path | None = None) -> dict:
    """HEAD, branch, ``git status`` (minus ``ignore``), worktrees and whether a bisect is in progress."""
    head = git(repo, "rev-parse", "HEAD", check=False).stdout.strip()
    branch = git(repo, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip() or None
    status = git(repo, "status", "--porcelain", "--untracked-files=all", check=False).stdout.splitlines()
    if ignore is not None:
        top = Path(git(repo, "rev-parse", "--show-toplevel").stdout.strip()).resolve()
        try:
            rel = str(Path(ignore).resolve().relative_to(top))
        except ValueError:
            rel = None
        if rel:
            status = [s for s in status if not s[3:].strip('"').startswith(rel)]
    wts = [ln[9:] for ln in git(repo, "worktree", "list", "--porcelain", check=False).stdout.splitlines()
           if ln.startswith("worktree ")]
    bs = Path(git(repo, "rev-parse", "--git-path", "BISECT_START").stdout.strip())
    if not bs.is_absolute():
        bs = Path(repo) / bs
    return {"head": head, "branch": branch, "status": status, "worktrees": wts, "bisecting": bs.exists()}


def kill_group(p: subprocess.Popen, grace: float = 3.0) -> None:
    if p.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_proc(argv, *, cwd, env, timeout: float | None, log_path: Path, shell: bool = False) -> tuple[int | None, str]:
    """Run a trial program in its own process group; (exit code or None on timeout, output tail)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, shell=shell)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            rc = None
        except BaseException:
            kill_group(p)
            raise
        finally:
            if p.poll() is None:
                kill_group(p)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    return rc, tail


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def sniff_dump(out: Path) -> Path | None:
    """The dump a program wrote at ``out`` (a file of any supported format, an npy directory, or ``out.npz``
    since ``numpy.savez`` appends that suffix), renamed to the suffix :mod:`parity.ingest` dispatches on."""
    from ..trace import journal_path

    if out.is_dir():
        return out
    if out.is_file():
        with open(out, "rb") as f:
            head = f.read(8)
        suffix = ".npz" if head.startswith(b"PK") else (".npy" if head.startswith(b"\x93NUMPY") else ".safetensors")
        if out.suffix != suffix:
            target = out.with_name(out.name + suffix)
            out.rename(target)
            return target
        return out
    if journal_path(out).exists():
        return out
    for cand in sorted(out.parent.glob(out.name + ".*")):
        if cand.suffix in (".npz", ".npy", ".safetensors") and cand.is_file():
            return cand
    return None


ORACLE_CLIENT = '''\
"""parity bisect oracle client (written by parity.bisect): asks the bisect driver to judge BISECT_HEAD
and exits with its answer (0 good, 1 bad, 125 skip, 128 abort)."""
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(b"trial\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    sys.exit(int(data.strip()))
except (OSError, ValueError) as exc:
    sys.stderr.write("parity bisect oracle: the bisect driver is gone (%s); aborting\\n" % exc)
    sys.exit(128)
'''


def default_git_workdir(repo: Path) -> Path:
    """reports/bisect-git-<time> under the current directory, unless that lands in the repository under test
    where git does not ignore it: then <git dir>/parity-bisect/git-<time> (never shows in git status)."""
    stamp = unique_stamp()
    wd = (Path("reports") / f"bisect-git-{stamp}").resolve()
    try:
        wd.relative_to(repo.resolve())
    except ValueError:
        return wd
    if git(repo, "check-ignore", "-q", "--no-index", str(wd), check=False).returncode == 0:
        return wd
    gd = Path(git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())
    return gd / "parity-bisect" / f"git-{stamp}"


def protect_signals():
    """SIGTERM raises KeyboardInterrupt (so ``finally`` clean-up runs); returns a restore function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, _term)
    return lambda: signal.signal(signal.SIGTERM, old)


def quiet_signals():
    """Ignore SIGINT/SIGTERM during clean-up; returns a restore function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
