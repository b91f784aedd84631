"""The command-line contract (issue 15), for every console command: exit codes (0 pass, 1 parity failure,
2 unusable input as one line without a traceback, 130 interrupted), outputs checked before the work, a
closed stdout, Ctrl-C, concurrent runs into the same report paths, and the pytest session report (serial and
under pytest-xdist) counting cases by their tests' outcomes.

Affordable in CI: the tiny preset on the short bundle, step-local errors off, golden traces as ready-made
inputs for ``compare``/``parity-report``; checks that need no work run in-process. Commands that must run as
their own process (closed pipes, signals, concurrency) run the installed console scripts when they exist
(``.venv/bin/parity``), else the same entry points through ``python -c``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parity.cli import main, report_main

from .conftest import FIXTURES, ROOT

SHORT = FIXTURES / "bundles" / "short.safetensors"
STREAM = FIXTURES / "sessions" / "stream.safetensors"  # a streaming-session bundle (issue 16)
GOLD = FIXTURES / "golden" / "short-offline.safetensors"  # a small reference trace: compare/parity-report input
FAST_RUN = ["run", "--inputs", str(SHORT), "--no-local", "--no-progress"]
BIN = Path(sys.executable).parent

pytest_plugins = ["pytester"]


def command(prog: str) -> list[str]:
    """The console script ``prog`` (``parity`` | ``parity-report``) as a command line."""
    exe = BIN / prog
    if exe.exists():
        return [str(exe)]
    entry = "main" if prog == "parity" else "report_main"
    return [sys.executable, "-c", f"import sys; from parity.cli import {entry}; sys.exit({entry}())"]


def run(argv: list[str], cwd: Path, prog: str = "parity", timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command(prog) + [str(a) for a in argv], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, **kw)


def assert_no_traceback(*texts: str) -> None:
    for t in texts:
        assert "Traceback" not in (t or ""), t
        assert "Exception ignored" not in (t or ""), t


def assert_one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    assert_no_traceback(err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def report_verdict(path: Path) -> str:
    """The verdict a report page states in its <title> (case pages and summary pages alike)."""
    m = re.search(r"<title>(?:parity )?(PASS|FAIL|ERROR)\b", path.read_text()) or \
        re.search(r"<title>[^<]*\b(PASS|FAIL|ERROR)\b", path.read_text())
    assert m, path.read_text()[:400]
    return m.group(1)


def last_report_path(out: str) -> Path:
    m = re.search(r"report (\S+) \(", out.strip().splitlines()[-1])
    assert m, out
    return Path(m.group(1))


# =============================================================================================
# broken output paths: exit 2, one line, before any work

def _broken(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    f = tmp_path / "ref.wav"
    f.write_bytes(b"RIFF")
    ok = tmp_path / "ok"
    return {
        "run --report": ("--report", FAST_RUN + ["--report", f / "x.html"]),
        "run --json": ("--json", FAST_RUN + ["--report", ok / "r.html", "--json", f / "x.json"]),
        "run --keep-traces": ("--keep-traces", FAST_RUN + ["--report", ok / "r.html", "--keep-traces", f / "tr"]),
        "compare --report": ("--report", ["compare", GOLD, GOLD, "--report", f / "x.html"]),
        "compare --json": ("--json", ["compare", GOLD, GOLD, "--json", f / "x.json"]),
        "dump --out": ("--out", ["dump", "--preset", "tiny", "--inputs", SHORT, "--out", f / "x.safetensors"]),
        "dump --wav": ("--wav", ["dump", "--preset", "tiny", "--inputs", SHORT, "--out", ok / "d.safetensors",
                                 "--wav", f / "x.wav"]),
        "noise export --out": ("--out", ["noise", "export", "--preset", "tiny", "--out", f / "n.safetensors"]),
        "export-model --out": ("--out", ["export-model", "--out", f / "model"]),
        "export-onnx --out": ("--out", ["export-onnx", "--out", f / "e.onnx"]),
        "calibrate --out": ("--out", ["calibrate", "--inputs", SHORT, "--out", f / "t.toml"]),
        "bisect switches --report": ("--report", ["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT,
                                                  "--no-local", "--report", f / "x.html"]),
        "bisect switches --json": ("--json", ["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT,
                                              "--no-local", "--json", f / "x.json"]),
        "bisect switches --workdir": ("--workdir", ["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT,
                                                    "--no-local", "--workdir", f / "wd"]),
        "bisect precision --log": ("--log", ["bisect", "precision", "--profile", "fp16-flow", "--bundle", SHORT,
                                             "--no-local", "--log", f / "log.json"]),
        "bisect git --json": ("--json", ["bisect", "git", "--good", "HEAD~1", "--bad", "HEAD", "--repo", ROOT,
                                         "--json", f / "x.json"]),
        "run --session --report": ("--report", ["run", "--session", "streaming", "--no-progress",
                                                "--report", f / "x.html"]),
        "dump --session --out": ("--out", ["dump", "--preset", "tiny", "--session", "streaming", "--inputs", STREAM,
                                           "--out", f / "x.safetensors"]),
        "floor --out": ("--out", ["floor", "--preset", "tiny", "--inputs", SHORT, "--no-cache", "--out", f / "x.json"]),
    }


BROKEN = ["run --report", "run --json", "run --keep-traces", "compare --report", "compare --json", "dump --out",
          "dump --wav", "noise export --out", "export-model --out", "export-onnx --out", "calibrate --out",
          "bisect switches --report", "bisect switches --json", "bisect switches --workdir", "bisect precision --log",
          "bisect git --json", "run --session --report", "dump --session --out", "floor --out"]


@pytest.mark.parametrize("which", BROKEN)
def test_an_output_under_a_file_fails_before_the_work(which, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    option, argv = _broken(tmp_path)[which]
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    line = assert_one_line_error(rc, err, option, "ref.wav")
    assert "is a file, not a directory" in line
    assert out == "", f"work was done before the output was checked: {out[:300]}"
    assert not (tmp_path / "ok").exists() or not any((tmp_path / "ok").iterdir())
    assert not (tmp_path / "reports").exists(), "a report was written"
    assert seconds < 60  # (a bound against a hang, not a timing assertion)


KIT_BROKEN = {"kit --out": ("--out", lambda f, kit: ["kit", "--preset", "tiny", "--inputs", SHORT, "-q",
                                                    "--units", "f0_predictor", "--out", f / "kit"]),
              "kit run --out": ("--out", lambda f, kit: ["kit", "run", kit, "--out", f / "o.safetensors"]),
              "kit check --json": ("--json", lambda f, kit: ["kit", "check", kit, kit / "manifest.json",
                                                             "--json", f / "x.json"]),
              "kit check --report": ("--report", lambda f, kit: ["kit", "check", kit, kit / "manifest.json",
                                                                 "--report", f / "x.html"])}


@pytest.fixture(scope="module")
def one_vector_kit(tmp_path_factory) -> Path:
    """A port kit of one vector (the F0 predictor, 2 + 1 seeds: 0.2 s on the tiny model)."""
    out = tmp_path_factory.mktemp("kit") / "k"
    assert main(["kit", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out), "--units", "f0_predictor",
                 "--seeds", "2", "--held-out", "1", "-q"]) == 0
    return out


@pytest.mark.parametrize("which", sorted(KIT_BROKEN))
def test_a_kit_output_under_a_file_fails_before_the_work(which, one_vector_kit, tmp_path, capsys, monkeypatch):
    """The port kit's commands keep the output contract: an output path under a file is one line naming the
    option and the file, exit 2, and nothing written or run."""
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "ref.wav"
    f.write_bytes(b"RIFF")
    option, argv = KIT_BROKEN[which]
    capsys.readouterr()
    rc = main([str(a) for a in argv(f, one_vector_kit)])
    out, err = capsys.readouterr()
    line = assert_one_line_error(rc, err, option, "ref.wav")
    assert "is a file, not a directory" in line
    assert out == "", f"work was done before the output was checked: {out[:300]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.wav"]


def test_parity_report_output_under_a_file_fails_before_the_work(tmp_path, capsys):
    f = tmp_path / "ref.wav"
    f.write_bytes(b"RIFF")
    rc = report_main([str(GOLD), str(GOLD), "-o", str(f / "x.html")])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, "-o", "ref.wav", "is a file, not a directory")
    assert out == ""


def test_an_output_that_is_a_directory_or_named_twice_is_refused(tmp_path, capsys):
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(tmp_path)])
    assert_one_line_error(rc, capsys.readouterr().err, "--json", "is a directory")
    same = tmp_path / "r.html"
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(same), "--report", str(same)])
    assert_one_line_error(rc, capsys.readouterr().err, "the same file as")
    assert not same.exists()


def test_missing_parent_directories_of_an_explicit_path_are_created_and_said(tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "r.json"
    rc = main(["compare", str(GOLD), str(GOLD), "--json", str(target)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert target.exists()
    assert f"created directory {target.parent} for --json {target}" in err, err
    assert_no_traceback(out, err)


def test_pytest_report_under_a_file_is_a_usage_error(pytester):
    f = pytester.path / "ref.wav"
    f.write_bytes(b"RIFF")
    pytester.makepyfile(test_it="def test_nothing():\n    pass\n")
    r = pytester.runpytest_subprocess(f"--parity-report={f / 'x.html'}", "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert "--parity-report" in err and "ref.wav" in err and "Traceback" not in err
    assert "1 passed" not in r.stdout.str()  # refused before the session ran


# =============================================================================================
# a closed stdout: no traceback, the work is done, the exit code is the verdict's

def _closed_stdout_cases(tmp_path: Path) -> dict[str, tuple[str, list, int, list]]:
    """name -> (prog, argv, expected exit code, files that must exist afterwards)."""
    return {
        "profiles": ("parity", ["profiles"], 0, []),
        "faults": ("parity", ["faults"], 0, []),
        "compare": ("parity", ["compare", GOLD, GOLD, "--report", tmp_path / "c.html", "--json", tmp_path / "c.json"],
                    0, [tmp_path / "c.html", tmp_path / "c.json"]),
        "run": ("parity", FAST_RUN + ["--report", tmp_path / "r.html"], 0, [tmp_path / "r.html"]),
        "run-fail": ("parity", FAST_RUN + ["--fault", "istft-gain", "--report", tmp_path / "f.html"], 1,
                     [tmp_path / "f.html"]),
        "dump": ("parity", ["dump", "--preset", "tiny", "--inputs", SHORT, "--out", tmp_path / "d.safetensors"], 0,
                 [tmp_path / "d.safetensors"]),
        "parity-report": ("parity-report", [GOLD, GOLD, "-o", tmp_path / "p.html"], 0, [tmp_path / "p.html"]),
        "bisect-nothing-fails": ("parity", ["bisect", "switches", "--profile", "fp32-sdpa", "--bundle", SHORT,
                                            "--no-local", "--workdir", tmp_path / "wd"], 0,
                                 [tmp_path / "wd" / "bisect-switches.json"]),
        "noise-export": ("parity", ["noise", "export", "--preset", "tiny", "--out", tmp_path / "n.safetensors"], 0,
                         [tmp_path / "n.safetensors"]),
    }


@pytest.mark.parametrize("which", ["profiles", "faults", "compare", "run", "run-fail", "dump", "parity-report",
                                   "bisect-nothing-fails", "noise-export"])
def test_stdout_closed_by_its_reader(which, tmp_path):
    """``parity ... | head -c 0``: the reader is gone before the first write."""
    prog, argv, code, files = _closed_stdout_cases(tmp_path)[which]
    p = subprocess.Popen(command(prog) + [str(a) for a in argv], cwd=str(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # head -c 0
    err = p.stderr.read()
    rc = p.wait(timeout=300)
    assert_no_traceback(err)
    assert rc == code, err
    for f in files:
        assert Path(f).exists(), f"{f} was not written"


@pytest.mark.parametrize("which", ["profiles", "compare"])
def test_stdout_closed_before_start(which, tmp_path):
    """``parity ... >&-``: no stdout at all."""
    prog, argv, code, files = _closed_stdout_cases(tmp_path)[which]
    argv = command(prog) + [str(a) for a in argv]
    r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "_"] + argv, cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert_no_traceback(r.stderr)
    assert r.returncode == code, r.stderr
    for f in files:
        assert Path(f).exists()


# =============================================================================================
# Ctrl-C: exit 130, one line, no traceback

def _interrupt(entry: str, argv: list, cwd: Path, after: float, wait_for: Path | None = None):
    """Run ``parity.cli.<entry>(argv)`` in a child with Ctrl-C semantics (even when this test runs with SIGINT
    ignored) and send it SIGINT ``after`` seconds into the command (or once ``wait_for`` exists)."""
    boot = f"""
