"""Streaming sessions through the harness: the one runner with the session's run mode, its
trace and crash, cache keys and case names, the CLI (dump, run, compare, faults), the session comparison (rules
reused from the inner stage, chunks paired by index and token offset, the schedule finding first, the options
judged, glitches, stream vs offline), port-style chunked .npy dumps, the JSON result, the report, the golden
stream and bisect on sessions."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from parity.cli import main
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.ingest import Loaded, load
from parity.judge.policy import load_policy
from parity.project import ProjectConfig, default_session_bundles
from parity.result import read_json, write_json
from parity.args import run_mode_cli_args, run_mode_from_args
from parity.capture.runner import RunMode, run_pipeline
from parity.harness import Harness, ModelSpec, ReferenceCache
from parity.stages import parse_chunk
from parity.trace import read_trace
from reference.bundle import load_bundle
from reference.errors import InputError
from reference.session import SessionOptions

from .conftest import FIXTURES

STREAM = FIXTURES / "sessions" / "stream.safetensors"
SHORT = FIXTURES / "bundles" / "short.safetensors"
SR = 24000


@pytest.fixture(scope="module")
def session():
    return Harness(project=ProjectConfig())


@pytest.fixture(scope="module")
def model(session):
    return session.model(ModelSpec("tiny"))


@pytest.fixture(scope="module")
def cases(session, model):
    """Session cases on the session bundle, computed once: the fp32-sdpa candidate and two streaming faults."""
    out = {}
    for key, prof, faults in (("sdpa", "fp32-sdpa", ()), ("hift", "fp32-explicit", ("session-hift-per-chunk",)),
                              ("noise", "fp32-explicit", ("session-noise-per-chunk",)),
                              ("hop", "fp32-explicit", ("session-fixed-hop",))):
        out[key] = session.run(model, session.candidate(model, prof, faults), STREAM, RunMode.streaming_session(), local=False)
    return out


# --------------------------------------------------------------------------------------------
# the runner, modes, cache keys


def test_the_streaming_session_is_a_run_mode_with_options_in_keys_and_names():
    m = RunMode.streaming_session()
    assert m.is_session and m.label == "streaming-session" and RunMode().label == "offline"
    assert RunMode(streaming=True).label == "streaming"  # the single-call streaming mode keeps its name
    o = RunMode.streaming_session(SessionOptions(final_mask="streaming", hop_state="carried", step_chunks=("all",)))
    assert o.label == "streaming-session-final-streaming-hop-carried-steps-all"
    refs = ReferenceCache()
    assert len({refs.key(None, STREAM, x) for x in (RunMode(True), m, o)}) == 3
    assert run_mode_cli_args(o) == ["--session", "streaming", "--final-mask", "streaming", "--hop-state",
                                    "carried", "--step-chunks", "all"]
    assert run_mode_cli_args(RunMode(streaming=True)) == ["--streaming"] and run_mode_cli_args(RunMode()) == []
    with pytest.raises(ValueError, match="streaming session"):
        RunMode(streaming=False, session=SessionOptions())


def test_session_options_from_the_command_line():
    import argparse

    def ns(**kw):
        base = dict(session=None, initial_hop=None, max_hop=None, growth=None, final_mask=None, hop_state=None,
                    carried_hop=None, step_chunks=None, no_finalize=False)
        return argparse.Namespace(**{**base, **kw})

    assert run_mode_from_args(ns()) == RunMode()
    assert run_mode_from_args(ns(streaming=True, no_finalize=True)) == RunMode(streaming=True, finalize=False)
    assert run_mode_from_args(ns(session="streaming")) == RunMode.streaming_session(SessionOptions())
    assert run_mode_from_args(ns(session="streaming", growth=1, step_chunks="0,-1")).session == \
        SessionOptions(growth=1, step_chunks=(0, -1))
    with pytest.raises(InputError, match="need --session streaming"):
        run_mode_from_args(ns(growth=1))
    with pytest.raises(InputError, match="no-finalize"):
        run_mode_from_args(ns(session="streaming", no_finalize=True))
    with pytest.raises(InputError, match="step-chunks"):
        run_mode_from_args(ns(session="streaming", step_chunks="first,middle"))


def test_a_crash_inside_a_session_leaves_a_partial_trace_naming_its_chunk_and_stage(session, model, tmp_path):
    cand = session.candidate(model, "fp32-explicit", ("shape-crash",))  # HiFT's source module raises
    out = tmp_path / "crash.safetensors"
    res = run_pipeline(cand, load_bundle(STREAM), out, RunMode.streaming_session())
    assert res.error is not None and res.crashed_at == "chunk0.audio"
    tr = read_trace(out)
    assert tr.metadata["status"] == "crashed" and tr.metadata["error"]["stage"] == "chunk0.audio"
    # the call's vocoder computed its F0 (recorded) and raised in its source module
    assert tr.metadata["error"]["last_recorded"] == "chunk0.f0" and "chunk0.step10.x" in tr.names
    assert [c["hop"] for c in tr.metadata["session_plan"]["chunks"]] == [38, 50, 100, 32]  # written before the run
    ref = session.reference(model, STREAM, RunMode.streaming_session())
    r = compare_loaded(Loaded(ref.tensors, ref.metadata, "ref"), load(out), ComparisonSpec(policy=load_policy()))
    fd = r.first_divergence
    assert (fd.stage, fd.code) == ("chunk0.audio", "candidate_crashed") and "(after chunk0.f0)" in fd.message
    assert r.session["chunks"][1]["status"] == "missing"  # paired by the plan, never computed


# --------------------------------------------------------------------------------------------
# the comparison


def test_fp32_session_passes_with_the_inner_stages_rules(cases):
    r = cases["sdpa"].result
    assert r.verdict == "pass" and cases["sdpa"].name == "stream-fp32-sdpa-streaming-session"
    mel, aud = r.stage("chunk1.mel"), r.stage("chunk2.audio")
    # the session's noise floor (shipped beside the session golden) judges its chunk stages; the inner stage's rule
    # is still the one named (and would decide where the floor has no such stage)
    assert mel.rule["stage"] == "flow_mel" and mel.extra["rule_from"] == "flow_mel" and mel.gate == "floor"
    assert "judged by the rule of flow_mel (floor gate)" in mel.detail
    assert r.floor["source"] == "shipped" and r.floor["key"]["session"]["kind"] == "streaming"
    from parity.present.summary import render

    head = render(r, color=False).splitlines()[0]  # the case line names the session's mode, as its files do
    assert head.endswith("bundle stream.safetensors, streaming-session"), head
    assert aud.gate == "floor" and aud.ratio < r.floor["k"] and not r.gates.get("flat")
    tok = r.stage("chunk3.tokens")  # exact in every member: a zero floor, and the token rule's exactness kept too
    assert r.stage("chunk0.step3.v1").rule["stage"] == "step*.v*" and tok.status == "pass" and tok.ratio == 0.0
    s = r.session
    assert s["schedules"]["equal"] and s["matched_by"] == "token offset" and len(s["chunks"]) == 4
    assert s["glitches"]["findings"] == [] and len(s["glitches"]["boundaries"]) == 3
    assert s["boundaries"]["ref"] == s["boundaries"]["cand"] == [32640, 80640, 176640]


def test_a_user_rule_naming_session_stages_wins(session, model, cases):
    from parity.judge.policy import Policy

    c = cases["sdpa"]
    pol = load_policy().extend([{"stage": "chunk*.audio", "statistic": "snr_db", "limit": 200.0}], "test")
    r = compare_loaded(Loaded(c.ref_tensors, c.ref_meta, "r"), Loaded(c.cand_tensors, c.cand_meta, "c"), ComparisonSpec(policy=pol))
    assert r.first_divergence.stage == "chunk0.audio" and r.stage("chunk0.audio").limit == 200.0
    assert "rule_from" not in r.stage("chunk0.audio").extra and r.stage("stream.audio").limit == 30.0
    assert Policy().rule_for("chunk0.mel") is None  # no rule at all: nothing to inherit


def test_stream_vs_offline_tells_the_cost_of_streaming_from_a_broken_stream(cases):
    good = cases["sdpa"].result.session["drift"]["sides"]
    ref = good["ref"]
    assert ref[-1]["mel_max_abs"] == 0.0  # upstream's final call is the offline flow
    assert all(d["mel_max_abs"] > 1e-2 for d in ref[:-1])  # the chunk mask's cost, measured per chunk
    assert all(abs(c["mel_max_abs"] - r["mel_max_abs"]) < 1e-4 for c, r in zip(good["cand"], ref))
    assert all(isinstance(d["audio_logmel_l1"], float) for d in ref)
    bad = cases["noise"].result.session["drift"]["sides"]
    assert bad["cand"][1]["mel_max_abs"] > 3 * bad["ref"][1]["mel_max_abs"]  # broken: far beyond the cost
    f = [x for x in cases["sdpa"].result.findings if x.code == "stream_vs_offline"]
    assert f and f[0].severity == "info" and "streaming costs" in f[0].message


def test_clicks_are_glitch_findings_naming_chunk_sample_and_time(cases):
    r = cases["hift"].result
    # the call's vocoder was fed the chunk's mel alone: the F0 it computed (chunk1.f0) is the first to differ
    assert r.first_divergence.stage == "chunk1.f0" and r.first_divergence.code == "chunk_vocoder_mismatch"
    flux = [f for f in r.findings if f.code == "glitch_spectral_flux"]  # by the session floor's glitch thresholds
    assert flux and flux[0].stage == "chunk1.audio" and flux[0].severity == "failure"
    assert flux[0].evidence["boundary_sample"] == 32640 and flux[0].evidence["time_s"] == pytest.approx(1.36)
    missing = {f.stage: f.evidence["value"] for f in r.findings if f.code == "glitch_missing_samples"}
    assert missing == {"chunk1.audio": -3840.0, "chunk2.audio": -3840.0, "chunk3.audio": -3840.0}
    assert r.session["glitches"]["worst"]["sample"] == 32640 and r.session["glitches"]["worst"]["glitch"]


def test_another_schedule_is_shown_first_and_its_calls_are_paired_by_token_offset(cases):
    r = cases["hop"].result
    fd = r.first_divergence
    assert r.findings[0] is fd and (fd.stage, fd.code) == ("chunk1.tokens", "session_schedule_mismatch")
    assert "38, 50, 100 tokens" in fd.message and "38, 25, 25" in fd.message  # both schedules, in the message
    assert fd.evidence["deviations"] == {"growth": 1}
    s = r.session
    # candidate offsets 0, 38, 63, 88, 113, ..., 188, 213: calls at 0, 38, 88 and 188 pair with the reference's
    assert s["pairs"] == {"0": 0, "1": 1, "3": 2, "7": 3} and s["unmatched"] == {"ref": [], "cand": [2, 4, 5, 6, 8]}
    assert r.stage("unmatched.chunk2.mel").status == "extra"
    notes = [n["detail"] for n in r.normalisations if n.get("kind") == "chunk-match"]
    assert "candidate chunk 3 compared as chunk 2: both start at target token 88" in notes


def test_session_options_are_judged_by_meaning(cases):
    c = cases["sdpa"]
    ref = Loaded(c.ref_tensors, c.ref_meta, "r")

    def with_options(**kw):
        meta = json.loads(json.dumps(c.cand_meta))
        meta["session_options"].update(kw)
        return compare_loaded(ref, Loaded(c.cand_tensors, meta, "c"), ComparisonSpec(policy=load_policy()))

    same = with_options(max_hop=400)  # never reached by 220 tokens: the same calls
    f = [x for x in same.findings if x.code == "session_options_mismatch"]
    assert same.verdict == "pass" and f and f[0].severity == "warning" and "max_hop 100 vs 400" in f[0].message
    steps = with_options(step_chunks=["all"])
    assert any(x.code == "session_step_chunks_differ" and x.severity == "info" for x in steps.findings)
    meta = json.loads(json.dumps(c.cand_meta))
    meta["session_options"]["growth"] = 1
    meta["session_schedule"]["chunks"][1]["hop"] = 25
    diff = compare_loaded(ref, Loaded(c.cand_tensors, meta, "c"), ComparisonSpec(policy=load_policy()))
    assert [x.code for x in diff.findings[:2]] == ["session_schedule_mismatch", "session_options_mismatch"]
    assert diff.findings[1].severity == "failure"


def test_paired_by_token_offset_when_a_port_numbers_its_calls_differently(cases):
    """A port that splits the first call in two (tokens 0..19 and 19..38): its calls 2..4 are the reference's 1..3
    (the same token offsets) and are compared as such; its call 1 has no counterpart."""
    c = cases["sdpa"]
    T = c.cand_tensors
    port = {n: t for n, t in T.items() if parse_chunk(n) is None}
    for n, t in T.items():
        ch = parse_chunk(n)
        if ch and ch[0] > 0:
            port[f"chunk{ch[0] + 1}.{ch[1]}"] = t
    for k, (off, end) in enumerate(((0, 19), (19, 38))):
        port[f"chunk{k}.token_offset"] = torch.tensor([off])
        port[f"chunk{k}.tokens"] = T["chunk0.tokens"][:, :end + 3]
        port[f"chunk{k}.finalize"] = torch.tensor([0])
        port[f"chunk{k}.streaming"] = torch.tensor([1])
        port[f"chunk{k}.mel"] = T["chunk0.mel"][:, :, 2 * off:2 * end]
        port[f"chunk{k}.audio"] = T["chunk0.audio"][:, :0] if k == 0 else T["chunk0.audio"]
    r = compare_loaded(Loaded(c.ref_tensors, c.ref_meta, "r"), Loaded(port, {}, "port"), ComparisonSpec(policy=load_policy()))
    s = r.session
    assert s["schedules"]["source"] == {"ref": "metadata", "cand": "tensors"}
    assert s["pairs"] == {"0": 0, "2": 1, "3": 2, "4": 3} and s["unmatched"] == {"ref": [], "cand": [1]}
    assert all(r.stage(f"chunk{i}.{f}").status == "pass" for i in (1, 2, 3) for f in ("tokens", "mel", "audio"))
    assert r.stage("unmatched.chunk1.mel").status == "extra"
    fd = r.first_divergence
    assert (fd.stage, fd.code) == ("chunk0.tokens", "session_schedule_mismatch") and r.findings[0] is fd


# --------------------------------------------------------------------------------------------
# results, reports, dumps


def test_result_json_round_trip_and_report(cases, tmp_path):
    from parity.present.report import build_report
    from parity.present.summary import render

    case = cases["hift"]
    p = write_json(case.result, tmp_path / "r.json", sidecar=True)
    back = read_json(p)
    assert back.session == json.loads(json.dumps(case.result.to_json()))["session"]
    assert back.verdict == "fail" and back.first_divergence.stage == "chunk1.f0"
    text = render(back, color=False)
    assert "streaming session (calls matched by token offset)" in text and "spectral_flux chunk 1 @ 32640" in text
    html = build_report(back, tmp_path / "r.html", case=case).read_text()
    assert 'id="chunk-timeline"' in html and 'id="chunk-table"' in html and 'id="glitch-table"' in html
    assert 'id="drift-table"' in html and html.count('<audio controls') >= 3 + 8  # stream players + 4 chunks x 2
    assert re.search(r"chunk 1 \(tokens 38\+50\)", html)
    single = build_report(dataclasses.replace(back, session=None), tmp_path / "s.html")
    assert "not a streaming session" in single.read_text()


def _port_dump(tensors: dict, root):
    """A port's chunked dump: one folder of .npy files per call, its own names, the stream beside them."""
    n = 1 + max(parse_chunk(k)[0] for k in tensors if parse_chunk(k))
    for c in range(n):
        d = root / f"chunk_{c}"
        d.mkdir(parents=True)
        for mine, theirs in (("tokens", "speech_token"), ("token_offset", "token_offset"), ("finalize", "is_final"),
                             ("flow_mel_full", "flow_mel"), ("mel", "tts_mel"), ("audio", "tts_speech")):
            np.save(d / f"{theirs}.npy", tensors[f"chunk{c}.{mine}"].numpy())
    np.save(root / "stream_audio.npy", tensors["stream.audio"].numpy())
    np.save(root / "speech_token.npy", tensors["token"].numpy())


