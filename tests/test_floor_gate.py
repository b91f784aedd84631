"""Verdicts at the noise floor (issue 14, phase 2): the floor is the gate of the real comparison
(``compare_loaded`` / ``run_case`` / the CLI), the flat tolerances are the fallback, and the result, the
summary and the report say which gate decided. Tiny preset, the shipped floors of the fixture bundles."""

from __future__ import annotations

import json
import math

import pytest
import torch

from parity.compare import compare_loaded
from parity.floor import Floor, FloorCache, Member, run_reference
from parity.floor.store import FloorChoice, FloorStore, ShippedFloors, shipped_name
from parity.floor.stats import time_axis
from parity.ingest import Loaded
from parity.policy import Policy, load_policy
from parity.result import Comparison
from parity.session import RunMode, Session
from parity.summary import render
from reference.bundle import bundle_dims, load_bundle
from reference.model import Token2Wav

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
MEDIUM = FIXTURES / "bundles" / "medium.safetensors"


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs(model):
    return load_bundle(SHORT, **bundle_dims(model.cfg))


@pytest.fixture(scope="module")
def shipped(model, inputs):
    """The shipped fp32 floor of short/offline, found by its key (model, bundle, mode, torch, recipe)."""
    ch = FloorStore(cache=None, compute=False).for_run(model, inputs)
    assert ch.floor is not None and ch.source == "shipped", ch.reason
    assert ch.path.endswith(shipped_name("short", "offline"))
    return ch


@pytest.fixture(scope="module")
def base(model, inputs):
    return run_reference(model, inputs, streaming=False)[0]


def _loaded(tensors: dict, model, name: str, **meta) -> Loaded:
    return Loaded(dict(tensors), dict(model.provenance(streaming=False), **meta), name)


def test_a_legitimate_member_passes_under_the_floor_policy(model, inputs, shipped, base):
    # 2 threads AND the SDPA math kernel: a combination the ensemble never ran, through the real comparison
    other, _ = run_reference(model, inputs, streaming=False,
                             member=Member("sdpa-math/threads2", "attention", threads=2, attention="sdpa-math"))
    res = compare_loaded(_loaded(base, model, "ref"), _loaded(other, model, "member"), load_policy(), floor=shipped)
    assert res.verdict == "pass", res.headline_text()
    assert res.gates.get("floor", 0) == len(base) and not res.gates.get("flat")  # every stage judged by the floor
    ratios = [s.ratio for s in res.stages if s.ratio is not None]
    assert max(ratios) > 0 and max(ratios) <= shipped.floor.k  # it does differ, within k x floor
    assert res.floor["source"] == "shipped" and res.floor["kind"] == "fp32" and res.floor["applies"]


@pytest.mark.parametrize("stage", ["mu", "step3.v1", "step8.x", "flow_mel", "f0", "magnitude", "audio"])
def test_synthetic_perturbation_20x_fails_at_its_stage_3x_passes(model, shipped, base, stage):
    floor = shipped.floor
    assert floor.k > 3.0, "the 3x case needs k > 3"
    sf = floor[stage]
    b = max(range(sf.n_blocks), key=lambda i: sf.envelope[i])  # the block where the floor is largest
    for c, fails in ((20.0, True), (3.0, False)):
        t = base[stage].clone()
        ax = time_axis(stage, t)
        idx = [0] * t.dim()
        if ax is not None:
            idx[ax] = int(torch.tensor_split(torch.arange(t.shape[ax]), sf.n_blocks)[b][0])
        t[tuple(idx)] += c * sf.envelope[b]  # one element moved by c x its block's floor
        res = compare_loaded(_loaded(base, model, "ref"), _loaded(dict(base, **{stage: t}), model, "cand"),
                             load_policy(), floor=shipped)
        st = res.stage(stage)
        assert st.gate == "floor" and st.ratio == pytest.approx(c, rel=0.05), st.detail
        if fails:
            assert res.verdict == "fail" and res.first_divergence.stage == stage, res.headline_text()
            assert f"{st.ratio:.3g}x the fp32 noise floor" in res.first_divergence.message
            assert st.value > st.limit == pytest.approx(floor.k * st.floor["unit"])
        else:
            assert res.verdict == "pass", res.headline_text()
            assert st.value <= st.limit


