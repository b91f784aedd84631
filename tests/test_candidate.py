"""The candidate pipeline: each switch takes the code path it claims, provenance says which kernel ran,
the faults hit their target stage and nothing before it."""

from __future__ import annotations

import pytest
import torch

from candidate.faults import Fault, catalogue, register, unregister
from candidate.pipeline import CandidateToken2Wav
from candidate.provenance import check_required_kernel
from candidate.switches import Switches, resolve_profile, switches_from
from parity.capture.recorder import Recorder
from parity.project import profile_switches
from parity.stages import position, sort_stages
from reference.bundle import load_bundle
from reference.errors import InputError
from reference.model import Token2Wav
from reference.probe import Probe

from .conftest import FIXTURES

MEDIUM = FIXTURES / "bundles" / "medium.safetensors"
FLOW = ["mu", "spks", "cond", "x0"] + [f"step{k}.{f}" for k in range(1, 11) for f in ("v1", "v2", "v_cfg", "x")] + [
    "flow_mel"]


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    return load_bundle(MEDIUM)


@pytest.fixture(scope="module")
def ref_stages(model, inputs):
    return {s: _run(model, inputs, s) for s in (False, True)}


def _run(pipe, inputs, streaming=False, patterns=None):
    rec = Recorder(patterns)
    try:
        pipe.run(inputs, Probe(rec), streaming=streaming)
    except Exception as exc:  # noqa: BLE001
        rec.tensors["__error__"] = exc
    return rec.tensors


def cand(model, profile="fp32-explicit", faults=(), **over):
    return CandidateToken2Wav(model, switches_from(profile, faults, **over), profile)


def maxdiff(a, b, names):
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in names)


def test_explicit_profile_is_bit_identical(model, inputs, ref_stages):
    c = cand(model)
    out = _run(c, inputs)
    for k, v in ref_stages[False].items():
        assert torch.equal(out[k], v), k
    assert dict(c.kernels.counts) == {"explicit": 20}  # 2 blocks x 10 steps, one batch of 2 each


@pytest.mark.parametrize("attention,kernel", [("sdpa", "flash-cpu"), ("sdpa-math", "math"), ("sdpa-flash", "flash-cpu"),
                                              ("explicit", "explicit")])
def test_provenance_shows_the_kernel_that_ran(model, inputs, attention, kernel):
    c = cand(model, attention=attention)
    _run(c, inputs)
    assert dict(c.kernels.counts) == {kernel: 20}
    assert c.kernels.fallbacks == []


def test_unavailable_kernel_falls_back_and_is_recorded(model, inputs):
    c = cand(model, attention="sdpa-efficient")  # no memory-efficient kernel on CPU
    _run(c, inputs)
    log = c.kernels.to_dict()
    assert log["counts"] == {"explicit": 20}
    assert log["fallbacks"] and log["fallbacks"][0]["requested"] == "sdpa-efficient"
    msg = check_required_kernel("efficient", log)
    assert msg and "explicit x20" in msg and "sdpa-efficient failed" in msg
    with pytest.raises(RuntimeError):
        _run_raise(cand(model, attention="sdpa-efficient", attention_fallback=False), inputs)


def _run_raise(pipe, inputs):
    pipe.run(inputs, Probe(Recorder()), streaming=False)


def test_require_kernel_flash_fails_naming_what_ran(model, inputs, tmp_path, capsys):
    from parity.cli import main

    rc = main(["dump", "--preset", "tiny", "--inputs", str(MEDIUM), "--out", str(tmp_path / "c.safetensors"),
               "--profile", "fp32-sdpa-math", "--require-kernel", "flash"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "required attention kernel 'flash' ran in 0 of 20" in err and "math x20" in err
    assert main(["dump", "--preset", "tiny", "--inputs", str(MEDIUM), "--out", str(tmp_path / "d.safetensors"),
                 "--profile", "fp32-sdpa", "--require-kernel", "flash"]) == 0  # flash-cpu is a flash kernel


@pytest.mark.parametrize("streaming", [False, True])
def test_sdpa_math_agrees_with_explicit(model, inputs, streaming):
    from candidate.dit import _explicit
    from reference.dit import static_chunk_mask

    # per call, on the same inputs: 1e-6
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 130, 64, generator=g) for _ in range(3))
    mask = static_chunk_mask(130, 50)[None, None] if streaming else None
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        m = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert float((m - _explicit(q, k, v, mask, 0.125)).abs().max()) <= 1e-6
    # through the whole 10-step flow: rounding only (relative L2 1e-6 per stage, within 8 ulp of the magnitudes)
    a = _run(cand(model, attention="sdpa-math"), inputs, streaming)
    b = _run(cand(model), inputs, streaming)
    for n in FLOW:
        assert float((a[n] - b[n]).norm()) <= 1e-6 * float(b[n].norm()) + 1e-12, n
        assert float((a[n] - b[n]).abs().max()) <= 8 * float(torch.finfo(torch.float32).eps * b[n].abs().max()) + 1e-7, n