def _section(html: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)


def test_a_session_report_tells_the_truth_about_key_stages_steps_and_f0(cases, tmp_path):
    """A passing session: its key stages are the stream's (no key_stages_missing while stream.mel and
    stream.audio are compared), its ODE steps are those of each recorded chunk, its F0 that of each vocoder
    call (captured as chunk{c}.f0, the last call's over the whole stream)."""
    from parity.present.report import build_report
    from parity.judge.require import absent_stages

    case = cases["sdpa"]
    r = case.result
    assert r.verdict == "pass"
    assert not [f for f in r.findings if f.code == "key_stages_missing"], r.findings
    assert absent_stages(r, ["flow_mel", "audio"]) == []  # --require-stages: the stream's mel and audio
    assert r.stage("stream.mel").status == "pass" and r.stage("stream.audio").status == "pass"
    # steps: every recorded chunk (first and last by default), 10 rows each, naming stages that were compared
    recorded = sorted(case.ref_meta["session_step_chunks"])
    n_calls = len(r.session["chunks"])
    assert recorded == [0, n_calls - 1] and n_calls == 4
    assert sorted({row.chunk for row in r.steps}) == recorded
    for c in recorded:
        rows = [row for row in r.steps if row.chunk == c]
        assert [row.step for row in rows] == list(range(1, 11))
        assert all(r.stage(row.stage("x")).status == "pass" for row in rows)
        assert rows[0].cfg_gap_ref and rows[-1].growth is not None
    # F0: each call's, judged; the stream's F0 metrics from the last call (over the whole cumulative mel)
    f0s = [s for s in r.stages if parse_chunk(s.name) and parse_chunk(s.name)[1] == "f0"]
    assert [s.name for s in f0s] == [f"chunk{c}.f0" for c in range(n_calls)]
    assert all(s.status == "pass" for s in f0s)
    frames = case.ref_tensors["stream.mel"].shape[-1]
    assert f0s[-1].ref_stats["shape"][-1] == frames and r.audio["f0"]["n_frames"] == frames
    html = build_report(r, tmp_path / "r.html", case=case).read_text()
    steps = _section(html, "steps")
    assert "<img" in steps and "no ODE steps" not in steps
    assert f"the ODE steps of 2 of its {n_calls} calls (chunk 0, {n_calls - 1})" in steps
    assert len(re.findall(r'<tr data-chunk="0">', steps)) == 10 and len(re.findall(rf'<tr data-chunk="{n_calls - 1}">',
                                                                                      steps)) == 10
    f0 = _section(html, "f0")
    assert "<img" in f0 and "no f0" not in f0.lower()
    assert f"chunk{n_calls - 1}.f0, {frames} frames" in f0
    assert len(re.findall(r'<tr data-chunk="\d+">', f0)) == n_calls and f0.count('class="st pass"') == n_calls
    # the warning, where it applies: a candidate whose stream.audio is absent
    cand = {k: v for k, v in case.cand_tensors.items() if k != "stream.audio"}
    rp = tmp_path / "ref.safetensors"
    from parity.trace import write_trace

    write_trace(rp, case.ref_tensors, case.ref_meta)
    cp = write_trace(tmp_path / "cand.safetensors", cand, case.cand_meta)
    r2 = compare_loaded(load(rp), load(cp), ComparisonSpec(policy=load_policy()))
    warn = [f for f in r2.findings if f.code == "key_stages_missing"]
    assert warn and warn[0].stage == "stream.audio" and "the candidate lacks stream.audio" in warn[0].message
    assert absent_stages(r2, ["flow_mel", "audio"]) == ["stream.audio"]