def test_inputs_stay_bit_exact_next_to_their_zero_floor(model, shipped, base):
    pf = base["prompt_feat"].clone().contiguous()
    pf.view(-1)[0] = torch.nextafter(pf.view(-1)[0], torch.tensor(math.inf))  # one ulp: within k x the zero floor
    res = compare_loaded(_loaded(base, model, "ref"), _loaded(dict(base, prompt_feat=pf), model, "cand"), load_policy(),
                         floor=shipped)
    st = res.stage("prompt_feat")
    assert st.status == "fail" and st.gate == "flat" and st.ratio is not None and st.ratio <= shipped.floor.k
    assert "kept next to the floor" in st.detail and res.first_divergence.code == "inputs_differ"


def test_with_floor_modes(model, shipped, base):
    t = base["step2.v1"].clone().contiguous()
    t.view(-1)[5] += 20 * shipped.floor["step2.v1"].max_abs  # 20x the floor, far inside the flat atol 1e-4
    ref, cand = _loaded(base, model, "ref"), _loaded(dict(base, **{"step2.v1": t}), model, "cand")
    flat_rule = {"stage": "step2.v1", "statistic": "elementwise", "atol": 1e-4, "rtol": 1e-3}
    for mode, verdict, gate in (("replace", "fail", "floor"), ("rule", "pass", "flat"), ("both", "fail", "floor")):
        pol = Policy().extend([dict(flat_rule, with_floor=mode, reason="test")], "test")
        st = compare_loaded(ref, cand, pol, floor=shipped).stage("step2.v1")
        assert (st.status, st.gate) == ({"fail": "fail", "pass": "pass"}[verdict], gate), (mode, st.detail)
        assert st.ratio >= 19.0  # measured and reported under every mode
    from reference.errors import InputError

    with pytest.raises(InputError, match="reason"):
        Policy().extend([dict(flat_rule, with_floor="both")], "test")
    with pytest.raises(InputError, match="with_floor"):
        Policy().extend([dict(flat_rule, with_floor="sometimes")], "test")


def test_without_a_floor_the_flat_tolerances_decide_and_say_why(model, base):
    for floor, why in ((None, "no floor was given"),
                       (FloorChoice(None, "none", "no floors for the 'chunked' session kind"), "chunked")):
        res = compare_loaded(_loaded(base, model, "ref"), _loaded(base, model, "cand"), load_policy(), floor=floor)
        assert res.verdict == "pass" and res.gates.get("flat") and not res.gates.get("floor")
        assert why in res.floor["reason"] and why in render(res, color=False)
    ch = FloorStore(cache=None, compute=False).for_run(model, {}, session="chunked")
    assert ch.floor is None and "chunked" in ch.reason


def test_stages_without_a_floor_fall_back_to_flat_per_stage(model, shipped, base, inputs):
    blocks = run_reference(model, inputs, streaming=False, patterns=["+step*.block*"])[0]
    res = compare_loaded(_loaded(blocks, model, "ref"), _loaded(blocks, model, "cand"), load_policy(), floor=shipped)
    assert res.stage("step1.block0").gate == "flat" and "no floor for this stage" in \
        res.stage("step1.block0").floor["reason"]
    assert res.stage("step1.v1").gate == "floor" and res.verdict == "pass"
    line = render(res, color=False).splitlines()[2]
    assert "fp32 noise floor" in line and "flat tolerances" in line


