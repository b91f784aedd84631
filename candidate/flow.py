"""The candidate flow: the reference front end and CFM with switches (precision of the time grid and
Euler accumulator, CFG as one batch of 2 or two calls) and the schedule/noise/CFG faults."""

from __future__ import annotations

from typing import TYPE_CHECKING

import copy

import torch
from torch import nn

from reference.flow import CausalMaskedDiffWithDiT
from reference.flow_matching import time_span
from reference.noise import SharedNoise
from reference.probe import NO_PROBE, Probe

from .dit import DTYPE
from .faults import ActiveFaults
from .provenance import KernelLog

if TYPE_CHECKING:  # the switches are data here (annotations only)
    from .switches import Switches


def _estimator_t(t: torch.Tensor, spks: torch.Tensor) -> torch.Tensor:
    """The t the estimator sees (one value, in the CFG batch's dtype): also the key of the AdaLN cache."""
    return t.reshape(-1)[:1].to(spks.dtype)


class _Collect(Probe):
    """Collects what ``probe`` wants from one of the two CFG calls, to be stacked afterwards."""

    def __init__(self, probe: Probe):
        super().__init__(probe.recorder, probe.prefix)
        self.items: dict[str, torch.Tensor] = {}

    def __call__(self, name, tensor):
        if self.wants(name):
            self.items[name] = tensor.detach().clone()


