"""The port kit used the way a port's own test uses it (docs/port-kit.md, "Python").

A port's test needs nothing of this repository but the kit: ``manifest.json`` and the vector files. For every
vector it reads the inputs, runs its module on them, and checks each output against the manifest's limits with
the manifest's statistics (``max_abs``, ``rel_l2`` in float64). Here the "port" is the reference itself, which
must pass every vector, and the reference with one module changed (a fault a porter makes), which must fail at
that module and only where that module is inside. The statistics are computed from the manifest's rule in numpy
(:func:`judge`), independently of ``parity kit check``, and the two are compared.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from tests.kit_helpers import build_offline, build_streaming, shared_kit, tiny_model


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return shared_kit(tmp_path_factory, "tiny-short", build_offline)


@pytest.fixture(scope="module")
def stream_kit(tmp_path_factory):
    return shared_kit(tmp_path_factory, "tiny-medium-streaming", build_streaming)


# ---------------------------------------------------------------------------------------------
# what a port's test does, from the manifest alone

def judge(out_entry: dict, ref: np.ndarray, got: np.ndarray) -> tuple[bool, float]:
    """(passed, ratio) of one output, by the manifest's tolerance rule."""
    tol = out_entry["tolerance"]
    if list(got.shape) != out_entry["shape"] or not np.isfinite(got).all():
        return False, math.inf
    r, g = ref.astype(np.float64), got.astype(np.float64)
    d = g - r
    nd, nr = float(np.sqrt((d * d).sum())), float(np.sqrt((r * r).sum()))
    values = {"max_abs": float(np.abs(d).max()) if d.size else 0.0,
              "rel_l2": nd / nr if nr > 0 else (0.0 if nd == 0 else math.inf)}
    passed = all(values[s] <= tol["limit"][s] for s in tol["gate"])
    ratio = max(values[s] / (tol["limit"][s] / tol["k"]) for s in tol["gate"])
    return passed, ratio


def port_outputs(model, kit) -> dict[str, dict[str, np.ndarray]]:
    """The port: every vector's module run on the vector's inputs (here the model's own modules, through the
    kit's call contracts: :class:`parity.kit.units.Unit`)."""
    from parity.kit.units import units_for

    manifest = json.loads((kit / "manifest.json").read_text())
    units = {u.id: u for u in units_for(model.cfg)}
    out = {}
    for v in manifest["vectors"]:
        tensors = load_file(str(kit / v["file"]))
        inputs = {t["name"]: torch.from_numpy(tensors[t["key"]]) for t in v["inputs"]}
        attrs = {a: v["attributes"][a] for a in units[v["id"]].attributes}
        res = units[v["id"]].call(model, inputs, attrs)
        out[v["id"]] = {k: t.detach().numpy() for k, t in res.items()}
    return out


def verdicts(kit, outputs) -> dict[str, tuple[bool, float]]:
    manifest = json.loads((kit / "manifest.json").read_text())
    res = {}
    for v in manifest["vectors"]:
        tensors = load_file(str(kit / v["file"]))
        per = [judge(o, tensors[o["key"]], outputs[v["id"]][o["name"]]) for o in v["outputs"]]
        res[v["id"]] = (all(p for p, _ in per), max(r for _, r in per))
    return res


def save(outputs, path):
    from safetensors.numpy import save_file

    save_file({f"{vid}/{name}": np.ascontiguousarray(a) for vid, outs in outputs.items() for name, a in outs.items()},
              str(path))
    return path


# ---------------------------------------------------------------------------------------------
# the reference passes its own kit; one changed module is named there

def test_the_reference_passes_every_vector_of_its_kit(kit, tmp_path):
    from parity.kit.check import check_kit

    outs = port_outputs(tiny_model(), kit)
    v = verdicts(kit, outs)
    assert len(v) == 51 and all(p for p, _ in v.values()), {k: r for k, (p, r) in v.items() if not p}
    res = check_kit(kit, save(outs, tmp_path / "port.safetensors"))
    assert res.verdict == "pass" and res.exit_code == 0 and res.counts() == {"pass": 51}
    for vc in res.vectors:  # the checker's ratio is the manifest rule's ratio
        assert vc.ratio == pytest.approx(v[vc.id][1], rel=1e-9, abs=1e-12)


