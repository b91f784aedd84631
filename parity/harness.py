"""The session layer: what ``parity run``, ``parity calibrate``, the pytest plugin and the bisector share.

* :class:`ModelSpec`: which reference model (a built-in preset or a released model directory, and the
  shared noise file); it loads the model and says how a child ``parity dump`` names it.
* :class:`RunMode`: how a pipeline is driven: offline or streaming, final chunk or not, and the *session
  kind*: ``"single"`` (one pipeline call; every mode today). Another kind (a chunked streaming session)
  registers its runner with :func:`register_session_kind` and is then part of every cache key.
* :class:`ReferenceCache`: reference runs, computed once per (model, bundle, mode, captured stages). It
  builds its own key; callers never compose one.
* :func:`run_case`: one case, capture -> trace -> compare -> diagnose: the reference (cached), the
  candidate, the candidate's step-local (teacher-forced) errors, the comparison. Returns a :class:`Case`.
* :class:`Session`: one project configuration, one policy, the models, the candidates, the reference
  cache and the floor store (:class:`parity.floor.store.FloorStore`: shipped floors, the disk cache, computed
  on demand) for everything run in it (a ``parity run``, a pytest session, a bisection).

Nothing here renders: reports belong to the command layer (``parity.run``, ``parity.cli``, the plugin).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from reference.bundle import bundle_dims, load_bundle
from reference.probe import Probe

from .capture.recorder import Recorder
from .judge.compare import CompareOptions, compare_loaded
from .ingest import Loaded
from .judge.policy import Policy, load_policy
from .project import ProjectConfig, read_project
from .result import Comparison
from .capture.runner import Progress, RunResult, run_to_trace
from .stages import STEP_OUTPUTS, VOCODER_OUTPUTS
from .capture.mask_check import check as check_mask
from .trace import write_trace


# ---------------------------------------------------------------------------------------------
# what is run

@dataclass(frozen=True)
class ModelSpec:
    """Which reference model: a built-in ``preset``, or a released ``model_dir`` (which wins), with an
    optional shared ``noise`` file (``parity noise export``; default: upstream's recipe)."""

    preset: str | None = "tiny"
    model_dir: str | None = None
    noise: str | None = None

    @classmethod
    def from_args(cls, args) -> "ModelSpec":
        model_dir = getattr(args, "model_dir", None)
        return cls(None if model_dir else getattr(args, "preset", None), model_dir, getattr(args, "noise", None))

    def load(self):
        from reference.model import Token2Wav
        from reference.noise import SharedNoise

        noise = SharedNoise.load(self.noise) if self.noise else None
        return Token2Wav.load(None if self.model_dir else self.preset, self.model_dir, noise)

    def cli_args(self) -> list[str]:
        """The same model for a child ``parity dump`` (absolute paths: the child runs elsewhere)."""
        argv = ["--model-dir", str(Path(self.model_dir).resolve())] if self.model_dir else ["--preset", str(self.preset)]
        if self.noise:
            argv += ["--noise", str(Path(self.noise).resolve())]
        return argv


@dataclass(frozen=True)
class RunMode:
    """How a pipeline is driven on one bundle. ``session`` is the session kind: ``"single"`` = one call of
    ``pipeline.run(inputs, probe, streaming=, finalize=)``; other kinds are registered runners
    (``"streaming"``: upstream's chunked loop, :mod:`parity.session_runner`). ``options``: the kind's options
    (for ``"streaming"`` a :class:`reference.session.SessionOptions`; None = its defaults), hashable, part of
    every cache key and, when not the defaults, of the label."""

    streaming: bool = False
    finalize: bool = True
    session: str = "single"
    options: object = None

    @property
    def label(self) -> str:
        """``offline`` | ``streaming`` (the single-call modes), or ``<offline|streaming>-<kind>`` for another
        session kind (``streaming-session`` for the chunked streaming session), + ``-<options tag>`` when its
        options are not the defaults: case names, trace names."""
        base = "streaming" if self.streaming else "offline"
        if self.session == "single":
            return base
        lab = f"{base}-{self.session}" if self.session != base else f"{base}-session"
        tag = self.options.tag() if hasattr(self.options, "tag") else ""
        return f"{lab}-{tag}" if tag else lab

    @property
    def is_session(self) -> bool:
        """A multi-call session kind (not one pipeline call)."""
        return self.session != "single"


SessionRunner = Callable[..., RunResult]  # (pipeline, inputs, out, *, mode, patterns, extra_meta, progress, raise_errors)


def _run_single(pipeline, inputs: dict, out, *, mode: RunMode, patterns=None, extra_meta=None, progress=None,
                raise_errors: bool = False) -> RunResult:
    return run_to_trace(pipeline, inputs, out, patterns=patterns, streaming=mode.streaming, finalize=mode.finalize,
                        extra_meta=extra_meta, progress=progress, raise_errors=raise_errors)


def _run_streaming(pipeline, inputs: dict, out, *, mode: RunMode, **kw) -> RunResult:
    from .capture.session import run_streaming_session

    return run_streaming_session(pipeline, inputs, out, mode=mode, **kw)


SESSION_KINDS: dict[str, SessionRunner] = {"single": _run_single, "streaming": _run_streaming}


def register_session_kind(name: str, runner: SessionRunner) -> None:
    """Make ``RunMode(session=name)`` runnable: ``runner`` drives a pipeline over one bundle and returns the
    :class:`parity.runner.RunResult` of its trace (stage names from :mod:`parity.stages`)."""
    if name in SESSION_KINDS and SESSION_KINDS[name] is not runner:
        raise ValueError(f"session kind {name!r} is already registered")
    SESSION_KINDS[name] = runner


def run_pipeline(pipeline, inputs: dict, out, mode: RunMode, **kw) -> RunResult:
    try:
        runner = SESSION_KINDS[mode.session]
    except KeyError:
        raise ValueError(f"unknown session kind {mode.session!r} (known: {', '.join(SESSION_KINDS)})") from None
    return runner(pipeline, inputs, out, mode=mode, **kw)


# ---------------------------------------------------------------------------------------------
# the reference cache

class ReferenceCache:
    """Reference runs by (model, bundle, mode, captured stages), each computed once.

    The model is identified by the object itself (the cache holds it, so its identity cannot be reused by
    another model while an entry lives); the bundle by its resolved path; the mode by the whole
    :class:`RunMode` (session kind included); the stages by the capture patterns.
    """

    def __init__(self):
        self._runs: dict[tuple, RunResult] = {}
        self._models: dict[int, object] = {}

    def key(self, model, bundle, mode: RunMode, patterns=None) -> tuple:
        return (id(model), str(Path(bundle).resolve()), mode, str(patterns))

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, key: tuple) -> bool:
        return key in self._runs

    def get(self, model, bundle, mode: RunMode = RunMode(), patterns=None, *, trace_path: Path | None = None,
            progress: bool = False, inputs: dict | None = None) -> RunResult:
        """The reference run (computed now, or from the cache); ``trace_path``: also write its trace there."""
        bundle = Path(bundle)
        key = self.key(model, bundle, mode, patterns)
        res = self._runs.get(key)
        if res is not None:
            if trace_path is not None and not Path(trace_path).exists():
                write_trace(trace_path, res.tensors, res.metadata)
            return res
        res = run_pipeline(model, inputs if inputs is not None else load_bundle(bundle, **bundle_dims(model.cfg)), trace_path, mode,
                           patterns=patterns, extra_meta={"inputs": bundle.name},
                           progress=Progress("reference", True) if progress else None, raise_errors=True)
        self._runs[key] = res
        self._models[id(model)] = model
        return res


