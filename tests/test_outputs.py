"""Outputs are never destructive (:func:`parity.outputs.output_file`): for every command that writes, an output
that is a character device (a private copy of /dev/null made with ``mknod``) or a FIFO is written through and
stays what it was, its companions (journal, vectors sidecar, case pages) litter nothing beside it; a block
device or a socket is refused before the work; a symbolic link is followed, never replaced; ``/dev/stdout`` and
``/dev/fd/N`` get the bytes; and a full file system (a 200 KB tmpfs where mounting is allowed, and always a
simulated ENOSPC) exits 2 with one line naming the option, the file and the reason, leaving no temporary.

Affordable in CI: the tiny preset on the short bundle with step-local errors off, the golden traces as ready
inputs, commands called in-process. ``bisect git``'s search is replaced by a stub result (its cost is git
worktrees; what is tested here is where its --json goes).
"""

from __future__ import annotations

import builtins
import errno
import gzip
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from parity.cli import main, report_main

from .conftest import FIXTURES, ROOT
from .test_cli_contract import assert_no_traceback, assert_one_line_error, command

pytest_plugins = ["pytester"]

SHORT = FIXTURES / "bundles" / "short.safetensors"
STREAM = FIXTURES / "sessions" / "stream.safetensors"
GOLD = FIXTURES / "golden" / "short-offline.safetensors"
FAST_RUN = ["run", "--inputs", str(SHORT), "--no-local", "--no-progress"]
NULL_DEV = (1, 3)  # major, minor of /dev/null


# =============================================================================================
# helpers: a private /dev/null, a FIFO with its reader

