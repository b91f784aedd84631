"""The pytest plugin, exercised through pytester: options, ini keys, markers, one-line fixtures, the failure
message with the headline finding and the report path, and the golden workflow.

Inner runs are subprocesses: an in-process pytester run restores sys.modules afterwards, and numpy's C
extensions cannot be imported twice in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "fixtures" / "bundles" / "short.safetensors"

ONE_LINE_TEST = """
def test_case(parity_case, assert_parity):
    assert_parity(parity_case)
"""


# the plugin's verdict is the floor gate: the shipped fp32 floor of the fixture bundle judges every stage
FLOOR_GATE_TEST = """
def test_case(parity_case, assert_parity):
    assert_parity(parity_case)
    r = parity_case.result
    assert r.floor["source"] == "shipped" and r.floor["kind"] == "fp32", r.floor
    assert r.gates.get("floor", 0) >= 77 and not r.gates.get("flat"), r.gates
"""


def _project(pytester, pyproject_extra: str = "") -> None:
    pytester.makefile(".toml", pyproject=f"""
[tool.pytest.ini_options]
addopts = "--strict-markers"

[tool.parity.profiles.sneaky]
base = "fp32-sdpa"
faults = ["uncond-keeps-cond"]
{pyproject_extra}
""")


def test_faulty_profile_from_pyproject_fails_with_headline_and_report(pytester):
    _project(pytester)
    pytester.makepyfile(test_it=ONE_LINE_TEST)
    report = pytester.path / "reports" / "session.html"
    r = pytester.runpytest_subprocess("--parity-profile", "sneaky", "--parity-profile", "fp32-sdpa", f"--parity-bundle={SHORT}",
                           f"--parity-report={report}", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, failed=2)
    out = r.stdout.str()
    assert "step1.v2 [uncond_branch_mismatch]" in out
    assert "report: " in out and "short-sneaky-offline.html" in out
    assert report.exists() and (report.with_suffix("") / "short-sneaky-offline.html").exists()
    assert "parity: session report" in out


def test_ini_keys_select_profiles_and_markers_registered(pytester):
    _project(pytester, '\n[tool.parity]\nsuite_profiles = ["fp32-sdpa-math"]\n')
    pytester.makepyfile(test_it=FLOOR_GATE_TEST + """
import pytest

@pytest.mark.parity_full
def test_full():
    raise AssertionError("must be skipped without -m parity_full")

@pytest.mark.gpu
@pytest.mark.slow
def test_gpu():
    import torch
    assert torch.cuda.is_available()
""")
    r = pytester.runpytest_subprocess(f"--parity-bundle={SHORT}", "-p", "no:cacheprovider", "-rs")
    r.assert_outcomes(passed=2, skipped=2)
    assert "select with -m parity_full" in r.stdout.str()
    assert "short-fp32-sdpa-math-offline" in r.stdout.str() or "fp32-sdpa-math" in r.stdout.str()


def test_update_golden_then_pass_then_a_changed_constant_fails(pytester):
    _project(pytester)
    pytester.makepyfile(test_gold="""
def test_golden(parity_bundle_mode, parity_golden):
    result = parity_golden.check(*parity_bundle_mode)
    assert result.verdict == "pass", result.first_divergence
""")
    # --parity-update-golden also rewrites the shipped floors beside the golden (Golden.update_floors ->
    # write_shipped: the fp32 floor and one envelope per reduced-precision suite profile, 36 reference runs each,
    # 7 minutes for this test's two updates); here a stub plugin records the call instead: the computation itself
    # is tested in tests/test_floor_gate.py (test_write_shipped_and_find_by_digest)
    pytester.makepyfile(floorstub="""
from pathlib import Path

import parity.floor.store as S

def _record(model, bundle, *, streaming, profiles=(), directory=S.SHIPPED_DIR, log=None, session=None, label=None):
    print(f"\\nfloorstub: write_shipped {Path(bundle).stem} {'streaming' if streaming else 'offline'} -> {directory}"
          f" session={session is not None}")
    return []

