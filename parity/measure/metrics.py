"""Tensor metrics: pure functions that measure, never decide.

This module is the *metric layer* of the harness (compare Polygraphy's comparator and
``torch.testing._comparison``): it turns one tensor, or a reference/candidate pair, into a dict of
numbers. It holds no thresholds and no pass/fail policy; the policy layer reads these dicts.

Accepted inputs
    ``numpy.ndarray`` or ``torch.Tensor`` (any device; it is copied to the CPU) or anything
    ``numpy.asarray`` accepts. ``torch.bfloat16`` (which numpy cannot hold) is widened to float32
    exactly. The *original* dtype name is reported (``"float32"``, ``"bfloat16"``, ``"int32"``...);
    pass ``dtype_name`` / ``cand_dtype`` when a loader already widened the tensor (an F16 dump read
    as float32) so the report and the ULP unit still reflect what was stored.

Non-finite values (the "NaN-blind statistics" lesson, field notes section 3)
    * NaN and +/-Inf are *counted*, never dropped silently: every result carries the counts and the
      first non-finite index of each side.
    * In :func:`pair_metrics` a non-finite value never compares equal, not even NaN vs NaN at the same
      position or +Inf vs +Inf. If either side holds any non-finite value, ``finite_ok`` is False.
    * Closeness statistics (``max_abs_err``, ``rmse``, ``cosine``...) are computed over the elements
      that are finite in *both* tensors (``n_compared`` of them); the excluded count is
      ``n_excluded_nonfinite``. They describe the finite part only.
    * Tolerance-facing quantities count every excluded element as a failure: ``n_outside`` /
      ``frac_outside`` include them, ``allclose`` is False, and ``min_atol_to_pass`` /
      ``min_rtol_to_pass`` are ``None`` with ``special[...] == "+inf"`` (no finite tolerance passes).
      A consumer that gates on ``allclose``, ``frac_outside``, ``min_*_to_pass`` or ``finite_ok``
      cannot pass a NaN. **Gate on those, never on ``max_abs_err`` alone.**

JSON-safety convention (all dicts returned by :func:`side_stats` and :func:`pair_metrics`)
    * Only plain Python ``bool``/``int``/``float``/``str``/``None``/``list``/``dict``/``tuple`` values
      (``json.dumps`` works with the default ``allow_nan=False``); tuples become JSON lists.
    * No float is ever NaN or +/-Inf. A metric whose exact value is infinite or undefined is ``None``
      and the dict's ``special`` mapping names it: ``special[key]`` is ``"+inf"``, ``"-inf"`` or
      ``"undefined"`` (0/0, e.g. the cosine of an all-zero vector against a non-zero one).
      A ``None`` without a ``special`` entry means "not applicable / nothing to compute over"
      (for example an empty tensor, or no finite-in-both elements).
    * Examples: identical tensors give ``snr_db = None`` with ``special["snr_db"] == "+inf"``
      (and ``exact_match = True``); an all-zero reference with a non-zero candidate gives
      ``rel_l2 = nmse = None`` with ``special == "+inf"`` and ``snr_db = None`` with ``"-inf"``.
    * :func:`metric_value` turns such an entry back into ``float('inf')`` etc. for arithmetic, and
      :func:`to_jsonable` converts numpy containers (e.g. per-frame vectors) with the same rule.

Performance
    :func:`pair_metrics` does a fixed number (about 25) of vectorised numpy passes over float64 upcasts,
    no Python loop over elements; a tensor with non-finite values takes one extra compaction pass, and
    ``quantiles=False`` skips the one partial sort. Dot products use ``einsum`` rather than BLAS, so
    results do not depend on the BLAS thread count.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np

__all__ = [
    "ShapeMismatch",
    "side_stats",
    "pair_metrics",
    "quantile_abs_err",
    "per_frame_error",
    "first_k_values",
    "metric_value",
    "to_jsonable",
    "ulp_distance",
    "POS_INF",
    "NEG_INF",
    "UNDEFINED",
]

POS_INF = "+inf"
NEG_INF = "-inf"
UNDEFINED = "undefined"


class ShapeMismatch(ValueError):
    """Reference and candidate shapes differ. The metric layer never broadcasts, flattens or truncates:
    normalising layouts (squeezing, transposing, trimming a prompt) is the caller's job, and is logged there.

    Attributes:
        ref_shape, cand_shape: the two shapes as tuples of ints.
    """

    def __init__(self, ref_shape: Sequence[int], cand_shape: Sequence[int], what: str = ""):
        self.ref_shape = tuple(int(s) for s in ref_shape)
        self.cand_shape = tuple(int(s) for s in cand_shape)
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}shape mismatch: reference {list(self.ref_shape)} vs candidate "
                         f"{list(self.cand_shape)} (normalise the layout first; the metrics never "
                         f"broadcast or truncate)")


# ----------------------------------------------------------------------------------------------
# conversions


def _torch_tensor_type():
    torch = sys.modules.get("torch")  # no torch import here: numpy-only callers stay light
    return getattr(torch, "Tensor", None) if torch is not None else None


def _as_array(t: Any, dtype_name: str | None = None) -> tuple[np.ndarray, str]:
    """Return ``(numpy array on the CPU, original dtype name)``; bfloat16 (and other dtypes numpy cannot
    hold) is widened to float32, which is exact for bfloat16."""
    tt = _torch_tensor_type()
    if tt is not None and isinstance(t, tt):
        name = str(t.dtype).replace("torch.", "")
        x = t.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.is_complex():
            raise TypeError(f"complex tensors are not supported (dtype {name})")
        x = x.resolve_conj().resolve_neg()
        if x.dtype.is_floating_point and name not in ("float16", "float32", "float64"):
            x = x.float()  # bfloat16, float8 variants
        arr = x.numpy()
    else:
        arr = np.asarray(t)
        name = arr.dtype.name
        if arr.dtype.kind not in "fiub":
            if arr.dtype.kind == "c":
                raise TypeError(f"complex arrays are not supported (dtype {name})")
            try:  # e.g. ml_dtypes.bfloat16 ('V' kind)
                arr = arr.astype(np.float32)
            except (TypeError, ValueError) as e:
                raise TypeError(f"unsupported dtype {name}") from e
    return arr, (dtype_name if dtype_name is not None else name)


_ULP_DTYPES = {
    "float16": "float16", "half": "float16", "fp16": "float16", "f16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "float": "float32", "fp32": "float32", "f32": "float32",
    "float64": "float64", "double": "float64", "fp64": "float64", "f64": "float64",
}


def _ulp_dtype(name: str | None) -> str | None:
    if name is None:
        return None
    return _ULP_DTYPES.get(name.lower().replace("torch.", ""))


_TINY = {"float16": float(np.finfo(np.float16).tiny), "bfloat16": float(np.finfo(np.float32).tiny),
         "float32": float(np.finfo(np.float32).tiny), "float64": float(np.finfo(np.float64).tiny)}


def _num(value: Any, key: str, special: dict) -> float | None:
    """JSON-safe float: non-finite -> None, recorded in ``special`` (see module docstring)."""
    if value is None:
        return None
    f = float(value)
    if math.isfinite(f):
        return f
    special[key] = POS_INF if f > 0 else NEG_INF if f < 0 else UNDEFINED
    return None


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(flat), shape)) if shape else ()


def _layout(shape: tuple[int, ...], channel_axis: int | None, time_axis: int | None):
    """Resolve (channel_axis, time_axis, inferred). Inference (both None): [1, C, T] -> (1, 2);
    [1, T] -> (None, 1); [T] -> (None, 0); anything else -> (None, None)."""
    nd = len(shape)
    if channel_axis is None and time_axis is None:
        if nd == 3 and shape[0] == 1:
            return 1, 2, True
        if nd == 2 and shape[0] == 1:
            return None, 1, True
        if nd == 1:
            return None, 0, True
        return None, None, True

    def norm(ax, what):
        if ax is None:
            return None
        ax = int(ax)
        if not -nd <= ax < nd:
            raise ValueError(f"{what}={ax} is out of range for a {nd}-d tensor of shape {list(shape)}")
        return ax % nd

    return norm(channel_axis, "channel_axis"), norm(time_axis, "time_axis"), False


def _location(flat: int | None, shape: tuple[int, ...], lay) -> dict | None:
    if flat is None:
        return None
    idx = _unravel(flat, shape)
    ch_ax, t_ax, _ = lay
    return {"flat": int(flat), "index": list(idx),
            "channel": idx[ch_ax] if ch_ax is not None else None,
            "frame": idx[t_ax] if t_ax is not None else None}


# ----------------------------------------------------------------------------------------------
# one side


def _nonfinite_summary(a: np.ndarray) -> dict:
    """Counts of NaN / +Inf / -Inf and the first non-finite position of a float array (C order)."""
    fin = np.isfinite(a)
    if fin.all():
        return {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None, "first_flat": None}
    nan = int(np.count_nonzero(np.isnan(a)))
    pos = int(np.count_nonzero(np.isposinf(a)))
    neg = int(np.count_nonzero(np.isneginf(a)))
    first = int(np.argmin(fin.reshape(-1)))
    return {"nan": nan, "posinf": pos, "neginf": neg, "total": nan + pos + neg,
            "first_index": _unravel(first, a.shape), "first_flat": first}


def side_stats(t: Any, dtype_name: str | None = None) -> dict:
    """Summary statistics of one tensor, NaN-aware and JSON-safe.

    Args:
        t: numpy array or torch tensor (any dtype numpy or torch supports, except complex).
        dtype_name: override for the reported dtype (the original dtype when a loader widened it).

    Returns a dict with:
        ``shape`` (list of ints), ``dtype`` (original dtype name), ``numel``,
        ``finite_count`` (elements that are finite; all of them for integer/bool tensors),
        ``nan_count``, ``posinf_count``, ``neginf_count``, ``inf_count`` (= pos + neg),
        ``first_nonfinite_index`` (multi-index tuple in C order, or None),
        ``first_nonfinite_flat`` (flat C-order index, or None),
        ``min``, ``max``, ``mean``, ``mean_abs``, ``std`` (population std, ddof=0): computed in float64
        over the finite elements only; ``None`` when there is no finite element (all non-finite, or
        empty), in which case the counts show why. Integer tensors give int ``min``/``max``.
        ``special``: see the module docstring (only a float64 input near the overflow limit can put a
        non-finite value here, e.g. a std that overflows).
    """
    a, name = _as_array(t, dtype_name)
    special: dict = {}
    out: dict = {"shape": [int(s) for s in a.shape], "dtype": name, "numel": int(a.size)}
    if a.dtype.kind in "iub":
        nf = {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None, "first_flat": None}
        v = a.reshape(-1)
        if a.dtype.kind == "b":
            v = v.astype(np.int64)
        n_fin = int(a.size)
    else:
        nf = _nonfinite_summary(a)
        v = a.reshape(-1) if nf["total"] == 0 else a[np.isfinite(a)]
        n_fin = int(v.size)
    out.update({"finite_count": n_fin, "nan_count": nf["nan"], "posinf_count": nf["posinf"],
                "neginf_count": nf["neginf"], "inf_count": nf["posinf"] + nf["neginf"],
                "first_nonfinite_index": nf["first_index"], "first_nonfinite_flat": nf["first_flat"]})
    if n_fin == 0:
        out.update({"min": None, "max": None, "mean": None, "mean_abs": None, "std": None})
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if a.dtype.kind in "iub":
                out["min"], out["max"] = int(v.min()), int(v.max())
            else:
                out["min"] = _num(v.min(), "min", special)
                out["max"] = _num(v.max(), "max", special)
            out["mean"] = _num(np.mean(v, dtype=np.float64), "mean", special)
            out["mean_abs"] = _num(np.mean(np.abs(v), dtype=np.float64), "mean_abs", special)
            out["std"] = _num(np.std(v, dtype=np.float64), "std", special)
    out["special"] = special
    return out


# ----------------------------------------------------------------------------------------------
# ULP


def _ordered_bits(x64: np.ndarray, dtype: str) -> np.ndarray:
    """Map float64 values to int64 keys ordered like the values *after rounding to* ``dtype``.

    Rounding is round-to-nearest-even (numpy casts; bfloat16 via float32 then the standard
    ``bits + 0x7FFF + lsb`` trick, so a float64 input is rounded twice). Sign-magnitude bits become a
    monotone integer line: key = +magnitude for sign 0, -magnitude for sign 1, so +0 and -0 share key 0
    and adjacent representable values differ by 1 (the largest finite value and Inf are adjacent too).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "float64":
            b = x64.view(np.int64).copy()
            w = 64
        elif dtype == "float32":
            b = x64.astype(np.float32).view(np.int32).astype(np.int64)
            w = 32
        elif dtype == "float16":
            b = x64.astype(np.float16).view(np.int16).astype(np.int64)
            w = 16
        elif dtype == "bfloat16":
            b32 = x64.astype(np.float32).view(np.uint32)
            lsb = b32 >> np.uint32(16)
            lsb &= np.uint32(1)
            b32 += np.uint32(0x7FFF)
            b32 += lsb
            b32 >>= np.uint32(16)
            b = b32.astype(np.uint16).view(np.int16).astype(np.int64)
            w = 16
        else:
            raise ValueError(f"no ULP definition for dtype {dtype!r}")
    # b is the sign-extended two's-complement view: negative iff the sign bit is set.
    # key = b for b >= 0; key = -(magnitude) otherwise, computed as (b ^ mask) - s with s = b >> 63 in {0, -1}:
    # for a negative b = -2^(w-1) + mag, b ^ (2^(w-1) - 1) = -1 - mag, and subtracting s = -1 gives -mag.
    s = b >> np.int64(63)
    mask = s & np.int64((1 << (w - 1)) - 1)
    b ^= mask
    b -= s
    return b


