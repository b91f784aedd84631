"""Checking a port's outputs against a kit: per vector, pass or N x its module-level floor, with findings.

The port ran each module on the kit's inputs and saved its outputs named ``<vector id>/<output name>``
(:func:`load_port_outputs` reads one safetensors/npz file, or a directory of them and of ``.npy`` files).
Each output is judged by the manifest alone (no model, no floor object): its shape, whether every element is
finite, and ``max_abs`` / ``rel_l2`` against ``limit = k x floor`` (the manifest's ``tolerance_rule``).

Findings use the harness's vocabulary (:class:`parity.result.Finding`; the verdict and exit code come from them
as for a comparison): ``module_mismatch`` (N x floor), ``nonfinite_origin`` (NaN/Inf from the kit's finite
inputs: that module is where they start), ``shape_mismatch`` with a layout hint when a transposition of the
port's output has the manifest's shape (and what it would measure then), ``dtype_differs`` (the port stored
another dtype than the manifest's), ``vector_missing`` / ``output_missing`` (information, a failure with
``require_all``), ``unknown_output`` (names that are not in the manifest, with the closest ones),
``nothing_to_compare`` (no name matches: an error).
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from reference.errors import InputError

from ..floor.stats import pair_stats
from ..measure.metrics import side_stats
from ..result import EXIT_CODES, Finding, verdict_of
from . import manifest as M

CHECK_SCHEMA = "tts-parity-kit-check/1"
REDUCED = ("float16", "bfloat16")


# ---------------------------------------------------------------------------------------------
# reading a port's outputs

def _read_file(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: _from_numpy(path, k, z[k]) for k in z.files}
        if suffix == ".npy":
            return {"": _from_numpy(path, path.stem, np.load(path, allow_pickle=False))}
    except InputError:
        raise
    except Exception as exc:  # any reader failure is the file's problem, named with it
        raise InputError(f"{path}: not a readable {suffix[1:]} file of port outputs ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    raise InputError(f"{path}: port outputs must be .safetensors, .npz or .npy files")


def _from_numpy(path: Path, key: str, a: np.ndarray) -> torch.Tensor:
    if a.dtype.kind not in "fiub":
        raise InputError(f"{path}: tensor '{key}' has dtype {a.dtype}, not a number type")
    return torch.from_numpy(np.ascontiguousarray(a))


def load_port_outputs(path: str | Path, ids: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``({"<vector id>/<output>": tensor}, {key: file it came from})`` from one file (keys must be full names) or
    a directory: ``<id>.safetensors`` / ``<id>.npz`` (keys are output names, or full names), ``<id>/<output>.npy``,
    any other .safetensors/.npz with full names ('/' in a vector id is '__' or a subdirectory in file names)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: port outputs not found")
    idset = set(ids)
    out: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def add(key: str, t: torch.Tensor, f: Path):
        if key in out:
            raise InputError(f"{f}: output '{key}' is also in {src[key]} (one port output per name)")
        out[key] = t
        src[key] = str(f)

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and p.suffix.lower() in (".safetensors", ".npz", ".npy"))
    if path.is_dir() and not files:
        raise InputError(f"{path}: no .safetensors, .npz or .npy files in the port outputs directory")
    for f in files:
        tens = _read_file(f)
        rel = f.relative_to(path).with_suffix("").as_posix().replace("__", "/") if path.is_dir() else ""
        if f.suffix.lower() == ".npy":
            if not rel:
                raise InputError(f"{f}: a single .npy file has no vector name; give its directory, with the file at "
                                 f"<vector id>/<output>.npy")
            add(rel, tens[""], f)
            continue
        for k, t in tens.items():
            add(k if ("/" in k or rel not in idset) else f"{rel}/{k}", t, f)
    return out, src


# ---------------------------------------------------------------------------------------------
# the result

@dataclass
class OutputCheck:
    key: str
    status: str  # pass | fail | nonfinite | shape | missing
    ratio: float | None = None  # the largest gated value / (limit / k): "N x floor"
    statistic: str | None = None
    value: float | None = None
    limit: float | None = None
    values: dict = field(default_factory=dict)  # max_abs, rel_l2
    dtype: str | None = None  # the port's
    expected_dtype: str | None = None
    shape: list | None = None
    expected_shape: list | None = None
    layout_hint: dict | None = None
    nonfinite: dict | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "nonfinite", "shape")


@dataclass
class VectorCheck:
    id: str
    module: str | None
    component: str
    k: float
    status: str  # pass | fail | missing (no output given) | partial (some outputs given, all of those pass)
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        rs = [o.ratio for o in self.outputs if o.ratio is not None]
        return max(rs) if rs else None

    @property
    def worst(self) -> OutputCheck | None:
        judged = [o for o in self.outputs if o.status != "missing"]
        bad = [o for o in judged if o.failed]
        pool = bad or judged
        return max(pool, key=lambda o: -1.0 if o.ratio is None else o.ratio) if pool else None

    def verdict_text(self) -> str:
        """'pass (0.3x floor)', 'FAIL 1.2e+03x floor', 'FAIL non-finite', 'FAIL shape', 'missing'."""
        w = self.worst
        if self.status == "missing" or w is None:
            return "missing"
        if w.status == "nonfinite":
            return "FAIL non-finite"
        if w.status == "shape":
            return "FAIL shape" + (" (transposed?)" if w.layout_hint else "")
        r = f"{w.ratio:.3g}x floor" if w.ratio is not None else ""
        return ("pass" if not w.failed else "FAIL") + (f" ({r})" if not w.failed else f" {r}")


@dataclass
class KitCheck:
    kit: str
    port: str
    manifest: dict  # model, bundle, mode of the kit (not its vectors)
    vectors: list[VectorCheck]
    findings: list[Finding]
    unknown: list[str] = field(default_factory=list)
    schema: str = CHECK_SCHEMA

    @property
    def verdict(self) -> str:
        return verdict_of(self.findings)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, 2)

    @property
    def headline(self) -> Finding | None:
        for sev in ("error", "failure"):
            for f in self.findings:
                if f.severity == sev:
                    return f
        return None

    def counts(self) -> dict:
        out: dict = {}
        for v in self.vectors:
            out[v.status] = out.get(v.status, 0) + 1
        return out

    def vector(self, vid: str) -> VectorCheck:
        return next(v for v in self.vectors if v.id == vid)

    def failing(self) -> list[str]:
        return [v.id for v in self.vectors if v.status == "fail"]

    def to_json(self) -> dict:
        from ..measure.metrics import to_jsonable

        hl = self.headline
        return to_jsonable({
            "schema": self.schema, "verdict": self.verdict, "kit": self.kit, "port": self.port,
            "headline": hl.headline_json() if hl else None, "counts": self.counts(),
            "manifest": self.manifest, "findings": [f.to_json() for f in self.findings],
            "vectors": [{"id": v.id, "module": v.module, "component": v.component, "k": v.k, "status": v.status,
                         "ratio": _finite(v.ratio), "verdict": v.verdict_text(),
                         "outputs": [{k: (_finite(x) if isinstance(x, float) else x) for k, x in asdict(o).items()}
                                     for o in v.outputs]} for v in self.vectors],
            "unknown_outputs": self.unknown})


def _finite(v):
    return v if v is None or math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# judging

def _dt(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _values(ref: torch.Tensor, cand: torch.Tensor) -> dict:
    st = pair_stats("kit", ref, cand, 1)
    return {"max_abs": st.max_abs, "rel_l2": st.rel_l2, "finite": st.finite}


def _ratio(tol: dict, vals: dict) -> tuple[float, str, float, float]:
    """(ratio, statistic, value, limit) of the worst gated statistic."""
    k = float(tol["k"])
    best = None
    for s in tol["gate"]:
        lim = float(tol["limit"][s])
        r = vals[s] / (lim / k) if lim > 0 else (0.0 if vals[s] == 0 else math.inf)
        if best is None or r > best[0]:
            best = (r, s, vals[s], lim)
    return best


def _layout_hint(ref: torch.Tensor, cand: torch.Tensor, tol: dict, entry: dict) -> dict | None:
    """When a permutation of ``cand``'s axes (singleton axes ignored) has the reference's shape: which one, and
    what the output measures transposed. A square core is ambiguous: every permutation is tried and the best
    reported."""
    rc = [s for s in ref.shape if s != 1]
    cc = [s for s in cand.shape if s != 1]
    if len(rc) != len(cc) or sorted(rc) != sorted(cc) or len(cc) < 2 or list(rc) == list(cc):
        return None
    core = cand.reshape(cc)
    best = None
    for perm in itertools.permutations(range(len(cc))):
        if [cc[p] for p in perm] != rc or list(perm) == list(range(len(cc))):
            continue
        moved = core.permute(*perm).reshape(ref.shape)
        vals = _values(ref, moved)
        if not vals["finite"]:
            continue
        r, stat, _, _ = _ratio(tol, vals)
        if best is None or r < best["ratio"]:
            best = {"permutation": list(perm), "ratio": r, "statistic": stat, "passes": r <= float(tol["k"])}
    if best is not None:
        axes = [a for a, s in zip(entry.get("axes") or [], ref.shape) if s != 1]
        if len(axes) == len(perm):
            best["port_axes"] = [axes[best["permutation"].index(i)] for i in range(len(axes))]
            best["manifest_axes"] = axes
    return best


def _judge_output(key: str, ref: torch.Tensor, cand: torch.Tensor | None, entry: dict) -> OutputCheck:
    tol = entry["tolerance"]
    oc = OutputCheck(key, "missing", expected_dtype=entry["dtype"], expected_shape=list(entry["shape"]))
    if cand is None:
        return oc
    oc.dtype, oc.shape = _dt(cand), list(cand.shape)
    if tuple(cand.shape) != tuple(ref.shape):
        oc.status = "shape"
        oc.layout_hint = _layout_hint(ref, cand, tol, entry)
        oc.detail = f"shape {list(cand.shape)}, the manifest's {list(ref.shape)} ({entry.get('layout')})"
        return oc
    s = side_stats(cand)
    if s["nan_count"] or s["inf_count"]:
        oc.status = "nonfinite"
        oc.ratio = math.inf
        oc.nonfinite = {"nan": s["nan_count"], "inf": s["inf_count"], "numel": s["numel"],
                        "first_index": list(s["first_nonfinite_index"])}
        oc.detail = (f"NaN {s['nan_count']}, Inf {s['inf_count']} of {s['numel']} (first at index "
                     f"{list(s['first_nonfinite_index'])})")
        return oc
    vals = _values(ref, cand)
    oc.values = {"max_abs": vals["max_abs"], "rel_l2": vals["rel_l2"]}
    oc.ratio, oc.statistic, oc.value, oc.limit = _ratio(tol, vals)
    oc.status = "pass" if oc.ratio <= float(tol["k"]) else "fail"
    oc.detail = (f"{oc.statistic} {oc.value:.3g} = {oc.ratio:.3g} x floor (limit {oc.limit:.3g} = k {tol['k']:g} x "
                 f"{'floor' if oc.statistic not in tol.get('zero_floor', []) else 'one fp32 ulp of the scale'})")
    return oc


def _f(code: str, stage: str | None, severity: str, message: str, evidence: dict | None, pos: int) -> Finding:
    return Finding(code, stage, severity, message, evidence or {}, [pos])


def check_kit(kit: str | Path, port: str | Path, *, require_all: bool = False,
              only: list[str] | None = None) -> KitCheck:
    """Judge the port's outputs at ``port`` against the kit at ``kit`` (``only``: these vector ids)."""
    man = M.read_manifest(kit)
    entries = man["vectors"]
    if only:
        known = {v["id"] for v in entries}
        bad = [o for o in only if o not in known]
        if bad:
            raise InputError(f"{kit}: no vector {', '.join(bad)} in the kit")
        entries = [v for v in entries if v["id"] in set(only)]
    ids = [v["id"] for v in man["vectors"]]
    got, _src = load_port_outputs(port, ids)
    names = M.output_keys(man)
    vectors: list[VectorCheck] = []
    findings: list[Finding] = []
    for pos, v in enumerate(entries):
        vc = VectorCheck(v["id"], v.get("module"), v.get("component", ""), float(v.get("k", 0.0)), "missing")
        keys = [f"{v['id']}/{o['name']}" for o in v["outputs"]]
        if any(k in got for k in keys):
            _, ref_out = M.load_vector(kit, v)
            for o in v["outputs"]:
                key = f"{v['id']}/{o['name']}"
                vc.outputs.append(_judge_output(key, ref_out[o["name"]], got.get(key), o))
            judged = [o for o in vc.outputs if o.status != "missing"]
            vc.status = ("fail" if any(o.failed for o in judged)
                         else "partial" if len(judged) < len(vc.outputs) else "pass")
        else:
            vc.outputs = [OutputCheck(k, "missing", expected_dtype=o["dtype"], expected_shape=list(o["shape"]))
                          for k, o in zip(keys, v["outputs"])]
        vectors.append(vc)
        findings += _vector_findings(vc, v, pos)
    findings = _with_parts(findings, vectors, entries)
    unknown = sorted(k for k in got if k not in names)
    findings += _presence_findings(vectors, unknown, list(names), require_all, len(entries))
    summary = {k: man.get(k) for k in ("model", "bundle", "mode", "producer", "tolerance_rule", "statistics")}
    return KitCheck(str(kit), str(port), summary, vectors, sorted(findings, key=Finding.sort_key), unknown)


