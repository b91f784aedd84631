"""Ensemble members along the batch axis: several seeded members of one family in one forward of the reference.

The random members of a floor (:mod:`parity.floor.members`: Monte-Carlo arithmetic at module outputs or at
every rounding op, stochastic rounding of a bf16/fp16 emulation) differ only by their random streams. Run one
by one, each repeats the whole reference: on the tiny model most of that time is Python overhead per op (the
perturbation hooks), which a batch of members pays once. :func:`members_on_batch_axis` makes the reference
take ``n`` members along the batch axis of one forward, and :class:`parity.floor.mca.MemberStreams` gives each
member the numbers its own stream would draw, in the same order, so a batched member is the sequential member
up to the kernels' blocking for the larger batch (a legitimate re-computation of its own; measured in
``tests/test_floor_batched.py``).

Layout: member ``i`` of ``n`` sits in rows ``j * n + i`` of every result (``j`` < 1 in the front end and the
vocoder, < 2 in the DiT, whose CFG batch holds the conditional rows of every member, then the unconditional
ones). What every member shares stays one row: the inputs, the shared noise, ``cond``, the time grid. What
the reference computes once per run without a batch axis is computed per member instead, so that each member
perturbs its own copy as a sequential run does: the RoPE angle table, its cosine and sine, and the time
embedding's frequencies.

Not batched: the deterministic members (threads, attention kernels: their point is another kernel), the
int8 emulation (per-tensor scales would mix the members' ranges).

Reused across members: the plain reference run (given to :func:`parity.floor.estimate.estimate_floor` by the
comparison that already ran it), the inputs, the noise and the weights (read once per batch).
"""

from __future__ import annotations

import contextlib
import math

import torch

from reference.probe import NO_PROBE, as_probe


def batchable(member, spec=None) -> bool:
    """Whether ``member`` can ride the batch axis (a seeded random member; not int8)."""
    if member.seed is None:
        return False
    if member.family in ("mca-modules", "mca-ops"):
        return True
    return member.family == "chop" and spec is not None and spec.fmt in ("bf16", "fp16")


def batch_groups(members, spec=None, size: int = 12) -> list[list]:
    """``members`` in run order: groups of up to ``size`` batchable members of one family (and one thread count
    and attention kernel), each other member alone."""
    out: list[list] = []
    for m in members:
        last = out[-1] if out else None
        if (size > 1 and batchable(m, spec) and last and len(last) < size and batchable(last[0], spec)
                and (last[0].family, last[0].threads, last[0].attention) == (m.family, m.threads, m.attention)):
            last.append(m)
        else:
            out.append([m])
    return out


class _BatchedFlow:
    """The reference flow's ``inference`` for ``n`` members: the front end (``prepare``) member by member, with
    each member's own draws (``gen.member(i)``; a few small ops, whose single-row kernels are then the
    sequential run's own), the solver and the DiT on the batch axis (what costs)."""

    def __init__(self, flow, n: int, gen=None):
        self.flow, self.n, self.gen = flow, n, gen

    def __getattr__(self, name):
        return getattr(self.flow, name)

    def inference(self, token, prompt_token, prompt_feat, embedding, noise, *, streaming: bool = False,
                  finalize: bool = True, n_timesteps: int | None = None, probe=NO_PROBE):
        from parity.capture.recorder import Recorder
        from reference.probe import Probe

        flow = self.flow
        probe = as_probe(probe)
        fronts, recs = [], []
        for i in range(self.n):
            rec = Recorder(["*"])
            with (self.gen.member(i) if self.gen is not None else contextlib.nullcontext()):
                fronts.append(flow.prepare(token, prompt_token, prompt_feat, embedding, finalize,
                                           Probe(rec) if probe else NO_PROBE))
            recs.append(rec)
        with torch._C.DisableTorchFunction():  # glue, no op of the model: the perturbation modes must not see it
            for name in recs[0].order:  # the front end's stages, every member's row
                t = [r.tensors[name] for r in recs]
                probe(name, torch.cat(t) if any(not torch.equal(t[0], x) for x in t[1:]) else t[0])
            mu, spks = torch.cat([f[0] for f in fronts]), torch.cat([f[2] for f in fronts])
        mask, cond, mel_len1 = fronts[0][1], fronts[0][3], fronts[0][4]
        # as CausalMaskedDiffWithDiT.inference after its prepare
        feat = flow.decoder(mu, mask, n_timesteps or flow.cfg.n_timesteps, spks, cond, noise.flow_noise(mu.shape[2]),
                            streaming=streaming, probe=probe)
        feat = feat[:, :, mel_len1:]
        probe("flow_mel", feat)
        return feat.float() if feat.dtype != torch.float64 else feat


