"""The HTML report: content, sections, embedded media, escaping, size, and ``parity-report``.

Cases come from the tiny preset on the short bundle (the reference run is computed once per module).
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
SIZE_BOUND = 2 * 1024 * 1024  # a tiny-preset report stays well under this
FAULTS = ["istft-gain", "uncond-keeps-cond", "nan-at-block", "noise-unshared"]
HOSTILE = "<script>alert(1)</script>"


# ---------------------------------------------------------------------------------------------
# helpers: read a report back

def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{re.escape(sid)}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def images(html: str) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        raw = base64.b64decode(b64, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(mpimg.imread(io.BytesIO(raw), format="png"))
    return out


def wavs(html: str) -> list[tuple[int, np.ndarray]]:
    from scipy.io import wavfile

    out = []
    for b64 in re.findall(r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', html):
        sr, data = wavfile.read(io.BytesIO(base64.b64decode(b64, validate=True)))
        out.append((sr, data))
    return out


def footer_size(html: str) -> int:
    m = re.search(r'id="report-size">[^<]*\(([\d,]+) bytes\)', html)
    assert m, "footer size missing"
    return int(m.group(1).replace(",", ""))


def read(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def check_common(path: Path) -> str:
    from parity.present.report import SECTION_IDS

    html = read(path)
    assert section_ids(html) == list(SECTION_IDS)  # every section, in order
    assert footer_size(html) == path.stat().st_size
    assert path.stat().st_size < SIZE_BOUND
    # self-contained: nothing fetched from the network
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link rel=\"stylesheet\"" not in html
    assert html.count("<script") == 1  # the one inline script of the template
    return html


# ---------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def model():
    from reference.model import Token2Wav

    return Token2Wav.load("tiny", None, None)


@pytest.fixture(scope="module")
def cases(model, tmp_path_factory):
    """Cases by fault name ("" = passing profile); traces kept for the parity-report tests."""
    from candidate.pipeline import CandidateToken2Wav
    from candidate.switches import switches_from
    from parity.harness import ReferenceCache, run_case

    trace_dir = tmp_path_factory.mktemp("traces")
    refs = ReferenceCache()
    made: dict = {}

    def get(fault: str = ""):
        if fault not in made:
            faults = (fault,) if fault else ()
            name = fault or "fp32-sdpa"
            cand = CandidateToken2Wav(model, switches_from("fp32-sdpa", faults), name)
            # step-local errors only for the passing case (the per-step chart's local curves); faults skip them
            made[fault] = run_case(model, cand, SHORT, profile_name=name, refs=refs, trace_dir=trace_dir,
                                   local=not fault)
        return made[fault]

    return get


@pytest.fixture(scope="module")
def built(cases, tmp_path_factory):
    """The report of each case, built once per module."""
    from parity.present.report import build_report

    out_dir = tmp_path_factory.mktemp("reports")
    done: dict = {}

    def get(fault: str = "") -> Path:
        if fault not in done:
            case = cases(fault)
            case.report = build_report(case.result, out_dir / f"{case.name}.html", case=case)
            done[fault] = case.report
        return done[fault]

    return get


# ---------------------------------------------------------------------------------------------
# single reports

def test_passing_report(cases, built):
    case = cases("")
    assert case.verdict == "pass"
    html = check_common(built(""))
    banner = section(html, "verdict")
    assert ">PASS<" in banner and "no divergence" in banner
    imgs = images(html)
    assert len(imgs) == 4  # steps, mel, F0, waveforms
    for im in imgs:
        assert im.shape[1] == 800 and im.shape[0] > 200
    w = wavs(html)
    assert len(w) == 3  # reference, candidate, difference
    n = case.ref_tensors["audio"].numel()
    for sr, data in w:
        assert sr == 24000 and data.dtype == np.int16 and data.shape == (n,)
    assert "No sample needed sanitising" in section(html, "listen")
    assert "No stage holds NaN or Inf" in section(html, "nonfinite")
    # the stage table: every stage, passing ODE steps collapsed behind a group row
    st = section(html, "stages")
    for s in case.result.stages:
        assert f'data-stage="{s.name}"' in st
    assert 'class="group" data-target="step-1"' in st and 'class="collapsed" id="step-1"' in st
    # the audio metrics come from the result, as the result formats them
    am = section(html, "audio-metrics")
    assert "snr_db" in am and "lsd_db_mean" in am and "mcd_db" in am
    # provenance: both sides, attention kernels that ran, differing rows highlighted
    prov = section(html, "provenance")
    from reference.config import preset
    from reference.noise import noise_for_config

    assert "flash-cpu" in prov and noise_for_config(preset("tiny")).fingerprint() in prov  # the tiny model's noise
    assert re.search(r'<tr class="differs"><th>attention \(requested\)</th>', prov)
    assert re.search(r'<tr class=""><th>noise fingerprint</th>', prov)
    assert section(html, "raw-stats").count("<details class=\"stage\">") == len(case.result.stages)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_reports(cases, built, fault):
    from candidate.faults import catalogue

    case = cases(fault)
    fd = case.result.first_divergence
    assert case.verdict == "fail" and fd is not None
    assert fd.stage == catalogue()[fault].stage()
    html = check_common(built(fault))
    banner = section(html, "verdict")
    assert ">FAIL<" in banner
    assert f"<strong>{fd.stage}</strong>" in banner and f"<code>{fd.code}</code>" in banner
    # the findings in order, the headline first
    diag = section(html, "diagnosis")
    codes = re.findall(r'<tr class="finding [a-z]+">.*?<code>([^<]+)</code>', diag, re.S)
    assert codes == [f.code for f in case.result.findings]
    assert codes[0] == fd.code
    # the first divergence row is marked in the stage table, and its step is not collapsed
    assert f'<tr class="stage-row first" data-stage="{fd.stage}">' in section(html, "stages")
    for im in images(html):
        assert im.shape[1] == 800
    assert len(wavs(html)) == 3


def test_nonfinite_report(cases, built):
    case = cases("nan-at-block")
    html = read(built("nan-at-block"))
    nf = section(html, "nonfinite")
    assert "nonfinite_origin" in nf
    first_row = re.search(r'<tr class="first"><td><code>([^<]+)</code></td><td>candidate</td>', nf)
    assert first_row and first_row.group(1) == "step1.v1"
    n = case.cand_tensors["audio"].numel()
    listen = section(html, "listen")
    assert f"candidate: {n} non-finite samples replaced by 0" in listen
    for _, data in wavs(html):
        assert np.all(np.abs(data.astype(np.int32)) <= 32767)


def test_crashed_candidate_report(cases, built):
    case = cases("shape-crash")
    crash = [f for f in case.result.findings if f.code == "candidate_crashed"]
    assert crash and case.result.audio is None
    html = check_common(built("shape-crash"))
    banner = section(html, "verdict")
    assert "The candidate crashed" in banner and f"while computing <strong>{crash[0].stage}</strong>" in banner
    assert "RuntimeError" in banner
    assert "the candidate has no audio" in section(html, "waveform")
    assert len(wavs(html)) == 1  # the reference alone
    assert 'class="note"' in section(html, "audio-metrics")
    assert len(images(html)) == 4


def test_audio_budget_windows(cases, tmp_path):
    from parity.present.report import build_report

    case = cases("istft-gain")
    html = read(build_report(case.result, tmp_path / "budget.html", case=case, audio_budget=40_000))
    listen = section(html, "listen")
    assert "over the audio budget" in listen and "window(s) of +-0.5 s" in listen
    assert "around max |diff|" in listen
    assert len(wavs(html)) == 3


def test_report_without_tensors(cases, tmp_path):
    from parity.present.report import build_report

    case = cases("istft-gain")
    path = build_report(case.result, tmp_path / "bare.html")
    html = check_common(path)
    assert len(images(html)) == 1  # only the step chart: it needs no tensors
    for sid in ("mel", "f0", "waveform"):
        assert "plots omitted" in section(html, sid)
    assert wavs(html) == []


def test_json_result_is_enough(cases, tmp_path):
    """A result written to JSON and read back renders the same way (no live objects needed)."""
    from parity.present.report import build_report
    from parity.result import read_json, write_json

    case = cases("uncond-keeps-cond")
    p = write_json(case.result, tmp_path / "r.json")
    result = read_json(p)
    assert result.to_json() == case.result.to_json()
    html = check_common(build_report(result, tmp_path / "j.html", case=case))
    assert result.first_divergence.code in section(html, "verdict")


# ---------------------------------------------------------------------------------------------
# escaping

def _hostile_dumps(tmp_path: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 80, 12, generator=g)
    meta = {"model": '<img src=x onerror="alert(2)">', "device": "cpu</td><script>alert(3)</script>"}
    ref, cand = tmp_path / "ref.safetensors", tmp_path / "cand.safetensors"
    save_file({HOSTILE: a, "flow_mel": a.clone()}, str(ref), metadata={k: json.dumps(v) for k, v in meta.items()})
    bad = a.clone()
    bad[0, 3, 4] = float("nan")  # NaN never passes, rule or not: the hostile stage is the first divergence
    save_file({HOSTILE: bad, "flow_mel": a.clone(), "<b onmouseover=alert(4)>x</b>": a.clone()}, str(cand),
              metadata={"model": json.dumps("x")})
    return ref, cand


def test_hostile_names_are_escaped(tmp_path):
    from parity.cli import report_from_saved

    ref, cand = _hostile_dumps(tmp_path)
    path, result = report_from_saved([str(ref), str(cand)], tmp_path / "hostile.html")
    assert result.first_divergence.stage == HOSTILE
    html = read(path)
    assert HOSTILE not in html
    assert "alert(2)" in html and "<img src=x" not in html
    assert "<script>alert(3)" not in html and "<b onmouseover" not in html and "&lt;b onmouseover" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1
    assert section_ids(html)[:4] == ["verdict", "diagnosis", "provenance", "stages"]
    assert "no ODE steps" in section(html, "steps")  # an external dump: notes, not failures
    assert "no audio" in section(html, "waveform")


# ---------------------------------------------------------------------------------------------
# parity-report

def _stage_status(html: str, stage: str) -> str:
    row = rf'data-stage="{re.escape(stage)}"><td><code>[^<]*</code></td>\s*<td><span class="st ([a-z]+)">'
    m = re.search(row, html)
    assert m, f"no row for {stage}"
    return m.group(1)


def test_parity_report_from_traces(cases, tmp_path, capsys):
    from parity.cli import report_main

    case = cases("istft-gain")
    out = tmp_path / "cli.html"
    rc = report_main([str(case.ref_trace), str(case.cand_trace), "-o", str(out)])
    assert rc == 1
    assert "verdict fail" in capsys.readouterr().out
    html = check_common(out)
    assert ">FAIL<" in section(html, "verdict")
    assert _stage_status(section(html, "stages"), "audio_preclamp") == "fail"
    assert "vocoder_divergence" in section(html, "diagnosis")
    # parity-report compares like parity compare: the reference trace's own floor (the shipped one of the short
    # bundle) judges, and the floor section charts error / floor: 4 figures + that chart
    assert len(images(html)) == 5 and len(wavs(html)) == 3
    assert 'id="floor-chart"' in section(html, "floor") and "shipped" in section(html, "floor")


def test_parity_report_from_json(cases, tmp_path, monkeypatch):
    from parity.cli import report_main
    from parity.result import write_json

    case = cases("noise-unshared")
    j = write_json(case.result, tmp_path / "result.json")
    out = tmp_path / "json.html"
    assert report_main([str(j), str(case.ref_trace), str(case.cand_trace), "-o", str(out)]) == 1
    html = check_common(out)
    # the saved result is shown as saved (nothing recomputed): its headline, its numbers
    fd = case.result.first_divergence
    assert f"<strong>{fd.stage}</strong>" in section(html, "verdict") and fd.code in section(html, "verdict")
    assert len(images(html)) == 4
    # the JSON alone: tensors from the result's sources (the traces still exist); default output name
    monkeypatch.chdir(tmp_path)
    assert report_main([str(j)]) == 1
    default = tmp_path / "reports" / f"{Path(case.cand_trace).stem}-vs-{Path(case.ref_trace).stem}.html"
    assert default.exists()
    assert len(images(read(default))) == 4 and len(wavs(read(default))) == 3


def test_parity_report_default_name(cases, tmp_path, monkeypatch):
    from parity.cli import report_main

    case = cases("istft-gain")
    monkeypatch.chdir(tmp_path)
    assert report_main([str(case.ref_trace), str(case.cand_trace)]) == 1
    default = tmp_path / "reports" / f"{Path(case.cand_trace).stem}-vs-{Path(case.ref_trace).stem}.html"
    assert ">FAIL<" in section(check_common(default), "verdict")


def test_parity_report_input_errors(tmp_path, capsys):
    from parity.cli import report_main
    from parity.cli import report_from_saved
    from reference.errors import InputError

    assert report_main([str(tmp_path / "nope.safetensors"), str(tmp_path / "nope2.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a valid JSON"):
        report_from_saved([str(bad)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not a comparison result"):
        report_from_saved([str(other)])
    with pytest.raises(InputError, match="not found"):
        report_from_saved([str(tmp_path / "missing.json")])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(InputError):
        report_from_saved([str(corrupt), str(corrupt)])
    with pytest.raises(InputError, match="expected REF_TRACE CAND_TRACE"):
        report_from_saved(["a", "b", "c"])


# ---------------------------------------------------------------------------------------------
# summary page

def test_summary_page_links(cases, built):
    from parity.present.report import build_summary_page

    cs = [cases(""), cases("istft-gain")]
    for c, fault in zip(cs, ("", "istft-gain")):
        c.report = built(fault)
    case_dir = cs[0].report.parent
    from parity.harness import CaseSummary

    path = build_summary_page([CaseSummary.of(c) for c in cs], case_dir.parent / "run.html")
    html = read(path)
    links = re.findall(r'<a href="([^"]+)">', html)
    assert links == [f"{case_dir.name}/{c.name}.html" for c in cs]  # relative to the summary page
    for link in links:
        assert (path.parent / link).exists()
    assert ">FAIL: 1 of 2 case(s) pass<" in html
    assert "audio_preclamp" in html and "vocoder_divergence" in html
    assert footer_size(html) == path.stat().st_size


def test_the_report_package_only_renders():
    """plots, audio players, view model and pages: none of them reads traces, compares or judges."""
    import ast

    root = FIXTURES.parent / "parity" / "present" / "report"
    assert sorted(p.stem for p in root.glob("*.py")) == ["__init__", "audio", "chunks", "page", "plots", "provenance", "view"]
    forbidden = ("parity.judge", "parity.capture", "parity.harness", "parity.ingest", "parity.trace", "parity.floor",
                 "parity.measure.metrics")
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ["parity", "present", "report"][:3 - (node.level - 1)] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
                assert not any(n == b or n.startswith(b + ".") for n in names for b in forbidden), \
                    f"{f.name} imports {mod}"
