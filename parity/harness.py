"""The harness: what ``parity run``, ``parity calibrate``, the pytest plugin and the bisector share.

* :class:`ModelSpec`: which reference model (a built-in preset or a released model directory, and the
  shared noise file); it loads the model and says how a child ``parity dump`` names it.
* :class:`ReferenceCache`: reference runs, computed once per (model, bundle, run mode, captured stages). It
  builds its own key; callers never compose one.
* :func:`run_case`: one case, capture -> trace -> judge: the reference (cached), the candidate, the candidate's
  step-local (teacher-forced) errors, the chunk-mask check and the floor (capture-side, with the model at hand),
  the comparison as the :class:`parity.judge.spec.ComparisonSpec` says. One path for one call and for a
  streaming session (:class:`parity.capture.runner.RunMode`). Returns a :class:`Case`.
* :class:`Harness`: one project configuration, one comparison spec (policy, floor store, requirements), the
  models, the candidates and the reference cache for everything run in it (a ``parity run``, a pytest session,
  a bisection).

Nothing here renders: reports belong to the command layer (``parity.run``, ``parity.cli``, the plugin).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from reference.bundle import bundle_dims, load_bundle
from reference.errors import InputError

from .capture.local import step_local
from .capture.mask_check import check as check_mask
from .capture.progress import Progress
from .capture.runner import RunMode, RunResult, run_pipeline
from .ingest import Loaded, load
from .judge.compare import compare_loaded
from .judge.policy import Policy, load_policy
from .judge.spec import ComparisonSpec
from .project import ProjectConfig, read_project
from .result import Comparison
from .capture.time_grid import check as check_time_grid
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


# ---------------------------------------------------------------------------------------------
# the reference cache

class ReferenceCache:
    """Reference runs by (model, bundle, mode, captured stages), each computed once.

    The model is identified by the object itself (the cache holds it, so its identity cannot be reused by
    another model while an entry lives); the bundle by its resolved path; the mode by the whole
    :class:`RunMode` (a streaming session's options included); the stages by the capture patterns.
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


def run_case(model, cand, bundle: str | Path, mode: RunMode = RunMode(), spec: ComparisonSpec | None = None, *,
             patterns=None, trace_dir: Path | None = None, local: bool = True, progress: bool = False,
             profile_name: str = "candidate", refs: ReferenceCache | None = None) -> Case:
    """Reference (from ``refs`` when given) and candidate on one bundle in ``mode``, the candidate's step-local
    errors (``local``: one call only), the chunk-mask check (the spec's ``mask_check``), the offline reference of
    the same tokens (a streaming session, the spec's ``stream_vs_offline``), the floor (the spec's store: the
    fp32 noise floor or the precision envelope of the candidate), then the comparison as ``spec`` says (default:
    the default policy, no floor). ``trace_dir``: keep both traces there (``<bundle>-<mode>-<profile>``)."""
    spec = spec or ComparisonSpec()
    refs = refs if refs is not None else ReferenceCache()
    bundle = Path(bundle)
    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    stem = f"{bundle.stem}-{mode.label}"
    ref_path = trace_dir / f"{stem}-reference.safetensors" if trace_dir else None
    cand_path = trace_dir / f"{stem}-{profile_name}.safetensors" if trace_dir else None
    seconds: dict = {}
    t0 = time.perf_counter()
    ref_res = refs.get(model, bundle, mode, patterns, trace_path=ref_path, progress=progress, inputs=inputs)
    seconds["reference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cand_res = run_pipeline(cand, inputs, cand_path, mode, patterns=patterns, extra_meta={"inputs": bundle.name},
                            progress=Progress(f"candidate[{profile_name}]", True) if progress else None)
    seconds["candidate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loc = step_local(cand, ref_res.tensors, streaming=mode.streaming, finalize=mode.finalize) \
        if local and not mode.is_session else {}
    seconds["local"] = time.perf_counter() - t0
    off_l = None
    if mode.is_session and spec.stream_vs_offline:  # the offline reference of the same tokens: what streaming costs
        t0 = time.perf_counter()
        off = refs.get(model, bundle, RunMode(), inputs=inputs)
        off_l = Loaded(off.tensors, off.metadata, f"<reference {bundle.stem}-offline>")
        seconds["offline reference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mask = check_mask(model, ref_res.tensors, cand_res.tensors, streaming=mode.streaming) if spec.mask_check else None
    seconds["mask_check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = check_time_grid(model, ref_res.tensors, cand_res.tensors, streaming=mode.streaming) \
        if spec.time_grid and not mode.is_session else None
    seconds["time_grid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    floor = spec.floor_for_run(model, inputs, switches=getattr(cand, "sw", None), mode=mode, bundle_name=bundle.stem,
                               reference=ref_res.tensors)
    seconds["floor"] = time.perf_counter() - t0
    ref_l = Loaded(ref_res.tensors, ref_res.metadata, str(ref_path or f"<reference {stem}>"))
    cand_l = Loaded(cand_res.tensors, cand_res.metadata, str(cand_path or f"<candidate {stem}>"))
    loc_l = Loaded(loc, {"pipeline": "candidate-local"}, "<step-local>") if loc else None
    t0 = time.perf_counter()
    result = compare_loaded(ref_l, cand_l, spec, loc_l, mask_check=mask, offline=off_l, floor=floor, time_grid=grid)
    seconds["compare"] = time.perf_counter() - t0
    blocks = bool(patterns and "block" in str(patterns))
    if mode.is_session and hasattr(cand, "expected_session_stage"):
        calls = (cand_res.metadata.get("session_plan") or {}).get("chunks") or [None]
        expected = cand.expected_session_stage(len(calls) - 1, blocks)
    else:
        expected = getattr(cand, "expected_stage", lambda *_: None)(blocks)
    result.case = {"bundle": bundle.name, "profile": profile_name, "streaming": mode.streaming,
                   "finalize": mode.finalize, "expected_stage": expected}
    if mode.is_session:
        result.case.update(session=mode.kind, mode=mode.label, session_options=mode.session.tag() or "defaults")
    return Case(bundle.name, profile_name, mode, result, ref_res.metadata, cand_res.metadata, ref_res.tensors,
                cand_res.tensors, loc, ref_path, cand_path, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# saved traces: the capture-side checks with the model their provenance names, then the comparison

def compare_paths(ref_path, cand_path, spec: ComparisonSpec | None = None, *, maps: dict | None = None,
                  local_path=None, fp64_path=None, offline_path=None) -> Comparison:
    """Compare saved traces as ``spec`` says. The floor comes from the reference trace's own provenance (the
    spec's store or its one floor file). In streaming mode the chunk-mask check runs with the reference model
    the reference trace's provenance names (capture-side work: it loads and runs that model) unless the spec
    turns it off."""
    local = load(local_path, maps) if local_path else None
    fp64 = load(fp64_path, maps) if fp64_path else None
    offline = load(offline_path, maps) if offline_path else None
    return compare_saved(load(ref_path, maps), load(cand_path, maps), spec, local=local, fp64=fp64, offline=offline)


def compare_saved(ref: Loaded, cand: Loaded, spec: ComparisonSpec | None = None, *, local: Loaded | None = None,
                  fp64: Loaded | None = None, offline: Loaded | None = None) -> Comparison:
    """Compare two saved (loaded) traces as ``spec`` says: :func:`compare_loaded`, with the streaming chunk-mask
    check run first when the spec asks for it (it loads the reference model the trace names and runs it)."""
    from .capture.mask_check import check_saved, is_streaming

    spec = spec or ComparisonSpec()
    streaming = is_streaming(ref.metadata, cand.metadata)
    mc = check_saved(ref.metadata, ref.tensors, cand.tensors, streaming=streaming) if spec.mask_check else None
    grid = None
    if spec.time_grid:
        from .capture.time_grid import check_saved as grid_saved

        grid = grid_saved(ref.metadata, ref.tensors, cand.tensors, streaming=streaming)
    return compare_loaded(ref, cand, spec, local, fp64, mask_check=mc, offline=offline, time_grid=grid)


# ---------------------------------------------------------------------------------------------
# the harness

class Harness:
    """One project configuration, one comparison spec, and the caches of models, candidates and reference runs.

    ``spec``: the :class:`parity.judge.spec.ComparisonSpec` every case is judged by (default: the project's
    policy and the default floor store: shipped floors, the disk cache, computed when missing). ``project``: the
    ``[tool.parity]`` configuration (default: read from ``pyproject``, default ./pyproject.toml).
    """

    def __init__(self, pyproject: str | Path | None = None, spec: ComparisonSpec | None = None,
                 project: ProjectConfig | None = None):
        self.project = project if project is not None else read_project(pyproject)
        self.pyproject = self.project.path
        if spec is None:
            from .floor.store import FloorStore

            spec = ComparisonSpec(policy=load_policy(None, self.project), floors=FloorStore())
        self.spec = spec
        self.models: dict[ModelSpec, object] = {}
        self.candidates: dict[tuple, object] = {}
        self.refs = ReferenceCache()

    @property
    def policy(self) -> Policy:
        return self.spec.policy

    @property
    def floors(self):
        """The spec's floor store (None: the flat tolerances judge)."""
        return self.spec.floors

    def model(self, spec: ModelSpec | None = None):
        spec = spec or ModelSpec()
        if spec not in self.models:
            self.models[spec] = spec.load()
        return self.models[spec]

    def candidate(self, model, profile: str | None, faults=(), device: str = "cpu", label: str | None = None,
                  overrides: dict | None = None, port_noise: str = "shared"):
        """The candidate for ``profile`` (built-in or ``[tool.parity.profiles]``) plus ``faults`` and switch
        ``overrides`` (e.g. :meth:`parity.onnx_options.OnnxOptions.overrides`) on ``model``, built once per
        harness. The profile's estimator backend builds it (:mod:`candidate.backends`): a port's name
        (:data:`parity.ports.PORTS`) gives that port driven by its adapter, with the noise ``port_noise`` shares with
        it (faults, switch overrides and other devices do not apply to a port's own code)."""
        from candidate.pipeline import build_candidate

        from .onnx_options import check_overrides, name_suffix
        from .project import profile_switches

        faults = tuple(faults or ())
        overrides = dict(overrides or {})
        key = (id(model), profile, faults, device, label, tuple(sorted(overrides.items())), port_noise)
        if key not in self.candidates:
            base = profile_switches(profile, (), self.pyproject)
            refusal = base.backend.refuse_switches(profile, faults, overrides, device)
            if refusal:
                raise InputError(refusal)
            check_overrides(base, profile, overrides)
            if "noise" in base.backend.options:  # a port: the noise the harness shares with it
                overrides["estimator_options"] = {"noise": port_noise}
            over = {"device": device} if device != "cpu" else {}
            sw = profile_switches(profile, faults, self.pyproject, **over, **overrides)
            name = label or ((profile or "fp32-explicit") + name_suffix(overrides)
                             + ("+" + "+".join(faults) if faults else ""))
            self.candidates[key] = build_candidate(model, sw, name)
        return self.candidates[key]

    def reference(self, model, bundle, mode: RunMode = RunMode(), patterns=None) -> RunResult:
        return self.refs.get(model, bundle, mode, patterns)

    def run(self, model, cand, bundle, mode: RunMode = RunMode(), *, patterns=None, trace_dir: Path | None = None,
            local: bool = True, progress: bool = False) -> Case:
        return run_case(model, cand, bundle, mode, self.spec, patterns=patterns, trace_dir=trace_dir, local=local,
                        progress=progress, profile_name=cand.profile_name, refs=self.refs)
