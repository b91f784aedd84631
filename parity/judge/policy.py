"""Tolerance policy: which statistic and which limit apply to a stage, for a candidate's precision and
attention kernel. Metrics (parity.measure.metrics) are separate; this module only decides.

A policy is a TOML file of rules (the default is ``fixtures/tolerances.toml``; ``[tool.parity.tolerances]``
in pyproject.toml and ``--policy FILE`` add rules on top)::

    [[rule]]
    stage = "step*.v1"          # glob over canonical stage names
    precision = ["fp16"]        # optional: fp32, bf16, fp16, int8 (the candidate's precision class)
    attention = ["sdpa*"]       # optional: globs over the candidate's attention switch
    statistic = "elementwise"   # elementwise | max_abs | mean_abs | rmse | rel_l2 | nmse | quantile |
                                # cosine | snr_db | ulp | exact
    atol = 1e-4                 # elementwise: |c - r| <= atol + rtol * |r| for all but max_frac elements
    rtol = 1e-3
    max_frac = 0.0
    limit = 1e-3                # the bound for the other statistics (a minimum for cosine and snr_db)
    quantile = 0.99             # for statistic = "quantile"
    arbiter = { k = 4.0, floor = 1e-6 }   # fp64 arbiter, when a float64 reference trace is available
    required = true             # a missing candidate stage fails instead of being reported
    skip = true                 # do not judge this stage (non-finite values still fail)
    with_floor = "replace"      # when a measured floor exists for the stage: "replace" (default: the floor
                                # decides, this rule is the fallback), "both" (this rule is kept next to the
                                # floor, both must pass; give the measured reason in 'reason'), "rule" (this
                                # rule decides; the floor ratio is only reported)
    reason = "..."              # why the rule is kept next to a floor (required with with_floor = "both")

A stage pattern starting with ``local:`` applies to the step-local (teacher-forced) comparison of that
stage: the candidate's step driven from the reference's own state, its vocoder fed the reference mel.
Without a ``local:`` rule the stage's own rule is used.

Floors first: a stage with a measured noise floor (fp32 candidates) or precision envelope (bf16/fp16/int8)
is judged by error / floor <= k (:func:`judgement_from_floor`, gate ``"floor"``); the rules here are the
fallback for stages without one (gate ``"flat"``) and, with ``with_floor``, kept next to it.

Choosing a rule: among the rules whose stage, precision and attention match, the most specific wins
(more qualifiers first, then the stage pattern with more literal characters); a tie goes to the rule
read last, so user rules override the defaults.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reference.errors import InputError

STATISTICS = ("elementwise", "max_abs", "mean_abs", "rmse", "rel_l2", "nmse", "quantile", "cosine", "snr_db", "ulp",
              "exact",
              # domain statistics, computed for the stages they make sense for
              "f0_rmse_cents", "f0_max_cents", "gpe", "vde",  # f0
              "logmel_l1", "logmel_l1_max", "mcd")  # audio, audio_preclamp (through the pipeline's mel recipe)
HIGHER_IS_BETTER = {"cosine", "snr_db"}
WITH_FLOOR = ("replace", "both", "rule")  # what a rule does where a measured floor exists (see the module docstring)
PRECISION_CLASSES = ("fp32", "bf16", "fp16", "int8")  # a candidate's precision class (rules' ``precision``)
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "fixtures" / "tolerances.toml"
_METRIC_KEY = {"max_abs": "max_abs_err", "mean_abs": "mean_abs_err", "rmse": "rmse", "rel_l2": "rel_l2",
               "nmse": "nmse", "cosine": "cosine", "snr_db": "snr_db", "ulp": "max_ulp",
               "f0_rmse_cents": "f0_rmse_cents", "f0_max_cents": "f0_max_abs_cents", "gpe": "gpe", "vde": "vde",
               "logmel_l1": "logmel_l1", "logmel_l1_max": "logmel_l1_max", "mcd": "mcd_db"}


@dataclass
class Rule:
    stage: str
    statistic: str = "elementwise"
    precision: list[str] | None = None
    attention: list[str] | None = None
    atol: float = 0.0
    rtol: float = 0.0
    max_frac: float = 0.0
    limit: float | None = None
    quantile: float | None = None
    arbiter: dict | None = None
    required: bool = False
    skip: bool = False
    with_floor: str = "replace"
    reason: str | None = None
    source: str = "builtin"
    index: int = 0

    def matches(self, stage: str, precision: str, attention: str) -> bool:
        if stage.startswith("local:") != self.stage.startswith("local:"):
            return False  # "local:<stage>" rules judge the teacher-forced (step-local) comparisons only
        if not fnmatch.fnmatchcase(stage, self.stage):
            return False
        if self.precision and precision not in self.precision:
            return False
        if self.attention and not any(fnmatch.fnmatchcase(attention, a) for a in self.attention):
            return False
        return True

    def specificity(self) -> tuple:
        literal = sum(1 for ch in self.stage if ch not in "*?[]")
        return (int(bool(self.precision)) + int(bool(self.attention)), literal, self.index)

    def describe(self) -> str:
        if self.skip:
            return "skipped"
        if self.statistic == "elementwise":
            return f"|c-r| <= {self.atol:g} + {self.rtol:g}*|r|" + (f" (all but {self.max_frac:g})" if self.max_frac else "")
        if self.statistic == "exact":
            return "bit-identical"
        op = ">=" if self.statistic in HIGHER_IS_BETTER else "<="
        q = f" q{self.quantile:g}" if self.statistic == "quantile" else ""
        return f"{self.statistic}{q} {op} {self.limit:g}"

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("stage", "statistic", "precision", "attention", "atol", "rtol", "max_frac",
                                           "limit", "quantile", "arbiter", "required", "skip", "with_floor", "reason",
                                           "source")}
        if d["with_floor"] == "replace":
            del d["with_floor"]
        return {k: v for k, v in d.items() if v not in (None, False) or k in ("stage", "statistic")}


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def rule_for(self, stage: str, precision: str = "fp32", attention: str = "explicit") -> Rule | None:
        """The most specific matching rule. A streaming-session stage no rule names (``chunk2.mel``,
        ``chunk0.step3.v1``, ``stream.audio``) gets the rule of the single-call stage it corresponds to
        (:func:`parity.stages.session_rule_stage`: ``flow_mel``, ``step3.v1``, ``audio``)."""
        hits = [r for r in self.rules if r.matches(stage, precision, attention)]
        if hits:
            return max(hits, key=Rule.specificity)
        from ..stages import session_rule_stage

        base = stage[6:] if stage.startswith("local:") else stage
        inner = session_rule_stage(base)
        if inner is not None and inner != base:  # a single-call stage ("audio") maps to itself: no rule, no loop
            return self.rule_for(("local:" if stage.startswith("local:") else "") + inner, precision, attention)
        return None

    def extend(self, rules: list[dict], source: str) -> "Policy":
        start = len(self.rules)
        for i, d in enumerate(rules):
            self.rules.append(_rule_from_dict(d, f"{source} rule {i + 1}", start + i))
        self.sources.append(source)
        return self


def _rule_from_dict(d: dict, source: str, index: int) -> Rule:
    known = {"stage", "statistic", "precision", "attention", "atol", "rtol", "max_frac", "limit", "quantile", "arbiter",
             "required", "skip", "with_floor", "reason"}
    bad = set(d) - known
    if bad:
        raise InputError(f"{source}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(known))})")
    if "stage" not in d:
        raise InputError(f"{source}: a rule needs a 'stage' pattern")
    stat = d.get("statistic", "elementwise")
    if stat not in STATISTICS:
        raise InputError(f"{source}: statistic {stat!r} is not one of {', '.join(STATISTICS)}")
    if stat not in ("elementwise", "exact") and not d.get("skip") and d.get("limit") is None:
        raise InputError(f"{source}: statistic {stat!r} needs a 'limit'")
    if stat == "quantile" and not (0 < float(d.get("quantile", 0)) <= 1):
        raise InputError(f"{source}: statistic 'quantile' needs 'quantile' in (0, 1]")
    listify = lambda v: [v] if isinstance(v, str) else (list(v) if v else None)  # noqa: E731
    arb = d.get("arbiter")
    if arb is not None and (not isinstance(arb, dict) or "k" not in arb):
        raise InputError(f"{source}: arbiter must be a table with 'k' (and optionally 'floor')")
    wf = d.get("with_floor", "replace")
    if wf not in WITH_FLOOR:
        raise InputError(f"{source}: with_floor {wf!r} is not one of {', '.join(WITH_FLOOR)}")
    if wf == "both" and not d.get("reason"):
        raise InputError(f"{source}: with_floor = \"both\" keeps a flat limit next to a measured floor: give the "
                         f"measured reason in 'reason'")
    return Rule(stage=d["stage"], statistic=stat, precision=listify(d.get("precision")),
                attention=listify(d.get("attention")), atol=float(d.get("atol", 0.0)), rtol=float(d.get("rtol", 0.0)),
                max_frac=float(d.get("max_frac", 0.0)), limit=None if d.get("limit") is None else float(d["limit"]),
                quantile=None if d.get("quantile") is None else float(d["quantile"]), arbiter=arb,
                required=bool(d.get("required", False)), skip=bool(d.get("skip", False)), with_floor=wf,
                reason=None if d.get("reason") is None else str(d["reason"]), source=source, index=index)


def read_policy_file(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: policy file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise InputError(f"{path}: expected [[rule]] tables")
    return rules


def load_policy(path: str | Path | None = None, pyproject=None, use_default: bool = True) -> Policy:
    """Default rules, then ``[tool.parity.tolerances]`` of the pyproject, then ``path`` (default: the
    pyproject's ``[tool.parity] policy``). ``pyproject``: a path (default ./pyproject.toml) or an already read
    :class:`parity.project.ProjectConfig`."""
    from ..project import ProjectConfig, read_project

    pol = Policy()
    if use_default:
        pol.extend(read_policy_file(DEFAULT_POLICY), str(DEFAULT_POLICY.name))
    proj = pyproject if isinstance(pyproject, ProjectConfig) else read_project(pyproject)
    if proj.tolerances:
        pol.extend(proj.tolerances, f"{proj.path.name} [tool.parity.tolerances]")
    if path is None and proj.policy is not None:
        path = proj.policy
    if path is not None:
        pol.extend(read_policy_file(path), str(path))
    return pol


# ---------------------------------------------------------------------------------------------
# judging one stage

@dataclass
class Judgement:
    status: str  # pass | fail | skip
    statistic: str
    value: float | None
    limit: float | None
    detail: str = ""
    arbiter: dict | None = None
    gate: str = "flat"  # which gate decided: "flat" (a policy rule: its limit, or its fp64 arbiter) or "floor"
    floor: dict | None = None  # gate "floor": the floor, k and the statistics' ratios (see judgement_from_floor)
    ratio: float | None = None  # error / floor of the deciding statistic (gate "floor"; reported under "rule")


def judge(rule: Rule, m: dict, arbiter: dict | None = None) -> Judgement:
    """Apply ``rule`` to the pair metrics ``m`` (from parity.measure.metrics.pair_metrics, computed with the rule's
    atol/rtol). A non-finite mismatch always fails, even on a skipped stage: NaN never compares equal."""
    if not m.get("finite_ok", True):
        nf = m.get("nonfinite", {})
        cn, rn = nf.get("cand") or {}, nf.get("ref") or {}
        return Judgement("fail", rule.statistic, None, None,
                         f"non-finite values: candidate NaN {cn.get('nan', 0)} Inf {cn.get('posinf', 0) + cn.get('neginf', 0)}, "
                         f"reference NaN {rn.get('nan', 0)} Inf {rn.get('posinf', 0) + rn.get('neginf', 0)}")
    if rule.skip:
        return Judgement("skip", rule.statistic, None, None, "skipped by policy (finite on both sides)")
    stat = rule.statistic
    if arbiter is not None and rule.arbiter:
        k, floor = float(rule.arbiter["k"]), float(rule.arbiter.get("floor", 0.0))
        lim = k * arbiter["ref_err"] + floor
        ok = arbiter["cand_err"] <= lim
        return Judgement("pass" if ok else "fail", f"arbiter:{arbiter.get('statistic', 'rmse')}", arbiter["cand_err"], lim,
                         f"err(candidate, fp64) {arbiter['cand_err']:.3g} vs {k:g} x err(fp32 reference, fp64) "
                         f"{arbiter['ref_err']:.3g} + {floor:g}", arbiter)
    if stat == "exact":
        ok = bool(m.get("exact_match"))
        return Judgement("pass" if ok else "fail", stat, m.get("max_abs_err"), 0.0)
    if stat == "elementwise":
        v = m.get("frac_outside")
        ok = v is not None and v <= rule.max_frac
        return Judgement("pass" if ok else "fail", stat, v, rule.max_frac, rule.describe())
    from ..measure.metrics import metric_value

    v = m.get("quantile_abs_err") if stat == "quantile" else metric_value(m, _METRIC_KEY[stat])
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Judgement("fail", stat, None, rule.limit, f"statistic {stat} is undefined for this pair")
    ok = v >= rule.limit if stat in HIGHER_IS_BETTER else v <= rule.limit
    return Judgement("pass" if ok else "fail", stat, float(v), rule.limit, rule.describe())


# ---------------------------------------------------------------------------------------------
# judging one stage against a measured floor

FLOOR_WORDS = {"fp32": "the fp32 noise floor", "bf16": "its bf16 rounding-only error",
               "fp16": "its fp16 rounding-only error", "int8": "its int8 rounding-only error"}


def judgement_from_floor(sv, kind: str, k: float, digest: str, stage_floor=None) -> Judgement:
    """The floor gate's decision (:func:`parity.floor.judge.judge_stage`'s ``StageVerdict``) as a Judgement:
    ``value`` the candidate's error in the deciding statistic, ``limit`` = k x its floor (so value <= limit
    exactly when ratio <= k), ``ratio`` = error / floor. For a reduced precision the floor is the emulated
    envelope: the detail reads "N x its rounding-only error"."""
    what = FLOOR_WORDS.get(kind, f"the {kind} floor")
    fl = {"kind": kind, "digest": digest, "k": k, "statistic": sv.statistic, "value": sv.floor, "unit": sv.unit,
          "block": sv.block, "ratios": {s: (None if r is None or not math.isfinite(r) else r)
                                        for s, r in sv.ratios.items()},
          "zero_floor": list(sv.zero_floor)}
    if stage_floor is not None:
        fl.update({"max_abs": stage_floor.max_abs, "rel_l2": stage_floor.rel_l2, "gated": list(stage_floor.gate)})
    if sv.status == "nonfinite":
        return Judgement("fail", "finite", None, None, "non-finite values (NaN never passes, whatever the floor)",
                         gate="floor", floor=fl, ratio=None)
    if sv.ratio is None:  # no gated statistic: reported, not judged
        return Judgement("skip", sv.statistic or "-", None, None,
                         f"reported, not gated: {what} is 0.1 or more in relative L2 here (phase drift, not "
                         f"arithmetic); judged through F0 and the audio's log-mel", gate="floor", floor=fl)
    unit = sv.unit if sv.unit is not None else sv.floor
    limit = k * unit if unit is not None else None
    where = f" at block {sv.block}" if sv.statistic == "envelope" and sv.block is not None else ""
    from ..floor.judge import is_time_grid

    if sv.statistic in sv.zero_floor and is_time_grid(sv.stage):
        zero = " (the time grid: in units of one fp32 ulp at the grid's end, 2^-23)"
    elif sv.statistic in sv.zero_floor:
        zero = " (floor exactly 0: in units of one fp32 ulp of the stage's scale)"
    else:
        zero = ""
    detail = (f"{sv.ratio:.3g}x {what}: {sv.statistic} {sv.value:.3g}{where} vs floor {unit:.3g}{zero}; "
              f"gate {k:g}x")
    return Judgement("pass" if sv.status == "pass" else "fail", sv.statistic, sv.value, limit, detail, gate="floor",
                     floor=fl, ratio=float(sv.ratio))
