"""The streaming session (reference/session.py): upstream's chunked loop, its schedule, its invariants, the
streaming faults, the chunk-boundary glitch metrics and chunked port dumps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from candidate.faults import catalogue, parse_fault
from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.capture.recorder import Recorder
from parity.stages import SESSION_PATTERNS
from parity.ingest import load as ingest_load
from parity.stages import canonical_session_expected, position, sort_stages
from parity.measure.streaming_metrics import (GlitchThresholds, chunk_starts, detect_glitches, expected_chunk_samples,
                                      sample_count_findings, stream_offline_drift)
from parity.trace import TraceWriter
from reference.bundle import load_bundle
from reference.errors import InputError
from reference.model import Token2Wav
from reference.probe import Probe
from reference.session import (HopState, SessionOptions, plan_session, prompt_token_pad, session_provenance,
                               session_schedule)

from .conftest import FIXTURES

STREAM = FIXTURES / "sessions" / "stream.safetensors"
SR = 24000


# --------------------------------------------------------------------------------------------
# the schedule, against an independent re-statement of upstream's loop


class _UpstreamInstance:
    """What upstream's CosyVoice2Model.tts(stream=True) does, restated as a simulation: a token list that
    is complete before the first poll (llm_end True, as vc_job does), the instance's mutable hop, and a
    token2wav that records its calls as (tokens passed, token_offset, stream, finalize)."""

    def __init__(self, hop=25, max_hop=None, scale=2, lookahead=3):
        self.token_hop_len = hop
        self.token_max_hop_len = 4 * hop if max_hop is None else max_hop
        self.stream_scale_factor = scale
        self.pre_lookahead_len = lookahead

    def tts(self, n_tokens: int, n_prompt: int) -> list[tuple]:
        calls = []
        speech_tokens = list(range(n_tokens))
        llm_end = True
        token_offset = 0
        pad = int(np.ceil(n_prompt / self.token_hop_len) * self.token_hop_len - n_prompt)
        while True:
            this_hop = self.token_hop_len + pad if token_offset == 0 else self.token_hop_len
            if len(speech_tokens) - token_offset >= this_hop + self.pre_lookahead_len:
                calls.append((len(speech_tokens[:token_offset + this_hop + self.pre_lookahead_len]), token_offset,
                              True, False))
                token_offset += this_hop
                self.token_hop_len = min(self.token_max_hop_len, self.token_hop_len * self.stream_scale_factor)
            if llm_end and len(speech_tokens) - token_offset < this_hop + self.pre_lookahead_len:
                break
        calls.append((len(speech_tokens), token_offset, False, True))
        return calls


def _calls(s):
    return [(c.n_tokens, c.token_offset, c.streaming, c.finalize) for c in s.chunks]


def _thresholds(p: int) -> list[int]:
    """Token counts at which the k-th chunk first runs (fresh hop 25, growth 2, max 100, lookahead 3)."""
    first = 25 + (-p) % 25
    starts = [first, first + 50, first + 150, first + 250]
    return [s + 3 for s in starts]


@pytest.mark.parametrize("p", [0, 12, 25, 26, 49])
def test_schedule_thresholds_against_upstream_restatement(p):
    assert prompt_token_pad(p, 25) == (-p) % 25
    for k, t in enumerate(_thresholds(p)):
        for n in (t - 1, t):
            s = session_schedule(n, p)
            assert _calls(s) == _UpstreamInstance().tts(n, p), (p, n)
            assert s.n_chunks == (k if n < t else k + 1), (p, n, s.hops())
            # invariants of every schedule
            assert sum(s.hops()) == n and s.chunks[-1].finalize and not any(c.finalize for c in s.chunks[:-1])
            assert all(c.n_tokens == c.token_offset + c.hop + 3 for c in s.chunks[:-1])
            assert s.chunks[-1].hop >= 3 or s.n_chunks == 0  # a chunk only runs with its lookahead in hand


def test_schedule_hops_and_prompt_alignment():
    s = session_schedule(220, 12)
    assert s.hops() == [38, 50, 100, 32] and s.prompt_pad == 13 and s.hop_after == 100
    # every non-final chunk ends on a multiple of 25 tokens of prompt + target: a boundary of the 50-frame mask
    assert all((12 + c.token_offset + c.hop) % 25 == 0 for c in s.chunks[:-1])
    assert session_schedule(2, 0).hops() == [2] and session_schedule(0, 5).hops() == [0]


@pytest.mark.parametrize("n,p", [(220, 12), (300, 12), (400, 12), (150, 49), (29, 1)])
def test_carried_hop_and_fixed_hop_follow_upstream_including_its_stale_break(n, p):
    carried = session_schedule(n, p, hop_at_start=100)
    assert _calls(carried) == _UpstreamInstance(hop=100, max_hop=100).tts(n, p)
    fixed = session_schedule(n, p, growth=1)
    assert _calls(fixed) == _UpstreamInstance(scale=1).tts(n, p)


def test_stale_break_ends_a_carried_request_early():
    """Upstream's break test reuses this_hop (hop + pad) after the first chunk: with a carried hop of 100 and
    P = 12 (pad 88), 300 tokens get one chunk of 188 and a final call of 112, although a second chunk of 100
    would fit (it needs 103)."""
    s = session_schedule(300, 12, hop_at_start=100)
    assert s.hops() == [188, 112]
    assert session_schedule(400, 12, hop_at_start=100).hops() == [188, 100, 100, 12]


def test_schedule_rejects_bad_options():
    with pytest.raises(InputError, match="growth"):
        session_schedule(100, 0, growth=0)
    with pytest.raises(InputError, match="final_mask"):
        SessionOptions(final_mask="nope").resolve(_tiny_cfg())
    with pytest.raises(InputError, match="hop_state"):
        SessionOptions(hop_state="sticky").resolve(_tiny_cfg())
    with pytest.raises(InputError, match="initial_hop"):
        SessionOptions(initial_hop=50, max_hop=25).resolve(_tiny_cfg())


def _tiny_cfg():
    from reference.config import preset

    return preset("tiny")


def test_options_come_from_the_config():
    cfg = _tiny_cfg()
    r = SessionOptions().resolve(cfg)
    assert (r.initial_hop, r.max_hop, r.growth, r.lookahead, r.token_mel_ratio) == (
        cfg.chunk_size, 4 * cfg.chunk_size, 2, cfg.flow.pre_lookahead_len, cfg.flow.token_mel_ratio)
    assert (r.final_mask, r.hop_state) == ("upstream", "fresh")
    cfg.chunk_size = 20
    assert SessionOptions().resolve(cfg).initial_hop == 20 and SessionOptions().resolve(cfg).max_hop == 80


# --------------------------------------------------------------------------------------------
# the reference session


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    return load_bundle(STREAM)


def _session(pipe, inputs, options=None, patterns=SESSION_PATTERNS, state=None):
    rec = Recorder(patterns)
    res = pipe.run_session(inputs, Probe(rec), options, state=state)
    return res, rec


@pytest.fixture(scope="module")
def ref(model, inputs):
    return _session(model, inputs)


@pytest.fixture(scope="module")
def single_calls(model, inputs):
    """One flow call on all tokens: with the chunk mask (finalize=True) and offline."""
    b = inputs
    with torch.inference_mode():
        return {s: model.flow.inference(b["token"], b["prompt_token"], b["prompt_feat"], b["embedding"], model.noise,
                                        streaming=s, finalize=True) for s in (True, False)}


def test_session_bundle_is_long_enough(inputs, ref):
    res, _ = ref
    assert inputs["token"].shape[1] >= 180 and inputs["prompt_token"].shape[1] % 25 != 0
    assert res.schedule.n_chunks >= 3 and res.schedule.chunks[-1].finalize


def test_stages_and_metadata(ref, inputs):
    res, rec = ref
    n = len(res.chunks)
    expected = canonical_session_expected(n, {0, n - 1})
    assert rec.order == expected, set(rec.order) ^ set(expected)
    assert sort_stages(reversed(rec.order)) == expected
    T = rec.tensors
    for ch in res.schedule.chunks:
        c = ch.index
        assert torch.equal(T[f"chunk{c}.tokens"], inputs["token"][:, :ch.n_tokens].long())
        assert int(T[f"chunk{c}.token_offset"]) == ch.token_offset
        assert int(T[f"chunk{c}.finalize"]) == int(ch.finalize) and int(T[f"chunk{c}.streaming"]) == int(not ch.finalize)
        assert T[f"chunk{c}.flow_mel_full"].shape[2] == 2 * (ch.n_tokens - (0 if ch.finalize else 3))
        assert T[f"chunk{c}.mel"].shape[2] == 2 * ch.hop
    assert torch.equal(T["stream.mel"], torch.cat([T[f"chunk{c}.mel"] for c in range(n)], 2))
    assert torch.equal(T["stream.audio"], torch.cat([T[f"chunk{c}.audio"] for c in range(n)], 1))
    assert [c.samples for c in res.chunks] == res.expected_samples() == [32640, 48000, 96000, 34560]
    meta = json.loads(json.dumps(res.metadata()))  # JSON-safe
    assert meta["session_options"] == {"initial_hop": 25, "max_hop": 100, "growth": 2, "lookahead": 3,
                                       "token_mel_ratio": 2, "final_mask": "upstream", "hop_state": "fresh",
                                       "carried_hop": 100, "step_chunks": ["first", "last"]}
    assert [c["hop"] for c in meta["session_schedule"]["chunks"]] == [38, 50, 100, 32]
    assert meta["session_holdback_frames"] == 8 and meta["session_deviations"] == {}


def test_session_provenance(model):
    p = session_provenance(model, SessionOptions(final_mask="streaming"))
    assert p["session"] == "streaming" and p["streaming"] is True and p["pipeline"] == "reference"
    assert p["session_options"]["final_mask"] == "streaming" and p["session_options"]["initial_hop"] == 25
    c = session_provenance(_cand(model, faults=("session-fixed-hop",)))
    assert c["faults"] == ["session-fixed-hop"] and c["session_options"]["growth"] == 2  # the fault is in faults


def test_streamed_audio_is_one_hift_run_over_the_cumulative_mel(model, inputs, ref):
    res, _ = ref
    with torch.inference_mode():
        one = model.hift.inference(res.mel, model.noise, finalize=True)
    # without the length-invariant option: oneDNN's conv results depend on the sequence length; measured max
    # |diff| 1.07e-6 on the session bundle (6.6e-7 on `long`) -- a float32 rounding difference at |audio| <= 0.99
    assert one.shape == res.audio.shape
    assert float((one - res.audio).abs().max()) < 1e-5
    model.hift.set_length_invariant(True)
    try:
        res_li = model.run_session(inputs)
        with torch.inference_mode():
            one_li = model.hift.inference(res_li.mel, model.noise, finalize=True)
    finally:
        model.hift.set_length_invariant(False)
    assert torch.equal(res_li.audio, one_li)


def test_chunk_mels_equal_single_call_frames(ref, single_calls):
    """Non-final chunks: the single streaming flow call's frames (the chunk mask makes them independent of
    later tokens); the final call: the offline flow's frames (upstream runs it without the mask)."""
    res, rec = ref
    for ch in res.schedule.chunks:
        a, e = 2 * ch.token_offset, 2 * (ch.token_offset + ch.hop)
        mel = rec.tensors[f"chunk{ch.index}.mel"]
        if ch.finalize:
            assert torch.equal(mel, single_calls[False][:, :, a:e])
        else:
            # measured max |diff| 1.67e-6 (session bundle), 9.5e-7 (`long`): matmul results depend on the sequence
            # length (a non-final call holds fewer frames); |mel| <= ~12, where 1 float32 ulp is ~9.5e-7
            d = float((mel - single_calls[True][:, :, a:e]).abs().max())
            assert d < 1e-5, (ch.index, d)
            assert float((mel - single_calls[False][:, :, a:e]).abs().max()) > 1e-2  # the mask does matter


