"""The fixed noise and every size follow the model's configuration (issue 12).

The expected noise is derived here independently of ``reference/noise.py``: the torch.nn modules upstream
builds (``nn.Embedding``, ``nn.Linear``, ``nn.Conv1d``), in upstream's construction order, with their
default initialisation, from torch's global generator after ``manual_seed(0); randn(1, 80, 15000)``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from parity.cli import main
from parity.trace import read_trace
from reference.bundle import bundle_dims, load_bundle, save_bundle
from reference.config import ConfigError, config_from_yaml, preset
from reference.errors import InputError
from reference.export import write_model_dir
from reference.model import Token2Wav
from reference.noise import NoiseSizes, SharedNoise, check_noise_fits, noise_for_config
from reference.probe import Probe

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
TINY_YAML = (FIXTURES / "configs" / "tiny.yaml").read_text()
L = 4800  # sine-noise rows compared (10 mel frames of audio)

# the spec's first values (cosyvoice3-token2wav.md sections 4 and 5.3), released sizes
SPEC_FLOW = [-1.1258398, -1.1523602, -0.2505786, -0.4338788]
SPEC_SINE_ROW0 = [0.92282599, 0.47744751, 0.82705182]


def upstream_modules_noise(vocab, input_size, spk, output_size, f0_in, cond, n_class, rows=L, full_buffer=False):
    """What upstream's constructors draw, rebuilt from torch.nn modules (global generator, restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        flow = torch.randn(1, 80, 15000)  # CausalConditionalCFM.rand_noise
        nn.Embedding(vocab, input_size)  # flow.input_embedding
        nn.Linear(spk, output_size)  # flow.spk_embed_affine_layer
        nn.Conv1d(f0_in, cond, 4)  # f0_predictor.condnet.0 (built by HyperPyYAML before the generator)
        for _ in range(4):
            nn.Conv1d(cond, cond, 3)  # condnet.2, .4, .6, .8
        nn.Linear(cond, n_class)  # f0_predictor.classifier
        rand_ini = torch.rand(1, 9)  # SineGen2: 9 columns, hard-coded upstream
        rand_ini[:, 0] = 0
        sine = torch.rand(1, 300 * 24000, 9)[:, :rows] if full_buffer else torch.rand(1, rows, 9)
    return flow, rand_ini, sine


def other_sizes_yaml(vocab=1000, spk=64, cond=96) -> str:
    """The tiny yaml with another vocabulary, x-vector width and F0 predictor width (all change the noise)."""
    text = TINY_YAML.replace("vocab_size: 6561", f"vocab_size: {vocab}")
    text = text.replace("spk_embed_dim: 192", f"spk_embed_dim: {spk}")
    text = text.replace("cond_channels: 64", f"cond_channels: {cond}")
    assert text.count(str(vocab)) and f"spk_embed_dim: {spk}" in text and f"cond_channels: {cond}" in text
    return text


@pytest.fixture(scope="module")
def other_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "cosyvoice3.yaml"
    path.write_text(other_sizes_yaml())
    return config_from_yaml(path, name="other-sizes")


# ---------------------------------------------------------------------------------------------
# the recipe, derived independently

def test_non_released_config_noise_equals_upstream_modules(other_cfg):
    """vocab 1000, spk 64, cond 96 read from a yaml: SharedNoise equals the modules' draws bit for bit, and the
    first rows come from the whole 7.2M x 9 buffer (the prefix property the lazy draw relies on)."""
    assert (other_cfg.flow.vocab_size, other_cfg.flow.spk_embed_dim, other_cfg.hift.f0_predictor.cond_channels) \
        == (1000, 64, 96)
    flow, rand_ini, sine = upstream_modules_noise(1000, 80, 64, 80, 80, 96, 1, full_buffer=True)
    n = SharedNoise.from_config(other_cfg)
    assert torch.equal(n.flow, flow)
    assert torch.equal(n.rand_ini, rand_ini)
    assert torch.equal(n.sine_noise(L), sine)
    released = SharedNoise.from_config(preset("cosyvoice3-0.5b"))
    assert torch.equal(n.flow, released.flow)  # drawn before any module: the same
    assert not torch.equal(n.sine_noise(L), released.sine_noise(L))
    assert n.fingerprint() != released.fingerprint()


