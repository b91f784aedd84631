"""``parity bisect``: which switch, which fp32 islands, which commit broke parity.

Three searches share one trial log, one progress line per trial, bounds on trials and time, and a final
HTML page that names the culprit and links the parity report of the trial that established it:

* ``parity bisect switches --profile NAME`` (or ``--switch K=V`` / ``--fault F``): the profile's atomic
  changes against the reference-equivalent ``Switches()`` defaults are reduced by delta debugging to a
  1-minimal set that still fails parity (:mod:`.switches`).
* ``parity bisect precision --profile NAME``: the components that must stay in fp32 for a failing
  reduced-precision profile to pass, with a ready-to-paste ``[tool.parity.profiles.*]`` (:mod:`.precision`).
* ``parity bisect git --good REV --bad REV [--cmd "COMMAND {out}"]``: ``git bisect run`` with the parity
  check as the oracle against a frozen reference (:mod:`.git`).

Modules: :mod:`.search` (ddmin), :mod:`.log` (trial log, progress, result, budgets), :mod:`.trials` (in-process
candidate trials through :func:`parity.harness.run_case`), :mod:`.page` (trial reports and the bisect page, both
jinja templates), :mod:`.switches`, :mod:`.precision`, :mod:`.git`, :mod:`.cli` (the ``parity bisect`` options).

Logs are JSON (schema ``tts-parity-bisect/1``), rewritten atomically after every trial; ``--resume``
reuses finished trials (keyed by the subset, or by the commit sha) when the log was written for the same
search. Exit codes of ``parity bisect``: 0 culprit found, 1 nothing established (the start does not fail,
the end does not pass, the budget ran out, git could not decide), 2 usage error.
"""

from .git import GitBisectConfig, bisect_git, repo_state
from .log import BisectResult, BisectUsageError, TrialLog, TrialProgress
from .page import trial_report, write_bisect_report
from .precision import bisect_precision, precision_components, toml_profile
from .search import DDResult, ddmin, ddmin_bound
from .switches import Change, apply_changes, atomic_changes, bisect_switches
from .trials import SearchSettings

__all__ = ["BisectResult", "BisectUsageError", "Change", "DDResult", "GitBisectConfig", "SearchSettings", "TrialLog",
           "TrialProgress", "apply_changes", "atomic_changes", "bisect_git", "bisect_precision", "bisect_switches",
           "ddmin", "ddmin_bound", "precision_components", "repo_state", "toml_profile", "trial_report",
           "write_bisect_report"]