def test_final_mask_streaming_option(model, inputs, single_calls):
    res, rec = _session(model, inputs, SessionOptions(final_mask="streaming"), patterns=["chunk*.mel",
                                                                                          "chunk*.streaming"])
    last = res.schedule.chunks[-1]
    assert int(rec.tensors[f"chunk{last.index}.streaming"]) == 1
    a = 2 * last.token_offset
    assert float((rec.tensors[f"chunk{last.index}.mel"] - single_calls[True][:, :, a:]).abs().max()) < 1e-5


def test_hop_state_carried_across_requests(model, inputs):
    state = HopState()
    first, _ = _session(model, inputs, SessionOptions(hop_state="carried", carried_hop=25), patterns=[], state=state)
    assert first.schedule.hop_at_start == 25 and state.token_hop_len == 100
    second, _ = _session(model, inputs, SessionOptions(hop_state="carried"), patterns=[], state=state)
    assert second.schedule.hop_at_start == 100 and second.schedule.hops() == [188, 32]
    assert second.metadata()["session_schedule"]["prompt_pad"] == 88
    fresh, _ = _session(model, inputs, SessionOptions(), patterns=[], state=state)
    assert fresh.schedule.hop_at_start == 25 and state.token_hop_len == 100


def test_step_chunks_option(model, inputs):
    _, rec = _session(model, inputs, SessionOptions(step_chunks=("all",)), patterns=["chunk*.step10.x"])
    assert rec.order == [f"chunk{c}.step10.x" for c in range(4)]
    _, rec = _session(model, inputs, SessionOptions(step_chunks=(1,)), patterns=["chunk*.step1.v1"])
    assert rec.order == ["chunk1.step1.v1"]


