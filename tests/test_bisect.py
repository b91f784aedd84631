"""``parity bisect``: ddmin, bisect switches / precision / git on the tiny preset (CPU).

Every model run here is single-threaded: on a shared 2-core runner the tiny model is 10-30x faster with one
thread than with two contending ones (the fixture restores the thread count afterwards).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from parity.project import profile_switches

from parity.bisect import (apply_changes, atomic_changes, bisect_git, bisect_precision,
                           bisect_switches, ddmin, ddmin_bound, precision_components, repo_state)

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "fixtures" / "bundles" / "short.safetensors"


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the dump subprocesses of bisect git
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="module")
def tiny():
    from reference.model import Token2Wav

    return Token2Wav.from_preset("tiny")


# =============================================================================================
# ddmin

class _Adversary(Exception):
    pass


def _worst_case(n: int) -> tuple[int, bool]:
    """Play every possible oracle against ddmin (each new subset may answer either way; the full set has the
    property, the empty set has not): (most trials ddmin ever needs, whether every result was 1-minimal)."""
    worst, all_minimal = 0, True
    stack: list[list[bool]] = [[]]
    while stack:
        answers = stack.pop()
        known: dict[frozenset, bool] = {frozenset(range(n)): True, frozenset(): False}
        pos = [0]

        def test(s):
            k = frozenset(s)
            if k not in known:
                if pos[0] >= len(answers):
                    raise _Adversary
                known[k] = answers[pos[0]]
                pos[0] += 1
            return known[k]

        try:
            r = ddmin(list(range(n)), test)
        except _Adversary:
            stack += [answers + [True], answers + [False]]
            continue
        worst = max(worst, r.trials)
        # 1-minimal: the result has the property and removing any one item loses it
        all_minimal &= known[frozenset(r.items)] and all(not known.get(frozenset(set(r.items) - {x}), True)
                                                         for x in r.items)
    return worst, all_minimal


def test_ddmin_worst_case_is_within_the_documented_bound():
    for n in range(1, 7):
        worst, minimal = _worst_case(n)
        assert worst <= ddmin_bound(n), (n, worst, ddmin_bound(n))
        assert minimal, n
    assert [_worst_case(n)[0] for n in range(1, 6)] == [2, 4, 8, 14, 21]  # 2 boundary checks + 0, 2, 6, 12, 19


def test_ddmin_single_culprit_is_logarithmic():
    calls = []
    r = ddmin(list(range(16)), lambda s: calls.append(tuple(s)) or 11 in s)
    assert r.items == [11] and r.status == "minimal"
    assert r.trials == len(calls) == 9  # full, empty, then halving: 2 + 2*log2(16) - 1
    assert r.trials <= 2 + 2 * 4


def test_ddmin_finds_an_interacting_pair_and_memoises():
    seen: dict[frozenset, int] = {}

    def test(s):
        seen[frozenset(s)] = seen.get(frozenset(s), 0) + 1
        return {3, 12} <= set(s)

    cache: dict = {}
    r = ddmin(list(range(16)), test, cache=cache)
    assert r.items == [3, 12] and r.status == "minimal"
    assert max(seen.values()) == 1  # no subset is ever tested twice
    assert r.trials == len(seen) <= ddmin_bound(16)
    assert r.cache_hits > 0  # the kept partition's subsets come back from the cache
    again = ddmin(list(range(16)), test, cache=cache)  # everything is known now
    assert again.items == [3, 12] and again.trials == 0


def test_ddmin_budget_and_boundary_checks():
    r = ddmin(list(range(16)), lambda s: 11 in s, max_trials=4)
    assert r.status == "budget_exhausted" and r.trials == 4 and 11 in r.items and len(r.items) < 16
    r = ddmin(list(range(16)), lambda s: 11 in s, deadline=time.monotonic() - 1)
    assert r.status == "budget_exhausted" and r.trials == 0 and r.items == list(range(16))
    assert ddmin([1, 2], lambda s: False).status == "full_lacks_property"
    assert ddmin([1, 2], lambda s: True).status == "empty_has_property"
    trials = []
    ddmin(list(range(5)), lambda s: 4 in s, on_trial=lambda n, s, out, sec: trials.append((n, s, out)))
    assert trials[0] == (1, [0, 1, 2, 3, 4], True) and trials[1] == (2, [], False)


def test_trial_report_falls_back_without_parity_report(tmp_path, monkeypatch):
    from parity.bisect import trial_report

    result = {"verdict": "fail", "first_divergence": {"stage": "audio", "code": "x", "message": "m"},
              "findings": [{"severity": "failure", "code": "x", "stage": "audio", "message": "m"}],
              "stages": [{"name": "audio", "status": "fail", "statistic": "snr_db", "value": 1.0, "limit": 30}]}
    monkeypatch.setitem(sys.modules, "parity.present.report", None)  # "import parity.present.report" now raises
    from parity.result import Comparison

    page = trial_report(Comparison.from_json(result), tmp_path / "r.html").read_text()
    assert "Fallback report" in page and "audio" in page and "snr_db" in page


# =============================================================================================
# bisect switches

GLITCHY = """
[tool.parity.profiles.glitchy]
description = "two legitimate optimizations and one regression"
attention = "sdpa"
fused_rope = true
faults = ["istft-gain"]
"""


def test_atomic_changes_and_keep_fp32_travel_with_the_dtype():
    from candidate.switches import resolve_profile

    sw = resolve_profile("fp16-all").with_(faults=("istft-gain",))
    names = [c.name for c in atomic_changes(sw)]
    assert names == ["attention=sdpa", "flow_dtype=fp16", "hift_dtype=fp16", "fault=istft-gain"]
    ch = {c.name: c for c in atomic_changes(sw)}
    only_flow = apply_changes([ch["flow_dtype=fp16"]], sw.keep_fp32)
    assert only_flow.keep_fp32 == ("residual", "adaln", "time_grid", "euler")
    assert apply_changes([ch["hift_dtype=fp16"]], sw.keep_fp32).keep_fp32 == ("hift.f0_predictor", "hift.istft")
    assert apply_changes([ch["attention=sdpa"]], sw.keep_fp32).keep_fp32 == ()
    assert apply_changes(list(ch.values()), sw.keep_fp32) == sw


def test_bisect_switches_names_the_fault_of_a_user_profile(tiny, tmp_path):
    from candidate.faults import catalogue

    pp = tmp_path / "pyproject.toml"
    pp.write_text(GLITCHY)
    res = bisect_switches(tiny, "glitchy", [SHORT], pyproject=pp, workdir=tmp_path / "wd")
    assert res.status == "found" and res.exit_code == 0
    assert res.culprit == ["fault=istft-gain"]
    assert res.headline["stage"] == catalogue()["istft-gain"].stage() == "audio_preclamp"
    log = json.loads(res.log.read_text())
    trials = log["trials"]
    # count the trials: full set, empty set, then ddmin on 3 changes
    assert len(trials) == res.trials == 6 <= ddmin_bound(3)
    assert [t["verdict"] for t in trials] == ["fail", "pass", "pass", "fail", "pass", "fail"]
    assert trials[-1]["key"] == ["fault=istft-gain"] and trials[-1]["headline"] == res.headline
    # the final report names the culprit and links the failing trial's parity report
    page = res.report.read_text()
    assert "fault=istft-gain" in page and res.trial_report.exists()
    assert os.path.relpath(res.trial_report, res.report.parent) in page
    # resumable: the same search from the log runs nothing again
    again = bisect_switches(tiny, "glitchy", [SHORT], pyproject=pp, log=res.log, resume=True)
    assert again.culprit == res.culprit and again.trials == 0
    assert len(json.loads(res.log.read_text())["trials"]) == 6


# a fault only the floor gate sees: one DiT block accumulating its GEMMs in fp16 inside the fp16-flow profile is
# about 30x beyond the fp16 envelope at step1.v1, and within every flat fp16 rule (tiny, short and medium bundles)
FLOOR_ONLY_FAULT = "low-accumulate-block:block=1"


def test_bisect_switches_judges_with_the_floor_like_parity_run(tiny, tmp_path):
    """Bisect trials are judged as parity run judges (the floor store of the spec): a fault only the floor gate
    sees is found; judged by the flat tolerances alone (--no-floor) the same configuration passes, nothing to
    bisect. Before, bisect never looked at a floor and answered NO_FAILURE where parity run fails."""
    from parity.floor.store import FloorStore
    from parity.judge.spec import ComparisonSpec
    from parity.bisect.trials import SearchSettings

    shipped = FloorStore(cache=None, compute=False)  # the shipped floors of the fixture bundles, nothing computed
    res = bisect_switches(tiny, "fp16-flow", [SHORT], faults=(FLOOR_ONLY_FAULT,),
                          settings=SearchSettings(spec=ComparisonSpec(floors=shipped), local=False,
                                                  workdir=tmp_path / "floor"))
    assert res.status == "found" and res.culprit == [f"fault={FLOOR_ONLY_FAULT}"], res.message
    assert res.headline["stage"] == "step1.v1" and "noise floor" in res.headline["message"]  # alone, in fp32
    full = json.loads(res.log.read_text())["trials"][0]  # the profile as parity run judges it: its envelope
    assert full["verdict"] == "fail" and full["key"] == sorted(["attention=sdpa", "flow_dtype=fp16",
                                                                  f"fault={FLOOR_ONLY_FAULT}"])
    assert full["headline"]["stage"] == "step1.v1" and "rounding-only error" in full["headline"]["message"]
    flat = bisect_switches(tiny, "fp16-flow", [SHORT], faults=(FLOOR_ONLY_FAULT,),
                           settings=SearchSettings(spec=ComparisonSpec(floors=None), local=False,
                                                   workdir=tmp_path / "flat"))
    assert flat.status == "no_failure" and flat.trials == 1, flat.message


def test_cli_bisect_switches_on_a_passing_profile_establishes_nothing(tmp_path, capsys):
    from parity.cli import main

    rc = main(["bisect", "switches", "--profile", "fp32-sdpa", "--bundle", str(SHORT), "--workdir",
               str(tmp_path / "wd"), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "NO_FAILURE" in out  # nothing fails, nothing to bisect: an answer, not a parity failure (issue 15)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["status"] == "no_failure" and r["trials"] == 1
    assert main(["bisect", "switches", "--bundle", str(SHORT)]) == 2  # nothing to start from: usage error


# =============================================================================================
# bisect precision

OVERFLOW_BLOCK, DEPTH = 2, 4


@pytest.fixture(scope="module")
def overflow_model():
    """A depth-4 tiny model whose block 2 overflows fp16: its FFN output projection is scaled by 1e5 and
    that block's AdaLN gate by 1e-5. The reference computes the same function as before (finite, fp32),
    but block 2's FFN output (about 1e5) exceeds fp16's 65504."""
    from reference.config import preset
    from reference.hift import build_hift
    from reference.model import Token2Wav, build_flow
    from reference.noise import noise_for_config

    cfg = preset("tiny")
    cfg.flow.decoder.estimator.depth = DEPTH
    flow, hift = build_flow(cfg), build_hift(cfg.hift, cfg.seed)
    blk = flow.decoder.estimator.transformer_blocks[OVERFLOW_BLOCK]
    f = 1e5
    with torch.no_grad():
        out = blk.ff.ff[2]
        out.weight.mul_(f)
        out.bias.mul_(f)
        d = out.weight.shape[0]
        blk.attn_norm.linear.weight[5 * d:6 * d].div_(f)  # gate_mlp, the last of the six modulations
        blk.attn_norm.linear.bias[5 * d:6 * d].div_(f)
    return Token2Wav(cfg, flow, hift, noise_for_config(cfg), "test:tiny-depth4-block2-fp16-overflow",
                     {"source": "test", "scaled": f"block{OVERFLOW_BLOCK}.ff x1e5, gate x1e-5"})


def test_bisect_precision_keeps_exactly_the_overflowing_block(overflow_model, tmp_path):
    from candidate.pipeline import CandidateToken2Wav
    from candidate.switches import resolve_profile
    from parity.harness import run_case
    from parity.capture.runner import run_pipeline
    from reference.bundle import load_bundle

    peak = []
    ff = overflow_model.flow.decoder.estimator.transformer_blocks[OVERFLOW_BLOCK].ff
    hook = ff.register_forward_hook(lambda m, i, o: peak.append(float(o.abs().max())))
    try:
        ref = run_pipeline(overflow_model, load_bundle(SHORT), None)
    finally:
        hook.remove()
    assert all(torch.isfinite(t).all() for t in ref.tensors.values() if t.is_floating_point())
    assert 65504 < max(peak) < float("inf")  # beyond fp16's range, finite in fp32

    res = bisect_precision(overflow_model, "fp16-flow", [SHORT], workdir=tmp_path / "wd")
    comps = precision_components(resolve_profile("fp16-flow"), DEPTH)
    assert comps == ["time_embed", "input_embed", "block0", "block1", "block2", "block3", "norm_out", "proj_out"]
    assert res.status == "found", res.message
    assert res.culprit == ["block2"]  # that block and nothing else (neither a prefix nor a suffix)
    assert res.headline["code"] == "nonfinite_origin"  # the profile itself: NaN/Inf
    log = json.loads(res.log.read_text())["trials"]
    assert len(log) == res.trials == 6 <= ddmin_bound(len(comps))
    assert log[1]["key"] == [] and log[1]["verdict"] == "fail"  # fp16-flow as it is
    assert log[-1]["key"] == ["block2"] and log[-1]["verdict"] == "pass"
    assert res.trial_report.exists() and os.path.relpath(res.trial_report, res.report.parent) in res.report.read_text()

    # the ready-to-paste profile, pasted into a pyproject, gives a passing candidate
    assert res.profile_toml == ('[tool.parity.profiles.fp16-flow-fp32-islands]\nbase = "fp16-flow"\n'
                                'keep_fp32 = ["residual", "adaln", "time_grid", "euler", "block2"]\n')
    pp = tmp_path / "pyproject.toml"
    pp.write_text("[project]\nname = 'x'\n\n" + res.profile_toml)
    sw = profile_switches("fp16-flow-fp32-islands", pyproject=pp)
    assert sw.flow_dtype == "fp16" and sw.keep_fp32[-1] == "block2"
    case = run_case(overflow_model, CandidateToken2Wav(overflow_model, sw, "pasted"), SHORT, local=False)
    assert case.verdict == "pass", case.result.first_divergence

    # --fine, resumed from the same log: only the block's parts are new trials; the FFN is the culprit
    fine = bisect_precision(overflow_model, "fp16-flow", [SHORT], fine=True, log=res.log, resume=True)
    assert fine.culprit == ["block2.ff"] and fine.status == "found"
    assert fine.trials == 2  # block2.attn (fails), block2.ff (passes); the coarse search came from the log
    assert 'keep_fp32 = ["residual", "adaln", "time_grid", "euler", "block2.ff"]' in fine.profile_toml


# =============================================================================================
# bisect git

MAKE_DUMP = '''\
"""A stand-in for a port's dump binary: "builds" the port (compiles candidate/*.py), then writes its stages
in a foreign dialect (.npz, rust_/python_ names) derived from the frozen reference trace."""
import os
import pathlib
import re
import sys

import numpy as np
from safetensors.numpy import load_file

PERTURB = 0.0  # the port's guidance error
RENAME = {"mu": "mu_in", "x0": "x_init", "flow_mel": "generated_mel", "f0": "f0_output", "audio": "final_audio",
          "audio_preclamp": "pre_clamp_audio"}
UPSTREAM = ("token", "prompt_token", "prompt_feat", "embedding", "mu", "spks", "cond", "x0")


def build():
    for f in sorted(pathlib.Path("candidate").glob("*.py")):
        compile(f.read_text(), str(f), "exec")


def main(out):
    try:
        build()
    except SyntaxError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 3
    dump = {}
    for name, a in load_file(os.environ["PARITY_REF_TRACE"]).items():
        m = re.match(r"step(\\d+)\\.(\\w+)$", name)
        downstream = name not in UPSTREAM and not (m and m.group(2) in ("t", "dt", "v1", "v2"))
        if PERTURB and downstream and a.dtype.kind == "f":
            a = a * np.asarray(1 + PERTURB, a.dtype)
        dump[f"rust_step{m.group(1)}_{m.group(2)}" if m else RENAME.get(name, name)] = a
    np.savez(out, **dump)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
'''

GOOD_CFG = "v_cfg = (1.0 + r) * v1 - r * v2\n"
BAD_CFG = "v_cfg = v2 + r * (v1 - v2)  # fused CFG combination\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _commit(repo: Path, msg: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", msg)
    return _git(repo, "rev-parse", "HEAD").strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def history(tmp_path):
    """A throw-away repository: a copy of candidate/ plus a dump tool; c2 breaks the CFG combination (and the
    tool's guidance), c3 does not even compile, c4 repairs c3, the rest is neutral."""
    return _history(tmp_path)


def _history(tmp_path, perturb: str = "0.05"):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "bisect@test")
    _git(repo, "config", "user.name", "bisect test")
    _git(repo, "config", "commit.gpgsign", "false")
    shutil.copytree(ROOT / "candidate", repo / "candidate", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "make_dump.py").write_text(MAKE_DUMP)
    (repo / "README.md").write_text("a port\n")
    (repo / ".gitignore").write_text("__pycache__/\n")
    c = {0: _commit(repo, "initial import: candidate package and dump tool")}
    _git(repo, "tag", "v1")
    (repo / "README.md").write_text("a port of token2wav\n")
    c[1] = _commit(repo, "docs: describe the port")
    _edit(repo / "candidate" / "flow.py", GOOD_CFG, BAD_CFG)
    _edit(repo / "make_dump.py", "PERTURB = 0.0", f"PERTURB = {perturb}")
    c[2] = _commit(repo, "flow: fuse the CFG combination")
    flow = (repo / "candidate" / "flow.py").read_text()
    (repo / "candidate" / "flow.py").write_text(flow + "\ndef split_step(self, x:\n    pass\n")
    c[3] = _commit(repo, "wip: split the Euler step")
    (repo / "candidate" / "flow.py").write_text(flow)
    c[4] = _commit(repo, "flow: finish the split (revert the wip)")
    with open(repo / "candidate" / "hift.py", "a") as f:
        f.write("\n# the iSTFT path follows upstream's CausalHiFTGenerator\n")
    c[5] = _commit(repo, "hift: comment")
    (repo / "README.md").write_text("a port of token2wav (CosyVoice 3)\n")
    c[6] = _commit(repo, "docs: name the model")
    (repo / "VERSION").write_text("0.2\n")
    c[7] = _commit(repo, "release 0.2")
    return repo, c