# ---------------------------------------------------------------------------------------------
# one case

@dataclass
class Case:
    """One comparison: a bundle x a candidate configuration x a mode."""

    bundle: str
    profile: str
    mode: RunMode
    result: Comparison
    ref_meta: dict
    cand_meta: dict
    ref_tensors: dict = field(repr=False, default_factory=dict)
    cand_tensors: dict = field(repr=False, default_factory=dict)
    local_tensors: dict = field(repr=False, default_factory=dict)
    ref_trace: Path | None = None
    cand_trace: Path | None = None
    report: Path | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def streaming(self) -> bool:
        return self.mode.streaming

    @property
    def name(self) -> str:
        return f"{Path(self.bundle).stem}-{self.profile}-{self.mode.label}"

    @property
    def verdict(self) -> str:
        return self.result.verdict


@dataclass
class CaseSummary:
    """One case as a summary page shows it (plain data: it travels from pytest-xdist workers to the
    controller that writes the session page)."""

    name: str
    bundle: str
    profile: str
    mode: str
    verdict: str
    stage: str | None = None
    code: str | None = None
    message: str | None = None
    seconds: float | None = None
    report: str | None = None
    expected: str | None = None  # a known, diagnosed outcome the test asserted (assert_parity(..., finding=))
    faults: list = field(default_factory=list)  # injected faults: the case is expected to fail parity
    test: str | None = None  # the pytest node id that ran it (the plugin sets it)
    outcome: str | None = None  # that test's outcome: passed | failed | error | skipped | xfailed | xpassed

    @classmethod
    def of(cls, case: Case) -> "CaseSummary":
        fd = case.result.first_divergence
        secs = [v for v in (case.seconds or {}).values() if isinstance(v, (int, float))]
        exp = (case.result.case or {}).get("expected")
        expected = (f"{exp.get('verdict')}: {exp.get('stage') or '*'} [{exp.get('finding')}]"
                    if isinstance(exp, dict) and exp.get("finding") else None)
        return cls(case.name, case.bundle, case.profile, case.mode.label, case.verdict, fd.stage if fd else None,
                   fd.code if fd else None, fd.message if fd else None, sum(secs) if secs else None,
                   str(case.report) if case.report else None, expected,
                   faults=list((case.cand_meta or {}).get("faults") or []))

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> "CaseSummary":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def step_local(cand, ref: dict, *, streaming: bool, finalize: bool = True) -> dict:
    """Teacher-forced errors: the candidate's solver step driven from the reference's own state
    (x0 or step{k-1}.x, t, dt, mu, spks, cond) and its vocoder fed the reference flow_mel."""
    out: dict = {}
    if "mu" not in ref or "x0" not in ref:
        return out
    mu, spks, cond = ref["mu"], ref["spks"], ref["cond"]
    mask = torch.ones(1, 1, mu.shape[2])
    k = 1
    while f"step{k}.t" in ref and f"step{k}.x" in ref:
        x_prev = ref["x0"] if k == 1 else ref[f"step{k - 1}.x"]
        try:
            x, v1, v2, v_cfg = cand.step(x_prev, ref[f"step{k}.t"], ref[f"step{k}.dt"].reshape(()), mu, mask, spks,
                                         cond, streaming=streaming, k=k)
        except Exception:  # noqa: BLE001 - a crashing step shows as missing local stages
            break
        for n, t in zip(STEP_OUTPUTS, (v1, v2, v_cfg, x)):
            out[f"step{k}.{n}"] = t.detach().float().cpu()
        k += 1
    if "flow_mel" in ref:
        rec = Recorder(VOCODER_OUTPUTS)
        try:
            cand.vocode(ref["flow_mel"], finalize=finalize, probe=Probe(rec))
        except Exception:  # noqa: BLE001 - a crashing vocoder shows as missing local stages
            pass
        out.update(rec.tensors)
    return out


