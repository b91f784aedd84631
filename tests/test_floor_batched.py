"""Floor members along the batch axis (parity/floor/batched.py): the batched pipeline is the reference at one row,
each member draws its own stream in its own rows, and a batched floor has the statistics of the sequential one.
Tiny preset, the short fixture bundle."""

from __future__ import annotations

import math

import pytest
import torch

from parity.capture.recorder import Recorder
from parity.floor import Recipe, estimate_envelope, estimate_floor, judge, spec_from_switches
from parity.floor.batched import batch_groups, members_on_batch_axis, split_members
from parity.floor.members import Member, fp32_members, run_members, run_reference
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.probe import Probe

from .conftest import FIXTURES

BUNDLE = FIXTURES / "bundles" / "short.safetensors"


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def base(model, inputs):
    return run_reference(model, inputs, streaming=False)[0]


def test_one_row_is_the_reference_bit_for_bit_and_the_model_is_restored(model, inputs, base):
    """The batched pipeline at one row runs the reference's own code: every stage bit-identical. Afterwards the
    model is the plain reference again (a run reproduces the base bit for bit; no patched attribute left)."""
    rec = Recorder()
    with members_on_batch_axis(model, 1) as pipe:
        pipe.run(inputs, Probe(rec))
    assert set(rec.tensors) == set(base)
    for n, t in base.items():
        assert torch.equal(rec.tensors[n], t), n
    import reference.dit as D

    cfm = model.flow.decoder
    assert "step" not in cfm.__dict__ and "cfg_batch" not in cfm.__dict__ and "max_batch" not in model.hift.__dict__
    assert D.apply_rotary_pos_emb.__module__ == "reference.dit"
    again = run_reference(model, inputs, streaming=False)[0]
    assert all(torch.equal(again[n], base[n]) for n in base)


@pytest.mark.parametrize("family", ["mca-ops", "mca-modules", "chop"])
def test_each_member_draws_its_own_stream_in_its_own_rows(model, inputs, base, family):
    """Member a's rows in a batch [a, b] equal member a's rows in a batch [a, a], bit for bit (same kernels): b's
    numbers never reach a's rows, in the front end, the DiT's CFG batch (rows j * n + i) and the vocoder. And a
    batch [a, b] is not two copies of one member."""
    spec = spec_from_switches(__import__("candidate.switches", fromlist=["x"]).switches_from("fp16-flow")) \
        if family == "chop" else None
    a, b = (Member(f"{family}#{s}", family, seed=s) for s in (3, 7))
    ab, _ = run_members(model, inputs, [a, b], base, streaming=False, spec=spec)
    aa, _ = run_members(model, inputs, [a, a], base, streaming=False, spec=spec)
    for n in base:
        assert torch.equal(ab[0][n], aa[0][n]), n
    assert not torch.equal(ab[0]["step10.v1"], ab[1]["step10.v1"])
    assert not torch.equal(ab[0]["audio"], base["audio"])


def test_batch_groups():
    ms = fp32_members(3, 2)
    groups = batch_groups(ms, None, 4)
    assert [len(g) for g in groups] == [1, 1, 1, 4, 1, 4, 1]  # threads2, sdpa-math, sdpa alone; seeds by family
    assert all(len({m.family for m in g}) == 1 for g in groups)
    assert [m.name for g in groups for m in g] == [m.name for m in ms]  # run order kept
    assert all(len(g) == 1 for g in batch_groups(ms, None, 1))


def test_split_members_refuses_a_stage_without_the_member_axis(base):
    with pytest.raises(RuntimeError, match="shape"):
        split_members({"mu": torch.zeros(5, *base["mu"].shape[1:])}, base, 2)


def _ratios(a, b):
    out = []
    for n in a.stages:
        for st in ("max_abs", "rel_l2"):
            x, y = a[n].value(st), b[n].value(st)
            assert (x == 0) == (y == 0), (n, st, x, y)  # exact stages stay exact
            if x:
                out.append((y / x, n, st))
    return sorted(out)


def test_batched_and_sequential_floors_agree(model, inputs, base):
    """The default recipe with its seeded members 12 to a forward against one by one. Measured (tiny, torch 2.13
    CPU): every stage floor within 0.80-1.30x of the sequential one on short offline and medium streaming (median
    1.00-1.01; the batched DiT GEMMs round rows in another order, a legitimate variation of its own), k 4.7 vs 4.8
    and 5.9 vs 5.6; the fp16-all envelope 0.96-1.08x, k equal. Asserted: every statistic within 1.5x, the median
    within 10 %, k within 15 %; and every batched member passes the sequential floor."""
    seq = estimate_floor(model, inputs, recipe=Recipe(batch=1), base=base)
    bat = estimate_floor(model, inputs, recipe=Recipe(batch=12), base=base)
    assert seq.digest == bat.digest  # how members run is not part of the key
    r = _ratios(seq, bat)
    assert 1 / 1.5 <= r[0][0] and r[-1][0] <= 1.5, (r[0], r[-1])
    assert 0.9 <= r[len(r) // 2][0] <= 1.1, r[len(r) // 2]
    assert abs(bat.k / seq.k - 1) <= 0.15, (seq.k, bat.k)
    ms = [m for m in fp32_members() if m.family == "mca-ops" and m.role == "held-out"]
    outs, _ = run_members(model, inputs, ms, base, streaming=False)
    for m, tens in zip(ms, outs):
        v = judge(seq, base, tens)
        assert v.passed and v.max_ratio <= seq.k, (m.name, v.first_over)
    assert bat.provenance["members_per_forward"] == 12 and seq.provenance["members_per_forward"] == 1


def test_batched_envelope_agrees_with_sequential(model, inputs, base):
    """Stochastic-rounding members of the fp16 emulation, batched: the envelope within 1.5x statistic by statistic
    (measured 0.96-1.08x on fp16-all, short offline), k within 15 %."""
    from candidate.switches import switches_from

    spec = spec_from_switches(switches_from("fp16-all"))
    small = dict(n_seeds=4, n_held_out=2)  # CI-sized; the full recipe is measured in the docstring above
    seq = estimate_envelope(model, inputs, spec, recipe=Recipe(batch=1, **small), base=base)
    bat = estimate_envelope(model, inputs, spec, recipe=Recipe(batch=12, **small), base=base)
    r = _ratios(seq, bat)
    assert 1 / 1.5 <= r[0][0] and r[-1][0] <= 1.5, (r[0], r[-1])
    assert abs(bat.k / seq.k - 1) <= 0.15 or math.isclose(bat.k, seq.k), (seq.k, bat.k)


def test_a_new_bundle_gets_a_transferred_floor_that_says_so(model, tmp_path):
    """A full floor of the short bundle in the cache; the medium bundle has none: the store transfers it (three
    op-MCA members on the batch axis, calibrated on the short floor; the plain run reused), caches it, and a second
    lookup reads it. The transferred floor judges: a held-out legitimate member passes, a 20x perturbation of one
    stage fails there; its key names the method and the source, and the gate line says it was transferred."""
    from parity.floor import FloorCache
    from parity.floor.store import FloorStore
    from parity.floor.transfer import TRANSFER_FACTOR

    cache = FloorCache(tmp_path / "floors")
    short = load_bundle(FIXTURES / "bundles" / "short.safetensors")
    medium = load_bundle(FIXTURES / "bundles" / "medium.safetensors")
    full = estimate_floor(model, short, cache=cache, bundle_name="short")
    from parity.floor.cache import family_digest

    assert full.calibration["envelope"] and full.digest in cache.calibrations(family_digest(full.key))
    ref = run_reference(model, medium, streaming=False)[0]
    store = FloorStore(cache=cache, shipped=None)
    ch = store.for_run(model, medium, bundle_name="medium", reference=ref)
    f = ch.floor
    assert ch.source == "computed" and "transferred from the full floor of short" in ch.reason, ch.reason
    assert f.recipe["method"] == "transfer" and f.recipe["transfer"]["sources"] == [full.digest]
    # k: the calibrating floor's, its core k here (the reference was captured without the blocks)
    assert f.provenance["transfer"]["factor"] == TRANSFER_FACTOR and f.k == min(full.k, full.k_basis["core"]["k"])
    # the reference was captured without the blocks: the transferred floor covers what it has
    assert len(f.members) == 3 and set(f.stages) == {n for n in full.stages if n in ref}
    assert f.recipe["transfer"]["covers"] and "step*.block*" not in f.recipe["transfer"]["covers"]
    again = FloorStore(cache=cache, shipped=None).for_run(model, medium, bundle_name="medium", reference=ref)
    assert again.source == "cache" and again.floor.digest == f.digest and "transferred" in again.reason
    held = [Member(f"mca-ops#{s}", "mca-ops", role="held-out", seed=s) for s in (8, 9)]
    for tens in run_members(model, medium, held, ref, streaming=False)[0]:
        assert judge(f, ref, tens).passed
    bad = dict(ref)
    sf = f["step3.v1"]
    bad["step3.v1"] = ref["step3.v1"] + 20 * f.k * sf.rel_l2 * ref["step3.v1"]  # 20 k x the rel_l2 floor
    v = judge(f, ref, bad)
    assert v.first_over is not None and v.first_over.stage == "step3.v1"
    from parity.present.summary import gate_line

    class R:
        gates = {"floor": 77}
        floor = ch.to_json()

    assert "transferred from the full floor of short" in gate_line(R)