def test_an_fp32_floor_does_not_judge_a_reduced_precision_candidate(model, shipped, base):
    res = compare_loaded(_loaded(base, model, "ref"), _loaded(base, model, "cand", precision="fp16"), load_policy(),
                         floor=shipped)
    assert not res.gates.get("floor") and "needs the fp16 envelope" in res.floor["not_applied"]


def test_fp16_candidate_accumulating_one_block_in_fp16_is_beyond_its_envelope(model):
    """Through the session (the plugin's and parity run's path): the shipped fp16 envelope judges."""
    s = Session(floors=FloorStore(cache=None, compute=False))
    ok = s.run(model, s.candidate(model, "fp16-flow"), SHORT, RunMode(False), local=False)
    assert ok.verdict == "pass", ok.result.headline_text()
    assert ok.result.floor["kind"] == "fp16" and ok.result.gates.get("floor", 0) > 60
    bad = s.run(model, s.candidate(model, "fp16-flow", ["low-accumulate-block:block=1"]), SHORT, RunMode(False),
                local=False)
    fd = bad.result.first_divergence
    assert bad.verdict == "fail" and fd.stage == "step1.v1", bad.result.headline_text()
    st = bad.result.stage("step1.v1")
    assert st.gate == "floor" and st.ratio > bad.result.floor["k"]
    assert "x its fp16 rounding-only error" in fd.message


def test_result_json_keeps_gates_and_floor(model, shipped, base, tmp_path):
    from parity.result import read_json, write_json

    t = base["flow_mel"] + 50 * shipped.floor["flow_mel"].max_abs
    res = compare_loaded(_loaded(base, model, "ref"), _loaded(dict(base, flow_mel=t), model, "cand"), load_policy(),
                         floor=shipped)
    back = read_json(write_json(res, tmp_path / "r.json"))
    assert back.verdict == res.verdict == "fail" and back.floor["digest"] == shipped.floor.digest
    s, b = res.stage("flow_mel"), back.stage("flow_mel")
    assert (b.gate, b.ratio, b.floor["k"]) == (s.gate, s.ratio, s.floor["k"])
    fams = back.floor["families"]
    assert fams["mca-ops"]["fit"] == 8 and fams["mca-ops"]["held_out"] == 4 and len(fams["mca-ops"]["seeds"]) == 12
    assert set(back.floor["contributions"]) == {"threads", "attention", "mca-modules", "mca-ops"}
    assert Comparison.from_json(json.loads(json.dumps(res.to_json()))).gates == res.gates


def test_report_shows_ratios_chart_and_provenance(model, shipped, base, tmp_path):
    from parity.report import build_report

    t = base["step4.v2"].clone().contiguous()
    t.view(-1)[0] += 30 * shipped.floor["step4.v2"].max_abs
    res = compare_loaded(_loaded(base, model, "ref"), _loaded(dict(base, **{"step4.v2": t}), model, "cand"),
                         load_policy(), floor=shipped)
    html = build_report(res, tmp_path / "r.html").read_text()
    sec = html[html.index('<section id="floor">'):html.index('<section id="steps">')]
    assert 'id="floor-chart"' in sec and "data:image/png;base64," in sec
    assert shipped.floor.digest in sec and "mca-ops" in sec and "held out" in sec
    row = html[html.index('data-stage="step4.v2"'):]
    row = row[:row.index("</tr>")]
    assert f"{res.stage('step4.v2').ratio:.2g}x" in row and ">floor<" in row


def test_shipped_floor_index_and_a_damaged_file(tmp_path, shipped):
    idx = ShippedFloors().index()
    assert shipped.floor.digest in idx and len(idx) >= 6  # one fp32 floor per bundle and mode at least
    bad = tmp_path / shipped_name("x", "offline")
    bad.write_bytes(b"\x1f\x8b garbage")
    assert ShippedFloors(tmp_path).index() == {}
    (tmp_path / "c").mkdir()
    cache = FloorCache(tmp_path / "c")
    f = shipped.floor
    p = cache.put(f)
    assert Floor.load(p) == f and cache.get(f.digest) == f
