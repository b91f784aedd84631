#!/usr/bin/env python
"""Benchmarks of the reference token2wav pipeline (issues 2 and 3), CPU, fp32 eager.

Everything is measured in ONE process with ``torch.set_num_threads(2)`` (``--threads``) and INTERLEAVED:
the tasks run round-robin (the order reversed every other round), and before every timed call a large
fp32 ``torch.mm`` is timed as well, so the machine's matmul rate is sampled all through the run. On a
machine whose speed drifts (shared 2-core VMs: 2x and more within minutes) only medians and ratios taken
this way mean anything; every ratio below is the median of per-round paired ratios (both sides measured
in the same round, seconds apart), next to the plain ratio of medians.

Measured:

a. ``mm``: GFLOP/s of ``torch.mm`` on N x N x N fp32 (N = 2048; 512 with ``--quick``), 2 N^3 FLOP.
b. ``dit_fwd``: one forward of the reference DiT (the CFM estimator) on a batch of 2 (the CFG batch) for
   25 prompt + 50 target tokens (T = 150 mel frames), seeded weights of the preset; analytic FLOPs
   (:func:`dit_forward_flops`), achieved GFLOP/s and its ratio to the matmul rate (target >= 60 %).
c. ``flow``: ``CausalMaskedDiffWithDiT.inference`` (10 Euler/CFG steps, offline), same tokens, tiny and
   full size (``--quick``: tiny only).
d. with ``--upstream PATH`` (a fetched upstream CosyVoice tree, outside this repository): upstream's own
   eager modules (``DiT``, ``CausalMaskedDiffWithDiT`` + ``CausalConditionalCFM``, ``CausalHiFTGenerator``)
   with the SAME weights (our seeded state dicts, loaded strictly) and the same inputs, interleaved with
   ours; ratio ours/upstream (target: <= 1, ours no slower). Upstream needs ``x_transformers`` (2.11.24,
   upstream's pin) and ``einops`` importable; ``torchaudio``, ``omegaconf``, ``matcha``, ``onnxruntime`` and
   the LLM side are replaced by stubs (nothing of them runs in token2wav). Without ``--upstream`` those
   rows are skipped and the output says so.
e. ``hift``: the vocoder on a seeded mel of 5 s (1 s with ``--quick``), reported per second of audio;
   ``e2e``: ``Token2Wav.run`` (flow + HiFT, offline) on the 25 + 50 tokens; ``e2e_10s``: the same on
   25 + 250 tokens (10 s of audio); ``noise_10s``: ``SharedNoise.from_config`` (released sizes) +
   ``sine_noise(240000)`` (what a 10 s run needs), ``noise_full``: the same + the whole 7.2M x 9 sine buffer
   (what upstream's ``SineGen2`` draws at construction); target: noise_10s < 5 % of e2e_10s.
   Peak memory: the peak RSS (``VmHWM`` of /proc/self/status; ``resource.getrusage`` ``ru_maxrss`` where
   there is no /proc, see :func:`peak_rss_kib`) of a FRESH child process per pipeline that imports, builds
   the model and runs one e2e on the 25 + 50 tokens. tracemalloc is not used: it cannot see torch's tensor
   allocator.

Usage::

    python benchmarks/bench_reference.py --quick                       # CI-sized, tiny preset, seconds
    python benchmarks/bench_reference.py --json out.json               # full size, ours only
    PYTHONPATH=. /path/to/venv-with-x_transformers/bin/python benchmarks/bench_reference.py \\
        --upstream /tmp/upstream_cosyvoice --json out.json             # full size, with upstream

Prints a Markdown table and (``--json``) writes every sample.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reference.config import DiTConfig, FlowConfig, ModelConfig, preset  # noqa: E402
from reference.hift import hift_state_dict_upstream  # noqa: E402
from reference.model import Token2Wav  # noqa: E402
from reference.noise import HIFT_NOISE_SAMPLES, SharedNoise  # noqa: E402

FULL = "cosyvoice3-0.5b"
TINY = "tiny"
N_PROMPT, N_TARGET, N_TARGET_10S = 25, 50, 250
SR = 24000


# ---------------------------------------------------------------------------------------------
# analytic FLOP counts (a multiply-add = 2 FLOP)

def dit_forward_flops(cfg: DiTConfig, batch: int, frames: int) -> dict[str, int]:
    """FLOPs of one DiT forward on ``batch`` sequences of ``frames`` mel frames, by component.

    Counted (2 FLOP per multiply-add, matrix products only):

    - ``time_mlp``: Linear(256 -> dim) and Linear(dim -> dim), once per sequence;
    - ``input_proj``: Linear(mel + cond + mu + spk = 320 -> dim) per frame;
    - ``conv_pos``: the two causal grouped convs, dim -> dim, kernel 31, 16 groups: per frame and output
      channel (dim / groups) * 31 multiply-adds, over the padded input (every output is a full window);
    - ``adaln``: each block's AdaLN-Zero Linear(dim -> 6 dim) and the final Linear(dim -> 2 dim), per sequence;
    - ``qkvo``: to_q, to_k, to_v (dim -> heads*dim_head) and to_out (heads*dim_head -> dim) per frame;
    - ``attn``: q k^T and softmax(.) v, each 2 * heads * T * T * dim_head per sequence, full T x T (the
      streaming chunk mask is applied before the softmax and saves no work);
    - ``ffn``: Linear(dim -> ff_mult dim) and Linear(ff_mult dim -> dim) per frame;
    - ``proj_out``: Linear(dim -> 80) per frame.

    Not counted (all O(B T dim), together well under 1 % here): biases, LayerNorm, AdaLN modulation,
    GELU/SiLU/Mish, RoPE, the softmax itself, the mask, residual adds, gates, concatenations, transposes.
    """
    B, T, D = batch, frames, cfg.dim
    inner = cfg.heads * cfg.dim_head
    groups, k = 16, 31
    n_in = cfg.mel_dim * 2 + cfg.mu_dim + cfg.spk_dim
    c = {
        "time_mlp": 2 * B * (256 * D + D * D),
        "input_proj": 2 * B * T * n_in * D,
        "conv_pos": 2 * (2 * B * T * D * (D // groups) * k),
        "adaln": 2 * B * D * 6 * D * cfg.depth + 2 * B * D * 2 * D,
        "qkvo": cfg.depth * (3 * 2 * B * T * D * inner + 2 * B * T * inner * D),
        "attn": cfg.depth * 2 * (2 * B * cfg.heads * T * T * cfg.dim_head),
        "ffn": cfg.depth * 2 * (2 * B * T * D * cfg.ff_mult * D),
        "proj_out": 2 * B * T * D * cfg.mel_dim,
    }
    c["total"] = sum(c.values())
    return c


def flow_inference_flops(cfg: FlowConfig, n_prompt: int, n_target: int, n_steps: int = 10) -> int:
    """FLOPs of ``flow.inference`` (finalize): the front end (speaker Linear, pre-lookahead convs) plus
    ``n_steps`` DiT forwards on the CFG batch of 2 over T = 2 (P + N) frames (counted as in
    :func:`dit_forward_flops`)."""
    n = n_prompt + n_target
    T = cfg.token_mel_ratio * n
    pla = cfg.pre_lookahead_layer
    front = 2 * cfg.spk_embed_dim * cfg.output_size
    front += 2 * n * pla.in_channels * pla.channels * (pla.pre_lookahead_len + 1)  # conv1
    front += 2 * n * pla.channels * pla.in_channels * 3  # conv2
    return front + n_steps * dit_forward_flops(cfg.decoder.estimator, 2, T)["total"]


# ---------------------------------------------------------------------------------------------
# inputs

def make_inputs(n_prompt: int, n_target: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded bundle-like inputs: random token ids, a log-mel-like prompt_feat, an x-vector-like embedding."""
    g = torch.Generator().manual_seed(seed)
    return {"token": torch.randint(0, 6561, (1, n_target), generator=g),
            "prompt_token": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "prompt_feat": torch.rand(1, 2 * n_prompt, 80, generator=g) * 10 - 10,
            "embedding": torch.randn(1, 192, generator=g) * 12}


