"""A catalogue of injectable regressions, each reproducing a bug seen in the field.

Every fault names the canonical stage where a correct harness must localise it (the first
divergence), so the harness can test itself. A fault acts through two mechanisms the candidate
pipeline consults:

* ``overrides``: values the candidate code reads at well-defined places (guidance rate, schedule,
  step count, noise, RoPE layout, mask construction, weight-norm dtype, sine phase, ...);
* ``hooks``: ``{point: fn(tensor, ctx, params) -> tensor}`` applied to the tensor at a named point
  (``mu``, ``block`` (ctx has ``step`` and ``block``), ``v1``, ``f0``, ``source``, ``audio_preclamp``...).

Users register their own with :func:`register` (for example from a module listed under
``[tool.parity] plugins`` in pyproject.toml).

A fault may take parameters: ``nan-at-block:step=2,block=1`` (``params`` holds their defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from reference.errors import InputError

Hook = Callable[[torch.Tensor, dict, dict], torch.Tensor]  # (tensor, ctx, params) -> tensor


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    expected_stage: str  # canonical stage of the first divergence ("{step}"/"{block}" filled from params)
    expected_code: str | None = None  # the finding code the diagnosis should give
    evidence: str = ""  # where it was seen
    overrides: dict = field(default_factory=dict)
    hooks: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # defaults for "name:key=val"
    expected_stage_blocks: str | None = None  # the stage when per-block outputs are captured
    mode: str = "call"  # "call": acts on a single token2wav call; "session": acts on the streaming session loop
    # session faults: the chunk-boundary glitch findings (parity.judge.stream, "glitch_<kind>") the fault gets
    # on the shipped session bundle (fixtures/sessions/stream), measured with the limits of
    # parity.measure.streaming_metrics; empty: it does not click there (other findings localise it)
    glitches: tuple = ()

    def stage(self, params: dict | None = None, blocks_captured: bool = False, last_chunk: int | None = None) -> str:
        """The expected stage; session faults may name ``chunk{last}`` (the final call's index)."""
        p = dict(self.params)
        p.update(params or {})
        p.setdefault("last", "last" if last_chunk is None else last_chunk)
        s = self.expected_stage_blocks if (blocks_captured and self.expected_stage_blocks) else self.expected_stage
        return s.format(**p)


_REGISTRY: dict[str, Fault] = {}


def register(fault: Fault, replace: bool = False) -> Fault:
    if fault.name in _REGISTRY and not replace:
        raise ValueError(f"fault {fault.name!r} is already registered")
    _REGISTRY[fault.name] = fault
    return fault


def unregister(name: str) -> None:
    """Remove a registered fault (a test's or a user's own; unknown names are ignored)."""
    _REGISTRY.pop(name, None)


def catalogue(mode: str = "call") -> dict[str, Fault]:
    """Registered faults of one mode: ``"call"`` (single token2wav calls; the default, what the single-call
    suite runs), ``"session"`` (the streaming session loop), or ``"all"``."""
    return {k: f for k, f in _REGISTRY.items() if mode == "all" or f.mode == mode}


def parse_fault(spec: str) -> tuple[Fault, dict]:
    name, _, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise InputError(f"unknown fault {name!r}; known faults: {', '.join(sorted(_REGISTRY))}")
    f = _REGISTRY[name]
    params = dict(f.params)
    for kv in filter(None, arg.split(",")):
        k, eq, v = kv.partition("=")
        if not eq or k not in f.params:
            raise InputError(f"fault {name!r}: bad parameter {kv!r} (known: {', '.join(f.params) or 'none'})")
        params[k] = type(f.params[k])(v)
    return f, params


@dataclass
class ActiveFaults:
    """The faults of one candidate run, with their parameters, queried by the pipeline."""

    specs: tuple[str, ...] = ()
    items: list = field(default_factory=list)

    @classmethod
    def from_specs(cls, specs) -> "ActiveFaults":
        return cls(tuple(specs), [parse_fault(s) for s in specs])

    def override(self, key: str, default=None):
        for f, params in self.items:
            if key in f.overrides:
                v = f.overrides[key]
                return v(params) if callable(v) else v
        return default

    def has(self, key: str) -> bool:
        return any(key in f.overrides for f, _ in self.items)

    def hook(self, point: str, tensor: torch.Tensor, **ctx) -> torch.Tensor:
        for f, params in self.items:
            fn = f.hooks.get(point)
            if fn is not None:
                tensor = fn(tensor, ctx, params)
        return tensor

    def __bool__(self) -> bool:
        return bool(self.items)


# ---------------------------------------------------------------------------------------------
# built-in catalogue

def _nan_at_block(t: torch.Tensor, ctx: dict, params: dict) -> torch.Tensor:
    if ctx.get("step") == params["step"] and ctx.get("block") == params["block"]:
        t = t.clone()
        t[..., t.shape[-2] // 2, 0] = float("nan")  # one element of one frame goes NaN
    return t


def _shape_crash(t: torch.Tensor, ctx: dict, params: dict) -> torch.Tensor:
    # the field bug: noise_amp [1] times a [1, 1, L] mask done as a plain mul after a reshape went wrong
    wrong = torch.ones(*t.shape[:-2], t.shape[-2] + 1, t.shape[-1], dtype=t.dtype)
    return t * wrong  # raises: "The size of tensor a (L) must match the size of tensor b (L+1)"


for _f in [
    Fault("noise-unshared", "the candidate draws its own flow noise (seed 42 randn) instead of the shared rand_noise",
          "x0", "noise_not_shared", "fork: test_native used an unrelated seed-42 flow_noise",
          overrides={"noise_seed": 42}),
    Fault("cfg-rate", "wrong classifier-free guidance rate (0.5 instead of 0.7)", "step1.v_cfg", "cfg_combination_mismatch",
          "CFG=0 was tried as a hack in the fork", overrides={"cfg_rate": 0.5}),
    Fault("uncond-keeps-cond", "the unconditional CFG row keeps mu, spks and cond instead of zeroing them", "step1.v2",
          "uncond_branch_mismatch", "hazard 8.9: the uncond branch must zero mu, spks and cond, not x",
          overrides={"uncond_keeps_cond": True}),
    Fault("linear-schedule", "linear t-span instead of cosine", "step1.dt", "schedule_mismatch",
          "fork: Rust used a linear t-span although the yaml says cosine", overrides={"t_scheduler": "linear"}),
    Fault("steps-1", "one Euler step instead of 10", "step1.dt", "schedule_mismatch",
          "fork c35b6e0 edited n_timesteps from 10 to 1 in the Python reference", overrides={"n_timesteps": 1}),
    # t = 0 at step 1, where any scaling of t is invisible (sin 0 = 0, cos 0 = 1): the first step that can
    # show it is step 2
    Fault("time-scale-twice", "the timestep embedding applies t*1000 twice (invisible at step 1, where t = 0)",
          "step2.v1", "estimator_mismatch", "fork bca4a35: Rust TimestepEmbedding applied t*1000 twice",
          overrides={"time_scale": 1000.0 * 1000.0}, expected_stage_blocks="step2.block0"),
    Fault("rope-all-heads", "RoPE applied to every head instead of head 0 only", "step1.v1", "estimator_mismatch",
          "hazard 8.5", overrides={"rope_mode": "all-heads"}, expected_stage_blocks="step1.block0"),
    Fault("rope-half-split", "RoPE in the NeoX half-split layout instead of interleaved pairs", "step1.v1",
          "estimator_mismatch", "hazard 8.5", overrides={"rope_mode": "half-split"},
          expected_stage_blocks="step1.block0"),
    Fault("fp16-mask-overflow", "additive attention mask built in fp16 as (1 - mask) * -1e10: -1e10 becomes -inf "
          "and 0 * -inf becomes NaN", "step1.v1", "nonfinite_origin",
          "fork 7757251 replaced the 1e10 mask value with an fp16-safe one", overrides={"mask_mode": "additive-fp16"},
          expected_stage_blocks="step1.block0"),
    Fault("nan-at-block", "one DiT block emits a NaN", "step{step}.v1", "nonfinite_origin",
          "fork flow run: NaN=38080/38080 printed as min=inf max=-inf", hooks={"block": _nan_at_block},
          params={"step": 1, "block": 1}, expected_stage_blocks="step{step}.block{block}"),
    Fault("low-accumulate-block", "one DiT block's linears keep their GEMM running sum in fp16 (accumulation in low "
          "precision, truncating additions by default; rounding=rn for round to nearest) instead of fp32",
          "step1.v1", "estimator_mismatch",
          "fp16 GEMMs with an fp16 accumulator (cuBLAS COMPUTE_16F, fp16-accumulate tensor-core paths) in ports",
          overrides={"low_accumulate_block": lambda p: (p["block"], p["rounding"])},
          params={"block": 0, "rounding": "rz"}, expected_stage_blocks="step1.block{block}"),
    Fault("hift-fp16-weightnorm", "HiFT weight norm folded in fp16 (g, v and ||v|| in half precision)", "f0",
          "vocoder_divergence", "fork 68b9d0b: F16 HiFT weights drove F0 to about 5.8 MHz",
          overrides={"weightnorm_dtype": torch.float16}),
    Fault("istft-gain", "a constant gain (0.41/n_fft * 16 = 0.41) applied after the iSTFT", "audio_preclamp",
          "vocoder_divergence", "fork fa313d5: empirical 0.41/n_fft iSTFT scale", overrides={"istft_gain": 0.41}),
    Fault("smooth-sine", "linearly interpolated sine phase (non-causal SineGen2) instead of the causal staircase",
          "source", "vocoder_divergence", "hazard 8.6", overrides={"sine_mode": "linear"}),
    Fault("shape-crash", "a broadcasting bug that raises in the vocoder's source module", "source", "candidate_crashed",
          "fork: 'shape mismatch in mul, lhs: [1, 1, 228480], rhs: [1]' in HiFT", hooks={"source_amp": _shape_crash}),
]:
    register(_f)


# ---------------------------------------------------------------------------------------------
# streaming session faults (spec section 11.1): read by reference.session.run_session through
# ``pipeline.faults.override``; they change nothing in a single-call run. Expected stages are those of a
# session trace; ``{last}`` is the final call's chunk index.

for _f in [
    Fault("session-hift-per-chunk", "HiFT runs on each chunk's new mel alone instead of the cumulative mel, and its "
          "whole output is emitted (the vocoder restarts at every chunk; 8 frames held back per chunk are lost)",
          "chunk1.f0", "chunk_vocoder_mismatch", evidence="spec 11.1, 'HiFT run per chunk without the cumulative mel'",
          overrides={"session_hift_input": "chunk"}, mode="session", glitches=("missing_samples", "spectral_flux")),
    Fault("session-finalize-every-chunk", "every chunk is called with finalize=True: the 3 lookahead tokens are "
          "decoded as real tokens (their frames are appended twice) and HiFT finalizes each time",
          "chunk0.finalize", "chunk_finalize_mismatch", evidence="spec 11.1, 'finalize=True on every chunk'",
          overrides={"session_finalize_all": True}, mode="session", glitches=("duplicated_samples", "missing_samples")),
    Fault("session-final-mask", "the final call uses the other chunk-mask setting (with the streaming mask under "
          "final_mask=upstream, without it under final_mask=streaming)", "chunk{last}.streaming",
          "session_schedule_mismatch", evidence="spec 11.1: upstream's final call passes no stream=True", overrides={"session_final_mask_flip": True},
          mode="session"),
    Fault("session-no-prompt-pad", "no prompt pad: the first chunk has initial_hop tokens instead of initial_hop + "
          "ceil(P/hop)*hop - P, so chunks stop ending on the DiT's mask boundaries (invisible when P is a multiple "
          "of the hop)", "chunk0.tokens", "session_schedule_mismatch", evidence="spec 11.1, prompt_token_pad",
          overrides={"session_prompt_pad": False}, mode="session"),
    Fault("session-fixed-hop", "the hop never grows (stream_scale_factor 1): every chunk after the first has "
          "initial_hop tokens", "chunk1.tokens", "session_schedule_mismatch", evidence="spec 11.1, the hop schedule",
          overrides={"session_growth": 1}, mode="session"),
    Fault("session-mel-slice-off-by-one", "the flow output is sliced from token_offset * 2 + 1: one frame is lost "
          "at every chunk", "chunk0.mel", "chunk_slice_mismatch",
          evidence="spec 11.1, off-by-one in the token_offset * 2 slice", overrides={"session_slice_shift": 1},
          mode="session", glitches=("missing_samples",)),
    Fault("session-noise-per-chunk", "the fixed noise is re-indexed from 0 at each chunk (flow noise per frame and "
          "HiFT sine noise per sample) instead of by absolute position", "chunk1.flow_mel_full", "chunk_flow_mismatch",
          evidence="spec 11.1, noise re-indexed from 0 on every chunk", overrides={"session_noise": "chunk-local"},
          mode="session"),
]:
    register(_f)