def _vector_findings(vc: VectorCheck, v: dict, pos: int) -> list[Finding]:
    out = []
    where = f"{vc.id}" + (f" (module {vc.module})" if vc.module and vc.module != vc.id else "")
    for o in vc.outputs:
        if o.status == "nonfinite":
            out.append(_f("nonfinite_origin", vc.id, "failure",
                          f"non-finite values appear at {where}, output {o.key.rsplit('/', 1)[1]}: {o.detail}; the kit's "
                          f"inputs are finite, so this module is where they start", {"output": o.key, **o.nonfinite},
                          pos))
        elif o.status == "shape":
            h = o.layout_hint
            msg = f"{o.key}: {o.detail}"
            if h:
                pa, ma = h.get("port_axes"), h.get("manifest_axes")
                axes = f" (the port's axes look like [{', '.join(pa)}], the manifest's are [{', '.join(ma)}])" \
                    if pa and ma else ""
                msg += (f"; layout hint: transposed (permutation {h['permutation']} of the non-singleton axes) it "
                        f"{'would pass' if h['passes'] else 'would still fail'} at {h['ratio']:.3g} x floor{axes}")
            out.append(_f("shape_mismatch", vc.id, "failure", msg,
                          {"output": o.key, "shape": o.shape, "expected": o.expected_shape, "layout_hint": h}, pos))
        if o.dtype and o.expected_dtype and o.dtype != o.expected_dtype:
            sev = "warning" if o.dtype in REDUCED or o.failed else "info"
            out.append(_f("dtype_differs", vc.id, sev,
                          f"{o.key}: the port stored {o.dtype}, the manifest's tolerance is for {o.expected_dtype} "
                          f"(compared after casting to float64)"
                          + ("; a reduced-precision output is judged against the fp32 floor" if o.dtype in REDUCED
                             else ""), {"output": o.key, "dtype": o.dtype, "expected": o.expected_dtype}, pos))
    bad = [o for o in vc.outputs if o.status == "fail"]
    if bad:
        w = max(bad, key=lambda o: o.ratio)
        others = [f"{o.key.rsplit('/', 1)[1]} {o.ratio:.3g}x" for o in bad if o is not w]
        out.append(_f("module_mismatch", vc.id, "failure",
                      f"{where} differs from the reference on the kit's own inputs: {w.key.rsplit('/', 1)[1]} "
                      f"{w.detail}" + (f"; also {', '.join(others)}" if others else ""),
                      {"output": w.key, "ratio": w.ratio, "statistic": w.statistic, "value": w.value,
                       "limit": w.limit, "k": vc.k, "values": w.values, "description": v.get("description")}, pos))
    return out


