"""Where a comparison's floor comes from: the floor store a :class:`parity.harness.Harness` owns (like its
:class:`parity.harness.ReferenceCache`, it builds its own keys; callers never compose one), the shipped
floors of the fixture bundles, and the choice handed to :func:`parity.judge.compare.compare_loaded`.

A candidate is judged against the floor of the reference it is compared with: the fp32 noise floor for an
fp32 candidate, the emulated envelope of its precision (:func:`envelope_spec`) for a bf16/fp16/int8 one.
Lookup, by the key of :mod:`parity.floor.cache` (model weights and noise, bundle, mode, torch version, kind,
recipe):

1. floors given explicitly (``--floor FILE``) and floors already used in this session (memory);
2. the shipped floors beside the golden traces (``fixtures/golden/*.floor.json.gz``, written by
   ``pytest --parity-update-golden``), found by digest;
3. the on-disk cache (:class:`parity.floor.cache.FloorCache`);
4. computed now when the model is at hand and computing is allowed (:func:`transferred_floor` from a calibrating
   full floor, else :func:`estimate_floor` / :func:`estimate_envelope`), then stored in the cache;
5. none: the comparison falls back to the flat tolerances, and says why (:attr:`FloorChoice.reason`).

A floor covers every stage its runs record (a single call: the DiT blocks and the HiFT internals too; a streaming
session: every call's stages and the stream, with its options in the key). A missing fp32 floor is transferred
from a full floor of the same model and mode on another bundle when one exists (:mod:`parity.floor.transfer`),
and a foreign reduced-precision dump gets the envelope of the layout it shows (:mod:`parity.floor.layout`). Stages
outside a floor are judged by the flat rules, and the verdict says so per stage.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from reference.errors import InputError

from ..stages import is_block_stage
from .cache import FloorCache, family_digest, key_from_trace
from .estimate import EstimateLog, Recipe, estimate_envelope, estimate_floor, floor_key, recipe_dict
from .layout import envelope_spec, switches_of  # noqa: F401 - the store's callers ask it
from .types import Floor

SHIPPED_DIR = Path(__file__).resolve().parent.parent.parent / "fixtures" / "golden"
SHIPPED_SUFFIX = ".floor.json.gz"
_DIGEST_RE = re.compile(rb'"digest":\s*"([0-9a-f]{64})"')


# ---------------------------------------------------------------------------------------------
# the choice handed to the comparison

@dataclass
class FloorChoice:
    """The floor a comparison is judged against (``floor`` None: none, and ``reason`` says why), where it came
    from (``source``: file | embedded | shipped | cache | computed | memory | none), the file (``path``), what
    the lookup cost (``seconds``) and what it tried (``tried``)."""

    floor: Floor | None
    source: str
    reason: str = ""
    path: str | None = None
    seconds: float = 0.0
    tried: list = field(default_factory=list)
    verified: bool = True  # the floor's key was checked against the reference trace's own
    layout: dict | None = None  # a reduced-precision envelope: the layout it emulates and why (parity.floor.layout)

    @property
    def kind(self) -> str | None:
        return self.floor.kind if self.floor is not None else None

    def to_json(self) -> dict:
        """The result's ``floor`` section: what the report shows as the floor's provenance."""
        out = {"source": self.source, "reason": self.reason, "path": self.path, "seconds": round(self.seconds, 3),
               "tried": list(self.tried), "verified": self.verified}
        if self.layout is not None:
            out["layout"] = dict(self.layout)
        f = self.floor
        if f is None:
            return out
        fams: dict = {}
        for m in f.members:
            d = fams.setdefault(m["family"], {"fit": 0, "held_out": 0, "seeds": [], "members": []})
            d["held_out" if m["role"] == "held-out" else "fit"] += 1
            if m.get("seed") is not None:
                d["seeds"].append(m["seed"])
            d["members"].append(m["name"])
        basis = {k: v for k, v in f.k_basis.items() if k != "samples"}
        out.update({"kind": f.kind, "digest": f.digest, "key": f.key, "k": f.k, "k_basis": basis,
                    "recipe": f.recipe, "provenance": f.provenance, "families": fams,
                    "contributions": f.contributions(), "stages": len(f.stages)})
        return out


# ---------------------------------------------------------------------------------------------
# shipped floors

def shipped_name(bundle_stem: str, mode_label: str, profile: str | None = None) -> str:
    """``<bundle>-<mode>.floor.json.gz`` (fp32) or ``<bundle>-<mode>.<profile>.floor.json.gz`` (the envelope
    of that profile's precision)."""
    mid = f".{profile}" if profile else ""
    return f"{bundle_stem}-{mode_label}{mid}{SHIPPED_SUFFIX}"


class ShippedFloors:
    """The floors shipped beside the golden traces, by digest (read from each file's head, loaded on use)."""

    def __init__(self, directory: str | Path = SHIPPED_DIR):
        self.dir = Path(directory)
        self._index: dict[str, Path] | None = None
        self._cal: dict | None = None

    def index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for p in sorted(self.dir.glob(f"*{SHIPPED_SUFFIX}")):
                try:
                    with gzip.open(p, "rb") as fh:
                        head = fh.read(400)
                except (OSError, EOFError):
                    continue
                m = _DIGEST_RE.search(head)
                if m:
                    self._index[m.group(1).decode()] = p
        return self._index

    def calibrations(self, family: str) -> dict:
        """{digest: calibration} of the shipped full fp32 floors of one model, mode and recipe (any bundle)."""
        from .calibrate import calibration

        if self._cal is None:
            self._cal = {}
            for d, p in self.index().items():
                if p.name.count(".") != 3:  # <bundle>-<mode>.floor.json.gz: fp32; a profile's envelope has one more
                    continue
                f, _ = self.get(d)
                if f is None:
                    continue
                try:
                    self._cal.setdefault(family_digest(f.key), {})[d] = calibration(f)
                except ValueError:
                    continue
        return dict(self._cal.get(family, {}))

    def get(self, digest: str) -> tuple[Floor | None, Path | None]:
        p = self.index().get(digest)
        if p is None:
            return None, None
        try:
            f = Floor.load(p)
        except InputError:
            return None, p
        return (f, p) if f.digest == digest else (None, p)


def write_shipped(model, bundle: str | Path, *, streaming: bool, profiles=(), directory: str | Path = SHIPPED_DIR,
                  log=None, session=None, label: str | None = None) -> list[Path]:
    """Compute and write the shipped floors of one fixture bundle and mode: the fp32 floor and the envelope of
    each reduced-precision profile in ``profiles`` whose precision is emulated (one file per distinct
    emulation). ``session``: the SessionOptions of a streaming session (its fp32 floor only; ``label``: the
    mode's label, as the golden trace's). What ``pytest --parity-update-golden`` runs."""
    from reference.bundle import bundle_dims, load_bundle

    from ..project import profile_switches

    bundle = Path(bundle)
    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    label = label or ("streaming" if streaming else "offline")
    directory = Path(directory)
    out = []
    el = EstimateLog()
    f = estimate_floor(model, inputs, streaming=streaming, bundle_name=bundle.stem, log=el, session=session)
    out.append(f.save(directory / shipped_name(bundle.stem, label)))
    if log:
        log(f"floor {out[-1].name}: k {f.k:g}, {el.seconds:.1f} s")
    seen = set()
    for prof in profiles if session is None else ():
        spec, _ = envelope_spec(profile_switches(prof))
        if spec is None or spec in seen:
            continue
        seen.add(spec)
        el = EstimateLog()
        env = estimate_envelope(model, inputs, spec, streaming=streaming, bundle_name=bundle.stem, log=el)
        out.append(env.save(directory / shipped_name(bundle.stem, label, prof)))
        if log:
            log(f"envelope {out[-1].name}: k {env.k:g}, {el.seconds:.1f} s")
    return out


# ---------------------------------------------------------------------------------------------
# the store

class FloorStore:
    """Floors for a session: explicit files, memory, shipped, the disk cache, computed on demand.

    ``cache``: a :class:`FloorCache` (default: the default cache directory), or None for no disk cache;
    ``shipped``: the directory of shipped floors, or None; ``compute``: compute a missing floor when the model
    is at hand; ``recipe``: the estimation recipe (part of every key); ``method``: how a missing fp32 floor is
    computed: ``auto`` (transferred, :mod:`parity.floor.transfer`, when a full floor of the same model and mode
    on another bundle is shipped or cached; else the full ensemble), ``full`` or ``transfer`` (none without a
    calibrating floor)."""

    METHODS = ("auto", "full", "transfer")

    def __init__(self, cache: FloorCache | None | str = "default", shipped: str | Path | None = SHIPPED_DIR,
                 compute: bool = True, recipe: Recipe | None = None, log=None, method: str = "auto",
                 layout: str | None = None):
        if method not in self.METHODS:
            raise ValueError(f"floor method {method!r} is not one of {', '.join(self.METHODS)}")
        self.cache = FloorCache() if cache == "default" else cache
        self.shipped = ShippedFloors(shipped) if shipped is not None else None
        self.compute = compute
        self.method = method
        self.layout = layout  # --precision-layout: the emulated layout of a reduced-precision foreign dump
        self.recipe = recipe or Recipe()
        self.log = log
        self._mem: dict[str, tuple[Floor, str, str | None]] = {}  # digest -> (floor, source, path)
        self.files: list[Path] = []
        self.computed: list[str] = []  # digests computed in this store's life (tests, cost reports)

    def forget(self) -> None:
        """Drop what this store has read (the shipped floors were rewritten)."""
        self._mem = {d: v for d, v in self._mem.items() if v[1] == "file"}
        if self.shipped is not None:
            self.shipped._index = self.shipped._cal = None

    def add_file(self, path: str | Path) -> Floor:
        """A floor given explicitly (``--floor FILE``): preferred over every other source for its key."""
        f = Floor.load(path)
        self._mem[f.digest] = (f, "file", str(path))
        self.files.append(Path(path))
        return f

    # -- lookup -----------------------------------------------------------------------------------
    def _lookup(self, digest: str, tried: list) -> FloorChoice | None:
        t0 = time.perf_counter()
        hit = self._mem.get(digest)
        if hit is not None:
            return FloorChoice(hit[0], hit[1], "", hit[2], time.perf_counter() - t0, tried)
        tried.append("memory")
        if self.shipped is not None:
            f, p = self.shipped.get(digest)
            tried.append(f"shipped ({self.shipped.dir})" if f is None else "shipped")
            if f is not None:
                self._mem[digest] = (f, "shipped", str(p))
                return FloorChoice(f, "shipped", "", str(p), time.perf_counter() - t0, tried)
        if self.cache is not None:
            f = self.cache.get(digest)
            tried.append(f"cache ({self.cache.dir})" if f is None else "cache")
            if f is not None:
                p = str(self.cache.path(digest))
                self._mem[digest] = (f, "cache", p)
                return FloorChoice(f, "cache", "", p, time.perf_counter() - t0, tried)
        return None

    def calibrations(self, key: dict) -> list[dict]:
        """The calibrations of the full fp32 floors shipped or cached for the model, mode and recipe of ``key``, on
        other bundles than its own (oldest first by digest, so the choice is deterministic)."""
        fam = family_digest(key)
        found: dict = {}
        if self.shipped is not None:
            found.update(self.shipped.calibrations(fam))
        if self.cache is not None:
            found.update(self.cache.calibrations(fam))
        return [found[d] for d in sorted(found) if found[d].get("bundle_sha256") != key.get("bundle")]

    def _transfer(self, model, inputs, key, streaming, finalize, bundle_name, tried, t0, base) -> FloorChoice | None:
        """A transferred floor (from the cache, else computed), or None when nothing calibrates one."""
        from .transfer import transfer_recipe, transferred_floor

        from .transfer import covered

        cals = self.calibrations(key)
        if not cals:
            return None
        rdict = transfer_recipe(self.recipe, cals, patterns=covered(base, self.recipe) if base else None)
        _, tdigest = floor_key(model, inputs, streaming=streaming, finalize=finalize, recipe=self.recipe,
                               recipe_override=rdict)
        srcs = ", ".join(f"{c['bundle'] or '?'} ({c['digest'][:12]}, k {c['k']:g})" for c in cals)
        hit = self._lookup(tdigest, tried)
        if hit is not None:
            hit.reason = f"transferred from the full floor of {srcs}"
            return hit
        if self.log:
            self.log(f"transferring the fp32 noise floor to {bundle_name or 'the inputs'} "
                     f"({'streaming' if streaming else 'offline'}) from {srcs}")
        el = EstimateLog()
        try:
            f = transferred_floor(model, inputs, cals, streaming=streaming, finalize=finalize, base=base,
                                  recipe=self.recipe, bundle_name=bundle_name, log=el)
        except (RuntimeError, ValueError) as exc:
            return FloorChoice(None, "none", f"transferring the fp32 noise floor failed: {type(exc).__name__}: {exc}",
                               seconds=time.perf_counter() - t0, tried=tried + ["transfer"])
        p = None
        if self.cache is not None:
            p = str(self.cache.put(f))
        self.computed.append(f.digest)
        self._mem[f.digest] = (f, "computed", p)
        return FloorChoice(f, "computed", f"transferred from the full floor of {srcs} in {el.seconds:.1f} s "
                                          f"({len(f.members)} members; x{f.provenance['transfer']['factor']:g}, the "
                                          f"measured worst under-coverage)", p, time.perf_counter() - t0,
                           tried + ["transfer"])

    def _compute(self, model, inputs, kind, spec, streaming, finalize, bundle_name, tried, t0, key=None,
                 base=None, session=None) -> FloorChoice:
        if spec is None and key is not None and self.method != "full" and session is None:
            ch = self._transfer(model, inputs, key, streaming, finalize, bundle_name, tried, t0, base)
            if ch is not None:
                return ch
            if self.method == "transfer":
                return FloorChoice(None, "none", "no full fp32 floor of this model and mode on another bundle to "
                                                 "transfer from (shipped or cached)", seconds=time.perf_counter() - t0,
                                   tried=tried + ["transfer"])
        what = "fp32 noise floor" if spec is None else f"{kind} envelope"
        if self.log:
            mode = "a streaming session" if session is not None else ("streaming" if streaming else "offline")
            self.log(f"computing the {what} of {bundle_name or 'the inputs'} ({mode}; cached afterwards)")
        el = EstimateLog()
        try:
            if spec is None:
                f = estimate_floor(model, inputs, streaming=streaming, finalize=finalize, recipe=self.recipe,
                                   cache=self.cache, bundle_name=bundle_name, log=el, base=base, session=session)
            else:
                f = estimate_envelope(model, inputs, spec, streaming=streaming, finalize=finalize, recipe=self.recipe,
                                      cache=self.cache, bundle_name=bundle_name, log=el, base=base)
        except (RuntimeError, ValueError) as exc:
            return FloorChoice(None, "none", f"computing the {what} failed: {type(exc).__name__}: {exc}",
                               seconds=time.perf_counter() - t0, tried=tried + ["compute"])
        self.computed.append(f.digest)
        p = str(self.cache.path(f.digest)) if self.cache is not None else None
        self._mem[f.digest] = (f, "computed", p)
        return FloorChoice(f, "computed", f"computed now in {el.seconds:.1f} s", p, time.perf_counter() - t0,
                           tried + ["compute"])

    def for_run(self, model, inputs: dict, *, switches=None, streaming: bool = False, finalize: bool = True,
                session: str = "single", bundle_name: str | None = None, reference: dict | None = None,
                options=None) -> FloorChoice:
        """The floor for a candidate with ``switches`` run on ``inputs`` by ``model`` (the reference) in one mode.
        ``reference``: the reference run's stages, reused as the floor's plain run if one must be computed.
        ``session`` ``"streaming"``: the floor of upstream's chunked loop with ``options`` (SessionOptions; None:
        upstream's defaults), over every call's stages and the stream."""
        t0 = time.perf_counter()
        sopts = None
        if session != "single":
            if session != "streaming":
                return FloorChoice(None, "none", f"no floors for the '{session}' session kind: its stages are judged "
                                                 f"by the flat tolerances")
            from reference.session import SessionOptions

            sopts = options if options is not None else SessionOptions()
        kind, spec = "fp32", None
        if switches is not None and switches.precision != "fp32":
            if sopts is not None:
                return FloorChoice(None, "none", f"no {switches.precision} envelope for a streaming session (the "
                                                 f"reduced-precision envelopes are single-call)")
            spec, why = envelope_spec(switches)
            if spec is None:
                return FloorChoice(None, "none", f"no {switches.precision} envelope: {why}")
            kind = spec.fmt
        try:
            key, digest = floor_key(model, inputs, kind=kind, spec=spec, streaming=streaming, finalize=finalize,
                                    recipe=self.recipe, session=sopts)
        except InputError as exc:
            return FloorChoice(None, "none", f"the floor's key cannot be built: {exc}")
        tried: list = []
        hit = self._lookup(digest, tried)
        if hit is not None:
            return for_capture(hit, reference)
        if not self.compute:
            return FloorChoice(None, "none", "no shipped or cached floor for this model, bundle and mode, and computing "
                                             "is off", seconds=time.perf_counter() - t0, tried=tried)
        return for_capture(self._compute(model, inputs, kind, spec, streaming, finalize, bundle_name, tried, t0, key,
                                         self._base(reference, sopts), sopts), reference)

    def for_trace(self, ref_meta: dict, ref_tensors: dict, *, cand_meta: dict | None = None,
                  precision: str = "fp32", load_model: bool = True, cand_tensors: dict | None = None) -> FloorChoice:
        """The floor of a reference trace, from its own provenance: the key from its metadata and recorded
        inputs; the shipped floors, the cache, else computed with the model its metadata names (a preset, or a
        model directory that exists here with the same weights). A reduced-precision candidate gets the envelope
        of its layout (:func:`parity.floor.layout.choose_layout`: ``--precision-layout``, its switches, its dtypes
        metadata or the dtypes its stages are stored in), named in the choice's ``layout``."""
        t0 = time.perf_counter()
        sess = ref_meta.get("session") if isinstance(ref_meta, dict) else None
        if sess not in (None, "single", "streaming"):
            return FloorChoice(None, "none", f"no floors for the '{sess}' session kind: its stages are judged by "
                                             f"the flat tolerances")
        kind, spec, lay = "fp32", None, None
        if precision != "fp32" and sess == "streaming":
            return FloorChoice(None, "none", f"no {precision} envelope for a streaming session (the reduced-precision "
                                             f"envelopes are single-call)")
        if precision != "fp32":
            from .layout import choose_layout

            lay = choose_layout(precision, cand_meta or {}, cand_tensors, self.layout)
            if lay.spec is None:
                return FloorChoice(None, "none", f"no {precision} envelope: {lay.why}", layout=lay.to_json())
            spec, kind = lay.spec, lay.spec.fmt
        ch = for_capture(self._for_trace(ref_meta, ref_tensors, kind, spec, load_model, t0), ref_tensors)
        if lay is not None:
            ch.layout = lay.to_json()
            if "solver" in lay.parts and ch.floor is not None:
                ch.floor = _without_solver_stages(ch.floor, lay)
        return ch

    def _for_trace(self, ref_meta: dict, ref_tensors: dict, kind: str, spec, load_model: bool, t0: float
                   ) -> FloorChoice:
        try:
            key, digest = key_from_trace(ref_meta, ref_tensors, kind=kind, recipe=recipe_dict(self.recipe, spec))
        except InputError as exc:
            return FloorChoice(None, "none", f"the reference trace does not identify its floor: {exc}")
        tried: list = []
        emb = embedded_floor(ref_meta)
        if emb is not None and emb.digest == digest:
            self._mem.setdefault(digest, (emb, "embedded", None))
        hit = self._lookup(digest, tried)
        if hit is not None:
            return hit
        if not (self.compute and load_model):
            return FloorChoice(None, "none", "no shipped, cached or embedded floor for this reference trace, and "
                                             "computing is off", seconds=time.perf_counter() - t0, tried=tried)
        from ..capture.trace_model import model_from_provenance

        model, why = model_from_provenance(ref_meta, rebuild_noise=True)
        if model is None:
            return FloorChoice(None, "none", f"no shipped, cached or embedded floor for this reference trace, and it "
                                             f"cannot be computed here: {why}", seconds=time.perf_counter() - t0,
                               tried=tried)
        from reference.bundle import bundle_dims, validate_bundle

        try:
            inputs = validate_bundle({n: ref_tensors[n] for n in ("token", "prompt_token", "prompt_feat",
                                                                  "embedding")},
                                     source="reference trace", **bundle_dims(model.cfg))
        except (KeyError, InputError) as exc:
            return FloorChoice(None, "none", f"the reference trace's inputs cannot be rerun: {exc}", tried=tried)
        streaming, finalize = bool(ref_meta.get("streaming", False)), bool(ref_meta.get("finalize", True))
        try:
            sopts = session_options_of(ref_meta)
        except (TypeError, ValueError, InputError) as exc:
            return FloorChoice(None, "none", f"the session trace's options cannot be rerun: {exc}", tried=tried)
        _, mine = floor_key(model, inputs, kind=kind, spec=spec, streaming=streaming, finalize=finalize,
                            recipe=self.recipe, session=sopts)
        if mine != digest:
            return FloorChoice(None, "none", f"the model {ref_meta.get('model')} here is not the one that produced the "
                                             f"reference trace (weights, noise, schedule or torch version differ)",
                               seconds=time.perf_counter() - t0, tried=tried)
        return self._compute(model, inputs, kind, spec, streaming, finalize, str(ref_meta.get("inputs") or "") or None,
                             tried, t0, key, self._base(ref_tensors, sopts), sopts)

    def _base(self, tensors: dict | None, session=None) -> dict | None:
        """The stages of a reference run that a floor's plain run records (those the recipe's patterns want), or
        None when it lacks one of the default capture's: what a floor computation reuses instead of running the
        reference again. A reference without the blocks or the HiFT internals still serves a transferred floor
        (which then covers the stages it has); the full ensemble runs its own plain run then."""
        if not tensors:
            return None
        from ..capture.recorder import Recorder
        from ..stages import DEFAULT_PATTERNS
        from .recipe import recipe_patterns

        want = Recorder(recipe_patterns(self.recipe, session))
        base = {n: t for n, t in tensors.items() if want.wants(n)}
        if session is not None:
            return base if base and "stream.audio" in base else None
        return base if base and all(n in base for n in DEFAULT_PATTERNS if "*" not in n) else None

    def check_file_for_trace(self, floor: Floor, ref_meta: dict, ref_tensors: dict) -> FloorChoice:
        """An explicit floor for a comparison: used when its key is the reference trace's own (or when the trace
        cannot say), refused (InputError) when the key names another model, bundle or mode."""
        try:
            key, digest = key_from_trace(ref_meta, ref_tensors, kind=floor.kind, recipe=floor.recipe)
        except InputError as exc:
            return FloorChoice(floor, "file", f"key not verified: {exc}", verified=False)
        if digest != floor.digest:
            diff = sorted(k for k in set(key) | set(floor.key) if key.get(k) != floor.key.get(k))
            raise InputError(f"the floor {floor.digest[:12]} was measured for another reference: its key differs in "
                             f"{', '.join(diff) or 'its digest'} (the reference trace's floor is {digest[:12]})")
        return FloorChoice(floor, "file", "")


SOLVER_STAGES = ("x0", "step*.t", "step*.dt")  # what the solver computes itself: exact in every emulation


def _without_solver_stages(floor: Floor, lay) -> Floor:
    """The envelope without the solver's own stages (the noise x0, the time grid): a dump whose solver runs in the
    reduced precision stores them rounded, which no emulation models (it keeps the solver fp32); they are judged by
    the flat rules of the precision (rounding allowed there) and the Euler state by the envelope."""
    import dataclasses
    import fnmatch

    keep = {n: sf for n, sf in floor.stages.items() if not any(fnmatch.fnmatchcase(n, p) for p in SOLVER_STAGES)}
    return dataclasses.replace(floor, stages=keep)


def for_capture(ch: FloorChoice, tensors: dict | None) -> FloorChoice:
    """The choice with the k of the stages a comparison judges: a reference captured without the DiT blocks and the
    HiFT internals is judged with the floor's ``core`` k (chosen from the held-out samples over the other stages; the
    blocks' heavier-tailed envelopes raise the all-stage k by 10-25 % on the tiny fixture bundles)."""
    import dataclasses

    f = ch.floor
    core = (f.k_basis or {}).get("core") if f is not None else None
    if not core or not tensors or any(is_block_stage(n) for n in tensors):
        return ch
    k = min(float(core["k"]), f.k)  # the all-stage k covers these stages too; the Gumbel fit of a subset can read higher
    ch.floor = dataclasses.replace(f, k=k, k_basis=dict(f.k_basis, applied="core"))
    return ch


def session_options_of(meta: dict):
    """The SessionOptions a streaming-session trace ran with (its resolved ``session_options``), None for a single
    call."""
    if not isinstance(meta, dict) or meta.get("session") in (None, "single"):
        return None
    import dataclasses

    from reference.session import SessionOptions

    o = meta.get("session_options")
    if not isinstance(o, dict):
        raise InputError("the session trace lacks its session_options metadata")
    names = {f.name for f in dataclasses.fields(SessionOptions)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in o.items() if k in names}
    return SessionOptions(**kw)


def store_from_args(args, log=None) -> FloorStore | None:
    """The floor store of a command's ``--floor FILE`` / ``--no-floor`` (None: the flat tolerances only)."""
    if getattr(args, "no_floor", False):
        return None
    store = FloorStore(log=log, layout=getattr(args, "precision_layout", None))
    for f in getattr(args, "floor", None) or []:
        store.add_file(f)
    return store


# ---------------------------------------------------------------------------------------------
# a floor embedded in a trace

EMBED_KEY = "floor"


def embedded_floor(meta: dict) -> Floor | None:
    """The floor ``parity dump --embed-floor`` put in a reference trace's metadata, or None."""
    v = meta.get(EMBED_KEY) if isinstance(meta, dict) else None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if not isinstance(v, dict):
        return None
    try:
        return Floor.from_dict(v, "embedded floor")
    except InputError:
        return None