def run_case(model, cand, bundle: str | Path, *, streaming: bool = False, finalize: bool = True,
             mode: RunMode | None = None, policy: Policy | None = None, patterns=None, trace_dir: Path | None = None,
             local: bool = True, progress: bool = False, profile_name: str = "candidate",
             refs: ReferenceCache | None = None, allow_trim: bool = False, mask_check: bool = True,
             floors=None) -> Case:
    """Reference (from ``refs`` when given) and candidate on one bundle, the candidate's step-local errors
    (``local``), in streaming mode the chunk-mask check (``mask_check``, :mod:`parity.streaming_mask`), the
    comparison. ``trace_dir``: keep both traces there (``<bundle>-<mode>-<profile>``). ``floors``: the
    :class:`parity.floor.store.FloorStore` the candidate's floor (fp32 noise floor or precision envelope) comes
    from (a multi-call session kind has none: its stages are judged by the flat tolerances, and the result says
    so); None: the flat tolerances judge."""
    mode = mode or RunMode(streaming, finalize)
    bundle = Path(bundle)
    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    stem = f"{bundle.stem}-{mode.label}"
    ref_path = trace_dir / f"{stem}-reference.safetensors" if trace_dir else None
    cand_path = trace_dir / f"{stem}-{profile_name}.safetensors" if trace_dir else None
    t0 = time.perf_counter()
    ref_res = (refs if refs is not None else ReferenceCache()).get(model, bundle, mode, patterns, trace_path=ref_path, progress=progress,
                                            inputs=inputs)
    t1 = time.perf_counter()
    cand_res = run_pipeline(cand, inputs, cand_path, mode, patterns=patterns, extra_meta={"inputs": bundle.name},
                            progress=Progress(f"candidate[{profile_name}]", True) if progress else None)
    t2 = time.perf_counter()
    loc = step_local(cand, ref_res.tensors, streaming=mode.streaming, finalize=mode.finalize) if local else {}
    t2b = time.perf_counter()
    off_l = None
    if mode.is_session:  # the offline reference run of the same tokens: what streaming costs (stream vs offline)
        off = (refs if refs is not None else ReferenceCache()).get(model, bundle, RunMode(), inputs=inputs)
        off_l = Loaded(off.tensors, off.metadata, f"<reference {bundle.stem}-offline>")
    t3 = time.perf_counter()
    mask = check_mask(model, ref_res.tensors, cand_res.tensors, streaming=mode.streaming) if mask_check else None
    t3m = time.perf_counter()
    ref_l = Loaded(ref_res.tensors, ref_res.metadata, str(ref_path or f"<reference {stem}>"))
    cand_l = Loaded(cand_res.tensors, cand_res.metadata, str(cand_path or f"<candidate {stem}>"))
    loc_l = Loaded(loc, {"pipeline": "candidate-local"}, "<step-local>") if loc else None
    floor = None
    if floors is not None:
        floor = floors.for_run(model, inputs, switches=getattr(cand, "sw", None), streaming=mode.streaming,
                               finalize=mode.finalize, session=mode.session, bundle_name=bundle.stem)
    t3f = time.perf_counter()
    result = compare_loaded(ref_l, cand_l, policy or load_policy(), CompareOptions(allow_trim=allow_trim), loc_l,
                            mask_check=mask, offline=off_l, floor=floor)
    t4 = time.perf_counter()
    blocks = bool(patterns and "block" in str(patterns))
    if mode.is_session and hasattr(cand, "expected_session_stage"):
        calls = (cand_res.metadata.get("session_plan") or {}).get("chunks") or [None]
        expected = cand.expected_session_stage(len(calls) - 1, blocks)
    else:
        expected = getattr(cand, "expected_stage", lambda *_: None)(blocks)
    result.case = {"bundle": bundle.name, "profile": profile_name, "streaming": mode.streaming,
                   "finalize": mode.finalize, "expected_stage": expected}
    if mode.session != "single":
        result.case["session"] = mode.session
        result.case["mode"] = mode.label
        if hasattr(mode.options, "tag"):
            result.case["session_options"] = mode.options.tag() or "defaults"
    return Case(bundle.name, profile_name, mode, result, ref_res.metadata, cand_res.metadata, ref_res.tensors,
                cand_res.tensors, loc, ref_path, cand_path,
                seconds={"reference": t1 - t0, "candidate": t2 - t1, "local": t2b - t2,
                         **({"offline reference": t3 - t2b} if off_l is not None else {}), "mask_check": t3m - t3,
                         "floor": t3f - t3m, "compare": t4 - t3f})


# ---------------------------------------------------------------------------------------------
# the session

class Session:
    """One project configuration, one policy, and the caches of models, candidates and reference runs.

    ``policy``: a :class:`parity.policy.Policy`, an extra policy file (on top of the defaults and the
    project's ``[tool.parity.tolerances]``), or None. ``pyproject``: the project file (default ./pyproject.toml).
    ``floors``: the floor store (default: shipped floors, the disk cache, computed when missing); None: no
    floors, every stage judged by the flat tolerances (``--no-floor``).
    """

    def __init__(self, pyproject: str | Path | None = None, policy: Policy | str | Path | None = None,
                 project: ProjectConfig | None = None, floors="default"):
        self.project = project if project is not None else read_project(pyproject)
        self.pyproject = self.project.path
        self._policy_arg = policy
        self._policy: Policy | None = policy if isinstance(policy, Policy) else None
        self.models: dict[ModelSpec, object] = {}
        self.candidates: dict[tuple, object] = {}
        self.refs = ReferenceCache()
        if floors == "default":
            from .floor.store import FloorStore

            floors = FloorStore()
        self.floors = floors

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = load_policy(self._policy_arg, self.project)
        return self._policy

    def model(self, spec: ModelSpec | None = None):
        spec = spec or ModelSpec()
        if spec not in self.models:
            self.models[spec] = spec.load()
        return self.models[spec]

    def candidate(self, model, profile: str | None, faults=(), device: str = "cpu", label: str | None = None,
                  overrides: dict | None = None):
        """The candidate for ``profile`` (built-in or ``[tool.parity.profiles]``) plus ``faults`` and switch
        ``overrides`` (e.g. :meth:`parity.onnx_options.OnnxOptions.overrides`) on ``model``, built once per
        session."""
        from candidate.pipeline import CandidateToken2Wav
        from .project import profile_switches

        from .onnx_options import check_overrides, name_suffix

        faults = tuple(faults or ())
        overrides = dict(overrides or {})
        key = (id(model), profile, faults, device, label, tuple(sorted(overrides.items())))
        if key not in self.candidates:
            over = {"device": device} if device != "cpu" else {}
            sw = profile_switches(profile, faults, self.pyproject, **over, **overrides)
            check_overrides(sw, profile, overrides)
            name = label or ((profile or "fp32-explicit") + name_suffix(overrides)
                             + ("+" + "+".join(faults) if faults else ""))
            self.candidates[key] = CandidateToken2Wav(model, sw, name)
        return self.candidates[key]

    def reference(self, model, bundle, mode: RunMode = RunMode(), patterns=None) -> RunResult:
        return self.refs.get(model, bundle, mode, patterns)

    def run(self, model, cand, bundle, mode: RunMode = RunMode(), *, patterns=None, trace_dir: Path | None = None,
            local: bool = True, progress: bool = False, allow_trim: bool = False) -> Case:
        return run_case(model, cand, bundle, mode=mode, policy=self.policy, patterns=patterns, trace_dir=trace_dir,
                        local=local, progress=progress, profile_name=cand.profile_name, refs=self.refs,
                        allow_trim=allow_trim, floors=self.floors)