def make_device(path: Path) -> Path:
    """A private character device with /dev/null's numbers (never the machine's own /dev/null)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*NULL_DEV))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod of a character device is not permitted here ({exc.strerror}); needs root/CAP_MKNOD")
    return path


def assert_device_intact(path: Path) -> None:
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode), f"{path} is no longer a character device: {stat.filemode(st.st_mode)}"
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == NULL_DEV


class FifoReader:
    """A FIFO and a thread that reads it to the end (a writer's open blocks until a reader opens)."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self.data: bytes | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            self.data = f.read()

    def finish(self, timeout: float = 60.0) -> bytes | None:
        """The bytes read; None when no writer ever opened the FIFO (the reader is then released)."""
        t0 = time.monotonic()
        while self.thread.is_alive() and self.data is None and time.monotonic() - t0 < 0.2:
            time.sleep(0.01)
        if self.thread.is_alive() and self.data is None:
            for _ in range(100):  # release a reader still waiting in open(): a writer that writes nothing
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
                    break
                except OSError:
                    time.sleep(0.01)
            self.thread.join(timeout)
            return None if not self.data else self.data
        self.thread.join(timeout)
        return self.data


def assert_fifo_intact(path: Path) -> None:
    assert stat.S_ISFIFO(os.lstat(path).st_mode), f"{path} is no longer a FIFO"


# what arrived through a FIFO must be the whole file, readable as what the option writes
def _is_html(b: bytes) -> None:
    t = b.decode("utf-8")
    assert t.lstrip().lower().startswith("<!doctype html") and t.rstrip().endswith("</html>"), t[:200]


def _is_json(b: bytes) -> dict:
    return json.loads(b.decode("utf-8"))


def _is_safetensors(b: bytes) -> None:
    from safetensors.torch import load

    assert len(load(b)) > 0


def _is_wav(b: bytes) -> None:
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE" and len(b) > 44


def _is_toml(b: bytes) -> None:
    assert tomllib.loads(b.decode("utf-8"))["rule"]


def _is_floor(b: bytes) -> None:
    d = json.loads(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b)
    assert d["stages"]


def _is_onnx(b: bytes) -> None:
    import onnx

    assert onnx.load_from_string(b).graph.node


def _is_bisect_json(b: bytes) -> None:
    assert _is_json(b)["mode"] in ("switches", "precision", "git")


# =============================================================================================
# every command that writes: a device and a FIFO, each in turn

def _stub_bisect_git(monkeypatch) -> None:
    import parity.bisect.cli as bc
    from parity.bisect.log import BisectResult

    monkeypatch.setattr(bc, "bisect_git", lambda repo, good, bad, cfg: BisectResult(
        "git", "no_failure", message="stub: the search is not what this test checks"))


# name -> (argv with "{A}"/"{B}" for the outputs, what A and B must receive, exit code, stubs)
STREAM_CASES = {
    "compare": (["compare", GOLD, GOLD, "--report", "{A}", "--json", "{B}"], (_is_html, _is_json), 0),
    "parity-report": (["@report", GOLD, GOLD, "-o", "{A}"], (_is_html,), 0),
    "run (two cases: summary page and matrix JSON)": (
        FAST_RUN + ["--profile", "fp32-sdpa", "--profile", "fp32-explicit", "--report", "{A}", "--json", "{B}"],
        (_is_html, _is_json), 0),
    "run --session": (["run", "--session", "streaming", "--no-progress", "--report", "{A}", "--json", "{B}"],
                      (_is_html, _is_json), 0),
    "dump": (["dump", "--preset", "tiny", "--inputs", SHORT, "--out", "{A}", "--wav", "{B}"],
             (_is_safetensors, _is_wav), 0),
    "dump --session": (["dump", "--preset", "tiny", "--session", "streaming", "--inputs", STREAM, "--out", "{A}"],
                       (_is_safetensors,), 0),
    "noise export": (["noise", "export", "--preset", "tiny", "--frames", "64", "--samples", "2400", "--out", "{A}"],
                     (_is_safetensors,), 0),
    "export-onnx": (["export-onnx", "--out", "{A}"], (_is_onnx,), 0),
    "calibrate": (["calibrate", "--inputs", SHORT, "--out", "{A}"], (_is_toml,), 0),
    "floor": (["floor", "--preset", "tiny", "--inputs", SHORT, "--no-cache", "--out", "{A}"], (_is_floor,), 0),
    "bisect switches": (["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT, "--no-local",
                         "--workdir", "{WD}", "--report", "{A}", "--json", "{B}"], (_is_html, _is_bisect_json), 0),
    "bisect git (search stubbed)": (["bisect", "git", "--good", "HEAD~1", "--bad", "HEAD", "--repo", ROOT,
                                     "--workdir", "{WD}", "--json", "{A}"], (_is_bisect_json,), 0),
}


@pytest.mark.parametrize("first", ["device", "fifo"])
@pytest.mark.parametrize("which", list(STREAM_CASES))
def test_device_and_fifo_outputs_are_written_through(which, first, tmp_path, monkeypatch, capsys):
    """Outputs A (and B) go to a private /dev/null and a FIFO (``first`` says which gets A): the command does
    its work and exits with its verdict, the device is still the device, the FIFO's reader received the whole
    file, and nothing was left beside them (no ``null.partial``, ``null.vectors.npz``, ``*.tmp``)."""
    if which == "export-onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    if which.startswith("bisect git"):
        _stub_bisect_git(monkeypatch)
    argv, checks, code = STREAM_CASES[which]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dev = make_device(out / "null")
    fifo = FifoReader(out / "pipe")
    slots = {"A": dev, "B": fifo.path} if first == "device" else {"A": fifo.path, "B": dev}
    names = {"{A}": slots["A"], "{B}": slots["B"], "{WD}": tmp_path / "wd"}
    args = [str(names.get(a, a)) if isinstance(a, str) else str(a) for a in argv]
    try:
        rc = report_main(args[1:]) if args[0] == "@report" else main(args)
    finally:
        got = fifo.finish()
    o, err = capsys.readouterr()
    assert_no_traceback(o, err)
    assert rc == code, err[-2000:]
    assert_device_intact(dev)
    assert_fifo_intact(fifo.path)
    assert sorted(p.name for p in out.iterdir()) == ["null", "pipe"], "something was left beside the outputs"
    fifo_slot = [k for k in ("A", "B")[:len(checks)] if slots[k] == fifo.path]
    if fifo_slot:
        assert got, f"the FIFO's reader received nothing ({which})"
        checks[("A", "B").index(fifo_slot[0])](got)
    else:
        assert got is None  # this command's only output was the device: nothing went to the FIFO
    for line in err.splitlines():  # a trace sent to a stream names its journal in the temporary directory
        if "its journal is " in line:
            journal = Path(line.split("its journal is ")[1].split(" (")[0])
            assert journal.parent != out and not journal.exists(), "the journal of a finished trace stayed"
    if which.startswith("run (two"):  # the case pages have no directory beside a stream: the default place
        assert "is not a regular file: the summary page goes there, its 2 case pages to reports/parity-" in err
        pages = list((tmp_path / "reports").glob("parity-*/*.html"))
        assert len(pages) == 2, pages
        if first == "fifo":  # the summary page sent through the FIFO links them by absolute path
            for p in pages:
                assert p.resolve().as_uri() in got.decode()
        else:  # the matrix JSON through the FIFO carries its per-frame vectors inline (no sidecar beside a pipe)
            d = _is_json(got)
            assert "vectors" not in d and any(_json_with_vectors(c) for c in d["cases"])


# every output of the contract test's table, and the case here that sends it to a device and a FIFO
COVERS = {
    "run --report": "run (two cases: summary page and matrix JSON)", "run --json": "run (two cases: summary page "
    "and matrix JSON)", "run --keep-traces": "run --keep-traces", "compare --report": "compare",
    "compare --json": "compare", "dump --out": "dump", "dump --wav": "dump", "noise export --out": "noise export",
    "export-model --out": "export-model --out", "export-onnx --out": "export-onnx", "calibrate --out": "calibrate",
    "bisect switches --report": "bisect switches", "bisect switches --json": "bisect switches",
    "bisect switches --workdir": "bisect switches --workdir", "bisect precision --log": "bisect precision --log",
    "bisect git --json": "bisect git (search stubbed)", "run --session --report": "run --session",
    "dump --session --out": "dump --session", "floor --out": "floor",
}


def test_every_output_of_the_contract_table_is_covered():
    """A command output added to the contract test's table gets its device and FIFO case here too."""
    from .test_cli_contract import BROKEN

    assert set(COVERS) == set(BROKEN), set(BROKEN) ^ set(COVERS)
    for case in COVERS.values():
        assert case in STREAM_CASES or case in REFUSED, case


def _json_with_vectors(d: dict) -> bool:
    return any(s.get("per_frame_error") is not None for s in d.get("stages", []))


PLUGIN_SUITE = f"""
SHORT = {str(SHORT)!r}

def test_fault_is_caught(parity_run):
    case = parity_run("fp32-sdpa", SHORT, faults=("istft-gain",), local=False)
    assert case.result.verdict == "fail"
"""


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_pytest_session_page_to_a_device_or_fifo(kind, pytester):
    """``--parity-report=/dev/null`` (or a FIFO): the session page goes through it; the case pages go where
    they go without --parity-report (reports/pytest-parity/), linked by absolute path; nothing beside it."""
    pytester.makepyfile(test_suite=PLUGIN_SUITE)
    out = pytester.path / "out"
    out.mkdir()
    target = make_device(out / "null") if kind == "device" else out / "pipe"
    reader = FifoReader(target) if kind == "fifo" else None
    try:
        r = pytester.runpytest_subprocess(f"--parity-report={target}", "-p", "no:cacheprovider")
    finally:
        got = reader.finish() if reader else None
    r.assert_outcomes(passed=1)
    assert sorted(p.name for p in out.iterdir()) == [target.name]
    (assert_device_intact if kind == "device" else assert_fifo_intact)(target)
    pages = list((pytester.path / "reports" / "pytest-parity").glob("*.html"))
    assert len(pages) == 1, pages  # the caught fault's case page
    if got is not None:
        page = got.decode()
        assert "<title>parity PASS" in page and pages[0].resolve().as_uri() in page


# outputs that must be directories (or that are read back): a device or a FIFO there is refused before the work
REFUSED = {
    "run --keep-traces": (FAST_RUN + ["--report", "{OK}/r.html", "--keep-traces", "{X}"], "--keep-traces",
                          "exists and is not a directory"),
    "export-model --out": (["export-model", "--out", "{X}"], "--out", "exists and is not a directory"),
    "bisect switches --workdir": (["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT, "--no-local",
                                   "--workdir", "{X}"], "--workdir", "exists and is not a directory"),
    "bisect precision --log": (["bisect", "precision", "--profile", "fp16-flow", "--bundle", SHORT, "--no-local",
                                "--log", "{X}"], "--log", "not a regular file"),
    "dump --embed-floor": (["dump", "--preset", "tiny", "--inputs", SHORT, "--out", "{X}", "--embed-floor"],
                           "--embed-floor", "not a regular file"),
}


@pytest.mark.parametrize("kind", ["device", "fifo"])
@pytest.mark.parametrize("which", list(REFUSED))
def test_outputs_that_cannot_be_streams_are_refused_before_the_work(which, kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    x = make_device(out / "null") if kind == "device" else out / "pipe"
    if kind == "fifo":
        os.mkfifo(x)
    argv, option, why = REFUSED[which]
    t0 = time.perf_counter()
    rc = main([str(a).replace("{X}", str(x)).replace("{OK}", str(tmp_path / "ok")) for a in argv])
    o, err = capsys.readouterr()
    assert_one_line_error(rc, err, option, str(x), why)
    assert o == "", "work was done before the output was checked"
    assert time.perf_counter() - t0 < 30  # (a bound against a hang on the FIFO, not a timing assertion)
    (assert_device_intact if kind == "device" else assert_fifo_intact)(x)
    assert sorted(p.name for p in out.iterdir()) == [x.name]


def test_a_block_device_and_a_socket_are_refused_before_the_work(tmp_path, capsys):
    blk = tmp_path / "blk"
    try:  # a device number no driver serves (240: local/experimental use): never written in any case
        os.mknod(blk, 0o600 | stat.S_IFBLK, os.makedev(240, 0))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod of a block device is not permitted here ({exc.strerror})")
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(blk)])
    assert_one_line_error(rc, capsys.readouterr().err, "--json", str(blk), "block device")
    assert stat.S_ISBLK(os.lstat(blk).st_mode)
    sock_path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(sock_path))
        rc = main(["compare", str(GOLD), str(GOLD), "--report", str(sock_path)])
        out, err = capsys.readouterr()
        assert_one_line_error(rc, err, "--report", str(sock_path), "is a socket")
        assert out == "" and stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        s.close()