def make_mel(frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 80, frames, generator=g) * 13 - 11


# ---------------------------------------------------------------------------------------------
# upstream (optional)

class AttrDict(dict):
    """Stands in for omegaconf.DictConfig (upstream reads cfm_params by attribute)."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as exc:
            raise AttributeError(k) from exc


def _fake_module(name: str, **attrs) -> None:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m


def import_upstream(path: str | Path):
    """Make upstream's ``cosyvoice`` package importable from ``path`` (stubbing what token2wav never runs)
    and return its classes. Raises RuntimeError with what to install when x_transformers/einops are missing."""
    path = Path(path).resolve()
    if not (path / "cosyvoice" / "flow" / "DiT" / "dit.py").exists():
        raise RuntimeError(f"--upstream {path}: no cosyvoice/flow/DiT/dit.py there (give the directory that holds "
                           "upstream's 'cosyvoice' package)")
    if ROOT in path.parents or path == ROOT:
        raise RuntimeError(f"--upstream {path}: keep the upstream copy outside this repository")
    missing = [m for m in ("x_transformers", "einops") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"--upstream needs {', '.join(missing)} importable (upstream pins x-transformers==2.11.24); "
                           "install them into a separate virtual environment and run this script with its python")
    sys.path.insert(0, str(path))
    if importlib.util.find_spec("torchaudio") is None:
        ta = types.ModuleType("torchaudio")
        sys.modules["torchaudio"] = ta
        for sub in ("compliance", "compliance.kaldi", "transforms"):
            _fake_module(f"torchaudio.{sub}")
    if importlib.util.find_spec("omegaconf") is None:
        _fake_module("omegaconf", DictConfig=AttrDict)

    class BASECFM(torch.nn.Module):
        """matcha.models.components.flow_matching.BASECFM: attributes only, no parameters, no randoms."""

        def __init__(self, n_feats, cfm_params, n_spks=1, spk_emb_dim=128):
            super().__init__()
            self.n_feats, self.n_spks, self.spk_emb_dim = n_feats, n_spks, spk_emb_dim
            self.solver = cfm_params.solver
            self.sigma_min = getattr(cfm_params, "sigma_min", 1e-4)
            self.estimator = None

    for name in ("matcha", "matcha.models", "matcha.models.components"):
        _fake_module(name)
    _fake_module("matcha.models.components.flow_matching", BASECFM=BASECFM)
    # the ONNX speech tokenizer and the LLM/registry imports are not part of token2wav
    _fake_module("cosyvoice.utils.onnx", SpeechTokenExtractor=None, online_feature=False, onnx_path="")
    _fake_module("cosyvoice.utils.class_utils", COSYVOICE_EMB_CLASSES={}, COSYVOICE_SUBSAMPLE_CLASSES={},
                 COSYVOICE_ATTENTION_CLASSES={}, COSYVOICE_ACTIVATION_CLASSES={})
    from cosyvoice.flow.DiT.dit import DiT
    from cosyvoice.flow.flow import CausalMaskedDiffWithDiT
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.hifigan.f0_predictor import CausalConvRNNF0Predictor
    from cosyvoice.hifigan.generator import CausalHiFTGenerator
    from cosyvoice.transformer.upsample_encoder import PreLookaheadLayer

    return types.SimpleNamespace(DiT=DiT, CausalMaskedDiffWithDiT=CausalMaskedDiffWithDiT,
                                 CausalConditionalCFM=CausalConditionalCFM, PreLookaheadLayer=PreLookaheadLayer,
                                 CausalConvRNNF0Predictor=CausalConvRNNF0Predictor,
                                 CausalHiFTGenerator=CausalHiFTGenerator)


def build_upstream(up, cfg: ModelConfig):
    """Upstream's flow and HiFT for ``cfg``, built in HyperPyYAML's order (pre-lookahead, DiT, CFM [seeds 0,
    draws rand_noise], flow, F0 predictor, generator [draws the sine noise]), weights left at their init."""
    f, e, h = cfg.flow, cfg.flow.decoder.estimator, cfg.hift
    p = f.decoder.cfm_params
    pla = up.PreLookaheadLayer(in_channels=f.pre_lookahead_layer.in_channels, channels=f.pre_lookahead_layer.channels,
                               pre_lookahead_len=f.pre_lookahead_layer.pre_lookahead_len)
    est = up.DiT(dim=e.dim, depth=e.depth, heads=e.heads, dim_head=e.dim_head, ff_mult=e.ff_mult, mel_dim=e.mel_dim,
                 mu_dim=e.mu_dim, spk_dim=e.spk_dim, out_channels=e.out_channels,
                 static_chunk_size=e.static_chunk_size, num_decoding_left_chunks=e.num_decoding_left_chunks)
    cfm = AttrDict(sigma_min=p.sigma_min, solver=p.solver, t_scheduler=p.t_scheduler,
                   training_cfg_rate=p.training_cfg_rate, inference_cfg_rate=p.inference_cfg_rate,
                   reg_loss_type=p.reg_loss_type)
    dec = up.CausalConditionalCFM(in_channels=f.decoder.in_channels, cfm_params=cfm, n_spks=f.decoder.n_spks,
                                  spk_emb_dim=f.decoder.spk_emb_dim, estimator=est)
    flow = up.CausalMaskedDiffWithDiT(input_size=f.input_size, output_size=f.output_size,
                                      spk_embed_dim=f.spk_embed_dim, output_type=f.output_type,
                                      vocab_size=f.vocab_size, input_frame_rate=f.input_frame_rate,
                                      only_mask_loss=f.only_mask_loss, token_mel_ratio=f.token_mel_ratio,
                                      pre_lookahead_len=f.pre_lookahead_len, pre_lookahead_layer=pla, decoder=dec)
    f0 = up.CausalConvRNNF0Predictor(num_class=h.f0_predictor.num_class, in_channels=h.f0_predictor.in_channels,
                                     cond_channels=h.f0_predictor.cond_channels)
    hift = up.CausalHiFTGenerator(
        in_channels=h.in_channels, base_channels=h.base_channels, nb_harmonics=h.nb_harmonics,
        sampling_rate=h.sampling_rate, nsf_alpha=h.nsf_alpha, nsf_sigma=h.nsf_sigma,
        nsf_voiced_threshold=h.nsf_voiced_threshold, upsample_rates=list(h.upsample_rates),
        upsample_kernel_sizes=list(h.upsample_kernel_sizes), istft_params=dict(h.istft_params),
        resblock_kernel_sizes=list(h.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in h.resblock_dilation_sizes],
        source_resblock_kernel_sizes=list(h.source_resblock_kernel_sizes),
        source_resblock_dilation_sizes=[list(d) for d in h.source_resblock_dilation_sizes],
        lrelu_slope=h.lrelu_slope, audio_limit=h.audio_limit, conv_pre_look_right=h.conv_pre_look_right,
        f0_predictor=f0)
    return flow.eval(), hift.eval()


def upstream_like(up, ours: Token2Wav) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Upstream modules holding exactly our weights (strict loads) and our noise."""
    flow, hift = build_upstream(up, ours.cfg)
    flow.load_state_dict(ours.flow.state_dict(), strict=True)
    hift.load_state_dict(hift_state_dict_upstream(ours.hift), strict=True)
    sg = hift.m_source.l_sin_gen
    n = SR * 10
    info = {"flow_noise_equal": torch.equal(flow.decoder.rand_noise, ours.noise.flow),
            "sine_noise_equal_first_10s": torch.equal(sg.sine_waves[:, :n], ours.noise.sine_noise(n))}
    if not info["sine_noise_equal_first_10s"]:
        # our noise follows the configuration, so this means a recipe bug (or a torch RNG change): say so in
        # the results, and give upstream our noise so the timings still compare the same work
        sg.sine_waves = ours.noise.sine_noise(HIFT_NOISE_SAMPLES).clone()
        sg.rand_ini = ours.noise.rand_ini.clone()
        info["sine_noise_replaced_by_ours"] = True
    return flow, hift, info


