"""pytest-benchmark suite (benchmarks, not timed tests: nothing here asserts a speed).

    pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/results/latest.json
    pytest benchmarks/ --benchmark-only --benchmark-autosave --benchmark-storage=benchmarks/results
    pytest benchmarks/ --benchmark-only --benchmark-storage=benchmarks/results --benchmark-compare=0001
    pytest benchmarks/ --benchmark-only -m parity_full          # the full-size preset too (slow)

CI-sized by default (tiny preset, short bundle). The interleaved speed-up ratios with their targets are
made by ``benchmarks/bench_profiles.py`` and summarised in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import resolve_profile
from parity.capture.recorder import Recorder
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.ingest import Loaded
from parity.judge.policy import load_policy
from parity.project import shipped_profiles
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.probe import Probe

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "fixtures" / "bundles" / "short.safetensors"
MEDIUM = ROOT / "fixtures" / "bundles" / "medium.safetensors"
CPU_PROFILES = shipped_profiles("cpu", include_reference=True)


@pytest.fixture(scope="module")
def tiny():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def full():
    return Token2Wav.from_preset("cosyvoice3-0.5b")


def _run(pipe, inputs, probe=None):
    with torch.inference_mode():
        return pipe.run(inputs, probe)


def test_reference_tiny(benchmark, tiny):
    inputs = load_bundle(MEDIUM)
    benchmark.pedantic(_run, args=(tiny, inputs), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("profile", CPU_PROFILES)
def test_profile_tiny(benchmark, tiny, profile):
    inputs = load_bundle(MEDIUM)
    cand = CandidateToken2Wav(tiny, resolve_profile(profile), profile)
    benchmark.extra_info["profile"] = profile
    benchmark.pedantic(_run, args=(cand, inputs), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("probes", ["off", "default-stages", "all-stages"])
def test_capture_overhead_tiny(benchmark, tiny, probes):
    inputs = load_bundle(MEDIUM)

    def run():
        probe = None if probes == "off" else Probe(Recorder(None if probes == "default-stages" else "all"))
        return _run(tiny, inputs, probe)

    benchmark.extra_info["probes"] = probes
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


def _trace(model, bundle, patterns=None):
    rec = Recorder(patterns)
    _run(model, load_bundle(bundle), Probe(rec))
    return rec.tensors


def _compare_bench(benchmark, ref):
    cand = {k: (v + 1e-6 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in ref.items()}
    nbytes = sum(v.numel() * v.element_size() for v in ref.values()) + sum(v.numel() * v.element_size()
                                                                            for v in cand.values())
    policy = load_policy()

    def run():
        return compare_loaded(Loaded(dict(ref), {}, "ref"), Loaded(dict(cand), {}, "cand"), ComparisonSpec(policy=policy))

    benchmark.extra_info["megabytes"] = nbytes / 1e6
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info["MB_per_s"] = nbytes / 1e6 / benchmark.stats.stats.median


def test_compare_throughput_tiny(benchmark, tiny):
    _compare_bench(benchmark, _trace(tiny, MEDIUM, "all"))


def test_report_build_tiny(benchmark, tiny, tmp_path):
    from parity.present.report import build_report

    ref = _trace(tiny, MEDIUM)
    cand = {k: (v + 1e-4 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in ref.items()}
    result = compare_loaded(Loaded(dict(ref), {}, "ref"), Loaded(dict(cand), {}, "cand"), ComparisonSpec(policy=load_policy()))

    def run():
        return build_report(result, tmp_path / "r.html", ref_tensors=ref, cand_tensors=cand)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info["report_kib"] = (tmp_path / "r.html").stat().st_size / 1024


# ---------------------------------------------------------------------------------------------- full size

@pytest.mark.parity_full
def test_reference_full(benchmark, full):
    inputs = load_bundle(SHORT)
    benchmark.pedantic(_run, args=(full, inputs), rounds=3, warmup_rounds=1)


@pytest.mark.parity_full
@pytest.mark.parametrize("profile", ["fp32-sdpa", "compiled", "int8-dynamic"])
def test_profile_full(benchmark, full, profile):
    inputs = load_bundle(SHORT)
    cand = CandidateToken2Wav(full, resolve_profile(profile), profile)
    benchmark.pedantic(_run, args=(cand, inputs), rounds=3, warmup_rounds=1)


@pytest.mark.parity_full
def test_compare_throughput_full(benchmark, full):
    _compare_bench(benchmark, _trace(full, SHORT, "+step*.block*"))
