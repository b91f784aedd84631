"""``bisect git``: ``git bisect run`` with the parity check as the oracle, against a reference computed once
from the current code and frozen.

Each commit runs in its own ``git worktree add --detach`` checkout (the user's working tree is never touched:
``git bisect start --no-checkout``): either the commit's own ``candidate`` package through
``python -m parity.cli dump`` (``PYTHONPATH=<worktree>:<this project>``), or ``--cmd``, any program that
writes a dump (``{out}``) in a format :mod:`parity.ingest` reads. Oracle exit codes follow ``git bisect run``:
0 good, 1 bad, 125 skip (the commit cannot build or run: no dump, import error, timeout, unreadable dump), 128
abort (trial or time budget exhausted). ``git bisect reset`` and the worktree clean-up run in a ``finally``
(also on SIGINT/SIGTERM), and the repository state (HEAD, branch, ``git status``, worktrees, no bisect in
progress) is checked against a snapshot afterwards.

Design note on the oracle (POSIX only: a Unix socket and process groups): ``git bisect run`` starts a tiny
client (``oracle.py`` in the work directory, standard library only, run with ``python -S``) for each commit;
it asks this process over a Unix socket and exits with the code it is given. This process owns the frozen
reference (loaded once), the log (one writer), the budget and the clean-up, so a commit costs one candidate
run and no second ``import torch``. If this process dies, the client exits 128 and git aborts the run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from reference.errors import ParityUserError

from ..outputs import write_output
from ..result import read_json, write_json
from ..harness import ModelSpec
from .log import BisectResult, BisectUsageError, TrialLog, TrialProgress, deadline_after, headline_text, make_workdir
from .gitops import (ORACLE_CLIENT, default_git_workdir, git, kill_group, last_line, protect_signals, quiet_signals,
                     repo_state, run_proc, sniff_dump)
from .page import finish, trial_report
from .trials import DEFAULT_BUNDLE, DEFAULT_SESSION_BUNDLE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ABORT = 128  # git bisect run: 128..255 aborts the bisection

class GitBisect:
    """One ``git bisect run`` with the parity oracle: the frozen reference, the trial log, the budget, the
    worktrees; :meth:`run` drives it and always restores the repository."""


    def __init__(self, repo: Path, good: str, bad: str, cfg: GitBisectConfig):
        self.repo, self.cfg = repo, cfg
        self.cmd, self.profile, self.faults = cfg.cmd, cfg.profile, list(cfg.faults or ())
        self.model, self.device = cfg.model, cfg.device
        self.maps = cfg.maps
        from ..capture.runner import RunMode

        self.run_mode = cfg.mode if cfg.mode is not None else RunMode(streaming=cfg.streaming)
        self.streaming = self.run_mode.streaming
        self.mode = self.run_mode if self.run_mode.is_session else None  # a streaming session (the loop)
        self.max_trials, self.trial_timeout = cfg.max_trials, cfg.trial_timeout
        self.deadline = deadline_after(cfg.timeout)
        self.verify, self.keep_traces, self.python = cfg.verify, cfg.keep_traces, cfg.python or sys.executable
        self.trial_reports = cfg.trial_reports
        self.good, self.bad = good, bad
        self.good_sha = self._commit(good, "--good")
        self.bad_sha = self._commit(bad, "--bad")
        if self.good_sha == self.bad_sha:
            raise BisectUsageError("--good and --bad are the same commit")
        if git(repo, "merge-base", "--is-ancestor", self.good_sha, self.bad_sha, check=False).returncode != 0:
            raise BisectUsageError(f"--good {good} is not an ancestor of --bad {bad}")
        self.n_commits = int(git(repo, "rev-list", "--count", f"{self.good_sha}..{self.bad_sha}").stdout.strip())
        default = DEFAULT_SESSION_BUNDLE if self.mode is not None else DEFAULT_BUNDLE
        self.bundles = [Path(b) for b in (cfg.bundles or ([] if cfg.ref_traces else [default]))]
        if cfg.ref_traces:
            self.ref_paths = [Path(r) for r in cfg.ref_traces]
            for r in self.ref_paths:
                if not r.exists():
                    raise BisectUsageError(f"{r}: reference trace not found")
            if self.bundles and len(self.bundles) != len(self.ref_paths):
                raise BisectUsageError("give one --bundle per --ref-trace (or none with --cmd)")
        else:
            self.ref_paths = None
        for b in self.bundles:
            if not b.exists():
                raise BisectUsageError(f"{b}: input bundle not found")
        if cfg.cmd is None and not self.bundles:
            raise BisectUsageError("the in-process mode (no --cmd) needs --bundle to run the candidate on")
        if cfg.cmd is None and not (cfg.model.preset or cfg.model.model_dir):
            raise BisectUsageError("the in-process mode needs --preset or --model-dir")
        workdir = cfg.workdir
        if workdir is None and cfg.log is None:
            workdir = default_git_workdir(repo)
        self.wd, log_path = make_workdir(workdir, cfg.log, "git")
        bound = self.n_commits + 1 + (2 if cfg.verify else 0)
        self.bound = bound if cfg.max_trials is None else min(bound, cfg.max_trials)
        names = [b.name for b in self.bundles] or [r.name for r in self.ref_paths]
        identity = {"repo": str(repo), "good": self.good_sha, "bad": self.bad_sha, "cmd": cfg.cmd,
                    "profile": None if cfg.cmd else cfg.profile, "faults": None if cfg.cmd else self.faults,
                    **({"onnx": cfg.onnx.cli_args()} if cfg.onnx and not cfg.cmd else {}),
                    "model": None if cfg.cmd else (cfg.model.preset or str(cfg.model.model_dir)), "bundles": names,
                    "streaming": self.streaming, "policy": str(cfg.policy) if cfg.policy else None,
                    **({"mode": self.mode.label} if self.mode is not None else {}),
                    "maps": cfg.maps or None}
        self.log = TrialLog(log_path, "git", identity, resume=cfg.resume,
                            settings={"max_trials": cfg.max_trials, "timeout_s": cfg.timeout,
                                      "trial_timeout_s": cfg.trial_timeout, "verify": cfg.verify})
        progress = cfg.progress
        self.progress = progress if isinstance(progress, TrialProgress) else TrialProgress("git", progress)
        self.run_trials = 0
        self.exhausted: str | None = None
        self.ref_model = cfg.ref_model
        self._mask_model, self._mask_why = None, None  # streaming: the model of the chunk-mask check, loaded once
        self.refs: list = []  # Loaded, per bundle
        self.spec = cfg.spec  # the comparison spec (built in frozen_reference when not given)
        self.wt_root: Path | None = None
        self._subjects: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def _commit(self, rev: str, what: str) -> str:
        p = git(self.repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if p.returncode != 0 or not p.stdout.strip():
            raise BisectUsageError(f"{what} {rev!r} is not a commit of {self.repo}")
        return p.stdout.strip()

    def subject(self, sha: str) -> str:
        if sha not in self._subjects:
            self._subjects[sha] = git(self.repo, "log", "-1", "--format=%s", sha, check=False).stdout.strip()
        return self._subjects[sha]

    def frozen_reference(self) -> None:
        """The reference traces: given, found in the work directory (resume), or computed now, once."""
        from ..ingest import load

        if self.spec is None:  # judged like parity run: the floor where one is measured, else the flat rules
            from ..floor.store import FloorStore
            from ..judge.policy import load_policy
            from ..judge.spec import ComparisonSpec

            self.spec = ComparisonSpec(policy=load_policy(self.cfg.policy), floors=FloorStore())
        paths = []
        if self.ref_paths:
            paths = self.ref_paths
        else:
            from reference.bundle import bundle_dims, load_bundle

            from ..capture.runner import run_pipeline

            model = self.ref_model
            for b in self.bundles:
                p = self.wd / "reference" / f"{b.stem}-{self.run_mode.label}-reference.safetensors"
                if not p.exists():
                    if model is None:
                        model = self.model.load()
                    self.progress.note(f"computing the frozen reference trace for {b.name}")
                    meta = {"inputs": b.name, "frozen_for": "parity bisect git"}
                    run_pipeline(model, load_bundle(b, **bundle_dims(model.cfg)), p, self.run_mode, extra_meta=meta,
                                 raise_errors=True)
                paths.append(p)
        self.ref_paths = paths
        self.refs = [load(p, self.maps) for p in paths]
        self.log.update(reference=[self.log.rel(p) for p in paths])

    def _mask_check(self, i: int, cand) -> dict | None:
        """Streaming: the chunk-mask check of a commit's dump against the frozen reference, with the reference
        model (the one that froze it, else the one its provenance names, loaded once)."""
        if not self.streaming or not self.spec.mask_check:
            return None
        from ..capture.mask_check import check_saved, not_checked
        from ..capture.trace_model import model_from_provenance

        ref = self.refs[i]
        if self._mask_model is None and self._mask_why is None:
            self._mask_model, self._mask_why = ((self.ref_model, None) if self.ref_model is not None
                                                else model_from_provenance(ref.metadata))
        if self._mask_model is None:
            return not_checked(self._mask_why)
        return check_saved(ref.metadata, ref.tensors, cand.tensors, streaming=True, model=self._mask_model)

    def _budget_left(self) -> str | None:
        if self.max_trials is not None and self.run_trials >= self.max_trials:
            return f"trial budget of {self.max_trials} exhausted"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time budget exhausted"
        return None

    # -- one commit ----------------------------------------------------------------------------------
    def judge(self, sha: str, role: str = "") -> int:
        """0 good, 1 bad, 125 skip, 128 abort (budget). Finished commits come from the log."""
        entry = self.log.lookup(sha)
        if entry is not None:
            self.progress.trial(entry["n"], self.bound, f"{sha[:10]} {self.subject(sha)[:50]}", entry["verdict"],
                                headline_text(entry.get("headline"), 100) or entry.get("reason"), 0.0,
                                " (from the log)")
            return int(entry["code"])
        why = self._budget_left()
        if why:
            self.exhausted = why
            self.progress.note(f"{why}: aborting")
            return ABORT
        n = len(self.log.trials) + 1
        self.run_trials += 1
        t0 = time.perf_counter()
        tdir = self.wd / "trials" / sha[:12]
        code, reason, headline, result_file, dump_files = self._trial(sha, tdir)
        if code == ABORT:  # the time budget ran out inside the trial
            self.exhausted = reason
            self.progress.note(f"{reason}: aborting")
            return ABORT
        verdict = {0: "good", 1: "bad", 125: "skip"}[code]
        rep = None
        if self.trial_reports and result_file is not None:
            rep = trial_report(read_json(result_file), tdir / "report.html")
        self.log.add({"n": n, "key": sha, "what": f"{sha[:10]} {self.subject(sha)}", "commit": sha,
                      "subject": self.subject(sha), "role": role or None, "code": code, "verdict": verdict,
                      "headline": headline, "reason": reason, "seconds": round(time.perf_counter() - t0, 3),
                      "result": self.log.rel(result_file) if result_file else None,
                      "dumps": [self.log.rel(d) for d in dump_files], "report": self.log.rel(rep) if rep else None,
                      "log_dir": self.log.rel(tdir)})
        self.progress.trial(n, self.bound, f"{sha[:10]} {self.subject(sha)[:50]}", verdict,
                            headline_text(headline, 100) or reason, time.perf_counter() - t0)
        return code

    def _timeout(self) -> tuple[float | None, bool]:
        """(timeout for the next program, whether it is the global deadline that bounds it)."""
        t = self.trial_timeout
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.01)
            if t is None or left < t:
                return left, True
        return t, False

    def _trial(self, sha: str, tdir: Path):
        from ..judge.compare import compare_loaded
        from ..ingest import load

        if tdir.exists():
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True)
        wt = self.wt_root / sha[:12]
        p = git(self.repo, "worktree", "add", "--detach", "--force", str(wt), sha, check=False)
        if p.returncode != 0:
            return 125, f"git worktree add failed: {last_line(p.stderr)}", None, None, []
        dumps: list[Path] = []
        try:
            for i in range(len(self.refs)):
                bundle = self.bundles[i] if i < len(self.bundles) else None
                stem = (bundle.stem if bundle else Path(self.ref_paths[i]).stem)
                out = tdir / f"{stem}-dump" if self.cmd else tdir / f"{stem}.safetensors"
                env = dict(os.environ)
                env.update({"PARITY_BISECT_COMMIT": sha, "PARITY_REF_TRACE": str(self.ref_paths[i]),
                            "PARITY_OUT": str(out), "PARITY_BUNDLE": str(bundle.resolve()) if bundle else ""})
                if self.cmd:
                    command = (self.cmd.replace("{out}", shlex.quote(str(out)))
                               .replace("{ref}", shlex.quote(str(self.ref_paths[i])))
                               .replace("{bundle}", shlex.quote(str(bundle.resolve())) if bundle else "''"))
                    argv, shell = command, True
                else:
                    env["PYTHONPATH"] = os.pathsep.join([str(wt), str(PROJECT_ROOT)]
                                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
                    argv = [self.python, "-m", "parity.cli", "dump", "--pipeline", "candidate",
                            "--profile", self.profile, "--inputs", str(bundle.resolve()), "--out", str(out)]
                    argv += self.model.cli_args()
                    if self.device and self.device != "cpu":
                        argv += ["--device", self.device]
                    from ..args import run_mode_cli_args

                    argv += run_mode_cli_args(self.run_mode)  # a commit without --session cannot run one: skip (125)
                    for f in self.faults:
                        argv += ["--fault", f]
                    if self.cfg.onnx:  # a commit whose dump lacks these options exits 2: skipped, with the reason
                        argv += self.cfg.onnx.cli_args()
                    shell = False
                timeout, global_bound = self._timeout()
                rc, tail = run_proc(argv, cwd=str(wt), env=env, timeout=timeout, log_path=tdir / f"{stem}.log",
                                     shell=shell)
                if rc is None:
                    if global_bound:
                        return ABORT, "time budget exhausted", None, None, []
                    return 125, f"timed out after {timeout:.0f} s", None, None, []
                dump = sniff_dump(out)
                if dump is None:
                    return 125, f"exit {rc} and no dump (cannot build or run): {last_line(tail)}", None, None, []
                dumps.append(dump)
                try:
                    cand = load(dump, self.maps)
                    result = compare_loaded(self.refs[i], cand, self.spec, mask_check=self._mask_check(i, cand))
                except ParityUserError as exc:
                    return 125, f"unreadable dump: {exc}", None, None, dumps
                except Exception as exc:  # noqa: BLE001 - a dump the comparison cannot digest: skip, say why
                    return 125, f"comparison failed on this dump: {type(exc).__name__}: {exc}", None, None, dumps
                result.case = {"bundle": bundle.name if bundle else stem, "commit": sha,
                               "subject": self.subject(sha), "profile": None if self.cmd else self.profile}
                v = result.verdict
                fd = result.first_divergence.headline_json() if result.first_divergence else None
                if v == "error":
                    return 125, f"comparison not possible: {headline_text(fd)}", fd, None, dumps
                if v == "fail":
                    rf = write_json(result, tdir / f"{stem}-result.json")
                    return 1, (f"exit {rc}" if rc else ""), fd, rf, dumps
            return 0, "", None, None, dumps
        finally:
            git(self.repo, "worktree", "remove", "--force", str(wt), check=False)
            if wt.exists():
                shutil.rmtree(wt, ignore_errors=True)
                git(self.repo, "worktree", "prune", check=False)

    # -- driving git bisect run ------------------------------------------------------------------------
    def serve(self, sock_path: Path) -> tuple[int, str]:
        client = self.wd / "oracle.py"
        write_output(client, ORACLE_CLIENT)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(sock_path))
        srv.listen(1)
        srv.settimeout(0.2)
        run_log = self.wd / "git-bisect-run.log"
        self.git_proc = None
        try:
            with open(run_log, "wb") as out:
                self.git_proc = subprocess.Popen(
                    ["git", "-C", str(self.repo), "bisect", "run", self.python, "-S", str(client), str(sock_path)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                while True:
                    try:
                        conn, _ = srv.accept()
                    except socket.timeout:
                        if self.git_proc.poll() is not None:
                            break
                        continue
                    with conn:
                        conn.settimeout(30)
                        try:
                            conn.recv(64)
                        except OSError:
                            pass
                        sha = git(self.repo, "rev-parse", "BISECT_HEAD").stdout.strip()
                        code = self.judge(sha)
                        try:
                            conn.sendall(f"{code}\n".encode())
                        except OSError:
                            pass
                rc = self.git_proc.wait()
        finally:
            srv.close()
            if self.git_proc is not None and self.git_proc.poll() is None:
                kill_group(self.git_proc)
        return rc, run_log.read_text(errors="replace")

    def cleanup(self) -> None:
        if getattr(self, "git_proc", None) is not None and self.git_proc.poll() is None:
            kill_group(self.git_proc)
        git(self.repo, "bisect", "reset", check=False)
        if self.wt_root is not None:
            for ln in git(self.repo, "worktree", "list", "--porcelain", check=False).stdout.splitlines():
                if ln.startswith("worktree ") and Path(ln[9:]).resolve().is_relative_to(self.wt_root.resolve()):
                    git(self.repo, "worktree", "remove", "--force", ln[9:], check=False)
            shutil.rmtree(self.wt_root, ignore_errors=True)
        git(self.repo, "worktree", "prune", check=False)

    # -- the whole bisection ------------------------------------------------------------------------
    def run(self) -> BisectResult:
        """Verify the endpoints, run ``git bisect run``, read its answer; restore the repository whatever
        happens (KeyboardInterrupt and SIGTERM included) and write the log and the page."""
        t_start = time.perf_counter()
        before = repo_state(self.repo, ignore=self.wd)
        res = BisectResult("git", "error", bound=self.bound)
        restore_term = protect_signals()
        tmp = Path(tempfile.mkdtemp(prefix="parity-bisect-"))
        self.wt_root = tmp / "wt"
        self.wt_root.mkdir()
        interrupted = False
        try:
            self.frozen_reference()
            self.progress.note(f"{self.n_commits} commit(s) in {self.good_sha[:10]}..{self.bad_sha[:10]}; "
                               f"{'--cmd ' + repr(self.cmd) if self.cmd else 'candidate profile ' + self.profile}")
            if not self.verify or self.verify_endpoints(res):
                self.bisect_run(res)
        except KeyboardInterrupt:
            interrupted = True
            res.status = "interrupted"
            res.message = f"interrupted; the repository was restored; resume with --resume --log {self.log.path}"
            raise
        finally:
            restore_quiet = quiet_signals()
            try:
                self.cleanup()
                shutil.rmtree(tmp, ignore_errors=True)
                self.check_restored(res, before)
                res.trials = self.run_trials
                res.seconds = time.perf_counter() - t_start
                res.skipped = [{"sha": t["commit"], "subject": t.get("subject", ""), "reason": t.get("reason", "")}
                               for t in self.log.trials if t.get("code") == 125]
                self.drop_dumps(res)
                if interrupted:
                    self.log.update(status="interrupted")
                    res.log = self.log.path
                    res.total_trials = len(self.log.trials)
                else:
                    finish(res, self.log, self.cfg.report)
            finally:
                restore_quiet()
                restore_term()
        return res

    def verify_endpoints(self, res: BisectResult) -> bool:
        """--bad must fail and --good must pass; otherwise ``res`` says why nothing can be bisected."""
        cb = self.judge(self.bad_sha, "bad endpoint")
        if cb != 1:
            res.status = {0: "no_failure", 125: "error", ABORT: "budget_exhausted"}[cb]
            res.message = {0: f"--bad {self.bad} passes the parity check: nothing to bisect",
                           125: f"--bad {self.bad} cannot be built or run: "
                                f"{(self.log.lookup(self.bad_sha) or {}).get('reason')}",
                           ABORT: self.exhausted or "budget exhausted"}[cb]
            return False
        cg = self.judge(self.good_sha, "good endpoint")
        if cg != 0:
            e = self.log.lookup(self.good_sha) or {}
            res.status = {1: "start_fails", 125: "error", ABORT: "budget_exhausted"}[cg]
            res.message = {1: f"--good {self.good} already fails the parity check "
                              f"({headline_text(e.get('headline'))}): pick an older good revision",
                           125: f"--good {self.good} cannot be built or run: {e.get('reason')}",
                           ABORT: self.exhausted or "budget exhausted"}[cg]
            return False
        return True

    def bisect_run(self, res: BisectResult) -> None:
        """``git bisect start --no-checkout`` + ``git bisect run`` with the oracle; its answer into ``res``."""
        git(self.repo, "bisect", "start", "--no-checkout", self.bad_sha, self.good_sha)
        sock_dir = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp" if Path("/tmp").is_dir() else None))
        try:
            rc, out = self.serve(sock_dir / "oracle.sock")
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
        m = re.search(r"^([0-9a-f]{40}) is the first bad commit", out, re.M)
        sha = m.group(1) if m else None
        if sha is None and "first bad commit" in out:  # other wording: refs/bisect/bad is the answer
            sha = git(self.repo, "rev-parse", "--verify", "-q", "refs/bisect/bad", check=False).stdout.strip() or None
        if sha:
            res.status = "found"
            res.culprit = {"sha": sha, "subject": self.subject(sha)}
            if self.log.lookup(sha) is None:  # git never ran it (it is --bad, and verify was off)
                self.judge(sha, "first bad commit")
            e = self.log.lookup(sha) or {}
            res.headline = e.get("headline")
            res.message = f"first bad commit {sha[:12]} \"{self.subject(sha)}\""
            if e.get("result"):
                res.trial_report = self.log.abs(e["report"]) if e.get("report") else \
                    trial_report(read_json(self.log.abs(e["result"])), self.wd / "trials" / sha[:12] / "report.html")
                e["report"] = self.log.rel(res.trial_report)
                self.log.save()
        elif "only 'skip'ped commits left" in out:
            res.status = "ambiguous"
            cands = re.findall(r"^([0-9a-f]{40})$", out.split("could be any of:")[-1], re.M)
            res.culprit = [{"sha": c, "subject": self.subject(c)} for c in cands]
            res.message = ("only skipped commits are left: the first bad commit is one of "
                           + ", ".join(f"{c[:10]} {self.subject(c)!r}" for c in cands))
        elif self.exhausted:
            res.status = "budget_exhausted"
            res.message = f"{self.exhausted}; resume with --resume --log {self.log.path}"
        else:
            res.status = "error"
            res.message = f"git bisect run ended (exit {rc}) without a first bad commit: {last_line(out)}"
        res.extra["git_bisect_run"] = out[-4000:]

    def check_restored(self, res: BisectResult, before: dict) -> None:
        after = repo_state(self.repo, ignore=self.wd)
        for k in ("head", "branch", "status", "worktrees", "bisecting"):
            if after[k] != before[k]:
                res.warnings.append(f"repository {k} differs after the bisection: before {before[k]!r}, "
                                    f"after {after[k]!r}")
        for w in res.warnings:
            print(f"parity bisect: warning: {w}", file=sys.stderr)

    def drop_dumps(self, res: BisectResult) -> None:
        """Keep the culprit's dump (and, unfinished, every bad one: --resume may need it)."""
        if self.keep_traces:
            return
        keep = res.culprit.get("sha") if isinstance(res.culprit, dict) else None
        for t in self.log.trials:
            if t.get("commit") != keep and (res.found or t.get("verdict") != "bad"):
                for d in t.get("dumps") or []:
                    p = self.log.abs(d)
                    if p and p.exists():
                        shutil.rmtree(p) if p.is_dir() else p.unlink()


