"""Reference vs every candidate profile, on every fixture bundle, offline and streaming, at the profile's
precision policy (no false alarms)."""


def test_candidate_matches_reference(parity_case, assert_parity):
    assert_parity(parity_case)
