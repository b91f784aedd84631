"""The port kit's tool: the manifest and vector files (``parity kit``), the checker (``parity kit check``) and its
findings, the port-output formats, the command line. The example of a port's own test is test_kit_example.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.kit_helpers import SHORT, build_offline, build_streaming, shared_kit, tiny_model


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return shared_kit(tmp_path_factory, "tiny-short", build_offline)


@pytest.fixture(scope="module")
def manifest(kit):
    return json.loads((kit / "manifest.json").read_text())


@pytest.fixture(scope="module")
def ref_outputs(kit):
    """The reference run as a port on every vector: {"<id>/<output>": tensor}."""
    from parity.kit.port import run_port

    return run_port(tiny_model(), kit)


def _vec(manifest, vid):
    return next(v for v in manifest["vectors"] if v["id"] == vid)


def _tensors(kit, entry):
    with safe_open(str(kit / entry["file"]), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# ---------------------------------------------------------------------------------------------
# the kit

def test_the_manifest_describes_every_vector_in_upstream_key_names(manifest):
    from reference.hift import hift_state_dict_upstream

    from parity.kit.units import units_for

    m = tiny_model()
    assert manifest["schema"] == "tts-parity-kit/1"
    assert [v["id"] for v in manifest["vectors"]] == [u.id for u in units_for(m.cfg)]
    assert manifest["model"]["weights"]["flow_sha256"] == m.weights["flow_sha256"]
    assert manifest["mode"] == {**manifest["mode"], "streaming": False, "step": 5, "finalize": True}
    keys = {"flow.pt": set(m.flow.state_dict()), "hift.pt": set(hift_state_dict_upstream(m.hift))}
    for v in manifest["vectors"]:
        assert set(v["weights"]) <= keys[v["weights_file"]], v["id"]
        if v["kind"] == "module":  # a module's path is a prefix of upstream's keys, and it lists its own weights
            assert v["weights"] and all(k.startswith(v["module"] + ".") for k in v["weights"]), v["id"]
        for t in v["inputs"] + v["outputs"]:
            assert len(t["axes"]) == len(t["shape"]) and t["dtype"] and t["layout"], (v["id"], t["name"])
    block = _vec(manifest, "decoder.estimator.transformer_blocks.1.attn")
    assert "decoder.estimator.transformer_blocks.1.attn.to_q.weight" in block["weights"]
    wn = _vec(manifest, "resblocks.4")["weights"]
    assert "resblocks.4.convs1.1.parametrizations.weight.original0" in wn  # hift.pt's weight-norm names
    assert [t["layout"] for t in _vec(manifest, "decoder.estimator")["inputs"]][0] == "channel-major"
    assert _vec(manifest, "decoder.estimator.transformer_blocks.0")["inputs"][0]["layout"] == "time-major"
    assert _vec(manifest, "prepare")["inputs"][2]["layout"] == "time-major"  # prompt_feat [1, T, 80] as upstream
    assert _vec(manifest, "decoder.estimator.transformer_blocks.0")["absent_inputs"] == ["mask"]  # offline


def test_every_tolerance_says_what_it_was_measured_from(manifest):
    from parity.floor.estimate import Recipe
    from parity.floor.stats import TINY, U32
    from parity.kit.tolerance import kit_members

    assert manifest["members"] == [m.to_dict() for m in kit_members(Recipe())]
    names = {m["name"] for m in manifest["members"]}
    assert {"threads2", "sdpa-math", "sdpa", "fp64", "mca-ops#0", "mca-modules#11"} <= names
    assert "fp64" in manifest["tolerance_method"] and "held-out" in manifest["tolerance_method"]
    assert set(manifest["statistics"]) == {"max_abs", "rel_l2"}
    for v in manifest["vectors"]:
        assert v["k"] >= 2 and v["k_basis"]["n_samples"] >= 10, v["id"]
        for o in v["outputs"]:
            tol = o["tolerance"]
            assert tol["gate"] == ["max_abs", "rel_l2"] and tol["k"] == v["k"]
            for s in tol["gate"]:
                floor = tol["floor"][s]
                unit = floor if floor > 0 else (U32 * max(tol["scale"], TINY) if s == "max_abs" else U32)
                assert tol["limit"][s] == pytest.approx(v["k"] * unit, rel=1e-12), (v["id"], o["name"], s)
                assert (floor == 0) == (s in tol["zero_floor"])
                assert tol["set_by"][s] in names or floor == 0
    # an exact op has a zero floor: it is judged in ulps of its scale
    assert _vec(manifest, "clamp")["outputs"][0]["tolerance"]["zero_floor"] == ["max_abs", "rel_l2"]


def test_vector_files_hold_the_inputs_the_outputs_and_the_weight_names(kit, manifest):
    for vid in ("decoder", "m_source", "decode/stage1", "pre_lookahead_layer"):
        v = _vec(manifest, vid)
        tens, meta = _tensors(kit, v)
        assert set(tens) == {t["key"] for t in v["inputs"] + v["outputs"]}
        assert json.loads(meta["weights"]) == v["weights"] and meta["id"] == vid and meta["schema"] == "tts-parity-kit/1"
        for t in v["inputs"] + v["outputs"]:
            assert list(tens[t["key"]].shape) == t["shape"] and str(tens[t["key"]].dtype) == "torch." + t["dtype"]
    m_source = _tensors(kit, _vec(manifest, "m_source"))[0]
    assert m_source["inputs.sine_noise"].shape[1] == m_source["outputs.source"].shape[2]  # the shared noise it used


def test_the_vectors_are_teacher_forced_from_one_real_run(kit, manifest):
    """Each module's inputs are the reference's own inputs to it on the run: what its neighbour received or
    returned on that same run."""
    def t(vid, key):
        return _tensors(kit, _vec(manifest, vid))[0][key]

    blk = "decoder.estimator.transformer_blocks"
    assert torch.equal(t(f"{blk}.1", "inputs.x"), t(f"{blk}.0", "outputs.out"))
    assert torch.equal(t(f"{blk}.0.attn", "inputs.x"), t(f"{blk}.0.attn_norm", "outputs.norm"))
    assert torch.equal(t(f"{blk}.0", "inputs.t"), t("decoder.estimator.time_embed", "outputs.out"))
    assert torch.equal(t("decoder.estimator", "inputs.x")[0], t("decoder", "inputs.x")[0])  # the CFG batch of the step
    assert torch.equal(t("decoder.estimator", "outputs.out")[0:1], t("decoder", "outputs.v1"))
    assert torch.equal(t("m_source", "inputs.f0"), t("f0_predictor", "outputs.f0"))
    assert torch.equal(t("decode", "inputs.source"), t("m_source", "outputs.source"))
    assert torch.equal(t("decode/stage1", "inputs.x"), t("decode/stage0", "outputs.out"))
    assert torch.equal(t("istft", "inputs.magnitude"), t("magnitude_phase", "outputs.magnitude"))
    for v in manifest["vectors"]:  # the stored outputs are what the run's own call returned
        assert v["reproduces_run"]["bitwise"] in (True, None), v["id"]


def test_a_second_build_replaces_the_kit_and_leaves_nothing_behind(tmp_path):
    from parity.kit.build import BuildOptions, build_kit
    from tests.kit_helpers import load

    m = tiny_model()
    out = tmp_path / "k"
    build_kit(m, load(m, SHORT), out, BuildOptions(units=("input_embedding",)))
    rep = build_kit(m, load(m, SHORT), out, BuildOptions(units=("input_embedding", "clamp")))
    assert [v["id"] for v in json.loads((out / "manifest.json").read_text())["vectors"]] == ["input_embedding", "clamp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"] and rep.vectors == 2


def test_the_streaming_kit_captures_the_chunked_call(tmp_path_factory):
    kit = shared_kit(tmp_path_factory, "tiny-medium-streaming", build_streaming)
    man = json.loads((kit / "manifest.json").read_text())
    mode = man["mode"]
    assert mode["streaming"] and mode["chunk"] == 1 and mode["chunk_mask"] and mode["finalize"] is False
    calls = mode["session"]["calls"]
    blk = _vec(man, "decoder.estimator.transformer_blocks.0")
    mask = _tensors(kit, blk)[0]["inputs.mask"]
    assert mask.dtype == torch.bool and mask.shape[-1] > mode["static_chunk_size"] and not bool(mask.all())
    assert _vec(man, "pre_lookahead_layer")["inputs"][1]["name"] == "context"  # the lookahead tokens as context
    assert _vec(man, "f0_predictor")["attributes"] == {"finalize": False}
    # the vocoder runs on the cumulative mel: every frame the session appended so far, earlier calls' included
    assert _vec(man, "decode")["inputs"][0]["shape"][2] == sum(c["mel_frames"] for c in calls[:2])


# ---------------------------------------------------------------------------------------------
# the checker's findings

def _check(kit, outs, tmp_path, **kw):
    from parity.kit.check import check_kit

    path = tmp_path / "port.safetensors"
    save_file({k: v.contiguous() for k, v in outs.items()}, str(path))
    return check_kit(kit, path, **kw)


def test_nan_is_named_where_it_starts_and_never_passes(kit, ref_outputs, tmp_path):
    outs = dict(ref_outputs)
    key = "decoder.estimator.transformer_blocks.1.attn/out"
    bad = outs[key].clone()
    bad[0, 3, 5] = float("nan")
    outs[key] = bad
    res = _check(kit, outs, tmp_path)
    assert res.verdict == "fail" and res.headline.code == "nonfinite_origin"
    assert res.headline.stage == "decoder.estimator.transformer_blocks.1.attn"
    assert res.headline.evidence["nan"] == 1 and res.headline.evidence["first_index"] == [0, 3, 5]
    assert res.vector("decoder.estimator.transformer_blocks.1.attn").verdict_text() == "FAIL non-finite"


def test_a_transposed_output_gets_a_layout_hint(kit, ref_outputs, tmp_path):
    outs = dict(ref_outputs)
    outs["decoder.estimator/out"] = outs["decoder.estimator/out"].transpose(1, 2)  # time-major [2, T, 80]
    res = _check(kit, outs, tmp_path)
    f = res.headline
    assert f.code == "shape_mismatch" and f.stage == "decoder.estimator"
    hint = f.evidence["layout_hint"]
    assert hint["passes"] and hint["ratio"] == 0.0 and hint["permutation"] == [0, 2, 1]
    assert hint["port_axes"] == ["batch", "time", "channel"] and "would pass" in f.message
    assert res.vector("decoder.estimator").verdict_text() == "FAIL shape (transposed?)"


def test_dtype_missing_and_unknown_outputs(kit, ref_outputs, tmp_path):
    outs = {k: v for k, v in ref_outputs.items() if k.startswith(("decoder.estimator.transformer_blocks.0", "decode"))}
    outs["decode/audio"] = outs["decode/audio"].half()  # a reduced-precision dump
    outs["decode/stage0/outt"] = outs.pop("decode/stage0/out")  # misnamed
    res = _check(kit, outs, tmp_path)
    codes = {f.code: f for f in res.findings}
    assert codes["dtype_differs"].stage == "decode" and codes["dtype_differs"].severity == "warning"
    assert res.vector("decode").status == "fail"  # fp16 rounding is far above the fp32 floor
    assert codes["unknown_output"].evidence["closest"] == {"decode/stage0/outt": "decode/stage0/out"}
    assert codes["vector_missing"].severity == "info" and "decode/stage0" in codes["vector_missing"].evidence["vectors"]
    assert res.vector("decode/stage0").status == "missing"
    strict = _check(kit, {k: v for k, v in ref_outputs.items() if k.startswith("clamp")}, tmp_path, require_all=True)
    assert strict.verdict == "fail" and strict.headline.code == "vector_missing"
    assert [v.id for v in strict.vectors if v.status == "pass"] == ["clamp"]


def test_a_port_output_with_no_manifest_name_is_an_error(kit, tmp_path):
    res = _check(kit, {"mel": torch.zeros(1, 80, 3)}, tmp_path)
    assert res.verdict == "error" and res.exit_code == 2 and res.headline.code == "nothing_to_compare"


def test_port_outputs_as_a_directory_of_files(kit, ref_outputs, tmp_path):
    """<id>.safetensors with output names, <id>.npz, <id>/<output>.npy ('/' in an id: a subdirectory or '__')."""
    from parity.kit.check import check_kit

    d = tmp_path / "port"
    d.mkdir()
    by_vec: dict = {}
    for k, v in ref_outputs.items():
        vid, name = k.rsplit("/", 1)
        by_vec.setdefault(vid, {})[name] = v
    for i, (vid, outs) in enumerate(sorted(by_vec.items())):
        if i % 3 == 0:
            save_file(outs, str(d / f"{vid.replace('/', '__')}.safetensors"))
        elif i % 3 == 1:
            np.savez(d / f"{vid.replace('/', '__')}.npz", **{n: t.numpy() for n, t in outs.items()})
        else:
            (d / vid).mkdir(parents=True, exist_ok=True)
            for n, t in outs.items():
                np.save(d / vid / f"{n}.npy", t.numpy())
    res = check_kit(kit, d)
    assert res.verdict == "pass" and res.counts() == {"pass": 51}
    (d / "extra.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="extra.npz"):
        check_kit(kit, d)


def test_a_changed_kit_file_is_named(kit, tmp_path):
    import shutil

    from parity.kit.check import check_kit
    from reference.errors import InputError

    k2 = tmp_path / "kit"
    shutil.copytree(kit, k2)
    v = _vec(json.loads((k2 / "manifest.json").read_text()), "clamp")
    (k2 / v["file"]).unlink()
    port = tmp_path / "p.safetensors"
    save_file({"clamp/audio": torch.zeros(v["outputs"][0]["shape"])}, str(port))
    with pytest.raises(InputError, match="vector file of clamp is missing"):
        check_kit(k2, port)
    (k2 / "manifest.json").write_text('{"schema": "tts-parity-kit/0"}')
    with pytest.raises(InputError, match="schema"):
        check_kit(k2, port)


# ---------------------------------------------------------------------------------------------
# the command line

def test_parity_kit_check_writes_the_table_json_and_html(kit, ref_outputs, tmp_path, capsys):
    from parity.cli import main

    port = tmp_path / "port.safetensors"
    outs = dict(ref_outputs)
    outs["resblocks.4/out"] = outs["resblocks.4/out"] * 1.001
    save_file(outs, str(port))
    rc = main(["kit", "check", str(kit), str(port), "--json", str(tmp_path / "r.json"), "--report",
               str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert rc == 1 and "parity kit check: FAIL" in out
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("resblocks.4 "))
    assert "FAIL" in row and "x floor" in row
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == "tts-parity-kit-check/1" and data["verdict"] == "fail"
    assert data["headline"]["stage"] == "resblocks.4"
    v = next(x for x in data["vectors"] if x["id"] == "resblocks.4")
    assert v["status"] == "fail" and v["ratio"] > v["k"] and math.isfinite(v["ratio"])
    html = (tmp_path / "r.html").read_text()
    assert "resblocks.4" in html and "module_mismatch" in html and "FAIL" in html
    save_file(ref_outputs, str(port))
    assert main(["kit", "check", str(kit), str(port)]) == 0


def test_parity_kit_refuses_unusable_input_before_any_work(tmp_path, capsys):
    from parity.cli import main

    assert main(["kit", "--preset", "tiny", "--out", str(tmp_path / "k")]) == 2
    assert "--inputs" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["kit", "--inputs", str(SHORT), "--out", str(busy)]) == 2
    assert "holds no kit" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
    assert main(["kit", "--inputs", str(SHORT), "--out", str(tmp_path / "k2"), "--units", "nope"]) == 2
    assert "unknown vector id" in capsys.readouterr().err
    assert main(["kit", "--inputs", str(SHORT), "--out", str(tmp_path / "k3"), "--streaming"]) == 2
    assert "only its final call" in capsys.readouterr().err
    assert main(["kit", "check", str(tmp_path), str(SHORT)]) == 2
    assert "not a port kit" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["kit", "--inputs", str(SHORT), "--out", "{f}/kit"],
                                  ["kit", "check", "{kit}", str(SHORT), "--json", "{f}/r.json"],
                                  ["kit", "check", "{kit}", str(SHORT), "--report", "{f}/r.html"],
                                  ["kit", "run", "{kit}", "--out", "{f}/o.safetensors"]])
def test_an_output_under_a_file_fails_before_the_work(argv, kit, tmp_path, capsys):
    """The command-line contract (README, "Exit codes and outputs"): exit 2, one line naming the option and the
    file, nothing computed."""
    from parity.cli import main

    f = tmp_path / "ref.wav"
    f.write_bytes(b"RIFF")
    rc = main([a.format(f=f, kit=kit) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert "is a file, not a directory" in err and "ref.wav" in err


def test_parity_kit_builds_and_runs_from_the_command_line(tmp_path, capsys):
    from parity.cli import main

    assert main(["kit", "--inputs", str(SHORT), "--out", str(tmp_path / "k"), "--units",
                 "spk_embed_affine_layer,stft", "--seeds", "3", "--held-out", "3", "-q"]) == 0
    assert "2 vectors" in capsys.readouterr().out
    man = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert man["recipe"]["n_seeds"] == 3 and len([m for m in man["members"] if m["family"] == "mca-ops"]) == 6
    assert main(["kit", "run", str(tmp_path / "k"), "--out", str(tmp_path / "o.safetensors")]) == 0
    assert main(["kit", "check", str(tmp_path / "k"), str(tmp_path / "o.safetensors")]) == 0
