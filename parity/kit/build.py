"""Building a port kit: capture one real run, re-compute every unit from its captured inputs, measure each unit's
tolerance, write the vectors and the manifest.

The expected outputs a vector holds are the plain reference's (1 torch thread, explicit attention) computed
from the inputs *as stored* (contiguous tensors, what a port reads): the kit's promise is "given these inputs,
the reference module returns these outputs". The build checks that this re-computation reproduces the run
(bit for bit, or within the unit's own floor: memory layout can move the last bit of a CPU kernel) and stops
with an error naming the unit otherwise, so a kit never holds a vector its own reference does not reproduce.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from reference.errors import InputError

from ..floor.estimate import Recipe
from ..floor.members import PLAIN, member_context
from . import manifest as M
from .capture import capture_run
from .tolerance import GATE, kit_members, measure, ratio_against, run_unit
from .units import Unit, units_for, weight_keys

METHOD = ("module-level noise floor: the unit alone re-computed on its captured inputs by every member of the fp32 "
          "ensemble of the end-to-end floor (2 threads; SDPA math and SDPA default attention; Monte-Carlo arithmetic "
          "(a 2^-24 relative random rounding, 2^-53 in float64) at every module output and at every rounding op, "
          "fit and held-out seeds) and by the unit computed in float64 (member fp64: stands in for another summation "
          "order inside one op, which Monte-Carlo arithmetic at op results does not model), floor = maximum over "
          "the fit members raised to the Gumbel 0.99 quantile of each seeded family; "
          "k per vector from its held-out samples (held-out seeds vs plain, pairs of held-out seeds, each "
          "deterministic member left out): max(largest, Gumbel quantile at 1 - 1e-6, 2), rounded up to 2 digits")


@dataclass
class BuildOptions:
    step: int = 5
    streaming: bool = False
    chunk: int | None = None  # streaming: the session call captured (None: 1 if non-final, else 0)
    recipe: Recipe = field(default_factory=Recipe)
    units: tuple[str, ...] | None = None  # only these vector ids (None: all)
    bundle_name: str | None = None
    session_options: object = None  # streaming: reference.session.SessionOptions (None: upstream's)


@dataclass
class BuildReport:
    path: Path
    vectors: int
    bytes: int
    seconds: float
    capture_seconds: float
    floor_seconds: float
    write_seconds: float
    per_unit: dict = field(default_factory=dict)  # id -> {"bytes", "seconds", "k"}


def default_chunk(model, inputs: dict, session_options=None) -> int:
    """The session call a streaming kit captures: call 1 when it is a non-final call (its vocoder runs on a
    cumulative mel that holds an earlier call's frames), else call 0; an error when the bundle gives upstream's
    loop nothing but its final call."""
    from reference.session import plan_session

    plan = plan_session(model, int(inputs["token"].shape[1]), int(inputs["prompt_token"].shape[1]), session_options)
    chunks = plan.schedule.chunks
    if len(chunks) > 2:
        return 1
    if len(chunks) == 2:
        return 0
    raise InputError(f"the bundle's {inputs['token'].shape[1]} tokens give upstream's streaming loop only its final "
                     f"call (a non-final call needs hop + lookahead tokens): use a longer bundle for a streaming kit")


def check_out_dir(out: Path) -> None:
    """The kit directory must be new, empty, or an earlier kit (which the new one replaces when it is done)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / M.MANIFEST).exists():
        raise InputError(f"--out {out}: a non-empty directory that holds no kit ({M.MANIFEST}); give a new or empty "
                         f"directory")