def test_short_input_is_one_final_call_equal_to_offline(model):
    b = load_bundle(FIXTURES / "bundles" / "short.safetensors")  # 12 tokens: below the first chunk
    res, rec = _session(model, b)
    with torch.inference_mode():
        off = model.run(b)
    assert res.schedule.n_chunks == 0 and torch.equal(res.audio, off)


# --------------------------------------------------------------------------------------------
# the candidate's session and the streaming faults


def _cand(model, profile="fp32-explicit", faults=()):
    return CandidateToken2Wav(model, switches_from(profile, faults), profile)


def _first_diff(a: dict, b: dict) -> str | None:
    for n in sort_stages(set(a) | set(b)):
        if n not in a or n not in b or a[n].shape != b[n].shape or not torch.equal(a[n], b[n]):
            return n
    return None


def test_candidate_runs_the_same_loop(model, inputs, ref):
    res, rec = ref
    c_res, c_rec = _session(_cand(model), inputs)
    assert _first_diff(rec.tensors, c_rec.tensors) is None and c_rec.order == rec.order
    s_res, s_rec = _session(_cand(model, "fp32-sdpa"), inputs)
    assert s_res.schedule == res.schedule
    assert float((s_res.audio - res.audio).abs().max()) < 1e-2  # fp32 SDPA: rounding, amplified by the vocoder


