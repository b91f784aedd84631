"""Verdicts unchanged: the fault catalogue, the profile matrix and the streaming-session faults give the verdict,
headline code, headline stage and gate recorded in ``tests/data/verdicts.json`` (:mod:`tests.verdicts`).

The whole record is 99 cases (about 90 s in one process on the tiny preset). CI runs a representative third of
each group (every third case in the record's order, the ``compiled`` profile left out: torch.compile costs 30 s
for nothing this test checks); ``PARITY_VERDICTS_ALL=1`` runs every case."""

import json
import os

import pytest

from tests import verdicts as V

RECORD = json.loads(V.RECORD.read_text()) if V.RECORD.exists() else {}
ALL = os.environ.get("PARITY_VERDICTS_ALL", "") not in ("", "0")


def _params():
    out = []
    for g in V.GROUPS:
        for i, cid in enumerate(V.case_ids(g)):
            subset = (i % 3 == 0 or g == "session" and i % 2 == 0) and not cid.startswith("compiled/")
            marks = [] if (ALL or subset) else [pytest.mark.skip(reason="outside CI's subset (PARITY_VERDICTS_ALL=1)")]
            out.append(pytest.param(g, cid, id=f"{g}:{cid}", marks=marks))
    return out


@pytest.fixture(scope="module")
def runner():
    return V.Runner()


def test_record_covers_every_case():
    """The record holds every case the groups define (a new fault or profile is recorded with its commit)."""
    for g in V.GROUPS:
        ids = [c for c in V.case_ids(g) if not V.unavailable(g, c)]
        missing = [c for c in ids if c not in RECORD.get(g, {})]
        assert not missing, f"{g}: not recorded (python -m tests.verdicts --write): {missing}"


@pytest.mark.parametrize("group,case_id", _params())
def test_verdict_unchanged(runner, group, case_id):
    why = V.unavailable(group, case_id)
    if why:
        pytest.skip(why)
    want = RECORD.get(group, {}).get(case_id)
    assert want is not None, f"{group} {case_id} is not recorded"
    got = runner.run(group, case_id)
    assert got == want, f"{group} {case_id}: recorded {want}, now {got}"