def test_two_options_may_name_one_device(tmp_path, capsys):
    """``--json /dev/null --report /dev/null`` silences both (a regular file named twice is still an error)."""
    dev = make_device(tmp_path / "null")
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(dev), "--report", str(dev)])
    assert rc == 0, capsys.readouterr().err
    assert_device_intact(dev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_symbolic_link_is_followed_never_replaced(tmp_path, capsys):
    real = tmp_path / "data" / "result.json"
    real.parent.mkdir()
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    dangling = tmp_path / "later.json"
    dangling.symlink_to(tmp_path / "data" / "new.json")
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(link), "--report", str(dangling)])
    assert rc == 0, capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text())["verdict"] == "pass"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # a replaced file keeps its permission bits
    assert dangling.is_symlink() and (tmp_path / "data" / "new.json").read_text().lstrip().startswith("<!")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["new.json", "result.json"]


def test_dev_stdout_and_dev_fd_get_the_bytes(tmp_path):
    """``--json /dev/stdout`` in a pipe, and ``--json /dev/fd/3`` with descriptor 3 open on a file: the JSON
    arrives there (stdout: with the command's own lines), nothing is renamed over the file behind fd 3."""
    r = subprocess.run(command("parity") + ["compare", str(GOLD), str(GOLD), "--json", "/dev/stdout"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r.stderr)
    start = r.stdout.index('{\n "schema"')
    end = r.stdout.index("\n}\n", start) + 3
    assert json.loads(r.stdout[start:end])["verdict"] == "pass"
    assert "wrote /dev/stdout" in r.stdout[end:]
    target = tmp_path / "fd3.json"
    with open(target, "wb") as f3:
        ino = os.fstat(f3.fileno()).st_ino
        r = subprocess.run(["bash", "-c", 'exec "$@" 3>&"$FD"', "_"] + command("parity") +
                           ["compare", str(GOLD), str(GOLD), "--json", "/dev/fd/3"],
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, FD=str(f3.fileno())), pass_fds=(f3.fileno(),))
    assert r.returncode == 0, r.stderr
    assert target.stat().st_ino == ino, "the file behind the descriptor was replaced"
    assert json.loads(target.read_text())["verdict"] == "pass"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fd3.json"]


