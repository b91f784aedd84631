"""Tests of the audio metrics (parity.audio_metrics) on constructed signals with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import fft as sfft

from parity.measure.audio_metrics import (AUDIO_LIMIT, LOG_MEL_FLOOR, audio_report, audio_side_stats, click_detector,
                                  clipping_runs, f0_metrics, log_spectral_distance, logmel_distance, mcd, si_sdr_db,
                                  snr_db, stft_power)
from parity.measure.metrics import ShapeMismatch, to_jsonable

SR = 24000


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic signal with a gliding F0, amplitude modulation and a little broadband noise (HF content)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.25 / k) * np.sin(k * ph) for k in range(1, 30))
    x = x * (0.4 + 0.6 * np.sin(2 * np.pi * 1.5 * t) ** 2) + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def toy_mel(wave: np.ndarray) -> np.ndarray:
    """Stand-in for the pipeline's mel recipe: STFT power pooled into 80 bands, ln with the 1e-5 floor."""
    p = stft_power(wave)  # [T, 961]
    bands = np.array_split(np.arange(p.shape[1]), 80)
    mel = np.stack([p[:, b].mean(axis=1) for b in bands], axis=0)  # [80, T]
    return np.log(np.maximum(mel, 1e-5))


def dumps(obj) -> str:
    return json.dumps(to_jsonable(obj), allow_nan=False)


# ----------------------------------------------------------------------------------------------


def test_identical_audio_gives_zero_distances():
    x = speechlike()
    rep = audio_report(x, x.copy(), mel_fn=toy_mel)
    assert rep["finite_ok"] is True and rep["notes"] == []
    wf = rep["waveform"]
    assert wf["max_abs_err"] == 0.0 and wf["mean_abs_err"] == 0.0 and wf["max_abs_err_sample"] is None
    assert wf["snr_db"] is None and wf["special"]["snr_db"] == "+inf"
    assert wf["si_sdr_db"] is None and wf["special"]["si_sdr_db"] == "+inf"
    sp = rep["spectral"]
    assert sp["lsd_db_mean"] == 0.0 and sp["lsd_db_max"] == 0.0 and sp["spectral_convergence"] == 0.0
    assert rep["mel"]["source"] == "mel_fn"
    assert rep["mel"]["logmel_l1"] == 0.0 and rep["mel"]["mcd_db"] == 0.0
    assert rep["clicks"]["diff_ratio_max"] == 0.0 and rep["clicks"]["ratio_max"] < 1.0
    assert rep["length"] == {"ref_samples": x.size, "cand_samples": x.size, "match": True,
                             "compared_samples": x.size, "trimmed": False}
    n_frames = x.size // 480
    pf = rep["per_frame"]
    assert pf["lsd_db"].shape == (n_frames,) and pf["logmel_l1"].shape == (n_frames,)
    assert pf["click_ratio"].shape == (x.size // 240,)
    assert rep["per_frame_hop_s"]["lsd_db"] == 0.02 and rep["per_frame_hop_s"]["click_ratio"] == 0.01
    dumps(rep)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 20.0), st.sampled_from([1.0, -1.0]))
def test_si_sdr_is_scale_invariant(scale, sign):
    r = speechlike(0.25)
    c = r + 0.01 * np.random.default_rng(3).standard_normal(r.size)
    base = si_sdr_db(r, c)
    assert si_sdr_db(r, sign * scale * c) == pytest.approx(base, abs=1e-6)


@pytest.mark.parametrize("target_db", [10.0, 20.0, 40.0])
def test_snr_of_added_noise(target_db):
    r = speechlike(4.0, seed=1).astype(np.float64)
    noise = np.random.default_rng(7).standard_normal(r.size)
    noise *= math.sqrt(np.mean(r ** 2) / 10 ** (target_db / 10))  # std chosen from the signal power
    c = r + noise
    assert snr_db(r, c) == pytest.approx(target_db, abs=0.1)
    assert si_sdr_db(r, c) == pytest.approx(target_db, abs=0.1)  # uncorrelated noise: a ~= 1
    rep = audio_report(r, c)
    assert rep["waveform"]["snr_db"] == pytest.approx(target_db, abs=0.1)


def test_clipping_runs_on_constructed_signal():
    x = np.zeros(100, dtype=np.float32)
    x[10:13] = 0.99  # run of 3
    x[20] = 0.99  # single peak: not a run
    x[30:32] = -0.99  # run of 2
    x[50:55] = np.float32(0.99)  # run of 5
    x[60:62] = 0.98  # below the clamp
    x[70] = 0.99 - 5e-7  # within eps of the clamp, isolated
    c = clipping_runs(x)
    assert c["runs"] == 3 and c["longest_run"] == 5 and c["clamp_samples"] == 3 + 1 + 2 + 5 + 1
    assert c["first_run_start"] == 10
    assert c["over_limit"] is False  # float32(0.99) is the clamp itself
    y = x.copy()
    y[90] = 0.995
    c2 = clipping_runs(y)
    assert c2["over_limit"] is True and c2["over_limit_count"] == 1
    s = audio_side_stats(torch.from_numpy(x).reshape(1, 1, -1))
    assert s["clipping"]["runs"] == 3 and s["n_samples"] == 100
    assert clipping_runs(np.full(10, -AUDIO_LIMIT))["runs"] == 1


