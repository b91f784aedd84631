"""The streaming session's cost against one offline call of the same tokens (reference pipeline, CPU).

    python benchmarks/bench_session.py --preset tiny --repeats 7 --json out.json

Variants, interleaved in one process (order reversed on odd rounds, a matmul timed before each call, as
bench_reference does): ``offline`` (``Token2Wav.run``, one flow call + one HiFT call), ``session``
(``reference.session.run_session`` with upstream's defaults: every chunk re-runs the flow on all tokens so far
and HiFT on the whole cumulative mel), and ``session-li`` (the same with HiFT's length-invariant convs). The
speed-down is the median over rounds of the paired ratio session time / offline time, never a ratio of lone
absolute times. Also reported: the work the session does in units of the offline run (flow frames and HiFT
frames processed, summed over calls), which bounds the ratio when both stages scale linearly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_reference import Interleaver, Task, environment, med, paired_ratio
from reference.bundle import load_bundle
from reference.model import Token2Wav
from reference.session import SessionOptions

BUNDLE = Path(__file__).resolve().parent.parent / "fixtures" / "sessions" / "stream.safetensors"


def work(res, n_prompt: int) -> dict:
    """Frames the session's flow and HiFT calls process, over those of one offline call."""
    ratio = res.options.token_mel_ratio
    flow = sum(ratio * (n_prompt + c.n_tokens - (0 if c.finalize else res.options.lookahead)) for c in res.chunks)
    hift = sum(c.hift_frames for c in res.chunks)
    off_flow = ratio * (n_prompt + res.schedule.n_tokens)
    off_hift = ratio * res.schedule.n_tokens
    return {"calls": len(res.chunks), "flow_frames": flow, "flow_work_ratio": flow / off_flow,
            "hift_frames": hift, "hift_work_ratio": hift / off_hift}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--inputs", type=Path, default=BUNDLE)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    model = Token2Wav.from_preset(args.preset)
    li = Token2Wav.from_preset(args.preset)
    li.hift.set_length_invariant(True)
    b = load_bundle(args.inputs)
    res = model.run_session(b)
    tasks = [Task("e2e", "offline", lambda: model.run(b), args.repeats),
             Task("e2e", "session", lambda: model.run_session(b, options=SessionOptions()), args.repeats),
             Task("e2e", "session-li", lambda: li.run_session(b), args.repeats)]
    il = Interleaver(1024)
    t0 = time.perf_counter()
    il.run(tasks, log=log)
    by = {t.impl: t for t in tasks}
    out = {"preset": args.preset, "inputs": args.inputs.name, "repeats": args.repeats, "env": environment(args.threads),
           "schedule": res.schedule.hops(), "work": work(res, b["prompt_token"].shape[1]),
           "audio_s": res.audio.shape[1] / model.cfg.sample_rate, "wall_s": time.perf_counter() - t0,
           "median_s": {k: med([s for s, _, _ in t.samples]) for k, t in by.items()},
           "session_over_offline": paired_ratio(by["session"], by["offline"]),
           "session_li_over_offline": paired_ratio(by["session-li"], by["offline"]),
           "session_over_offline_mm_normalized": paired_ratio(by["session"], by["offline"], mm_normalized=True),
           "samples": {k: t.samples for k, t in by.items()}}
    print(render(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def render(r: dict) -> str:
    w = r["work"]
    return "\n".join([
        f"### session vs offline ({r['preset']}, {r['inputs']}: {r['audio_s']:.1f} s of audio, calls of "
        f"{r['schedule']} tokens; {r['repeats']} interleaved rounds, {r['env'].get('threads')} thread(s))", "",
        "| | median s | paired ratio to offline |", "|---|---|---|",
        f"| offline | {r['median_s']['offline']:.3f} | 1 |",
        f"| session | {r['median_s']['session']:.3f} | {r['session_over_offline']:.2f} |",
        f"| session, length-invariant HiFT | {r['median_s']['session-li']:.3f} | {r['session_li_over_offline']:.2f} |",
        "", f"Work per session in offline units: flow frames x{w['flow_work_ratio']:.2f} ({w['calls']} calls), "
            f"HiFT frames x{w['hift_work_ratio']:.2f}."])


if __name__ == "__main__":
    main()