def _entry(unit: Unit, cap, base: dict, tol, flow_keys: list[str], hift_keys: list[str], reproduce: dict,
           step: int) -> dict:
    keys = flow_keys if unit.component == "flow" else hift_keys
    inputs = [M.tensor_entry(s, f"inputs.{s.name}", cap.inputs[s.name]) for s in unit.inputs
              if cap.inputs.get(s.name) is not None]
    absent = [s.name for s in unit.inputs if cap.inputs.get(s.name) is None]
    outputs = []
    for s in unit.outputs:
        e = M.tensor_entry(s, f"outputs.{s.name}", base[s.name])
        sf = tol.floors[s.name]
        e["tolerance"] = {"gate": list(GATE), "k": tol.k, "floor": {g: sf.value(g) for g in GATE},
                          "zero_floor": [g for g in GATE if sf.value(g) == 0], "scale": sf.scale,
                          "limit": tol.limits(s.name), "set_by": {g: sf.worst.get(g, "") for g in GATE},
                          "margin": {g: sf.margin.get(g, 1.0) for g in GATE}}
        outputs.append(e)
    basis = {k: v for k, v in tol.k_basis.items() if k != "samples"}
    where = {"front": "the flow front end", "step": f"ODE step {step}", "vocoder": "the vocoder"}[unit.phase]
    return {"id": unit.id, "module": unit.module, "component": unit.component, "kind": unit.kind,
            "weights_file": "flow.pt" if unit.component == "flow" else "hift.pt",
            "weights": weight_keys(unit, keys), "description": unit.description, "captured_at": where,
            "attributes": {a: cap.attrs.get(a) for a in unit.attributes} | dict(unit.extra_attrs),
            "absent_inputs": absent, "file": M.vector_path(unit.id), "inputs": inputs, "outputs": outputs,
            "k": tol.k, "k_basis": basis, "contributions": tol.contributions, "reproduces_run": reproduce}


def _reproduce(unit: Unit, cap, base: dict, tol) -> dict:
    """How the re-computation from the stored inputs compares with the run's own call."""
    if cap.outputs is None:
        return {"bitwise": None, "note": "the op's output is computed by the kit from the run's input (exact op)"}
    worst, bitwise = 0.0, True
    for s in unit.outputs:
        a, b = cap.outputs[s.name], base[s.name]
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"kit build: {unit.id} re-computed gives {s.name} {list(b.shape)}, the run "
                               f"{list(a.shape)}")
        if not torch.equal(a, b):
            bitwise = False
            r, _ = ratio_against(tol, s.name, a, b)
            worst = max(worst, r)
    if worst > tol.k:
        raise RuntimeError(f"kit build: {unit.id} re-computed from its captured inputs is {worst:.3g} x its floor "
                           f"away from the run's own call (k {tol.k:g}): the vector would not be the reference's")
    return {"bitwise": bitwise, "ratio": worst}


