"""The comparison engine on real traces: self-comparison, the fork's dialect, bad inputs, diagnosis codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from parity.cli import main
from parity.harness import compare_paths
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.ingest import Loaded, load
from parity.judge.policy import load_policy
from parity.capture.runner import run_pipeline
from parity.trace import read_trace, write_trace
from reference.bundle import load_bundle
from reference.model import Token2Wav

from .conftest import FIXTURES

MEDIUM = FIXTURES / "bundles" / "medium.safetensors"


@pytest.fixture(scope="module")
def ref_trace(tmp_path_factory):
    model = Token2Wav.from_preset("tiny")
    path = tmp_path_factory.mktemp("traces") / "ref.safetensors"
    run_pipeline(model, load_bundle(MEDIUM), path)
    return path


def _loaded(path):
    return load(path)


def test_reference_vs_itself_passes_with_zero_error(ref_trace):
    r = compare_paths(ref_trace, ref_trace)
    assert r.verdict == "pass" and r.first_divergence is None
    for s in r.stages:
        assert s.status == "pass", s.name
        assert s.metrics["max_abs_err"] == 0.0, s.name
    assert r.exit_code == 0
    json.dumps(r.to_json(), allow_nan=False)  # JSON-safe as produced


def fork_dialect(tr, tmp_path, fmt="safetensors"):
    """A dump as the fork writes it: step{i}_v1 names, [B,T,C] mels, [1,1,T] f0 and audio, prompt-inclusive
    flow output, python_* names, some stages missing."""
    t = tr.tensors
    out = {
        "mu": t["mu"].transpose(1, 2).contiguous(),  # [1, T, 80]
        "x_init": t["x0"],
        "flow_output": torch.cat([t["step10.x"][:, :, : t["prompt_feat"].shape[1]], t["flow_mel"]], 2).transpose(1, 2)
        .contiguous(),  # prompt-inclusive and time-major
        "python_f0": t["f0"][:, None],  # [1, 1, T]
        "python_hift_source": t["source"],
        "final_audio": t["audio"][:, None],  # [1, 1, N]
        "pre_clamp_audio": t["audio_preclamp"],
        "python_mel_24k": t["prompt_feat"].transpose(1, 2).contiguous(),  # [1, 80, 2P]
        "speaker_embedding": t["embedding"],
    }
    for k in range(1, 11):
        for f in ("v1", "v2", "v_cfg", "x"):
            out[f"step{k}_{f}"] = t[f"step{k}.{f}"]
        out[f"step{k}_dt"] = t[f"step{k}.dt"]
    if fmt == "safetensors":
        p = tmp_path / "rust_dump.safetensors"
        save_file(out, str(p))
    elif fmt == "npz":
        p = tmp_path / "rust_dump.npz"
        np.savez(p, **{k: v.numpy() for k, v in out.items()})
    else:
        p = tmp_path / "npydir"
        p.mkdir()
        for k, v in out.items():
            np.save(p / f"{k}.npy", v.numpy())
        (p / "metadata.json").write_text(json.dumps({"steps": 10, "scheduler": "cosine", "cfg": 0.7}))
    return p


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "npydir"])
def test_fork_dialect_compares_and_lists_normalisations(ref_trace, tmp_path, fmt):
    tr = read_trace(ref_trace)
    p = fork_dialect(tr, tmp_path, fmt)
    r = compare_paths(ref_trace, p)
    assert r.verdict == "pass", r.first_divergence
    kinds = {(n["stage"], n["kind"]) for n in r.normalisations}
    assert ("flow_mel", "rename") in kinds and ("flow_mel", "prompt-slice") in kinds
    assert ("flow_mel", "transpose") in kinds and ("mu", "transpose") in kinds
    assert ("f0", "squeeze") in kinds and ("audio", "squeeze") in kinds
    assert ("step3.v1", "rename") in kinds and ("prompt_feat", "transpose") in kinds
    assert ("x0", "rename") in kinds and ("embedding", "rename") in kinds
    compared = {s.name for s in r.stages if s.status == "pass"}
    assert {"mu", "x0", "step1.v1", "step10.x", "flow_mel", "f0", "source", "audio"} <= compared
    missing = {s.name for s in r.stages if s.status == "missing"}
    assert "spks" in missing and "s_stft" in missing
    assert any(f.code == "stage_missing" for f in r.findings)
    if fmt == "npydir":  # metadata keys aliased and judged by meaning
        assert not any(f.code == "schedule_mismatch" for f in r.findings)


def test_dialect_metadata_mismatch_is_a_failure(ref_trace, tmp_path):
    p = fork_dialect(read_trace(ref_trace), tmp_path, "npydir")
    (p / "metadata.json").write_text(json.dumps({"steps": 1, "scheduler": "linear"}))
    r = compare_paths(ref_trace, p)
    assert r.verdict == "fail"
    assert r.first_divergence.code == "schedule_mismatch"
    assert "n_timesteps" in r.first_divergence.message


def test_length_mismatch_is_a_finding_never_a_truncation(ref_trace, tmp_path):
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    t["audio"] = t["audio"][:, :-240]
    p = write_trace(tmp_path / "short.safetensors", t, tr.metadata)
    r = compare_paths(ref_trace, p)
    assert r.verdict == "fail" and r.first_divergence.code == "length_mismatch"
    assert r.first_divergence.stage == "audio"
    r2 = compare_paths(ref_trace, p, ComparisonSpec(allow_trim=True))
    assert r2.verdict == "pass"
    assert any(n["kind"] == "trim" for n in r2.normalisations)


def test_nan_in_reference_is_an_error_not_a_pass(ref_trace, tmp_path):
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    t["mu"] = t["mu"].clone()
    t["mu"][0, 3, 5] = float("nan")
    p = write_trace(tmp_path / "nanref.safetensors", t, tr.metadata)
    r = compare_paths(p, p)  # even identical NaN never compares equal
    assert r.verdict == "error"
    assert r.first_divergence.code == "reference_nonfinite" and r.first_divergence.stage == "mu"
    assert r.exit_code == 2


def test_nan_in_candidate_fails_at_its_origin(ref_trace, tmp_path):
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    for k in ("step4.v2", "step4.v_cfg", "step4.x"):
        t[k] = t[k].clone()
        t[k][0, 0, 7] = float("nan")
    p = write_trace(tmp_path / "nancand.safetensors", t, tr.metadata)
    r = compare_paths(ref_trace, p)
    assert r.first_divergence.stage == "step4.v2" and r.first_divergence.code == "nonfinite_origin"


def test_corrupt_and_missing_files_are_clear_errors(ref_trace, tmp_path, capsys):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["compare", str(ref_trace), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.safetensors" in err and "Traceback" not in err
    assert main(["compare", str(ref_trace), str(tmp_path / "absent.npz")]) == 2
    assert "absent.npz" in capsys.readouterr().err


def test_no_common_stage_is_an_error(ref_trace, tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, completely_unknown=np.zeros(3, dtype=np.float32))
    r = compare_paths(ref_trace, p)
    assert r.verdict == "error" and r.first_divergence.code == "nothing_to_compare"


def test_map_option_and_shape_mismatch(ref_trace, tmp_path, capsys):
    tr = read_trace(ref_trace)
    p = tmp_path / "mapped.npz"
    np.savez(p, my_mel=tr["flow_mel"].numpy(), weird=np.zeros((3, 7), dtype=np.float32))
    r = compare_paths(ref_trace, p, maps={"my_mel": "flow_mel", "weird": "f0"})
    assert {s.name: s.status for s in r.stages}["flow_mel"] == "pass"
    f0 = next(s for s in r.stages if s.name == "f0")
    assert f0.status == "fail" and f0.problem["code"] == "shape_mismatch"


def test_required_stage_missing_fails(ref_trace, tmp_path):
    pol = tmp_path / "pol.toml"
    pol.write_text('[[rule]]\nstage = "s_stft"\nstatistic = "elementwise"\natol = 1e-3\nrequired = true\n')
    tr = read_trace(ref_trace)
    t = {k: v for k, v in tr.tensors.items() if k != "s_stft"}
    p = write_trace(tmp_path / "nostft.safetensors", t, tr.metadata)
    r = compare_paths(ref_trace, p, ComparisonSpec(policy=load_policy(pol)))
    assert r.verdict == "fail"
    assert any(f.code == "stage_missing_required" for f in r.findings)
    r2 = compare_paths(ref_trace, p)
    assert r2.verdict == "pass"  # absent but not required: reported only


def test_compare_cli_json_schema(ref_trace, tmp_path, capsys):
    out = tmp_path / "r.json"
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    t["step1.v2"] = t["step1.v2"] + 0.5
    p = write_trace(tmp_path / "cand.safetensors", t, tr.metadata)
    assert main(["compare", str(ref_trace), str(p), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert ">>step1.v2" in text.replace(" ", "") or "step1.v2" in text
    r = json.loads(out.read_text())
    for key in ("verdict", "first_divergence", "findings", "stages", "normalisations"):
        assert key in r
    assert r["verdict"] == "fail"
    assert r["first_divergence"] == {"stage": "step1.v2", "code": "uncond_branch_mismatch",
                                     "message": r["first_divergence"]["message"]}
    f = r["findings"][0]
    assert {"code", "stage", "severity", "message", "evidence"} <= set(f)
    s = next(s for s in r["stages"] if s["name"] == "step1.v2")
    assert {"name", "status", "statistic", "value", "limit", "metrics"} <= set(s)


def test_metadata_mismatch_weights_and_info(ref_trace, tmp_path):
    tr = read_trace(ref_trace)
    meta = dict(tr.metadata, weights_sha256="deadbeef", attention="sdpa", device="cuda:0")
    p = write_trace(tmp_path / "w.safetensors", tr.tensors, meta)
    r = compare_paths(ref_trace, p)
    codes = {f.code: f.severity for f in r.findings}
    assert codes["weights_mismatch"] == "failure"
    assert codes["attention_differs"] == "info" and codes["device_differs"] == "info"


def test_step_local_errors_and_amplification():
    """A candidate whose v1 error is small per step but grows through the ODE: the local (teacher-forced)
    comparison separates per-step error from drift."""
    from candidate.pipeline import CandidateToken2Wav
    from candidate.switches import switches_from
    from parity.harness import run_case

    model = Token2Wav.from_preset("tiny")
    cand = CandidateToken2Wav(model, switches_from("fp16-flow"), "fp16-flow")
    case = run_case(model, cand, MEDIUM)
    steps = case.result.steps
    assert len(steps) == 10
    assert all(r.local["x"] is not None and r.acc["x"] is not None for r in steps)
    assert steps[-1].acc["x"] > steps[-1].local["x"]  # accumulated error exceeds the last step's own
    assert all(r.cfg_gap_ref is not None and r.cfg_gap_cand is not None for r in steps)
    assert any(r.growth is not None for r in steps)
    local_names = {s.name for s in case.result.local}
    assert {"step1.v1", "step10.x", "f0", "audio"} <= local_names


def test_policy_rule_precedence(tmp_path):
    pol = load_policy(use_default=True)
    assert pol.rule_for("step3.v1", "fp32", "sdpa").statistic == "elementwise"
    assert pol.rule_for("step3.v1", "fp16", "sdpa").statistic == "rel_l2"
    assert pol.rule_for("audio", "bf16", "sdpa").statistic == "logmel_l1"
    assert pol.rule_for("local:audio", "fp32", "sdpa").stage == "local:audio*"
    assert pol.rule_for("token", "fp16", "x").statistic == "exact"
    extra = tmp_path / "p.toml"
    extra.write_text('[[rule]]\nstage = "step*.v1"\nstatistic = "max_abs"\nlimit = 0.5\n')
    pol2 = load_policy(extra)
    assert pol2.rule_for("step3.v1", "fp32", "sdpa").statistic == "max_abs"  # later rule wins the tie
    assert pol2.rule_for("step3.v2", "fp32", "sdpa").statistic == "elementwise"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nstage = "x"\nstatistic = "bogus"\n')
    from reference.errors import InputError

    with pytest.raises(InputError, match="bogus"):
        load_policy(bad)


def test_in_memory_compare_with_reduced_precision_context(ref_trace):
    tr = read_trace(ref_trace)
    ref = Loaded(dict(tr.tensors), dict(tr.metadata), "ref")
    inputs = ("token", "prompt_token", "prompt_feat", "embedding")  # inputs must stay bit-identical
    t = {k: (v.half().float() if v.is_floating_point() and k not in inputs else v) for k, v in tr.tensors.items()}
    cand = Loaded(t, dict(tr.metadata, precision="fp16"), "cand")
    r = compare_loaded(ref, cand, ComparisonSpec(policy=load_policy()))
    assert r.context["precision"] == "fp16"
    assert r.verdict == "pass", r.first_divergence


def test_calibrate_writes_loadable_rules(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    assert main(["calibrate", "--preset", "tiny", "--inputs", str(FIXTURES / "bundles" / "short.safetensors"),
                 "--out", str(out)]) == 0
    pol = load_policy(out)
    r = pol.rule_for("step4.v1", "fp32", "sdpa")
    assert r.source.startswith(str(out)) and r.statistic == "elementwise" and r.arbiter["k"] == 10.0
    assert 1e-6 < r.atol < 1e-2  # 10 x the measured fp32-vs-fp64 floor + 1e-6
    assert pol.rule_for("x0", "fp32", "sdpa").statistic == "exact"


def test_fp64_arbiter_rule(ref_trace, tmp_path):
    """A candidate is judged against float64: err(cand, fp64) <= k * err(fp32 ref, fp64) + floor."""
    model = Token2Wav.from_preset("tiny").to_float64()
    p64 = tmp_path / "ref64.safetensors"
    run_pipeline(model, load_bundle(MEDIUM), p64)
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    t["step5.v1"] = t["step5.v1"] * (1 + 3e-6)  # fp32-rounding-sized: passes the arbiter
    p = write_trace(tmp_path / "c.safetensors", t, tr.metadata)
    r = compare_paths(ref_trace, p, fp64_path=p64)
    s = next(s for s in r.stages if s.name == "step5.v1")
    assert s.statistic == "arbiter:rmse" and s.status == "pass"
    t["step5.v1"] = tr["step5.v1"] + 1e-3  # far above the fp32 noise floor: fails the arbiter
    p = write_trace(tmp_path / "c2.safetensors", t, tr.metadata)
    r = compare_paths(ref_trace, p, fp64_path=p64)
    s = next(s for s in r.stages if s.name == "step5.v1")
    assert s.status == "fail" and s.value > s.limit


def test_flow_mel_failing_only_on_its_own_limit_is_explained(ref_trace, tmp_path):
    """The mel is the last ODE state without the prompt frames: when the same error passes step10.x's limit
    but not flow_mel's, the finding says so instead of suggesting a prompt-slicing bug."""
    tr = read_trace(ref_trace)
    t = dict(tr.tensors)
    n = t["flow_mel"].shape[2]
    g = torch.Generator().manual_seed(0)
    d = torch.randn(t["flow_mel"].shape, generator=g)
    d *= 0.02 * t["flow_mel"].norm() / d.norm()
    x = t["step10.x"].clone()
    x[:, :, -n:] += d
    t["step10.x"], t["flow_mel"] = x, t["flow_mel"] + d
    pol = tmp_path / "p.toml"
    pol.write_text('[[rule]]\nstage = "step*.x"\nprecision = ["int8"]\nstatistic = "rel_l2"\nlimit = 0.5\n'
                   '[[rule]]\nstage = "flow_mel"\nprecision = ["int8"]\nstatistic = "rel_l2"\nlimit = 0.01\n')
    r = compare_loaded(Loaded(dict(tr.tensors), dict(tr.metadata), "ref"),
                       Loaded(t, dict(tr.metadata, precision="int8"), "cand"), ComparisonSpec(policy=load_policy(pol)))
    assert r.verdict == "fail"
    fd = r.first_divergence
    assert fd.stage == "flow_mel" and fd.code == "flow_mel_mismatch"
    head = next(f for f in r.findings if f.code == "flow_mel_mismatch")
    assert "carries the last ODE state's error" in head.message and "prompt slicing" not in head.message