import os, signal, sys, threading, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
from parity.cli import {entry}
def fire():
    t0 = time.monotonic()
    wait_for = {str(wait_for) if wait_for else None!r}
    while wait_for and not Path(wait_for).exists() and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    time.sleep({after})
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire, daemon=True).start()
sys.exit({entry}({[str(a) for a in argv]!r}))
"""
    return subprocess.run([sys.executable, "-c", boot], cwd=str(cwd), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("which", ["run", "dump", "compare", "parity-report", "bisect"])
def test_ctrl_c(which, tmp_path):
    traces = tmp_path / "traces"
    cases = {
        "run": ("main", FAST_RUN + ["--keep-traces", traces, "--report", tmp_path / "r.html"], 0.0,
                traces / "short-offline-reference.safetensors.partial"),
        "dump": ("main", ["dump", "--preset", "tiny", "--inputs", SHORT, "--out", tmp_path / "d.safetensors"], 0.0,
                 tmp_path / "d.safetensors.partial"),
        "compare": ("main", ["compare", GOLD, GOLD, "--report", tmp_path / "c.html"], 0.3, None),
        "parity-report": ("report_main", [GOLD, GOLD, "-o", tmp_path / "p.html"], 0.3, None),
        "bisect": ("main", ["bisect", "switches", "--profile", "fp16-flow", "--bundle", SHORT, "--no-local",
                            "--workdir", tmp_path / "wd"], 0.5, tmp_path / "wd"),
    }
    entry, argv, after, wait_for = cases[which]
    r = _interrupt(entry, argv, tmp_path, after, wait_for)
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    assert_no_traceback(r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and "interrupted" in lines[-1], r.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "p.html").exists()
    if which in ("run", "dump"):  # nothing already computed is lost: the partial trace stays
        assert wait_for.exists() and wait_for.stat().st_size > 0, sorted(p.name for p in wait_for.parent.iterdir())


# =============================================================================================
# concurrent runs into the same report paths

def _start(argv: list, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command("parity") + [str(a) for a in argv], cwd=str(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def test_concurrent_runs_into_the_default_report_path(tmp_path):
    """A passing and a failing run started together, both with the default report name: two reports, each
    stating its own run's verdict."""
    ok = _start(FAST_RUN, tmp_path)
    bad = _start(FAST_RUN + ["--fault", "uncond-keeps-cond"], tmp_path)
    (rc_ok, out_ok, err_ok), (rc_bad, out_bad, err_bad) = _finish(ok), _finish(bad)
    assert_no_traceback(err_ok, err_bad)
    assert (rc_ok, rc_bad) == (0, 1), (err_ok, err_bad)
    p_ok, p_bad = (tmp_path / last_report_path(o) for o in (out_ok, out_bad))
    assert p_ok != p_bad
    assert report_verdict(p_ok) == "PASS" and report_verdict(p_bad) == "FAIL"
    assert len(list((tmp_path / "reports").glob("parity-*.html"))) == 2
    # the terminal header of a case names its profile
    assert "fp32-sdpa" in out_ok.splitlines()[0] and "fp32-sdpa+uncond-keeps-cond" in out_bad.splitlines()[0]