def test_released_sizes_equal_upstream_modules_and_spec_values():
    flow, rand_ini, sine = upstream_modules_noise(6561, 80, 192, 80, 80, 512, 1)
    n = SharedNoise.from_config(preset("cosyvoice3-0.5b"))
    assert torch.equal(n.flow, flow) and torch.equal(n.rand_ini, rand_ini) and torch.equal(n.sine_noise(L), sine)
    # the spec prints 7-8 significant digits; fp32 holds them to within 5e-8
    assert torch.allclose(n.flow[0, 0, :4], torch.tensor(SPEC_FLOW), rtol=0, atol=5e-8)
    assert torch.allclose(n.sine_noise(1)[0, 0, :3], torch.tensor(SPEC_SINE_ROW0), rtol=0, atol=5e-8)
    # the same from the released yaml
    yaml_cfg = config_from_yaml(FIXTURES / "configs" / "cosyvoice3.yaml")
    assert NoiseSizes.from_config(yaml_cfg) == NoiseSizes.from_config(preset("cosyvoice3-0.5b"))


def test_tiny_noise_is_its_own_not_the_released():
    """The tiny preset's F0 predictor is 64 wide: upstream skips fewer randoms before the sine noise."""
    flow, rand_ini, sine = upstream_modules_noise(6561, 80, 192, 80, 80, 64, 1)
    n = noise_for_config(preset("tiny"))
    assert torch.equal(n.rand_ini, rand_ini) and torch.equal(n.sine_noise(L), sine)
    assert not torch.equal(sine, upstream_modules_noise(6561, 80, 192, 80, 80, 512, 1)[2])
    model = Token2Wav.from_preset("tiny")
    assert model.noise.fingerprint() == n.fingerprint()
    assert model.noise.sizes.f0_cond_channels == 64


def test_provenance_records_the_sizes_and_survives_save_load(tmp_path, other_cfg):
    n = SharedNoise.from_config(other_cfg)
    prov = n.provenance()
    assert prov["config"] == "other-sizes"
    assert prov["sizes"] == {"vocab_size": 1000, "input_size": 80, "spk_embed_dim": 64, "output_size": 80,
                             "f0_in_channels": 80, "f0_cond_channels": 96, "f0_num_class": 1}
    assert "Embedding(1000,80)" in prov["recipe"] and "Conv1d(80,96,4)" in prov["recipe"]
    m = SharedNoise.load(n.save(tmp_path / "n.safetensors", frames=100, samples=L))
    assert m.sizes == n.sizes and m.config == "other-sizes" and m.fingerprint() == n.fingerprint()
    assert torch.equal(m.sine_noise(L), n.sine_noise(L))
    # a file without sizes (another implementation's dump) loads; its provenance says the sizes are unknown
    from safetensors.torch import save_file

    save_file({"rand_noise": n.flow[:, :, :100].contiguous(), "hift_rand_ini": n.rand_ini,
               "hift_sine_noise": n.sine_noise(L).contiguous()}, str(tmp_path / "bare.safetensors"))
    bare = SharedNoise.load(tmp_path / "bare.safetensors")
    assert bare.sizes is None and bare.provenance()["sizes"] is None and bare.fingerprint() == n.fingerprint()
    check_noise_fits(bare, preset("tiny"))  # nothing to check against: accepted


def test_noise_of_another_config_is_refused(other_cfg):
    with pytest.raises(InputError, match=r"f0_cond_channels 512 \(model: 64\)"):
        Token2Wav.from_preset("tiny", noise=noise_for_config(preset("cosyvoice3-0.5b")))
    with pytest.raises(InputError, match="vocab_size 1000"):
        check_noise_fits(noise_for_config(other_cfg), preset("tiny"))


# ---------------------------------------------------------------------------------------------
# the CLI: export-model, noise export --model-dir, dump --model-dir

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "tiny-model"
    assert main(["export-model", "--preset", "tiny", "--out", str(d)]) == 0
    return d


