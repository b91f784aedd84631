"""Floors for the DiT blocks and the HiFT internals: the shipped floors cover them, a trace capturing them is judged
there by the floor gate, and a slip inside the DiT is named at its block. Tiny preset, the short fixture bundle."""

from __future__ import annotations

import pytest

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.floor import Recipe, estimate_floor
from parity.floor.store import FloorStore
from parity.judge.policy import load_policy
from parity.harness import ReferenceCache, run_case
from parity.judge.spec import ComparisonSpec
from parity.stages import DEFAULT_PATTERNS
from reference.bundle import load_bundle
from reference.model import Token2Wav

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
PATTERNS = "+step*.block*,+hift.*"


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def shipped(model):
    ch = FloorStore(cache=None, compute=False).for_run(model, load_bundle(SHORT))
    assert ch.source == "shipped", ch.reason
    return ch.floor


@pytest.fixture(scope="module")
def refs():
    return ReferenceCache()


def _scaled_block(cand, step: int, block: int, eps: float):
    """The candidate's DiT block ``block`` of ODE step ``step`` returns its output x (1 + eps): a slip of relative
    size eps confined to one block's output (``rel_l2`` = eps there)."""
    est = cand.flow.estimator
    orig = est._block

    def _block(i, blk, h, c_mod, mask, rope, probe, st):
        out = orig(i, blk, h, c_mod, mask, rope, probe, st)
        return out * (1.0 + eps) if (i == block and st == step) else out

    est._block = _block
    return cand


def test_shipped_floors_cover_the_blocks_and_the_hift_internals(shipped):
    names = set(shipped.stages)
    assert {"step1.block0", "step10.block1", "hift.ups0", "hift.source_down2", "hift.fusion1", "hift.resblocks2",
            "hift.conv_post"} <= names
    sf = shipped["step1.block1"]
    assert sf.shape[0] == 2 and sf.n_blocks == sf.shape[1]  # the CFG rows; one envelope block per frame
    assert 0 < sf.rel_l2 < 1e-5 and 0 < shipped["hift.fusion1"].rel_l2 < 0.1


def test_a_slip_inside_the_dit_is_named_at_its_block_by_the_floor_gate(model, shipped, refs):
    """A block output off by ~10x its floor (rel_l2) at step 1, block 1, captured with the blocks: the floor gate
    fails it there and the headline names step1.block1; the flat rule of a block (about 1e-3 relative) passes it.
    Without block floors (a floor of the default capture only) the slip is not named at the block."""
    f = shipped["step1.block1"]
    eps = 10.0 * f.rel_l2
    policy = load_policy()
    store = FloorStore(cache=None, compute=False)
    cand = _scaled_block(CandidateToken2Wav(model, switches_from("fp32-explicit"), "slip"), 1, 1, eps)
    case = run_case(model, cand, SHORT, spec=ComparisonSpec(policy=policy, floors=store), patterns=PATTERNS, refs=refs,
                    local=False)
    r = case.result
    st = r.stage("step1.block1")
    assert st.gate == "floor" and st.status == "fail" and st.ratio >= 10, (st.ratio, st.detail)
    assert abs(st.floor["ratios"]["rel_l2"] / 10 - 1) < 0.1, st.floor  # 10x the rel_l2 floor, + the port's own
    assert r.first_divergence.stage == "step1.block1" and r.verdict == "fail"
    assert r.stage("step1.block0").status == "pass"  # the block before it is untouched
    # the same traces with a floor of the default capture: the blocks are judged flat and pass
    from parity.judge.compare import compare_loaded
    from parity.ingest import Loaded

    small = estimate_floor(model, load_bundle(SHORT), recipe=Recipe(n_seeds=3, n_held_out=2,
                                                                    patterns=tuple(DEFAULT_PATTERNS)))
    flat_blocks = compare_loaded(Loaded(case.ref_tensors, case.ref_meta, "ref"),
                                 Loaded(case.cand_tensors, case.cand_meta, "cand"), ComparisonSpec(policy=policy),
                                 floor=small)
    assert flat_blocks.stage("step1.block1").gate == "flat" and flat_blocks.stage("step1.block1").status == "pass"
    fd = flat_blocks.first_divergence
    assert fd is None or fd.stage != "step1.block1"


def test_a_legitimate_profile_passes_every_block_and_hift_internal_by_its_floor(model, refs):
    """fp32-sdpa (another attention kernel) with the blocks and the HiFT internals captured: every one of them is
    judged by the floor, and the case passes."""
    from parity.harness import Harness

    cand = Harness().candidate(model, "fp32-sdpa")
    case = run_case(model, cand, SHORT, spec=ComparisonSpec(policy=load_policy(), floors=FloorStore(cache=None, compute=False)),
                    patterns=PATTERNS, refs=refs, local=False)
    r = case.result
    inner = [x for x in r.stages if ".block" in x.name or x.name.startswith("hift.")]
    assert len(inner) == 20 + 13 and all(x.gate == "floor" for x in inner)
    assert r.verdict == "pass", r.first_divergence
    assert max(x.ratio for x in inner) < r.floor["k"]
