"""The reference against itself (bit-identical reruns) and against its golden traces, in every run mode (one call
offline and streaming, the streaming session)."""

import pytest
import torch

from parity.ingest import Loaded
from parity.judge.compare import compare_loaded
from parity.judge.policy import Policy
from parity.judge.spec import ComparisonSpec


def test_reference_is_deterministic(parity_bundle_mode, parity_model):
    from parity.capture.runner import run_pipeline
    from reference.bundle import bundle_dims, load_bundle

    bundle, mode = parity_bundle_mode
    inputs = load_bundle(bundle, **bundle_dims(parity_model.cfg))
    a = run_pipeline(parity_model, inputs, None, mode)
    b = run_pipeline(parity_model, inputs, None, mode)
    exact = Policy().extend([{"stage": "*", "statistic": "exact"}], "determinism")
    result = compare_loaded(Loaded(a.tensors, a.metadata, "run 1"), Loaded(b.tensors, b.metadata, "run 2"),
                            ComparisonSpec(policy=exact, precision="fp32", attention="explicit", audio_metrics=False))
    assert result.verdict == "pass", result.first_divergence
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_reference_matches_golden(parity_bundle_mode, parity_golden, parity_harness):
    if parity_harness.pc.model_dir or parity_harness.pc.preset != "tiny":
        pytest.skip("goldens are stored for the tiny preset")
    bundle, mode = parity_bundle_mode
    result = parity_golden.check(bundle, mode)
    assert result.verdict == "pass", f"reference drifted from its golden trace: {result.first_divergence}"
    if mode.is_session:
        assert result.session["schedules"]["equal"]