@pytest.fixture(scope="module")
def frozen_ref(tiny, tmp_path_factory):
    from parity.capture.runner import run_pipeline
    from reference.bundle import load_bundle

    p = tmp_path_factory.mktemp("ref") / "short-reference.safetensors"
    run_pipeline(tiny, load_bundle(SHORT), p)
    return p


def _assert_clean(repo: Path, before: dict) -> None:
    after = repo_state(repo)
    assert after == before
    assert not after["bisecting"] and not (repo / ".git" / "BISECT_START").exists()
    assert subprocess.run(["git", "-C", str(repo), "bisect", "log"], capture_output=True).returncode != 0
    assert _git(repo, "status", "--porcelain") == ""
    assert len(after["worktrees"]) == 1


def _verdicts(log_path: Path) -> dict[str, str]:
    return {t["commit"]: t["verdict"] for t in json.loads(Path(log_path).read_text())["trials"]}


def test_bisect_git_in_process_finds_the_regression_and_skips_the_broken_commit(history, tiny, tmp_path):
    repo, c = history
    before = repo_state(repo)
    assert before["branch"] == "refs/heads/main" and before["head"] == c[7]
    res = bisect_git(repo, "v1", "HEAD", bundles=[SHORT], ref_model=tiny, workdir=tmp_path / "wd")
    _assert_clean(repo, before)
    assert res.status == "found", (res.message, res.extra.get("git_bisect_run"))
    assert res.culprit == {"sha": c[2], "subject": "flow: fuse the CFG combination"}
    assert res.headline["stage"] == "step1.v_cfg"
    v = _verdicts(res.log)
    assert v[c[7]] == "bad" and v[c[0]] == "good"  # the endpoints were checked first
    assert v[c[3]] == "skip"  # cannot even be imported: skipped, not blamed
    assert [s["sha"] for s in res.skipped] == [c[3]] and "SyntaxError" in res.skipped[0]["reason"]
    assert v[c[2]] == "bad" and v[c[1]] == "good"
    assert res.trial_report.exists() and res.trial_report.parent.name == c[2][:12]
    assert os.path.relpath(res.trial_report, res.report.parent) in res.report.read_text()
    assert json.loads(res.log.read_text())["reference"]  # frozen once, in the work directory