S.write_shipped = _record
""")
    args = [f"--parity-bundle={SHORT}", "-p", "no:cacheprovider", "-s", "-p", "floorstub"]
    gold = pytester.path / "fixtures" / "golden" / "short-offline.safetensors"
    r = pytester.runpytest_subprocess(*args)  # no golden yet: a failure, and nothing written
    r.assert_outcomes(failed=2)
    assert "short-offline.safetensors is missing: rerun with --parity-update-golden" in r.stdout.str()
    assert not gold.exists()
    r = pytester.runpytest_subprocess(*args, "--parity-update-golden")
    r.assert_outcomes(passed=2)
    assert "golden short-offline.safetensors written" in r.stdout.str()
    assert gold.exists()
    for mode in ("offline", "streaming"):
        assert f"floorstub: write_shipped short {mode} -> {gold.parent} session=False" in r.stdout.str()
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(passed=2)
    # a deliberately changed reference: one constant (the guidance rate) moved by 1.4 %
    # (a fixture, so that the in-process pytester run restores it afterwards)
    pytester.makeconftest("""
import pytest
import reference.flow_matching as fm

@pytest.fixture(autouse=True)
def changed_constant(monkeypatch):
    orig = fm.CausalConditionalCFM.__init__
    def patched(self, cfg):
        orig(self, cfg)
        self.inference_cfg_rate = 0.71
    monkeypatch.setattr(fm.CausalConditionalCFM, "__init__", patched)
""")
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(failed=2)
    assert "step1.v_cfg" in r.stdout.str()
    # and rewriting prints what changed
    r = pytester.runpytest_subprocess(*args, "--parity-update-golden")
    assert "golden short-offline.safetensors rewritten" in r.stdout.str() and "max |diff|" in r.stdout.str()
    import reference.flow_matching as fm
    from reference.config import preset

    assert fm.CausalConditionalCFM(preset("tiny").flow.decoder).inference_cfg_rate == 0.7  # restored


def test_shipped_goldens_exist_with_versions():
    from parity.trace import read_trace

    gold = ROOT / "fixtures" / "golden"
    files = sorted(gold.glob("*.safetensors"))
    # 3 fixture bundles x (offline, streaming) + the streaming-session golden of fixtures/sessions/stream
    assert [f.stem for f in files] == [f"{b}-{m}" for b in ("long", "medium", "short") for m in ("offline", "streaming")
                                       ] + ["stream-streaming-session"]
    meta = read_trace(files[0]).metadata
    assert meta["versions"]["torch"] and meta["pipeline"] == "reference" and meta["n_timesteps"] == 10


def test_a_mistyped_tool_parity_key_is_a_usage_error(pytester):
    pytester.makefile(".toml", pyproject='[tool.parity]\nsuite_profiles = "fp32-sdpa"\n')
    pytester.makepyfile(test_it=ONE_LINE_TEST)
    r = pytester.runpytest_subprocess(f"--parity-bundle={SHORT}", "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "suite_profiles must be a list" in r.stderr.str() and "Traceback" not in r.stderr.str()


def test_parallel_workers_share_one_session_report(pytester):
    """Under pytest-xdist each worker writes the reports of its failing cases; the controller writes the one
    session page, listing every worker's cases."""
    _project(pytester)
    pytester.makepyfile(test_it=ONE_LINE_TEST)
    report = pytester.path / "reports" / "session.html"
    r = pytester.runpytest_subprocess("-n", "2", "--parity-profile", "sneaky", f"--parity-bundle={SHORT}",
                                      f"--parity-report={report}", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=2)
    assert "parity: session report" in r.stdout.str() and "(2 cases)" in r.stdout.str()
    page = report.read_text()
    for mode in ("offline", "streaming"):
        assert f"short-sneaky-{mode}.html" in page
        assert (report.with_suffix("") / f"short-sneaky-{mode}.html").exists()
    assert ">FAIL: 0 of 2 case(s) as their tests expect; pytest exit status 1<" in page  # counted by test outcome
