"""Teacher-forced capture: one real run of the reference on a bundle, recording every unit's own inputs (and
what it returned) at the call the kit is made for.

The run is the reference's ordinary one (``Token2Wav.run`` offline, or upstream's streaming session loop,
:func:`reference.session.run_session`, for the chunked call), with forward hooks on the units' modules and
wrappers around the units' methods for its duration (the model is left as it was found). Which call is kept:

* flow front end and vocoder units: their call in the run (offline) or in the session call ``chunk``;
* estimator units and the CFG/Euler step: their call inside ODE step ``step`` (of that session call).

The window is opened and closed by the stages the pipeline reports to its probe (``step{k}.t`` before the
step, ``step{k}.x`` after it; ``chunk{c}.tokens`` .. ``chunk{c}.audio`` in a session). The vocoder's internal
stages (``s_stft``, ``conv_pre``, ``hift.resblocks{i}``, ``hift.conv_post``, ``magnitude``, ``phase``,
``audio_preclamp``, ``audio``) are taken from ``decode``'s own probe, which the wrapper hands a recorder of
its own (the caller's probe still gets everything it asked for): the glue units' inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import torch

from reference.probe import Probe

from .units import Unit, samples_per_frame


class KitCaptureError(RuntimeError):
    pass


@dataclass
class Captured:
    """One unit's call on the run: its tensor inputs (None: an optional input that was absent), its non-tensor
    arguments, and what it returned (None for a unit whose output is the op itself, ``f0_upsamp``)."""

    inputs: dict[str, torch.Tensor | None]
    attrs: dict
    outputs: dict[str, torch.Tensor] | None
    calls: int = 1


@dataclass
class CaptureResult:
    units: dict[str, Captured] = field(default_factory=dict)
    stages: dict[str, torch.Tensor] = field(default_factory=dict)  # the vocoder's internal stages (glue)
    session: dict | None = None  # the session's schedule and the chunk captured (streaming kits)


def _copy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu").clone().contiguous()
    return v


class _Windows:
    """The probe recorder that opens and closes the capture windows (nothing is recorded)."""

    def __init__(self, step: int, chunk: int | None):
        pre = f"chunk{chunk}." if chunk is not None else ""
        self.marks = {f"{pre}step{step}.t": ("step", True), f"{pre}step{step}.x": ("step", False)}
        if chunk is not None:
            self.marks[f"chunk{chunk}.tokens"] = ("chunk", True)
            self.marks[f"chunk{chunk}.audio"] = ("chunk", False)
        self.in_chunk = chunk is None
        self.in_step = False
        self.steps_seen = 0

    def wants(self, name: str) -> bool:
        return name in self.marks

    def record(self, name: str, tensor: torch.Tensor) -> None:
        which, on = self.marks[name]
        if which == "step":
            if self.in_chunk:
                self.in_step = on
                self.steps_seen += on
        else:
            self.in_chunk = on


class _Tee:
    """decode's probe during the capture: keeps the internal stages, forwards to the caller's probe."""

    def __init__(self, keep: dict, other: Probe | None):
        self.keep = keep
        self.other = other

    def wants(self, name: str) -> bool:
        return True

    def record(self, name: str, tensor: torch.Tensor) -> None:
        self.keep[name] = _copy(tensor)
        if self.other is not None and self.other:
            self.other(name, tensor)


class Capturer:
    """Hooks and wrappers of every hook/wrap unit for the duration of a ``with`` block."""

    def __init__(self, model, units: list[Unit], windows: _Windows):
        self.model = model
        self.units = [u for u in units if u.source[0] in ("hook", "wrap")]
        self.win = windows
        self.result = CaptureResult()
        self._handles: list = []
        self._wrapped: list = []

    def _active(self, unit: Unit) -> bool:
        if not self.win.in_chunk:
            return False
        if unit.phase == "step":
            return self.win.in_step
        return not self.win.in_step

    def _keep(self, unit: Unit, arguments: dict, out) -> None:
        if not self._active(unit):
            return
        have = self.result.units.get(unit.id)
        if have is not None:
            have.calls += 1
            return
        inputs = {s.name: _copy(arguments.get(s.name)) for s in unit.inputs}
        for s in unit.inputs:
            v = inputs[s.name]
            if v is None and not s.optional:
                raise KitCaptureError(f"kit unit {unit.id}: input '{s.name}' was not passed on the run")
            if v is not None and not isinstance(v, torch.Tensor):
                raise KitCaptureError(f"kit unit {unit.id}: input '{s.name}' is {type(v).__name__}, not a tensor")
        attrs = {a: arguments.get(a) for a in unit.attributes}
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outputs = {s.name: _copy(v) for s, v in zip(unit.outputs, outs)}
        self.result.units[unit.id] = Captured(inputs, attrs, outputs)

    def _hook(self, unit: Unit, module):
        sig = inspect.signature(module.forward)

        def hook(mod, args, kwargs, out):
            if self._active(unit):
                b = sig.bind(*args, **kwargs)
                b.apply_defaults()
                self._keep(unit, dict(b.arguments), out)
        return module.register_forward_hook(hook, with_kwargs=True)

    def _wrap(self, unit: Unit, owner, method: str):
        orig = getattr(owner, method)
        sig = inspect.signature(orig)
        cap = self

        def wrapper(*args, **kwargs):
            b = sig.bind(*args, **kwargs)
            b.apply_defaults()
            arguments = dict(b.arguments)
            if method == "decode" and cap._active(unit):
                stages: dict = {}
                arguments["probe"] = Probe(_Tee(stages, arguments.get("probe")))
                out = orig(**arguments)
                if unit.id not in cap.result.units:
                    cap.result.stages.update(stages)
                cap._keep(unit, arguments, out)
                return out
            out = orig(**arguments)
            if method == "make_source" and cap._active(unit):
                noise = arguments["noise"]
                n = arguments["f0"].shape[1] * samples_per_frame(cap.model)
                arguments = {"f0": arguments["f0"], "rand_ini": noise.rand_ini, "sine_noise": noise.sine_noise(n)}
            cap._keep(unit, arguments, out)
            return out

        setattr(owner, method, wrapper)
        self._wrapped.append((owner, method))

    def __enter__(self):
        for u in self.units:
            owner = u.owner(self.model)
            if u.source[0] == "hook":
                self._handles.append(self._hook(u, owner))
            else:
                self._wrap(u, owner, u.source[2])
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        for owner, method in self._wrapped:
            if method in owner.__dict__:
                delattr(owner, method)
        self._handles.clear()
        self._wrapped.clear()
        return False


def _glue(units: list[Unit], res: CaptureResult, n_up: int) -> None:
    """The glue units' inputs and outputs, from the vocoder's internal stages and the captured units."""
    st = res.stages
    need = ["s_stft", "conv_pre", "hift.conv_post", "magnitude", "phase", "audio_preclamp", "audio"]
    need += [f"hift.resblocks{i}" for i in range(n_up)]
    missing = [n for n in need if n not in st]
    if missing:
        raise KitCaptureError(f"kit capture: the vocoder's decode did not report {', '.join(missing)}")
    src = res.units.get("m_source")
    for u in units:
        if u.source[0] != "glue":
            continue
        g = u.source[1]
        if g == "f0_upsamp":
            if src is None:
                raise KitCaptureError("kit capture: no call of make_source was captured (f0_upsamp needs its f0)")
            res.units[u.id] = Captured({"f0": src.inputs["f0"]}, {}, None)
        elif g == "stage":
            i = u.extra_attrs["stage"]
            x = st["conv_pre"] if i == 0 else st[f"hift.resblocks{i - 1}"]
            res.units[u.id] = Captured({"x": x, "s_stft": st["s_stft"]}, {}, {"out": st[f"hift.resblocks{i}"]})
        elif g == "post":
            res.units[u.id] = Captured({"x": st[f"hift.resblocks{n_up - 1}"]}, {},
                                       {"magnitude": st["magnitude"], "phase": st["phase"]})
        elif g == "magnitude_phase":
            res.units[u.id] = Captured({"x": st["hift.conv_post"]}, {},
                                       {"magnitude": st["magnitude"], "phase": st["phase"]})
        elif g == "clamp":
            res.units[u.id] = Captured({"audio_preclamp": st["audio_preclamp"]}, {}, {"audio": st["audio"]})


def capture_run(model, inputs: dict, units: list[Unit], *, step: int, streaming: bool = False,
                chunk: int | None = None, session_options=None) -> CaptureResult:
    """Run the reference once and capture every unit. Offline (``streaming=False``): one ``Token2Wav.run``
    call. Streaming: upstream's session loop, captured at call ``chunk``."""
    from reference.session import SessionOptions, run_session

    n_steps = model.cfg.flow.n_timesteps
    if not 1 <= step <= n_steps:
        raise KitCaptureError(f"kit: --step {step} is outside the solver's steps 1..{n_steps}")
    win = _Windows(step, chunk if streaming else None)
    cap = Capturer(model, units, win)
    with cap:
        if streaming:
            opts = dataclasses.replace(session_options or SessionOptions(), step_chunks=(chunk,))
            sres = run_session(model, inputs, Probe(win), opts)
            cap.result.session = {"chunk": chunk, "schedule": sres.schedule.to_dict(),
                                  "calls": [dataclasses.asdict(c) for c in sres.chunks],
                                  "options": sres.options.to_dict()}
        else:
            model.run(inputs, Probe(win), streaming=False, finalize=True)
    res = cap.result
    if win.steps_seen == 0:
        raise KitCaptureError(f"kit capture: ODE step {step} was never reached")
    _glue(units, res, len(model.hift.upsample_rates))
    missing = [u.id for u in units if u.id not in res.units]
    if missing:
        raise KitCaptureError(f"kit capture: no call captured for {', '.join(missing[:8])}"
                              + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    twice = [f"{uid} ({c.calls} calls)" for uid, c in res.units.items() if c.calls > 1]
    if twice:
        raise KitCaptureError(f"kit capture: units called more than once in the captured call: {', '.join(twice)}")
    return res
