"""Noise floors: verdicts relative to the measured rounding noise of the very model, bundle and mode.

* :func:`estimate_floor` -- the fp32 noise floor from an ensemble of legitimate re-computations of the
  reference (2 threads, SDPA kernels, Monte-Carlo arithmetic at module outputs and at every rounding op);
* :func:`estimate_envelope` -- the expected-error envelope of bf16/fp16 (chop emulation) or int8 (fake
  quantisation), for judging a reduced-precision candidate as "N x its rounding-only error";
* :class:`Floor` / :class:`StageFloor` -- the result (JSON round trip, deterministic), with its provenance
  and cache key; :class:`FloorCache` -- the on-disk cache;
* :func:`judge` / :func:`judge_stage` -- the one floor-relative gate (error / floor <= k).

See ``docs/floor.md`` for the method and the measurements.
"""

from .cache import FloorCache, bundle_hash, default_cache_dir, key_from_trace, make_key
from .chop import PrecisionSpec, spec_from_switches
from .estimate import EstimateLog, Recipe, estimate_envelope, estimate_floor
from .judge import FloorVerdict, StageVerdict, judge, judge_stage
from .members import Member, run_reference
from .stats import PairStats, pair_stats
from .types import FLOOR_FORMAT, Floor, StageFloor

__all__ = ["FLOOR_FORMAT", "EstimateLog", "Floor", "FloorCache", "FloorVerdict", "Member", "PairStats", "PrecisionSpec",
           "Recipe", "StageFloor", "StageVerdict", "bundle_hash", "default_cache_dir", "estimate_envelope",
           "estimate_floor", "judge", "judge_stage", "key_from_trace", "make_key", "pair_stats", "run_reference",
           "spec_from_switches"]