def test_model_dir_trace_equals_preset_trace_and_noise_is_not_released(tmp_path, tiny_dir):
    """Every stage (source and audio included) of the exported non-released model equals its preset's."""
    a, b = tmp_path / "preset.safetensors", tmp_path / "dir.safetensors"
    assert main(["dump", "--preset", "tiny", "--inputs", str(SHORT), "--out", str(a)]) == 0
    assert main(["dump", "--model-dir", str(tiny_dir), "--inputs", str(SHORT), "--out", str(b)]) == 0
    ta, tb = read_trace(a), read_trace(b)
    assert ta.names == tb.names and "source" in ta.names and "audio" in ta.names
    for name in ta.names:
        assert torch.equal(ta[name], tb[name]), name
    na, nb = ta.metadata["noise"], tb.metadata["noise"]
    assert na["fingerprint"] == nb["fingerprint"] and na["sizes"] == nb["sizes"]
    assert nb["sizes"]["f0_cond_channels"] == 64
    released = SharedNoise.from_config(preset("cosyvoice3-0.5b")).fingerprint()
    assert nb["fingerprint"] != released


def test_noise_export_model_dir_writes_that_models_noise(tmp_path, tiny_dir, capsys):
    out, rel = tmp_path / "tiny-noise.safetensors", tmp_path / "released-noise.safetensors"
    assert main(["noise", "export", "--model-dir", str(tiny_dir), "--out", str(out), "--frames", "100",
                 "--samples", str(L)]) == 0
    assert "Conv1d(80,64,4)" in capsys.readouterr().out
    assert main(["noise", "export", "--out", str(rel), "--frames", "100", "--samples", str(L)]) == 0
    n, r = SharedNoise.load(out), SharedNoise.load(rel)
    _, rand_ini, sine = upstream_modules_noise(6561, 80, 192, 80, 80, 64, 1)
    assert torch.equal(n.rand_ini, rand_ini) and torch.equal(n.sine_noise(L), sine)
    assert n.sizes == NoiseSizes.from_config(preset("tiny")) and n.config == "tiny-model"
    assert r.sizes == NoiseSizes.from_config(preset("cosyvoice3-0.5b"))
    assert n.fingerprint() != r.fingerprint()
    # the released noise with the tiny model: refused, one line, exit 2
    capsys.readouterr()
    code = main(["dump", "--model-dir", str(tiny_dir), "--inputs", str(SHORT), "--out", str(tmp_path / "x.st"),
                 "--noise", str(rel)])
    err = capsys.readouterr().err
    assert code == 2 and "f0_cond_channels 512 (model: 64)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.st").exists()


def test_model_dir_with_other_flow_sizes_runs_with_its_own_dims_and_noise(tmp_path, other_cfg):
    """vocab 1000 and a 64-wide x-vector: the bundle, the modules and the noise all follow the yaml."""
    d = write_model_dir(Token2Wav.from_config(other_cfg), other_sizes_yaml(), tmp_path / "other")
    g = torch.Generator().manual_seed(5)
    bundle = save_bundle(tmp_path / "b.safetensors", {
        "token": torch.randint(0, 1000, (1, 6), generator=g, dtype=torch.int32),
        "prompt_token": torch.randint(0, 1000, (1, 4), generator=g, dtype=torch.int32),
        "prompt_feat": torch.randn(1, 8, 80, generator=g) - 5, "embedding": torch.randn(1, 64, generator=g)},
        validate=False)  # save_bundle checks the released dims
    out = tmp_path / "t.safetensors"
    assert main(["dump", "--model-dir", str(d), "--inputs", str(bundle), "--out", str(out)]) == 0
    tr = read_trace(out)
    assert tr.metadata["noise"]["sizes"]["vocab_size"] == 1000 and tr.metadata["noise"]["sizes"]["spk_embed_dim"] == 64
    model = Token2Wav.from_model_dir(d)
    _, _, sine = upstream_modules_noise(1000, 80, 64, 80, 80, 96, 1)
    assert torch.equal(model.noise.sine_noise(L), sine)
    from parity.capture.recorder import Recorder

    rec = Recorder("source,audio")
    model.run(load_bundle(bundle, **bundle_dims(model.cfg)), Probe(rec))
    assert torch.equal(rec.tensors["audio"], tr["audio"]) and torch.equal(rec.tensors["source"], tr["source"])
    # the released dims refuse this bundle with a message naming the tensor
    with pytest.raises(InputError, match=r"'embedding' must have shape \[1, 192\]"):
        load_bundle(bundle)


