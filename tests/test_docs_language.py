"""The documentation and everything a user reads (README, docs/, fixture notes, messages and docstrings of the
packages and benchmarks) speak of features, not of the work items that built them ("issue 14", "phase 2" mean
nothing to a user of the project)."""

from __future__ import annotations

import re

from .conftest import ROOT

WORK_ITEM = re.compile(r"\b(?:issue|phase|ticket)[ -]?#?\d+\b", re.I)


def _user_facing_files():
    yield from (ROOT / "README.md", ROOT / "fixtures" / "README.md", ROOT / "reports" / "README.md")
    yield from sorted((ROOT / "docs").glob("*.md"))
    for pkg in ("parity", "reference", "candidate", "benchmarks"):
        yield from sorted((ROOT / pkg).rglob("*.py"))
        yield from sorted((ROOT / pkg).rglob("*.j2"))
        yield from sorted((ROOT / pkg).rglob("*.toml"))


def test_no_work_items_in_what_users_read():
    hits = []
    for path in _user_facing_files():
        if not path.exists():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in WORK_ITEM.finditer(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {m.group(0)!r} in {line.strip()[:100]!r}")
    assert not hits, "work items named where users read:\n" + "\n".join(hits)


def test_the_check_finds_what_it_looks_for():
    assert WORK_ITEM.search("(issue 14; method)") and WORK_ITEM.search("Phase 2 ships") and \
        WORK_ITEM.search("see phase-2-the-floor")
    assert not WORK_ITEM.search("phase drift") and not WORK_ITEM.search("a known issue with 2 files")
