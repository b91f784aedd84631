"""The comparison spec: how every command judges, built once from its options and passed to the one comparison.

``parity run``, ``parity compare``, ``parity-report``, the pytest plugin and ``parity bisect`` (switches,
precision, git) all build a :class:`ComparisonSpec` from their options (:meth:`ComparisonSpec.from_args`, the
plugin from its configuration) and hand it to :func:`parity.judge.compare.compare_loaded` (directly, or through
:func:`parity.harness.run_case` / :func:`parity.harness.compare_paths`). What it holds:

* ``policy``: the flat tolerances (the defaults, the project's ``[tool.parity.tolerances]``, ``--policy``);
* ``floors``: the floor store (:class:`parity.floor.store.FloorStore`: ``--floor`` files, the shipped floors, the
  cache, computed on demand; None with ``--no-floor``: the flat tolerances judge every stage);
* ``requirements``: what the candidate must hold or have run (``--require-stages``, ``--require-stage``,
  ``--require-kernel``), added to the result as failure findings after the diagnosis;
* ``precision`` / ``attention``: the candidate's class for the policy when its metadata does not say;
* ``mask_check``: run the streaming chunk-mask check (it runs the reference estimator: capture-side work);
* ``time_grid``: where a step's t/dt differ by the grid's rounding, re-run the reference step at the candidate's
  grid and judge the step against it too (:mod:`parity.capture.time_grid`; capture-side work);
* ``stream_vs_offline``: a streaming session is also judged against the offline run of the same tokens;
* ``pcm_scale``, ``allow_trim``, ``audio_metrics``, ``keep_vectors``: normalisations and what the result keeps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..result import Comparison, Finding
from .policy import Policy, load_policy


@dataclass(frozen=True)
class Requirements:
    """What the candidate must hold (``stages``) and must have run (``kernel``: the attention kernel every call
    ran). Each unmet requirement is a failure finding (exit 1), never a construction error."""

    stages: tuple[str, ...] = ()
    kernel: str | None = None

    @classmethod
    def from_args(cls, args) -> "Requirements":
        from ..args import required_stages

        return cls(tuple(required_stages(args)), getattr(args, "require_kernel", None) or None)

    def __bool__(self) -> bool:
        return bool(self.stages or self.kernel)

    def capture_findings(self, cand_meta: dict) -> list[Finding]:
        """The findings a capture alone decides (``parity dump`` has no reference to compare with): the
        required kernel, from the attention kernels the candidate's metadata says ran."""
        out = []
        if self.kernel:
            from candidate.provenance import check_required_kernel

            msg = check_required_kernel(self.kernel, (cand_meta or {}).get("attention_kernels") or {})
            if msg:
                out.append(Finding("required_kernel_missing", None, "failure", msg))
        return out

    def apply(self, result: Comparison) -> Comparison:
        """Add the unmet requirements to ``result`` as failure findings (the verdict and headline follow)."""
        from .require import require_stages

        cand_meta = (result.metadata or {}).get("cand") or {}
        for f in self.capture_findings(cand_meta if isinstance(cand_meta, dict) else {}):
            result.add_finding(f)
        require_stages(result, self.stages)
        return result


@dataclass(frozen=True)
class ComparisonSpec:
    """How a comparison judges (see the module docstring). ``policy`` None: the default rules and those of the
    project in the current directory."""

    policy: Policy | None = None
    floors: Any = None  # parity.floor.store.FloorStore | None (None: the flat tolerances only)
    floor_file: str | None = None  # one explicit floor that must be the reference trace's own (parity compare)
    requirements: Requirements = field(default_factory=Requirements)
    precision: str | None = None
    attention: str | None = None
    mask_check: bool = True
    time_grid: bool = True
    stream_vs_offline: bool = True
    pcm_scale: bool = True
    allow_trim: bool = False
    audio_metrics: bool = True
    keep_vectors: bool = True

    def __post_init__(self):
        if self.policy is None:
            object.__setattr__(self, "policy", load_policy())

    def replace(self, **changes) -> "ComparisonSpec":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args, *, project=None, log=None, one_floor_file: bool = False) -> "ComparisonSpec":
        """The spec of a command's options (every option is optional: a command has the ones its parser
        declares). ``one_floor_file``: a single ``--floor FILE`` must be the reference trace's own floor (parity
        compare: one comparison); otherwise each ``--floor`` judges the cases whose key it carries."""
        from ..floor.store import store_from_args

        floors = store_from_args(args, log)
        files = list(getattr(args, "floor", None) or [])
        if one_floor_file and len(files) > 1:
            from reference.errors import InputError

            raise InputError(f"one --floor FILE per comparison (got {len(files)})")
        return cls(policy=load_policy(getattr(args, "policy", None), project),
                   floors=floors, floor_file=files[0] if one_floor_file and files else None,
                   requirements=Requirements.from_args(args),
                   precision=getattr(args, "precision", None), attention=getattr(args, "attention", None),
                   mask_check=not getattr(args, "no_mask_check", False),
                   pcm_scale=not getattr(args, "no_pcm_scale", False),
                   allow_trim=bool(getattr(args, "allow_trim", False)))

    # -- the floor of a comparison -------------------------------------------------------------------
    def floor_for_run(self, model, inputs: dict, *, switches, mode, bundle_name: str | None = None,
                      reference: dict | None = None):
        """The floor of a case run here (the model and the inputs at hand): the store's
        :meth:`~parity.floor.store.FloorStore.for_run` (a streaming session's floor over its calls and stream;
        ``reference``: the reference run's stages, reused as the floor's plain run), or None without a store."""
        if self.floors is None:
            return None
        return self.floors.for_run(model, inputs, switches=switches, streaming=mode.streaming,
                                   finalize=mode.finalize, session=mode.kind, bundle_name=bundle_name,
                                   reference=reference, options=mode.session)

    def floor_for_trace(self, ref, cand, precision: str):
        """The floor of a comparison of saved traces (:class:`parity.ingest.Loaded`), from the reference trace's
        own provenance: the one explicit ``floor_file`` (refused when it was measured for another reference),
        else the store's :meth:`~parity.floor.store.FloorStore.for_trace`; None without a store or a file."""
        if self.floor_file is not None:
            from ..floor.store import FloorStore
            from ..floor.types import Floor

            store = self.floors if self.floors is not None else FloorStore(cache=None, shipped=None, compute=False)
            choice = store.check_file_for_trace(Floor.load(self.floor_file), ref.metadata, ref.tensors)
            choice.path = str(self.floor_file)
            return choice
        if self.floors is None:
            return None
        return self.floors.for_trace(ref.metadata, ref.tensors, cand_meta=cand.metadata, precision=precision,
                                     cand_tensors=cand.tensors)
