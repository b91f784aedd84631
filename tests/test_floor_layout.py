"""Reduced-precision envelopes for foreign dumps: the layout read from the dump itself (its dtypes metadata or the
dtypes its stages are stored in) or given with --precision-layout, the nearest looser layout when none matches, and
the verdict naming what it assumed. Tiny preset, the short fixture bundle, offline."""

from __future__ import annotations

import pytest
import torch

from candidate.pipeline import CandidateToken2Wav
from candidate.switches import switches_from
from parity.capture.recorder import Recorder
from parity.judge.compare import compare_loaded
from parity.judge.spec import ComparisonSpec
from parity.floor.layout import choose_layout, match, parts_from_tensors
from parity.floor.store import FloorStore
from parity.ingest import Loaded
from parity.judge.policy import load_policy
from parity.present.summary import gate_line
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.probe import Probe

from .conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"


@pytest.fixture(scope="module")
def model():
    return Token2Wav.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    return load_bundle(SHORT)


@pytest.fixture(scope="module")
def ref(model, inputs):
    rec = Recorder()
    model.run(inputs, Probe(rec))
    return Loaded(rec.tensors, dict(model.provenance(streaming=False), inputs="short.safetensors"), "ref")


def foreign(model, inputs, profile: str, keep_dtypes: bool = False, **overrides) -> Loaded:
    """A candidate run as a port's dump: its tensors as computed (fp16 stages stored in fp16), metadata without the
    switches (and without the dtypes record unless ``keep_dtypes``)."""
    sw = switches_from(profile, **overrides)
    cand = CandidateToken2Wav(model, sw, profile)
    rec = Recorder()
    cand.run(inputs, Probe(rec))
    meta = {k: v for k, v in cand.provenance(streaming=False).items() if k not in ("switches", "profile", "precision")}
    if not keep_dtypes:
        meta.pop("dtypes", None)
    return Loaded(rec.tensors, meta, f"<{profile} dump>")


def _judge(ref: Loaded, cand: Loaded, store=None):
    store = store or FloorStore(cache=None, compute=False)
    ch = store.for_trace(ref.metadata, ref.tensors, cand_meta=cand.metadata, precision="fp16",
                         cand_tensors=cand.tensors)
    return ch, compare_loaded(ref, cand, ComparisonSpec(policy=load_policy()), floor=ch)


@pytest.mark.parametrize("profile", ["fp16-all", "fp16-flow"])
def test_an_fp16_dump_gets_the_envelope_of_its_own_layout_from_its_stored_dtypes(model, inputs, ref, profile):
    """fp16 vocoder stages -> fp16-all, fp32 vocoder stages -> fp16-flow, with nothing but the precision given; the
    legitimate dump passes at its envelope, and the verdict names the layout and the stages that showed it."""
    dump = foreign(model, inputs, profile)
    ch, res = _judge(ref, dump)
    assert ch.floor is not None and ch.source == "shipped" and ch.floor.kind == "fp16", ch.reason
    lay = res.floor["layout"]
    assert lay["name"] == profile and lay["exact"] and lay["source"] == "stored dtypes", lay
    assert ("the vocoder (" in lay["why"]) == (profile == "fp16-all") and "the flow (DiT) (" in lay["why"]
    assert res.gates.get("floor", 0) > 50 and res.verdict == "pass", res.first_divergence
    line = gate_line(res)
    assert f"fp16 precision envelope of layout {profile}" in line and "stored in fp16" in line


def test_the_dtypes_metadata_says_the_layout_when_the_stages_are_stored_in_fp32(model, inputs, ref):
    dump = foreign(model, inputs, "fp16-all", keep_dtypes=True)
    dump = Loaded({n: t.float() if t.is_floating_point() else t for n, t in dump.tensors.items()}, dump.metadata,
                  dump.path)
    lay = choose_layout("fp16", dump.metadata, dump.tensors)
    assert lay.name == "fp16-all" and lay.source == "metadata" and lay.exact


