"""The harness testing itself: every catalogue fault is caught and localised to its recorded stage."""


import pytest

from candidate.faults import catalogue
from parity.project import default_bundles

BUNDLE = next((b for b in default_bundles() if b.stem == "medium"), None)


@pytest.mark.parametrize("blocks", [False, True], ids=["stages", "blocks"])
def test_fault_is_caught_and_localised(parity_fault, blocks, parity_run):
    if BUNDLE is None:
        pytest.skip("fixtures/bundles/medium.safetensors is missing")
    fault = catalogue()[parity_fault]
    if blocks and not fault.expected_stage_blocks:
        pytest.skip("this fault's stage does not depend on block capture")
    case = parity_run("fp32-explicit", BUNDLE, faults=(parity_fault,), patterns="+step*.block*" if blocks else None)
    result = case.result
    expected = fault.stage(blocks_captured=blocks)
    assert result.verdict == "fail", f"{parity_fault} was not caught: {result.summary}"
    fd = result.first_divergence
    assert fd.stage == expected, f"{parity_fault}: headline at {fd.stage} [{fd.code}], expected {expected}: {fd.message}"
    if fault.expected_code:
        codes = {f.code for f in result.findings_at(expected)}
        assert fault.expected_code in codes, f"{parity_fault}: codes at {expected}: {codes}"