def test_a_descriptor_that_is_not_open_is_refused(tmp_path, capsys):
    fd = 200
    with pytest.raises(OSError):
        os.fstat(fd)
    rc = main(["compare", str(GOLD), str(GOLD), "--json", f"/dev/fd/{fd}"])
    assert_one_line_error(rc, capsys.readouterr().err, "--json", f"/dev/fd/{fd}", "descriptor 200 is not open")


def test_a_fifo_reader_that_goes_away_is_no_error(tmp_path):
    """As for stdout (``| head -c 0``): the reader of a FIFO output closes early; the command finishes."""
    from parity.outputs import write_output

    p = tmp_path / "pipe"
    os.mkfifo(p)

    def reader():
        with open(p, "rb") as f:
            f.read(10)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    write_output(p, b"x" * (4 << 20))  # larger than a pipe's buffer: the writer meets the closed end
    t.join(10)
    assert stat.S_ISFIFO(os.lstat(p).st_mode)


# =============================================================================================
# a full file system: one line naming the option and the file, no temporary left

class _Limited:
    """A file object under the simulated full file system: ENOSPC once the budget is spent."""

    def __init__(self, f, state: dict, name: str):
        self._f, self._state, self._name = f, state, name

    def write(self, b):
        n = len(b)
        if self._state["used"] + n > self._state["budget"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)
        self._state["used"] += n
        return self._f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def simulate_full_disk(monkeypatch, root: Path, free: int) -> None:
    """Files opened for writing under ``root`` (by ``open``/``io.open``: the harness, numpy's zip writer) may
    take ``free`` bytes in all; the write that passes it raises ENOSPC, as a full file system does."""
    real_open = builtins.open
    state = {"used": 0, "budget": free}
    root_s = str(root.resolve())

    def fake_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and \
                os.path.realpath(file).startswith(root_s + os.sep):
            return _Limited(f, state, str(file))
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def _mount_tmpfs(d: Path, size: str = "200k") -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({r.stderr.strip() or r.returncode}); the simulated "
                    f"full disk covers the same paths")