def test_bisect_git_cmd_finds_the_regression_in_a_foreign_dump(history, tmp_path, frozen_ref):
    repo, c = history
    before = repo_state(repo)
    from parity.cli import main

    rc = main(["bisect", "git", "--repo", str(repo), "--good", "v1", "--bad", "main", "--cmd",
               f"{sys.executable} make_dump.py {{out}}", "--ref-trace", str(frozen_ref),
               "--workdir", str(tmp_path / "wd"), "--json", str(tmp_path / "r.json")])
    _assert_clean(repo, before)
    r = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and r["status"] == "found", r["message"]
    assert r["culprit"]["sha"] == c[2]
    assert r["headline"]["stage"] == "step1.v_cfg"
    v = _verdicts(Path(r["log"]))
    assert v[c[3]] == "skip" and v[c[2]] == "bad" and v[c[1]] == "good"
    assert "exit 3 and no dump" in r["skipped"][0]["reason"]
    kept = [t for t in json.loads(Path(r["log"]).read_text())["trials"] if t["commit"] == c[2]][0]
    assert kept["dumps"][0].endswith(".npz")  # the culprit's dump is kept, in the port's own dialect
    assert Path(r["trial_report"]).exists()


def test_bisect_git_judges_with_the_floor_like_parity_run(tmp_path, frozen_ref):
    """A port whose commit c2 scales every stage after the velocities by 1 + 1e-5: within every flat fp32 rule,
    beyond k x the noise floor at step1.v_cfg. bisect git judges each commit's dump with the reference trace's
    own floor (the shipped floor of the short bundle) and finds c2; with --no-floor the bad end passes."""
    repo, c = _history(tmp_path, perturb="1e-5")
    before = repo_state(repo)
    from parity.cli import main

    cmd = f"{sys.executable} make_dump.py {{out}}"
    common = ["bisect", "git", "--repo", str(repo), "--good", "v1", "--bad", "main", "--cmd", cmd,
              "--ref-trace", str(frozen_ref)]
    rc = main(common + ["--workdir", str(tmp_path / "floor"), "--json", str(tmp_path / "floor.json")])
    _assert_clean(repo, before)
    r = json.loads((tmp_path / "floor.json").read_text())
    assert rc == 0 and r["status"] == "found" and r["culprit"]["sha"] == c[2], r["message"]
    assert r["headline"]["stage"] == "step1.v_cfg" and "noise floor" in r["headline"]["message"]
    rc = main(common + ["--no-floor", "--workdir", str(tmp_path / "flat"), "--json", str(tmp_path / "flat.json")])
    _assert_clean(repo, before)
    r = json.loads((tmp_path / "flat.json").read_text())
    assert rc == 0 and r["status"] == "no_failure", r["message"]