def _ulp_dist_from_keys(kr: np.ndarray, kc: np.ndarray) -> np.ndarray:
    """|kc - kr| as uint64 without int64 overflow (keys lie in [-(2^63-1), 2^63-1]; only 64-bit keys can
    overflow, and only when the signs differ)."""
    with np.errstate(over="ignore"):
        d = np.subtract(kc, kr)
        np.abs(d, out=d)
        d = d.view(np.uint64)  # exact whenever the true distance is < 2^63
    cross = np.flatnonzero((kr < 0) != (kc < 0))
    if cross.size:
        d[cross] = np.abs(kr[cross]).view(np.uint64) + np.abs(kc[cross]).view(np.uint64)
    return d


def ulp_distance(ref: Any, cand: Any, dtype: str = "float32") -> np.ndarray:
    """Element-wise ULP distance between ``ref`` and ``cand`` *in* ``dtype`` (uint64 array, input shape).

    Definition: round both to ``dtype`` (float16, bfloat16, float32 or float64; round-to-nearest-even),
    then count the representable ``dtype`` values one must step through to go from one to the other:
    0 for equal values (including +0 vs -0), 1 for ``nextafter`` neighbours, and a finite value to Inf
    counts Inf as the step after the largest finite value. Only defined for finite inputs (a value that
    overflows the rounding becomes Inf and is measured as above); raises ValueError on NaN/Inf input.
    """
    ra, _ = _as_array(ref)
    ca, _ = _as_array(cand)
    if ra.shape != ca.shape:
        raise ShapeMismatch(ra.shape, ca.shape, "ulp_distance")
    dt = _ulp_dtype(dtype)
    if dt is None:
        raise ValueError(f"no ULP definition for dtype {dtype!r}")
    r = np.asarray(ra, dtype=np.float64)
    c = np.asarray(ca, dtype=np.float64)
    if not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise ValueError("ulp_distance is defined for finite values only")
    return _ulp_dist_from_keys(_ordered_bits(r.reshape(-1), dt), _ordered_bits(c.reshape(-1), dt)).reshape(
        ra.shape)