def test_side_stats_levels_and_silence():
    x = np.full(SR, 0.5)
    s = audio_side_stats(x)
    assert s["duration_s"] == 1.0 and s["dc_offset"] == 0.5
    assert s["rms_dbfs"] == pytest.approx(20 * math.log10(0.5)) and s["peak_dbfs"] == pytest.approx(-6.0206, abs=1e-4)
    z = audio_side_stats(np.zeros(10))
    assert z["rms_dbfs"] is None and z["special"]["rms_dbfs"] == "-inf"
    dumps(z)


@pytest.mark.parametrize("pos", [1000, 50120, 240 * 100 + 1, 240 * 150 - 1])
def test_click_detector_localises_one_sample_click(pos):
    r = speechlike(3.0)
    c = (r + 0.002 * np.random.default_rng(5).standard_normal(r.size)).astype(np.float32)
    c[pos] += 0.3
    out = click_detector(r, c)
    assert out["available"] and out["frame_samples"] == 240
    assert out["worst_frame"] == pos // 240
    assert out["diff_ratio_max"] > 5 and out["diff_worst_frame"] == pos // 240
    assert out["worst_time_s"] == pytest.approx((pos // 240) * 0.01)
    ratio = out["per_frame"]["click_ratio"]
    others = np.delete(ratio, pos // 240)
    assert out["ratio_max"] > 3 * np.percentile(others, 99)
    rep = audio_report(r, c)
    assert rep["clicks"]["worst_frame"] == pos // 240


def test_f0_cents_for_a_semitone():
    ref = np.full(50, 200.0)
    out = f0_metrics(ref, ref * 2 ** (1 / 12))
    assert out["f0_rmse_cents"] == pytest.approx(100.0, abs=1e-9)
    assert out["f0_mean_abs_cents"] == pytest.approx(100.0, abs=1e-9)
    assert out["gpe"] == 0.0 and out["vde"] == 0.0 and out["both_voiced"] == 50
    down = f0_metrics(ref, ref * 2 ** (-7 / 12))
    assert down["f0_rmse_cents"] == pytest.approx(700.0, abs=1e-9)
    assert down["gpe"] == 1.0  # ratio 0.667: more than 20 % off
    octave = f0_metrics(torch.tensor([[100.0, 100.0]]), torch.tensor([[[200.0, 200.0]]]))
    assert octave["f0_rmse_cents"] == pytest.approx(1200.0)


def test_gpe_vde_on_constructed_arrays():
    ref = np.array([0, 100, 100, 100, 100, 0, 200, 200, 10.0])
    cand = np.array([0, 100, 130, 100, 0, 150, 200, 250, 10.0])  # 10 Hz is not voiced (> 10 is)
    out = f0_metrics(ref, cand)
    assert out["ref_voiced"] == 6 and out["cand_voiced"] == 6 and out["both_voiced"] == 5
    assert out["gpe_count"] == 2 and out["gpe"] == pytest.approx(2 / 5)  # ratios 1.3 and 1.25
    assert out["vde_count"] == 2 and out["vde"] == pytest.approx(2 / 9)
    assert out["ffe"] == pytest.approx(4 / 9)
    assert out["f0_mae_hz"] == pytest.approx((30 + 100 + 150 + 50) / 9)
    mask = out["per_frame"]["f0_both_voiced"]
    assert list(np.flatnonzero(mask)) == [1, 2, 3, 6, 7]
    assert out["per_frame"]["f0_cents"][0] == 0.0
    none = f0_metrics(np.zeros(4), np.zeros(4))
    assert none["f0_rmse_cents"] is None and none["gpe"] is None and none["vde"] == 0.0


def test_mcd_and_logmel_hand_values():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-8, 0, size=(80, 30))
    shifted = ref + 0.7  # a constant offset lives only in c0, which MCD drops
    assert mcd(ref, shifted)["mcd_db"] == pytest.approx(0.0, abs=1e-9)
    assert logmel_distance(ref, shifted)["logmel_l1"] == pytest.approx(0.7)
    # perturb one cepstral coefficient by eps: MCD = (10/ln10) * sqrt(2) * eps in every frame
    eps, k = 0.05, 3
    basis = sfft.idct(np.eye(80)[:, k], type=2, norm="ortho")
    out = mcd(ref, ref + eps * basis[:, None])
    assert out["mcd_db"] == pytest.approx(10 / math.log(10) * math.sqrt(2) * eps, rel=1e-9)
    assert out["per_frame"].shape == (30,)
    # coefficients beyond n_cep are ignored
    basis20 = sfft.idct(np.eye(80)[:, 20], type=2, norm="ortho")
    assert mcd(ref, ref + basis20[:, None], n_cep=13)["mcd_db"] == pytest.approx(0.0, abs=1e-9)
    # the floor: values below ln(1e-5) count as the floor
    low = np.full((80, 4), LOG_MEL_FLOOR)
    assert logmel_distance(low, low - 5.0)["logmel_l1"] == 0.0
    with pytest.raises(ShapeMismatch):
        mcd(ref, ref[:, :-1])
    with pytest.raises(ValueError):
        mcd(ref, np.where(ref > -1, np.nan, ref))


def test_lsd_gain_and_floor():
    x = np.random.default_rng(2).standard_normal(SR).astype(np.float64) * 0.1
    out = log_spectral_distance(x, 2 * x)
    assert out["n_frames"] == SR // 480 and out["n_active"] == SR // 480
    assert out["lsd_db_mean"] == pytest.approx(20 * math.log10(2), abs=0.05)
    assert out["spectral_convergence"] == pytest.approx(1.0, rel=1e-6)
    # silence in the reference is not an active frame
    y = x.copy()
    y[: SR // 2] = 0
    out = log_spectral_distance(y, y + 1e-4 * np.random.default_rng(3).standard_normal(SR))
    assert out["n_active"] < out["n_frames"] and not out["per_frame"]["lsd_active"][0]


def test_nonfinite_audio_is_reported_and_sanitised():
    r = speechlike(1.0)
    c = r.copy()
    c[1234:1240] = np.nan
    c[5000] = np.inf
    rep = audio_report(r, c, mel_fn=toy_mel)
    assert rep["finite_ok"] is False
    assert rep["cand"]["nonfinite"] == {"nan": 6, "posinf": 1, "neginf": 0, "total": 7, "first_index": 1234}
    assert rep["sanitized"] == {"ref": False, "cand": True, "replacement": 0.0}
    assert any("non-finite" in n for n in rep["notes"])
    # the rest is still computed, on the sanitised copy, and is finite
    assert rep["waveform"]["snr_db"] is not None and rep["mel"]["logmel_l1"] > 0
    assert rep["clicks"]["diff_worst_frame"] in (1234 // 240, 1239 // 240, 5000 // 240)
    dumps(rep)


def test_mel_and_f0_tensors_in_report():
    r = speechlike(1.0)
    c = (r + 0.001 * np.random.default_rng(4).standard_normal(r.size)).astype(np.float32)
    mel_r = torch.from_numpy(toy_mel(r)).unsqueeze(0)  # [1, 80, T]
    mel_c = torch.from_numpy(toy_mel(c)).unsqueeze(0)
    f0_r = torch.full((1, mel_r.shape[-1]), 150.0)
    f0_c = f0_r.clone()
    f0_c[0, 5] = float("nan")
    rep = audio_report(r, c, ref_mel=mel_r, cand_mel=mel_c, ref_f0=f0_r, cand_f0=f0_c)
    assert rep["mel"]["source"] == "tensors" and rep["mel"]["n_frames"] == mel_r.shape[-1]
    assert rep["mel"]["mcd_db"] > 0
    assert rep["f0"]["nonfinite"]["cand"]["nan"] == 1 and rep["finite_ok"] is False
    assert rep["f0"]["vde_count"] == 1  # the NaN frame became unvoiced
    assert rep["f0"]["f0_rmse_cents"] == pytest.approx(0.0)
    dumps(rep)


def test_length_mismatch_and_missing_inputs():
    r = speechlike(1.0)
    c = r[:-480]
    rep = audio_report(r, c)
    assert rep["length"]["match"] is False and rep["waveform"] is None and rep["spectral"] is None
    assert any("length mismatch" in n for n in rep["notes"])
    assert rep["mel"] is None and rep["f0"] is None
    rep = audio_report(r, c, allow_trim=True)
    assert rep["length"]["trimmed"] is True and rep["length"]["compared_samples"] == c.size
    assert rep["waveform"]["special"]["snr_db"] == "+inf"

    def broken(_):
        raise RuntimeError("boom")

    rep = audio_report(r, r, mel_fn=broken)
    assert rep["mel"] is None and any("mel_fn failed" in n for n in rep["notes"])
    with pytest.raises(ValueError):
        audio_report(np.zeros((2, 100)), np.zeros((2, 100)))  # stereo is not mono
    with pytest.raises(ValueError):
        audio_report(np.zeros(100, dtype=np.int16), np.zeros(100, dtype=np.int16))  # integer PCM


def test_silent_reference():
    z = np.zeros(4800)
    assert math.isnan(si_sdr_db(z, z + 1e-3))
    rep = audio_report(z, z + 1e-3)
    assert rep["waveform"]["si_sdr_db"] is None and rep["waveform"]["special"]["si_sdr_db"] == "undefined"
    assert rep["waveform"]["special"]["snr_db"] == "-inf"
    assert rep["spectral"]["n_active"] == 0 and rep["spectral"]["lsd_db_mean"] is None
    dumps(rep)
