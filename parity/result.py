"""The comparison result, typed: what compare -> diagnose produce and what the summary, the report, the CLI,
the pytest plugin and the bisector read.

* :class:`StageResult`: one stage's judgement (status, the statistic and limit that decided it, the gate
  that decided it) and its measurements (``metrics``, the metrics layer's JSON-safe dict).
* :class:`Finding`: one diagnosis (code, stage, severity, message, evidence).
* :class:`StepRow`: one ODE step's accumulated and step-local errors.
* :class:`Comparison`: all of it. The verdict is derived from the findings (any ``error`` -> "error", any
  ``failure`` -> "fail", else "pass"), the headline is the first error or failure, the exit code follows
  the verdict. A finding added after the diagnosis (:meth:`Comparison.add_finding`) therefore changes the
  verdict the one way it can.

JSON: :meth:`Comparison.to_json` writes schema ``tts-parity-comparison/1`` with the keys every earlier
version wrote (``verdict``, ``first_divergence`` and ``summary`` are written for readers, and recomputed on
reading); :meth:`Comparison.from_json` reads it back, keeping keys it does not know (``extra``).
Per-frame vectors (a stage's ``per_frame_error`` and the audio section's ``per_frame``) can go to a
sidecar ``.npz`` beside the JSON (:func:`write_json`): the JSON then names the sidecar under ``vectors``
and :func:`read_json` puts them back.

Exit codes, everywhere: 0 pass, 1 parity failure, 2 unusable input (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable

import numpy as np

from reference.errors import InputError

from .stages import STEP_OUTPUTS

RESULT_SCHEMA = "tts-parity-comparison/1"
MATRIX_SCHEMA = "tts-parity-matrix/1"
SEVERITIES = ("error", "failure", "warning", "info")
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2}
SIDECAR_SUFFIX = ".vectors.npz"


def verdict_of(findings: Iterable["Finding"]) -> str:
    sev = {f.severity for f in findings}
    return "error" if "error" in sev else ("fail" if "failure" in sev else "pass")


def fmt_value(v) -> str:
    """A number in a finding's message: 3 significant digits for a float, as written otherwise."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def aggregate_verdict(verdicts: Iterable[str]) -> str:
    """The verdict of several comparisons: the worst of them (error > fail > pass)."""
    vs = set(verdicts)
    return "error" if "error" in vs else ("fail" if "fail" in vs else "pass")


def exit_code_for(verdict: str) -> int:
    return EXIT_CODES.get(verdict, 2)


# ---------------------------------------------------------------------------------------------
# findings

@dataclass
class Finding:
    """One diagnosis. ``position`` is the stage's pipeline position (``[-1]`` for findings about no stage)."""

    code: str
    stage: str | None
    severity: str  # error | failure | warning | info
    message: str
    evidence: dict = field(default_factory=dict)
    position: list = field(default_factory=lambda: [-1])

    def __post_init__(self):
        if self.severity not in SEVERITY_ORDER:
            raise ValueError(f"finding {self.code!r}: severity {self.severity!r} is not one of {SEVERITIES}")

    @classmethod
    def at(cls, code: str, stage: str | None, severity: str, message: str, evidence: dict | None = None, *,
           first: bool = False) -> "Finding":
        """The one finding builder: ``position`` from the stage's pipeline position (``first``: sorts before every
        stage finding of its severity, as the schedule and option findings of a session do)."""
        from .stages import position

        return cls(code, stage, severity, message, evidence or {}, [-1] if first or not stage else list(position(stage)))

    def sort_key(self) -> tuple:
        """Severity class first, then the rank within the class (``evidence["rank"]``, default 0: a divergence
        whose difference vanishes downstream has rank 1, :mod:`parity.judge.diagnose`), pipeline position, metadata
        findings first at a position."""
        rank = self.evidence.get("rank", 0) if isinstance(self.evidence.get("rank", 0), int) else 0
        return (SEVERITY_ORDER[self.severity], rank, self.position if self.stage else [-1],
                0 if self.evidence.get("key") else 1)

    def headline_json(self) -> dict:
        return {"stage": self.stage, "code": self.code, "message": self.message}

    def to_json(self) -> dict:
        return {"code": self.code, "stage": self.stage, "severity": self.severity, "message": self.message,
                "evidence": self.evidence, "position": list(self.position)}

    @classmethod
    def from_json(cls, d: dict) -> "Finding":
        return cls(code=str(d["code"]), stage=d.get("stage"), severity=d["severity"], message=str(d.get("message", "")),
                   evidence=dict(d.get("evidence") or {}), position=list(d.get("position") or [-1]))


# ---------------------------------------------------------------------------------------------
# stages

# written only when set (a stage that was not compared has none of them)
_STAGE_OPTIONAL = ("problem", "first_values", "per_frame_error", "arbiter", "gate", "floor", "ratio")


@dataclass
class StageResult:
    """One stage: how it was judged and what was measured.

    ``status``: pass | fail | skip | info (no rule) | missing (absent from the candidate) | extra (absent
    from the reference). ``statistic``/``value``/``limit``/``detail`` say what decided it; ``gate`` names
    the gate that decided: ``"floor"`` (error / measured floor <= k; ``limit`` is then k x the floor) or
    ``"flat"`` (a policy rule). ``floor``: the stage's floor as judged (kind, digest, k, the deciding
    statistic's floor ``value`` and divisor ``unit``, every statistic's ratio), or ``{"reason": ...}`` why a
    flat rule decided; ``ratio``: error / floor of the deciding statistic ("12x floor").
    ``min_atol_to_pass``/``min_rtol_to_pass`` are written when a rule judged the stage.
    """

    name: str
    status: str
    statistic: str | None = None
    value: float | None = None
    limit: float | None = None
    detail: str = ""
    rule: dict | None = None
    metrics: dict | None = None
    ref_stats: dict | None = None
    cand_stats: dict | None = None
    normalisations: list = field(default_factory=list)
    position: list = field(default_factory=list)
    problem: dict | None = None
    first_values: dict | None = None
    per_frame_error: list | None = None
    arbiter: dict | None = None
    gate: str | None = None
    floor: dict | None = None
    ratio: float | None = None
    judged: bool = False  # a rule judged this stage (min_atol_to_pass/min_rtol_to_pass are meaningful)
    min_atol_to_pass: float | None = None
    min_rtol_to_pass: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        return self.status not in ("missing", "extra")

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "info", "skip")

    def metric(self, key: str):
        return (self.metrics or {}).get(key)

    def nonfinite(self, side: str = "cand") -> int:
        st = (self.cand_stats if side == "cand" else self.ref_stats) or {}
        return int(st.get("nan_count") or 0) + int(st.get("inf_count") or 0)

    def to_json(self, vectors: dict | None = None, prefix: str = "") -> dict:
        d: dict = {"name": self.name, "status": self.status, "statistic": self.statistic, "value": self.value,
                   "limit": self.limit, "detail": self.detail, "rule": self.rule, "metrics": self.metrics,
                   "ref_stats": self.ref_stats, "cand_stats": self.cand_stats,
                   "normalisations": self.normalisations}
        for k in _STAGE_OPTIONAL:
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.per_frame_error is not None and vectors is not None:
            vectors[f"{prefix}{self.name}/per_frame_error"] = _vector_array(self.per_frame_error)
            del d["per_frame_error"]
        if self.judged:
            d["min_atol_to_pass"] = self.min_atol_to_pass
            d["min_rtol_to_pass"] = self.min_rtol_to_pass
        d["position"] = list(self.position)
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict, vectors: dict | None = None, prefix: str = "") -> "StageResult":
        known = {f.name for f in fields(cls)} - {"judged", "extra"}
        kw = {k: d[k] for k in known if k in d}
        kw["name"] = str(d["name"])
        kw["status"] = str(d["status"])
        kw["detail"] = d.get("detail") or ""
        kw["normalisations"] = list(d.get("normalisations") or [])
        kw["position"] = list(d.get("position") or [])
        key = f"{prefix}{d['name']}/per_frame_error"
        if vectors is not None and key in vectors:
            kw["per_frame_error"] = _vector_list(vectors[key])
        judged = "min_atol_to_pass" in d or "min_rtol_to_pass" in d
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kw, judged=judged, extra=extra)


# ---------------------------------------------------------------------------------------------
# steps



@dataclass
class StepRow:
    """One ODE step: accumulated errors (candidate run vs reference run) and step-local ones (the candidate's
    step driven from the reference's own state), per output field; growth of the accumulated x error; the
    CFG gap mean |v1 - v2| on each side."""

    step: int
    chunk: int | None = None  # a streaming session: the call whose flow ran these steps (chunk{c}.step{k}.*)
    t: float | None = None
    growth: float | None = None
    cfg_gap_ref: float | None = None
    cfg_gap_cand: float | None = None
    acc: dict = field(default_factory=dict)  # field -> max |diff|
    acc_rmse: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)
    local_rmse: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)  # field -> stage status (None: not captured)

    def stage(self, field: str) -> str:
        """The stage name of ``field`` at this step (``step3.x``; ``chunk1.step3.x`` in a session)."""
        return (f"chunk{self.chunk}." if self.chunk is not None else "") + f"step{self.step}.{field}"

    @property
    def where(self) -> str:
        return f"step {self.step}" if self.chunk is None else f"chunk {self.chunk}, step {self.step}"

    def to_json(self) -> dict:
        d: dict = {"step": self.step}
        if self.chunk is not None:
            d["chunk"] = self.chunk
        for f in STEP_OUTPUTS:
            d[f"acc_{f}"] = self.acc.get(f)
            d[f"acc_{f}_rmse"] = self.acc_rmse.get(f)
            d[f"local_{f}"] = self.local.get(f)
            d[f"local_{f}_rmse"] = self.local_rmse.get(f)
            d[f"status_{f}"] = self.status.get(f)
        d.update(growth=self.growth, cfg_gap_ref=self.cfg_gap_ref, cfg_gap_cand=self.cfg_gap_cand, t=self.t)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "StepRow":
        chunk = d.get("chunk")
        return cls(step=int(d["step"]), chunk=int(chunk) if chunk is not None else None, t=d.get("t"),
                   growth=d.get("growth"), cfg_gap_ref=d.get("cfg_gap_ref"),
                   cfg_gap_cand=d.get("cfg_gap_cand"),
                   acc={f: d.get(f"acc_{f}") for f in STEP_OUTPUTS},
                   acc_rmse={f: d.get(f"acc_{f}_rmse") for f in STEP_OUTPUTS},
                   local={f: d.get(f"local_{f}") for f in STEP_OUTPUTS},
                   local_rmse={f: d.get(f"local_{f}_rmse") for f in STEP_OUTPUTS},
                   status={f: d.get(f"status_{f}") for f in STEP_OUTPUTS})


# ---------------------------------------------------------------------------------------------
# the comparison

