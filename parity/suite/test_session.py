"""Streaming sessions (upstream's chunked token2wav loop) through the whole harness: the fp32 candidates pass on the
session bundle, every streaming fault of the catalogue is caught and localised to its first chunk and stage with
its finding code (and the ones that click get their glitch findings), and the reference matches its golden stream
trace."""

import pytest

from candidate.faults import catalogue
from parity.project import default_session_bundles
from parity.stages import parse_chunk

BUNDLE = next((b for b in default_session_bundles() if b.stem == "stream"), None)


def test_session_candidate_matches_reference(parity_session_case, assert_parity):
    assert_parity(parity_session_case)
    s = parity_session_case.result.session
    assert s and s["schedules"]["equal"] and len(s["chunks"]) >= 4  # the loop ran: three chunks and the final call


def test_session_fault_is_caught_and_localised(parity_session_fault, parity_session_run):
    if BUNDLE is None:
        pytest.skip("fixtures/sessions/stream.safetensors is missing")
    fault = catalogue("session")[parity_session_fault]
    case = parity_session_run("fp32-explicit", BUNDLE, faults=(parity_session_fault,))
    result = case.result
    expected = result.case["expected_stage"]  # the catalogue's stage with the candidate's own final-call index
    assert expected and parse_chunk(expected), expected
    assert result.verdict == "fail", f"{parity_session_fault} was not caught: {result.summary}"
    fd = result.first_divergence
    assert fd.stage == expected, f"{parity_session_fault}: headline at {fd.stage} [{fd.code}], expected {expected}: " \
                                 f"{fd.message}"
    assert fault.expected_code in {f.code for f in result.findings_at(expected)}, \
        f"{parity_session_fault}: codes at {expected}: {[f.code for f in result.findings_at(expected)]}"
    if fd.code == "session_schedule_mismatch":  # both schedules, before anything else
        assert result.findings[0] is fd and fd.evidence["ref"] != fd.evidence["cand"]
    glitches = [f for f in result.findings if f.code.startswith("glitch_")]
    kinds = {f.code[len("glitch_"):] for f in glitches}
    assert set(fault.glitches) <= kinds, f"{parity_session_fault}: glitch findings {sorted(kinds)}"
    sr = result.session["sample_rate"]
    for g in glitches:  # each names its chunk, its boundary sample and that sample's time
        assert parse_chunk(g.stage) and g.evidence["time_s"] == pytest.approx(g.evidence["boundary_sample"] / sr)


def test_session_reference_matches_golden(parity_session_bundle, parity_golden, parity_session):
    if parity_session.pc.model_dir or parity_session.pc.preset != "tiny":
        pytest.skip("goldens are stored for the tiny preset")
    result = parity_golden.check_session(parity_session_bundle)
    assert result.verdict == "pass", f"the session reference drifted from its golden stream: {result.first_divergence}"
    assert result.session["schedules"]["equal"]
