"""The typed comparison result: derived verdict and headline, add_finding, JSON round trips (inline and with
the per-frame vectors sidecar), the readers' checks, and compare/diagnose leaving their inputs alone."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.ingest import Loaded
from parity.judge.policy import load_policy
from parity.result import (EXIT_CODES, RESULT_SCHEMA, Comparison, Finding, StageResult, aggregate_verdict, read_json,
                           sidecar_path, write_json, write_matrix_json, read_matrix_json)
from parity.capture.runner import run_pipeline
from reference.bundle import load_bundle
from reference.errors import InputError
from reference.model import Token2Wav

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"


@pytest.fixture(scope="module")
def traces():
    model = Token2Wav.from_preset("tiny")
    ref = run_pipeline(model, load_bundle(SHORT), None)
    cand = {k: v.clone() for k, v in ref.tensors.items()}
    cand["step2.v2"] = cand["step2.v2"] + 0.25  # the unconditional row of step 2 goes wrong
    for k in [k for k in cand if k.startswith(("step2.v_cfg", "step2.x", "step3", "step4", "step5", "step6",
                                                "step7", "step8", "step9", "step10", "flow_mel"))]:
        cand[k] = cand[k] + 0.25
    return ref, cand


def _compare(traces) -> Comparison:
    ref, cand = traces
    return compare_loaded(Loaded(ref.tensors, ref.metadata, "ref"), Loaded(cand, dict(ref.metadata), "cand"), ComparisonSpec(policy=load_policy()))


def test_verdict_headline_and_exit_code_come_from_the_findings(traces):
    r = _compare(traces)
    assert r.verdict == "fail" and r.exit_code == EXIT_CODES["fail"] == 1
    assert r.first_divergence.stage == "step2.v2" and r.first_divergence.code == "uncond_branch_mismatch"
    assert r.first_divergence is next(f for f in r.findings if f.severity == "failure")
    assert r.summary["fail"] == sum(s.status == "fail" for s in r.stages)
    # info/warning findings alone never fail a comparison
    quiet = Comparison(stages=[StageResult("mu", "pass")], findings=[Finding("env_differs", None, "info", "x")])
    assert quiet.verdict == "pass" and quiet.first_divergence is None and quiet.exit_code == 0
    assert aggregate_verdict(["pass", "fail", "pass"]) == "fail" and aggregate_verdict(["fail", "error"]) == "error"
    with pytest.raises(ValueError, match="severity"):
        Finding("x", None, "fatal", "not a severity")


def test_add_finding_turns_a_pass_into_a_fail_and_keeps_an_existing_headline(traces):
    r = Comparison(stages=[StageResult("mu", "pass")], findings=[Finding("env_differs", None, "info", "env")])
    r.add_finding(Finding("required_kernel_missing", None, "failure", "flash did not run"))
    assert r.verdict == "fail" and r.first_divergence.code == "required_kernel_missing"
    assert [f.severity for f in r.findings] == ["failure", "info"]  # severity order is kept
    failing = _compare(traces)
    head = failing.first_divergence
    failing.add_finding(Finding("required_kernel_missing", None, "failure", "flash did not run"))
    assert failing.first_divergence is head and failing.verdict == "fail"
    failing.add_finding(Finding("reference_incomplete", None, "error", "broken"))
    assert failing.verdict == "error" and failing.exit_code == 2 and failing.first_divergence.code == "reference_incomplete"


@pytest.mark.parametrize("sidecar", [False, True], ids=["inline", "sidecar"])
def test_json_round_trip(traces, tmp_path, sidecar):
    r = _compare(traces)
    r.case = {"bundle": "short.safetensors", "profile": "test"}
    path = write_json(r, tmp_path / "r.json", sidecar=sidecar)
    data = json.loads(path.read_text())
    assert data["schema"] == RESULT_SCHEMA and data["verdict"] == "fail"
    assert data["first_divergence"] == r.first_divergence.headline_json()
    flow_mel = next(s for s in data["stages"] if s["name"] == "flow_mel")
    if sidecar:
        assert "per_frame_error" not in flow_mel and "per_frame" not in data["audio"]
        assert data["vectors"]["sidecar"] == sidecar_path(path).name and sidecar_path(path).exists()
    else:
        assert len(flow_mel["per_frame_error"]) == traces[0].tensors["flow_mel"].shape[-1]
        assert not sidecar_path(path).exists()
    back = read_json(path)
    assert back.to_json() == r.to_json()  # nothing lost either way, vectors included
    assert back.stage("flow_mel").per_frame_error == r.stage("flow_mel").per_frame_error
    assert back.audio["per_frame"]["lsd_active"] == r.audio["per_frame"]["lsd_active"]  # masks stay booleans
    assert isinstance(back.audio["per_frame"]["lsd_active"][0], bool)


def test_matrix_json_shares_one_sidecar(traces, tmp_path):
    a, b = _compare(traces), _compare(traces)
    b.add_finding(Finding("reference_incomplete", None, "error", "x"))
    path = write_matrix_json([a, b], tmp_path / "m.json", "now")
    data = json.loads(path.read_text())
    assert data["verdict"] == "error" and len(data["cases"]) == 2 and sidecar_path(path).exists()
    back = read_matrix_json(path)
    assert [x.to_json() for x in back] == [a.to_json(), b.to_json()]
    with pytest.raises(InputError, match="matrix result"):
        read_json(path)


def test_readers_reject_what_they_cannot_trust(traces, tmp_path):
    r = _compare(traces)
    d = r.to_json()
    with pytest.raises(InputError, match="schema"):
        Comparison.from_json(dict(d, schema="tts-parity-comparison/99"))
    with pytest.raises(InputError, match="stored verdict"):
        Comparison.from_json(dict(d, verdict="pass"))  # a hand-edited verdict its findings contradict
    with pytest.raises(InputError, match="not a comparison result"):
        Comparison.from_json({"hello": 1})
    path = write_json(r, tmp_path / "r.json", sidecar=True)
    sidecar_path(path).unlink()
    with pytest.raises(InputError, match="vectors file"):
        read_json(path)
    # keys a later writer adds survive a read/write by this one
    d2 = dict(d, future_key={"a": 1})
    d2["stages"] = [dict(s, future_stage_key=2) for s in d["stages"]]
    again = Comparison.from_json(d2).to_json()
    assert again["future_key"] == {"a": 1} and all(s["future_stage_key"] == 2 for s in again["stages"])


def test_compare_does_not_modify_its_inputs(traces):
    """A dump that holds rand_noise instead of x0: the comparison derives x0 on a copy."""
    ref, cand = traces
    dump = {k: v for k, v in cand.items() if k != "x0"}
    T = ref.tensors["x0"].shape[-1]
    dump["rand_noise"] = torch.cat([ref.tensors["x0"], torch.zeros(1, 80, 7)], dim=-1)
    r_in = Loaded(dict(ref.tensors), dict(ref.metadata), "ref")
    c_in = Loaded(dump, {}, "cand", {"rand_noise": "rand_noise"}, [{"stage": "rand_noise", "kind": "rename"}])
    snap = [(dict(x.tensors), copy.deepcopy(x.metadata), copy.deepcopy(x.normalisations), dict(x.original_names))
            for x in (r_in, c_in)]
    result = compare_loaded(r_in, c_in, ComparisonSpec(policy=load_policy()))
    x0 = result.stage("x0")
    assert x0 is not None and x0.status == "pass"  # derived: rand_noise[..., :T]
    assert any(n["kind"] == "derive" and f":{T}]" in n["detail"] for n in result.normalisations)
    for x, (tensors, meta, norms, names) in zip((r_in, c_in), snap):
        assert x.tensors.keys() == tensors.keys() and all(x.tensors[k] is tensors[k] for k in tensors)
        assert x.metadata == meta and x.normalisations == norms and x.original_names == names
    assert "x0" not in c_in.tensors