# ---------------------------------------------------------------------------------------------
# yaml values the reference cannot honour: a clear error naming the key

BAD_YAML = [
    ("nb_harmonics: 8", "nb_harmonics: 7", "hift.nb_harmonics"),
    ("sample_rate: 24000", "sample_rate: 22050", "hift.sampling_rate"),
    ("    input_size: 80", "    input_size: 96", "flow.input_size"),
    ("    output_size: 80", "    output_size: 64", "flow.output_size"),
    ("num_class: 1", "num_class: 2", "hift.f0_predictor.num_class"),
    ("upsample_kernel_sizes: [16, 11, 7]", "upsample_kernel_sizes: [16, 11]", "hift.upsample_kernel_sizes"),
    ("n_fft: 16", "n_fft: 15", "hift.istft_params.n_fft"),
    ("spk_dim: 80", "spk_dim: null", "flow.decoder.estimator.spk_dim"),
    ("            dim: 128\n", "            dim: 128\n            long_skip_connection: True\n",
     "flow.decoder.estimator.long_skip_connection"),
    ("solver: 'euler'", "solver: 'rk4'", "flow.decoder.cfm_params.solver"),
    ("        in_channels: 80\n        channels: 128", "        in_channels: 64\n        channels: 128",
     "flow.pre_lookahead_layer.in_channels"),
    ("resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]\n    source",
     "resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]\n    source", "hift.resblock_dilation_sizes"),
]


