"""parity dump / noise export / export-model / profiles / faults, end to end on the tiny preset."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from scipy.io import wavfile

from parity.cli import main
from parity.stages import canonical_expected
from parity.trace import read_trace
from reference.model import Token2Wav

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
CANONICAL = canonical_expected(10)


def test_dump_writes_every_canonical_stage(tmp_path, capsys):
    out = tmp_path / "ref.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out), "--wav",
                 str(tmp_path / "ref.wav")]) == 0
    tr = read_trace(out)
    missing = [n for n in CANONICAL if n not in tr.tensors]
    assert not missing, missing
    for name, t in tr.tensors.items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name
    assert tr["audio"].abs().max() <= 0.99
    assert tr["audio"].shape == (1, 12 * 2 * 480)  # 12 target tokens -> 24 mel frames -> 480 samples each
    meta = tr.metadata
    for key in ("model", "weights_sha256", "noise", "n_timesteps", "t_scheduler", "cfg_rate", "dtypes", "device",
                "attention", "streaming", "env", "status"):
        assert key in meta, key
    assert meta["n_timesteps"] == 10 and meta["t_scheduler"] == "cosine" and meta["cfg_rate"] == 0.7
    assert meta["status"] == "complete" and meta["env"]["torch"] == torch.__version__
    sr, wav = wavfile.read(tmp_path / "ref.wav")
    assert sr == 24000 and wav.dtype.name == "int16" and wav.shape[0] == tr["audio"].shape[1]


def test_two_dumps_bit_identical(tmp_path):
    paths = [tmp_path / f"r{i}.safetensors" for i in range(2)]
    for p in paths:
        assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(p), "--streaming"]) == 0
    a, b = (read_trace(p) for p in paths)
    assert list(a.tensors) == list(b.tensors)
    for k in a.tensors:
        assert torch.equal(a[k], b[k]), k


def test_dump_stage_patterns(tmp_path):
    out = tmp_path / "t.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out),
                 "--stages", "+step*.block*,+hift.*"]) == 0
    names = read_trace(out).names
    assert "step3.block1" in names and "hift.fusion2" in names and "audio" in names
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out), "--stages", "f0,audio"]) == 0
    assert read_trace(out).names == ["f0", "audio"]


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_model_dir_loads_and_matches_preset(tmp_path, fmt):
    d = tmp_path / "model"
    assert main(["export-model", "--preset", "tiny", "--out", str(d), "--format", fmt]) == 0
    assert (d / "cosyvoice3.yaml").exists() and (d / f"flow.{fmt}").exists() and (d / f"hift.{fmt}").exists()
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(a)]) == 0
    assert main(["dump", "--model-dir", str(d), "--inputs", str(SHORT), "--out", str(b)]) == 0
    ta, tb = read_trace(a), read_trace(b)
    assert torch.equal(ta["audio"], tb["audio"]) and torch.equal(ta["flow_mel"], tb["flow_mel"])
    assert ta.metadata["weights_sha256"] == tb.metadata["weights_sha256"]
    hift_keys = torch.load(d / "hift.pt", weights_only=True) if fmt == "pt" else None
    if hift_keys is not None:
        assert "conv_pre.parametrizations.weight.original0" in hift_keys


def test_noise_export_roundtrip(tmp_path):
    out = tmp_path / "noise.safetensors"
    assert main(["noise", "export", "--preset", "tiny", "--out", str(out), "--frames", "500",
                 "--samples", "48000"]) == 0
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(a)]) == 0
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(b), "--noise", str(out)]) == 0
    assert torch.equal(read_trace(a)["audio"], read_trace(b)["audio"])
    assert read_trace(a).metadata["noise"]["fingerprint"] == read_trace(b).metadata["noise"]["fingerprint"]


def _bad_bundle(tmp_path, **change):
    from reference.bundle import load_bundle

    t = load_bundle(SHORT)
    t.update(change)
    p = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in t.items() if v is not None}, str(p))
    return p


@pytest.mark.parametrize("case,needle", [
    ("missing-file", "not found"),
    ("not-safetensors", "bad.safetensors"),
    ("channel-major", "prompt_feat"),
    ("float-tokens", "token"),
    ("unknown-preset", "unknown preset"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, case, needle):
    inputs = str(tmp_path / "nope.safetensors")
    preset = "tiny"
    if case == "not-safetensors":
        p = tmp_path / "bad.safetensors"
        p.write_bytes(b"this is not a safetensors file")
        inputs = str(p)
    elif case == "channel-major":
        from reference.bundle import load_bundle

        inputs = str(_bad_bundle(tmp_path, prompt_feat=load_bundle(SHORT)["prompt_feat"].transpose(1, 2).contiguous()))
    elif case == "float-tokens":
        from reference.bundle import load_bundle

        inputs = str(_bad_bundle(tmp_path, token=load_bundle(SHORT)["token"].float()))
    elif case == "unknown-preset":
        inputs, preset = str(SHORT), "huge"
    rc = main(["dump", "--preset", preset, "--inputs", inputs, "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "parity.cli", "dump", "--preset", "tiny", "--inputs",
                        str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing.safetensors" in r.stderr


def test_profiles_and_faults_listed(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for p in ("fp32-sdpa", "bf16-flow", "fp16-flow", "fp16-all", "compiled", "int8-dynamic"):
        assert p in out
    assert main(["faults"]) == 0
    out = capsys.readouterr().out
    assert "uncond-keeps-cond" in out and "-> step1.v2" in out and "shape-crash" in out


def test_candidate_dump_and_crash_leaves_partial_trace(tmp_path, capsys):
    out = tmp_path / "crash.safetensors"
    rc = main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(out), "--profile", "fp32-explicit",
               "--fault", "shape-crash"])
    assert rc == 1
    assert "crashed at source" in capsys.readouterr().err
    tr = read_trace(out)
    assert tr.metadata["status"] == "crashed"
    assert tr.metadata["error"]["stage"] == "source" and tr.metadata["error"]["last_recorded"] == "f0"
    assert "flow_mel" in tr.names and "f0" in tr.names and "source" not in tr.names


def test_journal_survives_a_killed_process(tmp_path):
    """A run killed hard (no finally) leaves a journal that read_trace recovers."""
    out = tmp_path / "killed.safetensors"
    code = (f"import os, sys; sys.path.insert(0, {str(FIXTURES.parent)!r});"
            "from parity.trace import TraceWriter; import torch;"
            f"w = TraceWriter({str(out)!r}, {{'model': 'x'}}); w.add('mu', torch.ones(1, 80, 4));"
            "w.add('spks', torch.zeros(1, 80)); os._exit(9)")
    r = subprocess.run([sys.executable, "-c", code])
    assert r.returncode == 9 and not out.exists()
    tr = read_trace(out)
    assert tr.status == "incomplete" and tr.names == ["mu", "spks"] and tr.metadata["model"] == "x"


def test_model_object_reruns_are_identical():
    from reference.bundle import load_bundle

    m = Token2Wav.from_preset("tiny")
    inp = load_bundle(SHORT)
    assert torch.equal(m.run(inp), m.run(inp))


def test_run_json_keeps_per_frame_vectors_in_a_sidecar(tmp_path):
    import json

    from parity.result import read_json, read_matrix_json, sidecar_path

    out = tmp_path / "r.json"
    args = ["run", "--inputs", str(SHORT), "--no-local", "--no-progress", "--report", str(tmp_path / "r.html")]
    assert main(args + ["--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["vectors"]["sidecar"] == "r.vectors.npz" and sidecar_path(out).exists()
    assert not any("per_frame_error" in s for s in d["stages"]) and "per_frame" not in d["audio"]
    back = read_json(out)
    assert back.stage("flow_mel").per_frame_error and back.audio["per_frame"]["lsd_db"]
    inline = tmp_path / "inline.json"
    assert main(args + ["--json", str(inline), "--inline-vectors", "--profile", "fp32-sdpa",
                        "--profile", "fp32-sdpa-math"]) == 0
    d2 = json.loads(inline.read_text())
    assert d2["schema"] == "tts-parity-matrix/1" and "vectors" not in d2 and not sidecar_path(inline).exists()
    flow_mel = next(s for s in d2["cases"][0]["stages"] if s["name"] == "flow_mel")
    assert flow_mel["per_frame_error"] == back.stage("flow_mel").per_frame_error  # same numbers either way
    assert len(read_matrix_json(inline)) == 2