@pytest.fixture(params=["tmpfs", "simulated"])
def full_dir(request, tmp_path, monkeypatch):
    """A directory on a file system with ``free`` bytes left: a real 200 KB tmpfs (filled up to ``free`` by a
    filler file), or the simulated ENOSPC. Yields ``fill(free)``, to call before the command."""
    d = tmp_path / "full"
    d.mkdir()
    mounted = False
    if request.param == "tmpfs":
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root; the simulated full disk covers the same paths")
        _mount_tmpfs(d)
        mounted = True

    def fill(free: int) -> Path:
        if mounted:
            st = os.statvfs(d)
            avail = st.f_bavail * st.f_frsize
            if avail > free:
                with open(d / "filler", "wb") as f:
                    f.write(b"\0" * (avail - free))
        else:
            (d / "filler").write_bytes(b"\0" * 16)
            simulate_full_disk(monkeypatch, d, free)
        return d

    try:
        yield fill
    finally:
        monkeypatch.undo()
        if mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


FULL_CASES = {
    # name: (argv with {D} for the full directory, free bytes, the option named, the file named, stage of failure)
    "compare --json": (["compare", GOLD, GOLD, "--json", "{D}/c.json"], 16 << 10, "--json", "c.json"),
    "compare --report": (["compare", GOLD, GOLD, "--report", "{D}/c.html"], 64 << 10, "--report", "c.html"),
    "dump --out (its journal)": (["dump", "--preset", "tiny", "--inputs", SHORT, "--out", "{D}/d.safetensors"],
                                 128 << 10, "--out", "d.safetensors"),
    "noise export --out": (["noise", "export", "--preset", "tiny", "--frames", "64", "--samples", "24000",
                            "--out", "{D}/n.safetensors"], 64 << 10, "--out", "n.safetensors"),
    "run --json (and its sidecar)": (FAST_RUN + ["--report", "{T}/r.html", "--json", "{D}/r.json"], 96 << 10,
                                     "--json", "r.json"),
}