@dataclass
class GitBisectConfig:
    """What ``bisect git`` runs for each commit and within which budget (see :func:`bisect_git`)."""

    cmd: str | None = None  # shell command writing a dump at {out}; None: the commit's candidate package
    profile: str = "fp32-sdpa"  # in-process mode: candidate profile and faults
    faults: Sequence[str] = ()
    onnx: Any = None  # in-process mode: parity.onnx_options.OnnxOptions (--onnx-estimator / --require-provider)
    model: ModelSpec = field(default_factory=lambda: ModelSpec("tiny"))  # for the frozen reference (and trials)
    device: str = "cpu"
    bundles: Sequence[str | Path] | None = None
    ref_traces: Sequence[str | Path] | None = None  # frozen reference traces to use instead of computing them
    ref_model: Any = None  # an already loaded reference model (instead of ``model``)
    streaming: bool = False
    mode: Any = None  # a parity.capture.runner.RunMode (None: one call, ``streaming``)
    policy: Any = None  # the flat tolerances' extra policy file (when no ``spec`` is given)
    spec: Any = None  # the parity.judge.spec.ComparisonSpec (None: the policy and the default floor store)
    maps: dict | None = None
    max_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = 600.0
    workdir: str | Path | None = None
    log: str | Path | None = None
    resume: bool = False
    verify: bool = True
    keep_traces: bool = False
    report: str | Path | None = None
    progress: bool | TrialProgress | None = None
    python: str | None = None
    trial_reports: bool = False


