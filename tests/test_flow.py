"""The reference flow: upstream's numbers, shapes and semantics (issue: reference flow)."""

from __future__ import annotations

import math

import pytest
import torch

from parity.capture.recorder import Recorder
from reference.checkpoint import read_state_dict
from reference.config import config_from_yaml, preset
from reference.dit import apply_rotary_pos_emb, static_chunk_mask
from reference.errors import CheckpointError, InputError
from reference.flow_matching import time_span
from reference.model import build_flow
from reference.noise import SharedNoise, noise_for_config
from reference.probe import Probe

from .conftest import FIXTURES


def make_inputs(n_tok=12, n_prompt=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(token=torch.randint(0, 6561, (1, n_tok), generator=g),
                prompt_token=torch.randint(0, 6561, (1, n_prompt), generator=g),
                prompt_feat=torch.randn(1, 2 * n_prompt, 80, generator=g) - 5,
                embedding=torch.randn(1, 192, generator=g) * 10)


def run_flow(flow, inputs, streaming=False, finalize=True, patterns=None, noise=None):
    rec = Recorder(patterns)
    with torch.inference_mode():
        mel = flow.inference(inputs["token"], inputs["prompt_token"], inputs["prompt_feat"], inputs["embedding"],
                             noise or noise_for_config(preset("tiny")), streaming=streaming, finalize=finalize,
                             probe=Probe(rec))
    return mel, rec.tensors


@pytest.fixture(scope="module")
def tiny_flow():
    return build_flow(preset("tiny"))


def test_t_span_cosine_values():
    expected = [0, 0.0123116, 0.0489435, 0.1089935, 0.1909830, 0.2928932, 0.4122148, 0.5460095, 0.6909831,
                0.8435655, 1.0]
    assert torch.allclose(time_span(10, "cosine"), torch.tensor(expected), atol=1e-6)
    assert torch.allclose(time_span(10, "linear"), torch.linspace(0, 1, 11))


def test_flow_noise_first_values_and_roundtrip(tmp_path):
    n = SharedNoise.from_config(preset("cosyvoice3-0.5b"))
    assert n.flow.shape == (1, 80, 15000)
    assert torch.allclose(n.flow[0, 0, :4], torch.tensor([-1.1258398, -1.1523602, -0.2505786, -0.4338788]), atol=1e-7)
    path = n.save(tmp_path / "noise.safetensors", frames=300, samples=4800)
    m = SharedNoise.load(path)
    assert torch.equal(m.flow_noise(300), n.flow_noise(300))
    assert torch.equal(m.sine_noise(4800), n.sine_noise(4800))
    assert m.fingerprint() == n.fingerprint()
    with pytest.raises(InputError, match="rand_noise"):
        m.flow_noise(301)


def test_rope_rotates_only_head0_interleaved():
    cfg = preset("cosyvoice3-0.5b").flow.decoder.estimator
    from reference.dit import RotaryEmbedding

    rope = RotaryEmbedding(cfg.dim_head).forward_from_seq_len(7)
    q = torch.randn(1, 7, cfg.dim)
    out = apply_rotary_pos_emb(q, rope)
    assert torch.equal(out[..., 64:], q[..., 64:])  # heads 1..15 untouched
    assert not torch.equal(out[:, 1:, :64], q[:, 1:, :64])
    assert torch.equal(out[:, 0], q[:, 0])  # position 0: angle 0
    # interleaved pairs (2j, 2j+1) rotate by p * 10000^(-2j/64)
    p, j = 5, 3
    th = p * 10000 ** (-2 * j / 64)
    a, b = q[0, p, 2 * j], q[0, p, 2 * j + 1]
    assert torch.allclose(out[0, p, 2 * j], a * math.cos(th) - b * math.sin(th), atol=1e-5)
    assert torch.allclose(out[0, p, 2 * j + 1], b * math.cos(th) + a * math.sin(th), atol=1e-5)


def test_adaln_chunk_orders():
    from reference.dit import AdaLayerNormZero, AdaLayerNormZero_Final

    d = 8
    blk = AdaLayerNormZero(d)
    fin = AdaLayerNormZero_Final(d)
    with torch.no_grad():
        for m in (blk, fin):
            m.linear.weight.zero_()
        # bias chunks: shift_msa=1, scale_msa=2, gate_msa=3, shift_mlp=4, scale_mlp=5, gate_mlp=6
        blk.linear.bias.copy_(torch.arange(1, 7).repeat_interleave(d).float())
        fin.linear.bias.copy_(torch.tensor([2.0] * d + [7.0] * d))  # scale=2, shift=7
    x = torch.randn(1, 5, d)
    n = torch.nn.functional.layer_norm(x, (d,), eps=1e-6)
    out, gate_msa, shift_mlp, scale_mlp, gate_mlp = blk(x, torch.zeros(1, d))
    assert torch.allclose(out, n * (1 + 2) + 1, atol=1e-6)
    assert (gate_msa == 3).all() and (shift_mlp == 4).all() and (scale_mlp == 5).all() and (gate_mlp == 6).all()
    assert torch.allclose(fin(x, torch.zeros(1, d)), n * (1 + 2) + 7, atol=1e-6)


def test_unconditional_row_zeroes_mu_spks_cond_not_x(tiny_flow):
    cfm = tiny_flow.decoder
    x, mu, cond = torch.randn(1, 80, 6), torch.randn(1, 80, 6), torch.randn(1, 80, 6)
    spks, mask, t = torch.randn(1, 80), torch.ones(1, 1, 6), torch.tensor([0.3])
    x_in, mask_in, mu_in, t_in, spks_in, cond_in = cfm.cfg_batch(x, mask, mu, t, spks, cond)
    assert torch.equal(x_in[0], x[0]) and torch.equal(x_in[1], x[0])
    assert torch.equal(mu_in[0], mu[0]) and (mu_in[1] == 0).all()
    assert torch.equal(spks_in[0], spks[0]) and (spks_in[1] == 0).all()
    assert torch.equal(cond_in[0], cond[0]) and (cond_in[1] == 0).all()
    assert (t_in == 0.3).all() and (mask_in == 1).all()


def test_cfg_combination_and_step_callable(tiny_flow):
    cfm = tiny_flow.decoder
    x, mu, cond = torch.randn(1, 80, 6), torch.randn(1, 80, 6), torch.randn(1, 80, 6)
    spks, mask = torch.randn(1, 80), torch.ones(1, 1, 6)
    with torch.inference_mode():
        x1, v1, v2, v_cfg = cfm.step(x, torch.tensor([0.1]), torch.tensor(0.05), mu, mask, spks, cond)
    assert torch.allclose(v_cfg, 1.7 * v1 - 0.7 * v2, atol=1e-6)
    assert torch.allclose(x1, x + 0.05 * v_cfg, atol=1e-6)


def test_output_shapes_and_prompt_slice(tiny_flow):
    inputs = make_inputs(n_tok=12, n_prompt=10)
    mel, st = run_flow(tiny_flow, inputs)
    T = 2 * (12 + 10)
    assert mel.shape == (1, 80, 24) and mel.dtype == torch.float32
    for name in ("mu", "cond", "x0"):
        assert st[name].shape == (1, 80, T)
    assert st["spks"].shape == (1, 80)
    assert torch.equal(mel, st["step10.x"][:, :, 20:])
    assert torch.equal(st["cond"][:, :, :20], inputs["prompt_feat"].transpose(1, 2))
    assert (st["cond"][:, :, 20:] == 0).all()
    assert torch.equal(st["x0"], noise_for_config(preset("tiny")).flow_noise(T))
    names = [f"step{k}.{s}" for k in range(1, 11) for s in ("t", "dt", "v1", "v2", "v_cfg", "x")]
    assert all(n in st for n in names)
    assert not any(".block" in n for n in st)  # per-block outputs are opt-in
    ts = torch.cat([st[f"step{k}.t"] for k in range(1, 11)])
    assert torch.allclose(ts, time_span(10, "cosine")[:-1], atol=1e-6)


def test_block_outputs_opt_in(tiny_flow):
    _, st = run_flow(tiny_flow, make_inputs(), patterns="+step*.block*")
    assert st["step1.block0"].shape == (2, 44, 128) and "step10.block1" in st


def test_streaming_chunk_mask_semantics(tiny_flow):
    m = static_chunk_mask(120, 50)
    for i in (0, 49, 50, 99, 100, 119):
        allowed = m[i].nonzero().flatten()
        assert allowed.min() == 0 and allowed.max() == min((i // 50 + 1) * 50, 120) - 1
    # streaming: frames in the first chunk cannot see later frames, so changing a late token leaves them alone
    inputs = make_inputs(n_tok=40, n_prompt=10)  # T = 100 frames: two chunks
    _, a = run_flow(tiny_flow, inputs, streaming=True)
    changed = dict(inputs, token=inputs["token"].clone())
    changed["token"][0, -1] = (changed["token"][0, -1] + 1) % 6561
    _, b = run_flow(tiny_flow, changed, streaming=True)
    assert torch.equal(a["step10.x"][:, :, :50], b["step10.x"][:, :, :50])
    assert not torch.equal(a["step10.x"][:, :, 50:], b["step10.x"][:, :, 50:])
    _, off = run_flow(tiny_flow, changed)
    assert not torch.equal(a["step10.x"][:, :, :50], off["step10.x"][:, :, :50])  # offline attention is full


def test_non_final_chunk_uses_real_right_context(tiny_flow):
    inputs = make_inputs(n_tok=12, n_prompt=10)
    mel, st = run_flow(tiny_flow, inputs, streaming=True, finalize=False)
    assert mel.shape == (1, 80, 2 * (12 - 3))


def test_two_runs_bit_identical(tiny_flow):
    inputs = make_inputs()
    _, a = run_flow(tiny_flow, inputs)
    _, b = run_flow(build_flow(preset("tiny")), inputs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_token_too_short_for_lookahead(tiny_flow):
    inputs = make_inputs(n_tok=2, n_prompt=1)
    with pytest.raises(InputError, match="lookahead"):
        run_flow(tiny_flow, inputs, streaming=True, finalize=False)
    with pytest.raises(InputError, match="'token' is empty"):
        run_flow(tiny_flow, dict(inputs, token=torch.zeros(1, 0, dtype=torch.long)))


def test_negative_ids_clamped_and_bad_inputs_named(tiny_flow):
    inputs = make_inputs()
    neg = dict(inputs, token=inputs["token"].clone())
    neg["token"][0, 0] = -1
    zero = dict(inputs, token=inputs["token"].clone())
    zero["token"][0, 0] = 0
    assert torch.equal(run_flow(tiny_flow, neg)[0], run_flow(tiny_flow, zero)[0])
    with pytest.raises(InputError, match="prompt_feat.*time-major"):
        run_flow(tiny_flow, dict(inputs, prompt_feat=inputs["prompt_feat"].transpose(1, 2)))
    with pytest.raises(InputError, match="embedding"):
        run_flow(tiny_flow, dict(inputs, embedding=torch.randn(1, 80)))


def test_state_dict_roundtrip_strict(tmp_path, tiny_flow):
    sd = tiny_flow.state_dict()
    assert "decoder.estimator.rotary_embed.inv_freq" in sd
    assert "decoder.estimator.transformer_blocks.0.attn.to_out.0.weight" in sd
    assert "decoder.estimator.transformer_blocks.0.ff.ff.0.0.weight" in sd
    torch.save(sd, tmp_path / "flow.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items() if not k.endswith("inv_freq")}, str(tmp_path / "flow.safetensors"))
    cfg = preset("tiny")
    inputs = make_inputs()
    ref = run_flow(tiny_flow, inputs)[0]
    for f in ("flow.pt", "flow.safetensors"):
        loaded = build_flow(cfg, read_state_dict(tmp_path / f), f)
        assert torch.equal(run_flow(loaded, inputs)[0], ref), f


def test_strict_loader_names_bad_keys(tiny_flow):
    cfg = preset("tiny")
    sd = dict(tiny_flow.state_dict())
    del sd["decoder.estimator.proj_out.bias"]
    sd["decoder.estimator.extra.weight"] = torch.zeros(1)
    sd["input_embedding.weight"] = torch.zeros(6561, 81)
    with pytest.raises(CheckpointError) as err:
        build_flow(cfg, sd, "flow.pt")
    msg = str(err.value)
    assert "flow.pt" in msg and "decoder.estimator.proj_out.bias" in msg and "decoder.estimator.extra.weight" in msg
    assert "input_embedding.weight is [6561, 81], expected [6561, 80]" in msg


def test_yaml_with_tags_parsed_into_config():
    cfg = config_from_yaml(FIXTURES / "configs" / "cosyvoice3.yaml")
    ref = preset("cosyvoice3-0.5b")
    assert cfg.flow == ref.flow and cfg.hift == ref.hift and cfg.mel == ref.mel
    assert cfg.flow.decoder.estimator.static_chunk_size == 50  # !ref <chunk_size> * <token_mel_ratio>
    assert cfg.flow.decoder.cfm_params.sigma_min == 1e-6
    tiny = config_from_yaml(FIXTURES / "configs" / "tiny.yaml")
    assert tiny.flow == preset("tiny").flow and tiny.hift == preset("tiny").hift


def test_yaml_never_executes(tmp_path):
    from reference.config import ConfigError

    p = tmp_path / "cosyvoice3.yaml"
    p.write_text("boom: !apply:os.system ['touch " + str(tmp_path / "pwned") + "']\nflow: !new:evil.Class\n  a: 1\n")
    with pytest.raises(ConfigError, match="expected a CausalMaskedDiffWithDiT"):
        config_from_yaml(p)
    assert not (tmp_path / "pwned").exists()