@pytest.mark.parametrize("which", list(FULL_CASES))
def test_a_full_file_system_names_the_file_and_leaves_no_temporary(which, full_dir, tmp_path, monkeypatch, capsys):
    argv, free, option, name = FULL_CASES[which]
    monkeypatch.chdir(tmp_path)
    d = full_dir(free)
    rc = main([str(a).replace("{D}", str(d)).replace("{T}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    line = assert_one_line_error(rc, err, option, name, "No space left on device")
    assert str(d / name) in line, line
    left = sorted(p.name for p in d.iterdir())
    assert left == ["filler"], f"left behind on the full file system: {left}"


def test_a_trace_whose_final_write_fails_leaves_neither_journal_nor_temporary(tmp_path, monkeypatch):
    """The journal fits, the finished trace does not (simulated): both are gone, the error names the trace."""
    from parity.outputs import OutputError
    from parity.trace import TraceWriter

    import torch

    d = tmp_path / "full"
    d.mkdir()
    w = TraceWriter(d / "t.safetensors", {"model": "x"})
    w.add("mu", torch.ones(1, 80, 64))
    simulate_full_disk(monkeypatch, d, 1 << 10)  # only from here on: the next writes fail
    with pytest.raises(OutputError) as ei:
        w.close()
    assert f"{d / 't.safetensors'}: cannot write" in str(ei.value) and "No space left on device" in str(ei.value)
    monkeypatch.undo()
    assert list(d.iterdir()) == []


def test_a_crash_keeps_its_journal_and_a_write_error_does_not(tmp_path, monkeypatch):
    """A killed run's journal is the only record of computed work (kept, recovered by read_trace); a journal
    whose own write failed records nothing reliable and is removed."""
    from parity.outputs import OutputError
    from parity.trace import TraceWriter, journal_path, read_trace

    import torch

    kept = tmp_path / "kept.safetensors"
    w = TraceWriter(kept, {"model": "x"})
    w.add("mu", torch.ones(1, 80, 4))
    w._f.flush()  # the process dies here (no close)
    assert journal_path(kept).exists() and read_trace(kept)["mu"].shape == (1, 80, 4)
    d = tmp_path / "full"
    d.mkdir()
    simulate_full_disk(monkeypatch, d, 1 << 10)
    w2 = TraceWriter(d / "t.safetensors", {"model": "x"})
    with pytest.raises(OutputError) as ei:
        w2.add("mu", torch.ones(1, 80, 64))
    assert "its journal t.safetensors.partial" in str(ei.value)
    monkeypatch.undo()
    assert list(d.iterdir()) == []
    w2.close()  # closing after a failed write is a no-op (the runner closes on the way out)


def test_a_failing_writer_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    from parity.outputs import output_file

    p = tmp_path / "r.json"
    p.write_text("old")
    with pytest.raises(KeyboardInterrupt), output_file(p) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_an_unwritable_directory_for_a_device_output_is_no_obstacle(tmp_path, monkeypatch):
    """A device needs write permission on itself, not on its directory (``--json /dev/null`` as a user)."""
    from parity.outputs import Output, check_outputs

    dev = make_device(tmp_path / "null")
    real_access = os.access

    def access(path, mode, *a, **kw):  # as a non-root user: the directory is not writable
        if str(path) == str(tmp_path) and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    assert check_outputs([Output("--json", dev)]) == {Output("--json", dev): []}
    with pytest.raises(Exception, match="no permission to write in"):
        check_outputs([Output("--json", tmp_path / "new.json")])


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("devices, FIFOs and /dev/fd as outputs are checked on Linux")