def bisect_git(repo, good: str, bad: str, config: GitBisectConfig | None = None, **overrides) -> BisectResult:
    """``git bisect run`` over ``good..bad`` of ``repo`` with the parity check against a frozen reference.

    ``config`` (or its fields as keywords; ``preset``/``model_dir``/``noise`` name the model too). In-process
    mode (no ``cmd``): each commit's own ``candidate`` package runs through
    ``python -m parity.cli dump --pipeline candidate --profile PROFILE`` in a worktree of that commit, with
    ``PYTHONPATH=<worktree>:<this project>``. With ``cmd``: the shell command runs in the worktree with
    ``{out}`` (the dump to write), ``{ref}`` (the frozen reference trace) and ``{bundle}`` replaced, also
    given as ``PARITY_OUT``, ``PARITY_REF_TRACE``, ``PARITY_BUNDLE`` and ``PARITY_BISECT_COMMIT``.

    The reference is computed once (``ref_model``, or ``model``) unless ``ref_traces`` are given, and frozen
    in the work directory (a resumed run reuses it). ``verify`` first checks that ``bad`` fails and ``good``
    passes. The repository is restored (``git bisect reset``, worktrees removed) in every case, including
    KeyboardInterrupt and SIGTERM; the result's ``warnings`` say if its state differs from before.
    """
    spec = {k: overrides.pop(k) for k in ("preset", "model_dir", "noise") if k in overrides}
    if spec:
        overrides["model"] = ModelSpec(spec.get("preset", "tiny"), spec.get("model_dir"), spec.get("noise"))
    cfg = dataclasses.replace(config or GitBisectConfig(), **overrides)
    repo = Path(repo).resolve()
    top = git(repo, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise BisectUsageError(f"{repo}: not a git repository")
    repo = Path(top.stdout.strip())
    if repo_state(repo)["bisecting"]:
        raise BisectUsageError(f"{repo}: a git bisect is already in progress (finish it with 'git bisect reset')")
    return GitBisect(repo, good, bad, cfg).run()