class BatchedPipeline:
    """A pipeline object for :meth:`run` (one call, as :meth:`reference.model.Token2Wav.run`) and for
    :func:`reference.session.run_session` (the streaming loop): the reference model with ``n`` members on the
    batch axis. Every stage it records holds the members' rows (:func:`split_members`)."""

    faults = None

    def __init__(self, model, n: int, gen=None):
        self.model, self.n = model, n
        self.cfg, self.noise, self.dtype = model.cfg, model.noise, model.dtype
        self.flow = _BatchedFlow(model.flow, n, gen)
        self.hift = model.hift

    @torch.inference_mode()
    def run(self, inputs: dict, probe=None, *, streaming: bool = False, finalize: bool = True):
        probe = as_probe(probe)
        for k in ("token", "prompt_token", "prompt_feat", "embedding"):
            if k in inputs:
                probe(k, inputs[k])
        mel = self.flow.inference(inputs["token"].long(), inputs["prompt_token"].long(),
                                  inputs["prompt_feat"].to(self.dtype), inputs["embedding"].to(self.dtype),
                                  self.noise, streaming=streaming, finalize=finalize, probe=probe)
        mel = mel.to(self.dtype)
        return self.hift.inference(mel, self.noise, finalize=finalize, probe=probe)

    def run_session(self, inputs: dict, probe=None, options=None):  # run_session is in inference mode itself
        from reference.session import run_session

        return run_session(self, inputs, probe, options)


# ---------------------------------------------------------------------------------------------
# the per-member versions of what the reference computes without a batch axis (same ops, same order)

def _cfg_batch(cfm):
    def cfg_batch(x, mask, mu, t, spks, cond):
        """The CFG batch of ``B`` members: their conditional rows, then their unconditional rows."""
        T, dt_ = x.size(2), spks.dtype
        B = max(x.size(0), mu.size(0), spks.size(0))
        x_in = torch.zeros([2 * B, x.size(1), T], device=x.device, dtype=dt_)
        mask_in = torch.zeros([2 * B, 1, T], device=x.device, dtype=dt_)
        mu_in = torch.zeros([2 * B, mu.size(1), T], device=x.device, dtype=dt_)
        t_in = torch.zeros([2 * B], device=x.device, dtype=dt_)
        spks_in = torch.zeros([2 * B, spks.size(1)], device=x.device, dtype=dt_)
        cond_in = torch.zeros([2 * B, cond.size(1), T], device=x.device, dtype=dt_)
        x_in[:B] = x
        x_in[B:] = x
        mask_in[:] = mask
        mu_in[:B] = mu
        t_in[:] = t.reshape(1, -1)[0, :1]
        spks_in[:B] = spks
        cond_in[:B] = cond
        return x_in, mask_in, mu_in, t_in, spks_in, cond_in

    return cfg_batch


def _step(cfm):
    def step(x, t, dt, mu, mask, spks, cond, streaming: bool = False, probe=NO_PROBE):
        v = cfm.estimator(*cfm.cfg_batch(x, mask, mu, t, spks, cond), streaming=streaming, probe=probe)
        B = v.size(0) // 2
        v1, v2 = torch.split(v, [B, B], dim=0)
        v_cfg = cfm.combine(v1, v2)
        return x + dt * v_cfg, v1, v2, v_cfg

    return step


def _rope_table(rotary, n: int):
    def forward_from_seq_len(seq_len: int) -> torch.Tensor:
        t = torch.arange(seq_len, device=rotary.inv_freq.device).type_as(rotary.inv_freq)
        freqs = torch.einsum("ni,j->nij", t.expand(n, seq_len), rotary.inv_freq)  # [n, T, dim/2]: each an outer product
        return torch.stack((freqs, freqs), dim=-1).flatten(-2)

    return forward_from_seq_len


