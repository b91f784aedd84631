"""Inputs that used to pass silently or get the wrong diagnosis (issue 15), and the terminal summary's
papercuts: integer PCM audio, a candidate without flow_mel/audio (``--require-stages``), negative token ids,
a file that is not a checkpoint, NaN messages without fragments, the case header, findings not cut, skip
reasons."""

from __future__ import annotations

import re

import pytest
import torch

from parity.cli import main
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.ingest import Loaded, load
from parity.result import Finding, StageResult
from parity.present.summary import render
from parity.trace import read_trace, write_trace

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"


@pytest.fixture(scope="module")
def ref_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("edges") / "ref.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out)]) == 0
    return out


def _variant(ref_trace, tmp_path, name, change=None, drop=()):
    tr = read_trace(ref_trace)
    tensors = {k: v for k, v in tr.tensors.items() if k not in drop}
    if change:
        tensors.update(change(tensors))
    return write_trace(tmp_path / f"{name}.safetensors", tensors, tr.metadata)


def _no_fragments(text: str) -> None:
    for bad in (r"\(\s*;", r";\s*\)", r"\bNone vs limit None\b", r"\bNone vs\b", r"limit None\b", r"\(\s*\)"):
        assert not re.search(bad, text), f"fragment {bad!r} in: {text}"


# =============================================================================================
# integer PCM audio

@pytest.mark.parametrize("dtype,scale", [(torch.int16, 32768.0), (torch.int32, 2147483648.0)])
def test_integer_pcm_audio_is_diagnosed_and_scaled(ref_trace, tmp_path, dtype, scale):
    def to_pcm(t):
        return {"audio": (t["audio"].double() * scale).round().clamp(-scale, scale - 1).to(dtype)}

    cand = _variant(ref_trace, tmp_path, "pcm", to_pcm)
    res = compare_loaded(load(ref_trace), load(cand))
    name = str(dtype).replace("torch.", "")
    pcm = [f for f in res.findings if f.code == "audio_integer_pcm"]
    assert pcm and pcm[0].severity == "warning" and pcm[0].stage == "audio", res.findings
    assert f"integer PCM ({name})" in pcm[0].message and f"1/{int(scale)}" in pcm[0].message
    assert any(n.get("kind") == "pcm-scale" and n.get("stage") == "audio" for n in res.normalisations)
    assert res.verdict == "pass", res.headline_text()  # 16-bit rounding is far inside the audio gate
    assert not any(f.code in ("vocoder_divergence", "audio_dc_offset", "audio_click") for f in res.findings)
    # refused: a failure that says what to do, not a vocoder divergence
    res2 = compare_loaded(load(ref_trace), load(cand), ComparisonSpec(pcm_scale=False))
    fd = res2.first_divergence
    assert fd.code == "audio_integer_pcm" and fd.severity == "failure", res2.headline_text()
    assert "--no-pcm-scale" in fd.message and f"1/{int(scale)}" in fd.message


def test_integer_pcm_through_the_cli(ref_trace, tmp_path, capsys):
    cand = _variant(ref_trace, tmp_path, "pcm16",
                    lambda t: {"audio": (t["audio"].double() * 32768).round().clamp(-32768, 32767).to(torch.int16)})
    assert main(["compare", str(ref_trace), str(cand)]) == 0
    out = capsys.readouterr().out
    assert "audio_integer_pcm" in out and "1/32768" in out
    assert main(["compare", str(ref_trace), str(cand), "--no-pcm-scale"]) == 1
    assert "audio_integer_pcm" in capsys.readouterr().out


# =============================================================================================
# a candidate without the stages that matter most

def test_missing_flow_mel_and_audio_warns_in_the_headline(ref_trace, tmp_path, capsys):
    vocoder = ("flow_mel", "f0", "source", "s_stft", "conv_pre", "magnitude", "phase", "audio_preclamp", "audio")
    cand = _variant(ref_trace, tmp_path, "flowonly", drop=vocoder)
    assert main(["compare", str(ref_trace), str(cand)]) == 0  # still a pass without the option...
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "PASS" in first and "warning" in first and "flow_mel" in first and "audio" in first, first
    assert "key_stages_missing" in out
    rc = main(["compare", str(ref_trace), str(cand), "--require-stages"])  # ...and a failure with it
    out = capsys.readouterr().out
    assert rc == 1 and "required stages absent" in out and "flow_mel, audio" in out
    # a custom list; a stage that is there passes the requirement
    assert main(["compare", str(ref_trace), str(ref_trace), "--require-stages", "--require-stage", "f0"]) == 0
    capsys.readouterr()
    assert main(["compare", str(ref_trace), str(cand), "--require-stage", "mu"]) == 0
    capsys.readouterr()
    assert main(["compare", str(ref_trace), str(cand), "--require-stage", "f0"]) == 1
    assert "required stages absent: f0" in capsys.readouterr().out