def test_concurrent_runs_into_the_same_explicit_report_path(tmp_path):
    shared, js = tmp_path / "shared.html", tmp_path / "shared.json"
    ok = _start(FAST_RUN + ["--report", shared, "--json", js], tmp_path)
    time.sleep(0.2)
    bad = _start(FAST_RUN + ["--fault", "uncond-keeps-cond", "--report", shared, "--json", js], tmp_path)
    (rc_ok, out_ok, err_ok), (rc_bad, out_bad, err_bad) = _finish(ok), _finish(bad)
    assert_no_traceback(err_ok, err_bad)
    assert (rc_ok, rc_bad) == (0, 1), (err_ok, err_bad)
    p_ok, p_bad = last_report_path(out_ok), last_report_path(out_bad)
    assert {p_ok.name, p_bad.name} == {"shared.html", "shared-2.html"}
    moved_err = err_bad if p_bad.name == "shared-2.html" else err_ok
    assert "is in use by another running command" in moved_err and "shared-2.html" in moved_err
    assert report_verdict(p_ok) == "PASS" and report_verdict(p_bad) == "FAIL"
    # the results follow their reports
    j_ok = p_ok.with_suffix(".json")
    j_bad = p_bad.with_suffix(".json")
    assert json.loads(j_ok.read_text())["verdict"] == "pass" and json.loads(j_bad.read_text())["verdict"] == "fail"
    assert str(j_bad) in out_bad and str(j_ok) in out_ok


