"""Rendering helpers shared by every page (the parity report, the summary page, the bisect pages): display
formatting of result values and the jinja2 environment over ``parity/present/templates`` (autoescaping on: every
string that comes from a trace, a log or a commit is HTML-escaped). Display only: no metric is computed here.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
SPECIAL_TEXT = {"+inf": "+inf", "-inf": "-inf", "undefined": "undefined"}


# formatting (display only: no arithmetic on metrics beyond unit labels)

def fmt(v: Any, special: dict | None = None, key: str | None = None, limit: int = 160) -> str:
    """A value as display text. ``None`` named in ``special`` (the JSON-safety map) shows as +inf etc."""
    if v is None:
        if special and key and key in special:
            return SPECIAL_TEXT.get(str(special[key]), str(special[key]))
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return "0" if v == 0 else f"{v:.4g}"
    if isinstance(v, (list, tuple, dict)):
        s = compact(v)
        return s if len(s) <= limit else s[: limit - 3] + "..."
    s = str(v)
    return s if len(s) <= limit * 4 else s[: limit * 4 - 3] + "..."


def compact(v: Any) -> str:
    """Nested containers as short display text: no quotes, floats to 7 significant digits."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {compact(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(compact(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.7g}"
    if hasattr(v, "tolist"):
        return compact(v.tolist())
    return str(v)



def size_text(n: int) -> str:
    """A byte count as display text (KiB or MiB, and the exact bytes)."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MiB ({n:,} bytes)"
    return f"{n / 1024:.1f} KiB ({n:,} bytes)"


@functools.lru_cache(maxsize=1)
def jinja_env():
    """The one jinja2 environment (autoescape, ``fmt`` filter) for every template in ``parity/present/templates``."""
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def render(template: str, **context) -> str:
    return jinja_env().get_template(template).render(**context)