def test_require_stages_in_run(tmp_path, capsys):
    rc = main(["run", "--inputs", str(SHORT), "--no-local", "--no-progress", "--stages", "mu,spks,cond",
               "--require-stages", "--report", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert rc == 1 and "required stages absent: flow_mel, audio" in out


# =============================================================================================
# negative token ids

def test_negative_token_ids_are_clamped_and_said_once(tmp_path, capsys):
    from reference.bundle import load_bundle, save_bundle

    t = load_bundle(SHORT)
    t["token"] = t["token"].clone()
    t["token"][0, :3] = torch.tensor([-1, -5, -1])
    b = tmp_path / "neg.safetensors"
    save_bundle(b, {k: v.to(torch.int32) if k in ("token", "prompt_token") else v for k, v in t.items()},
                validate=False)
    assert main(["dump", "--preset", "tiny", "--inputs", str(b), "--out", str(tmp_path / "d.safetensors")]) == 0
    out, err = capsys.readouterr()
    text = out + err
    assert text.count("negative token id") == 1, text
    assert "3 negative token ids" in text and "clamped to 0" in text
    rc = main(["run", "--inputs", str(b), "--no-local", "--no-progress", "--report", str(tmp_path / "r.html")])
    out, err = capsys.readouterr()
    assert rc == 0 and (out + err).count("negative token id") == 1, out + err
    assert read_trace(tmp_path / "d.safetensors").metadata["input_notes"]


# =============================================================================================
# a file that is not a checkpoint

@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b".", "not a PyTorch checkpoint"),
    (b"hello, not a checkpoint", "not a PyTorch checkpoint"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 123\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html>", "HTML page"),
    (b"PK\x03\x04 truncated", "damaged"),
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "damaged"),
])
def test_a_flow_pt_that_is_not_a_checkpoint(tmp_path, capsys, content, needle):
    d = tmp_path / "model"
    assert main(["export-model", "--preset", "tiny", "--out", str(d)]) == 0
    (d / "flow.pt").write_bytes(content)
    capsys.readouterr()
    rc = main(["dump", "--model-dir", str(d), "--inputs", str(SHORT), "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "flow.pt" in lines[0] and needle in lines[0], err
    for bad in ("IndexError", "pop from empty list", "KeyError", "Weights only load failed", "EOFError: )"):
        assert bad not in err, err


def test_a_checkpoint_of_python_objects_is_named(tmp_path):
    from reference.checkpoint import read_state_dict
    from reference.errors import CheckpointError

    p = tmp_path / "flow.pt"
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError, match="a list, not a mapping of tensor names to tensors"):
        read_state_dict(p)


# =============================================================================================
# NaN messages

def _nan_pair():
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(1, 80, 24, generator=g)
    mag = torch.rand(1, 9, 481, generator=g)
    bad = mag.clone()
    bad[0, 0, :7] = float("nan")
    ref = {"flow_mel": mel, "magnitude": bad.clone(), "audio": torch.randn(1, 11520, generator=g) * 0.1}
    cand = {"flow_mel": mel.clone(), "magnitude": bad.clone(), "audio": ref["audio"].clone()}
    cand["audio"][0, 5] = float("nan")
    local = {"magnitude": bad.clone()}
    return Loaded(ref, {}, "ref"), Loaded(cand, {}, "cand"), Loaded(local, {}, "local")


def test_nan_messages_have_no_fragments():
    ref, cand, local = _nan_pair()
    res = compare_loaded(ref, cand, local=local)
    assert res.verdict == "error"  # the reference holds NaN: nothing can be judged against it
    assert any(f.code == "vocoder_local_mismatch" for f in res.findings), [f.code for f in res.findings]
    for f in res.findings:
        _no_fragments(f.message)
    text = render(res, color=False, verbose=True)
    _no_fragments(text)
    # a stage whose statistic is undefined still says so in words
    vl = next(f for f in res.findings if f.code == "vocoder_local_mismatch")
    assert "non-finite" in vl.message


# =============================================================================================
# the terminal summary

def _result_with(findings, stages=(), case=None):
    from parity.result import Comparison

    return Comparison(stages=list(stages), findings=list(findings), case=case,
                      sources={"ref": "<reference short-offline>", "cand": "<candidate short-offline>"})


def test_the_case_header_names_profile_bundle_and_mode():
    res = _result_with([], case={"bundle": "short.safetensors", "profile": "fp16-flow", "streaming": True,
                                 "finalize": True})
    first = render(res, color=False).splitlines()[0]
    assert "fp16-flow" in first and "short" in first and "streaming" in first, first


def test_long_findings_are_not_cut():
    from parity.judge.metadata import metadata_findings

    ref = {"dtypes": {"flow": "float32", "hift": "float32", "f0_predictor": "float32"}}
    cand = {"dtypes": {"flow": "float16", "hift": "float32", "f0_predictor": "float32", "estimator_matmul": "fp16",
                       "attention": "sdpa-flash-fp16", "autocast": "float16 everywhere in the DiT blocks " * 3}}
    fs = metadata_findings(ref, cand)
    dt = next(f for f in fs if f.code == "dtype_differs")
    assert "flow float32 -> float16" in dt.message, dt.message
    res = _result_with(fs + [Finding("x_long", "audio", "warning", "word " * 80)])
    text = render(res, color=False, width=110)
    flat = " ".join(text.split())
    assert " ".join(dt.message.split()) in flat and ("word " * 80).strip() in flat


def test_skipped_stages_show_their_reason():
    st = StageResult("source", "skip", statistic="rel_l2", detail="skipped by policy (finite on both sides)",
                     rule={"stage": "source", "statistic": "rel_l2", "precision": ["fp16"], "skip": True,
                           "source": "tolerances.toml"}, position=[30])
    text = render(_result_with([], [st]), color=False)
    row = next(ln for ln in text.splitlines() if "source" in ln and "skip" in ln)
    assert "skipped by policy" in row and "tolerances.toml" in row, row
