"""The harness: the reference cache owns its key (the run mode included), one runner for one call and for a
streaming session, the one [tool.parity] reader and its error policy, profile lists derived from the one
registry."""

from __future__ import annotations

import pytest

from parity.project import ProjectConfig, read_project, shipped_profiles
from parity.capture.runner import RunMode
from parity.harness import Harness, ModelSpec, ReferenceCache
from reference.errors import InputError

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"


@pytest.fixture(scope="module")
def session():
    return Harness(project=ProjectConfig())


def test_reference_cache_computes_once_per_key(session, tmp_path, monkeypatch):
    model = session.model(ModelSpec("tiny"))
    assert session.model(ModelSpec("tiny")) is model  # one model per spec
    refs = ReferenceCache()
    a = refs.get(model, SHORT, RunMode())
    # the same bundle spelled differently is the same entry; the cached run is written out on request
    monkeypatch.chdir(SHORT.parent)
    b = refs.get(model, SHORT.name, RunMode(), trace_path=tmp_path / "ref.safetensors")
    assert b is a and len(refs) == 1 and (tmp_path / "ref.safetensors").exists()
    s = refs.get(model, SHORT, RunMode(streaming=True))
    assert s is not a and len(refs) == 2 and s.metadata["streaming"] is True
    assert refs.key(model, SHORT, RunMode()) != refs.key(model, SHORT, RunMode.streaming_session())
    assert refs.get(model, SHORT, RunMode(), patterns="f0,audio") is not a and len(refs) == 3


def test_one_runner_for_one_call_and_for_a_streaming_session(session):
    """A single call is the run of one call: the same runner, cache and case path as the streaming session, which
    differs only by its mode (its calls' plan, its stage names)."""
    from parity.capture.runner import OneCall, plan_calls
    from parity.capture.session import SessionCalls
    from reference.bundle import load_bundle

    model = session.model(ModelSpec("tiny"))
    inputs = load_bundle(SHORT)
    assert isinstance(plan_calls(model, inputs, RunMode()), OneCall)
    assert isinstance(plan_calls(model, inputs, RunMode.streaming_session()), SessionCalls)
    cand = session.candidate(model, "fp32-explicit")
    case = session.run(model, cand, SHORT, RunMode.streaming_session(), local=False)
    assert case.name == "short-fp32-explicit-streaming-session" and case.verdict == "pass"
    assert case.result.case["session"] == "streaming" and case.ref_meta["session"] == "streaming"
    assert any(n.startswith("chunk0.") for n in case.ref_tensors)
    one = session.run(model, cand, SHORT, RunMode(), local=False)
    assert one.name == "short-fp32-explicit-offline" and "session" not in one.result.case
    assert not any(n.startswith("chunk") for n in one.ref_tensors)


def test_one_tool_parity_reader_one_error_policy(tmp_path):
    from parity.judge.policy import load_policy
    from parity.project import profile_switches

    assert read_project(tmp_path / "absent.toml") == ProjectConfig()
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[tool.parity]\npolicy = "tol/extra.toml"\nsuite_profiles = ["fp32-sdpa"]\n'
                  '[[tool.parity.tolerances.rule]]\nstage = "flow_mel"\nstatistic = "rmse"\nlimit = 1.0\n'
                  '[tool.parity.profiles.mine]\nbase = "fp32-sdpa"\ncfg_mode = "two-calls"\n')
    (tmp_path / "tol").mkdir()
    (tmp_path / "tol" / "extra.toml").write_text('[[rule]]\nstage = "f0"\nstatistic = "rmse"\nlimit = 2.0\n')
    proj = read_project(pp)
    assert proj.policy == (tmp_path / "tol" / "extra.toml").resolve() and proj.suite_profiles == ["fp32-sdpa"]
    assert proj.profiles["mine"]["cfg_mode"] == "two-calls"
    pol = load_policy(None, pp)
    assert pol.rule_for("flow_mel").limit == 1.0 and pol.rule_for("f0").limit == 2.0  # project rules, project file
    assert profile_switches("mine", (), pp).cfg_mode == "two-calls"  # candidate profiles come through the same reader
    # one error policy: an unreadable file or a mistyped key is an InputError naming the file (and the key)
    pp.write_text("[tool.parity\npreset = 'tiny'\n")
    for read in (lambda: read_project(pp), lambda: load_policy(None, pp), lambda: profile_switches("mine", (), pp)):
        with pytest.raises(InputError, match=f"{pp}: not valid TOML"):
            read()
    pp.write_text('[tool.parity]\nsuite_profiles = "fp32-sdpa"\n')
    with pytest.raises(InputError, match="suite_profiles must be a list"):
        read_project(pp)


def test_profile_lists_come_from_the_registry():
    from candidate.switches import PROFILES, resolve_profile

    cpu, cuda = shipped_profiles("cpu"), shipped_profiles("cuda")
    assert cpu and cuda and not set(cpu) & set(cuda)
    onnx = {p for p in PROFILES if resolve_profile(p).onnx}  # the optional ONNX Runtime backend: opt-in
    assert onnx and not onnx & (set(cpu) | set(cuda))
    assert set(cpu) | set(cuda) | onnx | {"fp32-explicit"} == set(PROFILES)  # every shipped profile, reference aside
    assert onnx <= set(shipped_profiles(None, include_onnx=True))
    assert all(resolve_profile(p).device == "cuda" for p in cuda)
    assert shipped_profiles("cpu", include_reference=True) == ["fp32-explicit"] + cpu
