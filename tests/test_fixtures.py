"""The shipped fixtures: reproducible bit for bit, valid, honest about provenance; bundle validation errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reference.bundle import BUNDLE_FORMAT, load_bundle, read_bundle_metadata, save_bundle, validate_bundle
from reference.errors import InputError
from reference.flow import check_flow_inputs
from reference.mel import LOG_FLOOR_VALUE, load_wav, prompt_feat_from_wave

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUNDLES = FIXTURES / "bundles"
EXPECTED = {  # name: (N, P)
    "short": (12, 10),
    "medium": (40, 25),
    "long": (110, 25),
}


def _load_script():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def make_fixtures():
    return _load_script()


@pytest.fixture(scope="module")
def short_tensors():
    return {k: v.clone() for k, v in load_file(str(BUNDLES / "short.safetensors")).items()}


# --------------------------------------------------------------------------------------------
# reproducibility and provenance


def test_regenerating_reproduces_shipped_files_bit_for_bit(make_fixtures, tmp_path):
    make_fixtures.build_all(tmp_path)
    rels = make_fixtures.generated_files()
    assert len(rels) == 1 + len(EXPECTED) + len(make_fixtures.SESSION_SPECS)
    for rel in rels:
        shipped = FIXTURES / rel
        assert shipped.is_file(), f"{shipped} is missing: run python fixtures/make_fixtures.py"
        assert (tmp_path / rel).read_bytes() == shipped.read_bytes(), (
            f"{rel} differs from a fresh build: run python fixtures/make_fixtures.py and review the change")


def test_check_mode_reports_up_to_date(make_fixtures, capsys):
    assert make_fixtures.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_original_recording_is_the_pysptk_file(make_fixtures):
    data = (FIXTURES / "audio" / "arctic_a0007.wav").read_bytes()
    assert hashlib.sha256(data).hexdigest() == make_fixtures.SOURCE_SHA256
    licence = (FIXTURES / "audio" / "COPYING.cmu_arctic").read_text()
    assert "Carnegie Mellon University" in licence and "free for use for any purpose" in licence
    readme = (FIXTURES / "README.md").read_text()
    assert "pysptk 1.0.1" in readme and make_fixtures.SOURCE_SHA256 in readme


def test_derived_recording_is_24k_mono_int16_4s():
    from scipy.io import wavfile

    sr, data = wavfile.read(FIXTURES / "audio" / "arctic_a0007_24k.wav")
    assert sr == 24000 and data.dtype == np.int16 and data.ndim == 1 and data.size == 96000


# --------------------------------------------------------------------------------------------
# the shipped bundles


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_bundle_loads_and_validates(name):
    path = BUNDLES / f"{name}.safetensors"
    b = load_bundle(path)
    n, p = EXPECTED[name]
    assert set(b) == {"token", "prompt_token", "prompt_feat", "embedding"}
    assert tuple(b["token"].shape) == (1, n) and b["token"].dtype == torch.int64
    assert tuple(b["prompt_token"].shape) == (1, p) and b["prompt_token"].dtype == torch.int64
    assert tuple(b["prompt_feat"].shape) == (1, 2 * p, 80) and b["prompt_feat"].dtype == torch.float32
    assert tuple(b["embedding"].shape) == (1, 192) and b["embedding"].dtype == torch.float32
    # stored dtypes are the canonical ones
    raw = load_file(str(path))
    assert raw["token"].dtype == torch.int32 and raw["prompt_token"].dtype == torch.int32
    # realistic values
    for key in ("token", "prompt_token"):
        assert 0 <= int(b[key].min()) and int(b[key].max()) <= 6560
    feat = b["prompt_feat"]
    assert float(feat.min()) >= np.float32(LOG_FLOOR_VALUE) and -11.6 < float(feat.min()) and float(feat.max()) < 2.0
    assert 10.0 <= float(b["embedding"].norm()) <= 20.0
    # the reference flow accepts it, finalising and streaming
    for finalize in (True, False):
        check_flow_inputs(b["token"], b["prompt_token"], b["prompt_feat"], b["embedding"], vocab=6561, mel_dim=80,
                          spk_dim=192, lookahead=3, finalize=finalize, source=str(path))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundle_metadata_is_complete(name):
    meta = read_bundle_metadata(BUNDLES / f"{name}.safetensors")
    for key in ("format", "name", "generator", "seed", "source", "token_source", "prompt_token_source",
                "prompt_feat_source", "embedding_source", "length_rule", "lengths"):
        assert key in meta, key
    assert meta["format"] == BUNDLE_FORMAT and meta["name"] == name
    assert meta["generator"] == "fixtures/make_fixtures.py"
    assert "random" in meta["prompt_token_source"] and "random" in meta["token_source"]
    lengths = json.loads(meta["lengths"])
    n, p = EXPECTED[name]
    assert (lengths["N"], lengths["P"], lengths["total_mel_frames"]) == (n, p, 2 * (n + p))
    assert lengths["P"] == min(lengths["n_feat_before_rule"] // 2, lengths["n_tok_before_rule"])
    if name == "short":
        assert meta["source"] == "synthetic" and "recording" not in meta
    else:
        rec = json.loads(meta["recording"])
        assert "pysptk 1.0.1" in rec["obtained_from"] and "CMU ARCTIC" in rec["corpus"]
        assert meta["recording_24k_sha256"] == hashlib.sha256(
            (FIXTURES / "audio" / "arctic_a0007_24k.wav").read_bytes()).hexdigest()


def test_session_bundle_metadata(make_fixtures):
    """fixtures/sessions/stream.safetensors: long enough for three streaming chunks and a final call."""
    path = FIXTURES / "sessions" / "stream.safetensors"
    b = load_bundle(path)
    spec = make_fixtures.SESSION_SPECS["stream"]
    assert (b["token"].shape[1], b["prompt_token"].shape[1]) == (spec["n_target"], 12)
    lengths = json.loads(read_bundle_metadata(path)["lengths"])
    assert lengths["P"] == min(lengths["n_feat_before_rule"] // 2, lengths["n_tok_before_rule"]) == 12
    assert "pysptk 1.0.1" in json.loads(read_bundle_metadata(path)["recording"])["obtained_from"]


def test_long_bundle_crosses_chunk_boundaries_and_vocab_ends():
    b = load_bundle(BUNDLES / "long.safetensors")
    total = 2 * (b["token"].shape[1] + b["prompt_token"].shape[1])
    assert total == 270 and total // 50 >= 5
    assert int(b["token"][0, 0]) == 0 and int(b["token"][0, -1]) == 6560


@pytest.mark.parametrize("name,start", [("medium", 4800), ("long", 48000)])
def test_real_prompt_feat_is_the_recording_mel(name, start):
    """Both the zero-shot cut and the segment are what the metadata says."""
    x, sr = load_wav(FIXTURES / "audio" / "arctic_a0007_24k.wav")
    n_feat = json.loads(read_bundle_metadata(BUNDLES / f"{name}.safetensors")["lengths"])["n_feat_before_rule"]
    mel = prompt_feat_from_wave(x[start:start + n_feat * 480], sr)
    feat = load_bundle(BUNDLES / f"{name}.safetensors")["prompt_feat"]
    assert torch.equal(feat, mel[:, :feat.shape[1]])


def test_zero_shot_rule(make_fixtures):
    assert make_fixtures.zero_shot_lengths(51, 26) == 25
    assert make_fixtures.zero_shot_lengths(54, 25) == 25
    assert make_fixtures.zero_shot_lengths(20, 10) == 10
    assert make_fixtures.zero_shot_lengths(7, 100) == 3


# --------------------------------------------------------------------------------------------
# save_bundle


def test_save_bundle_is_deterministic_and_standard(tmp_path, short_tensors):
    meta = {"b": "2", "a": "1", "z": json.dumps({"x": 1})}
    p1 = save_bundle(tmp_path / "one.safetensors", short_tensors, meta)
    p2 = save_bundle(tmp_path / "two.safetensors", dict(reversed(list(short_tensors.items()))),
                     dict(reversed(list(meta.items()))))
    assert p1.read_bytes() == p2.read_bytes()
    (head_len,) = struct.unpack("<Q", p1.read_bytes()[:8])
    assert head_len % 8 == 0
    back = load_file(str(p1))  # the safetensors package reads it
    assert all(torch.equal(back[k], short_tensors[k]) for k in short_tensors)
    assert read_bundle_metadata(p1) == {**meta, "format": BUNDLE_FORMAT}


def test_save_bundle_refuses_bad_input(tmp_path, short_tensors):
    with pytest.raises(InputError, match="str"):
        save_bundle(tmp_path / "x.safetensors", short_tensors, {"seed": 3})
    bad = dict(short_tensors, prompt_feat=short_tensors["prompt_feat"].transpose(1, 2))
    with pytest.raises(InputError, match="channel-major"):
        save_bundle(tmp_path / "x.safetensors", bad)
    assert not (tmp_path / "x.safetensors").exists()


def test_int64_tokens_are_accepted(tmp_path, short_tensors):
    t = dict(short_tensors, token=short_tensors["token"].long(), prompt_token=short_tensors["prompt_token"].long())
    b = load_bundle(save_bundle(tmp_path / "i64.safetensors", t))
    assert b["token"].dtype == torch.int64 and torch.equal(b["token"], short_tensors["token"].long())


def test_extra_tensors_ride_along(tmp_path, short_tensors):
    t = dict(short_tensors, rand_noise=torch.zeros(1, 80, 4))
    b = load_bundle(save_bundle(tmp_path / "extra.safetensors", t))
    assert torch.equal(b["rand_noise"], torch.zeros(1, 80, 4))


# --------------------------------------------------------------------------------------------
# bad bundles: InputError naming the file, the tensor and what was expected


def _mutations(t):
    nan_feat = t["prompt_feat"].clone()
    nan_feat[0, 3, 5] = float("nan")
    inf_emb = t["embedding"].clone()
    inf_emb[0, 0] = float("inf")
    big = t["token"].clone()
    big[0, 0] = 6561
    return {
        "missing token": ({k: v for k, v in t.items() if k != "token"}, r"'token' is missing"),
        "missing embedding, alias present": (
            {**{k: v for k, v in t.items() if k != "embedding"}, "speaker_embedding": t["embedding"]},
            r"'embedding' is missing.*'speaker_embedding'.*rename"),
        "float tokens": (dict(t, token=t["token"].float()), r"'token' must hold int32 \(or int64\) token ids"),
        "int16 prompt tokens": (dict(t, prompt_token=t["prompt_token"].short()), r"'prompt_token' must hold int32"),
        "1-D token": (dict(t, token=t["token"][0]), r"'token' must have shape \[1, N\].*unsqueeze"),
        "empty token": (dict(t, token=t["token"][:, :0]), r"'token' is empty"),
        "token id past vocab": (dict(t, token=big), r"'token' holds token id 6561, outside the vocabulary 0\.\.6560"),
        "channel-major prompt_feat": (dict(t, prompt_feat=t["prompt_feat"].transpose(1, 2).contiguous()),
                                      r"'prompt_feat' .*channel-major \[1, 80, frames\].*transpose\(1, 2\)"),
        "2-D prompt_feat": (dict(t, prompt_feat=t["prompt_feat"][0]), r"'prompt_feat' must have shape \[1, 2\*P, 80\]"),
        "int prompt_feat": (dict(t, prompt_feat=t["prompt_feat"].int()), r"'prompt_feat' must be float32"),
        "prompt_feat length": (dict(t, prompt_feat=t["prompt_feat"][:, :-2]),
                               r"'prompt_feat' has 18 frames, expected 2 \* P = 20"),
        "NaN prompt_feat": (dict(t, prompt_feat=nan_feat), r"'prompt_feat' holds 1 NaN and 0 Inf.*\[0, 3, 5\]"),
        "Inf embedding": (dict(t, embedding=inf_emb), r"'embedding' holds 0 NaN and 1 Inf"),
        "1-D embedding": (dict(t, embedding=t["embedding"][0]), r"'embedding' must have shape \[1, 192\].*unsqueeze"),
        "wrong embedding size": (dict(t, embedding=t["embedding"][:, :80]), r"'embedding' must have shape \[1, 192\]"),
    }


_SHAPED = {"token": torch.zeros(1, 12, dtype=torch.int32), "prompt_token": torch.zeros(1, 10, dtype=torch.int32),
           "prompt_feat": torch.zeros(1, 20, 80), "embedding": torch.ones(1, 192)}


@pytest.mark.parametrize("case", list(_mutations(_SHAPED)))
def test_bad_bundle_raises_input_error_naming_file_and_tensor(case, tmp_path, short_tensors):
    tensors, pattern = _mutations(short_tensors)[case]
    path = save_bundle(tmp_path / "bad.safetensors", tensors, validate=False)
    with pytest.raises(InputError, match=pattern) as info:
        load_bundle(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content,pattern", [
    (b"", r"not a readable safetensors file"),
    (b"not a safetensors file at all, just text", r"not a readable safetensors file"),
    (struct.pack("<Q", 16) + b'{"a": broken json', r"not a readable safetensors file"),
])
def test_corrupt_file_raises_input_error(content, pattern, tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match=pattern) as info:
        load_bundle(path)
    assert str(path) in str(info.value)


def test_truncated_bundle_raises_input_error(tmp_path):
    data = (BUNDLES / "medium.safetensors").read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[:-100])
    with pytest.raises(InputError, match="truncated.safetensors"):
        load_bundle(path)


def test_missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nope\.safetensors: bundle file not found"):
        load_bundle(tmp_path / "nope.safetensors")


def test_validate_bundle_in_memory_names_source(short_tensors):
    with pytest.raises(InputError, match=r"^dump\.pt: tensor 'token' is missing"):
        validate_bundle({k: v for k, v in short_tensors.items() if k != "token"}, source="dump.pt")