def test_a_dump_of_one_call_with_chunk_scoped_names_reads_as_the_single_call(ref_trace, tmp_path):
    """A single call is a session of one call: a port's dump of one call written with chunk-scoped names
    (``chunk_0_mel``, ``chunk0.step10.x``, its control values) reads as the single call (N = 1), every renaming
    listed; a streaming session's trace keeps its names."""
    tr = read_trace(ref_trace)
    names = {"mu": "chunk0.mu", "step10.x": "chunk_0_step10_x", "flow_mel": "chunk_0_mel", "audio": "chunk0_audio",
             "f0": "chunk0.f0"}
    dump = {v: tr.tensors[k] for k, v in names.items()}
    dump["chunk0.token_offset"] = torch.zeros(1, dtype=torch.int64)
    p = tmp_path / "one_call.safetensors"
    save_file({k: v.contiguous() for k, v in dump.items()}, str(p))
    cand = load(p)
    assert set(cand.tensors) == set(names), sorted(cand.tensors)
    kinds = {n["stage"]: n["kind"] for n in cand.normalisations}
    assert kinds["flow_mel"] == "one-call" and kinds["chunk0.token_offset"] == "one-call"
    r = compare_paths(ref_trace, p)
    assert r.verdict == "pass" and r.session is None, r.headline_text()
    assert {s.name for s in r.stages if s.status == "pass"} == set(names)
    session = load(FIXTURES / "golden" / "stream-streaming-session.safetensors")
    assert any(n.startswith("chunk1.") for n in session.tensors)  # many calls: never aliased