def upstream_flow_call(flow, x: dict) -> torch.Tensor:
    tok, ptok, feat = x["token"], x["prompt_token"], x["prompt_feat"]
    lens = [torch.tensor([n], dtype=torch.int32) for n in (tok.shape[1], ptok.shape[1], feat.shape[1])]
    mel, _ = flow.inference(tok, lens[0], ptok, lens[1], feat, lens[2], x["embedding"], streaming=False,
                            finalize=True)
    return mel


# ---------------------------------------------------------------------------------------------
# interleaved scheduler

@dataclass
class Task:
    name: str
    impl: str  # "ours" | "upstream" | "-"
    fn: Callable[[], object]
    repeats: int
    flops: float | None = None  # per call
    audio_s: float | None = None  # seconds of audio per call
    samples: list = field(default_factory=list)  # (seconds, adjacent mm GFLOP/s, round)


class Interleaver:
    def __init__(self, mm_n: int):
        self.mm_n = mm_n
        g = torch.Generator().manual_seed(7)
        self.a = torch.randn(mm_n, mm_n, generator=g)
        self.b = torch.randn(mm_n, mm_n, generator=g)
        self.mm_rates: list[float] = []

    def mm_rate(self) -> float:
        t0 = time.perf_counter()
        torch.mm(self.a, self.b)
        dt = time.perf_counter() - t0
        rate = 2 * self.mm_n ** 3 / dt / 1e9
        self.mm_rates.append(rate)
        return rate

    def run(self, tasks: list[Task], log=print) -> None:
        with torch.inference_mode():
            for _ in range(3):
                torch.mm(self.a, self.b)  # warm-up of the mm itself
            for t in tasks:  # one untimed call each: lazy noise draws, oneDNN primitive caches
                t0 = time.perf_counter()
                t.fn()
                log(f"  warm-up {t.name} [{t.impl}]: {time.perf_counter() - t0:.2f} s")
            rounds = max(t.repeats for t in tasks)
            for r in range(rounds):
                order = tasks if r % 2 == 0 else tasks[::-1]
                for t in order:
                    if len(t.samples) >= t.repeats:
                        continue
                    rate = self.mm_rate()
                    gc.collect()
                    t0 = time.perf_counter()
                    t.fn()
                    t.samples.append((time.perf_counter() - t0, rate, r))
                log(f"  round {r + 1}/{rounds} done; mm median so far {statistics.median(self.mm_rates):.1f} GFLOP/s")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(a: Task, b: Task, mm_normalized: bool = False) -> float | None:
    """Median over rounds of time(a) / time(b), using only rounds where both were measured.

    ``mm_normalized``: each time is first multiplied by the mm rate measured just before it (work in units
    of "mm-seconds"), which also cancels a slowdown that hits one side of a pair but not the other."""
    ra = {r: s * (m if mm_normalized else 1) for s, m, r in a.samples}
    rb = {r: s * (m if mm_normalized else 1) for s, m, r in b.samples}
    common = sorted(set(ra) & set(rb))
    return statistics.median(ra[r] / rb[r] for r in common) if common else None


