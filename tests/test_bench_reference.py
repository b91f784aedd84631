"""benchmarks/bench_reference.py: the analytic FLOP count, and the script end to end in --quick mode."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench_reference as br
from reference.config import preset
from reference.dit import DiT


@pytest.mark.parametrize("name", ["tiny", "cosyvoice3-0.5b"])
@pytest.mark.parametrize("streaming", [False, True])
def test_dit_flops_equal_torch_flop_counter(name, streaming):
    """The documented count equals torch's own FlopCounterMode (matmuls, convs) on the real module, run on
    the meta device (no memory, no compute)."""
    cfg = preset(name).flow.decoder.estimator
    T = 150
    with torch.device("meta"):
        est = DiT(cfg)
        ins = (torch.randn(2, 80, T), torch.ones(2, 1, T), torch.randn(2, 80, T), torch.rand(2), torch.randn(2, 80),
               torch.randn(2, 80, T))
    with FlopCounterMode(display=False) as fc:
        est(*ins, streaming=streaming)
    assert br.dit_forward_flops(cfg, 2, T)["total"] == fc.get_total_flops()


def test_flow_flops_are_ten_dit_forwards_plus_front_end():
    cfg = preset("cosyvoice3-0.5b").flow
    dit = br.dit_forward_flops(cfg.decoder.estimator, 2, 150)["total"]
    total = br.flow_inference_flops(cfg, 25, 50)
    assert 10 * dit < total < 10 * dit * 1.001


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_quick_run_writes_json(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench.json"
    # one thread, as the rest of the test suite (the script's default is 2)
    res = br.main(["--quick", "--repeats", "1", "--no-memory", "--threads", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert "| dit_fwd[tiny] | ours |" in text and "upstream rows and ratios skipped" in text
    data = json.loads(out.read_text())
    assert data["upstream"]["note"].startswith("not run")
    names = {(r["name"], r["impl"]) for r in data["tasks"]}
    assert ("flow[tiny]", "ours") in names and ("noise_10s", "ours") in names
    assert all(r["impl"] == "ours" for r in data["tasks"])
    assert data["mm"]["gflops_median"] > 0
    assert set(data["targets"]) >= {"dit_fwd >= 60% of mm rate", "noise_10s < 5% of e2e_10s"}
    assert all(t["met"] is None for t in data["targets"].values())  # targets are for the full-size run
    assert res["config"]["quick"] is True and data["env"]["threads"] == 1


def test_upstream_path_must_hold_cosyvoice(tmp_path, keep_threads):
    with pytest.raises(SystemExit):
        br.main(["--quick", "--upstream", str(tmp_path), "--no-memory", "--threads", "1"])