def test_bisect_git_failure_and_budget_leave_the_repo_clean_and_resume(history, tmp_path, frozen_ref):
    repo, c = history
    before = repo_state(repo)
    cmd = f"{sys.executable} make_dump.py {{out}}"
    # a "good" revision that already fails: nothing established
    res = bisect_git(repo, c[4], "HEAD", cmd=cmd, ref_traces=[frozen_ref], workdir=tmp_path / "a")
    assert res.status == "start_fails" and res.exit_code == 1
    _assert_clean(repo, before)
    # a commit whose program hangs is skipped after --trial-timeout (its process group is killed) ...
    res = bisect_git(repo, "v1", "HEAD", cmd="sleep 60", ref_traces=[frozen_ref], trial_timeout=1,
                     workdir=tmp_path / "t")
    assert res.status == "error" and "timed out" in res.message and res.exit_code == 1
    _assert_clean(repo, before)
    # ... while the global time budget aborts
    res = bisect_git(repo, "v1", "HEAD", cmd="sleep 60", ref_traces=[frozen_ref], timeout=1, workdir=tmp_path / "u")
    assert res.status == "budget_exhausted" and res.exit_code == 1
    _assert_clean(repo, before)
    # the trial budget runs out mid-bisection: git bisect run is aborted and reset
    log = tmp_path / "b" / "bisect-git.json"
    res = bisect_git(repo, "v1", "HEAD", cmd=cmd, ref_traces=[frozen_ref], log=log, verify=False, max_trials=1)
    assert res.status == "budget_exhausted" and res.exit_code == 1 and res.trials == 1
    _assert_clean(repo, before)
    first = json.loads(log.read_text())["trials"]
    assert len(first) == 1
    # ... and the log resumes: the finished commit is not run again
    res = bisect_git(repo, "v1", "HEAD", cmd=cmd, ref_traces=[frozen_ref], log=log, verify=False, resume=True)
    assert res.status == "found" and res.culprit["sha"] == c[2]
    trials = json.loads(log.read_text())["trials"]
    assert [t["commit"] for t in trials].count(first[0]["commit"]) == 1 and res.trials == len(trials) - 1
    _assert_clean(repo, before)


