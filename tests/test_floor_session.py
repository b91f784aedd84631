"""Floors for streaming sessions: an ensemble over the whole chunk loop gives every call's stages (``chunk{c}.*``) and
the stream (``stream.*``) a floor, the session verdict is judged at it, and a slip in one call is caught there where
the flat rules pass it. Tiny preset, the session bundle (fixtures/sessions/stream.safetensors), upstream's loop."""

from __future__ import annotations

import pytest

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.floor.cache import key_from_trace
from parity.floor.estimate import floor_key, recipe_dict
from parity.floor.store import FloorStore, session_options_of
from parity.judge.policy import load_policy
from parity.harness import ReferenceCache, run_case
from parity.judge.spec import ComparisonSpec
from parity.capture.runner import RunMode
from parity.present.summary import gate_line
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.session import SessionOptions

from .conftest import FIXTURES

STREAM = FIXTURES / "sessions" / "stream.safetensors"


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def refs():
    return ReferenceCache()


@pytest.fixture(scope="module")
def store():
    return FloorStore(cache=None, compute=False)


@pytest.fixture(scope="module")
def shipped(model, store):
    ch = store.for_run(model, load_bundle(STREAM), session="streaming", options=SessionOptions())
    assert ch.floor is not None and ch.source == "shipped", ch.reason
    return ch.floor


def _chunk_slip(cand, chunk: int, eps: float):
    """The candidate's flow output of call ``chunk`` of the loop x (1 + eps): a slip confined to one call."""
    flow = cand.flow
    orig = flow.inference
    calls = []

    def inference(*a, **kw):
        out = orig(*a, **kw)
        calls.append(1)
        return out * (1.0 + eps) if len(calls) - 1 == chunk else out

    flow.inference = inference
    return cand


def test_the_session_floor_covers_every_call_and_the_stream_and_is_found_from_the_trace(model, shipped, refs):
    names = set(shipped.stages)
    assert {"chunk0.tokens", "chunk0.step1.v1", "chunk2.flow_mel_full", "chunk2.mel", "chunk3.audio", "stream.mel",
            "stream.audio"} <= names
    assert shipped.key["session"]["kind"] == "streaming" and shipped["chunk0.tokens"].max_abs == 0
    assert shipped["chunk1.audio"].n_blocks == shipped["chunk1.audio"].shape[-1] // 480  # one block per mel frame
    res = refs.get(model, STREAM, RunMode.streaming_session())
    rec = recipe_dict(FloorStore().recipe)
    assert key_from_trace(res.metadata, res.tensors, kind="fp32", recipe=rec)[1] == shipped.digest
    opts = session_options_of(res.metadata)
    assert floor_key(model, load_bundle(STREAM), session=opts)[1] == shipped.digest


def test_a_slip_in_one_call_at_10x_its_floor_fails_there_where_the_flat_rules_pass(model, shipped, refs, store):
    """Call 2's flow output off by 10x its floor (rel_l2): the session verdict fails at chunk2.flow_mel_full, judged
    by the floor; the same traces under the flat rules (what sessions had before) pass."""
    from parity.judge.compare import compare_loaded
    from parity.ingest import Loaded

    eps = 10.0 * shipped["chunk2.flow_mel_full"].rel_l2
    cand = _chunk_slip(CandidateToken2Wav(model, switches_from("fp32-explicit"), "slip"), 2, eps)
    case = run_case(model, cand, STREAM, RunMode.streaming_session(),
                    ComparisonSpec(policy=load_policy(), floors=store, mask_check=False), refs=refs, local=False)
    r = case.result
    fd = r.first_divergence
    assert r.verdict == "fail" and fd.stage == "chunk2.flow_mel_full", (fd.stage, fd.message)
    st = r.stage(fd.stage)  # rel_l2 at 10x its floor (the per-frame envelope can stand further out)
    assert st.gate == "floor" and abs(st.floor["ratios"]["rel_l2"] / 10 - 1) < 0.1 and st.ratio >= 10, st.floor
    assert all(r.stage(f"chunk{c}.flow_mel_full").status == "pass" for c in (0, 1))
    assert r.floor["source"] == "shipped" and "no floors" not in gate_line(r)
    flat = compare_loaded(Loaded(case.ref_tensors, case.ref_meta, "ref"), Loaded(case.cand_tensors, case.cand_meta,
                                                                                 "cand"), ComparisonSpec(policy=load_policy()), floor=None)
    assert flat.verdict == "pass", flat.first_divergence


def test_a_legitimate_session_passes_at_its_floors(model, refs, store):
    """Another attention kernel (fp32-sdpa) through the whole loop: every chunk stage and the stream judged by the
    floor, none over k."""
    cand = CandidateToken2Wav(model, switches_from("fp32-sdpa"), "fp32-sdpa")
    r = run_case(model, cand, STREAM, RunMode.streaming_session(),
                    ComparisonSpec(policy=load_policy(), floors=store, mask_check=False), refs=refs, local=False).result
    gated = [s for s in r.stages if s.gate == "floor"]
    assert r.verdict == "pass", r.first_divergence
    assert len(gated) >= 150 and not r.gates.get("flat"), r.gates
    assert max(s.ratio for s in gated) < r.floor["k"]


def test_glitch_thresholds_are_measured_by_the_session_floor(model, shipped, refs, store):
    """The session floor records, per chunk boundary and detector, how far legitimate re-computations move the
    boundary score; a legitimate session stays far inside (ratios < 1), HiFT run on each chunk alone (a real click)
    is a glitch failure at chunk 1 from the measured thresholds, the fixed-ratio warnings left aside there."""
    gl = shipped.calibration["glitch"]
    assert [(r["chunk"], r["sample"]) for r in gl["boundaries"]] == [(1, 32640), (2, 80640), (3, 176640)]
    assert all(0 < r["floor"]["d1"] < 0.5 for r in gl["boundaries"])
    legit = run_case(model, CandidateToken2Wav(model, switches_from("fp32-sdpa"), "fp32-sdpa"), STREAM,
                     RunMode.streaming_session(),
                    ComparisonSpec(policy=load_policy(), floors=store, mask_check=False), refs=refs, local=False).result
    rows = legit.session["glitches"]["floor"]["boundaries"]
    assert len(rows) == 3 and max(v for r in rows for v in r["ratios"].values()) < 1.0
    assert not [f for f in legit.findings if f.code.startswith("glitch")]
    bad = CandidateToken2Wav(model, switches_from("fp32-explicit", ["session-hift-per-chunk"]), "per-chunk")
    r = run_case(model, bad, STREAM, RunMode.streaming_session(),
                    ComparisonSpec(policy=load_policy(), floors=store, mask_check=False), refs=refs, local=False).result
    g = [f for f in r.findings if f.code == "glitch_spectral_flux"]
    assert g and g[0].severity == "failure" and g[0].stage == "chunk1.audio" and "legitimate re-computations" in \
        g[0].message