def parts_of(entries: list[dict]) -> dict[str, list[str]]:
    """Vector id -> the vectors inside it: those listed before it whose weights are a subset of its weights (a DiT
    block and its attention, the estimator and every block, the step and the estimator, a vocoder stage and its
    resblocks); the manifest lists parts before the whole."""
    ids = [v["id"] for v in entries]
    w = {v["id"]: set(v.get("weights") or []) for v in entries}
    return {a: [b for b in ids[:i] if w[b] and w[b] <= w[a]] for i, a in enumerate(ids)}


def _with_parts(findings: list[Finding], vectors: list[VectorCheck], entries: list[dict]) -> list[Finding]:
    """A failing vector says which of its parts fail too (start there), or that they all pass (then the difference
    is in its own code between them)."""
    parts = parts_of(entries)
    status = {v.id: v.status for v in vectors}
    out = []
    for f in findings:
        if f.code == "module_mismatch" and parts.get(f.stage):
            ps = parts[f.stage]
            bad = [p for p in ps if status.get(p) == "fail"]
            judged = [p for p in ps if status.get(p) in ("pass", "fail", "partial")]
            if bad:
                f.message += f"; its parts that fail too: {', '.join(bad[:4])}" + (" ..." if len(bad) > 4 else "")
            elif judged and len(judged) == len(ps):
                f.message += (f"; all {len(ps)} of its parts pass: the difference is in its own code between them "
                              f"(the glue)")
            f.evidence["failing_parts"] = bad
            f.evidence["parts"] = ps
        out.append(f)
    return out


