"""CUDA cases: flash attention and fp16/bf16 on the GPU (selected automatically when CUDA exists)."""

import pytest

from parity.project import default_bundles, shipped_profiles

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("profile", shipped_profiles("cuda"))
@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_cuda_profile(profile, streaming, parity_harness, assert_parity):
    bundle = next(b for b in default_bundles() if b.stem == "medium")
    case = parity_harness.run(profile, bundle, streaming)
    assert_parity(case)
    counts = case.cand_meta["attention_kernels"]["counts"]
    if not streaming:
        assert counts.get("flash", 0) > 0, f"flash attention did not run: {counts}"