@pytest.mark.parametrize("streaming", [False, True])
def test_fp32_sdpa_with_every_fusion_within_fp32_rounding(model, inputs, ref_stages, streaming):
    sw = resolve_profile("fp32-sdpa")
    assert sw.fused_rope and sw.fused_adaln and sw.fold_weightnorm_once and sw.attention == "sdpa"
    out = _run(CandidateToken2Wav(model, sw, "fp32-sdpa"), inputs, streaming)
    ref = ref_stages[streaming]
    assert maxdiff(out, ref, FLOW) <= 1e-5
    rel = max(float((out[n] - ref[n]).norm() / ref[n].norm()) for n in FLOW if ref[n].norm() > 0)
    assert rel <= 1e-6


def test_fused_rope_and_weightnorm_per_call_are_exact(model, inputs, ref_stages):
    out = _run(cand(model, fused_rope=True, fold_weightnorm_once=False), inputs)
    for k, v in ref_stages[False].items():
        assert torch.equal(out[k], v), k


def test_adaln_cache_one_batched_matmul_per_solve(model, inputs, ref_stages):
    """adaln_cache: the AdaLN modulations of all 10 steps come from one batched call before the solve
    (cache hits on every step), agree with the per-step path within fp32 rounding, and the cache is gone
    after the solve (a step driven with another t recomputes)."""
    c = cand(model, fused_adaln=True, adaln_cache=True)
    est = c.flow.estimator
    calls, hits = [], []
    orig_mod, orig_hit = est._modulations, est._cached_modulations
    est._modulations = lambda cc: (calls.append(cc.shape[0]), orig_mod(cc))[1]
    est._cached_modulations = lambda t: (lambda r: (hits.append(r is not None), r)[1])(orig_hit(t))
    out = _run(c, inputs)
    assert calls == [10] and hits == [True] * 10
    assert est._mod_cache == {}
    plain = _run(cand(model, fused_adaln=True), inputs)
    assert maxdiff(out, plain, FLOW) <= 1e-5
    assert maxdiff(out, ref_stages[False], FLOW) <= 1e-5
    calls.clear()
    hits.clear()
    ref = ref_stages[False]
    c.step(ref["step2.x"], ref["step3.t"], ref["step3.dt"].reshape(()), ref["mu"], torch.ones(1, 1, ref["mu"].shape[2]),
           ref["spks"], ref["cond"], k=3)
    assert calls == [2] and hits == [False]


def test_cfg_two_calls_within_rounding(model, inputs, ref_stages):
    c = cand(model, cfg_mode="two-calls")
    out = _run(c, inputs)
    assert maxdiff(out, ref_stages[False], FLOW) <= 1e-5
    assert c.kernels.counts["explicit"] == 40  # two estimator calls per step


@pytest.mark.parametrize("profile", ["bf16-flow", "fp16-flow", "fp16-all", "int8-dynamic"])
def test_reduced_precision_profiles_stay_finite(model, inputs, profile):
    out = _run(CandidateToken2Wav(model, resolve_profile(profile), profile), inputs)
    assert "__error__" not in out
    for k, v in out.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), (profile, k)


def test_fp16_without_upstream_fixes_differs_more(model, inputs, ref_stages):
    fixed = _run(cand(model, "fp16-flow"), inputs)
    naked = _run(cand(model, "fp16-flow", keep_fp32=()), inputs)
    err_fixed = maxdiff(fixed, ref_stages[False], ["flow_mel"])
    err_naked = maxdiff(naked, ref_stages[False], ["flow_mel"])
    assert err_naked > err_fixed