def test_bisect_git_interrupted_restores_the_repo(history, tmp_path, frozen_ref):
    repo, c = history
    before = repo_state(repo)
    mark = tmp_path / "started"
    cmd = f"touch {mark} && sleep 120"
    argv = ["parity", "bisect", "git", "--repo", str(repo), "--good", "v1", "--bad", "HEAD", "--cmd", cmd,
            "--ref-trace", str(frozen_ref), "--no-verify", "--workdir", str(tmp_path / "wd")]
    # Ctrl-C semantics in the child even when this test runs with SIGINT ignored (a job started in the
    # background by a non-interactive shell inherits SIG_IGN, and Python then installs no KeyboardInterrupt)
    boot = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.argv = {argv!r}; runpy.run_module('parity.cli', run_name='__main__')")
    p = subprocess.Popen([sys.executable, "-c", boot], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=str(tmp_path), text=True)
    try:
        t0 = time.monotonic()
        while not mark.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() - t0 < 120, "the first trial never started"
            time.sleep(0.2)
        mid = repo_state(repo)
        assert mid["bisecting"] and len(mid["worktrees"]) == 2  # really mid-bisection, in a worktree
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "restored" in err
    _assert_clean(repo, before)
    log = json.loads((tmp_path / "wd" / "bisect-git.json").read_text())
    assert log["status"] == "interrupted"


