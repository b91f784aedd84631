"""The ONNX Runtime backend through the harness (issue 17, phase 2): ``--onnx-estimator`` / ``--require-provider``
as switch overrides in dump, run, compare, bisect and the pytest plugin; the streaming chunk-mask check as a
finding (run_case, ``parity compare``); the required provider as a finding; ``meta["onnx"]`` in the report;
the parity suite's profile rule. Tiny preset; skipped with the reason when the [onnx] extra is missing."""

from __future__ import annotations

import json
import shutil

import pytest

from candidate.backends.ort import onnx_available

pytestmark = pytest.mark.skipif(onnx_available() is not None,
                                reason=f"the [onnx] extra is not installed: {onnx_available()}")

from parity.cli import main  # noqa: E402
from parity.onnx_options import OnnxOptions  # noqa: E402
from parity.result import read_json  # noqa: E402
from reference.errors import InputError  # noqa: E402
from reference.model import Token2Wav  # noqa: E402

from .conftest import FIXTURES, ROOT  # noqa: E402

pytest_plugins = ["pytester"]

MEDIUM = FIXTURES / "bundles" / "medium.safetensors"  # 130 frames: the chunk-mask check decides
SHORT = FIXTURES / "bundles" / "short.safetensors"  # 44 frames: one chunk, it cannot


@pytest.fixture(scope="module")
def tiny():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def user_file(tiny, tmp_path_factory):
    """The tiny model's estimator exported as upstream does, under the name users ship it with."""
    from candidate.backends.onnx_export import cached_export

    d = tmp_path_factory.mktemp("ckpt")
    out = d / "flow.decoder.estimator.fp32.onnx"
    shutil.copyfile(cached_export(tiny.flow.decoder.estimator).path, out)
    return out