def _apply_rotary(original, rotate_half):
    def apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        if freqs.dim() == 2:
            return original(t, freqs)
        rot = freqs.shape[-1]
        reps = t.shape[0] // freqs.shape[0]  # the CFG batch: every member's table serves its two rows
        head, tail = t[..., :rot], t[..., rot:]
        head_c = head * freqs.cos().repeat(reps, 1, 1) * 1.0
        rot_h = rotate_half(head)
        head = head_c + (rot_h * freqs.sin().repeat(reps, 1, 1) * 1.0)
        return torch.cat((head, tail), dim=-1)

    return apply_rotary_pos_emb


def _sinus(mod, n: int):
    def forward(x: torch.Tensor, scale: float = 1000) -> torch.Tensor:
        half = mod.dim // 2
        ar = torch.arange(half, device=x.device).float()
        w = torch.exp(ar.expand(n, half) * -(math.log(10000) / (half - 1)))  # [n, half]: each member's own
        a = scale * x.unsqueeze(1) * w.repeat(x.shape[0] // n, 1)
        return torch.cat((a.sin(), a.cos()), dim=-1)

    return forward


@contextlib.contextmanager
def members_on_batch_axis(model, n: int, gen=None):
    """The reference ``model`` taking ``n`` members along the batch axis, as a :class:`BatchedPipeline` (``gen``:
    the members' :class:`parity.floor.mca.MemberStreams`, None for unperturbed rows); the model is left as it
    was found."""
    import reference.dit as D

    flow, hift = model.flow, model.hift
    cfm = flow.decoder
    est = cfm.estimator
    sinus = est.time_embed.time_embed
    saved = (hift.__dict__.get("max_batch"), D.apply_rotary_pos_emb)
    original = D.apply_rotary_pos_emb
    if getattr(original, "__name__", "") != "apply_rotary_pos_emb" or original.__module__ != "reference.dit":
        raise RuntimeError("members_on_batch_axis: the reference's RoPE is already patched (nested batched runs?)")
    try:
        hift.max_batch = n
        cfm.cfg_batch = _cfg_batch(cfm)
        cfm.step = _step(cfm)
        est.rotary_embed.forward_from_seq_len = _rope_table(est.rotary_embed, n)
        sinus.forward = _sinus(sinus, n)
        D.apply_rotary_pos_emb = _apply_rotary(original, D.rotate_half_interleaved)
        yield BatchedPipeline(model, n, gen)
    finally:
        D.apply_rotary_pos_emb = saved[1]
        for obj, attr in ((cfm, "cfg_batch"), (cfm, "step"), (est.rotary_embed, "forward_from_seq_len"),
                          (sinus, "forward")):
            obj.__dict__.pop(attr, None)
        if saved[0] is None:
            hift.__dict__.pop("max_batch", None)
        else:
            hift.max_batch = saved[0]


def split_members(tensors: dict, base: dict, n: int) -> list[dict]:
    """The stages of a batched run, member by member: a stage of ``b0 * n`` rows (``b0`` the rows of the plain
    run's stage) holds member ``i`` in rows ``j * n + i``; a stage with the plain run's own shape is shared."""
    out: list[dict] = [{} for _ in range(n)]
    for name, t in tensors.items():
        ref = base.get(name)
        if ref is None:
            raise RuntimeError(f"batched members recorded {name!r}, which the plain run did not")
        if n > 1 and t.dim() and t.dim() == ref.dim() and t.shape[0] == ref.shape[0] * n \
                and tuple(t.shape[1:]) == tuple(ref.shape[1:]):
            b0 = ref.shape[0]
            v = t.reshape((b0, n) + tuple(t.shape[1:]))
            for i in range(n):
                out[i][name] = v[:, i]  # a view: no copy of the batch (statistics read it in place)
        elif tuple(t.shape) == tuple(ref.shape):
            for i in range(n):
                out[i][name] = t
        else:
            raise RuntimeError(f"batched members: stage {name!r} has shape {list(t.shape)}, the plain run's is "
                               f"{list(ref.shape)} ({n} members)")
    return out


__all__ = ["BatchedPipeline", "batch_groups", "batchable", "members_on_batch_axis", "split_members"]