# ---------------------------------------------------------------------------------------------
# peak memory in a fresh child process

def peak_rss_kib() -> int:
    """Peak resident set of this process in KiB: ``VmHWM`` of /proc/self/status (Linux), else ``ru_maxrss``.

    ``VmHWM`` belongs to the process's current address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not
    used where VmHWM exists because Linux carries the pre-exec high-water mark over into it: a child
    spawned from a large parent reports the parent's size from its first line."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_memory(kind: str, preset_name: str, upstream: str | None) -> dict:
    """Run in a child: build one pipeline, run one e2e (25 + 50 tokens), report the peak RSS (KiB)."""
    rss = peak_rss_kib
    torch.set_num_threads(2)
    out = {"kind": kind, "preset": preset_name, "measure": "VmHWM" if Path("/proc/self/status").exists()
           else "ru_maxrss", "maxrss_kib_after_import": rss()}
    x = make_inputs(N_PROMPT, N_TARGET)
    if kind == "ours":
        model = Token2Wav.from_preset(preset_name)
        out["maxrss_kib_after_build"] = rss()
        model.run(x)
    else:
        up = import_upstream(upstream)
        cfg = preset(preset_name)
        from reference.init import FLOW_RULES, seeded_init_
        from reference.hift import build_hift

        flow, hift = build_upstream(up, cfg)
        seeded_init_(flow, cfg.seed, FLOW_RULES)  # our seeded weights, by key, without building our flow
        hift.load_state_dict(hift_state_dict_upstream(build_hift(cfg.hift, cfg.seed)), strict=True)
        gc.collect()
        out["maxrss_kib_after_build"] = rss()
        with torch.inference_mode():
            hift.inference(upstream_flow_call(flow, x), finalize=True)
    out["maxrss_kib_after_run"] = rss()
    return out


def measure_memory(kind: str, preset_name: str, upstream: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-memory", kind, "--_child-preset", preset_name]
    if upstream:
        cmd += ["--upstream", upstream]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        return {"kind": kind, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# main

def environment(threads: int) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else ""
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu, "cpu_capability": flags,
            "os_cpus": os.cpu_count(), "threads": threads, "mkldnn": torch.backends.mkldnn.is_available(),
            "loadavg_1_5_15min": load}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", metavar="PATH", help="upstream CosyVoice tree (outside this repo) to compare with")
    ap.add_argument("--quick", action="store_true", help="CI-sized run: tiny preset only, small mm, 2 repeats")
    ap.add_argument("--json", metavar="OUT", help="write all samples and results as JSON")
    ap.add_argument("--repeats", type=int, help="timed calls per task (default 7 full / 2 quick; 10 s e2e: fewer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--_child-memory", dest="child_memory", help=argparse.SUPPRESS)
    ap.add_argument("--_child-preset", dest="child_preset", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.child_preset, args.upstream)))
        return {}

    big = TINY if args.quick else FULL
    reps = args.repeats or (2 if args.quick else 7)
    reps_flow = max(1, min(reps, 5)) if not args.quick else reps
    reps_10s = max(1, min(reps, 3)) if not args.quick else reps
    mm_n = 512 if args.quick else 2048
    hift_s = 1.0 if args.quick else 5.0
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    up = None
    upstream_note = "not run (no --upstream given): upstream rows and ratios skipped"
    if args.upstream:
        try:
            up = import_upstream(args.upstream)
        except RuntimeError as exc:
            ap.error(str(exc))
        upstream_note = f"upstream tree {Path(args.upstream).resolve()}"

    log(f"building models ({'quick: tiny only' if args.quick else 'tiny + full size'}) ...")
    models = {name: Token2Wav.from_preset(name) for name in dict.fromkeys([TINY, big])}
    x75 = make_inputs(N_PROMPT, N_TARGET)
    x275 = make_inputs(N_PROMPT, N_TARGET_10S)
    T75 = 2 * (N_PROMPT + N_TARGET)
    mel = make_mel(int(hift_s * 50))
    ups, up_info = {}, {}
    if up is not None:
        for name, m in models.items():
            ups[name] = upstream_like(up, m)
            up_info[name] = ups[name][2]

    tasks: list[Task] = []
    check: dict[str, float] = {}  # max |ours - upstream| of each compared output (sanity)

    # b. DiT forward, batch 2 (the CFG batch), T = 150
    M = models[big]
    est = M.flow.decoder.estimator
    g = torch.Generator().manual_seed(3)
    dit_in = (torch.randn(2, 80, T75, generator=g), torch.ones(2, 1, T75), torch.randn(2, 80, T75, generator=g),
              torch.rand(2, generator=g), torch.randn(2, 80, generator=g), torch.randn(2, 80, T75, generator=g))
    dit_flops = dit_forward_flops(M.cfg.flow.decoder.estimator, 2, T75)
    tasks.append(Task(f"dit_fwd[{big}]", "ours", lambda: est(*dit_in), reps, flops=dit_flops["total"]))
    if up is not None:
        uest = ups[big][0].decoder.estimator
        tasks.append(Task(f"dit_fwd[{big}]", "upstream", lambda: uest(*dit_in), reps, flops=dit_flops["total"]))
        with torch.inference_mode():
            check[f"dit_fwd[{big}]"] = (est(*dit_in) - uest(*dit_in)).abs().max().item()

    # c./d. flow inference, tiny and full
    for name, m in models.items():
        fl = flow_inference_flops(m.cfg.flow, N_PROMPT, N_TARGET)
        r = reps if name == TINY else reps_flow

        def ours_flow(m=m):
            return m.flow.inference(x75["token"], x75["prompt_token"], x75["prompt_feat"], x75["embedding"], m.noise)

        tasks.append(Task(f"flow[{name}]", "ours", ours_flow, r, flops=fl))
        if up is not None:
            uflow = ups[name][0]
            tasks.append(Task(f"flow[{name}]", "upstream", lambda uflow=uflow: upstream_flow_call(uflow, x75), r,
                              flops=fl))
            with torch.inference_mode():
                check[f"flow[{name}]"] = (ours_flow() - upstream_flow_call(uflow, x75)).abs().max().item()

    # e. HiFT per second of audio, e2e
    H = M.hift
    tasks.append(Task(f"hift[{big}]", "ours", lambda: H.inference(mel, M.noise), reps_flow, audio_s=hift_s))
    if up is not None:
        uh = ups[big][1]
        tasks.append(Task(f"hift[{big}]", "upstream", lambda: uh.inference(mel, finalize=True), reps_flow,
                          audio_s=hift_s))
        with torch.inference_mode():
            check[f"hift[{big}]"] = (H.inference(mel, M.noise) - uh.inference(mel, finalize=True)[0]).abs().max().item()
    tasks.append(Task(f"e2e[{big}]", "ours", lambda: M.run(x75), reps_flow, audio_s=N_TARGET / 25))
    if up is not None:
        uf, uh = ups[big][0], ups[big][1]

        def up_e2e():
            return uh.inference(upstream_flow_call(uf, x75), finalize=True)[0]

        tasks.append(Task(f"e2e[{big}]", "upstream", up_e2e, reps_flow, audio_s=N_TARGET / 25))
        with torch.inference_mode():
            check[f"e2e[{big}]"] = (M.run(x75) - up_e2e()).abs().max().item()
    tasks.append(Task(f"e2e_10s[{big}]", "ours", lambda: M.run(x275), reps_10s, audio_s=N_TARGET_10S / 25))
    n10 = SR * 10
    released = preset(FULL)  # the sizes only change which randoms are skipped, not the cost
    tasks.append(Task("noise_10s", "ours", lambda: SharedNoise.from_config(released).sine_noise(n10), reps))
    tasks.append(Task("noise_full", "ours", lambda: SharedNoise.from_config(released).sine_noise(HIFT_NOISE_SAMPLES),
                      reps))

    env_start = environment(args.threads)
    log(f"running {len(tasks)} tasks interleaved with a {mm_n}^3 mm, {reps} rounds ...")
    il = Interleaver(mm_n)
    t_start = time.time()
    il.run(tasks, log)
    wall = time.time() - t_start

    mem = {}
    if not args.no_memory:
        log("peak memory: fresh child processes ...")
        mem["ours"] = measure_memory("ours", big, None)
        if up is not None:
            mem["upstream"] = measure_memory("upstream", big, args.upstream)

    # ---- results
    mm_med = med(il.mm_rates)
    by = {(t.name, t.impl): t for t in tasks}
    rows = []
    res = {"mm": {"n": mm_n, "gflops_median": mm_med, "gflops_min": min(il.mm_rates), "gflops_max": max(il.mm_rates),
                  "samples": il.mm_rates}}
    for t in tasks:
        times = [s for s, _, _ in t.samples]
        d = {"name": t.name, "impl": t.impl, "median_s": med(times), "min_s": min(times), "max_s": max(times),
             "n": len(times), "samples_s": times, "adjacent_mm_gflops": [r for _, r, _ in t.samples]}
        if t.flops:
            d["gflop"] = t.flops / 1e9
            d["gflops"] = t.flops / d["median_s"] / 1e9
            d["pct_of_mm"] = 100 * d["gflops"] / mm_med
            d["pct_of_adjacent_mm_paired"] = 100 * med([t.flops / s / 1e9 / r for s, r, _ in t.samples])
        if t.audio_s:
            d["audio_s"] = t.audio_s
            d["s_per_audio_s"] = d["median_s"] / t.audio_s
            d["rtf_x"] = t.audio_s / d["median_s"]
        other = by.get((t.name, "upstream")) if t.impl == "ours" else None
        if other is not None:
            d["ratio_ours_over_upstream_paired"] = paired_ratio(t, other)
            d["ratio_ours_over_upstream_paired_mm_normalized"] = paired_ratio(t, other, mm_normalized=True)
            d["ratio_of_medians"] = d["median_s"] / med([s for s, _, _ in other.samples])
            d["max_abs_diff_vs_upstream"] = check.get(t.name)
        rows.append(d)
    res["tasks"] = rows
    dit = next(r for r in rows if r["name"].startswith("dit_fwd") and r["impl"] == "ours")
    noise10 = next(r for r in rows if r["name"] == "noise_10s")
    e2e10 = next(r for r in rows if r["name"].startswith("e2e_10s"))
    targets = {
        "dit_fwd >= 60% of mm rate": (dit["pct_of_mm"] >= 60, f"{dit['pct_of_mm']:.0f} %"),
        "noise_10s < 5% of e2e_10s": (noise10["median_s"] < 0.05 * e2e10["median_s"],
                                      f"{100 * noise10['median_s'] / e2e10['median_s']:.2f} %"),
    }
    for r in rows:
        if r.get("ratio_ours_over_upstream_paired") is not None:
            q = r["ratio_ours_over_upstream_paired"]
            targets[f"{r['name']}: ours no slower than upstream"] = (q <= 1.0, f"ratio {q:.3f}")
    # the targets are stated for the full-size model; a --quick run (tiny model, small mm) only exercises the script
    res["targets"] = {k: {"met": None if args.quick else bool(v[0]), "value": v[1]} for k, v in targets.items()}
    res["dit_flops_breakdown"] = dit_flops
    res["memory"] = mem
    res["upstream"] = {"note": upstream_note, **({"checks": up_info} if up_info else {})}
    res["env"] = environment(args.threads)
    res["env"]["loadavg_at_start"] = env_start["loadavg_1_5_15min"]
    res["config"] = {"quick": args.quick, "repeats": reps, "repeats_full_size": reps_flow, "repeats_10s": reps_10s,
                     "tokens": {"prompt": N_PROMPT, "target": N_TARGET, "target_10s": N_TARGET_10S},
                     "frames": T75, "hift_audio_s": hift_s, "wall_s": wall}

    print(render_markdown(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def render_markdown(res: dict) -> str:
    mm = res["mm"]
    env = res["env"]
    L = [f"Machine: {env['cpu']} ({env['cpu_capability']}), {env['os_cpus']} CPUs, {env['threads']} threads, "
         f"torch {env['torch']}; load average (1/5/15 min) {' '.join(env.get('loadavg_at_start', []))} at the start, "
         f"{' '.join(env['loadavg_1_5_15min'])} at the end; wall {res['config']['wall_s']:.0f} s.", "",
         f"Upstream: {res['upstream']['note']}.", "",
         f"fp32 matmul {mm['n']}^3: median **{mm['gflops_median']:.1f} GFLOP/s** over {len(mm['samples'])} samples "
         f"interleaved with everything below (min {mm['gflops_min']:.1f}, max {mm['gflops_max']:.1f}).", "",
         "| task | impl | median | n | GFLOP/s | % of mm | per s of audio | ours/upstream (paired) | ratio of medians | max abs diff |",
         "|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and v == v else ""

    for r in res["tasks"]:
        L.append(f"| {r['name']} | {r['impl']} | {r['median_s']:.3f} s | {r['n']} | {f(r.get('gflops'), '.1f')} | "
                 f"{f(r.get('pct_of_mm'), '.0f')} | {f(r.get('s_per_audio_s'), '.3f')} | "
                 f"{f(r.get('ratio_ours_over_upstream_paired'), '.3f')} | {f(r.get('ratio_of_medians'), '.3f')} | "
                 f"{f(r.get('max_abs_diff_vs_upstream'), '.2e')} |")
    L += ["", "| target | met | value |", "|---|---|---|"]
    for k, v in res["targets"].items():
        met = "n/a (--quick: tiny model)" if v["met"] is None else ("yes" if v["met"] else "NO")
        L.append(f"| {k} | {met} | {v['value']} |")
    if res["memory"]:
        L += ["", "| peak RSS (fresh process, VmHWM) | after import | after build | after one e2e |",
              "|---|---|---|---|"]
        for k, m in res["memory"].items():
            if "error" in m:
                L.append(f"| {k} | error: {m['error']} | | |")
            else:
                L.append(f"| {k} ({m['preset']}) | {m['maxrss_kib_after_import'] / 1024:.0f} MiB | "
                         f"{m['maxrss_kib_after_build'] / 1024:.0f} MiB | {m['maxrss_kib_after_run'] / 1024:.0f} MiB |")
    return "\n".join(L)


if __name__ == "__main__":
    main()
