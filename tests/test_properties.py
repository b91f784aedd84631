"""Property tests (hypothesis): attention variants, the chunk mask, alias/layout normalisation round trips,
and the tolerance policy's rule choice."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

from candidate.dit import _explicit
from parity.aliases import canonical_name
from parity.judge.normalize import align
from parity.judge.policy import Policy
from reference.dit import apply_rotary_pos_emb, explicit_attention, static_chunk_mask

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = {torch.float32: 2e-6, torch.bfloat16: 3e-2, torch.float16: 4e-3}


@SETTINGS
@given(b=st.integers(1, 2), h=st.integers(1, 4), t=st.integers(1, 130), d=st.sampled_from([16, 32, 64]),
       chunk=st.sampled_from([None, 1, 7, 50]), dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       backend=st.sampled_from(["default", "math", "flash"]), seed=st.integers(0, 2**16))
def test_attention_variants_agree(b, h, t, d, chunk, dtype, backend, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    mask = static_chunk_mask(t, chunk)[None, None] if chunk else None
    ref = explicit_attention(q.double(), k.double(), v.double(), mask, 1 / math.sqrt(d))  # the golden formula in fp64
    ql, kl, vl = (z.to(dtype) for z in (q, k, v))
    if backend == "default":
        out = F.scaled_dot_product_attention(ql, kl, vl, attn_mask=mask)
    else:
        be = SDPBackend.MATH if backend == "math" else SDPBackend.FLASH_ATTENTION
        with sdpa_kernel([be]):
            out = F.scaled_dot_product_attention(ql, kl, vl, attn_mask=mask)
    exp = _explicit(ql, kl, vl, mask, 1 / math.sqrt(d))
    for name, o in (("sdpa", out), ("explicit", exp)):
        err = float((o.double() - ref).abs().max())
        assert err <= TOL[dtype] * max(1.0, float(ref.abs().max())), (name, dtype, err)


@SETTINGS
@given(t=st.integers(1, 300), c=st.integers(1, 80))
def test_chunk_mask_equals_its_definition(t, c):
    m = static_chunk_mask(t, c)
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    assert torch.equal(m, j < (i // c + 1) * c)
    assert m.diagonal().all()  # every frame sees itself
    assert m[:, 0].all()  # and the first frame (all left chunks visible)


@SETTINGS
@given(t=st.integers(1, 64), seed=st.integers(0, 1000))
def test_rope_leaves_heads_after_head0_alone(t, seed):
    g = torch.Generator().manual_seed(seed)
    from reference.dit import RotaryEmbedding

    x = torch.randn(1, t, 256, generator=g)
    out = apply_rotary_pos_emb(x, RotaryEmbedding(64).forward_from_seq_len(t))
    assert torch.equal(out[..., 64:], x[..., 64:])
    # a rotation: the norm of each interleaved pair is kept
    pr = out[..., :64].unflatten(-1, (32, 2)).norm(dim=-1)
    px = x[..., :64].unflatten(-1, (32, 2)).norm(dim=-1)
    assert torch.allclose(pr, px, rtol=1e-5, atol=1e-6)


STEP_FIELDS = st.sampled_from(["v1", "v2", "v_cfg", "x", "dt"])


@SETTINGS
@given(k=st.integers(1, 30), f=STEP_FIELDS, prefix=st.sampled_from(["", "rust_", "py_", "python_"]),
       sep=st.sampled_from(["_", "."]))
def test_step_dialects_map_to_canonical(k, f, prefix, sep):
    assert canonical_name(f"{prefix}step{k}{sep}{f}") == f"step{k}.{f}"


@SETTINGS
@given(c=st.integers(2, 90), t=st.integers(2, 200), layout=st.sampled_from(["BTC", "BCT1", "1BCT", "CT"]),
       seed=st.integers(0, 1000))
def test_layout_normalisation_round_trips(c, t, layout, seed):
    if c == t:
        return  # a square tensor is never transposed: there is no way to tell
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(1, c, t, generator=g)
    cand = {"BTC": ref.transpose(1, 2), "BCT1": ref[..., None], "1BCT": ref[None], "CT": ref[0]}[layout].contiguous()
    a = align("flow_mel", ref, cand)
    assert a.problem is None and torch.equal(a.cand, ref)
    assert (layout == "BTC") == any(n["kind"] == "transpose" for n in a.notes)


@SETTINGS
@given(t=st.integers(2, 100), p=st.integers(1, 40), seed=st.integers(0, 1000))
def test_prompt_inclusive_mel_is_sliced_only_when_lengths_say_so(t, p, seed):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(1, 80, t, generator=g)
    full = torch.cat([torch.randn(1, 80, p, generator=g), ref], 2)
    a = align("flow_mel", ref, full, prompt_frames=p)
    assert a.problem is None and torch.equal(a.cand, ref)
    b = align("flow_mel", ref, full, prompt_frames=p + 1)  # wrong prompt length: a finding, not a guess
    assert b.problem is not None and b.problem["code"] == "length_mismatch"


RULES = [
    {"stage": "*", "statistic": "max_abs", "limit": 1.0},
    {"stage": "step*.v1", "statistic": "max_abs", "limit": 2.0},
    {"stage": "step*.v1", "precision": ["fp16"], "statistic": "max_abs", "limit": 3.0},
    {"stage": "step*.v1", "precision": ["fp16"], "attention": ["sdpa*"], "statistic": "max_abs", "limit": 4.0},
    {"stage": "audio", "statistic": "snr_db", "limit": 30.0},
]


@SETTINGS
@given(k=st.integers(1, 10), prec=st.sampled_from(["fp32", "bf16", "fp16", "int8"]),
       att=st.sampled_from(["explicit", "sdpa", "sdpa-math", "flash-attn"]))
def test_policy_picks_the_most_specific_rule(k, prec, att):
    pol = Policy().extend(RULES, "test")
    r = pol.rule_for(f"step{k}.v1", prec, att)
    if prec == "fp16" and att.startswith("sdpa"):
        assert r.limit == 4.0
    elif prec == "fp16":
        assert r.limit == 3.0
    else:
        assert r.limit == 2.0
    assert pol.rule_for(f"step{k}.v2", prec, att).limit == 1.0
    assert pol.rule_for("audio", prec, att).statistic == "snr_db"
    # a later rule with the same specificity wins
    pol2 = Policy().extend(RULES + [{"stage": "step*.v1", "statistic": "max_abs", "limit": 9.0}], "test")
    if prec != "fp16":
        assert pol2.rule_for(f"step{k}.v1", prec, att).limit == 9.0


def test_prompt_slice_on_a_square_candidate_keeps_the_time_axis():
    """Found by hypothesis: t + p == 80 makes the candidate [1, 80, 80]; the slice must stay on time."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 80, 40, generator=g)
    full = torch.cat([torch.randn(1, 80, 40, generator=g), ref], 2)
    a = align("flow_mel", ref, full, prompt_frames=40)
    assert a.problem is None and torch.equal(a.cand, ref)
