"""Integer stages in the diagnosis: token ids (up to 6560 in CosyVoice 3), a call's token offset and flags are
integers, never judged for fp16/bf16 range (``overflow_risk``); their hazard in a port is exactness when stored
as floats (float16 holds every integer only up to 2048, bfloat16 up to 256), and ``token_ids_inexact`` says so
only where a trace really holds ids in such a dtype beyond that range. Checked both ways on the short golden
trace with the short bundle's real token ids (max 6145, prompt max 6410)."""

from __future__ import annotations

import pytest
import torch

from parity.ingest import load
from parity.judge.compare import compare_loaded
from parity.judge.observations import EXACT_INT, integer_stage
from parity.judge.spec import ComparisonSpec
from parity.trace import read_trace, write_trace
from reference.bundle import load_bundle

from .conftest import FIXTURES

GOLD = FIXTURES / "golden" / "short-offline.safetensors"
SHORT = FIXTURES / "bundles" / "short.safetensors"


def _pair(tmp_path, cand_edit=None, ref_edit=None, precision="fp16"):
    tr = read_trace(GOLD)
    b = load_bundle(SHORT)
    ref = dict(tr.tensors, token=b["token"], prompt_token=b["prompt_token"])
    cand = dict(ref)
    if ref_edit:
        ref = ref_edit(dict(ref))
    if cand_edit:
        cand = cand_edit(dict(cand))
    rp = write_trace(tmp_path / "ref.safetensors", ref, tr.metadata)
    cp = write_trace(tmp_path / "cand.safetensors", cand, tr.metadata)
    return compare_loaded(load(rp), load(cp), ComparisonSpec(precision=precision))


def _codes(result, code):
    return [f for f in result.findings if f.code == code]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_token_ids_are_never_judged_for_float_range(precision, tmp_path):
    r = _pair(tmp_path, precision=precision)
    assert r.stage("token").ref_stats["max"] == 6145  # far beyond 65504/64 = 1023.5 for fp16
    assert integer_stage(r.stage("token")) and integer_stage(r.stage("prompt_token"))
    assert not integer_stage(r.stage("mu"))
    risk = _codes(r, "overflow_risk")
    assert not any("token" in f.message or f.stage in ("token", "prompt_token") for f in risk), risk
    assert not _codes(r, "token_ids_inexact")  # int64 ids: exact, nothing to say


def test_overflow_risk_still_judges_activations(tmp_path):
    def big(t):
        t["mu"] = t["mu"] * 0 + 5000.0  # > 65504 / 64
        return t

    r = _pair(tmp_path, cand_edit=big, ref_edit=big)
    risk = _codes(r, "overflow_risk")
    assert len(risk) == 1 and risk[0].stage == "mu" and "reaches 5000 at mu" in risk[0].message


@pytest.mark.parametrize("dtype,exact", [(torch.float16, 2048), (torch.bfloat16, 256)])
def test_ids_stored_as_low_precision_floats_beyond_their_exact_range_are_named(dtype, exact, tmp_path):
    def as_float(t):
        t["token"] = t["token"].to(dtype)
        return t

    r = _pair(tmp_path, cand_edit=as_float, precision="fp32")
    note = _codes(r, "token_ids_inexact")
    assert len(note) == 1, r.findings
    f = note[0]
    name = str(dtype).replace("torch.", "")
    assert f.stage == "token" and f.severity == "warning" and f.evidence["side"] == "candidate"
    assert f.evidence["exact_up_to"] == exact == EXACT_INT[name] and f.evidence["max_id"] == 6145
    assert f"stores token as {name}" in f.message and f"exactly only up to {exact}" in f.message
    assert not _codes(r, "overflow_risk")


@pytest.mark.parametrize("dtype,limit", [(torch.float16, 2048), (torch.bfloat16, 256)])
def test_ids_stored_as_floats_within_their_exact_range_get_no_note(dtype, limit, tmp_path):
    def small(t):
        t["token"] = t["token"] % limit
        t["prompt_token"] = t["prompt_token"] % limit
        return t

    def small_float(t):
        t = small(t)
        t["token"] = t["token"].to(dtype)
        return t

    r = _pair(tmp_path, cand_edit=small_float, ref_edit=small, precision="fp16")
    assert not _codes(r, "token_ids_inexact"), r.findings
    assert r.stage("token").status == "pass"  # every id below the limit is exact in that dtype


def test_float32_ids_are_exact_below_2_to_the_24(tmp_path):
    def as_f32(t):
        t["token"] = t["token"].to(torch.float32)
        return t

    r = _pair(tmp_path, cand_edit=as_f32, precision="fp32")
    assert not _codes(r, "token_ids_inexact")