def test_a_later_run_replaces_an_explicit_report_and_a_default_name_never_does(tmp_path, capsys, monkeypatch):
    from parity.outputs import claim_output, release

    shared = tmp_path / "r.html"
    shared.write_text("an old report")
    c = claim_output(shared, "--report")  # explicit: an old file is the user's to replace
    assert c.path == shared and not c.moved
    c2 = claim_output(shared, "--report")  # the same name while the first holder runs: the next free name
    assert c2.path == tmp_path / "r-2.html" and "in use by another running command" in capsys.readouterr().err
    release(c.path)
    release(c2.path)
    c3 = claim_output(shared, "--report", replace_existing=False)  # a default name never replaces a file
    assert c3.path == tmp_path / "r-2.html"
    release(c3.path)


# =============================================================================================
# exit codes of the bisector when nothing fails

def test_bisect_switches_when_nothing_fails_exits_0(tmp_path, capsys):
    rc = main(["bisect", "switches", "--profile", "fp32-sdpa", "--bundle", str(SHORT), "--no-local", "--workdir",
               str(tmp_path / "wd"), "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "NO_FAILURE" in out
    assert json.loads((tmp_path / "b.json").read_text())["status"] == "no_failure"


# =============================================================================================
# the pytest session report: counted by test outcome, fault cases grouped, every case kept (serial and xdist)

SUITE = f"""
import pytest
SHORT = {str(SHORT)!r}

def test_case(parity_case, assert_parity):
    assert_parity(parity_case)

@pytest.mark.parametrize("fault", ["uncond-keeps-cond", "istft-gain"])
def test_fault_is_caught(fault, parity_run):
    case = parity_run("fp32-sdpa", SHORT, faults=(fault,), local=False)
    assert case.result.verdict == "fail"
"""


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
def test_session_report_counts_cases_by_their_tests(pytester, workers):
    pytester.makepyfile(test_suite=SUITE)
    report = pytester.path / "reports" / "ci.html"
    args = ["--parity-profile", "fp32-sdpa", f"--parity-bundle={SHORT}", f"--parity-report={report}",
            "-p", "no:cacheprovider"] + (["-n", str(workers)] if workers else [])
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(passed=4)
    page = report.read_text()
    title = re.search(r"<title>([^<]*)</title>", page).group(1)
    assert title.startswith("parity PASS"), title
    assert "4 of 4" in title, title
    rows = re.findall(r'<tr class="case [^"]*" data-test="([^"]*)"', page)
    assert len(rows) == 4, rows  # no case dropped
    faults = re.search(r'<section id="fault-cases">(.*?)</section>', page, re.S).group(1)
    assert faults.count('<tr class="case') == 2 and "uncond-keeps-cond" in faults and "istft-gain" in faults
    cases = re.search(r'<section id="cases">(.*?)</section>', page, re.S).group(1)
    assert cases.count('<tr class="case') == 2
    assert "expected fault caught" in faults
    line = next(ln for ln in r.stdout.lines if "parity: session report" in ln)
    assert "PASS" in line and "4 cases" in line


FAILING_SUITE = f"""
SHORT = {str(SHORT)!r}

def test_case(parity_case, assert_parity):
    assert_parity(parity_case)

def test_a_regression_slips_in(parity_run, assert_parity):
    assert_parity(parity_run("fp32-sdpa", SHORT, faults=("istft-gain",), local=False))
"""


def test_session_report_of_a_failing_suite_says_fail(pytester):
    """The other direction: a red build never gets a PASS page."""
    pytester.makepyfile(test_suite=FAILING_SUITE)
    report = pytester.path / "ci.html"
    r = pytester.runpytest_subprocess("--parity-profile", "fp32-sdpa", f"--parity-bundle={SHORT}",
                                      f"--parity-report={report}", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, failed=1)  # test_case: offline and streaming
    page = report.read_text()
    title = re.search(r"<title>([^<]*)</title>", page).group(1)
    assert title.startswith("parity FAIL") and "2 of 3" in title, title
    assert "exit status 1" in page
    assert "test failed: fault not caught as expected" not in page  # the fault row's test did fail...
    faults = re.search(r'<section id="fault-cases">(.*?)</section>', page, re.S).group(1)
    assert "test failed" in faults and "istft-gain" in faults  # ...and the page says so


CRASHING_SUITE = f"""
import os
SHORT = {str(SHORT)!r}

def test_case(parity_run, assert_parity):
    assert_parity(parity_run("fp32-sdpa", SHORT, local=False))

def test_the_worker_dies():
    os._exit(3)
"""


def test_session_report_names_a_worker_that_went_down(pytester):
    """pytest-xdist: a worker that dies takes its cases with it; the page says so and does not say PASS."""
    pytester.makepyfile(test_suite=CRASHING_SUITE)
    report = pytester.path / "ci.html"
    r = pytester.runpytest_subprocess("--parity-profile", "fp32-sdpa", f"--parity-bundle={SHORT}",
                                      f"--parity-report={report}", "-p", "no:cacheprovider", "-n", "2")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    page = report.read_text()
    title = re.search(r"<title>([^<]*)</title>", page).group(1)
    assert not title.startswith("parity PASS"), title
    assert "went down" in page and "the cases it ran are missing from this page" in page


# =============================================================================================
# the README's commands are commands

def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for ln in block.splitlines():
            ln = ln.split("  #")[0].strip()
            if ln.startswith(("parity ", "parity-report ")):
                out.append(ln)
    return out


def test_every_readme_command_line_parses():
    import shlex

    from parity.cli import build_parser

    cmds = _readme_commands()
    assert len(cmds) > 15
    for ln in cmds:
        argv = shlex.split(ln)
        assert "|" not in argv, f"README: {ln!r} is two commands joined by a pipe"
        if argv[0] == "parity":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"README: {ln!r} does not parse (exit {exc.code})")


def test_the_readme_exit_code_table_matches_the_code():
    """README's "Exit codes and outputs" table names exactly the codes the commands use, with their meanings."""
    from parity.bisect.log import EXIT_CODES as BISECT_CODES
    from parity.result import EXIT_CODES

    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes and outputs", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (\d+) \| (.*) \|$", section, re.M))
    assert set(table) == {"0", "1", "2", "130"}, table
    assert set(map(str, EXIT_CODES.values())) | set(map(str, BISECT_CODES.values())) <= set(table)
    assert table[str(EXIT_CODES["pass"])].startswith("pass") and "NO_FAILURE" in table["0"]
    assert table[str(EXIT_CODES["fail"])].startswith("parity failure")
    assert table[str(EXIT_CODES["error"])].startswith("unusable input") and "no traceback" in table["2"]
    assert table[str(BISECT_CODES["interrupted"])].startswith("interrupted")
    assert "parity profiles | parity faults" not in text


def test_ctrl_c_inside_a_library_import_is_still_an_interruption(capsys):
    """A SIGINT swallowed mid-import (scipy's lazy loader) surfaces later as another error (a RecursionError on
    the half-initialised module, seen once in CI at 0.3 s into parity-report): still exit 130, one line."""
    import os
    import signal
    import threading

    from parity.cli import guarded_command

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread only")

    def body():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass  # what an interrupted import machinery does with it
        raise RecursionError("maximum recursion depth exceeded")

    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert guarded_command("parity", body) == 130
    finally:
        signal.signal(signal.SIGINT, prev)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("parity: interrupted (RecursionError"), err

    def plain_bug():
        raise RecursionError("a real bug")

    with pytest.raises(RecursionError):  # without a SIGINT an error stays an error
        guarded_command("parity", plain_bug)
