"""What a port kit costs and whether it holds: build time and size per kit, and the self-check (the reference run
as a port on every vector, then judged by ``parity kit check``) plus, optionally, legitimate re-computations
outside the ensemble (every GEMM/conv reduction split in two halves; 2 torch threads; SDPA attention).

    nice -n 10 python benchmarks/bench_kit.py --preset tiny --bundles short,medium,long --streaming stream \\
        --legit --json benchmarks/results/kit-tiny.json --markdown benchmarks/results/kit-tiny.md
    nice -n 10 python benchmarks/bench_kit.py --preset cosyvoice3-0.5b --bundles short \\
        --json benchmarks/results/kit-full.json --markdown benchmarks/results/kit-full.md

Times are wall-clock seconds of one process with one torch thread on a machine shared with other work (its
load is recorded before and after); they are upper bounds. Kits are written under --workdir (default a temporary
directory, deleted at the end unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parity.kit.build import BuildOptions, build_kit
from parity.kit.check import check_kit
from parity.kit.port import run_port
from reference.bundle import bundle_dims, load_bundle
from reference.model import Token2Wav

ROOT = Path(__file__).resolve().parent.parent


class SplitReductions(TorchFunctionMode):
    """A legitimate port outside the kit's ensemble: every linear, matmul and (ungrouped) conv1d sums its
    reduction in two halves (another summation order inside each op)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args[1].shape[1] >= 4:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            h = w.shape[1] // 2
            y = F.linear(x[..., :h], w[:, :h]) + F.linear(x[..., h:], w[:, h:])
            return y if b is None else y + b
        if func is F.conv1d and args[1].shape[1] >= 4:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            rest = list(args[3:])
            if (rest[3] if len(rest) > 3 else kwargs.get("groups", 1)) == 1:
                kw = {k: v for k, v in kwargs.items() if k != "bias"}
                h = w.shape[1] // 2
                y = F.conv1d(x[:, :h], w[:, :h], None, *rest, **kw) + F.conv1d(x[:, h:], w[:, h:], None, *rest, **kw)
                return y if b is None else y + b[None, :, None]
        if func is torch.matmul and args[0].shape[-1] >= 4 and args[0].dim() >= 2 and args[1].dim() >= 2:
            a, bb = args[0], args[1]
            h = a.shape[-1] // 2
            return torch.matmul(a[..., :h], bb[..., :h, :]) + torch.matmul(a[..., h:], bb[..., h:, :])
        return func(*args, **kwargs)


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def log(msg: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def self_check(model, kit: Path, work: Path, name: str, ctx=None) -> dict:
    t0 = time.perf_counter()
    if ctx is None:
        outs = run_port(model, kit)
    else:
        with ctx:
            outs = run_port(model, kit)
    t_run = time.perf_counter() - t0
    from safetensors.torch import save_file

    path = work / f"port-{name}.safetensors"
    save_file({k: v.contiguous() for k, v in outs.items()}, str(path))
    t1 = time.perf_counter()
    res = check_kit(kit, path)
    t_check = time.perf_counter() - t1
    path.unlink()
    worst = sorted(((v.ratio or 0.0) / v.k, v.id, v.ratio, v.k) for v in res.vectors if v.ratio is not None)[-3:]
    return {"port": name, "verdict": res.verdict, "counts": res.counts(), "run_seconds": round(t_run, 2),
            "check_seconds": round(t_check, 2),
            "closest_to_k": [{"vector": i, "ratio": r, "k": k} for _, i, r, k in reversed(worst)],
            "failing": res.failing()}


def one_kit(model, bundle: Path, work: Path, streaming: bool, legit: bool, keep_dir: Path | None) -> dict:
    inputs = load_bundle(bundle, **bundle_dims(model.cfg))
    out = (keep_dir or work) / f"kit-{bundle.stem}{'-streaming' if streaming else ''}"
    load0 = load_avg()
    cpu0 = time.process_time()
    rep = build_kit(model, inputs, out, BuildOptions(streaming=streaming, bundle_name=bundle.stem),
                    bundle_path=str(bundle), log=log)
    cpu = time.process_time() - cpu0
    man = json.loads((out / "manifest.json").read_text())
    by_comp: dict = {}
    for v in man["vectors"]:
        c = by_comp.setdefault(v["component"], {"vectors": 0, "bytes": 0})
        c["vectors"] += 1
        c["bytes"] += v["bytes"]
    largest = sorted(man["vectors"], key=lambda v: -v["bytes"])[:5]
    slowest = sorted(rep.per_unit.items(), key=lambda kv: -kv[1]["seconds"])[:5]
    ks = [v["k"] for v in man["vectors"]]
    row = {"bundle": bundle.stem, "streaming": streaming, "mode": {k: v for k, v in man["mode"].items()
                                                                   if k != "session"},
           "vectors": rep.vectors, "bytes": rep.bytes, "manifest_bytes": (out / "manifest.json").stat().st_size,
           "seconds": round(rep.seconds, 1), "cpu_seconds": round(cpu, 1), "capture_seconds": round(rep.capture_seconds, 2),
           "tolerance_seconds": round(rep.floor_seconds, 1), "write_seconds": round(rep.write_seconds, 2),
           "by_component": by_comp, "largest": [{"id": v["id"], "bytes": v["bytes"]} for v in largest],
           "slowest": [{"id": i, "seconds": round(d["seconds"], 1)} for i, d in slowest],
           "k": {"min": min(ks), "median": sorted(ks)[len(ks) // 2], "max": max(ks)},
           "reproduces_run_bitwise": sum(v["reproduces_run"].get("bitwise") is True for v in man["vectors"]),
           "reproduces_run_exact_op": sum(v["reproduces_run"].get("bitwise") is None for v in man["vectors"]),
           "load_before": load0, "load_after": load_avg()}
    checks = [self_check(model, out, work, "reference")]
    if legit:
        torch.set_num_threads(2)
        checks.append(self_check(model, out, work, "reference, 2 threads"))
        torch.set_num_threads(1)
        est = model.flow.decoder.estimator
        est.set_attention("sdpa")
        checks.append(self_check(model, out, work, "reference, SDPA attention"))
        est.set_attention("explicit")
        checks.append(self_check(model, out, work, "split reductions", SplitReductions()))
    row["checks"] = checks
    if keep_dir is None:
        shutil.rmtree(out, ignore_errors=True)
    return row


def markdown(res: dict) -> str:
    lines = [f"# Port kits: {res['preset']}", "",
             f"torch {res['torch']}, {res['machine']}, {res['threads']} torch thread(s), shared machine (load "
             f"average before/after each kit in the JSON); recipe: the floor's (8 + 4 seeds per Monte-Carlo "
             f"family, 2 threads, SDPA math/default, fp64).", "",
             "| kit | vectors | size | manifest | build s (CPU s) | capture s | tolerances s | files s | k min/median/max "
             "| self-check |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["kits"]:
        name = r["bundle"] + (f" streaming (call {r['mode'].get('chunk')})" if r["streaming"] else " offline")
        chk = "; ".join(f"{c['port']}: {c['verdict']} {c['counts']}" for c in r["checks"])
        lines.append(f"| {name} | {r['vectors']} | {r['bytes'] / 2**20:.1f} MiB | {r['manifest_bytes'] / 1024:.0f} KiB "
                     f"| {r['seconds']} ({r.get('cpu_seconds', '-')}) | {r['capture_seconds']} | {r['tolerance_seconds']} | {r['write_seconds']} | "
                     f"{r['k']['min']:g} / {r['k']['median']:g} / {r['k']['max']:g} | {chk} |")
    for r in res["kits"]:
        lines += ["", f"## {r['bundle']}{' streaming' if r['streaming'] else ''}", "",
                  "by component: " + ", ".join(f"{c} {d['vectors']} vectors {d['bytes'] / 2**20:.1f} MiB"
                                                for c, d in r["by_component"].items()),
                  "largest vectors: " + ", ".join(f"{v['id']} {v['bytes'] / 2**20:.2f} MiB" for v in r["largest"]),
                  "slowest tolerances: " + ", ".join(f"{v['id']} {v['seconds']} s" for v in r["slowest"])]
        for c in r["checks"]:
            lines.append(f"- {c['port']}: {c['verdict']}, run {c['run_seconds']} s, check {c['check_seconds']} s; "
                         "closest to k: " + ", ".join(f"{x['vector']} {x['ratio']:.3g}x (k {x['k']:g})"
                                                      for x in c["closest_to_k"])
                         + (f"; failing: {', '.join(c['failing'])}" if c["failing"] else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--bundles", default="short", help="fixture bundles (offline kits), comma-separated")
    p.add_argument("--streaming", default="", help="bundles for streaming kits (fixtures/bundles or fixtures/sessions)")
    p.add_argument("--legit", action="store_true", help="also check legitimate re-computations outside the ensemble")
    p.add_argument("--workdir")
    p.add_argument("--keep", help="keep the kits in this directory")
    p.add_argument("--json")
    p.add_argument("--markdown")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = Token2Wav.from_preset(a.preset)
    log(f"model {a.preset} built in {time.perf_counter() - t0:.1f} s")
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="bench-kit-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = Path(a.keep) if a.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)

    def path(name: str) -> Path:
        for d in ("bundles", "sessions"):
            f = ROOT / "fixtures" / d / f"{name}.safetensors"
            if f.exists():
                return f
        raise SystemExit(f"no fixture bundle {name}")

    res = {"preset": a.preset, "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "threads": 1, "kits": []}
    jobs = [(b, False) for b in a.bundles.split(",") if b] + [(b, True) for b in a.streaming.split(",") if b]
    for b, streaming in jobs:
        row = one_kit(model, path(b), work, streaming, a.legit, keep)
        res["kits"].append(row)
        print(f"{b}{' streaming' if streaming else ''}: {row['vectors']} vectors, {row['bytes'] / 2**20:.1f} MiB, "
              f"{row['seconds']} s; " + "; ".join(f"{c['port']}: {c['verdict']}" for c in row["checks"]), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(markdown(res))
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