@pytest.mark.parametrize("old,new,key", BAD_YAML, ids=[k for _, _, k in BAD_YAML])
def test_unhonourable_yaml_values_name_the_key(tmp_path, capsys, old, new, key):
    assert TINY_YAML.count(old) == 1, old
    d = tmp_path / "bad"
    d.mkdir()
    (d / "cosyvoice3.yaml").write_text(TINY_YAML.replace(old, new))
    with pytest.raises(ConfigError, match=f"'{key}' = "):
        config_from_yaml(d / "cosyvoice3.yaml")
    # the CLI: one line, exit 2 (the yaml is read before any checkpoint)
    assert main(["noise", "export", "--model-dir", str(d), "--out", str(tmp_path / "n.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# other sizes read from the configuration, not the released numbers

def _tiny_with(**changes):
    cfg = preset("tiny")
    for path, value in changes.items():
        obj = cfg
        *parents, leaf = path.split("__")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    return cfg


def _inputs(n_tok=9, n_prompt=4, ratio=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"token": torch.randint(0, 6561, (1, n_tok), generator=g),
            "prompt_token": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "prompt_feat": torch.randn(1, ratio * n_prompt, 80, generator=g) - 5,
            "embedding": torch.randn(1, 192, generator=g) * 10}


def _flow_run(cfg, inputs, streaming=False, finalize=True):
    from parity.capture.recorder import Recorder
    from reference.model import build_flow

    rec = Recorder("all")
    with torch.inference_mode():
        mel = build_flow(cfg).inference(inputs["token"], inputs["prompt_token"], inputs["prompt_feat"],
                                        inputs["embedding"], noise_for_config(cfg), streaming=streaming,
                                        finalize=finalize, probe=Probe(rec))
    return mel, rec.tensors


def test_token_mel_ratio_and_lookahead_come_from_the_config():
    cfg = _tiny_with(flow__token_mel_ratio=3, flow__pre_lookahead_len=2,
                     flow__pre_lookahead_layer__pre_lookahead_len=2)
    mel, st = _flow_run(cfg, _inputs(ratio=3))
    assert mel.shape == (1, 80, 3 * 9) and st["mu"].shape == (1, 80, 3 * 13)
    mel_s, _ = _flow_run(cfg, _inputs(ratio=3), finalize=False)
    assert mel_s.shape == (1, 80, 3 * (9 - 2))  # 2 lookahead tokens held back, not 3
    from reference.model import build_flow

    assert build_flow(cfg).pre_lookahead_layer.conv1.kernel_size == (3,)
    with pytest.raises(InputError, match="token_mel_ratio"):
        _flow_run(cfg, _inputs(ratio=2))


def test_cfg_rate_from_the_config():
    cfg = _tiny_with(flow__decoder__cfm_params__inference_cfg_rate=0.3)
    _, st = _flow_run(cfg, _inputs())
    assert torch.equal(st["step1.v_cfg"], 1.3 * st["step1.v1"] - 0.3 * st["step1.v2"])
    assert Token2Wav.from_config(cfg).provenance(streaming=False)["cfg_rate"] == 0.3


def test_static_chunk_size_from_the_config():
    """Streaming masks chunks of static_chunk_size frames; <= 0 masks nothing (upstream's rule)."""
    inp = _inputs(n_tok=20, n_prompt=4)  # 48 mel frames
    off, _ = _flow_run(preset("tiny"), inp)
    s50, _ = _flow_run(preset("tiny"), inp, streaming=True)  # one 50-frame chunk covers all 48: no mask effect
    s16, _ = _flow_run(_tiny_with(flow__decoder__estimator__static_chunk_size=16), inp, streaming=True)
    s0, _ = _flow_run(_tiny_with(flow__decoder__estimator__static_chunk_size=0), inp, streaming=True)
    assert torch.equal(s50, off) and torch.equal(s0, off)
    assert not torch.equal(s16, off)


def test_vocoder_rates_and_istft_sizes_from_the_config():
    from reference.hift import build_hift

    cfg = _tiny_with(hift__upsample_rates=[4, 5, 3], hift__upsample_kernel_sizes=[8, 11, 7],
                     hift__istft_params={"n_fft": 8, "hop_len": 2})
    h = build_hift(cfg.hift, cfg.seed)
    assert h.upsample_scale == 4 * 5 * 3 * 2 == cfg.hift.hop_samples
    mel = torch.rand(1, 80, 12, generator=torch.Generator().manual_seed(2)) * 8 - 9
    from parity.capture.recorder import Recorder

    rec = Recorder("all")
    audio = h.inference(mel, noise_for_config(cfg), probe=Probe(rec))
    assert audio.shape == (1, 120 * 12) and rec.tensors["source"].shape == (1, 1, 120 * 12)
    assert rec.tensors["s_stft"].shape == (1, 8 + 2, 120 * 12 // 2 + 1)
    part = h.inference(mel, noise_for_config(cfg), finalize=False)
    assert part.shape == (1, 120 * (12 - 8))  # 3 F0 + 4 conv_pre lookahead frames held back, 1 dropped


def test_noise_sizes_track_every_field_that_shapes_the_recipe():
    """Each NoiseSizes field is read from its config key (a change there changes the recipe)."""
    base = NoiseSizes.from_config(preset("tiny"))
    for path, field in (("flow__vocab_size", "vocab_size"), ("flow__spk_embed_dim", "spk_embed_dim"),
                        ("hift__f0_predictor__cond_channels", "f0_cond_channels")):
        cfg = _tiny_with(**{path: 48})
        assert getattr(NoiseSizes.from_config(cfg), field) == 48
        assert dataclasses.replace(base, **{field: 48}) == NoiseSizes.from_config(cfg)
    assert json.loads(json.dumps(base.to_dict())) == base.to_dict()


@pytest.mark.parametrize("yaml_name,preset_name", [("tiny.yaml", "tiny"), ("cosyvoice3.yaml", "cosyvoice3-0.5b")])
def test_shipped_yaml_describes_its_preset(yaml_name, preset_name):
    """export-model copies these files: loading one must rebuild the preset's config (and so its noise)."""
    a = config_from_yaml(FIXTURES / "configs" / yaml_name).to_dict()
    b = preset(preset_name).to_dict()
    for k in ("name", "seed"):  # the directory's name; the seed only makes weights for presets
        a.pop(k), b.pop(k)
    assert a == b