def _first_diff(a, b):
    for n in sort_stages(set(a) | set(b)):
        if n.startswith("__"):
            continue
        if n not in a or n not in b or a[n].shape != b[n].shape or not torch.equal(a[n], b[n]):
            return n
    return None


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_fault_changes_its_stage_and_nothing_before(model, inputs, ref_stages, name):
    f = catalogue()[name]
    out = _run(cand(model, faults=(name,)), inputs)
    ref = ref_stages[False]
    expected = f.stage()
    if name == "shape-crash":
        assert isinstance(out.get("__error__"), RuntimeError)
        assert "f0" in out and "source" not in out
        return
    first = _first_diff(out, ref)
    assert first == expected, f"{name}: first changed stage {first}, catalogue says {expected}"
    for n in ref:
        if position(n) < position(expected):
            assert torch.equal(out[n], ref[n]), f"{name} changed {n}, before its target {expected}"


def test_fault_with_parameters_and_user_registered_fault(model, inputs, ref_stages):
    out = _run(cand(model, faults=("nan-at-block:step=3,block=0",)), inputs, patterns="+step*.block*")
    assert torch.isfinite(out["step2.x"]).all() and not torch.isfinite(out["step3.block0"]).all()
    with pytest.raises(InputError, match="bad parameter"):
        cand(model, faults=("nan-at-block:bogus=1",))
    register(Fault("test-mu-offset", "adds 0.1 to mu (a user's own regression)", "mu",
                   hooks={"mu": lambda t, ctx, params: t + 0.1}), replace=True)
    try:  # the registry is process-wide: a fault left in it joins the catalogue other tests enumerate
        out = _run(cand(model, faults=("test-mu-offset",)), inputs)
    finally:
        unregister("test-mu-offset")
    assert _first_diff(out, ref_stages[False]) == "mu"
    assert "test-mu-offset" not in catalogue("all")


def test_user_profiles_from_pyproject(tmp_path, model, inputs):
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[tool.parity.profiles.my-fp16]\nbase = "fp16-flow"\nattention = "sdpa-math"\n'
                  'keep_fp32 = ["residual", "block1"]\n\n[tool.parity.profiles.broken]\nbogus = 1\n')
    sw = profile_switches("my-fp16", pyproject=pp)
    assert sw.flow_dtype == "fp16" and sw.attention == "sdpa-math" and sw.keeps("block1.ff") and sw.precision == "fp16"
    with pytest.raises(InputError, match="unknown switch 'bogus'"):
        profile_switches("broken", pyproject=pp)
    with pytest.raises(InputError, match="unknown profile"):
        profile_switches("nope", pyproject=pp)
    with pytest.raises(InputError, match="keep_fp32"):
        Switches(keep_fp32=("block1.everything",))


def test_step_and_vocoder_callable_with_reference_tensors(model, inputs, ref_stages):
    ref = ref_stages[False]
    c = cand(model, "fp32-sdpa")
    x, v1, v2, v_cfg = c.step(ref["step2.x"], ref["step3.t"], ref["step3.dt"].reshape(()), ref["mu"],
                              torch.ones(1, 1, ref["mu"].shape[2]), ref["spks"], ref["cond"], k=3)
    assert float((x - ref["step3.x"]).abs().max()) < 1e-5 and float((v1 - ref["step3.v1"]).abs().max()) < 1e-5
    audio = c.vocode(ref["flow_mel"])
    assert audio.shape == ref["audio"].shape and float((audio - ref["audio"]).abs().max()) < 1e-5


def test_provenance_records_switches_and_faults(model):
    c = cand(model, "fp16-flow", ("cfg-rate",))
    p = c.provenance(streaming=False)
    assert p["pipeline"] == "candidate" and p["faults"] == ["cfg-rate"] and p["cfg_rate"] == 0.5
    assert p["dtypes"]["flow"] == "float16" and p["precision"] == "fp16" and p["attention"] == "sdpa"
    assert p["switches"]["keep_fp32"] == ["residual", "adaln", "time_grid", "euler"]