# =============================================================================================
# the package: its page escapes what comes from outside; no cycle with the CLI, no private names across modules

def test_bisect_page_escapes_hostile_names(tmp_path):
    from parity.bisect import BisectResult, TrialLog, write_bisect_report

    evil = "<script>alert(1)</script>"
    log = TrialLog(tmp_path / "bisect-switches.json", "switches", {"x": 1})
    rep = tmp_path / "trials" / "t001 <u>.html"
    rep.parent.mkdir()
    rep.write_text("r")
    log.add({"key": [f"fault={evil}"], "what": f"fault={evil}", "verdict": "fail",
             "headline": {"stage": "<i>audio</i>", "code": "x\"onmouseover=\"alert(2)", "message": evil},
             "reason": "</td><script>alert(3)</script>", "seconds": 1.0, "report": log.rel(rep)})
    res = BisectResult("switches", "found", culprit=[f"fault={evil}"], message=f"found {evil}",
                       headline={"stage": "<i>audio</i>", "code": "c", "message": evil}, trial_report=rep,
                       profile_toml=f'[tool.parity.profiles.x]\nkeep_fp32 = ["{evil}"]\n',
                       warnings=[f"warning {evil}"],
                       skipped=[{"sha": "a" * 40, "subject": "<img src=x onerror=alert(4)>", "reason": evil}])
    html = write_bisect_report(res, log, tmp_path / "page.html").read_text()
    assert "<script" not in html and "<img" not in html and "<i>audio" not in html and "<u>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(4)&gt;" in html
    assert 'onmouseover="alert(2)' not in html and "&#34;onmouseover=&#34;alert(2)" in html
    assert 'href="trials/t001 &lt;u&gt;.html"' in html  # the link survives, escaped


def test_bisect_package_has_no_cycle_with_the_cli_and_no_private_cross_imports():
    import ast

    code = "import sys, parity.bisect.cli; assert 'parity.cli' not in sys.modules, 'parity.bisect imports parity.cli'"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for f in sorted((ROOT / "parity" / "bisect").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{f.name} imports private names {private} from {'.' * node.level}{node.module}"
