"""Full-size preset (random seeded weights of the released architecture): selected with -m parity_full."""

import pytest

from parity.project import default_bundles

pytestmark = [pytest.mark.parity_full, pytest.mark.slow]


@pytest.mark.parametrize("profile", ["fp32-sdpa", "fp16-flow", "int8-dynamic"])
def test_full_size_candidate(profile, parity_harness, assert_parity):
    model = parity_harness.model("cosyvoice3-0.5b")
    bundle = next(b for b in default_bundles() if b.stem == "short")
    case = parity_harness.run(profile, bundle, False, model=model, local=False)
    assert_parity(case)