def build_kit(model, inputs: dict, out: str | Path, options: BuildOptions | None = None,
              log: Callable[[str], None] | None = None, bundle_path: str | None = None) -> BuildReport:
    """Make the kit of ``model`` (a :class:`reference.model.Token2Wav`) on ``inputs`` (a loaded bundle) in
    ``out``. Written to ``<out>.partial-<pid>`` first and moved into place at the end (a kit already at ``out``
    is replaced only then; a crash leaves the partial directory)."""
    from safetensors.torch import save

    from reference.hift import hift_state_dict_upstream

    from ..floor.cache import bundle_hash
    from ..outputs import write_output

    opts = options or BuildOptions()
    log = log or (lambda msg: None)
    out = Path(out)
    check_out_dir(out)
    t0 = time.perf_counter()
    units = units_for(model.cfg)
    if opts.units:
        known = {u.id for u in units}
        bad = [u for u in opts.units if u not in known]
        if bad:
            raise InputError(f"unknown vector id(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        keep = set(opts.units)
    else:
        keep = None
    chunk = opts.chunk
    if opts.streaming and chunk is None:
        chunk = default_chunk(model, inputs, opts.session_options)
    with member_context(model, PLAIN):
        cap = capture_run(model, inputs, units, step=opts.step, streaming=opts.streaming, chunk=chunk,
                          session_options=opts.session_options)
    t_cap = time.perf_counter() - t0
    log(f"captured {len(cap.units)} units from one run ({t_cap:.1f} s)")
    flow_keys = list(model.flow.state_dict().keys())
    hift_keys = list(hift_state_dict_upstream(model.hift).keys())
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    (partial / M.VECTOR_DIR).mkdir(parents=True)
    entries, per_unit = [], {}
    t_floor = t_write = 0.0
    for u in units:
        if keep is not None and u.id not in keep:
            continue
        c = cap.units[u.id]
        ins = {k: v for k, v in c.inputs.items() if v is not None}
        t1 = time.perf_counter()
        base = run_unit(model, u, ins, c.attrs)
        tol = measure(model, u, ins, c.attrs, base, opts.recipe)
        t_floor += time.perf_counter() - t1
        rep = _reproduce(u, c, base, tol)
        entry = _entry(u, c, base, tol, flow_keys, hift_keys, rep, opts.step)
        t2 = time.perf_counter()
        tens = {f"inputs.{k}": v.contiguous() for k, v in ins.items()}
        tens.update({f"outputs.{k}": v.detach().contiguous() for k, v in base.items()})
        meta = {"schema": M.SCHEMA, "id": u.id, "module": u.module or "", "weights_file": entry["weights_file"],
                "weights": json.dumps(entry["weights"]), "attributes": json.dumps(entry["attributes"])}
        path = write_output(partial / entry["file"], save(tens, metadata=meta), "--out", what="a kit vector")
        t_write += time.perf_counter() - t2
        size = path.stat().st_size
        entry["bytes"] = size
        entries.append(entry)
        per_unit[u.id] = {"bytes": size, "seconds": time.perf_counter() - t1, "k": tol.k}
        log(f"{u.id}: k {tol.k:g}, " + ", ".join(
            f"{o}: max_abs floor {tol.floors[o].max_abs:.3g}" for o in list(base)[:2])
            + f" ({per_unit[u.id]['seconds']:.2f} s)")
    manifest = _manifest(model, inputs, opts, chunk, cap, entries, bundle_path, bundle_hash(inputs))
    write_output(partial / M.MANIFEST, json.dumps(manifest, indent=1, allow_nan=False) + "\n", "--out",
                 what="the kit manifest")
    _swap_into_place(partial, out)
    total = sum(e["bytes"] for e in entries) + (out / M.MANIFEST).stat().st_size
    return BuildReport(out, len(entries), total, time.perf_counter() - t0, t_cap, t_floor, t_write, per_unit)


def _manifest(model, inputs, opts: BuildOptions, chunk, cap, entries, bundle_path, bhash) -> dict:
    prov = model.provenance(streaming=opts.streaming, finalize=not opts.streaming)
    members = kit_members(opts.recipe)
    mode = {"streaming": opts.streaming, "step": opts.step, "n_timesteps": prov["n_timesteps"],
            "t_scheduler": prov["t_scheduler"], "cfg_rate": prov["cfg_rate"]}
    if opts.streaming:
        call = cap.session["calls"][chunk]
        mode.update({"kind": "the chunked call of upstream's streaming session loop", "chunk": chunk,
                     "finalize": bool(call["finalize"]), "chunk_mask": bool(call["streaming"]),
                     "static_chunk_size": model.cfg.flow.decoder.estimator.static_chunk_size,
                     "vocoder_input": "the cumulative mel of the session so far (finalize as the call)",
                     "session": cap.session})
    else:
        mode.update({"kind": "one offline token2wav call", "finalize": True, "chunk_mask": False})
    return {
        "schema": M.SCHEMA,
        "model": {"id": model.model_id, "config": model.cfg.name, "weights": dict(model.weights),
                  "weights_sha256": prov["weights_sha256"], "noise": prov["noise"],
                  "key_format": "upstream's: flow.pt keys as they are; hift.pt weight-normed layers as "
                                "<m>.parametrizations.weight.original0 (g) / original1 (v)"},
        "bundle": {"path": str(bundle_path) if bundle_path else None, "name": opts.bundle_name, "sha256": bhash,
                   "shapes": {k: list(v.shape) for k, v in inputs.items() if k in
                              ("token", "prompt_token", "prompt_feat", "embedding")}},
        "mode": mode,
        "producer": {"tool": "tts-parity", "torch": prov["env"]["torch"], "git_sha": prov["env"]["git_sha"],
                     "machine": prov["env"]["machine"]},
        "tolerance_method": METHOD,
        "tolerance_rule": M.RULE,
        "statistics": M.STATISTICS,
        "baseline": "the reference, 1 torch thread, explicit attention",
        "recipe": opts.recipe.to_dict(),
        "members": [m.to_dict() for m in members],
        "naming": "a port's output of vector V is named 'V/<output name>' (one file: a key; a directory: "
                  "V.safetensors or V.npz with keys <output name>, or V/<output name>.npy)",
        "vectors": entries,
    }


def _swap_into_place(partial: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out)
