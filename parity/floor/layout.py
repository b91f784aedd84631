"""Which reduced-precision layout a candidate dump ran in, for the envelope that judges it.

The envelope of a bf16/fp16/int8 candidate (:func:`parity.floor.estimate.estimate_envelope`) is the emulation of
one layout: which parts round to the low precision (the flow's DiT, the vocoder) and which stay fp32 (the upstream
fp16 fixes keep the residual stream, AdaLN, the time grid and the Euler state in fp32). A candidate of this
project says its layout (its switches in the trace metadata). A foreign dump does not; :func:`choose_layout`
infers it, in this order:

1. ``--precision-layout NAME``: the layout of the named candidate profile (any profile with an envelope);
2. the candidate's own switches (``switches`` metadata): its exact layout;
3. what the dump carries: the ``dtypes`` metadata (``{"flow": "float16", "hift": "float32"}``, what this project's
   dumps and many ports write) or else the dtypes its stages are stored in: a flow stage (``mu`` ..
   ``flow_mel``, the DiT blocks) in the precision says the flow ran in it, a vocoder stage (``conv_pre``, the
   HiFT internals, ``magnitude`` ..) that the vocoder did, ``step*.x`` (the Euler state) that the solver did;
   the emulated layout with exactly those parts in the precision (:data:`LAYOUTS`); where none has them, the
   nearest looser one (more parts in the precision: a correct port of the dump's layout stays inside it), and
   the verdict says so; a solver in the precision is emulated by none (the envelopes keep it fp32, as upstream's
   fix does): the layout of the other parts is taken and the verdict says that such a solver is judged against
   a fp32 one.

The result (:class:`LayoutChoice`) names the layout and why; :meth:`parity.floor.store.FloorStore.for_trace`
carries it into the verdict (``Comparison.floor["layout"]``, the gate line).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference.errors import InputError

from ..stages import is_vocoder_stage, parse_step, position
from .chop import PrecisionSpec, spec_from_switches

# the emulated layouts a foreign dump is matched against, per precision: (profile, the parts in the precision)
LAYOUTS = {
    "fp16": (("fp16-flow", frozenset({"flow"})), ("fp16-all", frozenset({"flow", "hift"}))),
    "bf16": (("bf16-flow", frozenset({"flow"})),),
    "int8": (("int8-dynamic", frozenset({"flow"})),),
}
DTYPE_NAMES = {"fp16": ("float16", "fp16", "half"), "bf16": ("bfloat16", "bf16")}
TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
PART_WORDS = {"flow": "the flow (DiT)", "hift": "the vocoder", "solver": "the solver (Euler state)"}


@dataclass(frozen=True)
class LayoutChoice:
    """``spec`` None: no envelope (``why`` says why). ``name``: the emulated layout (a candidate profile);
    ``source``: option | switches | metadata | stored dtypes | default; ``exact``: the dump's layout is the
    emulated one (False: the nearest looser one, or the parts could not be told)."""

    spec: PrecisionSpec | None
    name: str | None
    why: str
    source: str
    exact: bool = True
    parts: tuple = ()

    def to_json(self) -> dict:
        return {"name": self.name, "why": self.why, "source": self.source, "exact": self.exact,
                "parts": list(self.parts)}


# ---------------------------------------------------------------------------------------------
# the layout of a candidate of this project (its switches)

def envelope_spec(sw) -> tuple[PrecisionSpec | None, str]:
    """The reduced-precision emulation for a candidate's :class:`candidate.switches.Switches` (None for an
    fp32 candidate, or with the reason when its precision layout is not emulated)."""
    prec = sw.precision
    if prec == "fp32":
        return None, "fp32"
    if sw.flow_dtype != "fp32" and not (sw.keeps("time_grid") and sw.keeps("euler")):
        return None, (f"the solver's time grid or Euler state runs in {prec} (keep_fp32 lacks time_grid/euler): the "
                      f"emulation keeps the solver fp32, as the upstream fixes do")
    if sw.onnx:
        if sw.onnx_fp16:  # the whole exported estimator in fp16 (inputs and outputs kept fp32); the front end,
            # solver and vocoder stay the candidate's fp32 PyTorch code
            keep = ("flow.input_embedding", "flow.spk_embed_affine_layer", "flow.pre_lookahead_layer")
            return PrecisionSpec("fp16", flow=True, hift=False, keep=keep, residual_fp32=False), ""
        return None, f"the ONNX estimator's {prec} layout is not emulated"
    try:
        return spec_from_switches(sw), ""
    except ValueError as exc:
        return None, str(exc)


def switches_of(meta: dict):
    """A candidate trace's switches (its ``switches`` metadata), or None (a foreign dump)."""
    d = meta.get("switches") if isinstance(meta, dict) else None
    if not isinstance(d, dict):
        return None
    import dataclasses

    from candidate.switches import Switches

    names = {f.name for f in dataclasses.fields(Switches)}
    try:
        return Switches(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
    except (InputError, TypeError, ValueError):
        return None


def _spec_of(profile: str) -> tuple[PrecisionSpec | None, str]:
    from candidate.switches import switches_from

    return envelope_spec(switches_from(profile))


def _low(name: str, fmt: str) -> bool:
    return str(name).lower() in DTYPE_NAMES.get(fmt, ())


def parts_from_metadata(meta: dict, fmt: str) -> set | None:
    """The parts the ``dtypes`` metadata puts in ``fmt`` (None: no such metadata)."""
    d = meta.get("dtypes") if isinstance(meta, dict) else None
    if not isinstance(d, dict) or not any(k in d for k in ("flow", "hift")):
        return None
    parts = {p for p in ("flow", "hift") if _low(d.get(p, ""), fmt)}
    keep = d.get("keep_fp32")
    if "flow" in parts and isinstance(keep, (list, tuple)) and not {"time_grid", "euler"} <= set(keep):
        parts.add("solver")
    return parts


def parts_from_tensors(tensors: dict, fmt: str) -> tuple[set, dict]:
    """The parts whose stages are stored in ``fmt`` (and, per part, which stage showed it first)."""
    low = TORCH_DTYPES.get(fmt)
    found: dict = {}
    if low is None:
        return set(), found
    for name in sorted(tensors, key=position):
        t = tensors[name]
        if not isinstance(t, torch.Tensor) or t.dtype != low:
            continue
        st = parse_step(name)
        part = "solver" if st and st[1] == "x" else ("hift" if is_vocoder_stage(name) else
                                                     ("flow" if position(name)[0] in (1, 2, 3) else None))
        if part is not None:
            found.setdefault(part, name)
    if "solver" in found:
        found.setdefault("flow", found["solver"])
    return set(found), found


def _words(parts) -> str:
    ps = [PART_WORDS[p] for p in ("flow", "hift", "solver") if p in parts]
    return " and ".join(ps) if ps else "no part"


def match(fmt: str, parts: set) -> tuple[str | None, bool, str]:
    """(layout, exact, what was done) for a dump with ``parts`` in ``fmt``."""
    menu = LAYOUTS.get(fmt, ())
    if not menu:
        return None, False, f"no {fmt} layout is emulated"
    want = set(parts) - {"solver"}
    note = (f"; its solver (Euler state) runs in {fmt}, which no emulated layout does (upstream's fix keeps it fp32): "
            f"the Euler state is judged against a fp32 one, the noise and the time grid by the flat {fmt} rules"
            if "solver" in parts else "")
    for name, ps in menu:
        if ps == want:
            return name, "solver" not in parts, f"{name} has exactly {_words(want)} in {fmt}{note}"
    looser = sorted([(len(ps - want), name, ps) for name, ps in menu if ps >= want])
    if looser:
        _, name, ps = looser[0]
        return name, False, (f"no emulated layout has exactly {_words(want)} in {fmt}: the nearest looser one, "
                             f"{name} ({_words(ps)}){note}")
    name, ps = max(menu, key=lambda x: len(x[1]))
    return name, False, (f"no emulated layout is as loose as {_words(want)} in {fmt}: the loosest one, {name} "
                         f"({_words(ps)}){note}")


def choose_layout(precision: str, cand_meta: dict | None, cand_tensors: dict | None = None,
                  explicit: str | None = None) -> LayoutChoice:
    """The layout whose envelope judges a ``precision`` candidate (see the module docstring)."""
    meta = cand_meta or {}
    if explicit:
        from candidate.switches import PROFILES

        if explicit not in PROFILES:
            from reference.errors import InputError

            raise InputError(f"--precision-layout {explicit!r}: not a candidate profile (one of "
                             f"{', '.join(n for ns in LAYOUTS.values() for n, _ in ns)}, or any profile with an "
                             f"envelope)")
        spec, why = _spec_of(explicit)
        if spec is None:
            return LayoutChoice(None, explicit, f"--precision-layout {explicit}: {why or 'an fp32 profile'}", "option")
        if spec.fmt != precision:
            return LayoutChoice(None, explicit, f"--precision-layout {explicit} is a {spec.fmt} layout, the candidate "
                                                f"is {precision}", "option")
        return LayoutChoice(spec, explicit, f"given with --precision-layout {explicit}", "option")
    sw = switches_of(meta)
    if sw is not None:
        spec, why = envelope_spec(sw)
        if spec is None:
            return LayoutChoice(None, None, why, "switches")
        return LayoutChoice(spec, meta.get("profile") or "the candidate's switches", "the candidate's own switches",
                            "switches")
    parts, source, shown = parts_from_metadata(meta, precision), "metadata", {}
    if parts is None or not parts:
        tparts, shown = parts_from_tensors(cand_tensors or {}, precision)
        if tparts or parts is None:
            parts, source = tparts, "stored dtypes"
    if not parts:
        name, exact, what = match(precision, {"flow", "hift"})
        how = ("its dtypes metadata names no part in " + precision) if source == "metadata" else \
            f"no stage is stored in {precision} and no dtypes metadata says which parts ran in it"
        spec, why = _spec_of(name) if name else (None, what)
        return LayoutChoice(spec, name, f"{how}: assumed the loosest emulated {precision} layout, {name}"
                            if spec else why, "default", False, ())
    name, exact, what = match(precision, parts)
    if name is None:
        return LayoutChoice(None, None, what, source, False, tuple(sorted(parts)))
    spec, why = _spec_of(name)
    if spec is None:
        return LayoutChoice(None, name, why, source, False, tuple(sorted(parts)))
    if source == "stored dtypes":
        evidence = ", ".join(f"{PART_WORDS[p]} ({shown[p]})" for p in ("flow", "hift", "solver") if p in shown)
        how = f"stored in {precision}: {evidence}" + ("" if "hift" in parts else "; the vocoder's stages in fp32")
    else:
        how = f"dtypes metadata {meta.get('dtypes')}"
    return LayoutChoice(spec, name, f"{what} ({how})", source, exact, tuple(sorted(parts)))
