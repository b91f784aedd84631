"""``parity calibrate``: per-stage fp32 tolerances from the measured noise floor.

The reference runs in float64 and in float32 on the same inputs and noise. For every stage the fp32
run's error against float64 is the noise floor of an fp32 implementation of this exact pipeline; a
legitimate fp32 candidate (another kernel, another summation order) makes errors of the same order.
Written rules: ``elementwise`` with ``atol = margin * max|fp32 - fp64| + floor`` and ``rtol = 0`` per
stage (ODE steps grouped by field, HiFT internals together), each with the fp64 arbiter
``{k = margin, floor}`` so that a run given the float64 trace (``--fp64``) is judged the dynamo way:
candidate error against float64 at most k times the fp32 reference's own. Optionally the float64 traces
are kept for that.
"""

from __future__ import annotations

import re
import time
from pathlib import Path


from reference.bundle import bundle_dims, load_bundle

from .capture.runner import RunMode, run_pipeline
from .stages import INPUTS, parse_step, position


def _group(name: str) -> str:
    st = parse_step(name)
    if st:
        return "step*." + re.sub(r"\d+$", "*", st[1]) if st[1].startswith("block") else "step*." + st[1]
    if name.startswith("hift."):
        return "hift.*"
    return name


def _order(groups) -> list[str]:
    return sorted(groups, key=lambda n: position(n.replace("*", "1")))


def measure(model, bundles, modes=(False, True), patterns=None, keep_dir: Path | None = None) -> dict:
    """{stage group: {"max_abs": .., "max_rel_l2": .., "max_ref": ..}} over bundles and modes."""
    m64 = model.to_float64()
    out: dict = {}
    for b in bundles:
        inputs = load_bundle(b, **bundle_dims(model.cfg))
        for streaming in modes:
            tag = f"{Path(b).stem}-{'streaming' if streaming else 'offline'}"
            r32 = run_pipeline(model, inputs, None, RunMode(streaming=streaming), patterns=patterns)
            r64 = run_pipeline(m64, inputs, keep_dir / f"{tag}-fp64.safetensors" if keep_dir else None,
                               RunMode(streaming=streaming), patterns=patterns)
            for name, t32 in r32.tensors.items():
                t64 = r64.tensors.get(name)
                if t64 is None or not t32.is_floating_point() or t32.shape != t64.shape:
                    continue
                d = (t32.double() - t64.double())
                g = out.setdefault(_group(name), {"max_abs": 0.0, "max_rel_l2": 0.0, "max_ref": 0.0, "n": 0})
                g["max_abs"] = max(g["max_abs"], float(d.abs().max()))
                nrm = float(t64.double().norm())
                g["max_rel_l2"] = max(g["max_rel_l2"], float(d.norm()) / nrm if nrm else 0.0)
                g["max_ref"] = max(g["max_ref"], float(t64.abs().max()))
                g["n"] += 1
    return out


def rules_toml(floor: dict, margin: float, abs_floor: float, source: str) -> str:
    lines = [f"# Written by `parity calibrate` on {time.strftime('%Y-%m-%d %H:%M')} ({source}).",
             f"# fp32 noise floor measured as max |fp32 - fp64| of the reference; limit = {margin:g} x that + "
             f"{abs_floor:g}.", "# Load with --policy FILE or [tool.parity] policy = \"FILE\".", ""]
    for name in _order(floor):
        g = floor[name]
        if name in INPUTS or name == "x0":  # inputs and the shared noise must be bit-identical
            lines += ["[[rule]]", f'stage = "{name}"', 'precision = ["fp32"]', 'statistic = "exact"', ""]
            continue
        atol = margin * g["max_abs"] + abs_floor
        lines += ["[[rule]]", f'stage = "{name}"', 'precision = ["fp32"]', 'statistic = "elementwise"',
                  f"atol = {atol:.3g}", "rtol = 0.0", f"arbiter = {{ k = {margin:g}, floor = {abs_floor:g} }}",
                  f"# measured: max |fp32 - fp64| {g['max_abs']:.3g}, rel L2 {g['max_rel_l2']:.3g}, "
                  f"max |ref| {g['max_ref']:.3g} over {g['n']} tensors", ""]
    return "\n".join(lines)


def calibrate_command(args) -> int:
    from .project import default_bundles
    from .harness import ModelSpec

    model = ModelSpec.from_args(args).load()
    bundles = [Path(b) for b in (args.inputs or default_bundles())]
    t0 = time.perf_counter()
    floor = measure(model, bundles)
    text = rules_toml(floor, args.margin, args.floor, f"{model.model_id}, {len(bundles)} bundles, offline+streaming")
    from .outputs import write_output

    out = write_output(args.out, text)
    print(f"{'stage':<18}{'max|fp32-fp64|':>16}{'rel L2':>12}{'limit':>12}")
    for name in _order(floor):
        g = floor[name]
        print(f"{name:<18}{g['max_abs']:>16.3g}{g['max_rel_l2']:>12.3g}{args.margin * g['max_abs'] + args.floor:>12.3g}")
    print(f"wrote {out} ({len(floor)} stage rules) in {time.perf_counter() - t0:.1f} s")
    return 0
