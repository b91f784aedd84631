"""The reference against itself (bit-identical reruns) and against its golden traces."""

import pytest
import torch

from parity.judge.compare import CompareOptions, compare_loaded
from parity.ingest import Loaded
from parity.judge.policy import Policy


def test_reference_is_deterministic(parity_bundle_mode, parity_model):
    from reference.bundle import bundle_dims, load_bundle
    from parity.capture.runner import run_to_trace

    bundle, streaming = parity_bundle_mode
    inputs = load_bundle(bundle, **bundle_dims(parity_model.cfg))
    a = run_to_trace(parity_model, inputs, None, streaming=streaming)
    b = run_to_trace(parity_model, inputs, None, streaming=streaming)
    exact = Policy().extend([{"stage": "*", "statistic": "exact"}], "determinism")
    result = compare_loaded(Loaded(a.tensors, a.metadata, "run 1"), Loaded(b.tensors, b.metadata, "run 2"), exact,
                            CompareOptions(precision="fp32", attention="explicit", audio_metrics=False))
    assert result.verdict == "pass", result.first_divergence
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_reference_matches_golden(parity_bundle_mode, parity_golden, parity_session):
    if parity_session.pc.model_dir or parity_session.pc.preset != "tiny":
        pytest.skip("goldens are stored for the tiny preset")
    bundle, streaming = parity_bundle_mode
    result = parity_golden.check(bundle, streaming)
    assert result.verdict == "pass", f"reference drifted from its golden trace: {result.first_divergence}"
