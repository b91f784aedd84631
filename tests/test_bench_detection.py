"""benchmarks/bench_detection.py end to end in --quick mode: the rewrites are bit-identical (controls), a
formula slip is caught and localised by the floor gate, an equivalent rewrite is not, and the JSON says so."""

from __future__ import annotations

import json

from benchmarks import bench_detection as bd
from benchmarks.mutations import ALL, CONTROLS, LEGIT, MUTATIONS


def test_suite_size_and_names():
    assert len(MUTATIONS) >= 25 and len(LEGIT) >= 6
    assert {c.group for c in MUTATIONS} == {"front end", "DiT", "solver", "vocoder"}
    from candidate.faults import catalogue

    assert not set(ALL) & set(catalogue())  # none of them is a catalogue fault
    assert all(c.kind == "control" for c in CONTROLS)


def test_quick_run(tmp_path):
    out = tmp_path / "d.json"
    res = bd.main(["--quick", "--modes", "offline", "--only", "gelu-exact,cfg-algebra,audio-clamp-1.0",
                   "--json", str(out)])
    rows = {r["name"]: r for r in res["modes"][0]["cases"]}
    assert all(rows[c.name]["first_changed"] is None for c in CONTROLS)  # else main() raised
    g = rows["gelu-exact"]
    assert g["first_changed"] == "step1.v1" and g["floor"]["caught"] and g["floor"]["localized"]
    assert g["effect"] > res["modes"][0]["floor"]["k"]
    assert not rows["cfg-algebra"]["floor"]["caught"] and rows["cfg-algebra"]["first_changed"] == "step1.v_cfg"
    assert rows["audio-clamp-1.0"]["first_changed"] in ("audio", None)  # acts only where |audio| > 0.99
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["modes"][0]["summary"]["legit"] == 1