def _gelu_exact(m):
    m.flow.decoder.estimator.transformer_blocks[1].ff.ff[0][1] = nn.GELU()  # upstream: GELU(approximate="tanh")


def _layernorm_eps(m):
    m.flow.decoder.estimator.transformer_blocks[0].ff_norm.eps = 1e-5  # upstream: 1e-6 (the block's own LayerNorm)


def _smooth_sine(m):
    """The fault catalogue's smooth-sine (the non-causal SineGen2's linear phase), through the candidate vocoder's
    make_source: the port's source module, with the reference's weights and the kit's noise."""
    from candidate.faults import ActiveFaults
    from candidate.hift import CandidateHiFT
    from candidate.switches import Switches

    m.hift.make_source = CandidateHiFT(m.hift, Switches(), ActiveFaults.from_specs(["smooth-sine"])).make_source


def _resblock_dilation(m):
    conv = m.hift.resblocks[4].convs1[1]  # stage 1, kernel 7, dilation 3 -> 1 (padded to keep the length)
    conv.dilation, conv.causal_padding = (1,), conv.kernel_size[0] - 1


FAULTS = {
    "gelu-exact-in-block-1": (_gelu_exact, "decoder.estimator.transformer_blocks.1.ff"),
    "layernorm-eps-in-block-0": (_layernorm_eps, "decoder.estimator.transformer_blocks.0"),
    "smooth-sine": (_smooth_sine, "m_source"),
    "resblock-4-dilation": (_resblock_dilation, "resblocks.4"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_injected_module_fault_is_named_at_its_module(kit, tmp_path, fault):
    """The first failing vector is the changed module; every other failing vector holds it (the DiT block around
    an attention, the estimator around a block, a vocoder stage around a resblock); nothing else fails."""
    from parity.kit.check import check_kit, parts_of
    from parity.kit.manifest import read_manifest

    inject, module = FAULTS[fault]
    port = copy.deepcopy(tiny_model())
    inject(port)
    outs = port_outputs(port, kit)
    failing = [vid for vid, (p, _) in verdicts(kit, outs).items() if not p]
    assert failing and failing[0] == module, failing
    res = check_kit(kit, save(outs, tmp_path / "port.safetensors"))
    assert res.verdict == "fail" and res.exit_code == 1
    assert res.headline.code == "module_mismatch" and res.headline.stage == module
    assert res.failing() == failing
    parts = parts_of(read_manifest(kit)["vectors"])
    assert all(vid == module or module in parts[vid] for vid in failing), (module, failing)
    if fault == "layernorm-eps-in-block-0":  # the block's own LayerNorm: its three parts pass
        assert "all 3 of its parts pass" in res.headline.message


# ---------------------------------------------------------------------------------------------
# the chunked call

def test_the_streaming_kit_passes_the_reference_and_names_an_ignored_chunk_mask(stream_kit, tmp_path):
    """The streaming kit's attention vectors carry the chunk mask; a port that drops it (upstream's TensorRT path)
    fails at the attention, the reference passes."""
    from parity.kit.check import check_kit

    ref = tiny_model()
    v = verdicts(stream_kit, port_outputs(ref, stream_kit))
    assert all(p for p, _ in v.values()), v

    port = copy.deepcopy(ref)
    attn = port.flow.decoder.estimator.transformer_blocks[0].attn
    full = attn.forward
    attn.forward = lambda x, mask, rope: full(x, None, rope)  # the mask ignored
    outs = port_outputs(port, stream_kit)
    res = check_kit(stream_kit, save(outs, tmp_path / "port.safetensors"))
    assert res.headline.stage == "decoder.estimator.transformer_blocks.0.attn", res.headline
    assert res.failing() == ["decoder.estimator.transformer_blocks.0.attn", "decoder.estimator.transformer_blocks.0",
                             "decoder.estimator", "decoder"]