def test_session_faults_are_registered_apart():
    names = set(catalogue("session"))
    assert names == {"session-hift-per-chunk", "session-finalize-every-chunk", "session-final-mask",
                     "session-no-prompt-pad", "session-fixed-hop", "session-mel-slice-off-by-one",
                     "session-noise-per-chunk"}
    assert not names & set(catalogue()) and set(catalogue("all")) == set(catalogue()) | names
    f, params = parse_fault("session-final-mask")
    assert f.stage(params, last_chunk=3) == "chunk3.streaming"


@pytest.fixture(scope="module")
def fault_runs(model, inputs):
    return {name: _session(_cand(model, faults=(name,)), inputs) for name in sorted(catalogue("session"))}


@pytest.mark.parametrize("name", sorted(catalogue("session")))
def test_streaming_fault_is_localised_to_its_chunk_and_stage(model, ref, fault_runs, name):
    _, rrec = ref
    res, rec = fault_runs[name]
    expected = _cand(model, faults=(name,)).expected_session_stage(len(res.chunks) - 1)
    first = _first_diff(rrec.tensors, rec.tensors)
    assert first == expected, f"{name}: first changed stage {first}, catalogue says {expected}"
    for n in rrec.tensors:
        if position(n) < position(expected):
            assert torch.equal(rrec.tensors[n], rec.tensors[n]), f"{name} changed {n} before {expected}"
    assert res.deviations, name  # the trace metadata says what the loop did differently
    assert not torch.equal(rec.tensors["stream.audio"], rrec.tensors["stream.audio"]) or \
        rec.tensors["stream.audio"].shape != rrec.tensors["stream.audio"].shape


def test_plan_before_the_run(model, fault_runs):
    """plan_session says what a (faulty) session will do before it runs: schedule, deviations, step chunks."""
    for name, (res, _) in fault_runs.items():
        plan = plan_session(_cand(model, faults=(name,)), 220, 12)
        assert plan.schedule == res.schedule and plan.deviations == res.deviations, name
        assert plan.step_chunks == (0, len(res.chunks) - 1)
    assert plan_session(model, 220, 12).deviations == {}


def test_session_fault_leaves_single_calls_alone(model, inputs):
    with torch.inference_mode():
        a = model.run(inputs, streaming=True)
        b = _cand(model, faults=("session-hift-per-chunk", "session-noise-per-chunk")).run(inputs, streaming=True)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# glitches