class CandidateFlow(nn.Module):
    def __init__(self, ref: CausalMaskedDiffWithDiT, sw: Switches, faults: ActiveFaults, kernels: KernelLog,
                 device: str = "cpu"):
        super().__init__()
        self.sw, self.faults, self.device = sw, faults, device
        front = copy.deepcopy(ref)
        front.decoder.estimator = nn.Identity()  # the estimator is the backend's (candidate.backends)
        self.front = front.to(device)
        self.estimator = sw.backend.build_estimator(ref.decoder.estimator, sw, faults, kernels, device)
        self.cfg = ref.cfg
        self.low = DTYPE[sw.flow_dtype]
        self.reduced = self.low != torch.float32
        p = ref.cfg.decoder.cfm_params
        self.cfg_rate = faults.override("cfg_rate", p.inference_cfg_rate)
        self.t_scheduler = faults.override("t_scheduler", p.t_scheduler)
        self.n_timesteps = faults.override("n_timesteps", ref.cfg.n_timesteps)

    # -- front end ---------------------------------------------------------------------------------
    def prepare(self, token, prompt_token, prompt_feat, embedding, finalize: bool = True, probe: Probe = NO_PROBE):
        args = [a.to(self.device) for a in (token, prompt_token, prompt_feat, embedding)]
        if self.reduced and self.sw.precision_mode == "autocast" and not self.sw.keeps("input_embed"):
            dev = "cuda" if self.device.startswith("cuda") else "cpu"
            with torch.autocast(dev, dtype=self.low):  # upstream AMP covers the whole flow
                mu, mask, spks, cond, n1 = self.front.prepare(*args, finalize=finalize)
        else:
            mu, mask, spks, cond, n1 = self.front.prepare(*args, finalize=finalize)
        mu, mask, spks, cond = (self.faults.hook(n, t) for n, t in (("mu", mu), ("mask", mask), ("spks", spks),
                                                                       ("cond", cond)))
        probe("mu", mu)
        probe("spks", spks)
        probe("cond", cond)
        return mu, mask, spks, cond, n1

    # -- one solver step (callable on the reference's own tensors) ------------------------------------
    def velocities(self, x, mask, mu, t, spks, cond, streaming=False, probe: Probe = NO_PROBE, step: int = 0):
        """(v1, v2) for state x at time t: one batch of 2, or two calls."""
        keep_cond = self.faults.override("uncond_keeps_cond", False)
        dt_ = spks.dtype  # upstream builds the CFG batch in spks' dtype (fp16 under AMP)
        T = x.size(2)
        tt = _estimator_t(t, spks)
        if self.sw.cfg_mode == "two-calls":
            un = (mu, spks, cond) if keep_cond else (torch.zeros_like(mu), torch.zeros_like(spks), torch.zeros_like(cond))
            rows = []
            for m_, s_, c_ in ((mu, spks, cond), un):
                col = _Collect(probe)
                rows.append(self.estimator(x.to(dt_), mask.to(dt_), m_.to(dt_), tt, s_.to(dt_), c_.to(dt_), streaming,
                                           col, step))
                rows[-1] = (rows[-1], col.items)
            for name in rows[0][1]:  # per-block outputs: the two calls stacked as the batch of 2 would be
                probe(name, torch.cat([rows[0][1][name], rows[1][1][name]], 0))
            return rows[0][0], rows[1][0]
        x_in = torch.zeros([2, x.size(1), T], device=x.device, dtype=dt_)
        mask_in = torch.zeros([2, 1, T], device=x.device, dtype=dt_)
        mu_in = torch.zeros([2, mu.size(1), T], device=x.device, dtype=dt_)
        t_in = torch.zeros([2], device=x.device, dtype=dt_)
        spks_in = torch.zeros([2, spks.size(1)], device=x.device, dtype=dt_)
        cond_in = torch.zeros([2, cond.size(1), T], device=x.device, dtype=dt_)
        x_in[:] = x
        mask_in[:] = mask
        t_in[:] = tt
        mu_in[0], spks_in[0], cond_in[0] = mu, spks, cond
        if keep_cond:  # fault: the unconditional row keeps its conditions
            mu_in[1], spks_in[1], cond_in[1] = mu, spks, cond
        v = self.estimator(x_in, mask_in, mu_in, t_in, spks_in, cond_in, streaming, probe, step)
        v1, v2 = torch.split(v, [1, 1], dim=0)
        return v1, v2

    def step(self, x, t, dt, mu, mask, spks, cond, streaming=False, probe: Probe = NO_PROBE, step: int = 0):
        """One Euler/CFG step: ``(x_next, v1, v2, v_cfg)`` -- same contract as the reference's."""
        v1, v2 = self.velocities(x, mask, mu, t, spks, cond, streaming, probe, step)
        v1 = self.faults.hook("v1", v1, step=step)
        v2 = self.faults.hook("v2", v2, step=step)
        r = self.cfg_rate
        if self.reduced and self.sw.keeps("euler"):
            v_cfg = (1.0 + r) * v1.float() - r * v2.float()
            x_next = x.float() + dt.float() * v_cfg
        else:
            v_cfg = (1.0 + r) * v1 - r * v2
            x_next = (x + dt * v_cfg).to(x.dtype)
        return x_next, v1, v2, v_cfg

    # -- whole flow ----------------------------------------------------------------------------------
    def flow_noise(self, noise: SharedNoise, frames: int) -> torch.Tensor:
        seed = self.faults.override("noise_seed", None)
        if seed is not None:  # fault: the candidate draws its own noise
            return torch.randn(1, noise.flow.shape[1], frames, generator=torch.Generator().manual_seed(seed))
        return noise.flow_noise(frames)

    def solve(self, mu, mask, spks, cond, noise: SharedNoise, streaming=False, probe: Probe = NO_PROBE,
              on_step=None):
        grid_dtype = torch.float32 if (not self.reduced or self.sw.keeps("time_grid")) else self.low
        x_dtype = torch.float32 if (not self.reduced or self.sw.keeps("euler")) else self.low
        z = self.flow_noise(noise, mu.shape[2]).to(self.device).to(x_dtype)
        z = self.faults.hook("x0", z)
        probe("x0", z)
        t_span = time_span(self.n_timesteps, self.t_scheduler, grid_dtype, self.device)
        n = len(t_span) - 1
        # the (t, dt) of every step, with upstream's accumulation (t += dt; dt = t_span[k+1] - t)
        grid = []
        t, dt = t_span[0].unsqueeze(0), t_span[1] - t_span[0]
        for k in range(1, n + 1):
            grid.append((t, dt))
            t = t + dt
            if k < n:
                dt = t_span[k + 1] - t
        if self.sw.adaln_cache:
            self.estimator.cache_modulations([_estimator_t(t, spks) for t, _ in grid])
        x = z
        try:
            for k, (t, dt) in enumerate(grid, start=1):
                sp = probe.sub(f"step{k}.")
                sp("t", t)
                sp("dt", dt.reshape(1))
                x, v1, v2, v_cfg = self.step(x, t, dt, mu, mask, spks, cond, streaming, sp, k)
                sp("v1", v1)
                sp("v2", v2)
                sp("v_cfg", v_cfg)
                x = self.faults.hook("x", x, step=k)
                sp("x", x)
                if on_step is not None:
                    on_step(k, n)
        finally:
            self.estimator.clear_modulations()
        return x.float()

    def inference(self, token, prompt_token, prompt_feat, embedding, noise: SharedNoise, *, streaming=False,
                  finalize=True, probe: Probe = NO_PROBE, on_step=None) -> torch.Tensor:
        mu, mask, spks, cond, n1 = self.prepare(token, prompt_token, prompt_feat, embedding, finalize, probe)
        feat = self.solve(mu, mask, spks, cond, noise, streaming, probe, on_step)[:, :, n1:]
        feat = self.faults.hook("flow_mel", feat)
        probe("flow_mel", feat)
        return feat.float()
