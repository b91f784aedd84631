"""The backend interface and the registry (see :mod:`candidate.backends`)."""

from __future__ import annotations

from typing import Any, ClassVar

from reference.errors import InputError


class Backend:
    """One way to compute the candidate's estimator. Subclasses set :attr:`name`, declare :attr:`options`
    (option -> default) and :attr:`choices` (option -> allowed values), and implement :meth:`build_estimator`
    (or :meth:`build_candidate` for a backend that computes the whole pipeline)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    # legacy switch names this backend's options were given as (``onnx_fuse = true`` in a profile)
    legacy_prefix: ClassVar[str | None] = None
    # the switches and faults act on the harness's own pipeline (False: a port computes everything itself)
    takes_switches: ClassVar[bool] = True

    def check_options(self, given: dict) -> None:
        """Refuse an option this backend does not take, or a value it does not allow (one line)."""
        for k, v in given.items():
            if k not in self.options:
                raise InputError(f"estimator backend {self.name!r} has no option {k!r} (its options: "
                                 f"{', '.join(sorted(self.options)) or 'none'})")
            allowed = self.choices.get(k)
            if allowed is not None and v not in allowed:
                raise InputError(f"estimator backend {self.name!r}: option {k}={v!r} is not one of "
                                 f"{', '.join(map(str, allowed))}")

    def validate(self, sw) -> None:
        """Refuse switches the backend cannot honour (an :class:`InputError`, one line)."""

    def refuse_switches(self, profile: str | None, faults=(), overrides: dict | None = None,
                        device: str = "cpu") -> str | None:
        """Why faults, switch overrides or a device cannot be added to a profile of this backend (None: they can;
        a backend that computes everything itself, a port, refuses them)."""
        return None

    def unavailable(self, sw) -> str | None:
        """Why it cannot run here (a package or provider missing), or None."""
        return None

    def precision(self, sw) -> str | None:
        """The precision class it imposes (None: the switches' own)."""
        return None

    def attention(self, sw) -> str | None:
        """What the provenance reports as the attention (None: the ``attention`` switch)."""
        return None

    def provenance(self, estimator) -> dict:
        """Trace metadata entries saying what the built estimator is (written before the run)."""
        return {}

    def run_metadata(self, estimator) -> dict:
        """Trace metadata entries saying what the estimator did in the last run (written after it)."""
        return {}

    def build_estimator(self, ref_estimator, sw, faults, kernels, device: str):
        """The estimator of a candidate with switches ``sw`` for the reference estimator ``ref_estimator``."""
        raise NotImplementedError(f"backend {self.name!r} builds no estimator")

    def build_candidate(self, model, sw, label: str):
        """The whole candidate pipeline, for a backend that computes more than the estimator (a port); None: the
        harness's candidate (:class:`candidate.pipeline.CandidateToken2Wav`) with this backend's estimator."""
        return None


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend, replace: bool = False) -> Backend:
    if backend.name in BACKENDS and not replace and type(BACKENDS[backend.name]) is not type(backend):
        raise ValueError(f"estimator backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


def backend_named(name: str) -> Backend:
    if name not in BACKENDS:
        raise InputError(f"switch estimator_backend={name!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_of(sw) -> Backend:
    """The backend of a candidate's :class:`candidate.switches.Switches`."""
    return backend_named(sw.estimator_backend)


def legacy_option(key: str) -> tuple[str, str] | None:
    """(backend, option) of a legacy prefixed switch name (``onnx_fuse`` -> ("onnxruntime", "fuse")), or None."""
    for b in BACKENDS.values():
        p = b.legacy_prefix
        if p and key.startswith(p) and key[len(p):] in b.options:
            return b.name, key[len(p):]
    return None