@dataclass
class Comparison:
    """The whole result of comparing a candidate trace with a reference trace.

    ``audio`` is the audio-domain section (:func:`parity.measure.audio_metrics.audio_report`, JSON-safe) or None;
    ``metadata`` ``{"ref", "cand"}`` the two traces' provenance; ``sources`` where they came from;
    ``context`` what the policy was asked with (precision, attention, prompt frames); ``policy`` its
    sources; ``case`` what produced the pair (bundle, profile, mode, ...; set by the command layer);
    ``mask_check`` the streaming chunk-mask check handed to the comparison (:mod:`parity.capture.mask_check`);
    ``session`` the streaming-session section (:mod:`parity.judge.stream`: both schedules, the chunk pairs and
    their errors, chunk-boundary glitches, stream vs offline), None for a single call.
    """

    stages: list[StageResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    local: list[StageResult] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    audio: dict | None = None
    normalisations: list = field(default_factory=list)
    metadata: dict = field(default_factory=lambda: {"ref": {}, "cand": {}})
    sources: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    case: dict | None = None
    mask_check: dict | None = None  # the streaming chunk-mask check (parity.capture.mask_check), capture-side evidence
    session: dict | None = None  # streaming sessions: schedules, chunk pairs, glitches, stream vs offline
    schema: str = RESULT_SCHEMA
    extra: dict = field(default_factory=dict)
    floor: dict | None = None  # the floor judged against: source, kind, digest, key, k, members, contributions

    # -- derived -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The audio sample rate of the comparison (its context, else the reference trace's metadata, else the
        configuration's default): what the report turns sample indices into seconds with."""
        from .trace import sample_rate_of

        for v in (self.context.get("sample_rate"), (self.audio or {}).get("sr"), (self.session or {}).get("sample_rate")):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                return int(v)
        return sample_rate_of(self.metadata.get("ref") if isinstance(self.metadata, dict) else None)

    @property
    def gates(self) -> dict:
        """How many judged stages each gate decided (``{"floor": n, "flat": m}``)."""
        out: dict = {}
        for s in self.stages:
            if s.gate:
                out[s.gate] = out.get(s.gate, 0) + 1
        return out

    @property
    def verdict(self) -> str:
        return verdict_of(self.findings)

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.verdict)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def first_divergence(self) -> Finding | None:
        """The headline: the first error, else the first failure (findings are kept in severity order)."""
        for sev in ("error", "failure"):
            for f in self.findings:
                if f.severity == sev:
                    return f
        return None

    @property
    def summary(self) -> dict:
        out: dict = {}
        for s in self.stages:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def stage(self, name: str) -> StageResult | None:
        for s in self.stages:
            if s.name == name:
                return s
        return None

    def findings_at(self, stage: str) -> list[Finding]:
        return [f for f in self.findings if f.stage == stage]

    def headline_text(self) -> str:
        fd = self.first_divergence
        return f"{fd.stage} [{fd.code}]: {fd.message}" if fd else "no failing finding"

    # -- adding evidence after the diagnosis -------------------------------------------------------
    def add_finding(self, finding: Finding) -> Finding:
        """Add a finding found outside the diagnosis (e.g. a kernel the run was required to use did not run).

        It goes after the findings of its own severity class, so an existing headline stays the headline;
        the verdict follows from the findings as always."""
        rank = SEVERITY_ORDER[finding.severity]
        i = len(self.findings)
        while i > 0 and SEVERITY_ORDER[self.findings[i - 1].severity] > rank:
            i -= 1
        self.findings.insert(i, finding)
        return finding

    # -- JSON ----------------------------------------------------------------------------------------
    def to_json(self, vectors: dict | None = None, prefix: str = "") -> dict:
        """A JSON-safe dict (schema ``tts-parity-comparison/1``). With ``vectors`` (a dict), per-frame
        vectors are moved into it (keys start with ``prefix``) instead of being written inline."""
        from .measure.metrics import to_jsonable

        fd = self.first_divergence
        audio = self.audio
        if audio is not None and vectors is not None and isinstance(audio.get("per_frame"), dict):
            audio = dict(audio)
            for k, v in audio.pop("per_frame").items():
                vectors[f"{prefix}audio/per_frame/{k}"] = _vector_array(v)
        d = {
            "schema": self.schema,
            "verdict": self.verdict,
            "first_divergence": fd.headline_json() if fd else None,
            "findings": [f.to_json() for f in self.findings],
            "stages": [s.to_json(vectors, prefix + "stages/") for s in self.stages],
            "local": [s.to_json(vectors, prefix + "local/") for s in self.local],
            "steps": [r.to_json() for r in self.steps],
            "audio": audio,
            "normalisations": self.normalisations,
            "metadata": self.metadata,
            "sources": self.sources,
            "context": self.context,
            "policy": self.policy,
            "summary": self.summary,
        }
        if self.case is not None:
            d["case"] = self.case
        if self.mask_check is not None:
            d["mask_check"] = self.mask_check
        if self.session is not None:
            d["session"] = self.session
        if self.floor is not None:
            d["floor"] = self.floor
        d.update(self.extra)
        return to_jsonable(d)

    @classmethod
    def from_json(cls, d: dict, vectors: dict | None = None, prefix: str = "", *, what: str = "result") -> "Comparison":
        """Read a result written by :meth:`to_json` (any version of schema 1); ``vectors``: the sidecar's
        arrays. The stored verdict must be the one its findings give (a result is not edited by hand)."""
        if not isinstance(d, dict) or "stages" not in d or "verdict" not in d:
            raise InputError(f"{what}: not a comparison result (expected the JSON written by parity compare --json)")
        schema = d.get("schema", RESULT_SCHEMA)
        if schema != RESULT_SCHEMA:
            raise InputError(f"{what}: comparison schema {schema!r} is not supported (expected {RESULT_SCHEMA})")
        try:
            audio = d.get("audio")
            if isinstance(audio, dict) and vectors is not None:
                pre = f"{prefix}audio/per_frame/"
                pf = {k[len(pre):]: _vector_list(v) for k, v in vectors.items() if k.startswith(pre)}
                if pf:
                    audio = dict(audio, per_frame=pf)
            known = {"schema", "verdict", "first_divergence", "findings", "stages", "local", "steps", "audio",
                     "normalisations", "metadata", "sources", "context", "policy", "summary", "case", "vectors",
                     "mask_check", "session", "floor"}
            out = cls(stages=[StageResult.from_json(s, vectors, prefix + "stages/") for s in d.get("stages") or []],
                      findings=[Finding.from_json(f) for f in d.get("findings") or []],
                      local=[StageResult.from_json(s, vectors, prefix + "local/") for s in d.get("local") or []],
                      steps=[StepRow.from_json(r) for r in d.get("steps") or []],
                      audio=audio, normalisations=list(d.get("normalisations") or []),
                      metadata=dict(d.get("metadata") or {"ref": {}, "cand": {}}), sources=dict(d.get("sources") or {}),
                      context=dict(d.get("context") or {}), policy=dict(d.get("policy") or {}), case=d.get("case"),
                      mask_check=d.get("mask_check"), session=d.get("session"),
                      schema=schema, extra={k: v for k, v in d.items() if k not in known}, floor=d.get("floor"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{what}: malformed comparison result ({type(exc).__name__}: {exc})") from exc
        if out.verdict != d["verdict"]:
            raise InputError(f"{what}: the stored verdict {d['verdict']!r} is not the one its findings give "
                             f"({out.verdict!r})")
        return out


# ---------------------------------------------------------------------------------------------
# files: result JSON (+ sidecar of per-frame vectors), matrix JSON

def _vector_array(v) -> np.ndarray:
    """A per-frame vector as stored in the result (None stands for a non-finite value) -> float64 (NaN)."""
    if isinstance(v, np.ndarray):
        return v if v.dtype == np.bool_ else v.astype(np.float64)
    if v and all(isinstance(x, bool) for x in v):  # masks (voiced frames, active frames)
        return np.array(v, dtype=np.bool_)
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def _vector_list(a: np.ndarray) -> list:
    if a.dtype == np.bool_:
        return [bool(x) for x in a]
    return [float(x) if math.isfinite(x) else None for x in a.tolist()]


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    stem = path.name[:-5] if path.name.endswith(".json") else path.name
    return path.with_name(stem + SIDECAR_SUFFIX)


def _sidecar_allowed(path: Path, sidecar: bool) -> bool:
    """A sidecar goes beside a regular file only: a JSON written to a device, FIFO or descriptor
    (``--json /dev/stdout``) carries its vectors inline (no ``/dev/null.vectors.npz``)."""
    from .outputs import is_regular_output

    return sidecar and is_regular_output(path)


def _write_result(path: Path, d: dict, vectors: dict | None) -> Path:
    """The JSON (and, with ``vectors``, its ``.vectors.npz`` sidecar) through :func:`parity.outputs.output_file`:
    both are written to temporaries first and renamed only when both are complete, so a failed write leaves
    neither a half file nor a sidecar without its JSON."""
    from .outputs import output_file

    with contextlib.ExitStack() as stack:
        if vectors:
            side = sidecar_path(path)
            tmp = stack.enter_context(output_file(side, keep_suffix=True, what="its per-frame vectors"))
            np.savez_compressed(tmp, **vectors)
            d["vectors"] = {"sidecar": side.name, "count": len(vectors)}
        text = json.dumps(d, indent=1, allow_nan=False) + "\n"
        with output_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(result: Comparison, path: str | Path, *, sidecar: bool = False) -> Path:
    """Write one result. ``sidecar``: per-frame vectors go to ``<name>.vectors.npz`` beside it (inline when
    ``path`` is not a regular file)."""
    path = Path(path)
    vectors: dict | None = {} if _sidecar_allowed(path, sidecar) else None
    return _write_result(path, result.to_json(vectors), vectors)


def write_matrix_json(results: list[Comparison], path: str | Path, created: str, *, sidecar: bool = True) -> Path:
    """Several results in one file (schema ``tts-parity-matrix/1``); their vectors share one sidecar (inline
    when ``path`` is not a regular file)."""
    path = Path(path)
    vectors: dict | None = {} if _sidecar_allowed(path, sidecar) else None
    cases = [r.to_json(vectors, f"cases/{i}/") for i, r in enumerate(results)]
    d = {"schema": MATRIX_SCHEMA, "created": created, "verdict": aggregate_verdict(r.verdict for r in results),
         "cases": cases}
    return _write_result(path, d, vectors)


def _read_vectors(path: Path, d: dict) -> dict | None:
    v = d.get("vectors")
    if not isinstance(v, dict) or not v.get("sidecar"):
        return None
    side = path.parent / str(v["sidecar"])
    if not side.exists():
        raise InputError(f"{path}: its per-frame vectors file {side.name} is missing (keep it beside the JSON)")
    try:
        with np.load(side, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: not a readable vectors file ({exc})") from exc


def read_json(path: str | Path) -> Comparison:
    """Read one result written by :func:`write_json` (its sidecar too, when it has one)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: comparison result not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid JSON comparison result ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("cases"), list) and "stages" not in data:
        raise InputError(f"{path}: a matrix result ({len(data['cases'])} cases, schema {data.get('schema')}); "
                         f"pass a single comparison result (parity compare --json / parity run --json on one case)")
    return Comparison.from_json(data, _read_vectors(path, data) if isinstance(data, dict) else None, what=str(path))


def read_matrix_json(path: str | Path) -> list[Comparison]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable matrix result ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != MATRIX_SCHEMA:
        raise InputError(f"{path}: not a matrix result (schema {MATRIX_SCHEMA})")
    vec = _read_vectors(path, data)
    return [Comparison.from_json(c, vec, f"cases/{i}/", what=f"{path} case {i}") for i, c in enumerate(data["cases"])]


__all__ = ["Comparison", "StageResult", "Finding", "StepRow", "RESULT_SCHEMA", "MATRIX_SCHEMA", "EXIT_CODES",
           "verdict_of", "aggregate_verdict", "exit_code_for", "write_json", "read_json", "write_matrix_json",
           "read_matrix_json", "sidecar_path"]
