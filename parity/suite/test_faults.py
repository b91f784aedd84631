"""The harness testing itself: every catalogue fault, single-call and streaming-session, is caught and localised
to its recorded stage with its finding code; the streaming faults that click get their glitch findings."""

import pytest

from candidate.faults import catalogue
from parity.capture.runner import RunMode
from parity.project import default_bundles, default_session_bundles
from parity.stages import parse_chunk

BUNDLE = next((b for b in default_bundles() if b.stem == "medium"), None)
SESSION_BUNDLE = next((b for b in default_session_bundles() if b.stem == "stream"), None)


@pytest.mark.parametrize("blocks", [False, True], ids=["stages", "blocks"])
def test_fault_is_caught_and_localised(parity_fault, blocks, parity_run):
    fault = catalogue("all")[parity_fault]
    session = fault.mode == "session"
    bundle = SESSION_BUNDLE if session else BUNDLE
    if bundle is None:
        pytest.skip("the fault's fixture bundle is missing")
    if blocks and not fault.expected_stage_blocks:
        pytest.skip("this fault's stage does not depend on block capture")
    case = parity_run("fp32-explicit", bundle, faults=(parity_fault,), patterns="+step*.block*" if blocks else None,
                      mode=RunMode.streaming_session() if session else None)
    result = case.result
    # the catalogue's stage (a session's with the candidate's own final-call index, as the case records it)
    expected = result.case["expected_stage"] if session else fault.stage(blocks_captured=blocks)
    assert result.verdict == "fail", f"{parity_fault} was not caught: {result.summary}"
    fd = result.first_divergence
    assert fd.stage == expected, f"{parity_fault}: headline at {fd.stage} [{fd.code}], expected {expected}: {fd.message}"
    if fault.expected_code:
        codes = {f.code for f in result.findings_at(expected)}
        assert fault.expected_code in codes, f"{parity_fault}: codes at {expected}: {codes}"
    if not session:
        return
    assert parse_chunk(expected), expected
    if fd.code == "session_schedule_mismatch":  # both schedules, before anything else
        assert result.findings[0] is fd and fd.evidence["ref"] != fd.evidence["cand"]
    glitches = [f for f in result.findings if f.code.startswith("glitch_")]
    kinds = {f.code[len("glitch_"):] for f in glitches}
    assert set(fault.glitches) <= kinds, f"{parity_fault}: glitch findings {sorted(kinds)}"
    sr = result.sample_rate
    for g in glitches:  # each names its chunk, its boundary sample and that sample's time
        assert parse_chunk(g.stage) and g.evidence["time_s"] == pytest.approx(g.evidence["boundary_sample"] / sr)