def test_layout_option_nearest_looser_and_default(model, inputs, ref):
    """--precision-layout overrides what the dump shows; a vocoder-only fp16 layout gets the nearest looser one
    (fp16-all) and says so; a dump that shows nothing gets the loosest and says so; a bf16 dump with a bf16 vocoder
    has no looser layout: the loosest bf16 one, said so."""
    dump = foreign(model, inputs, "fp16-all")
    lay = choose_layout("fp16", dump.metadata, dump.tensors, explicit="fp16-flow")
    assert lay.name == "fp16-flow" and lay.source == "option"
    name, exact, what = match("fp16", {"hift"})
    assert name == "fp16-all" and not exact and "nearest looser" in what
    plain = {n: t.float() if t.is_floating_point() else t for n, t in dump.tensors.items()}
    lay = choose_layout("fp16", {}, plain)
    assert lay.name == "fp16-all" and lay.source == "default" and "loosest" in lay.why and not lay.exact
    name, exact, what = match("bf16", {"flow", "hift"})
    assert name == "bf16-flow" and not exact and "loosest" in what
    from reference.errors import InputError

    with pytest.raises(InputError, match="not a candidate profile"):
        choose_layout("fp16", {}, {}, explicit="fp17-flow")
    assert choose_layout("fp16", {}, {}, explicit="bf16-flow").spec is None  # another precision: no envelope


def test_a_port_keeping_the_euler_state_in_fp16_fails_at_its_envelope_where_flat_passes(model, inputs, ref):
    """The upstream fp16 fixes keep the time grid and the Euler state in fp32; a port that keeps the state in fp16
    (its step*.x stored in fp16) is judged against the fp16-all envelope (its flow and vocoder layout; the solver
    is fp32 in every emulation, which the verdict says) and fails at the state; the flat fp16 rules pass it."""
    keep = tuple(k for k in switches_from("fp16-all").keep_fp32 if k not in ("euler", "time_grid"))
    dump = foreign(model, inputs, "fp16-all", keep_fp32=keep)
    assert parts_from_tensors(dump.tensors, "fp16")[0] >= {"solver", "flow", "hift"}
    ch, res = _judge(ref, dump)
    assert ch.floor is not None and res.floor["layout"]["name"] == "fp16-all"
    assert "solver (Euler state) runs in fp16" in res.floor["layout"]["why"] and not res.floor["layout"]["exact"]
    fd = res.first_divergence
    assert res.verdict == "fail" and fd.stage.startswith("step") and res.stage(fd.stage).gate == "floor", fd
    flat = compare_loaded(ref, dump, ComparisonSpec(policy=load_policy()), floor=None)
    assert flat.stage(fd.stage).status == "pass"


def test_parity_compare_with_only_the_precision(tmp_path, model, inputs, ref, capsys):
    """The two-file workflow for a foreign fp16 dump: `parity compare ref port --precision fp16` judges it by the
    envelope of the layout its stages show, and the terminal says which."""
    from parity.cli import main
    from parity.result import read_json
    from parity.trace import write_trace

    r, c = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    write_trace(r, ref.tensors, ref.metadata)
    dump = foreign(model, inputs, "fp16-flow")
    write_trace(c, dump.tensors, dump.metadata)
    assert main(["compare", str(r), str(c), "--precision", "fp16", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "fp16 precision envelope of layout fp16-flow" in out
    res = read_json(tmp_path / "r.json")
    assert res.floor["layout"]["name"] == "fp16-flow" and res.floor["kind"] == "fp16"
    assert main(["compare", str(r), str(c), "--precision", "fp16", "--precision-layout", "fp16-all"]) == 0
    assert "fp16 precision envelope of layout fp16-all" in capsys.readouterr().out


def test_stage_dtypes_are_what_the_candidate_stores(model, inputs):
    """The premise of reading a layout from stored dtypes: this project's fp16 candidates store the stages their
    fp16 parts compute in fp16 (and an int8 one stores fp32)."""
    d = foreign(model, inputs, "fp16-flow").tensors
    assert d["step1.v1"].dtype == torch.float16 and d["conv_pre"].dtype == torch.float32
    assert foreign(model, inputs, "fp16-all").tensors["conv_pre"].dtype == torch.float16