def _glitches(res, ref_res):
    return detect_glitches(res.audio, [c.samples for c in res.chunks], ref_res.audio,
                           expected_samples=res.expected_samples())


CLICKING = {  # fault -> the findings it gets on the session bundle (measured; see parity/streaming_metrics.py)
    "session-hift-per-chunk": {"missing_samples", "spectral_flux"},
    "session-finalize-every-chunk": {"duplicated_samples", "missing_samples"},
    "session-mel-slice-off-by-one": {"missing_samples"},
}


def test_legitimate_streams_have_no_glitches(model, inputs, ref):
    res, _ = ref
    assert _glitches(res, res).findings == []
    s_res, _ = _session(_cand(model, "fp32-sdpa"), inputs, patterns=[])
    rep = _glitches(s_res, res)
    assert rep.findings == [] and len(rep.boundaries) == 3
    assert all(math.isfinite(v) for b in rep.boundaries for v in b.ratios().values())


@pytest.mark.parametrize("name", sorted(CLICKING))
def test_clicking_faults_are_detected(ref, fault_runs, name):
    rep = _glitches(fault_runs[name][0], ref[0])
    assert CLICKING[name] <= rep.kinds(), (name, [f.message for f in rep.findings])
    for f in rep.findings:
        assert f.time_s == pytest.approx(f.boundary_sample / SR) and 0 <= f.chunk < len(fault_runs[name][0].chunks)
    if name == "session-hift-per-chunk":  # the vocoder restarts at chunk 1: the flux spike names it
        flux = [f for f in rep.findings if f.kind == "spectral_flux"]
        assert flux[0].chunk == 1 and flux[0].boundary_sample == 32640 and flux[0].time_s == pytest.approx(1.36)
        missing = {f.chunk: f.value for f in rep.findings if f.kind == "missing_samples"}
        assert missing == {1: -3840.0, 2: -3840.0, 3: -3840.0}  # 8 held-back frames never emitted, per chunk


def test_expected_samples_agree():
    s = session_schedule(220, 12)
    offsets = [c.token_offset for c in s.chunks]
    assert expected_chunk_samples(offsets, 220) == s.expected_samples(2, 480, 8) == [32640, 48000, 96000, 34560]
    assert chunk_starts([3, 4, 5]) == [0, 3, 7]
    f = sample_count_findings([100, 90, 110], [100, 100, 100])
    assert [(x.kind, x.chunk, x.value, x.boundary_sample) for x in f] == [
        ("missing_samples", 1, -10.0, 100), ("duplicated_samples", 2, 10.0, 190)]


def _tone(n=SR, f=220.0):
    t = np.arange(n) / SR
    return 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * np.sin(2 * np.pi * 3.1 * f * t)


def test_glitch_detectors_on_synthetic_splices():
    x = _tone()
    counts = [8000, 8000, 8000]
    assert detect_glitches(x, counts, x).findings == []
    # a vocoder restart at the second boundary: the signal after it starts from silence
    y = x.copy()
    y[16000:] = x[16000:] * np.minimum(np.arange(8000) / 120.0, 1.0)
    rep = detect_glitches(y, counts, x)
    assert {(f.kind, f.chunk, f.boundary_sample) for f in rep.findings} >= {("sample_discontinuity", 2, 16000)}
    assert all(f.chunk == 2 for f in rep.findings)
    # 120 samples dropped at the first boundary
    z = np.concatenate([x[:8000], x[8120:]])
    rep = detect_glitches(z, [8000, 7880, 8000], x, expected_samples=counts)
    kinds = {(f.kind, f.chunk) for f in rep.findings}
    assert ("missing_samples", 1) in kinds and ("sample_discontinuity", 1) in kinds
    # a DC step of 0.02 from the first boundary on
    d = x.copy()
    d[8000:] += 0.02
    assert ("dc_step", 1) in {(f.kind, f.chunk) for f in detect_glitches(d, counts, x).findings}


def test_glitch_detector_nan_handling():
    x = _tone()
    y = x.copy()
    y[12000] = np.nan
    rep = detect_glitches(y, [8000, 8000, 8000], x)
    assert [(f.kind, f.chunk, f.boundary_sample) for f in rep.findings] == [("nonfinite", 1, 12000)]
    with pytest.raises(ValueError, match="reference stream holds NaN"):
        detect_glitches(x, [24000], y)
    with pytest.raises(ValueError, match="emitted"):
        detect_glitches(x, [100], x)