# ----------------------------------------------------------------------------------------------
# pairs


def _check_shapes(ra: np.ndarray, ca: np.ndarray, what: str = "") -> None:
    if ra.shape != ca.shape:
        raise ShapeMismatch(ra.shape, ca.shape, what)


def _pair_nonfinite(r: np.ndarray, c: np.ndarray, shape) -> tuple[dict, np.ndarray | None]:
    """The ``nonfinite`` section and the finite-in-both mask (None when everything is finite)."""
    fin_r = np.isfinite(r)
    fin_c = np.isfinite(c)
    sec = {"ref": _side_counts(r, fin_r, shape), "cand": _side_counts(c, fin_c, shape)}
    both = fin_r & fin_c
    cand_only = fin_r & ~fin_c
    ref_only = fin_c & ~fin_r
    n_cand_only = int(np.count_nonzero(cand_only))
    n_ref_only = int(np.count_nonzero(ref_only))
    first_co = int(np.argmax(cand_only)) if n_cand_only else None
    first_ro = int(np.argmax(ref_only)) if n_ref_only else None
    sec.update({
        "positions_agree": n_cand_only == 0 and n_ref_only == 0,
        "n_cand_only": n_cand_only,
        "n_ref_only": n_ref_only,
        "n_both_nonfinite": int(np.count_nonzero(~fin_r & ~fin_c)),
        "first_cand_only_index": _unravel(first_co, shape) if first_co is not None else None,
        "first_ref_only_index": _unravel(first_ro, shape) if first_ro is not None else None,
    })
    return sec, both


