"""The noise-floor engine (parity/floor): ensemble floors, the floor-relative gate, determinism, the cache,
and the reduced-precision envelope. Tiny preset, the short fixture bundle, offline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.capture.recorder import Recorder
from parity.floor import (Floor, FloorCache, Member, Recipe, estimate_envelope, estimate_floor, judge, judge_stage,
                          key_from_trace, run_reference, spec_from_switches)
from parity.floor.chop import quantize_int8, round_float
from parity.floor.mca import OpMCA, RandomStream, perturb
from parity.floor.stats import U32
from reference.bundle import load_bundle
from reference.errors import InputError
from reference.model import Token2Wav
from reference.probe import Probe

from .conftest import FIXTURES

BUNDLE = FIXTURES / "bundles" / "short.safetensors"
SMALL = Recipe(n_seeds=3, n_held_out=2, families=("attention", "mca-modules", "mca-ops"))  # for property tests


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("floors")


@pytest.fixture(scope="module")
def floor(model, inputs, cache_dir):
    """The default fp32 floor (full recipe: 2 threads, SDPA math/default, 8 + 4 seeds of each MCA family)."""
    return estimate_floor(model, inputs, cache=FloorCache(cache_dir), bundle_name="short")


@pytest.fixture(scope="module")
def base(model, inputs):
    """The plain reference with every stage a floor records (the DiT blocks and the HiFT internals too)."""
    from parity.stages import FLOOR_PATTERNS

    return run_reference(model, inputs, streaming=False, patterns=FLOOR_PATTERNS)[0]


def _cand(model, inputs, profile, faults=()):
    rec = Recorder()
    CandidateToken2Wav(model, switches_from(profile, list(faults)), profile).run(inputs, Probe(rec))
    return rec.tensors


def test_floor_covers_every_stage_with_sane_values(floor, base):
    assert list(floor.stages) == [n for n in base]  # every recorded stage, pipeline order
    assert floor.kind == "fp32" and floor.k >= 2.0
    assert 2.0 <= floor.k <= 20.0, floor.k_basis  # from held-out data: a wild k means a broken ensemble
    # exact in every legitimate re-computation: inputs, the shared noise, the time grid, the prompt condition
    for n in ("token", "prompt_feat", "x0", "cond", "step1.t", "step5.dt"):
        assert floor[n].max_abs == 0.0, n
    # rounding noise of an fp32 flow: about 1e-7..1e-5, growing along the solve; the vocoder amplifies it
    assert 1e-8 < floor["step1.v1"].max_abs < 1e-4
    assert floor["step1.v1"].rel_l2 < floor["step10.v1"].rel_l2
    assert 0 < floor["flow_mel"].max_abs < floor["audio"].max_abs
    for sf in floor.stages.values():
        assert max(sf.envelope) <= sf.max_abs * (1 + 1e-12)
        assert all(math.isfinite(v) for v in sf.envelope)
    assert len(floor["flow_mel"].envelope) == base["flow_mel"].shape[-1]  # one block per frame
    assert len(floor["audio"].envelope) == base["flow_mel"].shape[-1]  # one block per mel frame of samples
    assert len(floor["step1.block0"].envelope) == base["step1.block0"].shape[1]  # the DiT blocks: per frame
    assert len(floor["hift.fusion2"].envelope) == base["flow_mel"].shape[-1]  # HiFT internals: per mel frame
    fams = {m["family"] for m in floor.members}
    assert fams == {"threads", "attention", "mca-modules", "mca-ops"}
    assert sum(1 for m in floor.members if m["family"] == "mca-ops" and m["role"] == "fit") >= 8
    assert set(floor.per_member) == {m["name"] for m in floor.members}


def test_legitimate_member_and_candidates_pass(model, inputs, floor, base):
    # 2 threads AND the SDPA math kernel: a combination the ensemble never ran
    other, _ = run_reference(model, inputs, streaming=False,
                             member=Member("sdpa-math/threads2", "attention", threads=2, attention="sdpa-math"))
    v = judge(floor, base, other)
    assert v.passed, v.first_over
    assert 0 < v.max_ratio <= floor.k  # it does differ from the plain reference
    for profile in ("fp32-sdpa", "fp32-two-calls"):  # fused RoPE/AdaLN, AdaLN cache; CFG as two calls
        v = judge(floor, base, _cand(model, inputs, profile))
        assert v.passed, (profile, v.first_over)


@pytest.mark.parametrize("stage", ["mu", "step3.v1", "step7.x", "flow_mel", "f0", "s_stft", "audio"])
def test_synthetic_spike_20x_fails_at_its_stage_3x_passes(floor, base, stage):
    assert floor.k > 3.0, "the 3x case below needs k > 3"
    sf = floor[stage]
    worst_block = max(range(sf.n_blocks), key=lambda b: sf.envelope[b])
    for c, should_fail in ((20.0, True), (3.0, False)):
        cand = dict(base)
        t = base[stage].clone()
        # one element, in the block where the floor is largest, moved by c x the floor of that block
        from parity.floor.stats import time_axis

        ax = time_axis(stage, t)
        idx = [0] * t.dim()
        if ax is not None:
            idx[ax] = int(torch.tensor_split(torch.arange(t.shape[ax]), sf.n_blocks)[worst_block][0])
        t[tuple(idx)] += c * sf.envelope[worst_block]
        cand[stage] = t
        v = judge(floor, base, cand)
        if should_fail:
            assert not v.passed and v.first_over.stage == stage, v.first_over
            assert v.first_over.ratio == pytest.approx(c, rel=0.05)
        else:
            assert v.passed, v.first_over
            assert v[stage].ratio == pytest.approx(c, rel=0.05)


def test_zero_floor_stage_is_judged_in_ulps(floor, base):
    assert floor["x0"].max_abs == 0.0
    for ulps, ok in ((1, True), (100, False)):
        cand = dict(base)
        x = base["x0"].clone()
        x[0, 0, 0] = torch.nextafter(x[0, 0, 0], torch.tensor(math.inf)) if ulps == 1 else x[0, 0, 0] * (1 + ulps * U32)
        cand["x0"] = x
        v = judge(floor, base, cand)
        assert v["x0"].status == ("pass" if ok else "fail"), v["x0"]
        assert "max_abs" in v["x0"].zero_floor


def test_nonfinite_shape_and_missing(floor, base):
    cand = dict(base)
    cand["step2.v1"] = base["step2.v1"].clone()
    cand["step2.v1"][0, 0, 0] = float("nan")
    del cand["audio"]
    cand["f0"] = base["f0"][..., :-1]
    v = judge(floor, base, cand)
    assert v["step2.v1"].status == "nonfinite" and v.first_over.stage == "step2.v1"
    assert v["f0"].status == "shape" and v["audio"].status == "missing"
    # NaN on both sides still fails
    assert judge_stage(floor["step2.v1"], cand["step2.v1"], cand["step2.v1"], floor.k).status == "nonfinite"


def test_floor_is_deterministic_and_round_trips(model, inputs):
    a = estimate_floor(model, inputs, recipe=SMALL, bundle_name="short")
    b = estimate_floor(model, inputs, recipe=SMALL, bundle_name="short")
    assert a.to_json() == b.to_json()
    again = Floor.from_json(a.to_json())
    assert again.to_json() == a.to_json() and again == a
    json.loads(a.to_json())  # strict JSON (no NaN/Inf)


def test_cache_hit_on_second_run_and_key_from_trace(model, inputs, floor, cache_dir, base):
    cache = FloorCache(cache_dir)
    again = estimate_floor(model, inputs, cache=cache, bundle_name="short")
    assert cache.hits == 1 and cache.misses == 0
    assert again.to_json() == floor.to_json()
    assert cache.path(floor.digest).exists()
    # the key comes from what a reference trace records about itself
    meta = model.provenance(streaming=False)
    _, digest = key_from_trace(meta, base, kind="fp32", recipe=floor.recipe)
    assert digest == floor.digest
    # another mode is another floor
    _, other = key_from_trace(model.provenance(streaming=True), base, kind="fp32", recipe=floor.recipe)
    assert other != floor.digest
    assert cache.get(other) is None and cache.misses == 1


def test_damaged_floor_file_is_a_clear_error(tmp_path):
    p = tmp_path / "f.json"
    p.write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="f.json.*not a noise-floor file"):
        Floor.load(p)
    p.write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        Floor.load(p)
    with pytest.raises(InputError, match="not found"):
        Floor.load(tmp_path / "missing.json")


def test_fp16_accumulation_in_one_block_exceeds_the_precision_envelope(model, inputs):
    blocks = Recipe(patterns=("+step*.block*",))  # the envelope of every DiT block's output too
    env = estimate_envelope(model, inputs, spec_from_switches(switches_from("fp16-flow")), recipe=blocks,
                            bundle_name="short")
    assert env.kind == "fp16" and "step1.block1" in env
    # reduced precision: F0 and audio judged by their perceptual statistics, with limits from the envelope
    assert set(env["f0"].gate) == {"f0_max_abs_cents", "f0_rmse_cents"} and env["f0"].extra["f0_max_abs_cents"] > 0
    assert set(env["audio"].gate) == {"logmel_l1", "logmel_l1_max"} and env["audio"].extra["logmel_l1"] > 0
    assert env["flow_mel"].rel_l2 > 1e-4  # rounding-only error, far above the fp32 noise floor
    ref = run_reference(model, inputs, streaming=False, patterns=["+step*.block*"])[0]

    def cand(faults=()):
        rec = Recorder("+step*.block*")
        CandidateToken2Wav(model, switches_from("fp16-flow", list(faults)), "fp16-flow").run(inputs, Probe(rec))
        return rec.tensors

    ok = judge(env, ref, cand())
    assert ok.passed, ok.first_over  # the upstream fp16 recipe is within k x its rounding-only error
    bad = judge(env, ref, cand(["low-accumulate-block:block=1"]))
    assert not bad.passed
    assert bad.first_over.stage == "step1.block1", bad.first_over  # localised to the block
    assert bad.first_over.ratio > env.k and bad["step1.block0"].status == "pass"


def test_rounding_and_perturbation_primitives():
    x = torch.tensor([0.0, 1.0, 0.1, 3.14159, -2.5e-6, 7e4, 1e-30])
    assert torch.equal(round_float(x, "fp16"), x.half().float())  # nearest = the cast (70000 -> inf)
    assert torch.equal(round_float(x, "bf16"), x.bfloat16().float())
    sr = round_float(torch.full((200_000,), 0.1001), "fp16", RandomStream(1))
    lo, hi = torch.tensor(0.1001).half().float(), torch.nextafter(torch.tensor(0.1001).half(), torch.tensor(1.0).half()).float()
    assert set(sr.unique().tolist()) <= {float(lo), float(hi)}
    assert float(sr.double().mean()) == pytest.approx(0.1001, rel=2e-5)  # stochastic rounding is unbiased
    assert float(round_float(torch.zeros(3), "fp16", RandomStream(2)).abs().max()) == 0.0  # exact stays exact
    w = torch.randn(64, 32)
    q = quantize_int8(w, symmetric=True)
    assert len(q.unique()) <= 255 and float((q - w).abs().max()) <= float(w.abs().max()) / 127 / 2 + 1e-7
    y = torch.randn(10_000)
    z = perturb(y, RandomStream(3))
    rel = ((z.double() - y.double()) / y.double()).abs()
    assert 0 < float(rel.max()) <= 2.0 ** -23 and 0.05 < float((z != y).float().mean()) < 0.6
    assert torch.equal(perturb(torch.arange(5), RandomStream(0)), torch.arange(5))


def test_op_mca_keeps_exact_stages_exact(model, inputs, base):
    with OpMCA([model.flow, model.hift], seed=5) as mca:
        rec = Recorder()
        model.run(inputs, Probe(rec))
    assert mca.count > 100
    for n in ("x0", "cond", "step1.t", "step4.t", "step4.dt"):
        assert torch.equal(rec.tensors[n], base[n]), n
    assert not torch.equal(rec.tensors["step1.v1"], base["step1.v1"])


def test_shipped_floor_equals_a_fresh_computation(model, inputs, floor):
    """The shipped short/offline floor (fixtures/golden, maybe computed on another CPU) against the one computed
    here: the same key, stages and gates; every statistic within a factor 2 (floors are statistics: another
    CPU's kernels move the members' last bits, never their scale), exact zeros exact, k within a factor 2."""
    from parity.floor.store import FloorStore

    ch = FloorStore(cache=None, compute=False).for_run(model, inputs)
    shipped = ch.floor
    assert ch.source == "shipped" and shipped.digest == floor.digest and shipped.key == floor.key
    assert list(shipped.stages) == list(floor.stages) and shipped.members == floor.members
    for n, sf in floor.stages.items():
        sh = shipped[n]
        assert sh.shape == sf.shape and sh.gate == sf.gate and sh.n_blocks == sf.n_blocks, n
        for stat in ("max_abs", "rel_l2"):
            a, b = sf.value(stat), sh.value(stat)
            assert (a == 0) == (b == 0), (n, stat, a, b)
            if a:
                assert 0.5 <= b / a <= 2.0, (n, stat, a, b)
        pairs = [(a, b) for a, b in zip(sf.envelope, sh.envelope) if a and b]
        if pairs:
            r = sorted(b / a for a, b in pairs)
            assert 0.5 <= r[len(r) // 2] <= 2.0, n  # the median block
    assert 0.5 <= shipped.k / floor.k <= 2.0, (shipped.k, floor.k)


def test_floor_store_hits_the_cache_on_a_second_run(model, inputs, floor, cache_dir):
    from parity.floor.store import FloorStore

    store = FloorStore(cache=FloorCache(cache_dir), shipped=None, compute=False)
    first = store.for_run(model, inputs)
    assert first.source == "cache" and first.floor.to_json() == floor.to_json()
    assert store.cache.hits == 1 and store.computed == []
    again = FloorStore(cache=FloorCache(cache_dir), shipped=None, compute=False).for_run(model, inputs)
    assert again.source == "cache" and again.floor == first.floor