def _presence_findings(vectors, unknown, names, require_all: bool, n: int) -> list[Finding]:
    out = []
    judged = [v for v in vectors if v.status != "missing"]
    if not judged:
        close = {u: difflib.get_close_matches(u, names, 1) for u in unknown[:5]}
        out.append(_f("nothing_to_compare", None, "error",
                      "the port outputs hold no name of the manifest (outputs are named '<vector id>/<output>', e.g. "
                      f"'{names[0]}')" + (f"; found {', '.join(unknown[:5])}" if unknown else "")
                      + ("; closest: " + ", ".join(f"{u} -> {c[0]}" for u, c in close.items() if c) if close else ""),
                      {"unknown": unknown[:50]}, -1))
        return out
    missing = [v.id for v in vectors if v.status == "missing"]
    if missing:
        out.append(_f("vector_missing", missing[0], "failure" if require_all else "info",
                      f"{len(missing)} of {n} vectors have no port output"
                      + (" (--require-all)" if require_all else " (not judged)") + ": " + ", ".join(missing[:8])
                      + (" ..." if len(missing) > 8 else ""), {"vectors": missing}, -1))
    partial = [o.key for v in vectors if v.status in ("partial", "fail") for o in v.outputs if o.status == "missing"]
    if partial:
        out.append(_f("output_missing", partial[0].rsplit("/", 1)[0], "failure" if require_all else "info",
                      f"{len(partial)} outputs of judged vectors are absent: " + ", ".join(partial[:8]),
                      {"outputs": partial}, -1))
    if unknown:
        close = {u: (difflib.get_close_matches(u, names, 1) or [None])[0] for u in unknown}
        out.append(_f("unknown_output", None, "warning",
                      f"{len(unknown)} port outputs match no vector of the manifest (misnamed?): "
                      + ", ".join(f"{u}" + (f" (closest: {close[u]})" if close[u] else "") for u in unknown[:6])
                      + (" ..." if len(unknown) > 6 else ""), {"unknown": unknown, "closest": close}, -1))
    return out