def test_thresholds_are_documented():
    from parity.measure.streaming_metrics import THRESHOLD_EVIDENCE

    th = GlitchThresholds()
    for key in ("discontinuity_ratio", "flux_ratio", "dc_ratio", "dc_min"):
        assert key in THRESHOLD_EVIDENCE and "legit" in THRESHOLD_EVIDENCE[key], key
        assert THRESHOLD_EVIDENCE[key]["limit"] == getattr(th, key)
        assert THRESHOLD_EVIDENCE[key]["legit"] < getattr(th, key)


# --------------------------------------------------------------------------------------------
# stream vs offline


def test_stream_offline_drift(model, inputs, ref, single_calls):
    res, rec = ref
    with torch.inference_mode():
        off_audio = model.hift.inference(single_calls[False], model.noise, finalize=True)
    frames = [(2 * c.token_offset, 2 * (c.token_offset + c.hop)) for c in res.schedule.chunks]
    samples = [(c.start_sample, c.start_sample + c.samples) for c in res.chunks]
    drift = stream_offline_drift(res.mel, single_calls[False], res.audio, off_audio, frames, samples)
    assert [d.frames for d in drift] == frames
    assert drift[-1].mel_max_abs == 0.0  # upstream's final call is the offline flow
    assert all(d.mel_max_abs > 1e-2 and math.isfinite(d.mel_rel_l2) for d in drift[:-1])  # the chunk mask's cost
    same = stream_offline_drift(res.mel, res.mel, res.audio, res.audio, frames, samples)
    assert all(d.mel_max_abs == 0 and d.audio_snr_db is None for d in same)
    bad = res.mel.clone()
    bad[0, 0, 5] = float("nan")
    assert math.isnan(stream_offline_drift(bad, res.mel, res.audio, res.audio, frames, samples)[0].mel_max_abs)


# --------------------------------------------------------------------------------------------
# traces and port-style chunked dumps


def test_session_trace_round_trip(tmp_path, ref):
    res, rec = ref
    path = tmp_path / "session.safetensors"
    w = TraceWriter(path, res.metadata())
    for n in rec.order:
        w.add(n, rec.tensors[n])
    w.close()
    back = ingest_load(path)
    assert set(back.tensors) == set(rec.order) and back.normalisations == []
    assert back.metadata["session_schedule"]["prompt_pad"] == 13 and back.metadata["session"] == "streaming"


def test_chunked_npy_dump_is_ingested_with_the_dialect_mapping(tmp_path, ref):
    res, rec = ref
    T = rec.tensors
    port = tmp_path / "port_dump"
    for c in range(len(res.chunks)):
        d = port / f"chunk_{c}"
        d.mkdir(parents=True)
        np.save(d / "tts_mel.npy", T[f"chunk{c}.mel"].numpy())
        np.save(d / "tts_speech.npy", T[f"chunk{c}.audio"].numpy())
        np.save(d / "token_offset.npy", T[f"chunk{c}.token_offset"].numpy())
        np.save(d / "flow_mel.npy", T[f"chunk{c}.flow_mel_full"].numpy())
    np.save(port / "stream_audio.npy", T["stream.audio"].numpy())
    np.save(port / "speech_token.npy", T["token"].numpy())
    got = ingest_load(port)
    for c in range(len(res.chunks)):
        for field in ("mel", "audio", "token_offset", "flow_mel_full"):
            assert torch.equal(got.tensors[f"chunk{c}.{field}"], T[f"chunk{c}.{field}"]), (c, field)
    assert torch.equal(got.tensors["stream.audio"], T["stream.audio"]) and "token" in got.tensors
    renames = {n["detail"] for n in got.normalisations if n["kind"] == "rename"}
    assert "'chunk_0/tts_speech' -> 'chunk0.audio'" in renames
    assumed = [n for n in got.normalisations if n.get("assumption") and n["stage"] == "chunk0.flow_mel_full"]
    assert assumed and "before the token_offset slice" in assumed[0]["assumption"]
    # flat names in one folder
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "chunk_0_mel.npy", T["chunk0.mel"].numpy())
    np.save(flat / "chunk0_audio.npy", T["chunk0.audio"].numpy())
    np.save(flat / "chunk_1_step_3_v1.npy", np.zeros((1, 80, 4), np.float32))
    got = ingest_load(flat)
    assert set(got.tensors) == {"chunk0.mel", "chunk0.audio", "chunk1.step3.v1"}