def _one_line_error(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------------------- options

def test_options_become_switch_overrides(tiny, user_file, tmp_path):
    from parity.harness import Harness

    opts = OnnxOptions(str(user_file), "cpu")
    assert opts.overrides() == {"estimator_backend": "onnxruntime",
                                "estimator_options": (("file", str(user_file.resolve())), ("require_provider", "cpu"))}
    assert opts.profiles(None, ["fp32-sdpa"]) == ["onnx-cpu"] and opts.profiles(["onnx-fp16"], []) == ["onnx-fp16"]
    assert OnnxOptions(None, "cuda").profiles(None, ["fp32-sdpa"]) == ["fp32-sdpa"]
    with pytest.raises(InputError, match="missing.onnx: ONNX file not found"):
        OnnxOptions(str(tmp_path / "missing.onnx")).overrides()
    with pytest.raises(InputError, match="--require-provider 'gpu'"):
        OnnxOptions(None, "gpu").overrides()
    s = Harness()
    cand = s.candidate(tiny, "onnx-fused", overrides=opts.overrides())
    assert cand.profile_name == "onnx-fused+flow.decoder.estimator.fp32+require-cpu"
    assert cand.sw.option("fuse") and cand.sw.option("file") == str(user_file.resolve())  # merged with the profile's
    assert s.candidate(tiny, "onnx-fused", overrides=opts.overrides()) is cand  # cached with its overrides
    assert s.candidate(tiny, "onnx-fused") is not cand
    with pytest.raises(InputError, match="--require-provider needs an ONNX Runtime profile"):
        s.candidate(tiny, "fp32-sdpa", overrides=OnnxOptions(None, "cpu").overrides())


def test_suite_profiles_include_onnx_when_the_extra_is_installed():
    from parity.project import shipped_profiles, suite_profiles

    onnx = {"onnx-cpu", "onnx-cpu-basic", "onnx-cpu-mask", "onnx-fused", "onnx-fp16", "onnx-cuda", "onnx-tensorrt"}
    assert set(suite_profiles("cpu")) == set(shipped_profiles("cpu")) | onnx
    assert not onnx & set(shipped_profiles("cpu"))  # the plain list stays opt-in (benchmarks use it)


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_run_user_file_streaming_names_the_mask(user_file, tmp_path, capsys):
    """`parity run --onnx-estimator FILE --streaming`: exit 1, the mask finding as the headline at step1.v1, in
    the terminal, the JSON (with the check's numbers) and the report (with the ONNX provenance)."""
    j, rep = tmp_path / "r.json", tmp_path / "r.html"
    rc = main(["run", "--onnx-estimator", str(user_file), "--require-provider", "cpu", "--streaming",
               "--inputs", str(MEDIUM), "--json", str(j), "--report", str(rep), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "streaming_mask_ignored" in out and "--mask-input" in out
    res = read_json(j)
    fd = res.first_divergence
    assert (fd.stage, fd.code, fd.severity) == ("step1.v1", "streaming_mask_ignored", "failure")
    assert res.mask_check["ignores_mask"] and res.mask_check["err_vs_unmasked"] < 1e-5 < res.mask_check["mask_effect"]
    assert res.case["profile"] == "onnx-cpu+flow.decoder.estimator.fp32+require-cpu"
    assert "required_provider_missing" not in {f.code for f in res.findings}  # cpu was required and used
    onnx = res.metadata["cand"]["onnx"]
    assert onnx["source"] == "user file" and onnx["session"]["require_provider"] == "cpu"
    html = rep.read_text()
    for text in ("ONNX providers used", "CPUExecutionProvider", onnx["file"]["sha256"], "ORT_ENABLE_ALL",
                 "ONNX fused nodes", "no attention-mask input", "streaming_calls_without_mask_input",
                 "streaming chunk-mask check", "IGNORES the chunk mask"):
        assert text in html, text


def test_streaming_session_with_an_unmasked_file_names_the_mask_and_the_mask_input_export_passes(tiny, user_file,
                                                                                                tmp_path, capsys):
    """Issues 16 x 17: upstream's chunked session loop (`--session streaming`) on an exported estimator. The
    unmasked graph ignores the chunk mask in every call but the last: the mask finding is the headline at the
    first chunk's step1.v1; the `--mask-input` export of the same weights passes the same session."""
    from candidate.backends.onnx_export import ExportOptions, cached_export

    j = tmp_path / "r.json"
    rc = main(["run", "--session", "streaming", "--onnx-estimator", str(user_file), "--json", str(j),
               "--report", str(tmp_path / "r.html"), "--no-progress"])
    assert rc == 1, capsys.readouterr().out
    res = read_json(j)
    fd = res.first_divergence
    assert (fd.stage, fd.code) == ("chunk0.step1.v1", "streaming_mask_ignored")
    assert res.mask_check["ignores_mask"] and res.mask_check["prefix"] == "chunk0."
    assert res.session is not None
    masked = cached_export(tiny.flow.decoder.estimator, ExportOptions(mask_input=True)).path
    rc = main(["run", "--session", "streaming", "--onnx-estimator", str(masked), "--json", str(j),
               "--report", str(tmp_path / "r2.html"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = read_json(j)
    assert res.verdict == "pass" and "streaming_mask_ignored" not in {f.code for f in res.findings}
    assert [r["status"] for r in res.session["chunks"]] == ["pass"] * 4  # 38, 50, 100 tokens, final call


def test_cli_user_file_errors_exit_2_with_one_line(user_file, tmp_path, capsys):
    import onnx

    m = onnx.load(str(user_file))
    for i in m.graph.input:
        if i.name in ("x", "spks"):
            new = {"x": "latent", "spks": "speaker"}[i.name]
            for n in m.graph.node:
                n.input[:] = [new if v == i.name else v for v in n.input]
            i.name = new
    bad = tmp_path / "renamed.onnx"
    onnx.save(m, str(bad))
    assert main(["run", "--onnx-estimator", str(bad), "--inputs", str(SHORT), "--no-progress",
                 "--report", str(tmp_path / "r.html")]) == 2
    line = _one_line_error(capsys)
    assert str(bad) in line and "missing input(s) x, spks" in line and "unexpected input(s) latent, speaker" in line
    assert not (tmp_path / "r.html").exists()
    assert main(["run", "--onnx-estimator", str(tmp_path / "nope.onnx"), "--inputs", str(SHORT)]) == 2
    assert "nope.onnx: ONNX file not found" in _one_line_error(capsys)
    assert main(["run", "--profile", "fp32-sdpa", "--require-provider", "cuda", "--inputs", str(SHORT)]) == 2
    assert "needs an ONNX Runtime profile" in _one_line_error(capsys)


def test_dump_with_a_missing_required_provider_then_compare(tmp_path, capsys):
    """The session falls back to the CPU: the dump is written and exits 1 naming both providers; a later
    `parity compare` reports the same requirement from the trace (required_provider_missing, exit 1)."""
    ref, cand = tmp_path / "ref.safetensors", tmp_path / "cand.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(ref)]) == 0
    rc = main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(cand), "--profile", "onnx-cpu",
               "--require-provider", "cuda"])
    err = capsys.readouterr().err
    assert rc == 1 and cand.exists()
    assert "required ONNX Runtime provider CUDAExecutionProvider" in err and "CPUExecutionProvider" in err
    j = tmp_path / "c.json"
    assert main(["compare", str(ref), str(cand), "--json", str(j)]) == 1
    res = read_json(j)
    assert res.first_divergence.code == "required_provider_missing"
    assert all(s.status != "fail" for s in res.stages)  # the numbers themselves pass: only the provider fails


def test_compare_runs_the_mask_check_from_the_reference_provenance(user_file, tmp_path):
    from parity.trace import read_trace, write_trace

    ref, cand = tmp_path / "ref.safetensors", tmp_path / "cand.safetensors"
    common = ["--preset", "tiny", "--inputs", str(MEDIUM), "--streaming"]
    assert main(["dump", *common, "--out", str(ref)]) == 0
    assert main(["dump", *common, "--out", str(cand), "--onnx-estimator", str(user_file)]) == 0
    j = tmp_path / "c.json"
    assert main(["compare", str(ref), str(cand), "--json", str(j)]) == 1
    res = read_json(j)
    assert (res.first_divergence.stage, res.first_divergence.code) == ("step1.v1", "streaming_mask_ignored")
    assert res.mask_check["checked"] and res.mask_check["ignores_mask"]
    # parity-report on the same two traces compares the same way
    from parity.cli import report_main

    assert report_main([str(ref), str(cand), "-o", str(tmp_path / "r.html")]) == 1
    assert "IGNORES the chunk mask" in (tmp_path / "r.html").read_text()
    # without the check the failure is still found, but only its symptom
    assert main(["compare", str(ref), str(cand), "--json", str(j), "--no-mask-check"]) == 1
    res = read_json(j)
    assert res.first_divergence.code == "estimator_mismatch" and res.mask_check is None
    # a reference trace naming a model this harness cannot load: the check says it was not run
    tr = read_trace(ref)
    alien = tmp_path / "alien.safetensors"
    write_trace(alien, tr.tensors, dict(tr.metadata, model="port:my-rust-build"))
    assert main(["compare", str(alien), str(cand), "--json", str(j)]) == 1
    res = read_json(j)
    assert res.mask_check == {"checked": False, "reason": res.mask_check["reason"]}
    (info,) = [f for f in res.findings if f.code == "streaming_mask_unchecked"]
    assert info.severity == "info" and "port:my-rust-build" in info.message


# ---------------------------------------------------------------------------------------------- bisect

def test_bisect_options_reach_the_searches(user_file, tmp_path, capsys):
    from parity.bisect.cli import _start
    from parity.cli import build_parser

    args = build_parser().parse_args(["bisect", "switches", "--onnx-estimator", str(user_file),
                                      "--require-provider", "cpu"])
    assert _start(args) == ("onnx-cpu", OnnxOptions(str(user_file), "cpu").overrides())
    assert main(["bisect", "git", "--good", "HEAD~1", "--bad", "HEAD", "--cmd", "true", "--onnx-estimator",
                 str(user_file), "--repo", str(ROOT)]) == 2
    assert "in-process mode" in _one_line_error(capsys)


def test_bisect_switches_finds_the_onnx_backend_in_streaming(user_file, tmp_path, capsys):
    """ddmin over the user file's switches (estimator_backend, its option estimator.file, which travels with the
    backend): the backend alone already fails, with the mask finding as every failing trial's headline."""
    j = tmp_path / "b.json"
    rc = main(["bisect", "switches", "--onnx-estimator", str(user_file), "--streaming", "--bundle", str(MEDIUM),
               "--workdir", str(tmp_path / "wd"), "--json", str(j)])
    assert rc == 0, capsys.readouterr().out
    r = json.loads(j.read_text())
    assert r["status"] == "found" and r["culprit"] == ["estimator_backend=onnxruntime"]
    assert r["headline"]["code"] == "streaming_mask_ignored" and r["headline"]["stage"] == "step1.v1"


# ---------------------------------------------------------------------------------------------- plugin

SUITE_TEST = """
from parity.judge.mask import expected_outcome


def test_case(parity_case, assert_parity):
    assert_parity(parity_case, **expected_outcome(parity_case))
"""


def test_plugin_options_expected_mask_failure_and_provider_skips(pytester, user_file):
    """--parity-onnx-estimator / --parity-require-provider reach the suite's candidates; the unmasked file in
    streaming mode on the 130-frame bundle is asserted as the diagnosed failure (and passes as a test), on the
    44-frame bundle as a pass; onnx-cuda is skipped with the reason from profile_unavailable."""
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\naddopts = \"--strict-markers\"\n")
    pytester.makepyfile(test_suite=SUITE_TEST)
    report = pytester.path / "reports" / "s.html"
    r = pytester.runpytest_subprocess(f"--parity-onnx-estimator={user_file}", "--parity-require-provider=cpu",
                                      "--parity-profile=onnx-cpu", "--parity-profile=onnx-cuda",
                                      f"--parity-bundle={MEDIUM}", f"--parity-bundle={SHORT}",
                                      f"--parity-report={report}", "-p", "no:cacheprovider", "-rs", "-v")
    r.assert_outcomes(passed=4, skipped=4)
    out = r.stdout.str()
    assert "test_case[medium-onnx-cpu-streaming] PASSED" in out
    assert "CUDAExecutionProvider is not available" in out and "profile onnx-cuda" in out
    page = report.read_text()
    assert "1 failed as expected" in page and "expected: fail: step1.v1 [streaming_mask_ignored]" in page
    case_page = report.with_suffix("") / "medium-onnx-cpu+flow.decoder.estimator.fp32+require-cpu-streaming.html"
    assert case_page.exists()  # the report of the (expected) failure is written like any other


def test_plugin_rejects_a_missing_onnx_file(pytester, tmp_path):
    pytester.makepyfile(test_suite=SUITE_TEST)
    r = pytester.runpytest_subprocess(f"--parity-onnx-estimator={tmp_path / 'none.onnx'}", "-p", "no:cacheprovider")
    assert r.ret == 4  # usage error
    assert "none.onnx: ONNX file not found" in r.stderr.str()
