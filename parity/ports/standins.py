"""Stand-in modules for imports a port only needs for parts the harness does not run.

Some ports import, at module level, libraries that only their LLM or their model-hub download uses (a
token2wav run never calls them). Where such a library is not installed, the adapter registers a small
stand-in module under its name in ``sys.modules`` for the duration of the import, never over an installed
one, and lists what it stood in for in the port's provenance. A stand-in's functions raise if anything calls
them, so a port that does need them fails loudly instead of computing with a fake.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass, field
from typing import Callable


class StandInCalled(RuntimeError):
    """A port called something the adapter only stood in for."""


@dataclass(frozen=True)
class StandIn:
    """``module`` (dotted name) gets the attributes ``attrs`` builds (name -> object)."""

    module: str
    attrs: Callable[[], dict] = field(default=dict)
    why: str = ""


def refusing(qualname: str, why: str) -> Callable:
    def f(*_a, **_k):
        raise StandInCalled(f"{qualname} is a stand-in ({why}); the harness does not provide it")

    f.__name__ = qualname.rsplit(".", 1)[-1]
    f.__qualname__ = qualname
    return f


def refusing_class(qualname: str, why: str) -> type:
    def init(self, *_a, **_k):
        raise StandInCalled(f"{qualname} is a stand-in ({why}); the harness does not provide it")

    return type(qualname.rsplit(".", 1)[-1], (), {"__init__": init, "__qualname__": qualname})


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    except Exception:  # noqa: BLE001 - a module that fails to import for another reason is not usable either
        return False
    return True


def activate(standins: list[StandIn]) -> list[str]:
    """Register the stand-ins whose real module cannot be imported; returns their names (the parents a dotted
    name needs are created as empty packages when they are missing too). Idempotent."""
    used = []
    for s in standins:
        if _importable(s.module):
            continue
        parts = s.module.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules and not _importable(parent):
                pkg = types.ModuleType(parent)
                pkg.__path__ = []  # a package, so the child can be imported
                pkg.__standin__ = True
                sys.modules[parent] = pkg
        mod = types.ModuleType(s.module)
        mod.__standin__ = True
        mod.__doc__ = f"tts-parity stand-in: {s.why}"
        for k, v in s.attrs().items():
            setattr(mod, k, v)
        sys.modules[s.module] = mod
        if len(parts) > 1:
            setattr(sys.modules[".".join(parts[:-1])], parts[-1], mod)
        used.append(s.module)
    return used


def active(standins: list[StandIn]) -> list[str]:
    """The stand-ins of this list currently registered in ``sys.modules``."""
    return [s.module for s in standins if getattr(sys.modules.get(s.module), "__standin__", False)]