def test_a_session_trace_without_per_call_f0_says_so(cases, tmp_path):
    """A session captured before per-call F0 (or a port's dump without it): the F0 section says what is missing
    instead of claiming the reference has no F0 at all."""
    from parity.present.report import build_report

    case = cases["sdpa"]
    strip = {k: v for k, v in case.ref_tensors.items() if not k.endswith(".f0")}
    html = build_report(case.result, tmp_path / "r.html", ref_tensors=strip,
                        cand_tensors=case.cand_tensors).read_text()
    assert "no F0 in the reference session trace" in _section(html, "f0")


def test_a_chunked_npy_dump_is_compared_with_the_dialect_mapping_listed(cases, session, model, tmp_path, capsys):
    ref = session.reference(model, STREAM, RunMode.streaming_session())
    from parity.trace import write_trace

    write_trace(tmp_path / "ref.safetensors", ref.tensors, ref.metadata)
    _port_dump(cases["sdpa"].cand_tensors, tmp_path / "port")
    rc = main(["compare", str(tmp_path / "ref.safetensors"), str(tmp_path / "port"), "--json",
               str(tmp_path / "port.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "name mapping (candidate, 26 renamed)" in out and "stream_audio -> stream.audio" in out
    assert "chunk_{c}/tts_speech -> chunk{c}.audio  (c = 0, 1, 2, 3)" in out
    assert "chunk_{c}/is_final -> chunk{c}.finalize  (c = 0, 1, 2, 3)" in out
    r = read_json(tmp_path / "port.json")
    # no metadata: the calls its tensors show (offsets, tokens, finalize; not the mask), the same as the plan
    assert r.session["schedules"]["source"]["cand"] == "tensors" and r.session["schedules"]["equal"]
    assert r.stage("chunk1.mel").status == "pass" and r.stage("chunk3.audio").status == "pass"
    # a broken port: its vocoder restarts per chunk
    _port_dump(cases["hift"].cand_tensors, tmp_path / "broken")
    rc = main(["compare", str(tmp_path / "ref.safetensors"), str(tmp_path / "broken")])
    out = capsys.readouterr().out
    assert rc == 1 and "first divergence: chunk1.audio [chunk_vocoder_mismatch]" in out
    assert "glitch_missing_samples" in out


def test_cli_dump_and_run_a_session(tmp_path, capsys):
    rc = main(["dump", "--preset", "tiny", "--session", "streaming", "--step-chunks", "none", "--final-mask",
               "streaming", "--inputs", str(STREAM), "--out", str(tmp_path / "s.safetensors"), "--profile",
               "fp32-sdpa"])
    assert rc == 0, capsys.readouterr().err
    tr = read_trace(tmp_path / "s.safetensors")
    assert tr.metadata["session_options"]["final_mask"] == "streaming" and not any(".step" in n for n in tr.names)
    assert [c["streaming"] for c in tr.metadata["session_schedule"]["chunks"]] == [True] * 4
    assert main(["dump", "--preset", "tiny", "--growth", "1", "--inputs", str(STREAM), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "need --session streaming" in capsys.readouterr().err
    assert [b.name for b in default_session_bundles()] == ["stream.safetensors"]
    rc = main(["run", "--session", "streaming", "--profile", "fp32-sdpa", "--no-progress", "--report",
               str(tmp_path / "run.html"), "--json", str(tmp_path / "run.json")])  # default bundle: fixtures/sessions
    out = capsys.readouterr().out
    assert rc == 0 and "streaming session" in out and "1 case(s), 1 passed" in out
    r = read_json(tmp_path / "run.json")
    assert r.case["session"] == "streaming" and r.case["bundle"] == "stream.safetensors" and r.session["chunks"]


def test_faults_are_listed_by_mode(capsys):
    assert main(["faults", "--mode", "session"]) == 0
    out = capsys.readouterr().out
    assert "session-final-mask" in out and "chunk<last>.streaming" in out and "[session_schedule_mismatch]" in out
    assert "uncond-keeps-cond" not in out
    assert main(["faults"]) == 0
    out = capsys.readouterr().out
    assert "uncond-keeps-cond" in out and "session-hift-per-chunk" in out


def test_golden_stream_catches_a_changed_chunk():
    gold = load(FIXTURES / "golden" / "stream-streaming-session.safetensors")
    assert gold.metadata["session"] == "streaming" and "chunk2.mel" in gold.tensors and "stream.audio" in gold.tensors
    t = dict(gold.tensors)
    t["chunk2.mel"] = t["chunk2.mel"] + 1e-3
    r = compare_loaded(gold, dataclasses.replace(gold, tensors=t, path="changed"), ComparisonSpec(policy=load_policy()))
    assert r.verdict == "fail" and r.first_divergence.stage == "chunk2.mel"


# --------------------------------------------------------------------------------------------
# bisect


def test_bisect_switches_on_a_session(model, tmp_path):
    from candidate.switches import Switches
    from parity.bisect import bisect_switches
    from parity.bisect.trials import SearchSettings

    sw = Switches(attention="sdpa", faults=("session-noise-per-chunk",))
    mode = RunMode.streaming_session(SessionOptions(step_chunks=()))  # no ODE steps recorded: a cheaper trial
    res = bisect_switches(model, sw, None, settings=SearchSettings(mode=mode, local=False, workdir=tmp_path / "wd"))
    assert res.status == "found" and res.culprit == ["fault=session-noise-per-chunk"], res.message
    assert res.headline["stage"] == "chunk1.flow_mel_full"
    log = json.loads(res.log.read_text())
    assert log["identity"]["mode"] == "streaming-session-steps-none" and log["identity"]["bundles"] == ["stream.safetensors"]