def _side_counts(x: np.ndarray, fin: np.ndarray, shape) -> dict:
    if fin.all():
        return {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None}
    nan = int(np.count_nonzero(np.isnan(x)))
    pos = int(np.count_nonzero(np.isposinf(x)))
    neg = int(np.count_nonzero(np.isneginf(x)))
    return {"nan": nan, "posinf": pos, "neginf": neg, "total": nan + pos + neg,
            "first_index": _unravel(int(np.argmin(fin)), shape)}


_CLEAN_NONFINITE = {"ref": {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None},
                    "cand": {"nan": 0, "posinf": 0, "neginf": 0, "total": 0, "first_index": None},
                    "positions_agree": True, "n_cand_only": 0, "n_ref_only": 0, "n_both_nonfinite": 0,
                    "first_cand_only_index": None, "first_ref_only_index": None}


def _clean_nonfinite() -> dict:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _CLEAN_NONFINITE.items()}


def pair_metrics(ref: Any, cand: Any, *, atol: float = 0.0, rtol: float = 0.0, cand_dtype: str | None = None,
                 channel_axis: int | None = None, time_axis: int | None = None,
                 ref_dtype: str | None = None, quantiles: bool = True) -> dict:
    """Compare a candidate tensor with a reference tensor (same shape) and return every closeness metric.

    Args:
        ref, cand: numpy arrays or torch tensors of the *same shape* (else :class:`ShapeMismatch`).
        atol, rtol: only used for ``n_outside`` / ``frac_outside`` / ``allclose`` (element ``i`` is
            outside when ``|c_i - r_i| > atol + rtol * |r_i|``, the ``torch.isclose`` rule, or when either
            value is non-finite). Must be finite and >= 0.
        cand_dtype: the candidate's original dtype name (``"float16"``, ``"bf16"``, ``"F32"``...), the
            unit of ``max_ulp`` and of the ``tiny`` in ``max_rel_err``. Defaults to ``cand``'s own dtype.
        ref_dtype: the reference's original dtype name, for the report only.
        channel_axis, time_axis: layout for the ``(channel, frame)`` part of locations. When both are
            None the layout is inferred: ``[1, C, T]`` -> channel axis 1, frame = last axis; ``[1, T]``
            and ``[T]`` -> frame only; any other shape -> neither (``layout["inferred"]`` records
            whether the axes were inferred). Pass them explicitly for e.g. ``[B, T, D]`` block outputs.
        quantiles: also compute ``median_abs_err`` and ``p99_abs_err`` (one partial sort).

    Float comparison (``kind == "float"``, whenever either side is a floating dtype). Both sides are
    upcast to float64; let ``r``, ``c`` be the elements finite in both (``n_compared`` of them) and
    ``d = c - r``. Then:

    * ``max_abs_err`` = max |d|, ``max_abs_err_at`` its location ``{"flat", "index", "channel",
      "frame"}`` (first occurrence; None when ``max_abs_err`` is 0 or nothing was compared);
    * ``mean_abs_err`` = mean |d|; ``rmse`` = sqrt(mean d^2); ``median_abs_err``, ``p99_abs_err``
      (numpy ``quantile``, linear interpolation);
    * ``rel_mae`` = mean|d| / mean|r| (field notes' "rel-MAE");
    * ``rel_l2`` = ||d|| / ||r||; ``nmse`` = ||d||^2 / ||r||^2 (normalised by the reference energy, as
      ggml test-backend-ops); ``snr_db`` = 10 log10(||r||^2 / ||d||^2) = -10 log10(nmse);
    * ``cosine`` = <r, c> / (||r|| ||c||), clipped to [-1, 1]; exactly 1.0 when d == 0 everywhere
      (two all-zero tensors included); undefined when exactly one side is all zero;
    * ``pearson`` = correlation coefficient of r and c (undefined when either side is constant);
    * ``max_rel_err`` = max |d| / max(|r|, tiny), tiny = smallest normal number of the ULP dtype;
      ``max_rel_err_at`` its location;
    * ``max_ulp`` (int) = max ULP distance in the candidate's dtype (see :func:`ulp_distance`), with
      ``ulp_dtype`` and ``max_ulp_at``; None with ``special == "undefined"`` for dtypes without a ULP
      definition here (only float16, bfloat16, float32, float64 have one). Caveat: a sign change near
      zero crosses every tiny value in between (1e-5 vs -1e-5 is ~2.1e9 float32 ULPs), so ULP gates only
      suit stages whose values stay away from zero;
    * ``min_atol_to_pass`` = max |d| (the smallest atol that passes with rtol = 0: ``allclose`` at
      ``atol=min_atol_to_pass`` is True, at any smaller atol False); ``min_rtol_to_pass`` = max |d| / |r|
      (the smallest rtol that passes with atol = 0; +inf when some r = 0 and d != 0, 0/0 counts as 0).
      Both are None with ``special == "+inf"`` unless ``finite_ok``: no tolerance passes a NaN/Inf.
    * ``n_outside`` / ``frac_outside`` (share of *all* elements; non-finite ones always count as outside)
      and ``allclose`` (``n_outside == 0``) at the given ``atol``/``rtol``;
    * ``exact_match``: ``finite_ok`` and d == 0 everywhere.

    Integer comparison (``kind == "int"``, when both sides are integer or bool, e.g. token ids): exact.
    ``exact_match``, ``n_mismatch``, ``accuracy_pct`` (100 * matching / numel; None if empty),
    ``first_mismatch`` ``{"flat", "index", "channel", "frame", "ref", "cand"}`` or None (the first
    divergent token), ``max_abs_err`` (float, 0.0 when equal; for uniform "exact" rules, not a
    meaningful distance between token ids) and ``max_abs_err_at``, plus ``allclose`` (= exact_match),
    ``n_outside``, ``frac_outside``; ``atol``/``rtol`` are ignored.

    Always present: ``kind``, ``shape``, ``numel``, ``ref_dtype``, ``cand_dtype``, ``atol``, ``rtol``,
    ``finite_ok``, ``n_compared``, ``n_excluded_nonfinite``, ``layout`` (``{"channel_axis", "time_axis",
    "inferred"}``), ``nonfinite`` (``{"ref": {nan, posinf, neginf, total, first_index}, "cand": {...},
    "positions_agree", "n_cand_only", "n_ref_only", "n_both_nonfinite", "first_cand_only_index",
    "first_ref_only_index"}``) and ``special`` (see the module docstring).

    Raises:
        ShapeMismatch: shapes differ.
        ValueError: atol/rtol negative or non-finite; bad axes.
        TypeError: complex input.
    """
    for name, v in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    atol, rtol = float(atol), float(rtol)
    ra, rname = _as_array(ref, ref_dtype)
    ca, cname = _as_array(cand, cand_dtype)
    _check_shapes(ra, ca, "pair_metrics")
    shape = tuple(int(s) for s in ra.shape)
    lay = _layout(shape, channel_axis, time_axis)
    n = int(ra.size)
    special: dict = {}
    out: dict = {"kind": None, "shape": list(shape), "numel": n, "ref_dtype": rname, "cand_dtype": cname,
                 "atol": atol, "rtol": rtol,
                 "layout": {"channel_axis": lay[0], "time_axis": lay[1], "inferred": lay[2]}}

    if ra.dtype.kind in "iub" and ca.dtype.kind in "iub":
        out.update(_int_metrics(ra, ca, shape, lay))
        out["special"] = special
        return out

    out["kind"] = "float"
    ulp_dt = _ulp_dtype(cname)  # None for an integer candidate or an exotic dtype (float8...)
    tiny = _TINY.get(ulp_dt or "float32", _TINY["float32"])

    # Own float64 copies (copy=True even for float64 input: they are modified in place below).
    r = np.array(ra, dtype=np.float64, copy=True).reshape(-1)
    c = np.array(ca, dtype=np.float64, copy=True).reshape(-1)
    with np.errstate(all="ignore"):
        d = np.subtract(c, r)
    idx_map = None  # compressed index -> original flat index, when non-finite elements were excluded
    if n and not np.isfinite(d).all():
        nonfinite, both = _pair_nonfinite(r.reshape(shape), c.reshape(shape), shape)
        both = both.reshape(-1)
        if not both.all():
            idx_map = np.flatnonzero(both)
            r, c, d = r[idx_map], c[idx_map], d[idx_map]
    else:
        nonfinite = _clean_nonfinite()
    finite_ok = nonfinite["ref"]["total"] == 0 and nonfinite["cand"]["total"] == 0
    m = int(r.size)
    n_excl = n - m

    def loc(i):
        if i is None:
            return None
        return _location(int(idx_map[i]) if idx_map is not None else int(i), shape, lay)

    out.update({"finite_ok": finite_ok, "n_compared": m, "n_excluded_nonfinite": n_excl, "nonfinite": nonfinite,
                "ulp_dtype": ulp_dt})

    keys_none = ["max_abs_err", "max_abs_err_at", "mean_abs_err", "median_abs_err", "p99_abs_err", "rmse",
                 "rel_mae", "rel_l2", "nmse", "snr_db", "cosine", "pearson", "max_rel_err", "max_rel_err_at",
                 "max_ulp", "max_ulp_at"]
    exact = False
    n_out_fin = 0
    min_atol = min_rtol = 0.0
    if m == 0:
        out.update({k: None for k in keys_none})
    else:
        with np.errstate(all="ignore"):
            # sums of products first (no temporaries), then |d| in place
            dd = _dot(d, d)
            rr = _dot(r, r)
            cc = _dot(c, c)
            rc = _dot(r, c)
            ad = np.abs(d, out=d)
            del d
            i_max = int(np.argmax(ad))
            max_abs = float(ad[i_max])
            same = max_abs == 0.0
            exact = same and finite_ok
            sum_ad = float(ad.sum())
            ar = np.abs(r)
            sum_ar = float(ar.sum())

            out["max_abs_err"] = _num(max_abs, "max_abs_err", special)
            out["max_abs_err_at"] = loc(i_max) if not same else None
            out["mean_abs_err"] = _num(sum_ad / m, "mean_abs_err", special)
            out["rmse"] = _num(math.sqrt(dd / m), "rmse", special)
            out["rel_mae"] = _num(_ratio(sum_ad, sum_ar), "rel_mae", special)
            nmse = _ratio(dd, rr)
            out["nmse"] = _num(nmse, "nmse", special)
            out["rel_l2"] = _num(math.sqrt(nmse), "rel_l2", special)
            out["snr_db"] = _num(_snr_db(rr, dd), "snr_db", special)
            out["cosine"] = _num(_cosine(rr, cc, rc, exact_diff=same), "cosine", special)

            # tolerance count at (atol, rtol)
            if rtol == 0.0:
                n_out_fin = int(np.count_nonzero(ad > atol))
            else:
                buf = np.multiply(ar, rtol)
                buf += atol
                n_out_fin = int(np.count_nonzero(ad > buf))
                del buf

            # relative error: max |d| / max(|r|, tiny), and the exact max |d| / |r| for min_rtol_to_pass
            if same:
                out["max_rel_err"] = 0.0
                out["max_rel_err_at"] = None
                min_rtol = 0.0
            else:
                small = np.flatnonzero(ar < tiny)  # usually few: exact zeros of the reference
                rel = np.maximum(ar, tiny)
                np.divide(ad, rel, out=rel)
                i_rel = int(np.argmax(rel))
                out["max_rel_err"] = _num(rel[i_rel], "max_rel_err", special)
                out["max_rel_err_at"] = loc(i_rel) if rel[i_rel] != 0 else None
                min_rtol = float(rel[i_rel])
                del rel
                if small.size:
                    a_s, r_s = ad[small], ar[small]
                    nz = a_s > 0  # 0/0 counts as 0
                    if nz.any():
                        min_rtol = max(min_rtol, float(np.max(a_s[nz] / r_s[nz])))  # x/0 -> inf
            del ar
            min_atol = max_abs

            # ULP distance in the candidate's dtype
            if ulp_dt is None:
                out["max_ulp"] = None
                out["max_ulp_at"] = None
                special["max_ulp"] = UNDEFINED
            elif same:
                out["max_ulp"] = 0
                out["max_ulp_at"] = None
            else:
                ud = _ulp_dist_from_keys(_ordered_bits(r, ulp_dt), _ordered_bits(c, ulp_dt))
                i_u = int(np.argmax(ud))
                out["max_ulp"] = int(ud[i_u])
                out["max_ulp_at"] = loc(i_u) if ud[i_u] else None
                del ud

            # Pearson (two-pass, centring our own copies in place)
            out["pearson"] = _num(_pearson_inplace(r, c, same), "pearson", special)
            del r, c

            # quantiles last: partial sort of |d| in place
            if quantiles:
                qv = _quantiles_inplace(ad, (0.5, 0.99))
                out["median_abs_err"] = _num(qv[0], "median_abs_err", special)
                out["p99_abs_err"] = _num(qv[1], "p99_abs_err", special)
            else:
                out["median_abs_err"] = out["p99_abs_err"] = None
            del ad

    n_outside = n_out_fin + n_excl
    out["n_outside"] = n_outside
    out["frac_outside"] = (n_outside / n) if n else 0.0
    out["allclose"] = n_outside == 0
    out["exact_match"] = bool(exact) or (n == 0)
    if finite_ok:
        out["min_atol_to_pass"] = _num(min_atol, "min_atol_to_pass", special)
        out["min_rtol_to_pass"] = _num(min_rtol, "min_rtol_to_pass", special)
    else:
        out["min_atol_to_pass"] = out["min_rtol_to_pass"] = None
        special["min_atol_to_pass"] = special["min_rtol_to_pass"] = POS_INF
    out["special"] = special
    return out


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of products in float64 with numpy's own loop (``einsum``), not BLAS: the result does not
    depend on the BLAS thread count, and a busy machine cannot stall it in BLAS thread spin-waits."""
    return float(np.einsum("i,i->", a, b))


def _quantiles_inplace(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    """numpy-``quantile``-compatible linear-interpolation quantiles of ``x``, partially sorting ``x``
    in place (no copy). ``x`` must be finite."""
    n = x.size
    pos = [q * (n - 1) for q in qs]
    lo = [int(math.floor(p)) for p in pos]
    hi = [min(i + 1, n - 1) for i in lo]
    x.partition(sorted(set(lo + hi)))
    res = []
    for p, a, b in zip(pos, lo, hi):
        g = p - a
        va, vb = float(x[a]), float(x[b])
        res.append(va if g == 0.0 else va + g * (vb - va))
    return res


def _pearson_inplace(r: np.ndarray, c: np.ndarray, same: bool) -> float:
    r -= r.mean()
    c -= c.mean()
    vr = _dot(r, r)
    vc = _dot(c, c)
    if vr == 0.0 or vc == 0.0:
        return math.nan  # a constant side -> "undefined"
    if same:
        return 1.0
    v = _dot(r, c) / (math.sqrt(vr) * math.sqrt(vc))
    return v if math.isnan(v) else min(1.0, max(-1.0, v))


def _ratio(num: float, den: float) -> float:
    """num / den with 0/0 -> 0 (both zero: nothing differs) and x/0 -> +inf."""
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _snr_db(rr: float, dd: float) -> float:
    if dd == 0.0:
        return math.inf  # identical (all-zero identical tensors included)
    if rr == 0.0:
        return -math.inf
    q = rr / dd
    if math.isnan(q):
        return math.nan  # inf / inf: only float64 inputs near the overflow limit
    return 10.0 * math.log10(q) if math.isfinite(q) else math.inf


def _cosine(rr: float, cc: float, rc: float, exact_diff: bool) -> float:
    if exact_diff:
        return 1.0
    if rr == 0.0 or cc == 0.0:
        return math.nan  # -> "undefined"
    v = rc / (math.sqrt(rr) * math.sqrt(cc))
    return v if math.isnan(v) else min(1.0, max(-1.0, v))


def _int_metrics(ra: np.ndarray, ca: np.ndarray, shape, lay) -> dict:
    n = int(ra.size)
    eq = np.equal(ra, ca).reshape(-1)
    n_mis = n - int(np.count_nonzero(eq))
    first = None
    if n_mis:
        i = int(np.argmin(eq))
        first = _location(i, shape, lay)
        first["ref"] = _py_scalar(ra.reshape(-1)[i])
        first["cand"] = _py_scalar(ca.reshape(-1)[i])
    max_abs, at = 0.0, None
    if n_mis:
        with np.errstate(over="ignore"):
            ad = np.abs(ca.astype(np.int64).reshape(-1) - ra.astype(np.int64).reshape(-1))
        j = int(np.argmax(ad))
        max_abs, at = float(ad[j]), _location(j, shape, lay)
    return {"kind": "int", "finite_ok": True, "n_compared": n, "n_excluded_nonfinite": 0,
            "nonfinite": _clean_nonfinite(),
            "exact_match": n_mis == 0, "n_mismatch": n_mis, "max_abs_err": max_abs, "max_abs_err_at": at,
            "accuracy_pct": (100.0 * (n - n_mis) / n) if n else None,
            "first_mismatch": first, "n_outside": n_mis, "frac_outside": (n_mis / n) if n else 0.0,
            "allclose": n_mis == 0}


def _py_scalar(v) -> Any:
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    f = float(v)
    if math.isfinite(f):
        return f
    return "nan" if math.isnan(f) else (POS_INF if f > 0 else NEG_INF)


# ----------------------------------------------------------------------------------------------
# helpers for plots and tables


def quantile_abs_err(ref: Any, cand: Any, q: float | Sequence[float]) -> float | list[float]:
    """Quantile(s) ``q`` (in [0, 1]) of the element-wise absolute error ``|cand - ref|`` (float64).

    Non-finite elements are *not* dropped: an element where either side is NaN/Inf has infinite error,
    so it sorts to the top. Linear interpolation between order statistics (numpy's default method),
    with ``x + g * (inf - x) = inf`` for ``g > 0``. Returns a Python float (or a list for a sequence
    ``q``); **the value may be ``inf``** (not JSON-safe by itself: pass it through :func:`to_jsonable`).
    Empty tensors give None.
    """
    ra, _ = _as_array(ref)
    ca, _ = _as_array(cand)
    _check_shapes(ra, ca, "quantile_abs_err")
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if qs.size == 0 or np.any(~np.isfinite(qs)) or np.any(qs < 0) or np.any(qs > 1):
        raise ValueError(f"quantiles must lie in [0, 1], got {q!r}")
    if ra.size == 0:
        return None if np.ndim(q) == 0 else [None] * qs.size
    with np.errstate(all="ignore"):
        ad = np.abs(np.asarray(ca, dtype=np.float64).reshape(-1) - np.asarray(ra, dtype=np.float64).reshape(-1))
    ad[~np.isfinite(ad)] = np.inf
    n = ad.size
    pos = qs * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    g = pos - lo
    part = np.partition(ad, np.unique(np.concatenate([lo, hi])))
    vlo, vhi = part[lo], part[hi]
    res = []
    for a, b, gg in zip(vlo, vhi, g):
        if gg == 0.0 or a == b:
            res.append(float(a))
        elif math.isinf(b):
            res.append(math.inf)
        else:
            res.append(float(a + gg * (b - a)))
    return res[0] if np.ndim(q) == 0 else res


def per_frame_error(ref: Any, cand: Any, time_axis: int = -1) -> np.ndarray:
    """Mean absolute error per frame: ``|cand - ref|`` (float64) averaged over every axis except
    ``time_axis``. Returns a float64 array of length ``shape[time_axis]`` (for plots).

    A frame that contains a non-finite value on either side gets ``+inf`` (never a silently smaller
    mean); use :func:`pair_metrics` for the counts. Shapes must match (:class:`ShapeMismatch`).
    """
    ra, _ = _as_array(ref)
    ca, _ = _as_array(cand)
    _check_shapes(ra, ca, "per_frame_error")
    if ra.ndim == 0:
        raise ValueError("per_frame_error needs at least one axis")
    ax = int(time_axis)
    if not -ra.ndim <= ax < ra.ndim:
        raise ValueError(f"time_axis={time_axis} is out of range for shape {list(ra.shape)}")
    with np.errstate(all="ignore"):
        ad = np.abs(np.asarray(ca, dtype=np.float64) - np.asarray(ra, dtype=np.float64))
    ad = np.moveaxis(ad, ax, -1).reshape(-1, ra.shape[ax])
    bad = ~np.isfinite(ad)
    if bad.any():
        ad[bad] = np.inf
    if ad.shape[0] == 0:
        return np.zeros(ra.shape[ax], dtype=np.float64)
    return ad.mean(axis=0)


def first_k_values(t: Any, k: int = 5) -> list:
    """The first ``k`` values of ``t`` in C (row-major) order, for display.

    Ints and bools stay ints/bools, floats become Python floats; a non-finite float is the string
    ``"nan"``, ``"+inf"`` or ``"-inf"`` (so the list is JSON-safe and a NaN stays visible).
    """
    a, _ = _as_array(t)
    flat = a.reshape(-1)[: max(0, int(k))]
    return [_py_scalar(v) for v in flat]


def metric_value(result: dict, key: str) -> Any:
    """The value of ``result[key]`` with the JSON-safety encoding undone: a ``None`` listed in
    ``result["special"]`` becomes ``float('inf')``, ``float('-inf')`` or ``float('nan')``; other values
    are returned unchanged (``None`` stays ``None``)."""
    v = result.get(key)
    if v is None:
        s = result.get("special", {}).get(key)
        if s == POS_INF:
            return math.inf
        if s == NEG_INF:
            return -math.inf
        if s == UNDEFINED:
            return math.nan
    return v


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy/torch containers and scalars to plain JSON types.

    Arrays become (nested) lists, tuples become lists, numpy scalars Python scalars; any non-finite float
    becomes ``None`` (the surrounding dict's counts / ``special`` entries say why). Dict keys become str.
    """
    tt = _torch_tensor_type()
    if tt is not None and isinstance(obj, tt):
        obj = _as_array(obj)[0]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            o = obj.astype(object)
            o[~np.isfinite(obj)] = None
            return o.tolist()
        return obj.tolist()
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj

